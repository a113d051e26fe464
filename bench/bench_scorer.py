"""RRHF training throughput: shared-prompt scorer vs the naive per-row scorer.

The shared prompt runs two ways: through the KV cache (`shared`, the default) and as one packed
sequence per list with a block mask (`packed`, what runs under activation checkpointing).

One training step (forward + backward + optimizer) of the RRHF loss on lists shaped like
Anthropic HH (prompt ~160 tokens, responses ~80, paper truncation 192 per sequence), for
k in {2, 4, 6, 8}. The two scorers alternate step by step in one process so both see the same
machine load; the ratio is printed side by side. Also reported: achieved FLOP/s against the
machine's measured fp32 matrix-multiply peak, counting 6 x params x tokens on all processed
tokens (naive: the prompt k times) and on useful tokens (each prompt once plus its responses).

    python bench/bench_scorer.py                      # embedded SmolLM2-135M (CPU, fp32)
    python bench/bench_scorer.py --model PATH --dtype bfloat16 --device cuda

Results are appended to bench/results/scorer.jsonl with machine info.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "src"))
from common import append_record, machine_info  # noqa: E402

from rankalign import losses as L
from rankalign.logprobs import (
    collate_lists,
    naive_response_logps,
    packed_response_logps,
    shared_response_logps,
)
from rankalign.models import load_causal_lm, resolve_model
from rankalign.tokenization import EncodedList


def matmul_peak(device: str, dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def make_lists(vocab: int, batch: int, k: int, prompt_len: int, resp_len: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    lists = []
    for _ in range(batch):
        prompt = torch.randint(3, vocab, (prompt_len,), generator=g).tolist()
        # responses of varied length around resp_len, as sampled candidates are
        responses = [
            torch.randint(
                3, vocab, (int(resp_len * (0.75 + 0.5 * i / max(k - 1, 1))),), generator=g
            ).tolist()
            for i in range(k)
        ]
        lists.append(EncodedList(prompt, responses))
    scores = torch.randn(batch, k, generator=g)
    return lists, scores


SCORERS = {
    "naive": naive_response_logps,
    "shared": shared_response_logps,
    "packed": packed_response_logps,
}


def step(model, opt, batch, scores, scorer: str, device: str, chunk: int = 0) -> float:
    _sync(device)
    t = time.perf_counter()
    logp, lengths, mask = SCORERS[scorer](model, batch, chunk)
    loss, _ = L.rrhf(L.LossInputs(logp, lengths, scores, mask))
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    _sync(device)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--ks", default="2,4,6,8")
    ap.add_argument("--batch", type=int, default=1, help="lists per step (the paper: 1 per GPU)")
    ap.add_argument("--prompt_len", type=int, default=160)
    ap.add_argument("--resp_len", type=int, default=80)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per scorer (after 1 warm-up)")
    ap.add_argument(
        "--chunk",
        type=int,
        default=0,
        help="also time the shared scorer with chunked log-probs (positions per chunk), "
        "alternating with the others; 0: full logits only",
    )
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "scorer.jsonl"))
    args = ap.parse_args()

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    model = load_causal_lm(resolve_model(args.model), dtype=args.dtype).to(args.device)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: weights stay fixed across steps
    n_params = sum(p.numel() for p in model.parameters())
    peak = matmul_peak(args.device, dtype)
    print(
        f"model {args.model}: {n_params / 1e6:.1f}M params; {args.device} {args.dtype} matmul peak "
        f"{peak / 1e9:.1f} GFLOP/s"
    )
    rows = []
    for k in [int(x) for x in args.ks.split(",")]:
        lists, scores = make_lists(
            model.config.vocab_size, args.batch, k, args.prompt_len, args.resp_len, k
        )
        batch = {n: v.to(args.device) for n, v in collate_lists(lists, 0).items()}
        scores = scores.to(args.device)
        resp_tokens = int(batch["response_lengths"].sum())
        prompt_tokens = int(batch["prompt_lengths"].sum())
        processed = {
            "naive": k * prompt_tokens + resp_tokens,
            "shared": prompt_tokens + resp_tokens,
            "packed": prompt_tokens + resp_tokens,
        }
        variants = {name: (name, 0) for name in SCORERS}
        if args.chunk:  # the training default: shared prompt, chunked log-probs
            variants["shared_chunked"] = ("shared", args.chunk)
            processed["shared_chunked"] = processed["shared"]
        times = {name: [] for name in variants}
        for s in range(args.steps + 1):  # alternate, so both scorers see the same load
            for name, (scorer, chunk) in variants.items():
                dt = step(model, opt, batch, scores, scorer, args.device, chunk)
                if s > 0:
                    times[name].append(dt)
        med = {n: statistics.median(v) for n, v in times.items()}
        useful = 6 * n_params * (prompt_tokens + resp_tokens)
        row = {"k": k, "response_tokens": resp_tokens, "prompt_tokens": prompt_tokens}
        for n in variants:
            row[f"{n}_s_per_step"] = med[n]
            row[f"{n}_resp_tok_per_s"] = resp_tokens / med[n]
            row[f"{n}_mfu_all_tokens"] = 6 * n_params * processed[n] / med[n] / peak
            row[f"{n}_mfu_useful"] = useful / med[n] / peak
        row["speedup"] = med["naive"] / med["shared"]
        row["packed_speedup"] = med["naive"] / med["packed"]
        rows.append(row)
        print(
            f"k={k}: naive {row['naive_resp_tok_per_s']:.0f} resp tok/s, shared "
            f"{row['shared_resp_tok_per_s']:.0f} -> x{row['speedup']:.2f}, packed "
            f"{row['packed_resp_tok_per_s']:.0f} -> x{row['packed_speedup']:.2f}; useful-work MFU "
            f"naive {row['naive_mfu_useful']:.0%} shared {row['shared_mfu_useful']:.0%} packed "
            f"{row['packed_mfu_useful']:.0%} (all tokens: naive {row['naive_mfu_all_tokens']:.0%})",
            flush=True,
        )
        if args.chunk:
            row["chunked_time_ratio"] = med["shared_chunked"] / med["shared"]
            print(
                f"      shared+chunked({args.chunk}) {row['shared_chunked_resp_tok_per_s']:.0f} "
                f"resp tok/s, time x{row['chunked_time_ratio']:.2f} of shared; useful-work MFU "
                f"{row['shared_chunked_mfu_useful']:.0%}",
                flush=True,
            )
    record = {
        "args": vars(args),
        "machine": machine_info(args.device),
        "params": n_params,
        "matmul_peak_flops": peak,
        "results": rows,
    }
    append_record(args.out, "scorer", record)


if __name__ == "__main__":
    main()
