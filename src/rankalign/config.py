"""Command configuration: dataclasses filled from `--config file.yaml`, then overridden by flags.

Every stage describes its options as dataclasses; `parse_config` builds one HfArgumentParser for
them, uses the YAML file's values as defaults (so flags given on the command line win), and
rejects unknown YAML keys with a one-line error.
"""

from __future__ import annotations

import argparse
import contextvars
import dataclasses
import os
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from rankalign import option_checks
from rankalign.data import MAX_DEPTH, check_value
from rankalign.errors import UserError
from rankalign.option_checks import check_text, describe, fits, type_hints, type_name

# re-exported: stages import these from here (their home before option_checks.py)
check_options, in_range, range_error = (
    option_checks.check_options,
    option_checks.in_range,
    option_checks.range_error,
)

# Names of secrets that must never be written to a config dump or a log (whole-word endings:
# `hub_token` and `api_key` are secrets; `max_new_tokens` and `api_key_env` are not).
SECRET_NAME = re.compile(r"(^|_)(token|api_key|apikey|secret|password)$", re.IGNORECASE)
# Values that look like credentials whatever flag carries them (Hugging Face, OpenAI-style and
# GitHub tokens, bearer headers): a command line recorded in a config dump must not hold one.
SECRET_VALUE = re.compile(
    r"\b(hf_[A-Za-z0-9]{16,}|sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|Bearer\s+\S+)"
)


# `api_key=VALUE` inside a spec string, `'token': 'VALUE'` inside a printed mapping
SECRET_ASSIGNMENT = re.compile(
    r"((?:^|[^A-Za-z0-9])(?:api_?key|token|secret|password)['\"]?\s*[:=]\s*['\"]?)([^,\s'\"}]+)",
    re.IGNORECASE,
)


def option(
    default,
    check: str | None = None,
    help: str | None = None,
    *,
    choices: tuple | None = None,
    conflicts: tuple[str, ...] | None = None,
    **kw,
):
    """A config dataclass field with its range check, choices, contradictory options and help
    text (as `parse_config` and `check_options` read them from the field's metadata)."""
    given = (("check", check), ("help", help), ("choices", choices), ("conflicts", conflicts))
    meta = {k: v for k, v in given if v is not None}
    return dataclasses.field(default=default, metadata=meta, **kw)


def redact_text(text: str) -> str:
    """`text` (an error line, a spec) with credential values replaced by `<redacted>`."""
    text = SECRET_VALUE.sub("<redacted>", text)
    return SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + "<redacted>", text)


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader without what a config never needs and a hostile file abuses: aliases (a few
    lines of nested aliases expand to billions of nodes) and repeated keys (the last one would
    win silently)."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None,
                None,
                "YAML aliases/anchors are not allowed in config files",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            # a merge key (`<<`) is no value of its own: flatten_mapping resolves it later
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)  # cached: the mapping reuses it
                if key in seen:
                    raise yaml.constructor.ConstructorError(  # repr: escapes what cannot print
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML config file as a mapping of option: value (see `load_yaml_text`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a leading byte-order mark is fine
    except FileNotFoundError:
        raise UserError("config file not found", file=path) from None
    except OSError as e:  # permission denied, a folder, an I/O error
        raise UserError(f"cannot read: {e.strerror or e}", file=path) from None
    except UnicodeDecodeError:
        raise UserError("not valid UTF-8", file=path) from None
    data = load_yaml_text(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError("a config file must be a mapping of option: value", file=path)
    return data


def load_yaml_text(text: str, source: Any = None) -> Any:
    """YAML from a config (a file, or YAML text inside an option) through `_ConfigLoader`;
    every problem is a one-line UserError naming `source` (and the line)."""
    path = source
    try:
        data = yaml.load(text, Loader=_ConfigLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"invalid YAML: {problem}", file=path, line=line) from None
    except ValueError as e:  # a constructor's own limit, e.g. an integer of over 4300 digits
        raise UserError(f"invalid YAML: {str(e).splitlines()[0][:200]}", file=path) from None
    except RecursionError:  # the composer recurses per level, past MAX_DEPTH long before this
        raise UserError(f"nested more than {MAX_DEPTH} levels deep", file=path) from None
    check_value(data, {"file": str(path) if path is not None else None})
    return data


def split_config_arg(argv: list[str]) -> tuple[str | None, list[str]]:
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


# TRL's (and LLaMA-Factory's) names for our options: option -> our name, the first of the
# candidates the command has. Accepted as flags (shown in --help beside ours), YAML keys and
# Python keyword arguments.
ALIASES: dict[str, tuple[str, ...]] = {
    "model_name_or_path": ("model",),
    "dataset_name": ("data", "prompts", "input"),
}


def aliases_for(known: set[str]) -> dict[str, str]:
    """alias -> option name, for a command whose options are `known`."""
    out = {}
    for alias, targets in ALIASES.items():
        target = next((t for t in targets if t in known), None)
        if target is not None and alias not in known:
            out[alias] = target
    return out


def did_you_mean(name: str, choices) -> str:
    """ " (did you mean 'x'?)" for the closest of `choices` to a misspelt `name`, else ""."""
    import difflib

    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_flags(rest: list[str], parser, *, prog: str) -> None:
    """Refuse a flag the command does not have, with the closest name: argparse would accept a
    prefix (`--learning_rat`) as the option it abbreviates, and HfArgumentParser reports the
    rest as a raw list of "not used" strings."""
    flags = {s for s in parser._option_string_actions if s.startswith("--")}
    for arg in rest:
        if arg == "--":  # what follows is positional
            return
        if not arg.startswith("--") or arg.split("=", 1)[0] in flags:
            continue
        name = arg.split("=", 1)[0]
        hint = did_you_mean(name, {f for f in flags if "-" not in f[2:]} or flags)
        raise UserError(f"unknown option '{name}'{hint} (see {prog} --help)")


def parse_config(
    argv: list[str],
    types: tuple,
    *,
    prog: str,
    defaults: dict | None = None,
    options: dict | None = None,
):
    """Parse `argv` into instances of the dataclasses in `types`.

    Precedence: flags > `options` (keyword arguments of the Python API) > YAML (`--config`) >
    `defaults` > dataclass defaults. YAML values and `options` are checked the same way.
    Every value is then checked (`option_checks.check_options`): its annotated type, finite
    floats, the range in the field's `metadata["check"]` (or, for classes that are not ours such
    as TrainingArguments, in EXTERNAL_CHECKS), its `choices` and its `conflicts`. Returns (instances..., yaml_path).
    """
    config_path, rest = split_config_arg(argv)
    values, loaded = dict(defaults or {}), {}
    names = [f.name for t in types for f in dataclasses.fields(t)]
    if len(names) != len(set(names)):  # one namespace of flags and YAML keys per command
        twice = sorted({n for n in names if names.count(n) > 1})
        raise RuntimeError(f"{prog}: option names defined twice: {', '.join(twice)}")
    known = set(names)
    aliases = aliases_for(known)
    hints = {name: hint for t in types for name, hint in type_hints(t).items()}

    def check_keys(given: dict, source: str | None) -> dict:
        given = _resolve_aliases(given, aliases, source)
        for key, value in given.items():
            if key not in known:
                hint = did_you_mean(key, known | set(aliases))
                raise UserError(f"unknown option '{key}'{hint}", file=source, field=key)
            # argparse converts (and checks) string defaults itself; YAML numbers, booleans,
            # lists and mappings reach the dataclass as they are, so their type is checked here
            if not isinstance(value, str) and not fits(value, hints.get(key)):
                raise UserError(
                    f"expected {type_name(hints[key])}, got {describe(value)}",
                    file=source,
                    field=key,
                )
        return given

    if config_path:
        loaded = check_keys(_unwrap_dump(load_yaml(config_path), known), config_path)
        values.update(loaded)
    if options:
        options = check_keys(options, None)
        values.update(options)
    parser = _parser_class(aliases)(types, prog=prog, allow_abbrev=False)

    def one_line_error(message):  # argparse would print the whole usage first
        raise UserError(f"{message} (see {prog} --help)")

    parser.error = one_line_error
    check_flags(rest, parser, prog=prog)
    # YAML values become argparse defaults: anything given as a flag overrides them.
    parser.set_defaults(**values)
    try:
        parsed = parser.parse_args_into_dataclasses(args=rest, look_for_args_file=False)
    except (ValueError, TypeError, OverflowError) as e:  # dataclass __post_init__ validation
        raise UserError(str(e).strip().splitlines()[0]) from None
    # values that came from the YAML file (and no flag overrode) are reported with its name
    flagged = {a[2:].split("=", 1)[0].replace("-", "_") for a in rest if a.startswith("--")}
    flagged |= {aliases[a] for a in flagged if a in aliases}
    from_file = {k: config_path for k in loaded if k not in flagged and k not in (options or {})}
    for obj in parsed:
        check_options(obj, files=from_file)
    return (*parsed, config_path)


def _resolve_aliases(given: dict, aliases: dict[str, str], source: Any) -> dict:
    """YAML keys / keyword arguments with TRL's names (`model_name_or_path`) under ours."""
    out, keys = {}, {}
    for key, value in given.items():
        name = aliases.get(key, key)
        if name in out:
            first, second = sorted((keys[name], key), key=lambda k: k == name)
            raise UserError(
                f"'{first}' and '{second}' name the same option", file=source, field=name
            )
        out[name], keys[name] = value, key
    return out


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help with each option's default, except where there is none to show (None: "not set",
    the help says what happens then) or the help states it (per-loss defaults)."""

    def _get_help_string(self, action):
        help_ = action.help or ""
        if isinstance(action, argparse._StoreFalseAction):  # HfArgumentParser's `--no_X`
            return f"same as {action.option_strings[0].replace('--no_', '--', 1)} false"
        if action.default is None or "default:" in help_ or action.default is argparse.SUPPRESS:
            return help_
        return super()._get_help_string(action)

    def _format_action_invocation(self, action):
        # HfArgumentParser adds `--a-b` beside each `--a_b`: accepted, not listed twice
        shown = [s for s in action.option_strings if "-" not in s[2:]]
        if not shown or shown == action.option_strings:
            return super()._format_action_invocation(action)
        return super()._format_action_invocation(
            argparse.Action(shown, action.dest, nargs=action.nargs, metavar=action.metavar)
        )


def _parser_class(aliases: dict[str, str] | None = None):
    """HfArgumentParser that reads our `check` metadata as a range for `check_options` (and
    shows it in --help) instead of passing it on to argparse, which knows no such keyword;
    accepts TRL's names of our options (`aliases`: alias -> option); and lists each class's
    options under its own heading, ours first (classes that are not ours: by their name)."""
    import copy
    import types

    from transformers import HfArgumentParser

    flags: dict[str, list[str]] = {}
    for alias, name in (aliases or {}).items():
        flags.setdefault(name, []).append(f"--{alias}")

    class Parser(HfArgumentParser):
        def __init__(self, dataclass_types, **kwargs):
            kwargs.setdefault("formatter_class", _HelpFormatter)
            # argparse's usage would list every flag (hundreds, with TrainingArguments')
            kwargs.setdefault("usage", "%(prog)s [--config FILE.yaml] [--option value ...]")
            kwargs.setdefault(
                "epilog",
                "Options also come from `--config FILE.yaml` (same names as keys; flags win). "
                "`--debug` (no value) shows the traceback of an error.",
            )
            super().__init__(dataclass_types, **kwargs)

        def _add_dataclass_arguments(self, dtype):
            # as HfArgumentParser's, with each class under its own heading
            ours = dtype.__module__.split(".")[0] == "rankalign"
            package = dtype.__module__.split(".")[0]
            title = f"{self.prog} options" if ours else f"{dtype.__name__} options ({package})"
            group = self.add_argument_group(title)
            hints = typing.get_type_hints(dtype)
            for f in dataclasses.fields(dtype):
                if f.init:
                    f.type = hints[f.name]
                    self._parse_dataclass_field(group, f)

        @staticmethod
        def _parse_dataclass_field(parser, field):
            meta = dict(field.metadata)
            if "check" in meta:
                check = meta.pop("check")
                meta["help"] = f"{meta.get('help', '')} ({check_text(check)})".strip()
            # choices and conflicts are checked by check_options (flags, YAML and keywords
            # alike), not by argparse
            meta.pop("conflicts", None)
            if choices := meta.pop("choices", None):
                help_ = meta.get("help", "")
                shown = [str(c) for c in choices if c is not None]
                if not all(c in help_ for c in shown):
                    meta["help"] = f"{help_} (one of: {', '.join(shown)})".strip()
            if field.name in flags:
                meta["aliases"] = [*meta.get("aliases", ()), *flags[field.name]]
            if meta != dict(field.metadata):
                field = copy.copy(field)
                field.metadata = types.MappingProxyType(meta)
            HfArgumentParser._parse_dataclass_field(parser, field)

    return Parser


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
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


def redact_argv(argv: list[str]) -> list[str]:
    """A command line with secret flags' values (`--hub_token X`, `--api_key=X`) and token-like
    values anywhere replaced by `<redacted>`."""
    out, hide_next = [], False
    for arg in argv:
        if hide_next:
            out.append("<redacted>")
            hide_next = False
            continue
        name, eq, _value = arg.partition("=")
        if arg.startswith("--") and SECRET_NAME.search(name[2:].replace("-", "_")):
            if eq:
                out.append(f"{name}=<redacted>")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(redact_text(arg))
    return out


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


# The `rankalign ...` command line being run (set by cli.run_command): a config dump records it.
# Unset for a Python API call, whose options are the dump itself.
COMMAND_LINE: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "rankalign_command_line", default=None
)


def dump_config(path: str | os.PathLike, sections: dict[str, Any]) -> None:
    """Write the resolved configuration (secrets redacted) atomically as YAML."""
    from rankalign.data import atomic_write_text

    data = redact({name: _plain(v) for name, v in sections.items()})
    argv = COMMAND_LINE.get()
    data["command"] = (
        " ".join(["rankalign", *redact_argv(argv)]) if argv is not None else "(Python API call)"
    )
    atomic_write_text(path, yaml.safe_dump(redact(data), sort_keys=False, allow_unicode=True))


def peek_option(argv: list[str], name: str) -> str | None:
    """The value `name` will get from argv or the `--config` file, read before the full parse
    (a command whose defaults depend on one option: train's per-loss defaults)."""
    config_path, rest = split_config_arg(argv)
    for i, a in enumerate(rest):
        if a == f"--{name}" and i + 1 < len(rest):
            return rest[i + 1]
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    if config_path:
        value = load_yaml(config_path).get(name)
        return str(value) if value is not None else None
    return None
