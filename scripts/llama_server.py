"""Build, once per set of build flags, the llama.cpp server binary behind the embedded engine.

    python scripts/llama_server.py build     # prints the folder holding llama-server (builds it if missing)
    python scripts/llama_server.py install   # build if needed, copy it into this venv's bin/ with build.json
    python scripts/llama_server.py check     # exit 1 unless the installed build fits this venv's flags
    python scripts/llama_server.py smoke     # generate a few tokens with the installed server, or say why not

Why llama.cpp's own `llama-server` and not llama-cpp-python's `python -m llama_cpp.server`: the Python
server runs one request at a time (a lock around one llama context), so the pipeline's four requests in
flight only queue. llama-server decodes its slots (`--parallel`) together in one batch with continuous
batching; on the same 32 requests with 4 in flight on 2 cores it generated 2.8x the tokens and 2.3x the
valid examples per second, 25 of 32 valid against 26 (bench/results/llama_server.json), and the generate
stage is the longest stage of the demo.

Where the source comes from: the only registry here is PyPI, and the llama-cpp-python sdist carries a
pinned llama.cpp tree (vendor/llama.cpp); we build its `llama-server` target with CMake and nothing else.

Why the flags are chosen here: llama.cpp's CMake build defaults to GGML_NATIVE=ON (`-march=native`), i.e.
a binary compiled for every instruction-set extension of the CPU that builds it. On a Xeon VM reporting
AMX, a native build answered its start-up probe and then died with a general protection fault in
ggml-cpu on the first generated token (-march=native there turns on ggml-cpu's AMX path); a binary copied
in an image to an older CPU dies with SIGILL. So the build is `GGML_NATIVE=OFF` with the x86-64-v3
baseline (AVX2, FMA, F16C, BMI2: every x86-64 CPU since 2013-2015) when this CPU has it, the bare x86-64
baseline otherwise. The flags (plus `SYNTHEMBED_LLAMA_CMAKE_ARGS`, e.g. for CUDA), the source version,
the compiler and the machine form the key of the build folder, `$SYNTHEMBED_CACHE/llama-server/
<version>-<key>`, so a build made one way is never picked up for another. `build.json` beside the binary
(copied into the venv) lists the CPU features the build needs; the embedded engine checks them at run
time (`synthembed.synth.embedded.check_cpu`) instead of crashing. The binary links ggml statically.

Runtime CPU-variant dispatch (`GGML_BACKEND_DL=ON GGML_CPU_ALL_VARIANTS=ON`) was measured in an earlier
build (bench/results/generate.json, `builds`): it was not faster on the Q4 135M model here, and on an AMX
VM it would load the `sapphirerapids` variant, compiled with the AMX path suspected above.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "0.3.36"  # llama-cpp-python sdist whose vendor/llama.cpp is built
SDIST = f"llama-cpp-python=={VERSION}"
BINARY = "llama-server"
_ALL_OFF = ["-DGGML_SSE42=OFF", "-DGGML_AVX=OFF", "-DGGML_AVX2=OFF", "-DGGML_BMI2=OFF", "-DGGML_FMA=OFF",
            "-DGGML_F16C=OFF"]
# Only the server, statically linked, no web UI, no HTTPS client (it serves 127.0.0.1 and downloads nothing).
_COMMON = ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF",
           "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
           "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_APP=OFF"]
# profile -> (CMake arguments, /proc/cpuinfo flags the resulting binary executes)
PROFILES: dict[str, tuple[list[str], list[str]]] = {
    "x86-64-v3": (["-DGGML_NATIVE=OFF"], ["sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"]),
    "x86-64": (["-DGGML_NATIVE=OFF", *_ALL_OFF], []),
    "generic": (["-DGGML_NATIVE=OFF"], []),  # non-x86: the compiler's default target for the architecture
}


def choose_profile(machine: str, flags: set[str]) -> str:
    if machine not in ("x86_64", "AMD64"):
        return "generic"
    return "x86-64-v3" if set(PROFILES["x86-64-v3"][1]) <= flags else "x86-64"


def compiler_id() -> str:
    cc = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or "c++"
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return cc


def build_spec(machine: str | None = None, flags: set[str] | None = None, extra: str | None = None) -> dict:
    """Everything that decides the binary's content, and the key derived from it."""
    if flags is None:
        from synthembed.synth.embedded import cpu_flags  # the one reader of /proc/cpuinfo (set-up installed it)

        flags = cpu_flags()
    machine = machine or platform.machine()
    profile = choose_profile(machine, flags)
    cmake_args, required = PROFILES[profile]
    extra = os.environ.get("SYNTHEMBED_LLAMA_CMAKE_ARGS", "") if extra is None else extra
    spec = {
        "version": VERSION, "profile": profile, "cmake_args": " ".join([*cmake_args, *_COMMON, *extra.split()]),
        "required_cpu_flags": required, "machine": machine, "compiler": compiler_id(),
    }
    spec["key"] = build_key(spec)
    return spec


def build_key(spec: dict) -> str:
    keyed = {k: spec[k] for k in ("version", "cmake_args", "machine", "compiler")}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]


def build_dir(spec: dict, cache: Path | None = None) -> Path:
    cache = cache or Path(os.environ.get("SYNTHEMBED_CACHE", Path.home() / ".cache" / "synthembed"))
    return cache / BINARY / f"{spec['version']}-{spec['key']}"


def _source(tmp: Path) -> Path:
    """Download the sdist from the package index (pip's cache off) and unpack its llama.cpp tree."""
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-cache-dir", "--no-deps", "--no-binary",
                    ":all:", "-d", str(tmp), SDIST], check=True)
    archive = next(tmp.glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    return next(tmp.glob("llama_cpp_python-*/vendor/llama.cpp"))


def _quiet(cmd: list[str]) -> None:
    """Run a build step; its output (CMake's warnings about the web UI we do not build, thousands of compile
    lines) is shown only when the step fails."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])} ... failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}\n"
                 "llama-server needs a C++17 compiler (Debian: apt install g++) and cmake >= 3.14")


def _cmake() -> str:
    """The system's cmake, else the one PyPI ships (a wheel, installed into this venv)."""
    found = shutil.which("cmake")
    if found:
        return found
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "cmake>=3.14"], check=True)
    return str(Path(sys.prefix) / "bin" / "cmake")


def build(spec: dict, folder: Path) -> Path:
    if (folder / BINARY).is_file() and (folder / "build.json").exists():
        return folder
    jobs = str(os.cpu_count() or 1)
    print(f"building {BINARY} from {SDIST} ({spec['profile']}: {spec['cmake_args']}); ~7 min on 2 cores, once",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
        src, out = _source(Path(tmp)), Path(tmp) / "build"
        cmake = _cmake()
        _quiet([cmake, "-S", str(src), "-B", str(out), *spec["cmake_args"].split()])
        _quiet([cmake, "--build", str(out), "--target", BINARY, "-j", jobs])
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        shutil.copy2(out / "bin" / BINARY, partial / BINARY)
        (partial / "build.json").write_text(json.dumps(spec, indent=2) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        partial.replace(folder)
    return folder


def installed_spec() -> dict | None:
    path = Path(sys.prefix) / f"{BINARY}-build.json"
    return json.loads(path.read_text()) if path.exists() else None


def install(spec: dict) -> Path:
    """Copy the build for `spec` into this venv: bin/llama-server and <venv>/llama-server-build.json."""
    folder = build(spec, build_dir(spec))
    target = Path(sys.prefix) / "bin" / BINARY
    shutil.copy2(folder / BINARY, target)
    shutil.copy2(folder / "build.json", Path(sys.prefix) / f"{BINARY}-build.json")
    return target


def main(argv: list[str]) -> int:
    spec = build_spec()
    if argv[:1] == ["build"]:
        print(build(spec, build_dir(spec)))
        return 0
    if argv[:1] == ["install"]:
        print(install(spec))
        return 0
    if argv[:1] == ["smoke"]:
        from synthembed.synth.embedded import smoke

        try:
            print(f"llama.cpp generates on this CPU: {smoke()!r}")
        except RuntimeError as err:
            print(err, file=sys.stderr)
            return 1
        return 0
    if argv[:1] == ["check"]:
        have = installed_spec()
        ok = have is not None and have.get("key") == spec["key"] and (Path(sys.prefix) / "bin" / BINARY).is_file()
        return 0 if ok else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
