"""Options of `rankalign train` (one class for every loss: policy losses and reward models)
and the per-loss defaults, declared here as plain tables.

YAML keys = flags = field names. Every field is listed by `rankalign train --help`; options that
do not apply to the chosen loss are refused before any work starts (`TrainConfig.loss_kwargs`,
`__post_init__`).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field

import torch

from rankalign import losses as L
from rankalign.errors import UserError
from rankalign.losses import MARGIN_MODES, PAIR_MODES

REWARD_MODEL_LOSSES = ("bt-reward", "preference")
ALL_LOSSES = (*L.LOSSES, *REWARD_MODEL_LOSSES)
# None: transformers' default for the model (sdpa where it is supported)
ATTN_IMPLEMENTATIONS = (None, "eager", "sdpa", "flex_attention", "flash_attention_2")

# Loss hyperparameters: option name -> the loss function's keyword. None (the option's default)
# means "the loss function's own default" (losses.py).
LOSS_OPTIONS = {
    "beta": "beta",
    "margin": "margin",
    "rank_weight": "rank_weight",
    "sft_weight": "sft_weight",
    "sft_reduction": "sft_reduction",
    "pair_mode": "pair_mode",
    "gamma": "gamma",
    "label_smoothing": "label_smoothing",
    "pro_temperature": "temperature",
    "pro_sft_scale": "sft_scale",
    "ipo_log_ratio": "log_ratio",
    "lipo_labels": "labels",
    "nca_alpha": "alpha",
}
# options only the reward-model losses read (and the value that means "not set")
REWARD_MODEL_OPTIONS = {
    "margin_mode": "constant",
    "center_rewards_coefficient": None,
    "format": "auto",
    "template": None,
    "orders": "random",
}

# TrainingArguments (and TrainConfig) defaults from the papers, per loss. Applied unless the
# YAML, a keyword argument or a flag sets them; `rankalign_config.yaml` records the values used.
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
# RLHF Workflow §2.2: one epoch, cosine schedule with 3% warm-up; batch 8 (TRL RewardConfig);
# 1024 input tokens as the score stage reads them.
REWARD_MODEL_DEFAULTS = {
    **COMMON_DEFAULTS,
    "num_train_epochs": 1,
    "lr_scheduler_type": "cosine",
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "max_length": 1024,
}
LOSS_DEFAULTS = {
    # RRHF paper §4.1: lr 2e-5, 3 epochs, warmup then linear decay to 0.
    **{k: {**COMMON_DEFAULTS, "learning_rate": 2e-5} for k in ("rrhf", "pro", "sft", "raft")},
    # DPO paper: lr 1e-6 (its successors use the same order of magnitude).
    **{
        k: {**COMMON_DEFAULTS, "learning_rate": 1e-6}
        for k in ("dpo", "ipo", "listwise-dpo", "lipo", "infonca", "nca", "slic", "simpo", "cpo")
    },
    # RLHF Workflow §2.2: lr 2e-6 for the Bradley-Terry model, 5e-6 for the preference model.
    "bt-reward": {**REWARD_MODEL_DEFAULTS, "learning_rate": 2e-6},
    "preference": {**REWARD_MODEL_DEFAULTS, "learning_rate": 5e-6},
}


# The reward models' loss defaults (bt-reward: -log sigmoid(r_w - r_l - m) over every pair);
# the preference model reads the pairs of a list as bt-reward does.
REWARD_MODEL_LOSS_DEFAULTS = {
    "bt-reward": {"margin": 0.0, "pair_mode": "all"},
    "preference": {"pair_mode": "all"},
}


def loss_defaults(loss: str) -> dict:
    """option -> the value a run of `loss` uses when the option is not set (the loss
    function's keyword default, losses.py); options the loss does not take are absent."""
    if loss in REWARD_MODEL_LOSS_DEFAULTS:
        return dict(REWARD_MODEL_LOSS_DEFAULTS[loss])
    params = inspect.signature(L.LOSSES[loss]).parameters
    return {
        name: params[keyword].default
        for name, keyword in LOSS_OPTIONS.items()
        if keyword in params and params[keyword].default is not inspect.Parameter.empty
    }


def loss_default_help(option: str) -> str:
    """`default: 1.0 (rrhf, pro), 0.1 (slic)`: the option's effective default per loss, for
    --help (None in the option means "the loss's own default")."""
    by_value: dict[str, list[str]] = {}
    for loss in ALL_LOSSES:
        value = loss_defaults(loss).get(option)
        if value is not None:
            by_value.setdefault(str(value), []).append(loss)
    parts = [f"{value} ({', '.join(losses)})" for value, losses in by_value.items()]
    return f"default: {'; '.join(parts)}; other losses do not take it" if parts else ""


def _loss_option(help_: str, option: str, check: str | None = None):
    """A loss hyperparameter: None until set, then the loss's default (shown in --help)."""
    meta = {"help": f"{help_} ({loss_default_help(option)})"}
    if check:
        meta["check"] = check
    return field(default=None, metadata=meta)


def _per_loss_text(option: str) -> str:
    """`learning_rate 2e-05 (rrhf, pro); 1e-06 (dpo, ...)` from LOSS_DEFAULTS, for --help."""
    by_value: dict[str, list[str]] = {}
    for loss, defaults in LOSS_DEFAULTS.items():
        by_value.setdefault(str(defaults[option]), []).append(loss)
    return f"{option} " + "; ".join(f"{v} ({', '.join(ls)})" for v, ls in by_value.items())


def machine_defaults() -> dict:
    """TrainingArguments defaults that depend on this machine."""
    cuda = torch.cuda.is_available()
    # pinned host memory only helps copies to an accelerator (torch warns when there is none)
    defaults = {"dataloader_pin_memory": cuda}
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not cuda:
        # multi-process on CPU (gloo): without use_cpu, TrainingArguments sets up no DDP
        defaults["use_cpu"] = True
    return defaults


def defaults_for(loss: str) -> dict:
    """The defaults a run of `loss` starts from (before YAML, keyword arguments and flags)."""
    return {**LOSS_DEFAULTS.get(loss, COMMON_DEFAULTS), **machine_defaults()}


@dataclass
class TrainConfig:
    """Options of `rankalign train`: policy losses and reward models (YAML keys = flags)."""

    data: str = field(
        default=None,
        metadata={
            "help": "ranked lists (or pairwise prompt/chosen/rejected rows): .jsonl/.json/"
            ".parquet/.csv, a dataset folder, or a hub name"
        },
    )
    eval_data: str | None = field(
        default=None,
        metadata={"help": "held-out rows for eval_strategy (reward models: pair accuracy)"},
    )
    model: str = field(
        default="smollm2",
        metadata={
            "help": "start model: local folder, hub name, 'smollm2' (embedded default); "
            "bt-reward also 'minilm' (an encoder)"
        },
    )
    loss: str = field(
        default="rrhf",
        metadata={
            "help": f"policy: {', '.join(L.LOSSES)}; reward model: bt-reward (Bradley-Terry "
            "scalar head) | preference (A/B preference model). The TrainingArguments defaults "
            "below are the chosen loss's (`--loss X --help` shows X's): "
            + _per_loss_text("learning_rate")
            + "; "
            + _per_loss_text("num_train_epochs")
            + " (default: rrhf)"
        },
    )
    # loss hyperparameters (None = the loss's default; see losses.py and `loss_defaults`)
    beta: float | None = _loss_option(
        "inverse temperature of the implicit reward (dpo family; simpo's reward scale)",
        "beta",
        "> 0",
    )
    margin: float | None = _loss_option(
        "rrhf: margin in the ranking hinge; slic: hinge margin; bt-reward: m in "
        "-log sigmoid(r_w - r_l - m)",
        "margin",
        ">= 0",
    )
    rank_weight: float | None = _loss_option("weight of the ranking term", "rank_weight", ">= 0")
    sft_weight: float | None = _loss_option("weight of the SFT term", "sft_weight", ">= 0")
    sft_reduction: str | None = _loss_option(
        "sum | mean: the SFT term over the response's tokens", "sft_reduction"
    )
    pair_mode: str | None = _loss_option(
        "all | best-worst: the pairs of a list of k > 2 (pairwise losses, reward models)",
        "pair_mode",
    )
    gamma: float | None = _loss_option("target reward margin (simpo)", "gamma", ">= 0")
    label_smoothing: float | None = _loss_option(
        "conservative DPO's label smoothing", "label_smoothing", "[0, 0.5]"
    )
    pro_temperature: str | None = _loss_option(
        "pro: none | reward-gap (the released PRO code's)", "pro_temperature"
    )
    pro_sft_scale: str | None = _loss_option(
        "pro: none | n-1-squared (SFT weight x (n-1)^2 for n responses, the released code's; "
        "with --sft_reduction sum and --sft_weight 0.05 it is released PRO)",
        "pro_sft_scale",
    )
    ipo_log_ratio: str | None = _loss_option(
        "ipo: sequence (sum log-ratios, the paper as printed) | token (per-token means, TRL's "
        "loss_type ipo)",
        "ipo_log_ratio",
    )
    lipo_labels: str | None = _loss_option(
        "lipo: normalized (each list's scores mapped onto [0, 1]) | raw (scores as gains' "
        "labels as given)",
        "lipo_labels",
    )
    nca_alpha: float | None = _loss_option(
        "infonca, nca: temperature of the target softmax(scores / alpha) (1e-4, the released "
        "code's: near one-hot on the best response)",
        "nca_alpha",
        "> 0",
    )
    # reward models (bt-reward, preference)
    margin_mode: str = field(
        default="constant",
        metadata={"help": "bt-reward: constant (m) | score-gap (m * (s_w - s_l), Llama-2 style)"},
    )
    center_rewards_coefficient: float | None = field(
        default=None,
        metadata={
            "help": "bt-reward: add c * mean(r)^2 per list (TRL's c = 4x this)",
            "check": ">= 0",
        },
    )
    format: str = field(
        default="auto",
        metadata={"help": "bt-reward input text as `rm:` builds it: auto | chat | concat | pair"},
    )
    template: str | None = field(
        default=None,
        metadata={"help": "preference: template file with {context} {response_a} {response_b}"},
    )
    orders: str = field(
        default="random",
        metadata={"help": "preference: random (one seeded order per pair) | both (two examples)"},
    )
    # reference model (dpo, ipo, listwise-dpo, lipo, infonca, nca)
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
            "help": "prompt + response tokens (the RRHF paper used 192 on HH); reward models: "
            "input tokens (default 1024)",
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
    logps_chunk_size: int = field(
        default=1024,
        metadata={
            "help": "chunked log-probs: the output head runs on this many positions at a time "
            "(forward and backward), so the full tokens x vocabulary logits never exist; 0 = "
            "full logits. Plain-head models (llama, mistral, qwen2/3, gpt2), DDP/FSDP/ZeRO "
            "included; others (or a LoRA-wrapped head) use the full logits",
            "check": ">= 0",
        },
    )
    dtype: str = field(
        default="float32",
        metadata={"help": "weights dtype: float32 | bfloat16 (mixed precision: --bf16 true)"},
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "attention kernel: eager | sdpa | flex_attention | flash_attention_2 "
            "(default: transformers' choice, sdpa). flex_attention runs the packed scorer's "
            "block mask as a fused kernel, GPU only (torch has no CPU backward for it)"
        },
    )
    use_lora: bool = field(
        default=False, metadata={"help": "train LoRA adapters (PEFT) instead of every weight"}
    )
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
    trust_remote_code: bool = field(
        default=False, metadata={"help": "run the model repository's own Python code"}
    )
    allow_pickle: bool = field(default=False, metadata={"help": "allow .bin (pickle) checkpoints"})
    resume: bool = field(
        default=False, metadata={"help": "continue from the last checkpoint in output_dir"}
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "train into a non-empty output_dir, replacing its run (its checkpoints are "
            "removed first); without it (or --resume) a non-empty output_dir is refused"
        },
    )

    def __post_init__(self):
        if self.loss not in ALL_LOSSES:
            raise ValueError(f"unknown loss '{self.loss}' (choose from: {', '.join(ALL_LOSSES)})")
        checks = [
            ("pair_mode", self.pair_mode, (None, *PAIR_MODES)),
            ("margin_mode", self.margin_mode, MARGIN_MODES),
            ("format", self.format, ("auto", "chat", "concat", "pair")),
            ("chat_template", self.chat_template, ("auto", "always", "never")),
            ("orders", self.orders, ("random", "both")),
            ("empty_responses", self.empty_responses, ("error", "drop")),
        ]
        for name, value, allowed in checks:
            if value not in allowed:
                shown = ", ".join(a for a in allowed if a is not None)
                raise ValueError(f"{name} must be one of {shown}, got '{value}'")
        if not self.reward_model:
            for name, unset in REWARD_MODEL_OPTIONS.items():
                if getattr(self, name) != unset:
                    raise ValueError(f"{name} is a reward-model option (loss bt-reward/preference)")
        elif self.loss == "preference" and (
            self.margin or self.center_rewards_coefficient or self.format != "auto"
        ):
            raise ValueError("margin, center_rewards_coefficient and format are bt-reward options")
        elif self.loss == "bt-reward" and (self.template or self.orders != "random"):
            raise ValueError("template and orders are preference-model options")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            shown = ", ".join(a for a in ATTN_IMPLEMENTATIONS if a)
            raise ValueError(f"attn_implementation must be one of {shown}")
        if self.attn_implementation == "flex_attention" and not torch.cuda.is_available():
            raise ValueError("attn_implementation flex_attention trains only on a GPU")
        if self.reference not in ("precompute", "adapters-off"):
            raise ValueError(
                f"reference must be precompute or adapters-off, got '{self.reference}'"
            )
        if self.reference == "adapters-off" and not self.use_lora:
            raise ValueError("reference: adapters-off needs use_lora: true")

    @property
    def reward_model(self) -> bool:
        """Does this run train a reward / preference model (not a policy)?"""
        return self.loss in REWARD_MODEL_LOSSES

    def effective_loss_options(self) -> dict:
        """option -> the value this run uses: the one set, else the loss's default; None for
        options the loss does not take (`rankalign_config.yaml` records these)."""
        defaults = loss_defaults(self.loss)
        out = {}
        for name in LOSS_OPTIONS:
            value = getattr(self, name)
            out[name] = value if value is not None else defaults.get(name)
        return out

    def loss_kwargs(self) -> dict:
        """The loss function's keyword arguments; an option the loss does not take is an error."""
        if self.reward_model:
            accepted = {"margin", "pair_mode"}
        else:
            accepted = inspect.signature(L.LOSSES[self.loss]).parameters
        kwargs = {}
        for name, keyword in LOSS_OPTIONS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if keyword not in accepted:
                raise UserError(f"option '{name}' does not apply to loss '{self.loss}'", field=name)
            kwargs[keyword] = value
        return kwargs
