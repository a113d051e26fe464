"""What every reward is: `RewardSpec` (a parsed `KIND[:key=value,...]`), the `Reward` base class
(`score(rows)` -> one value or None per response) with its declared `Schema` (the kind's options:
type, range, choices, default, which one is positional, which names a model or a file; whether
the reward looks at a row's responses together), the one weighted sum of several rewards, and the
batching helpers the model rewards share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from rankalign.config import in_range, range_error


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Index batches, longest first, so each batch pads only to its own longest row."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), max(1, batch_size))]


def flat_index(rows: list[dict]) -> list[tuple[int, int]]:
    return [(r, i) for r, row in enumerate(rows) for i in range(len(row["responses"]))]


def unflat(values: list, rows: list[dict]) -> list[list]:
    out, pos = [], 0
    for row in rows:
        k = len(row["responses"])
        out.append(list(values[pos : pos + k]))
        pos += k
    return out


def progress(iterable, desc: str, total: int | None = None):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, unit="batch")


def brief(value: Any, limit: int = 60) -> str:
    """A value for a message, never longer than `limit` (a spec may be huge)."""
    if isinstance(value, dict | list | tuple | set):
        return f"a {type(value).__name__} of {len(value)} items"
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ----------------------------------------------------------------------------- schemas


@dataclass(frozen=True)
class Option:
    """One option of a reward kind, as a spec gives it (`KIND:key=value`, or a YAML key).

    `range` uses config's forms (`>= 1`, `(0, 1]`); `choices` lists the allowed strings;
    `default` is the value when neither the spec nor the command gives one (None: no default);
    `role` says what the value names, checked before anything loads (`check_reward_models`):
    "model" (a model folder or hub name: resolved, its weights' format checked), "tokenizer"
    (resolved) or "file" (must exist)."""

    type: type = str
    default: Any = None
    range: str | None = None
    choices: tuple[str, ...] | None = None
    required: bool = False
    role: str | None = None
    help: str = ""

    def check(self, key: str, value: Any) -> Any:
        """`value` converted to the option's type; ValueError (a one-line message naming `key`)
        when it is not of the type, out of range or not one of the choices."""
        if isinstance(value, dict | list | tuple | set):
            raise ValueError(f"'{key}' must be a single value, got {brief(value)}")
        if self.type is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError(f"'{key}' must be true or false, got '{brief(value)}'")
        if self.type in (int, float):
            out = None
            if isinstance(value, bool):
                pass
            elif self.type is int and isinstance(value, float):
                out = int(value) if value.is_integer() else None
            else:
                try:
                    out = self.type(value)
                except (TypeError, ValueError, OverflowError):
                    out = None
            if out is None or (self.type is float and not math.isfinite(out)):
                what = "n integer" if self.type is int else " finite number"
                raise ValueError(f"'{key}' must be a{what}, got '{brief(value)}'")
            if self.range is not None and not in_range(out, self.range):
                raise ValueError(f"'{key}' {range_error(self.range, out)}")
            return out
        out = str(value)
        if self.choices is not None and out not in self.choices:
            raise ValueError(
                f"'{key}' must be one of {', '.join(self.choices)}, got '{brief(out)}'"
            )
        return out


# every kind takes these two: its weight in the sum and its key in `score_parts`
COMMON_OPTIONS = {"weight": Option(float, 1.0), "name": Option(str)}


@dataclass(frozen=True)
class Schema:
    """A reward kind as the user writes it: `KIND[:POSITIONAL][,key=value...]`.

    `positional` is the option a bare value sets (`rm:PATH` sets `path`) and is required;
    `pairwise`: the reward scores a row's responses together, so a win rate puts both answers
    in one row; `both_orders`: such a reward is position-biased, so a win rate asks it in both
    orders and keeps the verdicts that agree (False for one that averages both orders itself);
    `example`: the spec `--help` shows."""

    kind: str
    options: dict[str, Option] = field(default_factory=dict)
    positional: str | None = None
    pairwise: bool = False
    both_orders: bool = False
    example: str = ""

    def __post_init__(self):  # a mistake in a reward class, not user input
        if self.positional is not None and self.positional not in self.options:
            raise ValueError(f"{self.kind}: positional '{self.positional}' is not an option")
        if set(self.options) & set(COMMON_OPTIONS):
            raise ValueError(f"{self.kind}: 'weight' and 'name' are common to every kind")
        if len([o for o in self.options.values() if o.role == "model"]) > 1:
            raise ValueError(f"{self.kind}: at most one option names the model")

    @property
    def required(self) -> tuple[str, ...]:
        """The options a spec cannot do without: the positional one, then those marked."""
        marked = [k for k, o in self.options.items() if o.required and k != self.positional]
        return (*([self.positional] if self.positional else []), *marked)

    @property
    def types(self) -> dict[str, type]:
        return {k: o.type for k, o in self.options.items()}

    @property
    def ranges(self) -> dict[str, str]:
        return {k: o.range for k, o in self.options.items() if o.range is not None}

    @property
    def choices(self) -> dict[str, tuple[str, ...]]:
        return {k: o.choices for k, o in self.options.items() if o.choices is not None}

    @property
    def defaults(self) -> dict[str, Any]:
        return {k: o.default for k, o in self.options.items() if o.default is not None}

    @property
    def model_option(self) -> str | None:
        return next((k for k, o in self.options.items() if o.role == "model"), None)


# ----------------------------------------------------------------------------- rewards


class Reward:
    """One reward component. `score(rows)` -> per row, one float (or None: failed) per response.

    A kind is a subclass with a `schema` (its options, checked when a spec is parsed) and one
    line in `registry.REWARDS`. `self.opt` holds the options: the spec's, else the command's
    (`defaults`: batch_size, device, ...), else the schema's defaults."""

    schema: ClassVar[Schema]

    def __init__(self, spec: RewardSpec, defaults: dict):
        self.spec, self.name, self.weight = spec, spec.name, spec.weight
        given = {k: v for k, v in defaults.items() if v is not None}
        self.opt = {**self.schema.defaults, **given, **spec.options}
        # row id -> {response index: reason}, filled by rewards that can fail (the judge)
        self.failures: dict[str, dict[int, str]] = {}

    @classmethod
    def spec_problem(cls, options: dict) -> str | None:
        """What is wrong with a parsed spec's options as a whole (each value is already
        checked on its own), or None; kinds whose options constrain each other override it."""
        return None

    @classmethod
    def check_files(cls, options: dict) -> None:
        """Check files the options name that `Option.role` cannot describe (UserError), without
        loading anything; called by `check_reward_models`."""

    def score(self, rows: list[dict]) -> list[list[float | None]]:
        raise NotImplementedError


@dataclass
class RewardSpec:
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    name: str = ""
    text: str = ""  # the spec as the user wrote it, for messages

    def as_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "weight": self.weight, **self.options}


# ----------------------------------------------------------------------------- the weighted sum


class Weighted(NamedTuple):
    total: float | None  # the weighted sum; None when it cannot be given (see `reason`)
    reason: str | None  # why there is no total
    invalid: bool  # a part, or the sum, is not a finite number (rather than a part missing)


def weighted_sum(rewards: list[Reward], values: list[float | None]) -> Weighted:
    """A response's score r(x, y) = Σ_m w_m · r_m(x, y) over its rewards' values (RRHF §3.1 with
    several reward components; `score` and `evaluate` both sum through here).

    The one policy for values that are not finite numbers:
    - a part that is NaN or ±inf, or finite parts whose weighted sum overflows: no total,
      `invalid` (checked over every part first, so a NaN is named even beside a missing part).
      NaN has no mean and no order: `score` refuses to write it (a UserError naming the row and
      the response), `evaluate` leaves the response out of its means and adds a note;
    - a part that is None (the reward could not score the response, e.g. a judge answer that
      stayed unparseable): no total, not invalid; `score` applies `--on_failure`, `evaluate`
      leaves it out with the same note.
    """
    for reward, v in zip(rewards, values):
        if v is not None and not math.isfinite(v):
            return Weighted(None, f"reward '{reward.spec.text}' gave {v}", True)
    missing = [r.name for r, v in zip(rewards, values) if v is None]
    if missing:
        return Weighted(None, f"reward '{missing[0]}' could not score it", False)
    total = sum(r.weight * v for r, v in zip(rewards, values))
    if not math.isfinite(total):
        return Weighted(None, "the weighted sum of rewards overflows", True)
    return Weighted(total, None, False)
