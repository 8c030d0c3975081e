"""Shared fixtures: real models (tiny random and the packaged ones) and one real local Ray cluster.

Expensive things are session-scoped and shared by every test module: a converted GGUF model is cached
under $SYNTHEMBED_CACHE, and one `ray start --head` cluster (dashboard on 127.0.0.1:8265, Ray's token
authentication on, as in production) serves all Ray tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the test suite may reach a model hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ray reads this once, when it is first imported: the test cluster keeps Ray 2.60's token auth on.
os.environ["RAY_AUTH_MODE"] = "token"
# The exactness checks (padding invariance, GradCache = full batch, 2 workers = 1) compare float32 runs;
# dtype "auto" would pick bf16 on a CPU with native bf16. The bf16 path has its own tolerance tests.
os.environ["SYNTHEMBED_AUTO_DTYPE"] = "float32"

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
VENV_BIN = Path(sys.executable).parent
DASHBOARD_URL = "http://127.0.0.1:8265"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA} (clone ../shared beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_embedder():
    from synthembed.model import Embedder

    return Embedder.load("tiny-llama")


@pytest.fixture(scope="session")
def gemma_embedder():
    from synthembed.model import Embedder

    return Embedder.load("gemma3-270m", max_length=128)


@pytest.fixture(scope="session")
def smollm_embedder():
    from synthembed.model import Embedder

    return Embedder.load("smollm2-135m", max_length=128)


def _ray_env() -> dict:
    env = dict(os.environ)
    env["RAY_AUTH_MODE"] = "token"  # clients authenticate with the token `ray start` writes
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A real local Ray head (`ray start --head`), connected to from this process.

    Yields the dashboard / Jobs API address. Token auth stays on; this process and its children get
    RAY_AUTH_MODE=token so `ray job submit` and ray.init authenticate like a real user's client.
    """
    import fcntl

    import ray

    # One Ray head per machine (fixed ports 6390/8265/8000): concurrent test sessions take turns.
    lock = open("/tmp/synthembed-ray.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    env = _ray_env()
    ray_bin = str(VENV_BIN / "ray")
    subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True)
    temp_dir = Path("/tmp") / f"synthembed-ray-{os.getpid()}"
    cmd = [
        ray_bin, "start", "--head", "--port=6390", "--dashboard-host=127.0.0.1", "--dashboard-port=8265",
        # more logical CPUs than cores: train workers, a Serve replica and data actors can coexist
        "--num-cpus=4", f"--temp-dir={temp_dir}", "--disable-usage-stats",
    ]
    # A fresh machine has no token yet; `ray start` with token auth refuses to start without one.
    subprocess.run([ray_bin, "get-auth-token", "--generate"], env=env, capture_output=True, check=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    try:
        if proc.returncode != 0:
            raise RuntimeError(f"ray start failed:\n{proc.stdout}\n{proc.stderr}")
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(DASHBOARD_URL + "/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # 401 without a token: the dashboard is up
                break
            except OSError:
                time.sleep(1)
        ray.init(address="auto", ignore_reinit_error=True, log_to_driver=False)
    except BaseException:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True)
        fcntl.flock(lock, fcntl.LOCK_UN)
        raise
    yield DASHBOARD_URL
    try:
        from ray import serve

        serve.shutdown()
    except Exception:
        pass
    ray.shutdown()
    subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True)
    shutil.rmtree(temp_dir, ignore_errors=True)
    fcntl.flock(lock, fcntl.LOCK_UN)
