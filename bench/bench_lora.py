"""Training step time: full fine-tuning vs LoRA (r 16, all linear layers) with and without
dropout on the LoRA inputs, on the same RRHF batch (HH-like lengths, shared-prompt scorer).

    python bench/bench_lora.py                       # embedded SmolLM2-135M (CPU, fp32)
    python bench/bench_lora.py --device cuda --dtype bfloat16

Results are appended to bench/results/lora.jsonl with machine info.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from common import append_record, machine_info

sys.path.insert(0, str(Path(__file__).parents[1] / "src"))
from bench_scorer import make_lists, step  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402

from rankalign.logprobs import collate_lists
from rankalign.models import load_causal_lm, resolve_model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument(
        "--steps", type=int, default=3, help="timed steps per variant (after a warm-up)"
    )
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "lora.jsonl"))
    args = ap.parse_args()

    path = resolve_model(args.model)
    variants = {}
    for name, dropout in (("full", None), ("lora dropout 0.05", 0.05), ("lora dropout 0", 0.0)):
        model = load_causal_lm(path, dtype=args.dtype)
        if dropout is not None:
            lora = LoraConfig(
                r=16,
                lora_alpha=32,
                lora_dropout=dropout,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, lora)
        model.to(args.device).train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        variants[name] = (model, torch.optim.AdamW(trainable, lr=0.0))  # lr 0: fixed weights
    lists, scores = make_lists(
        variants["full"][0].config.vocab_size, args.batch, args.k, 160, 80, 0
    )
    batch = {n: v.to(args.device) for n, v in collate_lists(lists, 0).items()}
    scores = scores.to(args.device)
    times = {name: [] for name in variants}
    for s in range(args.steps + 1):  # alternate, so every variant sees the same machine load
        for name, (model, opt) in variants.items():
            dt = step(model, opt, batch, scores, "shared", args.device)
            if s > 0:
                times[name].append(dt)
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in med.items():
        print(f"{name:18s} {t:6.2f} s/step  ({med['full'] / t:.2f}x full fine-tuning's speed)")
    append_record(
        args.out,
        "lora",
        {"args": vars(args), "machine": machine_info(args.device), "s_per_step": med},
    )


if __name__ == "__main__":
    main()
