"""The GPU check (issue 18): one prepared run that fits in 8 minutes on one H200.

Part 1, scorers. One RRHF training step (forward + backward of the loss; no optimizer, whose
state is not what is measured) on random-initialised bf16 models of SmolLM2-1.7B and
Llama-3-8B shape, lists shaped like Anthropic HH (prompt ~160 tokens, k responses of ~80), for
each scorer variant:

    naive                one [prompt, response] row per response, full logits
    shared               the prompt once per list through the KV cache, full logits
    shared+chunked       the same, chunked log-probs (the head a vocabulary-sized chunk of positions at a time)
    packed               prompt + responses as one sequence, dense 4D mask (sdpa), full logits
    packed+flex+chunked  the same layout as a FlexAttention block mask (GPU only), chunked

The variants alternate step by step (same machine state for all); reported per variant: median
step time, response tokens/s, useful-work MFU (6 x matmul parameters x useful tokens, each prompt
once plus its responses, over the step time, against the H200's ~790 TFLOP/s dense bf16 peak;
attention scores not counted), peak memory (allocated, and above the weights), and the largest
|log-prob - naive's| of the first step (bf16 noise, for the record).

Part 2, DPO vs TRL's DPOTrainer in bf16 mixed precision on the SmolLM2-1.7B shape: runs
bench/bench_dpo_trl.py (losses agree, time per step and peak memory as ratios).

    bash bench/gpu/check.sh OUT                  # on the GPU machine (see the script)
    python bench/gpu/check.py OUT --tiny         # CPU fallback: tiny shapes, seconds (tested)

Writes OUT/check.json (both parts, machine info, each part's error if it failed) and
OUT/dpo_trl.jsonl. Each part has a deadline (--budget_s): what does not fit is skipped and
recorded as skipped, so the script always ends with what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "src"))
from bench_scorer import make_lists  # noqa: E402  (the same HH-shaped random lists)
from common import llama_config, machine_info  # noqa: E402

from rankalign import losses as L  # noqa: E402
from rankalign.chunked_head import resolve_chunk  # noqa: E402
from rankalign.logprobs import (  # noqa: E402
    collate_lists,
    naive_response_logps,
    packed_response_logps,
    shared_response_logps,
)

H200_BF16_PEAK = 790e12  # dense bf16 matrix multiply, measured there (device KINDS.md)

# name: (scorer, attention implementation, chunk; None: from the vocabulary)
VARIANTS = {
    "naive": (naive_response_logps, "sdpa", 0),
    "shared": (shared_response_logps, "sdpa", 0),
    "shared+chunked": (shared_response_logps, "sdpa", None),
    "packed": (packed_response_logps, "sdpa", 0),
    "packed+flex+chunked": (packed_response_logps, "flex_attention", None),
}
# shape: (lists per step, responses per list) on the GPU
GPU_RUNS = {"smollm2-1.7b": (4, 8), "llama3-8b": (2, 8)}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_params(model) -> int:
    """Parameters that take part in a matrix multiply per token: all but the input embedding
    (a lookup), plus the output head when it is tied to that embedding."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    n = sum(p.numel() for p in model.parameters()) - emb.numel()
    return n + (head.numel() if head is emb else 0)


def set_attention(model, impl: str) -> None:
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(impl)
    else:  # older transformers read the config's field at forward time
        model.config._attn_implementation = impl


def scorer_step(model, batch, scores, variant: str, device: str) -> tuple[float, int, torch.Tensor]:
    """(seconds, peak bytes allocated, log-probs) of one forward + backward of the RRHF loss."""
    fn, impl, chunk = VARIANTS[variant]
    set_attention(model, impl)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t = time.perf_counter()
    logp, lengths, mask = fn(model, batch, resolve_chunk(model, chunk))
    loss, _ = L.rrhf(L.LossInputs(logp, lengths, scores, mask))
    loss.backward()
    sync(device)
    seconds = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else 0
    model.zero_grad(set_to_none=True)
    return seconds, peak, logp.detach().float()


def scorers(shape: str, device: str, batch_lists: int, k: int, steps: int, deadline: float):
    """Part 1 for one model shape: every variant, alternating, `steps` timed steps each."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM

    with torch.device(device):
        model = AutoModelForCausalLM.from_config(llama_config(shape), dtype=dtype)
    model.train()
    weights = torch.cuda.memory_allocated() if device == "cuda" else 0
    variants = [v for v in VARIANTS if device == "cuda" or VARIANTS[v][1] != "flex_attention"]
    lists, scores = make_lists(model.config.vocab_size, batch_lists, k, 160, 80, seed=0)
    batch = {n: t.to(device) for n, t in collate_lists(lists, 0).items()}
    scores = scores.to(device)
    prompt_tokens = int(batch["prompt_lengths"].sum())
    resp_tokens = int(batch["response_lengths"].sum())
    times = {v: [] for v in variants}
    peaks = {v: 0 for v in variants}
    first = {}
    for s in range(steps + 1):  # step 0: warm-up (kernel selection, FlexAttention's compile)
        for v in variants:
            if time.time() > deadline:
                break
            dt, peak, logp = scorer_step(model, batch, scores, v, device)
            peaks[v] = max(peaks[v], peak)
            if s == 0:
                first[v] = logp
            else:
                times[v].append(dt)
    n_params = matmul_params(model)
    peak_flops = H200_BF16_PEAK if device == "cuda" else None
    rows = {}
    for v in variants:
        if not times[v]:
            rows[v] = {"skipped": "out of time"}
            continue
        med = statistics.median(times[v])
        rows[v] = {
            "s_per_step": med,
            "steps": len(times[v]),
            "response_tokens_per_s": resp_tokens / med,
            "useful_tflops": 6 * n_params * (prompt_tokens + resp_tokens) / med / 1e12,
            "mfu_useful": (
                6 * n_params * (prompt_tokens + resp_tokens) / med / peak_flops
                if peak_flops
                else None
            ),
            "peak_bytes": peaks[v] or None,
            "peak_above_weights_bytes": (peaks[v] - weights) if peaks[v] else None,
            "max_abs_logp_diff_vs_naive": float((first[v] - first["naive"]).abs().max()),
        }
    result = {
        "shape": shape,
        "dtype": str(dtype).replace("torch.", ""),
        "params": sum(p.numel() for p in model.parameters()),
        "matmul_params": n_params,
        "lists_per_step": batch_lists,
        "k": k,
        "prompt_tokens": prompt_tokens,
        "response_tokens": resp_tokens,
        "weights_bytes": weights or None,
        "variants": rows,
    }
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def dpo_vs_trl(out: Path, tiny: bool, timeout: float) -> dict:
    """Part 2: bench/bench_dpo_trl.py in a child process, its record read back."""
    record = out / "dpo_trl.jsonl"
    shape = ["--tiny"] if tiny else ["--shape", "smollm2-1.7b", "--bf16"]
    sizes = ["--pairs", "8", "--steps", "4", "--warmup", "1", "--rounds", "1"]
    if not tiny:
        sizes = ["--pairs", "16", "--batch_size", "4", "--max_length", "512"] + sizes[2:]
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_dpo_trl.py"), *shape, *sizes, "--out", str(record)],
        capture_output=True,
        text=True,
        timeout=max(timeout, 1),
        cwd=ROOT,
    )
    if proc.returncode:
        return {"error": proc.stderr.strip()[-3000:] or f"exit {proc.returncode}"}
    lines = record.read_text().splitlines()
    return {"record": json.loads(lines[-1]), "printed": proc.stdout[-3000:]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="folder for check.json and dpo_trl.jsonl")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (the CPU fallback)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per variant")
    ap.add_argument("--budget_s", type=float, default=450, help="the whole check's time budget")
    ap.add_argument("--skip_dpo", action="store_true", help="part 1 only")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.time()
    runs = {"tiny": (2, 4)} if args.tiny else GPU_RUNS
    report = {
        "machine": machine_info(args.device),
        "args": vars(args),
        "versions": versions(),
        "scorers": [],
        "dpo_vs_trl": None,
    }
    # part 1 gets 65% of the budget, split evenly between the shapes; part 2 the rest
    share = 0.65 * args.budget_s / len(runs)
    for i, (shape, (b, k)) in enumerate(runs.items()):
        deadline = start + share * (i + 1)
        try:
            res = scorers(shape, args.device, b, k, args.steps, deadline)
        except Exception as e:  # one shape failing (out of memory, say) leaves the others
            res = {"shape": shape, "error": f"{type(e).__name__}: {e}"[:2000]}
            traceback.print_exc()
        report["scorers"].append(res)
        write(out, report)
        print_scorers(res)
    if args.skip_dpo:
        report["dpo_vs_trl"] = {"skipped": "--skip_dpo"}
    else:
        try:
            report["dpo_vs_trl"] = dpo_vs_trl(out, args.tiny, start + args.budget_s - time.time())
        except subprocess.TimeoutExpired:
            report["dpo_vs_trl"] = {"skipped": "out of time"}
        part = report["dpo_vs_trl"]
        print(part.get("printed") or json.dumps(part)[:3000], flush=True)
    report["wall_s"] = time.time() - start
    write(out, report)
    return 0


def versions() -> dict:
    import importlib.metadata as md

    found = {}
    for name in ("torch", "transformers", "accelerate", "peft", "datasets", "trl"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = None
    return found


def write(out: Path, report: dict) -> None:
    tmp = out / "check.json.tmp"
    tmp.write_text(json.dumps(report, indent=1, allow_nan=False))
    os.replace(tmp, out / "check.json")


def print_scorers(res: dict) -> None:
    if "error" in res:
        print(f"{res['shape']}: FAILED {res['error'][:300]}", flush=True)
        return
    print(
        f"{res['shape']} ({res['params'] / 1e9:.2f}B, {res['dtype']}): {res['lists_per_step']} "
        f"lists x k={res['k']}, {res['prompt_tokens']} prompt + {res['response_tokens']} response "
        "tokens per step",
        flush=True,
    )
    for v, r in res["variants"].items():
        if "skipped" in r:
            print(f"  {v:20s} skipped ({r['skipped']})")
            continue
        mfu = f"{r['mfu_useful']:.0%}" if r["mfu_useful"] is not None else "-"
        peak = f"{r['peak_bytes'] / 2**30:.1f} GiB" if r["peak_bytes"] else "-"
        print(
            f"  {v:20s} {r['s_per_step'] * 1e3:8.1f} ms/step {r['response_tokens_per_s']:9.0f} "
            f"resp tok/s  MFU {mfu:>4s}  peak {peak}  |dlogp| {r['max_abs_logp_diff_vs_naive']:.2g}",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
