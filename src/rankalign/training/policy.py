"""Training a policy on ranked lists with any loss of `losses.LOSSES`: validate everything,
write the run's first files, precompute reference log-probs when the loss needs them, train with
`RankTrainer`, save.
"""

from __future__ import annotations

import sys
from pathlib import Path

from transformers import TrainingArguments, set_seed

from rankalign import losses as L
from rankalign.data import check_output_location, write_json
from rankalign.logprobs import make_collator, packing_pays
from rankalign.models import (
    check_weights_format,
    load_causal_lm,
    load_tokenizer,
    resolve_model,
)
from rankalign.training.card import write_run_files
from rankalign.training.checkpoints import (
    check_output_dir,
    start_outputs,
    train_and_save,
)
from rankalign.training.config import TrainConfig
from rankalign.training.datasets import tokenize_lists
from rankalign.training.reference import attach_reference
from rankalign.training.setup import (
    check_model_skeleton,
    check_trainer_options,
    load_options,
    with_lora,
)
from rankalign.training.trainers import RankTrainer, checkpointing


def train_policy(cfg: TrainConfig, args: TrainingArguments) -> dict:
    """Train and save; returns a summary (final metrics and paths)."""
    # Validation: the models' files, the output folder and every row, before anything is written
    # (options were checked when parsed), so a refused run leaves nothing behind.
    min_k = L.MIN_RESPONSES[cfg.loss]
    model_path = resolve_model(cfg.model)
    precompute = cfg.loss in L.NEEDS_REFERENCE and cfg.reference == "precompute"
    ref_path = resolve_model(cfg.ref_model) if precompute and cfg.ref_model else model_path
    for path in {model_path, ref_path}:
        check_weights_format(path, cfg.allow_pickle)
    out = Path(args.output_dir)
    check_output_dir(out, model_path, checkpoints=args.save_strategy != "no", cfg=cfg)
    if precompute and cfg.ref_cache_dir:
        check_output_location(cfg.ref_cache_dir, folder=True, field="ref_cache_dir")
    check_model_skeleton(cfg, model_path)
    check_trainer_options(args, eval_data=bool(cfg.eval_data))
    tokenizer = load_tokenizer(model_path, trust_remote_code=cfg.trust_remote_code)
    train_set, data_report = tokenize_lists(cfg.data, tokenizer, cfg, min_responses=min_k)
    eval_set = None
    if cfg.eval_data:
        eval_set, _ = tokenize_lists(cfg.eval_data, tokenizer, cfg, min_responses=min_k)
    print(f"rankalign: data: {data_report['summary']}", file=sys.stderr)
    start_outputs(out, cfg, args, data_report)  # everything is validated: the first write

    packed = choose_packed(cfg, model_path, train_set, checkpointed=checkpointing(args))
    ref_cache = None
    if precompute:
        for ds in (train_set, eval_set):
            if ds is not None:
                ref_cache = attach_reference(
                    ds, cfg, args, tokenizer.pad_token_id, ref_path, packed=packed
                )
    if checkpointing(args) and cfg.shared_prompt and not cfg.packed_prompt:
        print(
            "rankalign: activation checkpointing drops the KV cache: training steps run each "
            "prompt and its responses as one packed sequence with a block attention mask",
            file=sys.stderr,
        )
    set_seed(args.seed)  # LoRA's initialization is part of the run
    model = with_lora(load_causal_lm(model_path, **load_options(cfg)), cfg)

    trainer = RankTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=make_collator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        loss_name=cfg.loss,
        loss_kwargs=cfg.loss_kwargs(),
        shared_prompt=cfg.shared_prompt,
        packed_prompt=packed,
        logps_chunk=cfg.logps_chunk_size,
        reference=cfg.reference,
    )
    summary = train_and_save(
        trainer, cfg, tokenizer, out, lambda: load_causal_lm(model_path, **load_options(cfg))
    )
    summary |= {"reference_cache": ref_cache, "data": data_report}
    write_json(out / "train_summary.json", summary)
    write_run_files(trainer, out, summary)
    return summary


def choose_packed(cfg: TrainConfig, model_path: str, dataset, *, checkpointed: bool) -> bool:
    """`packed_prompt` as given, or when unset (None) the cheaper scorer for this model and data
    (`logprobs.packing_pays`), decided once for the run, so that every process and step takes
    the same path (sharded models gather their weights once per forward: processes must agree
    on the number of forwards). Said on stderr when chosen."""
    if cfg.packed_prompt is not None or not cfg.shared_prompt or checkpointed:
        return bool(cfg.packed_prompt)  # checkpointed steps are packed anyway
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=cfg.trust_remote_code)
    packed = packing_pays(config.get_text_config(), dataset)
    way = "packed into one sequence per list" if packed else "through the KV cache"
    print(
        f"rankalign: scorer: each prompt shared {way} (packed_prompt unset: the cheaper one here)",
        file=sys.stderr,
    )
    return packed
