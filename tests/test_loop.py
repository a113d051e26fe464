"""`rankalign loop` on a tiny model: iteration folders, data builders, reference = pi_0, counted
ties, resume after a kill gives the same files."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from rankalign.cli import main
from rankalign.errors import UserError
from rankalign.workflows.loop import LoopConfig, build_training_rows, drop_weights, rso_pair

REWARD = """
def vowels(prompt, response):
    return float(sum(c in "aeiou" for c in response)) / (1 + len(response)) + 0.01 * len(response)
"""


@pytest.fixture
def setup(tmp_path, tiny_model_dir):
    (tmp_path / "reward_fn.py").write_text(REWARD)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "prompt": p}) + "\n"
            for i, p in enumerate(
                [
                    "the movie was",
                    "i think this",
                    "hello there",
                    "the film",
                    "what is a good movie?",
                    "how are you",
                ]
            )
        )
    )
    cfg = {
        "prompts": str(prompts),
        "heldout": str(prompts),
        "model": tiny_model_dir,
        "iterations": 2,
        "prompts_per_iteration": 3,
        "num_samples": 3,
        "max_new_tokens": 6,
        "temperature": 1.0,
        "reward": [f"python:{tmp_path / 'reward_fn.py'}:vowels"],
        "builder": "best-worst",
        "loss": "dpo",
        "learning_rate": 1e-3,
        "batch_size": 2,
        "max_length": 64,
        "seed": 7,
    }
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return tmp_path, path


def _files(run: Path) -> dict[str, bytes]:
    names = ["prompts.jsonl", "samples.jsonl", "scores.jsonl", "train_data.jsonl", "metrics.json"]
    return {f"{it}/{n}": (run / it / n).read_bytes() for it in ("iter-1", "iter-2") for n in names}


def test_loop_runs_and_resumes_identically(setup, tiny_model_dir):
    tmp, cfg_path = setup
    full = tmp / "full"
    assert main(["loop", "--config", str(cfg_path), "--out", str(full)]) == 0
    # keep_models: last: iteration 1's weights went once iteration 2 had trained; its config stays
    assert not (full / "iter-1" / "model" / "model.safetensors").exists()
    assert (full / "iter-2" / "model" / "model.safetensors").is_file()
    for it in ("iter-1", "iter-2"):
        # the reference of every iteration is pi_0, read back from the resolved train config
        train_cfg = yaml.safe_load((full / it / "model" / "rankalign_config.yaml").read_text())
        assert train_cfg["rankalign"]["ref_model"] == tiny_model_dir
    # warm start: iteration 2 starts from iteration 1's model
    cfg2 = yaml.safe_load((full / "iter-2" / "model" / "rankalign_config.yaml").read_text())
    assert cfg2["rankalign"]["model"] == str(full / "iter-1" / "model")
    metrics = json.loads((full / "metrics.json").read_text())
    assert [m["iteration"] for m in metrics["iterations"]] == [1, 2]
    for m in metrics["iterations"]:
        assert (
            m["prompts"] == 3 and m["training_rows"] + m["dropped_ties"] + m["dropped_too_few"] == 3
        )
        assert "heldout_reward" in m
    assert (full / "loop.png").stat().st_size > 1000

    # kill a second run in the middle (after iteration 1's samples exist), then resume it
    cut = tmp / "cut"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rankalign.cli",
            "loop",
            "--config",
            str(cfg_path),
            "--out",
            str(cut),
        ],
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while (
        not (cut / "iter-1" / "scores.jsonl").exists()
        and proc.poll() is None
        and time.time() < deadline
    ):
        time.sleep(0.2)
    # the kill must land mid-run, or the resume below proves nothing: the run was still going
    # and neither iteration 2 nor the run's summary (written only at the end) existed yet
    assert proc.poll() is None, "the loop finished (or failed) before it could be killed"
    assert (cut / "iter-1" / "scores.jsonl").exists(), "no iteration-1 scores after 300 s"
    assert not (cut / "metrics.json").exists() and not (cut / "iter-2" / "metrics.json").exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert main(["loop", "--config", str(cfg_path), "--out", str(cut)]) == 0
    assert _files(cut) == _files(full) or _same_except_heldout(cut, full)
    a = load_file(str(full / "iter-2" / "model" / "model.safetensors"))
    b = load_file(str(cut / "iter-2" / "model" / "model.safetensors"))
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-6


def test_one_iteration_with_lipo_on_whole_lists(setup, tiny_model_dir):
    """The `list` builder feeds a listwise loss unchanged: LiPO-lambda against pi_0."""
    tmp, cfg_path = setup
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg |= {"iterations": 1, "builder": "list", "loss": "lipo", "heldout": None}
    path = tmp / "lipo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp / "lipo"
    assert main(["loop", "--config", str(path), "--out", str(out)]) == 0
    train_cfg = yaml.safe_load((out / "iter-1" / "model" / "rankalign_config.yaml").read_text())
    assert train_cfg["rankalign"]["loss"] == "lipo"
    assert train_cfg["rankalign"]["ref_model"] == tiny_model_dir
    rows = [json.loads(line) for line in (out / "iter-1" / "train_data.jsonl").open()]
    assert rows and max(len(r["responses"]) for r in rows) > 2
    summary = json.loads((out / "iter-1" / "model" / "train_summary.json").read_text())
    assert math.isfinite(summary["train_loss"])


def _same_except_heldout(a: Path, b: Path) -> bool:
    fa, fb = _files(a), _files(b)
    return all(fa[k] == fb[k] for k in fa if not k.endswith("metrics.json"))


def _row(scores, responses=None):
    responses = responses or [f"r{i}" for i in range(len(scores))]
    return {"id": "x", "prompt": "p", "responses": responses, "scores": scores}


def test_builders_and_tie_counting():
    cfg = LoopConfig(prompts="p", builder="best-worst")
    rows, stats = build_training_rows([_row([0.1, 0.9, 0.5]), _row([0.3, 0.3])], cfg, 1)
    assert rows == [{"prompt": "p", "id": "x", "responses": ["r1", "r0"], "scores": [0.9, 0.1]}]
    assert stats["dropped_ties"] == 1 and stats["training_rows"] == 1
    cfg = LoopConfig(prompts="p", builder="all-pairs")
    rows, _ = build_training_rows([_row([0.1, 0.9, 0.5, 0.5])], cfg, 1)
    assert len(rows) == 5  # 0.9>0.1, 0.9>0.5 (x2), 0.5>0.1 (x2); the tied 0.5s give no pair
    cfg = LoopConfig(prompts="p", builder="raft")
    rows, _ = build_training_rows([_row([0.1, 0.9, 0.5])], cfg, 1)
    assert rows[0]["responses"] == ["r1"]
    # length penalty changes the ranking: r - lambda * chars
    cfg = LoopConfig(prompts="p", builder="best-worst", char_penalty=0.1)
    rows, _ = build_training_rows([_row([1.0, 0.5], ["a" * 20, "b"])], cfg, 1)
    assert rows[0]["responses"] == ["b", "a" * 20]


def test_rso_prefers_high_rewards():
    import random

    rng = random.Random(0)
    counts = [0] * 4
    for _ in range(2000):
        a, b = rso_pair([0.0, 1.0, 2.0, 3.0], 0.5, rng)
        counts[a] += 1
        counts[b] += 1
        assert a != b
    assert counts[3] > counts[2] > counts[1] > counts[0]


def test_undefined_metrics_print_as_n_a(monkeypatch, capsys):
    """Metrics nothing could define are None (strict JSON): the console says n/a, no crash."""
    from rankalign.workflows import loop as loop
    from rankalign.workflows.demo import summary_table

    undefined = {"iteration": 1, "mean_reward": None, "max_reward": float("nan")}
    iterations = [undefined | {"heldout_reward": None, "dropped_ties": 0}]
    monkeypatch.setattr(
        loop, "run", lambda cfg: {"iterations": iterations, "initial_heldout": None}
    )
    from rankalign.cli import main as cli_main

    assert cli_main(["loop", "--prompts", "p.jsonl"]) == 0
    out = capsys.readouterr().out
    assert (
        "iteration 1: sample reward mean n/a best per prompt n/a; held-out n/a; dropped ties 0"
        in out
    )
    model = {"mean_reward": None, "ci_low": None, "ci_high": None, "perplexity": None}
    table = summary_table({"models": {"base": model, "rrhf": {"mean_reward": 0.25}}})
    assert "| base | n/a (n/a, n/a) | n/a | n/a |" in table
    assert "| rrhf | +0.250 (n/a, n/a) | n/a | n/a |" in table


def test_summary_lines_start_at_the_base_policy():
    from rankalign.workflows.loop import summary_lines

    held = {"mean_reward": 0.2508, "ci_low": 0.03, "ci_high": 0.42}
    lines = summary_lines(
        {
            "initial_heldout": {"mean_reward": 0.088, "ci_low": -0.1, "ci_high": 0.27},
            "iterations": [
                {
                    "iteration": 1,
                    "mean_reward": 0.2,
                    "max_reward": 0.5,
                    "dropped_ties": 0,
                    "heldout": held,
                    "heldout_reward": 0.2508,
                }
            ],
        }
    )
    assert lines[0] == "iteration 0 (base policy): held-out +0.088 [-0.100, +0.270]"
    assert "held-out +0.251 [+0.030, +0.420]" in lines[1]
    assert lines[-1].startswith("held-out change over the base policy: +0.163")


def test_keep_models_last_drops_only_top_level_weights(tmp_path):
    model = tmp_path / "model"
    (model / "adapter").mkdir(parents=True)
    keep = ("config.json", "tokenizer.json", "train_summary.json", "training_args.bin")
    for name in ("model.safetensors", *keep):
        (model / name).write_text("x")
    (model / "adapter" / "adapter_model.safetensors").write_text("x")
    assert drop_weights(model) == ["model.safetensors"]
    assert (model / "adapter" / "adapter_model.safetensors").is_file()
    assert all((model / name).is_file() for name in keep) and drop_weights(model) == []
    assert LoopConfig(prompts="p", keep_models="all").keep_models == "all"
    with pytest.raises(ValueError, match="keep_models must be one of last, all"):
        LoopConfig(prompts="p", keep_models="none")


def test_backend_reaches_sampling_and_the_heldout_evaluation(setup, monkeypatch, capsys):
    """`--backend` is the sample stage's and the held-out evaluation's (both go through the
    generation protocol); one they refuse stops the loop before it writes anything."""
    from rankalign import api
    from rankalign.workflows.loop import _heldout_options, _sample_options

    tmp, cfg_path = setup
    cfg = LoopConfig(prompts="p.jsonl", heldout="h.jsonl", backend="vllm")
    monkeypatch.setitem(sys.modules, "vllm", None)  # absent, whether or not it is installed
    assert _sample_options(cfg, tmp, "m", 1)["backend"] == "vllm"
    assert _heldout_options(cfg, str(tmp))["backend"] == "vllm"
    out = tmp / "refused"
    assert main(["loop", "--config", str(cfg_path), "--out", str(out), "--backend", "vllm"]) == 2
    err = capsys.readouterr().err
    assert "would refuse" in err and "needs the vllm package" in err
    assert not out.exists()
    # the held-out evaluation's options: refused by evaluate's own check too
    with pytest.raises(UserError, match="needs the vllm package"):
        api.evaluate_config(**_heldout_options(cfg, str(tmp / "h")))
