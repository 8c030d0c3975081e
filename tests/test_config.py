"""Typed configs: YAML + --set overrides; bad keys and values fail naming the key and the fix."""

from __future__ import annotations

import pytest

from synthembed.config import ConfigError, load_config
from synthembed.model import ModelConfig
from synthembed.config import StrictModel


class _Job(StrictModel):
    model: ModelConfig = ModelConfig()
    steps: int = 10


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides(tmp_path):
    path = _write(tmp_path, "job:\n  model:\n    source: tiny-llama\n  steps: 3\n")
    cfg = load_config(_Job, path, ["job.model.max_length=64", "job.model.padding_side=right"], section="job")
    assert (cfg.model.source, cfg.steps, cfg.model.max_length, cfg.model.padding_side) == ("tiny-llama", 3, 64, "right")


def test_unknown_key_names_it_and_lists_allowed(tmp_path):
    path = _write(tmp_path, "job:\n  model:\n    sorce: tiny-llama\n")
    with pytest.raises(ConfigError) as err:
        load_config(_Job, path, section="job")
    msg = str(err.value)
    assert "model.sorce: unknown key" in msg and "source" in msg and "max_length" in msg


def test_wrong_type_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.max_length: .*integer.*'lots'"):
        load_config(_Job, None, ["model.max_length=lots"])


def test_wrong_choice_lists_the_allowed_values():
    with pytest.raises(ConfigError, match=r"model\.padding_side: .*'left' or 'right'.*'middle'"):
        load_config(_Job, None, ["model.padding_side=middle"])


def test_out_of_range_value():
    with pytest.raises(ConfigError, match=r"model\.max_length: .*greater than or equal to 2"):
        load_config(_Job, None, ["model.max_length=1"])


class _Runs(StrictModel):
    models: list[ModelConfig]


def test_override_indexes_a_list_item(tmp_path):
    path = _write(tmp_path, "job:\n  models:\n    - {source: a}\n    - {source: b}\n")
    cfg = load_config(_Runs, path, ["job.models.1.max_length=64"], section="job")
    assert [m.max_length for m in cfg.models] == [512, 64]
    with pytest.raises(ConfigError, match=r"'2' must index the list there \(0\.\.1\)"):
        load_config(_Runs, path, ["job.models.2.max_length=64"], section="job")


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(_Job, None, ["steps"])


def test_missing_file_and_missing_section(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(_Job, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="no 'job:' section"):
        load_config(_Job, _write(tmp_path, "other: {}\n"), section="job")
