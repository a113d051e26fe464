"""The GPU check script's CPU fallback (bench/gpu/check.py --tiny): the same code the H200 run
executes, on tiny shapes, so the prepared script cannot rot between the rare GPU sessions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_gpu_check_cpu_fallback_runs_every_part(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "TQDM_DISABLE": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu" / "check.py"), str(tmp_path), "--tiny"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "check.json").read_text())
    assert report["machine"]["device"] == "cpu"
    [scorers] = report["scorers"]
    assert "error" not in scorers, scorers
    # FlexAttention is GPU only: the CPU fallback runs the other four variants
    assert set(scorers["variants"]) == {"naive", "shared", "shared+chunked", "packed"}
    for name, row in scorers["variants"].items():
        assert row["s_per_step"] > 0 and row["steps"] >= 1, name
        # fp32: every scorer gives the naive path's log-probs (sums over ~80 tokens of ~-7)
        assert row["max_abs_logp_diff_vs_naive"] < 1e-3, name
    dpo = report["dpo_vs_trl"]
    assert "error" not in dpo, dpo.get("error")
    record = dpo["record"]
    assert record["bench"] == "dpo_trl"
    assert (tmp_path / "dpo_trl.jsonl").exists()
    assert "per-step DPO losses" in dpo["printed"]
