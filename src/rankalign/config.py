"""Command configuration: dataclasses filled from `--config file.yaml`, then overridden by flags.

Every stage describes its options as dataclasses; `parse_config` builds one HfArgumentParser for
them, uses the YAML file's values as defaults (so flags given on the command line win), and
rejects unknown YAML keys with a one-line error.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

# Names of secrets that must never be written to a config dump or a log (whole-word endings:
# `hub_token` and `api_key` are secrets; `max_new_tokens` and `api_key_env` are not).
SECRET_NAME = re.compile(r"(^|_)(token|api_key|apikey|secret|password)$", re.IGNORECASE)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError("config file not found", file=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"invalid YAML: {problem}", file=path, line=line) from None
    except UnicodeDecodeError:
        raise UserError("not valid UTF-8", file=path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError("a config file must be a mapping of option: value", file=path)
    return data


def _split_meta(argv: list[str]) -> tuple[str | None, list[str]]:
    """Take `--config FILE` out of argv (the rest goes to the dataclass parser)."""
    config, rest, i = None, [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--config":
            if i + 1 >= len(argv):
                raise UserError("--config needs a file path")
            config, i = argv[i + 1], i + 2
            continue
        if a.startswith("--config="):
            config = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    return config, rest


def parse_config(argv: list[str], types: tuple, *, prog: str, defaults: dict | None = None):
    """Parse `argv` into instances of the dataclasses in `types`.

    Precedence: flags > YAML (`--config`) > `defaults` > dataclass defaults.
    Returns (instances..., yaml_path).
    """
    from transformers import HfArgumentParser

    config_path, rest = _split_meta(argv)
    values = dict(defaults or {})
    if config_path:
        loaded = load_yaml(config_path)
        known = {f.name for t in types for f in dataclasses.fields(t)}
        loaded = _unwrap_dump(loaded, known)
        for key in loaded:
            if key not in known:
                raise UserError(f"unknown option '{key}'", file=config_path, field=key)
        values.update(loaded)
    parser = HfArgumentParser(types, prog=prog)

    def one_line_error(message):  # argparse would print the whole usage first
        raise UserError(f"{message} (see {prog} --help)")

    parser.error = one_line_error
    # YAML values become argparse defaults: anything given as a flag overrides them.
    for action in parser._actions:
        if action.dest in values:
            action.required = False
    parser.set_defaults(**values)
    try:
        parsed = parser.parse_args_into_dataclasses(args=rest, look_for_args_file=False)
    except (ValueError, TypeError) as e:  # dataclass __post_init__ validation
        raise UserError(str(e).strip().splitlines()[0]) from None
    return (*parsed, config_path)


def _unwrap_dump(loaded: dict, known: set[str]) -> dict:
    """A config written by `dump_config` ({section: {...}, ..., command: ...}) reruns as is."""
    sections = {k: v for k, v in loaded.items() if k != "command"}
    if (
        "command" in loaded
        and sections
        and all(k not in known and isinstance(v, dict) for k, v in sections.items())
    ):
        merged = {}
        for values in sections.values():
            merged.update({k: v for k, v in values.items() if k in known and v != "<redacted>"})
        return merged
    return loaded


def redact(obj: Any) -> Any:
    """A copy of a (nested) config with secret-looking values replaced."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if SECRET_NAME.search(str(k)) and v not in (None, "", False):
                out[k] = "<redacted>"
            else:
                out[k] = redact(v)
        return out
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    return obj


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return str(obj)


def dump_config(path: str | os.PathLike, sections: dict[str, Any]) -> None:
    """Write the resolved configuration (secrets redacted) atomically as YAML."""
    from .data import atomic_write_text

    data = redact({name: _plain(v) for name, v in sections.items()})
    data["command"] = " ".join(["rankalign", *sys.argv[1:]]) if sys.argv else "rankalign"
    atomic_write_text(path, yaml.safe_dump(redact(data), sort_keys=False, allow_unicode=True))
