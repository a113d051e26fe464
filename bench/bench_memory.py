"""Peak memory of DPO training with a precomputed reference vs SFT (one model) vs DPO with a
second in-memory reference copy, on the same model and data.

The claim to check (issue 2): with reference log-probs precomputed in one pass (cached on disk),
DPO training holds one model, so its peak memory is about that of SFT, not of two models.
Each run is a separate `rankalign train` process; peak RSS is read from the OS (ru_maxrss) on
CPU, or torch.cuda.max_memory_allocated on GPU.

    python bench/bench_memory.py                  # embedded SmolLM2-135M, CPU
    python bench/bench_memory.py --model PATH --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import append_record, machine_info

ROOT = Path(__file__).parents[1]

# A child process that trains, then reports its own peak memory.
CHILD = r"""
import json, resource, sys, torch
from rankalign.training.stage import parse_args, run
extra = json.loads(sys.argv[1])
cfg, args = parse_args(extra)
if cfg.ref_model == "__copy__":  # a resident second model, as naive DPO implementations keep
    from rankalign.models import load_causal_lm, resolve_model
    cfg.ref_model = None
    resident = load_causal_lm(resolve_model(cfg.model))
    for p in resident.parameters():  # weights in RAM (not just memory-mapped), as a used copy is
        p.data = p.data.clone()
run(cfg, args)
peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print("PEAK", peak)
"""


def measure(model: str, data: str, loss: str, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as out:
        argv = [
            "--model",
            model,
            "--data",
            data,
            "--loss",
            loss,
            "--output_dir",
            out,
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "2",
            "--save_strategy",
            "no",
            "--disable_tqdm",
            "true",
            "--max_length",
            "128",
            "--chat_template",
            "always",
            *extra,
        ]
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(argv)],
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            cwd=ROOT,
        )
        if proc.returncode:
            raise SystemExit(proc.stderr[-2000:])
        return float(
            next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("PEAK"))
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--data", default=str(ROOT / "examples" / "data" / "tiny_lists.jsonl"))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "memory.jsonl"))
    args = ap.parse_args()
    runs = {
        "sft (one model)": ("sft", []),
        "dpo, precomputed reference": ("dpo", []),
        "dpo, resident reference copy": ("dpo", ["--ref_model", "__copy__"]),
    }
    peaks = {
        name: measure(args.model, args.data, loss, extra) for name, (loss, extra) in runs.items()
    }
    base = peaks["sft (one model)"]
    for name, p in peaks.items():
        print(f"{name:32s} peak {p / 2**20:8.0f} MiB  ({p / base:.2f}x sft)")
    record = {
        "model": args.model,
        "machine": machine_info(),
        "peak_bytes": peaks,
        "ratio_to_sft": {k: v / base for k, v in peaks.items()},
    }
    append_record(args.out, "memory", record)


if __name__ == "__main__":
    main()
