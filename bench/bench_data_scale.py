"""Training data at scale: time to the first optimizer step and peak RSS, by number of lists.

Variants, each a fresh subprocess on the same generated rows (issue 24):
- `old`: rankalign's in-memory path as it was before the Arrow table (every row validated into
  Python dicts, then each list tokenized alone by `encode_list` into Python lists of ints);
- `new`: the streaming Arrow path (`rankalign.tokenized`), its cache folder empty;
- `new-cached`: the same command again: the table is mapped from the cache;
- `trl`: TRL's `DPOTrainer` on the same lists as pairs (best vs worst response of each list),
  loaded with `datasets.load_dataset("json")` as TRL's examples do, its cache folder empty;
- `trl-cached`: the same again (datasets' fingerprint cache).

The model is a random tiny Llama (the model costs nothing: what is measured is the data path)
with the embedded SmolLM2 tokenizer (49k-entry BPE); the words of the generated text are whole
words of its vocabulary (about one token a word). rankalign trains RRHF with
`--max_steps 1 --max_length 512`; TRL DPO with `max_length=512` and one step. Time to first step
is from the subprocess's launch to the end of the first optimizer step (Python start-up,
imports, reading, tokenizing, model loading included); CPU is the child's user + system seconds
to its exit (all threads: less sensitive to other jobs than wall time); peak RSS is its
ru_maxrss.

Generated lists are HH-shaped: a `\\n\\nHuman: ...\\n\\nAssistant:` prompt of 40-160 words and
k = 4 responses of 20-120 words, random scores.

    python bench/bench_data_scale.py --rows 2000 50000
    python bench/bench_data_scale.py --rows 200000 --variants new new-cached trl trl-cached
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import append_record, llama_config, machine_info, run_python

ROOT = Path(__file__).parents[1]
VARIANTS = ("old", "new", "new-cached", "trl", "trl-cached")


# ----------------------------------------------------------------------------- data


def build_model(folder: Path):
    """A random tiny Llama over the embedded SmolLM2 tokenizer, saved to `folder`."""
    import torch
    from transformers import LlamaForCausalLM

    from rankalign.models import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model("smollm2"))
    torch.manual_seed(0)
    LlamaForCausalLM(llama_config("tiny", vocab_size=len(tok))).save_pretrained(folder)
    tok.save_pretrained(folder)
    return tok


def _words(tokenizer, seed: int = 0, n: int = 3000) -> list[str]:
    """Lower-case words that are one token of `tokenizer` after a space."""
    vocab = sorted(
        k[1:]
        for k in tokenizer.get_vocab()
        if k.startswith("Ġ") and k[1:].isalpha() and k[1:].islower() and len(k) > 3
    )
    return random.Random(seed).sample(vocab, n)


def write_lists(path: Path, rows: int, words: list[str], seed: int = 0) -> None:
    """`rows` HH-shaped ranked lists (module docstring) as JSONL."""
    rng = random.Random(seed)

    def text(lo, hi):
        return " ".join(rng.choices(words, k=rng.randint(lo, hi)))

    with open(path, "w") as f:
        for i in range(rows):
            row = {
                "id": f"hh-{i:07d}",
                "prompt": f"\n\nHuman: {text(40, 160)}\n\nAssistant:",
                "responses": [" " + text(20, 120) for _ in range(4)],
                "scores": [round(rng.gauss(0, 1), 4) for _ in range(4)],
            }
            f.write(json.dumps(row) + "\n")


def write_pairs(lists: Path, path: Path) -> None:
    """The same lists as TRL's pairwise rows: best vs worst response (ties skipped)."""
    with open(lists) as src, open(path, "w") as f:
        for line in src:
            r = json.loads(line)
            s = r["scores"]
            best = max(range(len(s)), key=s.__getitem__)
            worst = min(range(len(s)), key=s.__getitem__)
            if s[best] != s[worst]:
                pair = {
                    "prompt": r["prompt"],
                    "chosen": r["responses"][best],
                    "rejected": r["responses"][worst],
                }
                f.write(json.dumps(pair) + "\n")


# ----------------------------------------------------------------------------- children

CHILD_COMMON = r"""
import json, resource, sys, time
spec = json.loads(sys.argv[1])
rec = {}
from transformers import TrainerCallback

class FirstStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        rec.setdefault("first_step_s", time.time() - spec["launch"])

def finish():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rec["peak_rss_mib"] = usage.ru_maxrss / 1024
    # CPU seconds, every thread: less sensitive than wall time to other jobs on the machine
    rec["cpu_s"] = usage.ru_utime + usage.ru_stime
    rec["exit_s"] = time.time() - spec["launch"]
    with open(spec["result"], "w") as f:
        json.dump(rec, f)
"""

# the training data path before the Arrow table (training/datasets.py before issue 24), verbatim
OLD_TOKENIZE_LISTS = r"""
from rankalign.data import load_lists
from rankalign.errors import UserError
from rankalign.logprobs import ListDataset
from rankalign.tokenization import encode_list

def old_tokenize_lists(path, tokenizer, cfg, *, min_responses):
    loaded = load_lists(
        path,
        require_scores=cfg.loss != "sft",
        min_responses=min_responses,
        empty_responses=cfg.empty_responses,
        drop_tied_lists=cfg.drop_tied_lists,
        limit=cfg.max_rows,
    )
    items, report = [], loaded.report
    for row in loaded.rows:
        enc = encode_list(
            tokenizer,
            row["prompt"],
            row["responses"],
            max_length=cfg.max_length,
            min_response_tokens=cfg.min_response_tokens,
            chat_template=cfg.chat_template,
        )
        if enc.prompt_truncated or enc.responses_truncated:
            if cfg.drop_over_length:
                report.dropped["over max_length"] += 1
                continue
            report.notes["prompts truncated"] += int(enc.prompt_truncated)
            report.notes["responses truncated"] += enc.responses_truncated
        scores = row.get("scores") or [0.0] * len(row["responses"])
        items.append(
            {
                "id": row["id"],
                "prompt_ids": enc.prompt_ids,
                "response_ids": enc.response_ids,
                "scores": scores,
            }
        )
    report.rows_kept = len(items)
    if not items:
        raise UserError(f"no rows left after filtering ({report.summary()})", file=path)
    return ListDataset(items), report.as_dict() | {"summary": report.summary()}
"""

CHILD_RANKALIGN = (
    CHILD_COMMON
    + OLD_TOKENIZE_LISTS
    + r"""
from rankalign.training import checkpoints as C, policy as P, stage as S, trainers as TR

C.save_final = lambda *a, **k: None  # the trained weights are not what is measured
_init = TR.RankTrainer.__init__
def _patched_init(self, *a, **k):
    _init(self, *a, **k)
    self.add_callback(FirstStep())
TR.RankTrainer.__init__ = _patched_init
_tokenize = old_tokenize_lists if spec["variant"] == "old" else P.tokenize_lists
def _timed(*a, **k):
    t = time.time()
    out = _tokenize(*a, **k)
    rec["data_s"] = time.time() - t
    rec["rows"] = len(out[0])
    rec["built"] = getattr(out[0], "built", None)
    return out
P.tokenize_lists = _timed
argv = [
    "--model", spec["model"], "--data", spec["data"], "--loss", "rrhf",
    "--max_length", "512", "--max_steps", "1", "--output_dir", spec["out"],
    "--per_device_train_batch_size", "4", "--save_strategy", "no", "--report_to", "none",
    "--disable_tqdm", "true", "--dataloader_num_workers", "0",
]
cfg, args = S.parse_args(argv)
S.run(cfg, args)
finish()
"""
)

CHILD_TRL = (
    CHILD_COMMON
    + r"""
import datasets, trl
from trl import DPOConfig, DPOTrainer
from rankalign.models import load_causal_lm, load_tokenizer

t = time.time()
ds = datasets.load_dataset("json", data_files=spec["pairs"], split="train",
                           cache_dir=spec["hf_cache"])
tok = load_tokenizer(spec["model"])
cfg = DPOConfig(
    output_dir=spec["out"], max_length=512, per_device_train_batch_size=4, max_steps=1,
    save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
    bf16=False,
)
trainer = DPOTrainer(model=load_causal_lm(spec["model"]), args=cfg, train_dataset=ds,
                     processing_class=tok, callbacks=[FirstStep()])
rec["data_s"] = time.time() - t  # loading the JSON + DPOTrainer's preparation (tokenizing)
rec["rows"] = len(trainer.train_dataset)
rec["trl"] = trl.__version__
trainer.train()
finish()
"""
)


def run_child(variant: str, spec: dict, workdir: Path) -> dict:
    result = workdir / f"result-{variant}.json"
    result.unlink(missing_ok=True)
    out = workdir / f"out-{variant}"
    shutil.rmtree(out, ignore_errors=True)
    spec = {**spec, "variant": variant, "out": str(out), "result": str(result)}
    code = CHILD_TRL if variant.startswith("trl") else CHILD_RANKALIGN
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["RANKALIGN_DATA_CACHE"] = str(workdir / "rankalign-cache")
    env.setdefault("TQDM_DISABLE", "1")
    spec["launch"] = time.time()
    return run_python(code, spec, env, variant)


# ----------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[2000, 50000])
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--note", default="", help="free text stored in the record (e.g. machine busy)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "data_scale.jsonl"))
    args = ap.parse_args()
    try:
        import trl  # noqa: F401
    except ImportError:
        args.variants = [v for v in args.variants if not v.startswith("trl")]
        print("trl is not installed: its variants are skipped", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-data-scale-") as tmp:
        work = Path(tmp)
        model = work / "model"
        words = _words(build_model(model))
        for n in args.rows:
            data, pairs = work / f"lists-{n}.jsonl", work / f"pairs-{n}.jsonl"
            write_lists(data, n, words)
            write_pairs(data, pairs)
            spec = {
                "model": str(model),
                "data": str(data),
                "pairs": str(pairs),
                "hf_cache": str(work / f"hf-cache-{n}"),
            }
            shutil.rmtree(work / "rankalign-cache", ignore_errors=True)
            for variant in args.variants:
                load = os.getloadavg()[0]
                rec = run_child(variant, spec, work)
                rec |= {"variant": variant, "lists": n, "load_avg_1m_before": round(load, 2)}
                rec["data_mib"] = round(data.stat().st_size / 2**20, 1)
                print(
                    f"{n:>7} lists  {variant:<11} first step {rec['first_step_s']:7.1f} s  "
                    f"data {rec['data_s']:7.1f} s  CPU {rec['cpu_s']:7.1f} s  "
                    f"peak RSS {rec['peak_rss_mib']:7.0f} MiB  "
                    f"(load {load:.1f})",
                    flush=True,
                )
                append_record(
                    args.out, "data_scale", {"machine": machine_info(), "note": args.note, **rec}
                )


if __name__ == "__main__":
    main()
