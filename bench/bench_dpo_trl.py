"""Pairwise DPO in rankalign vs TRL's `DPOTrainer`: same model, data, batch, beta and max_length.

Checks (issue 9, benchmark 2):
(a) the per-step DPO losses agree (and the token ids both libraries train on are the same);
(b) time per training step and peak memory, as ratios rankalign / TRL.

Setup, identical for both libraries:
- policy = the model with a small random perturbation of its weights (saved to a temp folder),
  reference = the original model, so DPO losses are not all log 2;
- learning rate 0 (weights never change) and sequential sampling, so step i of each run sees the
  same batch with the same weights and the per-step losses must be equal;
- plain-text HH-style prompts (no chat template: rankalign `--chat_template never`, TRL's
  non-conversational path), fp32 weights, no gradient checkpointing, no truncation;
- reference log-probs precomputed once before training: rankalign's default (`reference:
  precompute`), TRL `precompute_ref_log_probs=True`. TRL keeps a *passed* `ref_model` resident even
  then (it frees it only when `ref_model=None`), so by default the script drops it after TRL's
  precompute (`trainer.ref_model = None` and out of `trainer.accelerator._models`, which also holds
  it; checked with a weakref), as TRL does itself for its own reference copy, so TRL trains holding
  one model like rankalign; `--trl_keep_ref` measures TRL as shipped instead.

Each run is its own subprocess (peak memory is a per-process number: ru_maxrss on CPU,
torch.cuda.max_memory_allocated on GPU); the two libraries' runs alternate (`--rounds`, the first
library swapped each round) so both see the same machine load. Time per step is measured by a
Trainer callback from on_step_begin to on_step_end (forward, backward, optimizer step, the
library's per-step metric bookkeeping), median over the steps after `--warmup`, pooled over rounds.
Model loading, tokenization and the reference precompute are not in the step time; the child's
whole wall time is printed too. rankalign's final model save is skipped in the child.

    python bench/bench_dpo_trl.py                 # embedded SmolLM2-135M, 24 pairs, batch 4
    python bench/bench_dpo_trl.py --tiny          # random tiny Llama, a few seconds
    python bench/bench_dpo_trl.py --rankalign_args "--packed_prompt false"   # the KV-cache scorer
    python bench/bench_dpo_trl.py --hh --max_length 512   # HH lengths (~100 + 70 tokens a pair)
    python bench/bench_dpo_trl.py --model PATH --bf16
    python bench/bench_dpo_trl.py --shape smollm2-1.7b --bf16   # random weights, real shape
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import SHAPES, append_record, llama_config, machine_info, run_python

ROOT = Path(__file__).parents[1]
DEFAULT_DATA = ROOT / "examples" / "data" / "preferences_train.jsonl"


# ----------------------------------------------------------------------------- preparation


def make_pairs(path: str, n: int) -> list[dict]:
    """Pairwise rows from a ranked-list JSONL: best vs worst response by score (or pass-through)."""
    rows = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            if "chosen" in r:
                rows.append(
                    {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
                )
            else:
                s = r["scores"]
                best = max(range(len(s)), key=lambda i: s[i])
                worst = min(range(len(s)), key=lambda i: s[i])
                if s[best] == s[worst]:
                    continue
                prompt = r["prompt"]
                if not isinstance(prompt, str):
                    raise SystemExit("use string prompts (no chat template in this benchmark)")
                if not prompt.endswith("Assistant:"):  # plain list data: make it HH-style text
                    prompt = f"\n\nHuman: {prompt}\n\nAssistant:"
                chosen, rejected = r["responses"][best], r["responses"][worst]
                # a leading space keeps BPE merges from crossing the prompt/response boundary
                rows.append(
                    {
                        "prompt": prompt,
                        "chosen": chosen if chosen.startswith(" ") else " " + chosen,
                        "rejected": rejected if rejected.startswith(" ") else " " + rejected,
                    }
                )
            if len(rows) == n:
                break
    return rows


def build_random(folder: Path, texts: list[str], shape: str) -> None:
    """A random Llama of one of common.SHAPES + a byte-level BPE tokenizer trained on `texts`
    (adds BOS), as tests/conftest.py builds: the tokenizer uses the first 400 ids of the shape's
    vocabulary, the model computes over all of it (the compute and memory of the real shape)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    torch.manual_seed(0)
    cfg = llama_config(shape, vocab_size=max(SHAPES[shape]["vocab_size"], len(fast)))
    LlamaForCausalLM(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)


def perturb(src: str, dst: Path, noise: float, seed: int = 0) -> None:
    """dst = src with every weight tensor plus noise * (its std) * N(0, 1)."""
    import torch

    from rankalign.models import load_causal_lm, load_tokenizer

    model = load_causal_lm(src)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            scale = p.float().std() if p.numel() > 1 else p.abs().float()
            p.add_(torch.randn(p.shape, generator=g) * noise * scale)
    model.save_pretrained(dst)
    load_tokenizer(src).save_pretrained(dst)


# ----------------------------------------------------------------------------- children

CHILD_COMMON = r"""
import gc, json, os, resource, sys, time, weakref
import torch
from transformers import TrainerCallback

spec = json.loads(sys.argv[1])
if spec.get("threads"):
    torch.set_num_threads(spec["threads"])
cuda = torch.cuda.is_available()
rec = {"losses": [], "step_s": [], "interval_s": []}

class Timer(TrainerCallback):
    def on_step_begin(self, args, state, control, **kw):
        if cuda: torch.cuda.synchronize()
        self.t0 = time.perf_counter()
    def on_step_end(self, args, state, control, **kw):
        if cuda: torch.cuda.synchronize()
        t = time.perf_counter()
        rec["step_s"].append(t - self.t0)
        if getattr(self, "last", None) is not None:
            rec["interval_s"].append(t - self.last)
        self.last = t

def wrap_loss(cls):
    orig = cls.compute_loss
    def compute_loss(self, model, inputs, *a, **k):
        out = orig(self, model, inputs, *a, **k)
        if model.training:
            rec["losses"].append(float((out[0] if isinstance(out, tuple) else out).detach().float()))
        return out
    cls.compute_loss = compute_loss

def finish():
    rec["peak_bytes"] = (torch.cuda.max_memory_allocated() if cuda
                         else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    rec["device"] = torch.cuda.get_device_name() if cuda else "cpu"
    rec["threads"] = torch.get_num_threads()
    with open(spec["result"], "w") as f:
        json.dump(rec, f)
"""

CHILD_RANKALIGN = (
    CHILD_COMMON
    + r"""
from rankalign.training import checkpoints as C, policy as P, stage as S, trainers as TR

C.save_final = lambda *a, **k: None  # the benchmark does not need the trained weights on disk
wrap_loss(TR.RankTrainer)
_init = TR.RankTrainer.__init__
def _patched_init(self, *a, **k):
    _init(self, *a, **k)
    self.add_callback(Timer())
TR.RankTrainer.__init__ = _patched_init
_tok = P.tokenize_lists
def _tokenize_lists(*a, **k):
    ds, report = _tok(*a, **k)
    rec["tokens"] = [[it["prompt_ids"], it["response_ids"][0], it["response_ids"][1]] for it in ds.items]
    return ds, report
P.tokenize_lists = _tokenize_lists
_choose = P.choose_packed
def _choose_packed(*a, **k):
    rec["packed_prompt"] = _choose(*a, **k)
    return rec["packed_prompt"]
P.choose_packed = _choose_packed

argv = [
    "--model", spec["policy"], "--ref_model", spec["ref"], "--data", spec["pairs"],
    "--loss", "dpo", "--beta", str(spec["beta"]), "--max_length", str(spec["max_length"]),
    "--chat_template", "never", "--output_dir", spec["out"],
    "--ref_cache_dir", os.path.join(spec["out"], "ref_cache"),
    "--per_device_train_batch_size", str(spec["batch_size"]), "--per_device_eval_batch_size", "4",
    "--max_steps", str(spec["steps"]), "--learning_rate", "0", "--warmup_steps", "0",
    "--train_sampling_strategy", "sequential", "--logging_steps", "1", "--save_strategy", "no",
    "--report_to", "none", "--disable_tqdm", "true", "--seed", "42",
    "--dataloader_num_workers", "0", "--bf16", "true" if spec["bf16"] else "false",
    *spec["rankalign_args"],
]
t0 = time.perf_counter()
cfg, args = S.parse_args(argv)
rec["settings"] = {"shared_prompt": cfg.shared_prompt, "reference": cfg.reference,
                   "min_response_tokens": cfg.min_response_tokens, "extra": spec["rankalign_args"]}
S.run(cfg, args)
rec["settings"]["packed_prompt"] = rec.pop("packed_prompt", cfg.packed_prompt)
rec["wall_s"] = time.perf_counter() - t0
finish()
"""
)

CHILD_TRL = (
    CHILD_COMMON
    + r"""
import trl
from datasets import Dataset
from trl import DPOConfig, DPOTrainer
from rankalign.models import load_causal_lm, load_tokenizer

wrap_loss(DPOTrainer)
t0 = time.perf_counter()
dtype = "float32"
tok = load_tokenizer(spec["policy"])
with open(spec["pairs"]) as f:
    rows = [json.loads(l) for l in f if l.strip()]
ds = Dataset.from_list(rows)
policy = load_causal_lm(spec["policy"], dtype=dtype)
ref = load_causal_lm(spec["ref"], dtype=dtype)
cfg = DPOConfig(
    output_dir=spec["out"], beta=spec["beta"], loss_type=["sigmoid"], max_length=spec["max_length"],
    per_device_train_batch_size=spec["batch_size"], max_steps=spec["steps"], learning_rate=0.0,
    warmup_steps=0, train_sampling_strategy="sequential", logging_steps=1, save_strategy="no",
    report_to="none", disable_tqdm=True, seed=42, dataloader_num_workers=0,
    precompute_ref_log_probs=True, precompute_ref_batch_size=4,
    gradient_checkpointing=False, bf16=spec["bf16"],
)
trainer = DPOTrainer(model=policy, ref_model=ref, args=cfg, train_dataset=ds,
                     processing_class=tok, callbacks=[Timer()])
rec["tokens"] = [[r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]] for r in trainer.train_dataset]
if not spec["trl_keep_ref"]:
    # precomputed reference log-probs are in the dataset; TRL itself sets ref_model = None when
    # it precomputes with its own reference, so it trains holding one model, like rankalign
    # (the Accelerator also lists every prepared model; drop that reference too, or nothing is freed)
    trainer.ref_model = None
    trainer.accelerator._models = [m for m in trainer.accelerator._models if m is not ref]
    ref_alive = weakref.ref(ref)
    del ref
    gc.collect()
    if ref_alive() is not None:
        raise SystemExit("TRL's reference model is still referenced after dropping it")
rec["settings"] = {"trl": trl.__version__, "precompute_ref_log_probs": True,
                   "ref_model_resident": bool(spec["trl_keep_ref"]),
                   "gradient_checkpointing": False, "bf16": spec["bf16"],
                   "loss_type": "sigmoid", "fused_lm_head": True}
trainer.train()
rec["wall_s"] = time.perf_counter() - t0
finish()
"""
)


def run_child(lib: str, spec: dict, workdir: Path, tag: str) -> dict:
    out = workdir / f"out-{lib}-{tag}"
    result = workdir / f"result-{lib}-{tag}.json"
    spec = {**spec, "out": str(out), "result": str(result)}
    code = CHILD_RANKALIGN if lib == "rankalign" else CHILD_TRL
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.setdefault("TQDM_DISABLE", "1")
    if spec.get("threads"):
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(spec["threads"])
    return run_python(code, spec, env, f"{lib} run")


# ----------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2", help="reference model (policy = perturbed copy)")
    ap.add_argument("--tiny", action="store_true", help="a random tiny Llama instead (fast check)")
    ap.add_argument(
        "--shape", choices=sorted(SHAPES), help="a random Llama of this shape instead (GPU check)"
    )
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="ranked-list or pairwise JSONL")
    ap.add_argument(
        "--hh",
        action="store_true",
        help="generated HH-length lists instead of --data (prompt 40-160 words, responses 20-120: "
        "bench_data_scale's generator, about one token a word)",
    )
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--batch_size", type=int, default=4, help="pairs per device batch")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--max_length", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8, help="training steps per run")
    ap.add_argument("--warmup", type=int, default=2, help="steps per run left out of the timing")
    ap.add_argument("--rounds", type=int, default=2, help="alternating runs of each library")
    ap.add_argument("--noise", type=float, default=0.02, help="policy perturbation (x weight std)")
    ap.add_argument("--bf16", action="store_true", help="bf16 mixed precision in both")
    ap.add_argument(
        "--trl_keep_ref", action="store_true", help="TRL as shipped: ref_model resident"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads per run (0: torch's default); 1 avoids OpenMP stalls on a busy machine",
    )
    ap.add_argument(
        "--rankalign_args",
        default="",
        help="extra `rankalign train` options, e.g. '--packed_prompt false' (the KV-cache scorer)",
    )
    ap.add_argument("--note", default="", help="free text stored in the record (e.g. machine busy)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "dpo_trl.jsonl"))
    args = ap.parse_args()
    if args.steps <= args.warmup:
        raise SystemExit("--steps must be larger than --warmup")
    os.environ["HF_HUB_OFFLINE"] = "1"
    sys.path.insert(0, str(ROOT / "src"))
    from rankalign.models import resolve_model

    with tempfile.TemporaryDirectory(prefix="bench-dpo-trl-") as tmp:
        work = Path(tmp)
        data = args.data
        if args.hh:
            from bench_data_scale import _words, write_lists

            from rankalign.models import load_tokenizer

            data = work / "hh-lists.jsonl"
            write_lists(data, args.pairs, _words(load_tokenizer(resolve_model("smollm2"))))
        pairs = make_pairs(str(data), args.pairs)
        shape = "tiny" if args.tiny else args.shape
        if shape:
            ref = work / "random-ref"
            texts = [r[k] for r in pairs for k in ("prompt", "chosen", "rejected")]
            build_random(ref, texts, shape)
            ref, model_name = str(ref), f"random-llama-{shape}"
        else:
            ref, model_name = resolve_model(args.model), args.model
        policy = work / "policy"
        perturb(ref, policy, args.noise)
        pairs_path = work / "pairs.jsonl"
        pairs_path.write_text("".join(json.dumps(r) + "\n" for r in pairs))
        spec = {
            "policy": str(policy),
            "ref": ref,
            "pairs": str(pairs_path),
            "beta": args.beta,
            "max_length": args.max_length,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "bf16": args.bf16,
            "trl_keep_ref": args.trl_keep_ref,
            "threads": args.threads,
            "rankalign_args": shlex.split(args.rankalign_args),
        }
        runs = {"rankalign": [], "trl": []}
        load_before = os.getloadavg()
        t_start = time.time()
        for r in range(args.rounds):
            order = ["rankalign", "trl"] if r % 2 == 0 else ["trl", "rankalign"]
            for lib in order:
                res = run_child(lib, spec, work, str(r))
                runs[lib].append(res)
                print(
                    f"round {r} {lib:9s}: step median "
                    f"{statistics.median(res['step_s'][args.warmup :]):.3f} s, peak "
                    f"{res['peak_bytes'] / 2**20:.0f} MiB, wall {res['wall_s']:.1f} s",
                    flush=True,
                )
        load_after = os.getloadavg()

    # (a) agreement: tokens and per-step losses
    tok_ra, tok_trl = runs["rankalign"][0]["tokens"], runs["trl"][0]["tokens"]
    token_mismatch = [i for i, (a, b) in enumerate(zip(tok_ra, tok_trl)) if a != b] + list(
        range(min(len(tok_ra), len(tok_trl)), max(len(tok_ra), len(tok_trl)))
    )
    lengths = [len(p) + max(len(c), len(rj)) for p, c, rj in tok_ra]
    loss_ra = [x["losses"] for x in runs["rankalign"]]
    loss_trl = [x["losses"] for x in runs["trl"]]
    diffs = [abs(a - b) for la in loss_ra for lt in loss_trl for a, b in zip(la, lt)]
    max_diff = max(diffs)
    rel = max(abs(a - b) / abs(b) for a, b in zip(loss_ra[0], loss_trl[0]))

    # (b) time and memory
    def pooled(lib, key):
        return [t for x in runs[lib] for t in x[key][args.warmup :]]

    step = {lib: statistics.median(pooled(lib, "step_s")) for lib in runs}
    interval = {
        lib: statistics.median([t for x in runs[lib] for t in x["interval_s"][args.warmup :]])
        for lib in runs
    }
    peak = {lib: max(x["peak_bytes"] for x in runs[lib]) for lib in runs}
    wall = {lib: statistics.median(x["wall_s"] for x in runs[lib]) for lib in runs}
    steps_per_s = {lib: 1 / step[lib] for lib in runs}

    print()
    print(
        f"model {model_name}, {len(pairs)} pairs, batch {args.batch_size} pairs, beta {args.beta}, "
        f"max_length {args.max_length} (longest pair row {max(lengths)} tokens), "
        f"{'bf16' if args.bf16 else 'fp32'}, device {runs['trl'][0]['device']}, "
        f"{runs['trl'][0]['threads']} thread(s), "
        f"{args.rounds} alternating rounds x {args.steps} steps ({args.warmup} warm-up)"
    )
    print(
        f"(a) token ids: {len(tok_ra) - len(token_mismatch)}/{max(len(tok_ra), len(tok_trl))} "
        f"pairs identical; per-step DPO losses ({len(loss_ra[0])} steps): "
        f"max |rankalign - TRL| = {max_diff:.2e} (max relative {rel:.2e})"
    )
    print(f"    rankalign losses: {[round(x, 6) for x in loss_ra[0]]}")
    print(f"    TRL losses:       {[round(x, 6) for x in loss_trl[0]]}")
    print(
        f"(b) time per step (median): rankalign {step['rankalign']:.3f} s "
        f"({steps_per_s['rankalign']:.2f} steps/s), TRL {step['trl']:.3f} s "
        f"({steps_per_s['trl']:.2f} steps/s); steps/s ratio rankalign/TRL = "
        f"{steps_per_s['rankalign'] / steps_per_s['trl']:.2f}x"
    )
    print(
        f"    step-to-step interval (median): rankalign {interval['rankalign']:.3f} s, "
        f"TRL {interval['trl']:.3f} s"
    )
    print(
        f"    peak memory: rankalign {peak['rankalign'] / 2**20:.0f} MiB, TRL "
        f"{peak['trl'] / 2**20:.0f} MiB; ratio rankalign/TRL = {peak['rankalign'] / peak['trl']:.2f}"
    )
    print(
        f"    whole run (load, tokenize, precompute, {args.steps} steps): rankalign "
        f"{wall['rankalign']:.1f} s, TRL {wall['trl']:.1f} s (median)"
    )
    print(f"    rankalign settings: {runs['rankalign'][0]['settings']}")
    print(f"    TRL settings: {runs['trl'][0]['settings']}")

    import transformers
    import trl

    record = {
        "model": model_name,
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "note")},
        "note": args.note,
        "machine": {
            **machine_info(runs["trl"][0]["device"]),
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "torch_threads": runs["trl"][0]["threads"],
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "bench_wall_s": time.time() - t_start,
        },
        "tokens_identical_pairs": len(tok_ra) - len(token_mismatch),
        "token_mismatch_pairs": token_mismatch,
        "loss_max_abs_diff": max_diff,
        "loss_max_rel_diff": rel,
        "losses": {"rankalign": loss_ra, "trl": loss_trl},
        "step_s_median": step,
        "interval_s_median": interval,
        "steps_per_s": steps_per_s,
        "steps_per_s_ratio_rankalign_over_trl": steps_per_s["rankalign"] / steps_per_s["trl"],
        "peak_bytes": peak,
        "peak_ratio_rankalign_over_trl": peak["rankalign"] / peak["trl"],
        "wall_s_median": wall,
        "step_s_all": {lib: [x["step_s"] for x in runs[lib]] for lib in runs},
        "settings": {lib: runs[lib][0]["settings"] for lib in runs},
    }
    append_record(args.out, "dpo_trl", record)


if __name__ == "__main__":
    main()
