"""Reference log-probs for the losses that need them (`needs_reference` in their spec,
`losses.NEEDS_REFERENCE`): computed once by the reference model alone (then freed), cached on disk by model and data fingerprint, attached
to the dataset; under ZeRO-3 computed through a DeepSpeed inference engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from transformers import TrainingArguments

from rankalign.logprobs import ListDataset, compute_logps
from rankalign.models import (
    load_causal_lm,
    model_fingerprint,
)
from rankalign.tokenized import TokenTable
from rankalign.training.config import TrainConfig
from rankalign.training.setup import load_options, zero3_enabled


def data_fingerprint(dataset: ListDataset | TokenTable) -> str:
    """The data part of the cache key: a token table's own key (data, tokenizer, template mode,
    length options), else a hash of the token ids."""
    if isinstance(dataset, TokenTable):
        return dataset.fingerprint
    h = hashlib.sha256()
    for item in dataset.items:
        h.update(json.dumps([item["prompt_ids"], item["response_ids"]]).encode())
    return h.hexdigest()[:16]


def attach_reference(
    dataset: ListDataset | TokenTable,
    cfg: TrainConfig,
    args: TrainingArguments,
    pad_id: int,
    ref_path: str,
    packed: bool = False,
) -> str:
    """Precompute reference log-probs once (cached on disk by model and data) and attach them.

    The reference is loaded on its own, used and freed before the policy is built: one model in
    memory at a time, and always the initial weights, also when a run resumes. `packed`: the
    scorer the run chose (`policy.choose_packed`).
    """
    from accelerate import PartialState
    from safetensors.torch import save_file

    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else ""
    zero3 = zero3_enabled()
    key = hashlib.sha256(
        f"{model_fingerprint(ref_path)}|{data_fingerprint(dataset)}|{cfg.dtype}"
        f"{'|zero3-' + precision if zero3 else ''}".encode()
    ).hexdigest()[:20]
    path = _cache_path(dataset, cfg, args, key)
    flat = _cached(path, dataset)
    if flat is None:
        ref = load_causal_lm(ref_path, **load_options(cfg))
        if zero3:  # weights were partitioned at load: run them through an inference engine
            ref = _zero3_inference_engine(ref, args)
        else:
            ref.to(args.device)
        values = compute_logps(
            ref,
            dataset,
            pad_id,
            args.per_device_eval_batch_size,
            cfg.shared_prompt,
            packed=packed,
            chunk=cfg.logps_chunk_size,
        )
        if zero3:
            ref.destroy()  # removes ZeRO-3's parameter hooks
        del ref
        flat = [v for row in values for v in row]
        if PartialState().is_main_process:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
            save_file({"logps": torch.tensor(flat, dtype=torch.float64)}, str(tmp))
            os.replace(tmp, path)
    if isinstance(dataset, TokenTable):
        try:
            dataset.attach_ref_logp(flat)
        except ValueError:
            raise RuntimeError(f"reference cache {path} does not match the data") from None
        return str(path)
    pos = 0
    for item in dataset.items:
        k = len(item["response_ids"])
        item["ref_logp"] = flat[pos : pos + k]
        pos += k
    if pos != len(flat):
        raise RuntimeError(f"reference cache {path} does not match the data")
    return str(path)


def _cache_path(dataset, cfg: TrainConfig, args: TrainingArguments, key: str) -> Path:
    """Where the reference log-probs of `key` are cached: `ref_cache_dir` when given; else beside
    a shared token table, named after it (one table, one set of reference log-probs per reference
    model, reused by every run and process that maps the table); else the run's `ref_cache`."""
    if cfg.ref_cache_dir:
        return Path(cfg.ref_cache_dir) / f"ref-logps-{key}.safetensors"
    if isinstance(dataset, TokenTable) and dataset.shared:
        return dataset.path.with_name(f"{dataset.path.stem}.ref-logps-{key}.safetensors")
    return Path(args.output_dir) / "ref_cache" / f"ref-logps-{key}.safetensors"


def _cached(path: Path, dataset) -> list[float] | None:
    """The cached log-probs at `path`, one per response of `dataset`; None when there are none,
    or when the file is unreadable or does not fit the data (said, then recomputed)."""
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        flat = load_file(str(path))["logps"].tolist()
    except Exception as e:  # a torn or foreign file: recompute rather than fail the run
        why = f"unreadable ({type(e).__name__})"
    else:
        if isinstance(dataset, TokenTable):
            n = sum(dataset.response_counts())
        else:
            n = sum(len(x["response_ids"]) for x in dataset.items)
        if len(flat) == n:
            print(f"rankalign: reference log-probs from cache {path}", file=sys.stderr)
            return flat
        why = f"{len(flat)} values for {n} responses"
    print(f"rankalign: reference cache {path} is damaged ({why}): recomputing", file=sys.stderr)
    return None


def _zero3_inference_engine(model, args: TrainingArguments):
    """A DeepSpeed ZeRO-3 engine without optimizer around `model`, for forward passes only.

    Settings (stage, offload, precision) come from the run's DeepSpeed config; batch-size keys
    that accelerate leaves as "auto" are fixed, since this engine never trains.
    """
    import copy

    import deepspeed

    config = copy.deepcopy(args.deepspeed_plugin.deepspeed_config)
    config["train_micro_batch_size_per_gpu"] = args.per_device_eval_batch_size
    config["gradient_accumulation_steps"] = 1
    config.pop("train_batch_size", None)
    config.pop("gradient_clipping", None)
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine
