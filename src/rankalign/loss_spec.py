"""What a loss declares about itself, next to its function in `losses.py`: its options, whether it
needs reference log-probs or scores, its minimum list size and its learning rate.

Everything else that knows about losses is derived from these specs: `losses.LOSSES`,
`NEEDS_REFERENCE` and `MIN_RESPONSES`; `TrainConfig`'s loss fields (flags, YAML keys, keyword
arguments), their help, range and choice checks, and the per-loss TrainingArguments defaults
(`training/config.py`); the loss table (`python -m rankalign.losses`). Standard library only:
`losses.py` stays a module of pure torch functions.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

_FORMS = (">", ">=", "<", "<=", "[", "(")


@dataclass(frozen=True)
class Option:
    """A loss hyperparameter. `name` is the loss function's keyword argument, and the same name
    is the config key, the flag and the API keyword. `check` is a range in config.py's forms
    (`> 0`, `>= 0`, `[0, 0.5]`, `(0, 1]`); `choices` the accepted strings."""

    name: str
    help: str
    check: str | None = None
    choices: tuple[str, ...] | None = None

    def __post_init__(self):
        if not self.name.isidentifier() or not self.help.strip():
            raise ValueError(f"loss option {self.name!r}: needs an identifier name and help")
        if self.check is not None and not self.check.strip().startswith(_FORMS):
            raise ValueError(f"loss option {self.name}: bad range check {self.check!r}")


@dataclass(frozen=True, kw_only=True)
class LossSpec:
    """One loss: `fn(inputs, **options) -> (loss, parts)` and what the trainer must know.

    learning_rate: required, the source paper's (a loss without one would silently train at
        TrainingArguments' 5e-5). `training_args`: any other TrainingArguments default that
        differs from the common ones (training/config.py COMMON_DEFAULTS).
    needs_reference: the trainer supplies `LossInputs.ref_logp` (precomputed or adapters-off).
    min_responses: lists with fewer valid responses are dropped (counted) before training.
    uses_scores: False when the rows need no scores (plain SFT on every response).
    options: every keyword argument of `fn` after `inputs`, each with a default in `fn`.
    """

    name: str
    fn: Callable
    learning_rate: float
    options: tuple[Option, ...] = ()
    needs_reference: bool = False
    min_responses: int = 2
    uses_scores: bool = True
    training_args: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        where = f"loss '{self.name}'"
        if not isinstance(self.learning_rate, float) or not self.learning_rate > 0:
            raise ValueError(f"{where}: learning_rate must be a positive float")
        if "learning_rate" in self.training_args:
            raise ValueError(f"{where}: learning_rate goes in the spec's own field")
        if self.min_responses < 1:
            raise ValueError(f"{where}: min_responses must be >= 1")
        params = list(inspect.signature(self.fn).parameters.values())[1:]
        keywords = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
        if len(keywords) != len(params) or any(p.default is p.empty for p in params):
            raise ValueError(f"{where}: options must be keyword-only arguments with defaults")
        declared = [o.name for o in self.options]
        if sorted(declared) != sorted(keywords):
            raise ValueError(f"{where}: options {declared} != function keywords {sorted(keywords)}")
        for name, value in self.defaults().items():
            choices = self.option(name).choices
            if choices is not None and value not in choices:
                raise ValueError(f"{where}: default {name}={value!r} is not one of {choices}")

    def defaults(self) -> dict[str, object]:
        """option -> the function's default (the value a run uses when the option is unset)."""
        params = inspect.signature(self.fn).parameters
        return {o.name: params[o.name].default for o in self.options}

    def option(self, name: str) -> Option:
        return next(o for o in self.options if o.name == name)

    @property
    def summary(self) -> str:
        """The first paragraph of the function's docstring: the method and its source."""
        return " ".join((self.fn.__doc__ or "").split("\n\n")[0].split()).replace("|", "\\|")


def merged_options(specs: Mapping[str, LossSpec]) -> dict[str, tuple[Option, list[str]]]:
    """option name -> (its declaration, the losses that take it), in first-declared order.
    Losses that share an option name must declare it the same way (one flag, one meaning)."""
    out: dict[str, tuple[Option, list[str]]] = {}
    for spec in specs.values():
        for option in spec.options:
            if option.name in out and out[option.name][0] != option:
                first = out[option.name][1][0]
                raise ValueError(
                    f"loss option {option.name}: '{spec.name}' declares it unlike '{first}'"
                )
            out.setdefault(option.name, (option, []))[1].append(spec.name)
    return out


def loss_table(specs: Mapping[str, LossSpec]) -> str:
    """The losses as a Markdown table (`python -m rankalign.losses` prints it)."""

    def shown(spec: LossSpec) -> str:
        parts = []
        for name, value in spec.defaults().items():
            o = spec.option(name)
            allowed = " \\| ".join(o.choices) if o.choices else o.check
            parts.append(f"`{name}` {value}" + (f" ({allowed})" if allowed else ""))
        return ", ".join(parts) or "-"

    rows = [
        "| `--loss` | method and source | reference | min k | scores | options (default) | lr |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in specs.values():
        rows.append(
            f"| `{s.name}` | {s.summary} | {'yes' if s.needs_reference else 'no'} | "
            f"{s.min_responses} | {'yes' if s.uses_scores else 'no'} | {shown(s)} | "
            f"{s.learning_rate:g} |"
        )
    return "\n".join(rows)
