"""`rankalign compare` with sampled evaluation on a tiny random model: each held-out prompt's
reward is the mean of `eval_samples` samples, the paired statistics use those means, every
method gets its KL from the start model, and compare_frontier.png is drawn."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_compare_slow import split_prompts

from rankalign.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_tiny_compare_with_eval_samples(tmp_path, tiny_model_dir):
    prompts = split_prompts(tmp_path)
    out = tmp_path / "run"
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(
        f"model: {tiny_model_dir}\nprompts: {prompts}\nout: {out}\nmax_steps: 1\n"
        "max_new_tokens: 6\nlearning_rate: 1.0e-3\nbatch_size: 2\nmax_length: 64\n"
        "bootstrap_resamples: 50\nreward: length:lambda=0.1\nchat_template: never\n"
        "sources: [{kind: policy, strategy: sample, num: 2, temperature: 1.0}]\n"
        "eval_samples: 2\neval_temperature: 1.0\nmethods: [rrhf]\n"
    )
    assert main(["compare", "--config", str(cfg)]) == 0

    table = json.loads((out / "compare.json").read_text())
    assert table["settings"]["eval_samples"] == 2
    for name in ("base", "rrhf"):
        row = table["methods"][name]
        assert row["n"] == 3  # the prompt is the unit
        assert row["kl_ci_low"] <= row["kl"] <= row["kl_ci_high"]
    assert table["methods"]["base"]["kl"] == 0.0
    # per-prompt rewards: the mean of the prompt's 2 scored samples (length:lambda=0.1)
    per = [json.loads(x) for x in (out / "methods/rrhf/seed-42/eval/per_prompt.jsonl").open()]
    final = json.loads((out / "methods/rrhf/seed-42/result.json").read_text())["final"]
    for p, reward in zip(per, final["rewards"]):
        assert len(p["samples"]["final"]) == 2
        assert reward == pytest.approx(np.mean([-0.1 * len(s) for s in p["samples"]["final"]]))
    assert len(final["kls"]) == 3
    (c,) = table["paired"]["comparisons"]
    assert (c["method"], c["versus"]) == ("rrhf", "base") and c["n"] + c["unscored"] == 3
    base = json.loads((out / "methods/base/result.json").read_text())["final"]["rewards"]
    assert c["mean_difference"] == pytest.approx(np.mean(np.subtract(final["rewards"], base)))
    assert (out / "compare_frontier.png").read_bytes()[:8] == PNG
    md = (out / "compare.md").read_text()
    assert "compare_frontier.png" in md and "2 samples per prompt" in md
