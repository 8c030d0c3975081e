"""The embedded engine: llama.cpp's OpenAI-compatible server for one GGUF, supervised for the whole run.

`EmbeddedServer` starts `llama-server` (llama.cpp's own server, built by scripts/llama_server.py into the
venv's bin/) on a free 127.0.0.1 port with `parallel` slots, so the requests the HTTP stage keeps in flight
are decoded together in one batch instead of queueing, and a watcher thread that
polls the process. When it exits (a crash, a kill, an out-of-memory kill), the watcher logs the exit code
or signal, counts a restart and starts it again on the same port, so the HTTP clients' retries reach the
new process; rows that were in flight come back as `connection` errors and the generation pass re-sends
them. After `max_restarts` restarts the engine is given up: `check()` raises `EngineFailed`, whose message
names the engine, the last exit code or signal, the tail of its log and the log's path.

The process's pid and port are kept in `<log>.json` beside the log (`engine-<i>.json`), for people and tests.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from synthembed.errors import StageError
from synthembed.packaged import GGUF_MODELS, gguf_path
from synthembed.synth.config import EngineConfig
from synthembed.synth.engines import chat_payload, post_chat
from synthembed.synth.transport import settle_chat

log = logging.getLogger(__name__)


class EngineFailed(StageError):
    """An engine the job owns died more often than it may be restarted; the message says what to do."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child before exec: SIGTERM it if the job process dies
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def describe_exit(code: int | None) -> str:
    if code is None:
        return "did not answer in time (killed)"
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name} (exit {code})"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.exists():
        return "(no log)"
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 64_000))
        text = f.read().decode("utf-8", errors="replace")
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def gguf_for(model: str) -> Path:
    if model in GGUF_MODELS:
        return gguf_path(model)
    path = Path(model).expanduser()
    if path.suffix != ".gguf" or not path.is_file():
        raise FileNotFoundError(
            f"generate engine kind=embedded: model must be a packaged preset ({', '.join(GGUF_MODELS)}) "
            f"or an existing .gguf file, got {model!r}"
        )
    return path


def cpu_flags() -> set[str]:
    """This CPU's feature flags as Linux reports them (empty where /proc/cpuinfo is unreadable)."""
    try:
        return set(next(x for x in Path("/proc/cpuinfo").read_text().splitlines()
                        if x.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return set()


def check_cpu(build_info: Path | None = None, flags: set[str] | None = None) -> None:
    """Fail with the fix, not a SIGILL, when the installed llama.cpp build needs CPU features this CPU lacks.

    scripts/setup.sh copies the build's `build.json` (see scripts/llama_server.py) into the venv.
    """
    path = build_info or Path(sys.prefix) / "llama-server-build.json"
    if not path.exists():
        return  # installed some other way: nothing recorded to check
    need = set(json.loads(path.read_text()).get("required_cpu_flags", []))
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return  # nothing reported to check against
    missing = sorted(need - flags)
    if missing:
        raise RuntimeError(
            f"the installed llama.cpp build ({path}) needs CPU features this CPU lacks: {', '.join(missing)}. "
            "It was built on another machine; run scripts/setup.sh here, which builds one for this CPU's baseline."
        )


def server_binary() -> Path:
    """The llama-server to run: $SYNTHEMBED_LLAMA_SERVER, else this venv's bin/, else one on PATH."""
    override = os.environ.get("SYNTHEMBED_LLAMA_SERVER")
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise RuntimeError(f"SYNTHEMBED_LLAMA_SERVER={override} is not a file: point it at a llama-server binary")
        return path
    for path in (Path(sys.prefix) / "bin" / "llama-server", shutil.which("llama-server")):
        if path and Path(path).is_file():
            return Path(path)
    raise RuntimeError(
        "generate engine kind=embedded needs llama.cpp's llama-server, and none is installed: run scripts/setup.sh "
        "(it builds one for this CPU), or set SYNTHEMBED_LLAMA_SERVER to an existing binary"
    )


def smoke(model: str = "smollm2-135m") -> str:
    """Generate a few tokens with the installed llama-server, started as the engine starts it; raise naming how
    it died (a build that does not fit this CPU dies here, not in the first job)."""
    engine = EngineConfig(kind="embedded", model=model, n_ctx=256, max_restarts=0, batch_size=1,
                          sampling={"temperature": 0.0, "max_tokens": 4})
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with EmbeddedServer(engine, log_path=Path(tmp) / "smoke.log") as srv:
                messages = [{"role": "user", "content": "The capital of France is"}]
                out = settle_chat(post_chat(srv.base_url, chat_payload(engine, srv.alias, messages, None, 0), timeout=120))
                srv.check()
        except EngineFailed as err:
            raise RuntimeError(f"llama.cpp could not generate on this machine: {err}") from None
    if out["error"] or out["tokens_out"] < 1:
        raise RuntimeError(f"llama.cpp answered without generating a token: {out['error'] or out}")
    return out["text"]


_FAULT_HINT = (
    "A crash by SIGSEGV or SIGILL in llama.cpp usually means its build does not fit this CPU: re-run "
    "scripts/setup.sh, which builds a portable llama-server (GGML_NATIVE=OFF) keyed by its build flags."
)


class EmbeddedServer:
    """llama.cpp's OpenAI-compatible server for one GGUF on 127.0.0.1, restarted when it dies.

    >>> with EmbeddedServer(engine_cfg, log_path=out / "engine-0.log") as srv: srv.base_url
    'http://127.0.0.1:PORT/v1'
    """

    def __init__(self, engine: EngineConfig, log_path: Path | None = None, startup_timeout_s: float = 120,
                 poll_s: float = 0.5):
        self.engine = engine
        self.alias = Path(engine.model).stem if engine.model.endswith(".gguf") else engine.model
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout_s, self.poll_s = startup_timeout_s, poll_s
        self.max_restarts = engine.max_restarts
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.restarts = 0
        self.failure: EngineFailed | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ----------------------------------------------------------------------------------- process
    @property
    def parallel(self) -> int:
        return self.engine.parallel or self.engine.in_flight

    def _command(self) -> list[str]:
        threads = str(self.engine.n_threads or os.cpu_count() or 1)
        cmd = [
            str(server_binary()), "--model", str(gguf_for(self.engine.model)), "--alias", self.alias,
            "--host", "127.0.0.1", "--port", str(self.port), "--parallel", str(self.parallel),
            # the context is shared by the slots: each request gets n_ctx tokens
            "--ctx-size", str(self.engine.n_ctx * self.parallel), "--threads", str(threads),
            "--threads-batch", str(threads), "--no-webui",
            # prompt-cache RAM (default 8 GiB per server): the prompts share a prefix, not whole prompts
            "--cache-ram", "256",
        ]
        if self.engine.chat_template:
            # A built-in template is a name for llama.cpp's own formatter; with --jinja the name itself would be
            # taken as the Jinja source and every prompt would become the word "gemma".
            return cmd + ["--no-jinja", "--chat-template", self.engine.chat_template]
        return cmd + ["--jinja"]  # the GGUF's own Jinja chat template

    def _spawn(self) -> bool:
        """Start the process and wait until it answers; False when it exits or hangs during start-up."""
        self._ready.clear()
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(self._command(), stdout=out, stderr=subprocess.STDOUT,
                                         preexec_fn=_die_with_parent)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        self._write_state()
        deadline = time.time() + self.startup_timeout_s
        while time.time() < deadline and not self._stop.is_set():
            if self.proc.poll() is not None:
                return False
            try:
                # /health answers 503 while the model loads and 200 once requests are served
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2).read()
                self._ready.set()
                return True
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        self._kill()
        return False

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _write_state(self) -> None:
        if self.log_path is None:
            return
        state = {"engine": self.engine.label, "pid": self.proc.pid if self.proc else None, "port": self.port,
                 "restarts": self.restarts, "log": str(self.log_path)}
        self.log_path.with_suffix(".json").write_text(json.dumps(state) + "\n")

    def _exited(self) -> bool:
        """Record one exit; restart unless the budget is spent. True while the engine is still wanted."""
        code = self.proc.returncode if self.proc else None
        if self.restarts >= self.max_restarts:
            self.failure = EngineFailed(
                f"engine {self.engine.label} (llama-server) {describe_exit(code)}; it was restarted "
                f"{self.restarts} time(s) (engine.max_restarts={self.max_restarts}) and keeps dying.\n"
                f"  last lines of its log:\n{tail(self.log_path)}\n  log: {self.log_path}\n  {_FAULT_HINT}"
            )
            log.error("%s", self.failure)
            return False
        self.restarts += 1
        log.warning("generate engine %s %s; restart %d of %d (log: %s)", self.engine.label, describe_exit(code),
                    self.restarts, self.max_restarts, self.log_path)
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            if self.proc is not None and self.proc.poll() is None:
                continue
            if self._stop.is_set() or not self._exited():
                return
            while not self._spawn():
                if self._stop.is_set() or not self._exited():
                    return

    # ------------------------------------------------------------------------------------- API
    def start(self) -> "EmbeddedServer":
        server_binary()  # a missing server fails here, with the fix
        gguf_for(self.engine.model)  # a bad model name fails here, not as a dying process
        check_cpu()
        self.port = _free_port()
        log.info("starting embedded engine %s on 127.0.0.1:%d (log: %s)", self.engine.label, self.port, self.log_path)
        while not self._spawn():
            if not self._exited():
                self.stop()
                raise self.failure
        self._watcher = threading.Thread(target=self._watch, name=f"engine-{self.alias}", daemon=True)
        self._watcher.start()
        return self

    def check(self) -> None:
        """Raise EngineFailed once the engine has been given up."""
        if self.failure is not None:
            raise self.failure

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until the engine answers (after a restart) or has been given up."""
        deadline = time.time() + (timeout_s or self.startup_timeout_s * (self.max_restarts + 1))
        while self.failure is None and time.time() < deadline:
            if self._ready.is_set() and self.proc is not None and self.proc.poll() is None:
                return
            time.sleep(0.2)
        self.check()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=30)
        self._kill()
        self.proc = None

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

