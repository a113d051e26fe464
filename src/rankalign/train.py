"""`rankalign train`: one Trainer, a pluggable loss over ranked lists.

    rankalign train --config run.yaml --loss rrhf --data lists.jsonl --output_dir runs/rrhf

The trainer computes, for each batch of lists, logp[b, i] and len[b, i] (logprobs.py) and calls
the chosen loss (losses.py). Everything else — accumulation, schedules, precision, checkpoints,
resume, logging, distributed launch — is transformers' Trainer driven by TrainingArguments, so
every `TrainingArguments` flag works here too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import os
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments, set_seed

from . import losses as L
from .config import dump_config, parse_config
from .data import check_output_location, load_lists, write_json
from .errors import UserError
from .logprobs import collate_lists, response_logps
from .models import (
    check_weights_fit,
    check_weights_format,
    load_causal_lm,
    load_tokenizer,
    model_fingerprint,
    resolve_model,
)
from .tokenization import EncodedList, encode_list

# Loss hyperparameters: None means "the loss function's own default" (see losses.py).
LOSS_OPTIONS = (
    "beta",
    "margin",
    "rank_weight",
    "sft_weight",
    "sft_reduction",
    "pair_mode",
    "gamma",
    "label_smoothing",
    "temperature",
)

# TrainingArguments defaults from the papers, applied unless the YAML or a flag sets them.
COMMON_DEFAULTS = {
    "num_train_epochs": 3,
    "lr_scheduler_type": "linear",
    "warmup_steps": 0.03,
    "logging_steps": 1,
    "save_strategy": "epoch",
    "report_to": "none",
    "per_device_train_batch_size": 1,
    "per_device_eval_batch_size": 4,
    "remove_unused_columns": False,
    "seed": 42,
}
LOSS_DEFAULTS = {
    # RRHF paper §4.1: lr 2e-5, 3 epochs, warmup then linear decay to 0.
    "rrhf": {"learning_rate": 2e-5},
    "pro": {"learning_rate": 2e-5},
    "sft": {"learning_rate": 2e-5},
    "raft": {"learning_rate": 2e-5},
    # DPO paper: lr 1e-6 (its successors use the same order of magnitude).
    **{k: {"learning_rate": 1e-6} for k in ("dpo", "ipo", "listwise-dpo", "slic", "simpo", "cpo")},
}


@dataclass
class TrainConfig:
    data: str = field(
        default=None,
        metadata={
            "help": "ranked lists: .jsonl/.json/.parquet/.csv, a dataset folder, or a hub name"
        },
    )
    eval_data: str | None = field(
        default=None, metadata={"help": "held-out ranked lists for eval_strategy"}
    )
    model: str = field(
        default="smollm2",
        metadata={"help": "policy: local folder, hub name, or 'smollm2' (embedded default)"},
    )
    loss: str = field(
        default="rrhf",
        metadata={
            "help": f"one of: {', '.join(L.LOSSES)}; bt-reward and preference train reward models"
        },
    )
    # loss hyperparameters (None = the loss's default; see losses.py)
    beta: float | None = field(
        default=None,
        metadata={
            "help": "inverse temperature of the implicit reward (dpo family)",
            "check": "> 0",
        },
    )
    margin: float | None = field(
        default=None, metadata={"help": "hinge margin (slic)", "check": ">= 0"}
    )
    rank_weight: float | None = field(
        default=None, metadata={"help": "weight of the ranking term", "check": ">= 0"}
    )
    sft_weight: float | None = field(
        default=None, metadata={"help": "weight of the SFT term", "check": ">= 0"}
    )
    sft_reduction: str | None = field(default=None, metadata={"help": "sum | mean"})
    pair_mode: str | None = field(
        default=None, metadata={"help": "all | best-worst (pairwise losses on k > 2)"}
    )
    gamma: float | None = field(
        default=None, metadata={"help": "target reward margin (simpo)", "check": ">= 0"}
    )
    label_smoothing: float | None = field(
        default=None, metadata={"help": "label smoothing (dpo)", "check": "[0, 0.5]"}
    )
    temperature: str | None = field(default=None, metadata={"help": "pro: none | reward-gap"})
    # reference model (dpo, ipo, listwise-dpo)
    ref_model: str | None = field(
        default=None, metadata={"help": "reference model; default: the initial policy"}
    )
    reference: str = field(
        default="precompute",
        metadata={
            "help": "precompute (one pass, cached on disk) | adapters-off (LoRA: the policy with adapters disabled)"
        },
    )
    ref_cache_dir: str | None = field(
        default=None, metadata={"help": "where precomputed reference log-probs are cached"}
    )
    # tokenization
    max_length: int = field(
        default=512,
        metadata={
            "help": "prompt + response tokens (the RRHF paper used 192 on HH)",
            "check": ">= 2",
        },
    )
    min_response_tokens: int = field(
        default=64,
        metadata={"help": "tokens a response keeps when the prompt is long", "check": ">= 1"},
    )
    chat_template: str = field(
        default="auto", metadata={"help": "auto (message lists only) | always | never"}
    )
    drop_over_length: bool = field(
        default=False,
        metadata={"help": "drop lists that need truncation (counted) instead of truncating"},
    )
    empty_responses: str = field(default="error", metadata={"help": "error | drop"})
    drop_tied_lists: bool = field(
        default=False, metadata={"help": "drop lists whose scores are all equal (counted)"}
    )
    max_rows: int | None = field(
        default=None, metadata={"help": "read only the first N rows", "check": ">= 1"}
    )
    # computation
    shared_prompt: bool = field(
        default=True, metadata={"help": "run each prompt once for its k responses"}
    )
    packed_prompt: bool = field(
        default=False,
        metadata={
            "help": "share the prompt by packing it and its responses into one sequence (block "
            "attention mask) instead of through the KV cache; always so under activation "
            "checkpointing"
        },
    )
    dtype: str = field(
        default="float32",
        metadata={"help": "weights dtype: float32 | bfloat16 (mixed precision: --bf16 true)"},
    )
    use_lora: bool = False
    lora_r: int = field(default=16, metadata={"help": "LoRA rank", "check": ">= 1"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha", "check": "> 0"})
    lora_dropout: float = field(
        default=0.0,
        metadata={
            "help": "dropout on LoRA inputs (PEFT's default 0; 0.05 made CPU steps 1.8x slower)",
            "check": "[0, 1]",
        },
    )
    lora_target_modules: str = field(
        default="all-linear", metadata={"help": "comma-separated module names or all-linear"}
    )
    merge_lora: bool = field(
        default=True, metadata={"help": "save the final model with adapters merged"}
    )
    trust_remote_code: bool = False
    allow_pickle: bool = field(default=False, metadata={"help": "allow .bin (pickle) checkpoints"})
    resume: bool = field(
        default=False, metadata={"help": "continue from the last checkpoint in output_dir"}
    )

    def __post_init__(self):
        if self.loss not in L.LOSSES:
            raise ValueError(f"unknown loss '{self.loss}' (choose from: {', '.join(L.LOSSES)})")
        if self.reference not in ("precompute", "adapters-off"):
            raise ValueError(
                f"reference must be precompute or adapters-off, got '{self.reference}'"
            )
        if self.reference == "adapters-off" and not self.use_lora:
            raise ValueError("reference: adapters-off needs use_lora: true")

    def loss_kwargs(self) -> dict:
        fn = L.LOSSES[self.loss]
        accepted = inspect.signature(fn).parameters
        kwargs = {}
        for name in LOSS_OPTIONS:
            value = getattr(self, name)
            if value is None:
                continue
            if name not in accepted:
                raise UserError(f"option '{name}' does not apply to loss '{self.loss}'", field=name)
            kwargs[name] = value
        return kwargs


# ----------------------------------------------------------------------------- data


class ListDataset(torch.utils.data.Dataset):
    """Tokenized ranked lists (+ reference log-probs once computed)."""

    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def tokenize_lists(
    path: str, tokenizer, cfg: TrainConfig, *, min_responses: int
) -> tuple[ListDataset, dict]:
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


def list_length(item: dict, scorer: str = "cached") -> int:
    """Tokens a list costs padded on its own, the key that batches similar lists together.
    cached (shared prompt via the KV cache): the prompt once, k responses padded to the longest;
    packed: the prompt and its responses back to back; naive: k rows of prompt + response padded
    to the longest (logprobs.py)."""
    sizes = [len(r) for r in item["response_ids"]]
    if scorer == "cached":
        return len(item["prompt_ids"]) + len(sizes) * max(sizes)
    if scorer == "packed":
        return len(item["prompt_ids"]) + sum(sizes)
    return len(sizes) * (len(item["prompt_ids"]) + max(sizes))


def make_collator(pad_id: int):
    def collate(features: list[dict]) -> dict:
        enc = [EncodedList(f["prompt_ids"], f["response_ids"]) for f in features]
        batch = collate_lists(enc, pad_id)
        K = int(batch["num_responses"].max())
        scores = torch.zeros(len(features), K)
        for b, f in enumerate(features):
            scores[b, : len(f["scores"])] = torch.tensor(f["scores"], dtype=torch.float)
        batch["scores"] = scores
        if "ref_logp" in features[0]:
            ref = torch.zeros(len(features), K)
            for b, f in enumerate(features):
                ref[b, : len(f["ref_logp"])] = torch.tensor(f["ref_logp"], dtype=torch.float)
            batch["ref_logp"] = ref
        return batch

    return collate


# ----------------------------------------------------------------------------- reference log-probs


def data_fingerprint(dataset: ListDataset) -> str:
    h = hashlib.sha256()
    for item in dataset.items:
        h.update(json.dumps([item["prompt_ids"], item["response_ids"]]).encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def compute_logps(
    model,
    dataset: ListDataset,
    pad_id: int,
    batch_size: int,
    shared_prompt: bool,
    desc: str = "reference log-probs",
    packed: bool = False,
) -> list[list[float]]:
    """Per-list response log-probs of `model` over the whole dataset, in dataset order.

    Under several processes each computes every world_size-th batch and the results are gathered.
    Every process runs the same number of forward passes (the last batch repeats where a share is
    short): ZeRO-3 gathers parameters collectively in each forward.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    state = PartialState()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    collate = make_collator(pad_id)
    # batch by length: little padding
    scorer = ("packed" if packed else "cached") if shared_prompt else "naive"
    order = sorted(range(len(dataset)), key=lambda i: -list_length(dataset[i], scorer))
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    mine = batches[state.process_index :: state.num_processes]
    steps = -(-len(batches) // state.num_processes)
    results: dict[int, list[float]] = {}
    for step in tqdm(range(steps), desc=desc, unit="batch", disable=not state.is_main_process):
        idx = mine[step] if step < len(mine) else batches[-1]
        batch = {k: v.to(device) for k, v in collate([dataset[i] for i in idx]).items()}
        logp, _, mask = response_logps(model, batch, shared_prompt, packed)
        if step < len(mine):
            for j, i in enumerate(idx):
                results[i] = logp[j][mask[j]].double().tolist()
    if state.num_processes > 1:
        results = {i: v for part in gather_object([results]) for i, v in part.items()}
    model.train(was_training)
    return [results[i] for i in range(len(dataset))]


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
    zero3 = _zero3_enabled()
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


def _zero3_enabled() -> bool:
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


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


# ----------------------------------------------------------------------------- trainer


class MetricsTrainer(Trainer):
    """A Trainer that collects per-batch statistics (`_record`) and adds their means to every
    log line, so `logging_steps: 1` logs each loss part, ranking accuracy and reward margin.

    Counts are summed over the logging window; pair (or example) statistics are means over all
    pairs in it, whatever the batches' sizes; other parts are means over batches. Under several
    processes the window holds every process's batches.
    """

    SUMMED = ("num_pairs", "num_examples")
    PER_ITEM = ("rank_accuracy", "reward_margin", "p_preferred")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # our losses are per-batch means: let Trainer divide by the accumulation steps
        self.model_accepts_loss_kwargs = False
        # split -> key -> [weighted sum, total weight]
        self._metrics = {"train": {}, "eval": {}}

    def _record(self, model, stats: dict) -> None:
        metrics = self._metrics["train" if model.training else "eval"]
        items = float(stats.get("num_pairs", stats.get("num_examples", 1.0)))
        for k, v in stats.items():
            weight = items if k in self.PER_ITEM else 1.0
            total = metrics.setdefault(k, [0.0, 0.0])
            total[0] += float(v) * weight
            total[1] += weight

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict, *args, **kwargs):
        split = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        prefix = "eval_" if split == "eval" else ""
        totals = self._metrics[split]
        if self.args.world_size > 1:  # every process logs at the same steps: pool their windows
            from accelerate.utils import gather_object

            totals = {}
            for part in gather_object([self._metrics[split]]):
                for k, (value, weight) in part.items():
                    total = totals.setdefault(k, [0.0, 0.0])
                    total[0] += value
                    total[1] += weight
        for k, (value, weight) in totals.items():
            if k in self.SUMMED:
                logs[prefix + k] = value
            elif weight:
                logs[prefix + k] = value / weight
        self._metrics[split] = {}
        super().log(logs, *args, **kwargs)


class RankTrainer(MetricsTrainer):
    """transformers.Trainer whose loss is a ranking loss over (B, K) response log-probs."""

    def __init__(
        self,
        *args,
        loss_name: str,
        loss_kwargs: dict,
        shared_prompt: bool = True,
        packed_prompt: bool = False,
        reference: str = "precompute",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.loss_name, self.loss_fn, self.loss_kwargs = loss_name, L.LOSSES[loss_name], loss_kwargs
        self.shared_prompt, self.packed_prompt = shared_prompt, packed_prompt
        self.reference = reference
        self.pair_mode = loss_kwargs.get("pair_mode", "all")

    def _get_train_sampler(self, train_dataset=None):
        """`train_sampling_strategy: group_by_length` for ranked lists: batches of lists of
        similar cost (`list_length`), so little of a batch is padding."""
        if sampling_strategy(self.args) != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        from transformers.trainer_pt_utils import LengthGroupedSampler

        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return LengthGroupedSampler(
            self.args.train_batch_size * self.args.gradient_accumulation_steps,
            # training passes under activation checkpointing run the shared prompt packed
            lengths=[list_length(item, self._scorer()) for item in dataset],
        )

    def _scorer(self) -> str:
        """Which path `response_logps` takes in training steps (logprobs.py)."""
        if not self.shared_prompt:
            return "naive"
        return "packed" if self.packed_prompt or checkpointing(self.args) else "cached"

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logp, lengths, mask = response_logps(model, inputs, self.shared_prompt, self.packed_prompt)
        ref = inputs.get("ref_logp")
        if self.reference == "adapters-off" and self.loss_name in L.NEEDS_REFERENCE:
            with torch.no_grad(), self.accelerator.unwrap_model(model).disable_adapter():
                ref = response_logps(model, inputs, self.shared_prompt, self.packed_prompt)[0]
        batch = L.LossInputs(
            logp=logp, lengths=lengths, scores=inputs["scores"], mask=mask, ref_logp=ref
        )
        loss, parts = self.loss_fn(batch, **self.loss_kwargs)
        stats = {f"loss_{k}": v for k, v in parts.items()}
        stats.update(L.ranking_metrics(batch, pair_mode=self.pair_mode))
        self._record(model, stats)
        return (loss, {"logp": logp}) if return_outputs else loss


def checkpointing(args: TrainingArguments) -> bool:
    """Activation checkpointing on? (transformers 5.x renamed `gradient_checkpointing`.)"""
    return bool(getattr(args, "activation_checkpointing", None) or args.gradient_checkpointing)


def sampling_strategy(args: TrainingArguments) -> str:
    """`train_sampling_strategy`, or what the older `group_by_length` flag meant."""
    if hasattr(args, "train_sampling_strategy"):
        return args.train_sampling_strategy
    return "group_by_length" if getattr(args, "group_by_length", False) else "random"


def load_options(cfg) -> dict:
    """`load_causal_lm` options of a TrainConfig or RewardModelConfig."""
    return {
        "dtype": cfg.dtype,
        "trust_remote_code": cfg.trust_remote_code,
        "allow_pickle": cfg.allow_pickle,
    }


def with_lora(model, cfg, task_type: str = "CAUSAL_LM"):
    """`model` with LoRA adapters when `cfg.use_lora` (cfg: TrainConfig or RewardModelConfig).
    Task SEQ_CLS keeps a new scalar head fully trainable (peft's modules_to_save)."""
    if not cfg.use_lora:
        return model
    from peft import LoraConfig, get_peft_model

    targets = cfg.lora_target_modules
    targets = targets if targets == "all-linear" else [t.strip() for t in targets.split(",")]
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        task_type=task_type,
    )
    try:
        with quiet_peft():
            return get_peft_model(model, lora)
    except (ValueError, TypeError) as e:  # target modules the model lacks, bad LoRA options
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot add LoRA adapters: {msg}", field="lora_target_modules") from None


def check_trainer_options(args: TrainingArguments, *, eval_data: bool) -> None:
    """What the Trainer would refuse only once it starts (after outputs exist), checked first:
    evaluation without data, logging integrations that are not installed, the optimizer and
    its arguments, the learning-rate schedule and its kwargs."""
    from transformers.integrations import get_reporting_integration_callbacks
    from transformers.optimization import get_scheduler

    def refuse(field_name: str, e: Exception):
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        return UserError(msg, field=field_name)

    strategy = getattr(args.eval_strategy, "value", args.eval_strategy)  # an enum or a string
    if strategy != "no" and not eval_data:
        raise UserError(
            f"eval_strategy {strategy} needs held-out data: pass --eval_data FILE",
            field="eval_strategy",
        )
    try:
        for callback in get_reporting_integration_callbacks(args.report_to):
            callback()  # the integration's own check that its package is installed
    except (ImportError, RuntimeError, ValueError) as e:
        raise refuse("report_to", e) from None
    try:
        Trainer.get_optimizer_cls_and_kwargs(args)
    except (ImportError, RuntimeError, ValueError, TypeError) as e:
        raise refuse("optim", e) from None
    try:  # a one-parameter stand-in: the schedule's kwargs are checked by building it
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.learning_rate)
        get_scheduler(
            args.lr_scheduler_type,
            optimizer,
            num_warmup_steps=0,
            num_training_steps=10,
            scheduler_specific_kwargs=args.lr_scheduler_kwargs,
        )
    except (RuntimeError, ValueError, TypeError) as e:
        raise refuse("lr_scheduler_kwargs", e) from None


def check_model_skeleton(cfg, model_path: str) -> None:
    """Build the model's skeleton from its config on the meta device (no weights, no memory):
    a config that builds no model, weight files whose shapes do not fit it, and LoRA options
    that do not fit it all fail before anything is written."""
    if _zero3_enabled() or cfg.trust_remote_code:
        # under ZeRO-3 transformers partitions even a skeleton as it is built (zero.Init), which
        # a meta tensor cannot be; a model's own code may not build on the meta device: there
        # these are checked when the model loads
        return
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model_path, trust_remote_code=cfg.trust_remote_code)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(
                config, trust_remote_code=cfg.trust_remote_code
            )
    except (OSError, ValueError, RuntimeError, TypeError) as e:
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot build the model from its config: {msg}", file=model_path) from None
    if Path(model_path).is_dir():
        check_weights_fit(skeleton, Path(model_path))
    with_lora(skeleton, cfg)


@contextlib.contextmanager
def quiet_peft():
    """peft (0.21) reads transformers' deprecated `is_gradient_checkpointing` when it wraps a
    model: peft's warning, not one the user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        yield


def check_output_dir(out: Path, model_path: str, *, checkpoints: bool) -> None:
    """Fail before any work (and without creating anything) when the output folder cannot be
    written or the disk is too small."""
    missing = check_output_location(out, folder=True, field="output_dir")
    base = missing[-1].parent if missing else out  # the folder that exists (for the disk check)
    folder = Path(model_path)
    weights = sum(f.stat().st_size for f in folder.glob("*.safetensors")) if folder.is_dir() else 0
    # a checkpoint holds the weights plus AdamW's two moments; the final save, the weights
    need = weights * (3 if checkpoints else 1)
    free = shutil.disk_usage(base).free
    if need > free:
        raise UserError(
            f"not enough disk space: about {need / 2**30:.1f} GiB needed for a checkpoint, "
            f"{free / 2**30:.1f} GiB free",
            file=out,
        )


def last_complete_checkpoint(out: Path) -> str | None:
    """The newest checkpoint whose save finished (a kill can leave a partial one behind)."""
    done = [
        c
        for c in out.glob("checkpoint-*")
        if (c / "trainer_state.json").is_file() and c.name.split("-")[-1].isdigit()
    ]
    return str(max(done, key=lambda c: int(c.name.split("-")[-1]))) if done else None


def _default_output_dir(cfg: TrainConfig) -> str:
    return str(Path("runs") / cfg.loss)


def run(cfg: TrainConfig, args: TrainingArguments) -> dict:
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
    check_output_dir(out, model_path, checkpoints=args.save_strategy != "no")
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
    write_json(out / "data_report.json", data_report)
    dump_config(out / "rankalign_config.yaml", {"rankalign": cfg, "training_args": args.to_dict()})

    ref_cache = None
    if precompute:
        for ds in (train_set, eval_set):
            if ds is not None:
                ref_cache = attach_reference(ds, cfg, args, tokenizer.pad_token_id, ref_path)
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
        packed_prompt=cfg.packed_prompt,
        reference=cfg.reference,
    )
    resume = None
    if cfg.resume:
        resume = last_complete_checkpoint(out)
        if resume is None:
            print(f"rankalign: no checkpoint in {out}; starting from scratch", file=sys.stderr)
    result = trainer.train(resume_from_checkpoint=resume)
    save_final(
        trainer, cfg, tokenizer, out, lambda: load_causal_lm(model_path, **load_options(cfg))
    )
    summary = {
        "train_loss": result.training_loss,
        "global_step": result.global_step,
        "output_dir": str(out),
        "reference_cache": ref_cache,
        "data": data_report,
    }
    write_json(out / "train_summary.json", summary)
    return summary


def save_final(trainer: Trainer, cfg, tokenizer, out: Path, load_base) -> None:
    """Save a plain `save_pretrained` model + tokenizer in output_dir (LoRA merged by default).

    `trainer.save_model` is collective under FSDP/DeepSpeed (every process calls it, rank 0
    writes). A LoRA merge starts from the saved adapter and the base weights on disk, so it works
    however the adapter was sharded in training (ZeRO-3 included); `load_base()` loads the base
    model as training started from it.
    """
    if trainer.is_world_process_zero():  # the per-step log beside the model, for reports
        write_json(out / "trainer_state.json", dataclasses.asdict(trainer.state))
    lora_merge = cfg.use_lora and cfg.merge_lora
    trainer.save_model(str(out / "adapter" if lora_merge else out))
    if not trainer.is_world_process_zero():
        return
    if lora_merge:
        from peft import PeftModel
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        # only this process loads the base: ZeRO-3's collective partitioning at load must be off
        # (training is over; nothing else loads under this run's DeepSpeed config)
        unset_hf_deepspeed_config()
        with quiet_peft():
            merged = PeftModel.from_pretrained(load_base(), str(out / "adapter"))
        merged = merged.merge_and_unload()
        merged.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))


def machine_defaults() -> dict:
    """TrainingArguments defaults that depend on this machine (policy and reward-model training)."""
    cuda = torch.cuda.is_available()
    # pinned host memory only helps copies to an accelerator (torch warns when there is none)
    defaults = {"dataloader_pin_memory": cuda}
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not cuda:
        # multi-process on CPU (gloo): without use_cpu, TrainingArguments sets up no DDP
        defaults["use_cpu"] = True
    return defaults


def keep_token_off_disk(args: TrainingArguments) -> None:
    """Move `--hub_token` into the environment, where huggingface_hub reads it when pushing:
    off `args`, it cannot reach training_args.bin in the output folder and every checkpoint."""
    if args.hub_token:
        os.environ["HF_TOKEN"], args.hub_token = args.hub_token, None


def parse_args(argv: list[str]) -> tuple[TrainConfig, TrainingArguments]:
    # per-loss defaults need the loss name before the full parse
    loss = _peek(argv, "loss") or "rrhf"
    defaults = {**COMMON_DEFAULTS, **LOSS_DEFAULTS.get(loss, {}), **machine_defaults()}
    cfg, args, _ = parse_config(
        argv, (TrainConfig, TrainingArguments), prog="rankalign train", defaults=defaults
    )
    keep_token_off_disk(args)
    if not cfg.data:
        raise UserError("no training data: pass --data FILE (or `data:` in the config)")
    cfg.loss_kwargs()  # options that do not apply to the loss fail before any work starts
    if sampling_strategy(args) == "batch_rebalance":
        raise UserError(
            "train_sampling_strategy batch_rebalance is not supported for ranked lists; "
            "use group_by_length",
            field="train_sampling_strategy",
        )
    if args.output_dir is None or args.output_dir == "trainer_output":
        args.output_dir = _default_output_dir(cfg)
    return cfg, args


def _peek(argv: list[str], name: str) -> str | None:
    from .config import _split_meta, load_yaml

    config_path, rest = _split_meta(argv)
    for i, a in enumerate(rest):
        if a == f"--{name}" and i + 1 < len(rest):
            return rest[i + 1]
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    if config_path:
        value = load_yaml(config_path).get(name)
        return str(value) if value is not None else None
    return None


def main(argv: list[str]) -> int:
    from .reward_model import is_reward_model_loss
    from .reward_model import main as reward_model_main

    if is_reward_model_loss(argv):  # --loss bt-reward | preference: a reward/preference model
        return reward_model_main(argv)
    cfg, args = parse_args(argv)
    summary = run(cfg, args)
    print(json.dumps({k: v for k, v in summary.items() if k != "data"}, indent=2))
    return 0


# dataclass fields double as YAML keys and flags: keep them unique across both dataclasses
assert not {f.name for f in dataclasses.fields(TrainConfig)} & {
    f.name for f in dataclasses.fields(TrainingArguments)
}
