"""The report: files, tables, plots that show the named curves, and an HTML page whose images
load in a real browser (headless Chromium from Debian's `chromium` package)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import chromium

from rankalign.evaluation.logs import read_loop_metrics, read_training_log
from rankalign.report import number, pct, write_report

PLOTS = ("reward.png", "best_of_n.png", "reward_length.png", "training.png", "loop.png")


def _metrics() -> dict:
    rng = np.random.default_rng(0)
    log = [
        {
            "step": s,
            "loss": 3.0 / s,
            "loss_rank": 2.0 / s,
            "loss_sft": 1.0 / s,
            "rank_accuracy": 0.5 + 0.05 * s,
            "reward_margin": 0.1 * s,
        }
        for s in range(1, 9)
    ]
    log += [
        {"step": 4, "eval_loss": 0.9, "eval_rank_accuracy": 0.7},
        {"step": 8, "eval_loss": 0.5, "eval_rank_accuracy": 0.8},
    ]
    per_prompt = [
        {"id": f"p{i}", "r": float(r), "k": 8, "mean_length": float(m)}
        for i, (r, m) in enumerate(zip(rng.uniform(-1, 1, 40), rng.uniform(5, 60, 40)))
    ]
    return {
        "config": {
            "prompts": "heldout.jsonl",
            "reward": ["sentiment"],
            "max_new_tokens": 128,
            "strategy": "greedy",
            "bootstrap_resamples": 1000,
            "seed": 0,
        },
        "num_prompts": 40,
        "perplexity_model": "base",
        "models": {
            "rrhf": {
                "mean_reward": 0.42,
                "ci_low": 0.35,
                "ci_high": 0.5,
                "std": 0.2,
                "n": 40,
                "perplexity": 14.7,
                "mean_length": 31.0,
            },
            "base": {
                "mean_reward": 0.1,
                "ci_low": 0.02,
                "ci_high": 0.18,
                "std": 0.25,
                "n": 40,
                "perplexity": 14.3,
                "mean_length": 28.0,
            },
            "good <&> responses": {
                "mean_reward": -0.05,
                "ci_low": -0.1,
                "ci_high": 0.0,
                "std": 0.1,
                "n": 40,
                "perplexity": 21.5,
            },
        },
        "win_rates": [
            {
                "model": "rrhf",
                "baseline": "base",
                "judge": "sentiment",
                "n": 40,
                "wins": 25,
                "ties": 5,
                "losses": 10,
                "win_rate": 0.625,
                "win_rate_ties_half": 0.6875,
            }
        ],
        "rm_accuracy": [
            {
                "scorer": "p_i: rrhf",
                "n": 40,
                "correct": 25,
                "wrong": 14,
                "ties": 1,
                "accuracy": 0.625,
            }
        ],
        "best_of_n": {
            "samples": [
                {"n": 1, "expected_max": 0.1, "prompts": 40},
                {"n": 2, "expected_max": 0.3, "prompts": 40},
                {"n": 4, "expected_max": 0.45, "prompts": 40},
            ]
        },
        "sample_stats": {
            "train": [
                {
                    "source": "policy:beam",
                    "prompts": 40,
                    "responses": 160,
                    "mean": -1.3,
                    "std": 0.66,
                    "max": -0.95,
                    "best": 0.4,
                }
            ]
        },
        "reward_length": {
            "samples": {
                "length_unit": "tokens",
                "prompts": 40,
                "skipped": 0,
                "mean_r": float(np.mean([p["r"] for p in per_prompt])),
                "median_r": 0.0,
                "positive_fraction": 0.5,
                "per_prompt": per_prompt,
            }
        },
        "training": {"rrhf-run": log},
        "loop": {
            "run": "runs/loop",
            "iterations": [
                {
                    "iteration": i,
                    "mean_reward": 0.1 * i,
                    "max_reward": 0.2 + 0.1 * i,
                    "heldout_reward": 0.05 * i,
                    "pairs_dropped": 3 - i,
                    "note": "text is skipped",
                }
                for i in range(3)
            ],
        },
        "examples": [
            {
                "id": "p0",
                "prompt": [{"role": "user", "content": "Hi <there>"}],
                "responses": {"rrhf": "Hello! | a pipe", "base": "hi"},
                "rewards": {"rrhf": 0.9, "base": -0.1},
            }
        ],
        "notes": ["a note with `code`"],
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    paths = write_report(_metrics(), out)
    return out, paths


def _png_curves(path: Path) -> list[str]:
    from PIL import Image

    with Image.open(path) as im:
        text = im.text.get("Description", "")
    assert text.startswith("curves: ")
    return text[len("curves: ") :].split("; ")


def test_files_and_tables(report):
    out, paths = report
    for f in ("metrics.json", "report.md", "report.html", *PLOTS):
        assert (out / f).is_file(), f
    assert set(PLOTS) <= set(paths)
    md = (out / "report.md").read_text()
    for heading in (
        "## Models",
        "## Win rate",
        "## Reward-model accuracy on pairs",
        "## Best-of-n",
        "## Sample statistics: train",
        "## Reward-length correlation",
        "## Training curves",
        "## Iterations",
        "## Example generations",
        "## Notes",
    ):
        assert heading in md, heading
    # the side-by-side table: one row per model, PPL column, the interval
    assert re.search(r"\| rrhf \| 40 \| 0\.420 \| \[0\.350, 0\.500\] \| 0\.200 \| 14\.700 \|", md)
    assert "Hello! \\| a pipe" not in md and "Hello! | a pipe" in md  # code blocks stay verbatim
    html = (out / "report.html").read_text()
    assert "good &lt;&amp;&gt; responses" in html and "Hi &lt;there&gt;" in html  # escaped
    assert all(f'src="{p}"' in html for p in PLOTS) and "file://" not in html
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["models"]["rrhf"]["mean_reward"] == 0.42 and set(saved["plots"]) == set(PLOTS)


def test_plots_show_the_named_curves(report):
    from PIL import Image

    out, _ = report
    expected = {
        "reward.png": ["Average reward per model", "mean reward (95% bootstrap CI)"],
        "best_of_n.png": ["Best-of-n reward", "best-of-n: samples"],
        "reward_length.png": [
            "Reward-length correlation",
            "Correlation against mean response length",
        ],
        "training.png": [
            "Training loss",
            "loss",
            "loss_rank",
            "loss_sft",
            "eval_loss",
            "Ranking accuracy",
            "rank_accuracy",
            "eval_rank_accuracy",
            "Reward margin",
            "reward_margin",
        ],
        "loop.png": [
            "sample reward: mean",
            "sample reward: mean of each prompt's best",
            "heldout_reward",
            "pairs_dropped",
        ],
    }
    for file, names in expected.items():
        curves = _png_curves(out / file)
        assert all(n in curves for n in names), (file, curves)
        assert (out / file).stat().st_size > 8000, file
        with Image.open(out / file) as im:
            pixels = np.asarray(im.convert("L"), dtype=float)
        assert im.size[0] > 300 and im.size[1] > 200
        assert pixels.std() > 10, f"{file} looks blank"
    assert "note" not in _png_curves(out / "loop.png")  # only numeric keys are plotted


def test_sections_without_data_are_left_out(tmp_path):
    metrics = {"models": {"m": {"mean_reward": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 3}}}
    (tmp_path / "loop.png").write_bytes(b"stale")
    paths = write_report(metrics, tmp_path)
    assert set(paths) == {"metrics", "markdown", "html", "reward.png"}
    assert not (tmp_path / "loop.png").exists()
    md = (tmp_path / "report.md").read_text()
    assert "## Models" in md and "Best-of-n" not in md and "PPL" not in md


def test_report_html_renders_in_headless_chromium(report, tmp_path):
    browser = chromium()
    out, _ = report
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        (out / "report.html").as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'id="images-loaded">(\d+)/(\d+)<', proc.stdout)
    assert m, proc.stdout[-2000:]
    assert int(m.group(2)) == len(PLOTS) and int(m.group(1)) == len(PLOTS), m.group(0)
    # and a broken image would be counted as not loaded
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "loop.png").write_bytes(b"not a png")
    cmd[-1] = (broken / "report.html").as_uri()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'id="images-loaded">(\d+)/(\d+)<', proc.stdout)
    assert m and int(m.group(1)) == len(PLOTS) - 1


def test_screenshot_of_the_report_is_not_blank(report, tmp_path):
    browser = chromium()
    from PIL import Image

    out, _ = report
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--hide-scrollbars",
            "--window-size=1200,1600",
            f"--screenshot={shot}",
            (out / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    with Image.open(shot) as im:
        assert np.asarray(im.convert("L"), dtype=float).std() > 10


# ----------------------------------------------------------------------------- formatting


def test_number_and_pct_say_what_is_undefined():
    """One formatter for every console line (`evaluate`, `evaluate --rm`), one for percentages."""
    assert number(0.123456) == "0.123" and number(2, ".2f") == "2.00"
    assert number(-0.5, "+.4f") == "-0.5000"
    for undefined in (None, float("nan"), float("inf"), True, "0.5"):
        assert number(undefined) == "n/a" and number(undefined, missing="-") == "-"
        assert pct(undefined) == "-"
    assert pct(0.5) == "50.0%" and pct(1) == "100.0%"


# ----------------------------------------------------------------------------- log readers


def test_training_log_from_the_newest_checkpoint(tmp_path):
    for step in (2, 10):
        ck = tmp_path / f"checkpoint-{step}"
        ck.mkdir()
        (ck / "trainer_state.json").write_text(
            json.dumps({"log_history": [{"step": s, "loss": 1.0} for s in range(1, step + 1)]})
        )
    assert len(read_training_log(str(tmp_path))) == 10
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 1}]}))
    assert read_training_log(str(tmp_path)) == [{"step": 1}]


def test_training_log_reads_nan_but_refuses_duplicate_keys(tmp_path):
    """Python's JSON writer puts NaN into trainer logs: read as a number. Anything the data
    loaders refuse (duplicate keys, ...) is refused here too, naming the file."""
    from rankalign.errors import UserError

    (tmp_path / "trainer_state.json").write_text('{"log_history": [{"step": 1, "loss": NaN}]}')
    (entry,) = read_training_log(str(tmp_path))
    assert entry["step"] == 1 and entry["loss"] != entry["loss"]
    (tmp_path / "trainer_state.json").write_text('{"log_history": [], "log_history": []}')
    with pytest.raises(UserError, match="trainer_state.json.*duplicate key 'log_history'"):
        read_training_log(str(tmp_path))


def test_loop_metrics_as_folders_or_a_list(tmp_path):
    for i in (0, 1, 10):
        (tmp_path / "a" / f"iter-{i}").mkdir(parents=True)
        (tmp_path / "a" / f"iter-{i}" / "metrics.json").write_text(json.dumps({"mean_reward": i}))
    assert [it["iteration"] for it in read_loop_metrics(str(tmp_path / "a"))] == [0, 1, 10]
    (tmp_path / "b.json").write_text(json.dumps([{"mean_reward": 1, "sample": {"max": 2}}]))
    assert read_loop_metrics(str(tmp_path / "b.json")) == [
        {"mean_reward": 1, "sample.max": 2, "iteration": 0}
    ]


# ----------------------------------------------------------------------------- loop plot data


def _loop_its() -> list[dict]:
    """A loop run as `read_loop_metrics` returns it: iteration 0 is the base policy."""
    its = [
        {
            "iteration": 0,
            "heldout.mean_reward": 0.088,
            "heldout.ci_low": -0.1,
            "heldout.ci_high": 0.27,
        }
    ]
    for t, (mean, held) in enumerate([(0.20, 0.2325), (0.25, 0.2508)], start=1):
        its.append(
            {
                "iteration": t,
                "mean_reward": mean,
                "max_reward": mean + 0.3,
                "prompts": 3,
                "dropped_too_few": 0,
                "heldout.mean_reward": held,
                "heldout.ci_low": 0.03,
                "heldout.ci_high": 0.42,
                "heldout.n": 6,
                "heldout_reward": held,
                "heldout_reward_before": 0.088,
            }
        )
    return its


def test_loop_panels_show_iteration_0_with_error_bars_on_one_scale():
    from rankalign.report import loop_panels

    panels = {p["key"]: p for p in loop_panels(_loop_its())}
    # constant counts, interval bounds and copies of a plotted value are not panels
    assert set(panels) == {"heldout.mean_reward", "mean_reward", "max_reward"}
    held = panels["heldout.mean_reward"]
    assert held["x"] == [0, 1, 2] and held["y"] == [0.088, 0.2325, 0.2508]
    below, above = held["yerr"]
    assert below[1] == pytest.approx(0.2325 - 0.03) and above[2] == pytest.approx(0.42 - 0.2508)
    # every reward panel on one y-range that holds every interval
    assert len({p["ylim"] for p in panels.values()}) == 1
    low, high = held["ylim"]
    assert low < -0.1 and high > 0.55


def test_loop_metrics_read_iteration_0_and_the_report_header(tmp_path):
    from rankalign.report import build_blocks

    run = tmp_path / "loop"
    (run / "iter-1").mkdir(parents=True)
    (run / "iter-0-heldout.json").write_text(
        json.dumps({"mean_reward": 0.1, "ci_low": 0.0, "ci_high": 0.2})
    )
    (run / "iter-1" / "metrics.json").write_text(
        json.dumps(
            {"mean_reward": 0.3, "heldout": {"mean_reward": 0.2, "ci_low": 0.1, "ci_high": 0.3}}
        )
    )
    its = read_loop_metrics(str(run))
    assert [it["iteration"] for it in its] == [0, 1]
    assert its[0]["heldout.mean_reward"] == 0.1 and its[0]["heldout.ci_high"] == 0.2
    # nothing was generated: no prompts / generation header
    blocks = build_blocks(
        {
            "config": {"prompts": None, "reward": [], "max_new_tokens": 128},
            "num_prompts": 0,
            "loop": {"iterations": its},
        },
        {},
    )
    text = " ".join(b.get("text", "") for b in blocks)
    assert "Prompts" not in text and "new tokens" not in text and "None" not in text


def test_two_runs_named_model_get_distinct_labels():
    from rankalign.evaluation.logs import run_labels

    assert run_labels(["runs/a/model", "runs/b/model/", "x/rrhf"]) == ["a/model", "b/model", "rrhf"]
    assert run_labels(["r/rrhf", "r/rrhf"]) == ["rrhf", "rrhf'"]


def test_html_report_hides_the_image_check(report):
    out, _ = report
    page = (out / "report.html").read_text()
    assert "<p class='footer' hidden>images loaded" in page


def test_training_panels_split_losses_by_scale_and_add_the_learning_rate():
    """RRHF's SFT term (~40) and ranking term (~0.2) on separate axes, each labelled."""
    from rankalign.report import training_panels

    log = [
        {
            "step": s,
            "loss": 40.0 + s,
            "loss_sft": 40.0 - s,
            "loss_rank": 0.2 / s,
            "rank_accuracy": 0.5,
            "learning_rate": 2e-5 * (1 - s / 4),
        }
        for s in range(1, 4)
    ]
    panels = training_panels({"run": log})
    losses = [p for p in panels if p["ylabel"] == "loss"]
    assert [list(p["series"]) for p in losses] == [["loss", "loss_sft"], ["loss_rank"]]
    assert losses[1]["series"]["loss_rank"] == ([1, 2, 3], [0.2, 0.1, pytest.approx(0.2 / 3)])
    lr = next(p for p in panels if p["title"] == "Learning rate")
    assert lr["ylabel"] == "learning rate"
    assert lr["series"]["learning_rate"][1][0] == pytest.approx(1.5e-5)
    assert {p["title"] for p in panels} >= {"Ranking accuracy", "Learning rate"}
    # one scale: one loss panel; two runs: labels name the run
    two = training_panels({"a": log, "b": log})
    assert "a: loss_rank" in two[1]["series"] and "b: loss_rank" in two[1]["series"]


def test_example_generations_show_each_response_reward(report):
    out, _ = report
    md = (out / "report.md").read_text()
    assert "*rrhf (reward 0.9000)*" in md and "*base (reward -0.1000)*" in md
    assert "<i>rrhf (reward 0.9000)</i>" in (out / "report.html").read_text()
