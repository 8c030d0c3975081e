"""Typed configs: YAML files validated by pydantic, with `--set a.b=c` overrides.

Every job takes `--config path.yaml` plus any number of `--set key=value`. Values are parsed as YAML
scalars (`--set train.lr=1e-4`, `--set generate.languages=[en,de]`). A wrong key or value fails before any
work starts with a message that names the dotted key and what is allowed there.
"""

from __future__ import annotations

import argparse
import math
import re
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

__all__ = ["StrictModel", "ConfigError", "load_config", "load_job_config", "apply_overrides", "add_config_args", "dump_config"]

T = TypeVar("T", bound="StrictModel")


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ToggleModel(StrictModel):
    """A section that is on or off with settings: `section: true` (or false) alone sets its `enabled`."""

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, v):
        return {"enabled": v} if isinstance(v, bool) else v


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
KEY_PREFIXES = ("sk-", "sk_", "hf_", "ghp_", "gho_", "github_pat_", "xox", "AKIA", "AIza", "glpat-")


def check_env_var_name(name: str) -> str:
    """`name` must be the NAME of an environment variable, not a key pasted in its place.

    Names are short identifiers ([A-Za-z_][A-Za-z0-9_]*, at most 64 characters); keys carry a vendor prefix
    (sk-, hf_, ghp_, ...), or mix lower case with digits over 16+ characters, or look random (over 4 bits of
    entropy per character over 20+ characters). The message never repeats the value.
    """
    if not ENV_NAME.match(name):
        raise ValueError("must be the NAME of an environment variable (letters, digits, _; at most 64), e.g. "
                         "OPENAI_API_KEY; put the key itself in that variable, never in a config")
    counts = [name.count(c) for c in set(name)]
    entropy = -sum(n / len(name) * math.log2(n / len(name)) for n in counts)
    mixed = any(c.islower() for c in name) and sum(c.isdigit() for c in name) >= 3 and len(name) >= 16
    if name.startswith(KEY_PREFIXES) or mixed or (len(name) >= 20 and entropy > 4.0):
        raise ValueError("looks like an API key, not the NAME of an environment variable: export the key "
                         "(e.g. export OPENAI_API_KEY=...) and give the variable's name here")
    return name


SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")


def check_settings_env(env: dict[str, str]) -> dict[str, str]:
    """An `env:` block of engine settings that travels in a Ray runtime_env, which the dashboard shows:
    names must be variable names, and none may look like a secret's. The message never repeats a value."""
    for name in env:
        if not ENV_NAME.match(name):
            raise ValueError(f"env: {name[:64]!r} is not an environment variable name (letters, digits, _)")
    secret = sorted(k for k in env if any(w in k.upper() for w in SECRET_WORDS))
    if secret:
        raise ValueError(f"env: {secret} look like secrets, and Ray shows a runtime_env in its dashboard; export "
                         "them on the nodes instead (engines read the process environment)")
    return env


class ConfigError(ValueError):
    """A config could not be loaded; the message names the key and the fix."""


def _allowed_keys(cls: type[BaseModel], loc: tuple) -> list[str] | None:
    """Walk `loc` through nested pydantic models and return the field names allowed at its parent."""
    model: Any = cls
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        model = _unwrap_model(field.annotation)
        if model is None:
            return None
    if isinstance(model, type) and issubclass(model, BaseModel):
        return sorted(model.model_fields)
    return None


def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def _format_errors(cls: type[BaseModel], err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal["))))
        key = ".".join(str(p) for p in loc) or "<root>"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(cls, loc)
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  {key}: unknown key{hint}")
        else:
            got = e.get("input")
            # A value under a *key* field may be a secret pasted in by mistake: never echo it into logs.
            secret = any("key" in str(p) for p in loc)
            got_s = "" if isinstance(got, dict) or secret else f" (got {got!r})"
            lines.append(f"  {key}: {e['msg']}{got_s}")
    return "\n".join(lines)


def _parse_value(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply `a.b.c=value` strings to a nested dict (in place) and return it."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set model.max_length=256")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            if isinstance(node, list):  # a list item by index: --set evaluate.tasks.0.limit=100
                node = node[_list_index(node, part, key)]
                continue
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, (dict, list)):
                raise ConfigError(f"--set {key}: '{part}' is a value, not a section")
            node = child
        if isinstance(node, list):
            node[_list_index(node, parts[-1], key)] = _parse_value(raw)
        else:
            node[parts[-1]] = _parse_value(raw)
    return data


def _list_index(items: list, part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(f"--set {key}: '{part}' must index the list there (0..{len(items) - 1})")
    return int(part)


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None, section: str | None = None
) -> T:
    """Load `cls` from a YAML file (optional) plus overrides; raise ConfigError naming bad keys.

    With `section`, the file is a multi-stage file (configs/cpu-tiny.yaml holds `generate:`, `train:`,
    `evaluate:`, `serve:`) and `cls` is built from that one section. Overrides are always dotted from the
    file's top level (`--set train.lr=1e-4`), so the same `--set` works for a stage job and the pipeline;
    overrides of other sections are ignored by a stage job.
    """
    data: dict = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path} (pass an existing YAML file to --config)")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(loaded).__name__}")
        data, source = loaded, str(path)
    if overrides:
        data = apply_overrides(data, overrides)
        # a value set under a *key* field may be a secret pasted by mistake: name the key, not the value
        shown = [o.split("=", 1)[0] + "=<hidden>" if "key" in o.split("=", 1)[0] else o for o in overrides]
        source += " + --set " + " ".join(shown)
    if section is not None:
        if section not in data:
            raise ConfigError(f"{source}: no '{section}:' section; add one (it may be empty: '{section}: {{}}')")
        data = data[section] or {}
        source += f" [{section}]"
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(cls, err, source)) from None


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML, for printing and for storing beside a job's outputs."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def add_config_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", type=Path, help="YAML config file")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config value by dotted key, e.g. --set model.max_length=256 (repeatable)",
    )
    return parser


def load_job_config(cls: type[T], args: argparse.Namespace, section: str) -> T:
    """For job entry points: load `section` from --config/--set, or exit with the message (no traceback)."""
    try:
        return load_config(cls, args.config, args.overrides, section=section if args.config else None)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None


def enter_submit_dir() -> None:
    """Run from the directory the job was submitted from, when it exists on this node.

    `ray job submit --working-dir .` runs the entry point inside an uploaded copy of the repo, where
    paths relative to the user's checkout (`../shared/data`, `outputs/...`) mean nothing. The submit
    script passes the checkout's path as SYNTHEMBED_WORKDIR; on a single-node cluster it exists, so
    relative paths in configs keep the meaning they had when the user typed them. (On a remote cluster
    it does not exist and configs use absolute, shared paths.)
    """
    import os

    workdir = os.environ.get("SYNTHEMBED_WORKDIR")
    if workdir and Path(workdir).is_dir():
        os.chdir(workdir)
