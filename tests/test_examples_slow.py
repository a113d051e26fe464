"""Slow: the shipped offline example trains the embedded SmolLM2 for a few steps."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _train_example(out: Path, *flags: str) -> dict:
    """`rankalign train --config examples/tiny-offline.yaml FLAGS` in a fresh process; its
    train_summary.json."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rankalign.cli",
            "train",
            "--config",
            "examples/tiny-offline.yaml",
            *flags,
            "--output_dir",
            str(out),
            "--disable_tqdm",
            "true",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "train_summary.json").read_text())


@pytest.mark.slow
def test_tiny_offline_example_trains_smollm2(tmp_path):
    out = tmp_path / "run"
    summary = _train_example(out)
    assert summary["global_step"] == 4 and math.isfinite(summary["train_loss"])
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["lipo", "infonca", "nca"])
def test_listwise_frontier_losses_train_smollm2(tmp_path, loss):
    """LiPO-lambda, InfoNCA and NCA on the shipped lists (k = 3) with the embedded SmolLM2: the
    reference log-probs are precomputed and cached as for DPO, and every step's loss is finite."""
    out = tmp_path / loss
    summary = _train_example(out, "--loss", loss, "--learning_rate", "2e-5", "--max_steps", "6")
    assert summary["global_step"] == 6 and math.isfinite(summary["train_loss"])
    assert summary["reference_cache"] and Path(summary["reference_cache"]).is_file()
    log = json.loads((out / "trainer_state.json").read_text())["log_history"]
    losses = [step["loss"] for step in log if "loss" in step]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
