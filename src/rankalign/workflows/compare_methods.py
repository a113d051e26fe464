"""`rankalign compare`'s methods: the `methods` option (names or `{name: overrides}`) parsed into
`Method`s, every malformed or unknown entry a one-line UserError naming it (see
`workflows/compare.py` for what each kind of method runs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rankalign.config import load_yaml_text
from rankalign.errors import UserError
from rankalign.losses import LOSSES

DEFAULT_METHODS = "base,sft-best,rrhf,pro,listwise-dpo,dpo,simpo"
# options compare sets itself for every method: an override of them would break equal budgets
FIXED = ("data", "model", "output_dir", "max_steps", "seed", "save_strategy", "save_steps")


@dataclass
class Method:
    name: str
    kind: str  # base | train | loop
    loss: str | None = None
    overrides: dict = field(default_factory=dict)


def parse_methods(value: Any) -> list[Method]:
    """`methods` (a list of names / one-key mappings, a YAML string or 'a,b,c') -> Methods,
    `base` first. Unknown names and malformed entries are a UserError naming the entry."""
    if isinstance(value, str):
        text = value.strip()
        value = (
            load_yaml_text(text, "methods")
            if text.startswith(("[", "-", "{"))
            else [x.strip() for x in text.split(",") if x.strip()]
        )
    if isinstance(value, dict):  # a mapping in a YAML string: the same as a list of one-key maps
        value = [{k: v} for k, v in value.items()]
    if not isinstance(value, list) or not value:
        raise UserError("expected a non-empty list of methods", field="methods")
    methods: dict[str, Method] = {}
    for i, entry in enumerate(value):
        where = f"methods[{i}]"
        if isinstance(entry, str):
            name, over = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            name, over = next(iter(entry.items()))
            over = {} if over is None else over
        else:
            raise UserError("expected a name or a one-key mapping {name: options}", field=where)
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise UserError(f"bad method name {name!r}", field=where)
        if not isinstance(over, dict):
            raise UserError(f"'{name}': options must be a mapping", field=where)
        if name in methods:
            raise UserError(f"method '{name}' is listed twice", field=where)
        methods[name] = _method(name, dict(over), where)
    base = methods.pop("base", Method("base", "base"))
    return [base, *methods.values()]


def _method(name: str, over: dict, where: str) -> Method:
    fixed = sorted(k for k in over if k in FIXED)
    if fixed:
        raise UserError(
            f"'{name}': {', '.join(fixed)} is set by compare for every method (equal budgets)",
            field=where,
        )
    if name == "base":
        if over:
            raise UserError(
                "'base' takes no options (it is the untrained start model)", field=where
            )
        return Method(name, "base")
    loop = over.pop("loop", False)
    if not isinstance(loop, bool):
        raise UserError(f"'{name}': loop must be true or false", field=where)
    loss = over.pop("loss", None)
    if loss is None:
        if name == "sft-best":
            loss = "rrhf"
            over.setdefault("rank_weight", 0.0)
        elif name.replace("_", "-") in LOSSES:
            loss = name.replace("_", "-")
        elif loop and name.startswith("loop-") and name[5:].replace("_", "-") in LOSSES:
            loss = name[5:].replace("_", "-")
        else:
            raise UserError(
                f"unknown method '{name}': use base, sft-best, a loss ({', '.join(LOSSES)}), "
                "or give it `loss:` (and `loop: true` for online training)",
                field=where,
            )
    if not isinstance(loss, str) or loss.replace("_", "-") not in LOSSES:
        raise UserError(f"'{name}': unknown loss {loss!r} ({', '.join(LOSSES)})", field=where)
    return Method(name, "loop" if loop else "train", loss.replace("_", "-"), over)
