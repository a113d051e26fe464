"""`rankalign evaluate --eval_samples n`: n sampled responses per prompt and model, the prompt's
reward their mean (checked by hand on a tiny model), the KL of each model from --kl_reference,
and the paired statistics of each --model against each --baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rankalign
from rankalign.api import evaluate_config
from rankalign.errors import UserError
from rankalign.paired import paired_comparison

PROMPTS = ["the movie was", "i think this", "hello there", "what a show", "a story"]


@pytest.fixture(scope="module")
def sampled(tmp_path_factory, tiny_model_dir, tiny_gpt2_dir):
    d = tmp_path_factory.mktemp("eval-sampled")
    prompts = d / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS))
    )
    metrics = rankalign.evaluate(
        model=[f"policy={tiny_model_dir}"],
        baseline=[f"base={tiny_gpt2_dir}"],
        prompts=str(prompts),
        reward=["length:lambda=1"],  # -len(response) in characters: recomputed by hand below
        out=str(d / "out"),
        eval_samples=3,
        temperature=1.0,
        kl_reference=tiny_model_dir,
        max_new_tokens=6,
        batch_size=2,
        bootstrap_resamples=200,
        seed=1,
        report=True,
    ).metrics
    rows = [json.loads(x) for x in (d / "out" / "per_prompt.jsonl").read_text().splitlines()]
    return metrics, rows, d / "out"


def test_prompt_reward_is_the_mean_of_its_scored_samples(sampled):
    metrics, rows, _ = sampled
    for name in ("policy", "base"):
        means = []
        for r in rows:
            samples = r["samples"][name]
            assert len(samples) == 3
            by_hand = [-float(len(s)) for s in samples]
            assert r["sample_rewards"][name] == pytest.approx(by_hand)
            assert r["rewards"][name] == pytest.approx(np.mean(by_hand))
            assert r["responses"][name] == samples[0]  # the prompt's example: its first sample
            means.append(np.mean(by_hand))
        m = metrics["models"][name]
        assert m["n"] == len(PROMPTS) and m["eval_samples"] == 3  # the prompt is the unit
        assert m["mean_reward"] == pytest.approx(np.mean(means))
        assert m["ci_low"] <= m["mean_reward"] <= m["ci_high"]


def test_kl_of_the_reference_against_itself_is_zero(sampled):
    metrics, rows, _ = sampled
    assert metrics["models"]["policy"]["kl"] == pytest.approx(0.0, abs=1e-4)
    assert all(r["kl"]["policy"] == pytest.approx(0.0, abs=1e-4) for r in rows)
    base = metrics["models"]["base"]  # another model: a finite estimate over 5 x 3 samples
    assert np.isfinite(base["kl"]) and base["kl_samples"] == 15
    assert np.mean([r["kl"]["base"] for r in rows]) == pytest.approx(base["kl"])


def test_paired_statistics_against_the_baseline(sampled):
    metrics, rows, out = sampled
    (c,) = metrics["paired"]["comparisons"]
    assert (c["model"], c["baseline"]) == ("policy", "base")
    a = [r["rewards"]["policy"] for r in rows]
    b = [r["rewards"]["base"] for r in rows]
    expected = paired_comparison(a, b, resamples=200, seed=1)
    assert c["mean_difference"] == pytest.approx(expected["mean_difference"])
    assert c["wilcoxon"] == expected["wilcoxon"] and c["sign_test"] == expected["sign_test"]
    assert c["p_holm"] == c["wilcoxon"]["p_value"]  # one comparison: Holm leaves it
    assert c["verdict"]
    md = (out / "report.md").read_text()
    assert "Paired comparison" in md and "policy" in md


def test_kl_reference_needs_eval_samples():
    with pytest.raises(UserError, match="kl_reference needs eval_samples"):
        evaluate_config(model=["x"], kl_reference="smollm2")
