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
                                       (`rankalign score --help` lists every kind: generated)

    YAML:  reward: [{kind: rm, path: ./rm, weight: 2}, "length:lambda=0.001"]

Every kind accepts `weight` (default 1) and `name` (the key in `score_parts`, default the kind).
The row's score is the weighted sum of its parts (`base.weighted_sum`). A value holding a comma
cannot be written in the string form; use the YAML form.

Each kind is a `Reward` subclass that declares its options in a `Schema` (type, range, choices,
default, the positional option, the option naming a model or a file, pairwise, both orders);
`REWARDS` lists the kinds, and every table here is generated from their schemas. Choices and
ranges are per kind: two kinds may give one option name different rules.

Each reward returns, per row, one value per response, or None where it could not score a
response (only the judge does that); scoring/stage.py applies the failure policy to those.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from rankalign.errors import UserError
from rankalign.scoring.rewards import judge, models, rules
from rankalign.scoring.rewards.base import COMMON_OPTIONS, Reward, RewardSpec, Schema, brief

# Every reward kind, in the order messages and `--help` list them. Adding a kind: its class
# (with its `schema`) in one module, and one line here.
REWARDS: tuple[type[Reward], ...] = (
    rules.Sentiment,
    rules.LengthPenalty,
    models.SequenceClassifierReward,
    models.CausalHeadReward,
    models.PreferenceReward,
    judge.JudgeReward,
    rules.PythonFunction,
    models.PolicyLogprob,
    rules.InputScores,
)

# ---- generated from the schemas (never edited by hand; tests/test_reward_schema.py ties them)
SCHEMAS: dict[str, Schema] = {cls.schema.kind: cls.schema for cls in REWARDS}
BUILDERS: dict[str, type[Reward]] = {cls.schema.kind: cls for cls in REWARDS}
# kind -> (name of the positional option, allowed options and their types)
KINDS = {kind: (s.positional, s.types) for kind, s in SCHEMAS.items()}
# kind -> the options a spec cannot do without
REQUIRED = {kind: s.required for kind, s in SCHEMAS.items() if s.required}
# kind -> option -> range (as config's `check`) / choices / default, checked when a spec is
# parsed, before any model loads
RANGES = {kind: s.ranges for kind, s in SCHEMAS.items()}
CHOICES = {kind: s.choices for kind, s in SCHEMAS.items()}
DEFAULTS = {kind: s.defaults for kind, s in SCHEMAS.items()}
# kind -> the option that names a model folder or hub name (resolved and checked before loading)
MODEL_OPTIONS = {kind: s.model_option for kind, s in SCHEMAS.items() if s.model_option}
# rewards that look at a row's responses together; those a win rate asks in both orders
PAIRWISE_KINDS = tuple(kind for kind, s in SCHEMAS.items() if s.pairwise)
BOTH_ORDERS_KINDS = tuple(kind for kind, s in SCHEMAS.items() if s.both_orders)

_KEY = re.compile(r"[A-Za-z_][\w-]*")


def kinds_help() -> str:
    """The kinds as `--reward`'s help lists them (one example spec each)."""
    return ", ".join(s.example or s.kind for s in SCHEMAS.values())


def parse_reward_spec(spec: str | dict, field: str = "reward") -> RewardSpec:
    """`rm:./model,weight=2` or {"kind": "rm", "path": "./model", "weight": 2} -> RewardSpec.

    A mapping must be flat: string keys, scalar values (it is refused, never expanded, when it
    holds lists or mappings). Every value is checked by its kind's schema: type, range, choices,
    required options, and the kind's own `spec_problem`."""
    if isinstance(spec, dict):
        for key, value in spec.items():
            if not isinstance(key, str):
                raise UserError(
                    f"a reward mapping's keys are option names, got {type(key).__name__} "
                    f"'{brief(key)}'",
                    field=field,
                )
            if value is not None and not isinstance(value, str | int | float | bool):
                raise UserError(
                    f"reward option '{brief(key)}' must be a single value, got {brief(value)}",
                    field=field,
                )
        text = str(spec)[:300]  # flat scalars: as long as the input, no longer
    elif isinstance(spec, str):
        text = spec[:300]
    else:
        raise UserError(
            "a reward is a spec string (e.g. rm:PATH) or a mapping of option: value, "
            f"got {type(spec).__name__}"
            + ("" if isinstance(spec, list | tuple | set) else f" '{brief(spec)}'"),
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
            raise fail(f"'kind' must be a string, got {brief(kind)}")
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
                    f"unexpected '{brief(part)}' (options are key=value, separated by commas)"
                )
    kind = kind.strip().lower()
    if kind not in SCHEMAS:
        raise fail(f"unknown reward kind '{brief(kind)}' (known: {', '.join(SCHEMAS)})")
    schema = SCHEMAS[kind]
    main = schema.positional
    if positional is not None:
        if main is None:
            raise fail(f"'{kind}' takes no positional value (got '{brief(positional)}')")
        if main in items:
            raise fail(f"'{main}' given twice")
        items[main] = positional

    def check(option, key: str, value):
        try:
            return option.check(key, value)
        except ValueError as e:
            raise fail(str(e)) from None

    weight = check(COMMON_OPTIONS["weight"], "weight", items.pop("weight", 1.0))
    name = items.pop("name", None)
    name = kind if name is None else str(name)
    if not name.strip():
        raise fail("'name' must not be empty")
    options = {}
    for key, value in items.items():
        if key not in schema.options:
            known = ", ".join([*schema.options, *COMMON_OPTIONS])
            raise fail(f"unknown option '{brief(key)}' for '{kind}' (known: {known})")
        if value is None:
            continue
        options[key] = check(schema.options[key], key, value)
    for key in schema.required:
        if options.get(key) in (None, ""):
            example = f"{kind}:VALUE" if key == main else f"{kind}:{key}=VALUE"
            raise fail(f"'{kind}' needs '{key}' (e.g. {example})")
    problem = BUILDERS[kind].spec_problem(options)
    if problem:
        raise fail(problem)
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
            for key, option in SCHEMAS[spec.kind].options.items():
                value = spec.options.get(key)
                if not value or option.role is None:
                    continue
                if option.role == "model":
                    path = resolve_model(value)
                    allow = spec.options.get("allow_pickle")
                    if allow is None and defaults is not None:
                        allow = defaults.get("allow_pickle", False)
                    if allow is not None:
                        check_weights_format(path, bool(allow))
                elif option.role == "tokenizer":
                    resolve_model(value)
                elif option.role == "file" and not Path(value).is_file():
                    raise UserError(f"{spec.kind} {key} file not found", file=value)
            BUILDERS[spec.kind].check_files(spec.options)
        except UserError as e:
            raise _spec_error(e, spec, field) from None


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
