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
from rankalign.training.config import TrainConfig
from rankalign.training.setup import load_options, zero3_enabled


def data_fingerprint(dataset: ListDataset) -> str:
    h = hashlib.sha256()
    for item in dataset.items:
        h.update(json.dumps([item["prompt_ids"], item["response_ids"]]).encode())
    return h.hexdigest()[:16]


def attach_reference(
    dataset: ListDataset, cfg: TrainConfig, args: TrainingArguments, pad_id: int, ref_path: str
) -> str:
    """Precompute reference log-probs once (cached on disk by model and data) and attach them.

    The reference is loaded on its own, used and freed before the policy is built: one model in
    memory at a time, and always the initial weights, also when a run resumes.
    """
    from accelerate import PartialState
    from safetensors.torch import load_file, save_file

    cache_root = (
        Path(cfg.ref_cache_dir) if cfg.ref_cache_dir else Path(args.output_dir) / "ref_cache"
    )
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else ""
    zero3 = zero3_enabled()
    key = hashlib.sha256(
        f"{model_fingerprint(ref_path)}|{data_fingerprint(dataset)}|{cfg.dtype}"
        f"{'|zero3-' + precision if zero3 else ''}".encode()
    ).hexdigest()[:20]
    path = cache_root / f"ref-logps-{key}.safetensors"
    if path.is_file():
        flat = load_file(str(path))["logps"].tolist()
        print(f"rankalign: reference log-probs from cache {path}", file=sys.stderr)
    else:
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
            packed=cfg.packed_prompt,
            chunk=cfg.logps_chunk_size,
        )
        if zero3:
            ref.destroy()  # removes ZeRO-3's parameter hooks
        del ref
        flat = [v for row in values for v in row]
        if PartialState().is_main_process:
            cache_root.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
            save_file({"logps": torch.tensor(flat, dtype=torch.float64)}, str(tmp))
            os.replace(tmp, path)
    pos = 0
    for item in dataset.items:
        k = len(item["response_ids"])
        item["ref_logp"] = flat[pos : pos + k]
        pos += k
    if pos != len(flat):
        raise RuntimeError(f"reference cache {path} does not match the data")
    return str(path)


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
