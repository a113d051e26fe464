"""`rankalign compare` end to end on a tiny model: sample, score, train three methods (one of them
an online loop), evaluate, table and plots; a killed run resumes with only the unfinished method."""

from __future__ import annotations

import json

import pytest

from rankalign.cli import main

pytestmark = pytest.mark.slow

PNG = b"\x89PNG\r\n\x1a\n"
# a reward that separates a random tiny model's outputs (sentiment scores them all 0: tied lists)
REWARD = """
def vowels(prompt, response):
    return float(sum(c in "aeiou" for c in response)) / (1 + len(response)) + 0.01 * len(response)
"""


def split_prompts(tmp_path):
    """4 train and 3 held-out prompts (a `split` column), as a JSONL file."""
    rows = [{"id": f"t{i}", "prompt": p, "split": "train"} for i, p in enumerate(
        ["the movie was", "i think this", "hello there", "the film"])]  # fmt: skip
    rows += [{"id": f"h{i}", "prompt": p, "split": "heldout"} for i, p in enumerate(
        ["how are you", "what a show", "a story"])]  # fmt: skip
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return prompts


def test_tiny_compare_end_to_end_and_resume(tmp_path, tiny_model_dir):
    prompts = split_prompts(tmp_path)
    (tmp_path / "reward_fn.py").write_text(REWARD)
    out = tmp_path / "run"
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(
        f"model: {tiny_model_dir}\nprompts: {prompts}\nout: {out}\n"
        "max_steps: 2\neval_every: 1\nmax_new_tokens: 6\nlearning_rate: 1.0e-3\nbatch_size: 2\n"
        f"max_length: 64\nbootstrap_resamples: 100\nreward: python:{tmp_path / 'reward_fn.py'}:vowels\n"
        "methods: [rrhf, {dpo: {beta: 0.5}}, {loop-rrhf: {loop: true, iterations: 2}}]\n"
    )
    assert main(["compare", "--config", str(cfg)]) == 0

    table = json.loads((out / "compare.json").read_text())
    assert list(table["methods"]) == ["base", "rrhf", "dpo", "loop-rrhf"]
    for name, row in table["methods"].items():
        assert row["n"] == 3  # every held-out prompt, one seed
        assert row["ci_low"] <= row["mean_reward"] <= row["ci_high"]
        if name != "base":
            assert row["seeds"] == [42] and row["train_seconds"] > 0 and row["peak_rss_mb"] > 0
            assert row["win_rate"] + row["tie_rate"] + row["loss_rate"] == pytest.approx(1.0)
            # step 0 (base), the checkpoint / first iteration at step 1, the final model at 2
            assert [p["step"] for p in table["curves"][name]] == [0, 1, 2]
    assert table["methods"]["loop-rrhf"]["kind"] == "loop"
    # paired: each method against base and every earlier one, on the 3 held-out prompts
    pairs = [(c["method"], c["versus"]) for c in table["paired"]["comparisons"]]
    assert len(pairs) == 6 and pairs[0] == ("rrhf", "base")
    for c in table["paired"]["comparisons"]:
        assert c["n"] + c["unscored"] == 3 and c["verdict"]
        assert (c["p_holm"] is None) == (c["wilcoxon"]["p_value"] is None)
        assert ("length_controlled" in c) == (c["versus"] == "base")
    final = json.loads((out / "methods" / "rrhf" / "seed-42" / "result.json").read_text())["final"]
    assert len(final["lengths"]) == 3 and all(n >= 0 for n in final["lengths"])
    for png in ("compare_reward.png", "compare_steps.png"):
        assert (out / png).read_bytes()[:8] == PNG
    html = (out / "compare.html").read_text()
    assert 'src="compare_reward.png"' in html and 'src="compare_steps.png"' in html
    # evaluated checkpoints are removed (their numbers are in result.json)
    assert not list((out / "methods" / "rrhf" / "seed-42" / "model").glob("checkpoint-*"))

    # a kill during dpo's training: its result and model are missing; the rest is kept
    done = {m: out / "methods" / m / "seed-42" / "result.json" for m in ("rrhf", "loop-rrhf")}
    stamps = {m: p.stat().st_mtime_ns for m, p in done.items()}
    dpo = out / "methods" / "dpo" / "seed-42"
    (dpo / "result.json").unlink()
    (dpo / "model" / "train_summary.json").unlink()
    assert main(["compare", "--config", str(cfg)]) == 0
    assert {m: p.stat().st_mtime_ns for m, p in done.items()} == stamps  # not rerun
    assert (dpo / "result.json").is_file()
    again = json.loads((out / "compare.json").read_text())
    assert again["methods"]["rrhf"]["mean_reward"] == table["methods"]["rrhf"]["mean_reward"]
