"""Rewards R(x, y_i) = r_i for every response of a ranked list (RRHF paper §3.1).

A reward is named by a spec string (flag `--reward`, repeatable) or a YAML mapping:

    KIND[:ITEM[,ITEM...]]      ITEM = key=value, or one positional value (the kind's main option)

    sentiment                          vaderSentiment compound score of the response, in [-1, 1]
    length:lambda=0.01,unit=chars      -lambda * |y| (RLHF Workflow eq. 8; unit chars or tokens)
    rm:PATH                            AutoModelForSequenceClassification (also our BT models)
    causal-rm:PATH                     causal LM body + scalar v_head/score layer, read at EOS
    preference:PATH                    pairwise A/B preference LM, wins against the others
    judge:model=NAME,base_url=URL      LLM judge with the RRHF Wombat rubric (see judge.py)
    python:MODULE:FUNCTION             user function (prompt, response) -> float
    policy-logprob:PATH                length-normalized log-prob p_i = logp / len (paper §3.2)
    input                              the scores already in the input rows

    YAML:  reward: [{kind: rm, path: ./rm, weight: 2}, "length:lambda=0.001"]

Every kind accepts `weight` (default 1) and `name` (the key in `score_parts`, default the kind).
The row's score is the weighted sum of its parts. A value holding a comma cannot be written in
the string form; use the YAML form.

Each reward returns, per row, one value per response, or None where it could not score a
response (only the judge does that); score.py applies the failure policy to those.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

from rankalign.config import in_range, range_error
from rankalign.errors import UserError
from rankalign.models import DTYPES
from rankalign.scoring.rewards.base import Reward, RewardSpec
from rankalign.scoring.rewards.models import (
    CausalHeadReward,
    PolicyLogprob,
    PreferenceReward,
    SequenceClassifierReward,
)
from rankalign.scoring.rewards.rules import InputScores, LengthPenalty, PythonFunction, Sentiment
from rankalign.tokenization import CHAT_TEMPLATE_MODES

_MODEL = {"path": str, "batch_size": int, "max_length": int, "dtype": str, "device": str}
_MODEL |= dict.fromkeys(("trust_remote_code", "allow_pickle"), bool)
_JUDGE = dict.fromkeys(("model", "base_url", "api_key_env", "rubric", "aspects", "mode"), str)
_JUDGE |= dict.fromkeys(("min", "max", "temperature", "timeout", "backoff"), float)
_JUDGE |= dict.fromkeys(("retries", "max_tokens", "concurrency", "max_retries", "seed"), int)
# kind -> (name of the positional option, allowed options and their types)
KINDS: dict[str, tuple[str | None, dict[str, type]]] = {
    "sentiment": (None, {"text": str}),
    "length": (None, {"lambda": float, "unit": str, "tokenizer": str}),
    "rm": ("path", {**_MODEL, "format": str, "label": str, "output": str}),
    "causal-rm": ("path", {**_MODEL, "format": str, "append_eos": bool}),
    "preference": ("path", {**_MODEL, "template": str, "chat_template": str}),
    "judge": ("model", _JUDGE),
    "python": ("function", {"function": str}),
    "policy-logprob": ("path", {**_MODEL, "chat_template": str, "min_response_tokens": int}),
    "input": (None, {}),
}
# the option a kind cannot do without
REQUIRED = {kind: main for kind, (main, _) in KINDS.items() if main is not None}
REQUIRED["length"] = "lambda"  # no hidden default: its scale depends on the other rewards
_KEY = re.compile(r"[A-Za-z_][\w-]*")


# ranges (as config's `check`) and choices of option values (checked when a spec is parsed,
# before any model loads)
RANGES = {
    "batch_size": ">= 1",
    "max_length": ">= 2",
    "lambda": ">= 0",
    "min_response_tokens": ">= 0",
    "timeout": "> 0",
    "backoff": ">= 0",
    "temperature": ">= 0",
    "retries": ">= 0",
    "max_retries": ">= 0",
    "max_tokens": ">= 1",
    "concurrency": ">= 1",
}
CHOICES = {
    "unit": ("chars", "tokens"),
    "format": ("auto", "chat", "concat", "pair"),
    "output": ("logit", "prob"),
    "mode": ("list", "single"),
    "text": ("response", "full"),
    "chat_template": CHAT_TEMPLATE_MODES,
    "dtype": DTYPES,
}
# options that name a model folder or hub model (resolved and checked before anything loads)
MODEL_OPTIONS = {"rm": "path", "causal-rm": "path", "preference": "path", "policy-logprob": "path"}


def _brief(value: Any, limit: int = 60) -> str:
    """A value for a message, never longer than `limit` (a spec may be huge)."""
    if isinstance(value, dict | list | tuple | set):
        return f"a {type(value).__name__} of {len(value)} items"
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _convert(value: Any, typ: type, key: str, fail) -> Any:
    if isinstance(value, dict | list | tuple | set):
        raise fail(f"'{key}' must be a single value, got {_brief(value)}")
    if typ is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes", "on"):
            return True
        if str(value).lower() in ("false", "0", "no", "off"):
            return False
        raise fail(f"'{key}' must be true or false, got '{_brief(value)}'")
    if typ in (int, float):
        out = None
        if isinstance(value, bool):
            pass
        elif typ is int and isinstance(value, float):
            out = int(value) if value.is_integer() else None
        else:
            try:
                out = typ(value)
            except (TypeError, ValueError, OverflowError):
                out = None
        if out is None or (typ is float and not math.isfinite(out)):
            raise fail(
                f"'{key}' must be a{'n integer' if typ is int else ' finite number'}, "
                f"got '{_brief(value)}'"
            )
        if key in RANGES and not in_range(out, RANGES[key]):
            raise fail(f"'{key}' {range_error(RANGES[key], out)}")
        return out
    out = str(value)
    if key in CHOICES and out not in CHOICES[key]:
        raise fail(f"'{key}' must be one of {', '.join(CHOICES[key])}, got '{_brief(out)}'")
    return out


def parse_reward_spec(spec: str | dict, field: str = "reward") -> RewardSpec:
    """`rm:./model,weight=2` or {"kind": "rm", "path": "./model", "weight": 2} -> RewardSpec.

    A mapping must be flat: string keys, scalar values (it is refused, never expanded, when it
    holds lists or mappings). Every value is checked: its type, range (RANGES) and choices."""
    if isinstance(spec, dict):
        for key, value in spec.items():
            if not isinstance(key, str):
                raise UserError(
                    f"a reward mapping's keys are option names, got {type(key).__name__} "
                    f"'{_brief(key)}'",
                    field=field,
                )
            if value is not None and not isinstance(value, str | int | float | bool):
                raise UserError(
                    f"reward option '{_brief(key)}' must be a single value, got {_brief(value)}",
                    field=field,
                )
        text = str(spec)[:300]  # flat scalars: as long as the input, no longer
    elif isinstance(spec, str):
        text = spec[:300]
    else:
        raise UserError(
            "a reward is a spec string (e.g. rm:PATH) or a mapping of option: value, "
            f"got {type(spec).__name__}"
            + ("" if isinstance(spec, list | tuple | set) else f" '{_brief(spec)}'"),
            field=field,
        )

    def fail(msg: str) -> UserError:
        return UserError(f"reward '{text}': {msg}", field=field)

    positional = None
    if isinstance(spec, dict):
        items = dict(spec)
        kind = items.pop("kind", "")
        if not kind:
            raise fail("a reward mapping needs 'kind'")
        if not isinstance(kind, str):
            raise fail(f"'kind' must be a string, got {_brief(kind)}")
    else:
        kind, _, body = spec.strip().partition(":")
        items = {}
        for part in (p.strip() for p in body.split(",")) if body.strip() else []:
            key, eq, value = part.partition("=")
            if eq and _KEY.fullmatch(key.strip()):
                if key.strip() in items:
                    raise fail(f"'{key.strip()}' given twice")
                items[key.strip()] = value.strip()
            elif positional is None and part:
                positional = part
            else:
                raise fail(
                    f"unexpected '{_brief(part)}' (options are key=value, separated by commas)"
                )
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise fail(f"unknown reward kind '{_brief(kind)}' (known: {', '.join(KINDS)})")
    main, allowed = KINDS[kind]
    if positional is not None:
        if main is None:
            raise fail(f"'{kind}' takes no positional value (got '{_brief(positional)}')")
        if main in items:
            raise fail(f"'{main}' given twice")
        items[main] = positional
    weight = _convert(items.pop("weight", 1.0), float, "weight", fail)
    name = items.pop("name", None)
    name = kind if name is None else str(name)
    if not name.strip():
        raise fail("'name' must not be empty")
    options = {}
    for key, value in items.items():
        if key not in allowed:
            known = ", ".join([*allowed, "weight", "name"])
            raise fail(f"unknown option '{_brief(key)}' for '{kind}' (known: {known})")
        if value is None:
            continue
        options[key] = _convert(value, allowed[key], key, fail)
    if kind in REQUIRED and options.get(REQUIRED[kind]) in (None, ""):
        raise fail(f"'{kind}' needs '{REQUIRED[kind]}' (e.g. {kind}:VALUE)")
    if kind == "judge" and float(options.get("min", 1)) >= float(options.get("max", 5)):
        raise fail("'min' must be below 'max'")
    return RewardSpec(kind, options, weight, name, text)


def parse_reward_specs(specs: list, field: str = "reward") -> list[RewardSpec]:
    """Every spec of the option `field`, one weighted sum: errors name the entry (`field[i]`)
    when there are several, and two specs may not share a name (the keys of `score_parts`)."""
    if not isinstance(specs, list | tuple):
        specs = [specs]
    out = [
        parse_reward_spec(s, field=field if len(specs) == 1 else f"{field}[{i}]")
        for i, s in enumerate(specs)
    ]
    names = Counter(s.name for s in out)
    dupes = [n for n, c in names.items() if c > 1]
    if dupes:
        raise UserError(
            f"two rewards are named '{dupes[0]}'; give one a name=... option", field=field
        )
    return out


def _spec_error(e: UserError, spec: RewardSpec, field: str | None) -> UserError:
    """`e`, raised for `spec`, as one message naming the spec once (and `field` when given)."""
    msg = str(e)
    if not msg.startswith(f"reward '{spec.text}'"):
        msg = f"reward '{spec.text}': {msg}"
    return UserError(msg, field=field)


def check_reward_models(
    specs: list[RewardSpec], field: str | None = None, defaults: dict | None = None
) -> None:
    """Resolve every model a reward names (folder files checked, see models.resolve_model) and
    every file it reads, without loading anything: a bad path fails before a command writes.

    A local model folder with only pickle weights is refused unless `allow_pickle` is true in
    the spec's options or, when the spec does not say, in `defaults` (the command's options, as
    `build_rewards` gets them); with neither, the check is left to `build_rewards`. Errors name
    the spec, and `field` (the option it came from) when given."""
    from rankalign.models import check_weights_format, resolve_model

    for spec in specs:
        try:
            if spec.kind in MODEL_OPTIONS:
                path = resolve_model(spec.options[MODEL_OPTIONS[spec.kind]])
                allow = spec.options.get("allow_pickle")
                if allow is None and defaults is not None:
                    allow = defaults.get("allow_pickle", False)
                if allow is not None:
                    check_weights_format(path, bool(allow))
            if spec.kind == "length" and spec.options.get("tokenizer"):
                resolve_model(spec.options["tokenizer"])
            if spec.kind == "python":
                module = spec.options["function"].rpartition(":")[0]
                if module.endswith(".py") and not Path(module).is_file():
                    raise UserError("file not found", file=module)
            if spec.kind == "judge" and spec.options.get("rubric"):
                if not Path(spec.options["rubric"]).is_file():
                    raise UserError("judge rubric file not found", file=spec.options["rubric"])
        except UserError as e:
            raise _spec_error(e, spec, field) from None


# ----------------------------------------------------------------------------- shared helpers


# ----------------------------------------------------------------------------- base


# ----------------------------------------------------------------------------- model rewards


def _judge(spec, defaults):
    from rankalign.scoring.rewards.judge import JudgeReward

    return JudgeReward(spec, defaults)


BUILDERS = {
    "input": InputScores,
    "sentiment": Sentiment,
    "length": LengthPenalty,
    "python": PythonFunction,
    "rm": SequenceClassifierReward,
    "causal-rm": CausalHeadReward,
    "preference": PreferenceReward,
    "policy-logprob": PolicyLogprob,
    "judge": _judge,
}


def build_rewards(
    specs: list[RewardSpec], defaults: dict | None = None, field: str = "reward"
) -> list[Reward]:
    """Instantiate (load) every reward of specs parsed by `parse_reward_specs` (which refuses two
    with one name); errors name `field` (the option the specs came from) and the spec."""
    rewards = []
    for spec in specs:
        try:
            rewards.append(BUILDERS[spec.kind](spec, dict(defaults or {})))
        except UserError as e:
            raise _spec_error(e, spec, field) from None
    return rewards
