"""Build, once per set of build flags, the llama-cpp-python wheel behind the embedded engine.

    python scripts/llama_wheel.py build     # prints the folder holding the wheel (builds it if missing)
    python scripts/llama_wheel.py check     # exit 1 unless the installed build fits this venv's flags
    python scripts/llama_wheel.py smoke     # generate a few tokens with the installed build, or say why not

Why this exists: PyPI has only llama-cpp-python's sdist, and its CMake build defaults to GGML_NATIVE=ON
(`-march=native`): the library is compiled for every instruction-set extension of the CPU that builds it.
pip then caches that wheel under ~/.cache/pip/wheels keyed by the sdist alone, so a wheel built one way
is reused whatever CMAKE_ARGS says later, and a venv or image copied to another CPU runs code that CPU may
not have. On a Xeon VM reporting AVX512, AVX512-BF16 and AMX, the native build answered the server's
start-up probe and then died with a general protection fault in libggml-cpu.so on the first generation.
-march=native there turns on AMX-TILE/INT8, so ggml-cpu compiles its AMX matmul path (ggml-cpu/amx/),
which issues LDTILECFG/TILELOADD once the kernel grants ARCH_REQ_XCOMP_PERM; a hypervisor that passes the
AMX CPUID bits through without fully supporting tile state is the first suspect. It could not be
reproduced on the machine this was written on (AVX512-BF16, no AMX), where the native build runs; the
portable build compiles none of those paths.

So the build flags are chosen here, not by the build machine: `GGML_NATIVE=OFF` with the x86-64-v3
baseline (AVX2, FMA, F16C, BMI2: every x86-64 CPU since 2013-2015) when this CPU has it, the bare x86-64
baseline otherwise. The flags (plus `SYNTHEMBED_LLAMA_CMAKE_ARGS`, e.g. for CUDA), the package version,
the compiler and the Python tag form the key of the wheel folder, `$SYNTHEMBED_CACHE/wheels/
llama-cpp-python-<version>-<key>`; the build runs with pip's cache off. `build.json` beside the wheel
(copied into the venv) lists the CPU features the build needs, and the embedded engine checks them at
run time (`synthembed.synth.embedded.check_cpu`) instead of crashing.

Runtime CPU-variant dispatch (`GGML_BACKEND_DL=ON GGML_CPU_ALL_VARIANTS=ON`) was built and measured
(bench/results/generate.json, `builds`): the wheel ships the 14 variants under `bin/`, but
llama-cpp-python 0.3.36 never calls `ggml_backend_load_all_from_path`, and ggml's default search (the
executable's folder, the working directory) does not hold them, so `Llama(...)` fails with "Failed to load
model" (no CPU backend). Loaded by hand it works and picks the variant for this CPU; on a Sapphire Rapids
VM it would pick `sapphirerapids`, which is compiled with AMX-TILE/INT8, the suspect above. It was not
faster on the Q4 135M model here, so the baseline build is the one shipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

VERSION = "0.3.36"
PACKAGE = f"llama-cpp-python[server]=={VERSION}"
_ALL_OFF = ["-DGGML_SSE42=OFF", "-DGGML_AVX=OFF", "-DGGML_AVX2=OFF", "-DGGML_BMI2=OFF", "-DGGML_FMA=OFF",
            "-DGGML_F16C=OFF"]
# profile -> (CMake arguments, /proc/cpuinfo flags the resulting library executes)
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
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or "cc"
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return cc


def build_spec(machine: str | None = None, flags: set[str] | None = None, extra: str | None = None) -> dict:
    """Everything that decides the wheel's binary content, and the key derived from it."""
    if flags is None:
        from synthembed.synth.embedded import cpu_flags  # the one reader of /proc/cpuinfo (set-up installed it)

        flags = cpu_flags()
    machine = machine or platform.machine()
    profile = choose_profile(machine, flags)
    cmake_args, required = PROFILES[profile]
    extra = os.environ.get("SYNTHEMBED_LLAMA_CMAKE_ARGS", "") if extra is None else extra
    spec = {
        "version": VERSION, "profile": profile, "cmake_args": " ".join([*cmake_args, *extra.split()]),
        "required_cpu_flags": required, "machine": machine, "compiler": compiler_id(),
        "python": f"cp{sys.version_info.major}{sys.version_info.minor}",
    }
    spec["key"] = wheel_key(spec)
    return spec


def wheel_key(spec: dict) -> str:
    keyed = {k: spec[k] for k in ("version", "cmake_args", "machine", "compiler", "python")}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]


def wheel_dir(spec: dict, cache: Path | None = None) -> Path:
    cache = cache or Path(os.environ.get("SYNTHEMBED_CACHE", Path.home() / ".cache" / "synthembed"))
    return cache / "wheels" / f"llama-cpp-python-{spec['version']}-{spec['key']}"


def build(spec: dict, folder: Path) -> Path:
    if list(folder.glob("llama_cpp_python-*.whl")) and (folder / "build.json").exists():
        return folder
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    env = {**os.environ, "CMAKE_ARGS": spec["cmake_args"], "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1)}
    print(f"building llama-cpp-python {VERSION} ({spec['profile']}: {spec['cmake_args']}); a few minutes, once",
          file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-cache-dir", "--no-deps",
                    "--no-binary", "llama-cpp-python", "-w", str(tmp), f"llama-cpp-python=={VERSION}"],
                   env=env, check=True)
    (tmp / "build.json").write_text(json.dumps(spec, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    return folder


def installed_spec() -> dict | None:
    path = Path(sys.prefix) / "llama-cpp-build.json"
    return json.loads(path.read_text()) if path.exists() else None


def main(argv: list[str]) -> int:
    spec = build_spec()
    if argv[:1] == ["build"]:
        print(build(spec, wheel_dir(spec)))
        return 0
    if argv[:1] == ["smoke"]:
        from synthembed.synth.embedded import smoke

        try:
            print(f"llama.cpp generates on this CPU: {smoke()}")
        except RuntimeError as err:
            print(err, file=sys.stderr)
            return 1
        return 0
    if argv[:1] == ["check"]:
        have = installed_spec()
        return 0 if have is not None and have.get("key") == spec["key"] else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
