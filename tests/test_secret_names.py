"""`api_key_env` takes the NAME of an environment variable; a key pasted in its place is refused, and the
refusal never repeats it (it would land in job logs)."""

from __future__ import annotations

import subprocess

import pytest

from conftest import REPO, VENV_BIN
from synthembed.config import ConfigError, load_config
from synthembed.serve.config import ServeConfig
from synthembed.synth.config import EngineConfig

KEYS = ["sk-proj-Ab12Cd34Ef56Gh78Ij90", "hf_AbCdEfGhIjKlMnOpQrStUvWx", "ghp_0123456789abcdefABCDEF",
        "AKIAIOSFODNN7EXAMPLE", "a3f9c2e17b6d48e0a1b2c3d4e5f60718", "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0L"]
NAMES = ["OPENAI_API_KEY", "SYNTHEMBED_API_KEY", "MY_KEY_2", "azure_openai_key", "VLLM_SERVER_TOKEN_FOR_TEAM_A"]


@pytest.mark.parametrize("key", KEYS)
def test_a_key_in_place_of_a_name_is_refused_without_echo(key):
    with pytest.raises(ConfigError) as err:
        load_config(ServeConfig, None, [f"api_key_env={key}"])
    assert "api_key_env" in str(err.value) and key not in str(err.value)
    with pytest.raises(ConfigError) as err2:
        load_config(EngineConfig, None, ["kind=openai", "model=m", "base_url=http://x/v1", f"api_key_env={key}"])
    assert "api_key_env" in str(err2.value) and key not in str(err2.value)


@pytest.mark.parametrize("name", NAMES)
def test_real_variable_names_are_accepted(name):
    assert load_config(ServeConfig, None, [f"api_key_env={name}"]).api_key_env == name
    assert EngineConfig(kind="openai", model="m", base_url="http://x/v1", api_key_env=name).api_key_env == name


def test_the_job_exits_2_and_its_output_never_holds_the_key():
    key = KEYS[1]
    res = subprocess.run([str(VENV_BIN / "python"), "jobs/pipeline.py", "--config", "configs/cpu-tiny.yaml",
                          "--check", "--set", f"serve.api_key_env={key}"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 2 and "serve.api_key_env" in res.stderr
    assert key not in res.stdout + res.stderr
