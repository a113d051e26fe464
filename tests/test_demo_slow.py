"""Slow: `rankalign demo --quick` end to end on the embedded SmolLM2, offline (issue 8)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_quick_demo_improves_reward(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "rankalign.cli", "demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "report:" in proc.stdout and "| rrhf |" in proc.stdout
    # no Python warnings (ours or from the libraries our calls reach) in the user's terminal
    noisy = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if "Warning:" in line or "[WARNING]" in line or "deprecated" in line
    ]
    assert not noisy, noisy
    metrics = json.loads((out / "report" / "metrics.json").read_text())["models"]
    base, rrhf, sft = metrics["base"], metrics["rrhf"], metrics["sft-best"]
    # RRHF above the base model with non-overlapping 95% intervals ...
    assert rrhf["mean_reward"] > base["mean_reward"]
    assert rrhf["ci_low"] > base["ci_high"], (base, rrhf)
    # ... and at least matching SFT on the best response (its mean inside or above SFT's interval)
    assert rrhf["mean_reward"] >= sft["ci_low"], (sft, rrhf)
    assert (out / "report" / "report.html").is_file()
