"""Slow: a full offline loop on the embedded SmolLM2 + sentiment reward, 2 iterations (issue 6)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_loop_raises_heldout_reward(tmp_path):
    out = tmp_path / "loop"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rankalign.cli",
            "loop",
            "--config",
            "examples/loop-tiny.yaml",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    before = metrics["initial_heldout"]["mean_reward"]
    after = metrics["iterations"][-1]["heldout_reward"]
    assert after > before, (before, after)
    assert (out / "loop.png").is_file()
