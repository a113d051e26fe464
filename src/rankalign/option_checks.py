"""Checks of option values, one place for every command: annotated types, finite numbers, the
64-bit integer limit, ranges (`metadata={"check": "> 0"}`), choices (`metadata={"choices":
(...)}`) and contradictory pairs (`metadata={"conflicts": ("resume",)}`) declared on the config
dataclasses' fields (design.md §8). `config.parse_config` runs them on flags, YAML keys and
keyword arguments alike, before a command writes anything.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from rankalign.errors import UserError


def type_hints(cls) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: its values are not type-checked
        return {}


def fits(value: Any, hint: Any) -> bool:
    """Does `value` (from YAML or the parser) have the annotated type? Unknown types pass."""
    import enum
    import types
    import typing

    if hint is None or hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, str | hint)
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, list | tuple)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def type_name(hint: Any) -> str:
    import types
    import typing

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        names = [type_name(a) for a in typing.get_args(hint) if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in typing.get_args(hint) else "")
    if hint is float:
        return "a number"
    if hint is int:
        return "an integer"
    if hint is bool:
        return "true or false"
    if hint is str:
        return "a string"
    return getattr(hint, "__name__", None) or str(hint)


def describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


_CHECK = re.compile(
    r"^\s*(>=|<=|>|<)\s*(\S+)\s*$|^\s*([\[(])\s*([^,\s]+)\s*,\s*([^\])\s]+)\s*([\])])\s*$"
)


def check_text(check: str) -> str:
    """`> 0` -> "must be > 0"; `(0, 1]` -> "must be in (0, 1]"."""
    check = check.strip()
    return f"must be {'in ' if check[:1] in '[(' else ''}{check}"


def in_range(value: float, check: str) -> bool:
    """Does `value` satisfy a range check: `> X`, `>= X`, `< X`, `<= X`, or an interval whose
    ends are closed `[ ]` or open `( )`?"""
    m = _CHECK.match(check)
    if m is None:
        raise ValueError(f"bad range check {check!r}")  # a bug in a config class, not user input
    if m.group(1):
        bound = float(m.group(2))
        return {">": value > bound, ">=": value >= bound, "<": value < bound, "<=": value <= bound}[
            m.group(1)
        ]
    low, high = float(m.group(4)), float(m.group(5))
    above = value >= low if m.group(3) == "[" else value > low
    below = value <= high if m.group(6) == "]" else value < high
    return above and below


def range_error(check: str, value: Any) -> str:
    """The message for a value out of its range (options, and specs parsed from strings)."""
    return f"{check_text(check)}, got {value}"


MAX_INT = 2**63 - 1

# Ranges of options in classes that are not ours (by class name, matched along the MRO, so
# subclasses get them too). Every command that takes TrainingArguments checks these.
EXTERNAL_CHECKS: dict[str, dict[str, str]] = {
    "TrainingArguments": {
        "learning_rate": ">= 0",  # 0: a run that only measures (bench/bench_dpo_trl.py)
        "per_device_train_batch_size": ">= 1",
        "per_device_eval_batch_size": ">= 1",
        "gradient_accumulation_steps": ">= 1",
        "num_train_epochs": "> 0",
        "max_steps": ">= -1",
        "warmup_steps": ">= 0",
        "weight_decay": ">= 0",
        "max_grad_norm": ">= 0",
        "adam_beta1": "[0, 1]",
        "adam_beta2": "[0, 1]",
        "adam_epsilon": ">= 0",
        "label_smoothing_factor": "[0, 1]",
        "logging_steps": "> 0",
        "save_steps": "> 0",
        "eval_steps": "> 0",
        "save_total_limit": ">= 1",
        "seed": "[0, 4294967295]",  # numpy's and torch's seeds are 32-bit
        "data_seed": "[0, 4294967295]",
        "dataloader_num_workers": ">= 0",
        "eval_accumulation_steps": ">= 1",
    }
}


def scalar_hint(hint: Any) -> bool:
    """bool, int, float or str, optionally `| None`: the types whose values we check after
    parsing (others, like TrainingArguments' dict-or-str fields, are converted by their class)."""
    import types
    import typing

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return len(args) == 1 and scalar_hint(args[0])
    return hint in (bool, int, float, str)


def choice_problem(obj: Any) -> tuple[str, str] | None:
    """(field, "must be one of a, b, got 'x'") for the first field of `obj` whose value is not
    among its `metadata["choices"]`; None (not set) always passes."""
    for f in dataclasses.fields(obj):
        choices, value = f.metadata.get("choices"), getattr(obj, f.name)
        if choices is not None and value is not None and value not in choices:
            shown = ", ".join(str(c) for c in choices if c is not None)
            return f.name, f"must be one of {shown}, got '{value}'"
    return None


def _is_set(obj: Any, f: dataclasses.Field) -> bool:
    """Was the option given: a value other than its default (an empty list is not given)?"""
    value = getattr(obj, f.name)
    if f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = f.default
    return value is not None and value != [] and value != default


def _shown(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def conflict_problem(obj: Any) -> tuple[str, str] | None:
    """(field, message) when two options that contradict each other are both given: a field's
    `metadata["conflicts"]` names the fields it cannot be combined with. A switch given as false
    contradicts nothing (`packed_prompt false` with `shared_prompt false` is no contradiction)."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for f in fields.values():
        for other in f.metadata.get("conflicts", ()):
            if getattr(obj, f.name) is False:
                continue
            if _is_set(obj, f) and _is_set(obj, fields[other]):
                mine, theirs = _shown(getattr(obj, f.name)), _shown(getattr(obj, other))
                return f.name, (
                    f"{f.name} {mine} contradicts {other} {theirs}: give only one of them"
                )
    return None


def check_choices(obj: Any) -> None:
    """ValueError `name must be one of ...` (for a dataclass's __post_init__; parse_config
    reports it as a one-line user error)."""
    if problem := choice_problem(obj):
        raise ValueError(f"{problem[0]} {problem[1]}")


def check_conflicts(obj: Any) -> None:
    """ValueError naming two contradictory options set together (for __post_init__)."""
    if problem := conflict_problem(obj):
        raise ValueError(problem[1])


def check_options(obj: Any, *, files: dict[str, Any] | None = None) -> None:
    """Refuse option values of the wrong type, non-finite numbers, values out of range or not
    among the field's choices, and contradictory pairs.

    A field's range is `metadata={"check": "> 0"}` on our dataclasses (`> X`, `>= X`, `< X`,
    `<= X`, or an interval `[A, B]`, `(A, B]`, `[A, B)`, `(A, B)`), or EXTERNAL_CHECKS for a
    class that is not ours; its choices `metadata={"choices": (...)}`, and the options it
    cannot be combined with `metadata={"conflicts": (...)}`. The one-line error names the
    option, and the config file where `files` says it came from one."""
    import math

    for problem in (choice_problem(obj), conflict_problem(obj)):
        if problem:
            name, message = problem
            raise UserError(message, file=(files or {}).get(name), field=name)
    hints = type_hints(type(obj))
    external = [EXTERNAL_CHECKS.get(cls.__name__, {}) for cls in reversed(type(obj).__mro__)]
    checks = {k: v for table in external for k, v in table.items()}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            continue
        where = {"file": (files or {}).get(f.name), "field": f.name}
        hint = hints.get(f.name)
        if scalar_hint(hint) and not fits(value, hint):
            raise UserError(f"expected {type_name(hint)}, got {describe(value)}", **where)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"must be a finite number, got {value}", **where)
        if isinstance(value, int) and abs(value) > MAX_INT:
            # torch, numpy and the samplers take 64-bit integers: larger ones fail deep inside
            raise UserError(
                f"must be at most 2**63 - 1, got a {len(str(value))}-digit number", **where
            )
        check = f.metadata.get("check") or checks.get(f.name)
        if check and not in_range(value, check):
            raise UserError(range_error(check, value), **where)
