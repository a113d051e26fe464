"""Peak memory of DPO training with a precomputed reference vs SFT (one model) vs DPO with a
second in-memory reference copy, on the same model and data; and (`--scoring`) the scorer's own
memory and speed with chunked log-probs vs the full logits.

The claim to check (issue 2): with reference log-probs precomputed in one pass (cached on disk),
DPO training holds one model, so its peak memory is about that of SFT, not of two models.
Each run is a separate `rankalign train` process; peak RSS is read from the OS (ru_maxrss) on
CPU, or torch.cuda.max_memory_allocated on GPU.

    python bench/bench_memory.py                  # embedded SmolLM2-135M, CPU
    python bench/bench_memory.py --model PATH --device cuda
    python bench/bench_memory.py --scoring        # chunked vs full logits (SmolLM2, random 128k vocab)
    python bench/bench_memory.py --scoring --checkpointing   # the same under activation checkpointing

`--scoring`: one RRHF step (forward + backward) on one list, prompt 64 tokens, k = 8 responses of
256 tokens, on the embedded SmolLM2-135M (49k vocabulary) and on the same architecture with a
random-initialised 128k vocabulary (Llama 3's), each variant in its own process. Peak memory above
the weights, two ways: the live tensors' peak (CUDA: max_memory_allocated; CPU: the running total
of the CPU allocator's profiler events during one more step, the same quantity), and on CPU the
resident set sampled every millisecond during the timed steps (which also holds what the C
library's allocator keeps of freed memory); and the median step time, for each of `--chunks`
(default: full logits, 1024 positions, and the chunk chosen from the vocabulary,
`chunked_head.chunk_for_vocab`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
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


SCORING_CHILD = r"""
import ctypes, gc, json, os, statistics, sys, threading, time, torch
from rankalign import losses as L
from rankalign.logprobs import collate_lists, response_logps
from rankalign.models import load_causal_lm, resolve_model
from rankalign.tokenization import EncodedList
spec = json.loads(sys.argv[1])
device = spec["device"]
torch.manual_seed(0)
if spec["model"] == "random-128k":
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.from_pretrained(resolve_model("smollm2"))
    config.vocab_size = 128256
    model = AutoModelForCausalLM.from_config(config)
else:
    model = load_causal_lm(resolve_model(spec["model"]))
model.to(device).train()
if spec["checkpointing"]:  # layers keep only their inputs; the scorer packs (no KV cache)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
V = model.config.vocab_size
g = torch.Generator().manual_seed(0)
lists = [EncodedList(torch.randint(3, V, (64,), generator=g).tolist(),
                     [torch.randint(3, V, (256,), generator=g).tolist() for _ in range(8)])]
batch = {k: v.to(device) for k, v in collate_lists(lists, 0).items()}
scores = torch.randn(1, 8, generator=g).to(device)
def step():
    logp, lengths, mask = response_logps(model, batch, True, False, chunk=spec["chunk"])
    loss, _ = L.rrhf(L.LossInputs(logp, lengths, scores, mask))
    loss.backward()
    model.zero_grad(set_to_none=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
step()  # warm-up
gc.collect()
if device.startswith("cuda"):
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    ctypes.CDLL("libc.so.6").malloc_trim(0); base = rss()
peak, done = [base], [False]
def sample():
    while not done[0]:
        peak[0] = max(peak[0], rss()); time.sleep(0.001)
sampler = threading.Thread(target=sample)
if not device.startswith("cuda"):
    sampler.start()
times = []
for _ in range(spec["steps"]):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
done[0] = True
if device.startswith("cuda"):
    peak[0] = torch.cuda.max_memory_allocated()
    allocated = peak[0] - base
else:
    sampler.join()
    # the live tensors' peak (what CUDA's max_memory_allocated counts): one more step under the
    # profiler, whose CPU allocator events carry the running total of what was allocated in it
    import tempfile
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        prof.export_chrome_trace(f.name)
        events = json.load(open(f.name))["traceEvents"]
    allocated = max(e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]")
print("RESULT", json.dumps({"peak_above_weights": peak[0] - base, "allocated_above_weights": allocated,
                            "step_s": statistics.median(times)}))
"""


def measure_scoring(
    model: str, chunk: int | None, device: str, steps: int, checkpointing: bool
) -> dict:
    spec = {
        "model": model,
        "chunk": chunk,
        "device": device,
        "steps": steps,
        "checkpointing": checkpointing,
    }
    return json.loads(run_child(SCORING_CHILD, spec, "RESULT"))


def run_child(code: str, arg, tag: str) -> str:
    """Run `code` in a fresh process with `arg` (JSON) as argv[1]; the text after `tag` on the
    line of its output that starts with it."""
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(arg)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        cwd=ROOT,
    )
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    line = next(line for line in proc.stdout.splitlines() if line.startswith(tag))
    return line.split(" ", 1)[1]


def scoring(args) -> None:
    """Peak memory and step time for each of `--chunks` (0: full logits; auto: the chunk chosen
    from the vocabulary, `chunked_head.chunk_for_vocab`, the default), each in its own process, with
    the ratio to the full logits."""
    from rankalign.chunked_head import chunk_for_vocab

    results = {}
    for model, vocab in (("smollm2", 49152), ("random-128k", 128256)):
        rows = {}
        for c in args.chunks:
            chunk = None if c == "auto" else int(c)
            name = "full" if chunk == 0 else f"chunk-{c}"
            rows[name] = measure_scoring(model, chunk, args.device, args.steps, args.checkpointing)
            rows[name]["chunk"] = chunk_for_vocab(vocab) if chunk is None else chunk
        full = rows.get("full")
        for name, r in rows.items():
            line = f"{model:12s} {name:11s} (chunk {r['chunk']:>4}) above weights: "
            for key, what in (
                ("allocated_above_weights", "tensors"),
                ("peak_above_weights", "RSS"),
            ):
                line += f"{what} {r[key] / 2**30:.2f} GiB"
                if full and name != "full":
                    line += f" ({full[key] / max(r[key], 1):.2f}x lower)"
                line += ", "
            line += f"step {r['step_s']:.2f} s"
            if full and name != "full":
                line += f" ({r['step_s'] / full['step_s']:.2f}x the time)"
            print(line, flush=True)
        results[model] = rows
    append_record(
        args.out,
        "scoring_memory",
        {
            "machine": machine_info(args.device),
            "checkpointing": args.checkpointing,
            "results": results,
        },
    )


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
        return float(run_child(CHILD, argv, "PEAK"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--data", default=str(ROOT / "examples" / "data" / "tiny_lists.jsonl"))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "memory.jsonl"))
    ap.add_argument("--scoring", action="store_true", help="chunked vs full logits instead")
    ap.add_argument(
        "--chunks",
        nargs="+",
        default=["0", "1024", "auto"],
        help="--scoring: chunk sizes to measure (0: full logits; auto: from the vocabulary)",
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=2, help="timed scoring steps (after 1 warm-up)")
    ap.add_argument(
        "--checkpointing",
        action="store_true",
        help="--scoring under activation checkpointing (the packed scorer)",
    )
    args = ap.parse_args()
    if args.scoring:
        return scoring(args)
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
