"""Reward kinds declare their options (`rewards.base.Schema`): the registry's tables are generated
from the declarations, choices and ranges are per kind, and `score` and `evaluate` share one
weighted sum with one policy for values that are not finite numbers."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from rankalign.errors import UserError
from rankalign.evaluation.scoring import RewardSet
from rankalign.models import DTYPES
from rankalign.scoring.rewards import registry
from rankalign.scoring.rewards.base import Option, Reward, RewardSpec, Schema, weighted_sum
from rankalign.scoring.rewards.registry import (
    build_rewards,
    check_reward_models,
    parse_reward_spec,
    parse_reward_specs,
)
from rankalign.scoring.stage import combine
from rankalign.tokenization import CHAT_TEMPLATE_MODES

# ----------------------------------------------------------------------------- generated tables


def test_generated_tables_equal_the_declared_schemas():
    """Every table, rebuilt here option by option from each class's schema."""
    kinds = [cls.schema.kind for cls in registry.REWARDS]
    assert len(set(kinds)) == len(kinds)  # one class per kind
    assert list(registry.SCHEMAS) == list(registry.KINDS) == list(registry.BUILDERS) == kinds
    for cls in registry.REWARDS:
        s = cls.schema
        assert registry.BUILDERS[s.kind] is cls and registry.SCHEMAS[s.kind] is s
        types, ranges, choices, defaults, model = {}, {}, {}, {}, None
        for key, option in s.options.items():
            types[key] = option.type
            if option.range is not None:
                ranges[key] = option.range
            if option.choices is not None:
                choices[key] = option.choices
            if option.default is not None:
                defaults[key] = option.default
            if option.role == "model":
                model = key
        assert registry.KINDS[s.kind] == (s.positional, types)
        assert registry.RANGES[s.kind] == ranges
        assert registry.CHOICES[s.kind] == choices
        assert registry.DEFAULTS[s.kind] == defaults
        assert registry.MODEL_OPTIONS.get(s.kind) == model
        required = [s.positional] if s.positional else []
        required += [k for k, o in s.options.items() if o.required and k != s.positional]
        assert registry.REQUIRED.get(s.kind, ()) == tuple(required)
        assert (s.kind in registry.PAIRWISE_KINDS) == s.pairwise
        assert (s.kind in registry.BOTH_ORDERS_KINDS) == s.both_orders
        assert s.example.split(":")[0] == s.kind  # --help shows a spec of this kind
        assert s.example in registry.kinds_help()


# The tables as they were written by hand before the schemas (global RANGES / CHOICES applied to
# every kind with that option name): the nine kinds keep their rules, with one deliberate change
# (causal-rm refuses format=pair when the spec is parsed; it used to fail when scoring began).
_MODEL = {"path": str, "batch_size": int, "max_length": int, "dtype": str, "device": str}
_MODEL |= dict.fromkeys(("trust_remote_code", "allow_pickle"), bool)
_JUDGE = dict.fromkeys(("model", "base_url", "api_key_env", "rubric", "aspects", "mode"), str)
_JUDGE |= dict.fromkeys(("min", "max", "temperature", "timeout", "backoff"), float)
_JUDGE |= dict.fromkeys(("retries", "max_tokens", "concurrency", "max_retries", "seed"), int)
OLD_KINDS = {
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
OLD_REQUIRED = {k: main for k, (main, _) in OLD_KINDS.items() if main} | {"length": "lambda"}
OLD_RANGES = {
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
OLD_CHOICES = {
    "unit": ("chars", "tokens"),
    "format": ("auto", "chat", "concat", "pair"),
    "output": ("logit", "prob"),
    "mode": ("list", "single"),
    "text": ("response", "full"),
    "chat_template": CHAT_TEMPLATE_MODES,
    "dtype": DTYPES,
}


def test_the_nine_kinds_keep_their_rules():
    for kind, (main, types) in OLD_KINDS.items():
        assert registry.KINDS[kind] == (main, types)
        assert registry.REQUIRED.get(kind, ()) == (
            (OLD_REQUIRED[kind],) if kind in OLD_REQUIRED else ()
        )
        assert registry.RANGES[kind] == {k: OLD_RANGES[k] for k in types if k in OLD_RANGES}
        want = {k: OLD_CHOICES[k] for k in types if k in OLD_CHOICES}
        if kind == "causal-rm":
            want["format"] = ("auto", "chat", "concat")
        assert registry.CHOICES[kind] == want
    assert registry.MODEL_OPTIONS == dict.fromkeys(
        ("rm", "causal-rm", "preference", "policy-logprob"), "path"
    )
    assert registry.PAIRWISE_KINDS == ("preference", "judge")
    assert registry.BOTH_ORDERS_KINDS == ("judge",)


# ----------------------------------------------------------------------------- per-kind rules


class ToyA(Reward):
    schema = Schema(
        "toy-a",
        {"mode": Option(str, "x", choices=("x", "y")), "size": Option(int, 0, range=">= 0")},
    )

    def score(self, rows):
        return [[float(self.opt["size"])] * len(row["responses"]) for row in rows]


class ToyB(Reward):
    schema = Schema(
        "toy-b",
        {"mode": Option(str, "z", choices=("z",)), "size": Option(int, 5, range="[5, 9]")},
        positional="size",
    )

    def score(self, rows):
        return [[None if "?" in r else float(len(r)) for r in row["responses"]] for row in rows]


@pytest.fixture
def toys(monkeypatch):
    for cls in (ToyA, ToyB):
        monkeypatch.setitem(registry.SCHEMAS, cls.schema.kind, cls.schema)
        monkeypatch.setitem(registry.BUILDERS, cls.schema.kind, cls)


def test_one_option_name_has_its_own_rules_in_each_kind(toys):
    assert parse_reward_spec("toy-a:mode=y,size=0").options == {"mode": "y", "size": 0}
    assert parse_reward_spec("toy-b:7,mode=z").options == {"size": 7, "mode": "z"}
    for bad, msg in [
        ("toy-b:7,mode=y", "'mode' must be one of z, got 'y'"),
        ("toy-a:mode=z", "'mode' must be one of x, y, got 'z'"),
        ("toy-b:size=4", "'size' must be in [5, 9], got 4"),
        ("toy-a:size=-1", "'size' must be >= 0, got -1"),
        ("toy-b:mode=z", "'toy-b' needs 'size' (e.g. toy-b:VALUE)"),
        ("toy-a:7", "'toy-a' takes no positional value (got '7')"),
    ]:
        with pytest.raises(UserError) as e:
            parse_reward_spec(bad, field="f")
        assert str(e.value) == f"field 'f': reward '{bad}': {msg}"
    # defaults: the schema's, under the command's, under the spec's
    (a,) = build_rewards([parse_reward_spec("toy-a")], {"size": 3, "mode": None})
    assert a.opt == {"mode": "x", "size": 3}
    (a,) = build_rewards([parse_reward_spec("toy-a:size=4")], {"size": 3})
    assert a.opt == {"mode": "x", "size": 4}
    # the real kinds: format=pair is an rm choice, not a causal-rm one
    for bad, msg in [
        ("judge:m,min=5,max=5", "'min' must be below 'max'"),
        ("judge:m,aspects=| ", "'aspects' must name at least one aspect"),
    ]:
        with pytest.raises(UserError, match=msg):  # a kind's own spec_problem
            parse_reward_spec(bad)
    assert parse_reward_spec("rm:./m,format=pair").options["format"] == "pair"
    with pytest.raises(UserError, match=r"'format' must be one of auto, chat, concat, got 'pair'"):
        parse_reward_spec("causal-rm:./m,format=pair")


def test_schema_mistakes_are_caught_when_the_class_is_written():
    with pytest.raises(ValueError, match="positional 'p' is not an option"):
        Schema("k", {"a": Option()}, positional="p")
    with pytest.raises(ValueError, match="common to every kind"):
        Schema("k", {"weight": Option(float)})
    with pytest.raises(ValueError, match="at most one option names the model"):
        Schema("k", {"a": Option(role="model"), "b": Option(role="model")})


def test_files_are_checked_by_role_before_anything_loads(tmp_path):
    model = tmp_path / "model"  # a model folder, as far as checks that load nothing can tell
    model.mkdir()
    (model / "config.json").write_text("{}")
    save_file({"w": torch.zeros(1)}, str(model / "model.safetensors"))
    check_reward_models([parse_reward_spec(f"preference:{model}")], defaults={})
    for spec, want in [
        (f"preference:{model},template={tmp_path / 'no.txt'}", "preference template file"),
        (f"judge:m,rubric={tmp_path / 'none.txt'}", "judge rubric file not found"),
        (f"python:{tmp_path / 'none.py'}:f", "file not found"),
    ]:
        with pytest.raises(UserError) as e:
            check_reward_models(parse_reward_specs([spec]), field="w")
        assert str(e.value).startswith(f"field 'w': reward '{spec}': ") and want in str(e.value)
    (tmp_path / "rubric.txt").write_text("{query} {responses}")
    check_reward_models([parse_reward_spec(f"judge:m,rubric={tmp_path / 'rubric.txt'}")])


# ----------------------------------------------------------------------------- one weighted sum


def _spec(kind: str, name: str, weight: float = 1.0) -> RewardSpec:
    return RewardSpec(kind, {}, weight, name, f"{kind}:{name}")


def test_weighted_sum_policy():
    a, b = ToyA(_spec("toy-a", "a", 2.0), {}), ToyA(_spec("toy-a", "b", -0.5), {})
    assert weighted_sum([a, b], [1.5, 4.0]) == (2 * 1.5 - 0.5 * 4.0, None, False)
    assert weighted_sum([a, b], [None, 4.0]) == (None, "reward 'a' could not score it", False)
    for bad in (math.nan, math.inf, -math.inf):  # a non-finite part wins over a missing one
        assert weighted_sum([a, b], [None, bad]) == (None, f"reward 'toy-a:b' gave {bad}", True)
    assert weighted_sum([a, b], [1e308, 0.0]) == (
        None,
        "the weighted sum of rewards overflows",
        True,
    )


ROWS = [
    {"id": "r1", "prompt": "p", "responses": ["abc", "de", "fghij"], "scores": [1.0, 0.0, 3.0]},
    {"id": "r2", "prompt": "q", "responses": ["xy", "z"], "scores": [2.0, -1.0]},
]


def _both(specs: list[str], rows: list[dict], policy: str = "skip"):
    """`evaluate`'s RewardSet.score and `score`'s combine over the same rewards and rows."""
    rs = RewardSet(parse_reward_specs(specs), {})
    evaluated = rs.score(rows)
    parts = [r.score(rows) for r in rs.rewards]
    scored = [
        combine(dict(row), {"line": n + 1}, rs.rewards, [p[n] for p in parts], policy)
        for n, row in enumerate(rows)
    ]
    return rs, evaluated, scored


def test_score_and_evaluate_sum_alike_on_finite_values():
    rs, evaluated, scored = _both(["input:weight=2", "length:lambda=0.5,weight=3"], ROWS)
    want = [
        [2 * s - 3 * 0.5 * len(r) for s, r in zip(row["scores"], row["responses"])] for row in ROWS
    ]
    assert evaluated == [row["scores"] for row in scored] == want  # 0.5 * n: exact in binary
    assert not rs.unscored
    assert scored[0]["score_parts"] == {"input": [1.0, 0.0, 3.0], "length": [-1.5, -1.0, -2.5]}


def test_non_finite_values_refused_by_score_and_left_out_by_evaluate(toys):
    rows = [{**ROWS[0], "scores": [1.0, math.nan, 3.0]}]
    rs = RewardSet(parse_reward_specs(["input"]), {})
    assert rs.score(rows) == [[1.0, None, 3.0]]
    assert rs.unscored == {"reward 'input' gave nan": 1}
    with pytest.raises(UserError) as e:
        _both(["input"], rows)
    assert str(e.value) == (
        "line 1, field 'responses[1]': reward 'input' gave nan for response 1 of row 'r1'"
    )
    # finite parts whose weighted sum overflows
    rows = [{**ROWS[0], "scores": [1.0, 1e308, 3.0]}]
    rs = RewardSet(parse_reward_specs(["input:weight=10"]), {})
    assert rs.score(rows) == [[10.0, None, 30.0]]
    assert rs.unscored == {"the weighted sum of rewards overflows": 1}
    with pytest.raises(UserError, match=r"overflows for response 1 of row 'r1'"):
        _both(["input:weight=10"], rows)
    # a part a reward could not give (None): evaluate leaves it out, score applies --on_failure
    rows = [{"id": "r1", "prompt": "p", "responses": ["ab", "c?", "def"], "scores": [0, 0, 0]}]
    rs, evaluated, scored = _both(["toy-b:5", "input"], rows, policy="skip")
    assert evaluated == [[2.0, None, 3.0]] and rs.unscored == {
        "reward 'toy-b' could not score it": 1
    }
    assert "scores" not in scored[0] and scored[0]["score_failed"]["toy-b"][0]["response"] == 1
    _, _, scored = _both(["toy-b:5", "input"], rows, policy="min")
    assert scored[0]["scores"] == [2.0, 2.0, 3.0]
