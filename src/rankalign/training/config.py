"""Options of `rankalign train` (one class for every loss: policy losses and reward models)
and the per-loss defaults.

The policy losses' options, their help, checks and defaults, and their learning rates come from
the loss specs (`losses.SPECS`, declared next to each loss function): the option names are the
functions' keyword arguments, the fields of `TrainConfig`, the YAML keys and the flags. The
reward models (bt-reward, preference) keep their own tables here. Every field is listed by
`rankalign train --help`; options that do not apply to the chosen loss are refused before any
work starts (`TrainConfig.loss_kwargs`, `__post_init__`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, make_dataclass

import torch

from rankalign import losses as L
from rankalign.errors import UserError
from rankalign.loss_spec import merged_options
from rankalign.losses import MARGIN_MODES
from rankalign.models import DTYPES
from rankalign.option_checks import check_choices, check_conflicts

REWARD_MODEL_LOSSES = ("bt-reward", "preference")
ALL_LOSSES = (*L.LOSSES, *REWARD_MODEL_LOSSES)
# None: transformers' default for the model (sdpa where it is supported)
ATTN_IMPLEMENTATIONS = (None, "eager", "sdpa", "flex_attention", "flash_attention_2")

# Loss hyperparameters: option name -> (its declaration, the policy losses that take it), from
# the specs. The name is the loss function's keyword, the field, the YAML key and the flag.
# Listed (fields, --help) from the most widely shared to the single-loss ones.
LOSS_OPTION_USERS = dict(sorted(merged_options(L.SPECS).items(), key=lambda item: -len(item[1][1])))
LOSS_OPTIONS = {name: option for name, (option, _) in LOSS_OPTION_USERS.items()}
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
    # each policy loss: the common defaults, its spec's learning rate and any other it declares
    **{
        name: {**COMMON_DEFAULTS, **spec.training_args, "learning_rate": spec.learning_rate}
        for name, spec in L.SPECS.items()
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
# what a loss option means for the reward models (added to its help)
REWARD_MODEL_OPTION_HELP = {"margin": "bt-reward: m in -log sigmoid(r_w - r_l - m)"}


def loss_defaults(loss: str) -> dict:
    """option -> the value a run of `loss` uses when the option is not set (the loss
    function's keyword default, losses.py); options the loss does not take are absent."""
    if loss in REWARD_MODEL_LOSS_DEFAULTS:
        return dict(REWARD_MODEL_LOSS_DEFAULTS[loss])
    return L.SPECS[loss].defaults()


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


def _loss_fields() -> list[tuple[str, type, object]]:
    """TrainConfig's loss hyperparameters, one per spec option: None until set, then the loss's
    default (shown in --help); typed by the functions' defaults; ranges and choices checked by
    the parser (option_checks.check_options)."""
    fields = []
    for name, option in LOSS_OPTIONS.items():
        kinds = {type(L.SPECS[loss].defaults()[name]) for loss in LOSS_OPTION_USERS[name][1]}
        if len(kinds) != 1:
            raise TypeError(f"loss option {name}: defaults of different types {kinds}")
        help_ = "; ".join(filter(None, (option.help, REWARD_MODEL_OPTION_HELP.get(name))))
        meta = {"help": f"{help_} ({loss_default_help(name)})"}
        meta |= {"check": option.check} if option.check else {}
        meta |= {"choices": option.choices} if option.choices else {}
        fields.append((name, kinds.pop() | None, field(default=None, metadata=meta)))
    return fields


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
class _TrainHead:
    """The first options of `rankalign train` (listed first in --help): data, model, loss."""

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
            "choices": ALL_LOSSES,
            "help": f"policy: {', '.join(L.LOSSES)}; reward model: bt-reward (Bradley-Terry "
            "scalar head) | preference (A/B preference model). The TrainingArguments defaults "
            "below are the chosen loss's (`--loss X --help` shows X's): "
            + _per_loss_text("learning_rate")
            + "; "
            + _per_loss_text("num_train_epochs")
            + " (default: rrhf)",
        },
    )


# the loss hyperparameters, one field per loss-spec option, listed after the loss in --help
_TrainLossOptions = make_dataclass("_TrainLossOptions", _loss_fields(), bases=(_TrainHead,))


@dataclass
class TrainConfig(_TrainLossOptions):
    """Options of `rankalign train`: policy losses and reward models (YAML keys = flags)."""

    # reward models (bt-reward, preference)
    margin_mode: str = field(
        default="constant",
        metadata={
            "help": "bt-reward: constant (m) | score-gap (m * (s_w - s_l), Llama-2 style)",
            "choices": MARGIN_MODES,
        },
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
        metadata={
            "help": "bt-reward input text as `rm:` builds it: auto | chat | concat | pair",
            "choices": ("auto", "chat", "concat", "pair"),
        },
    )
    template: str | None = field(
        default=None,
        metadata={"help": "preference: template file with {context} {response_a} {response_b}"},
    )
    orders: str = field(
        default="random",
        metadata={
            "help": "preference: random (one seeded order per pair) | both (two examples)",
            "choices": ("random", "both"),
        },
    )
    # reference model (the losses whose spec says needs_reference)
    ref_model: str | None = field(
        default=None, metadata={"help": "reference model; default: the initial policy"}
    )
    reference: str = field(
        default="precompute",
        metadata={
            "help": "precompute (one pass, cached on disk) | adapters-off (LoRA: the policy "
            "with adapters disabled)",
            "choices": ("precompute", "adapters-off"),
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
        default="auto",
        metadata={
            "help": "auto (message lists only) | always | never",
            "choices": ("auto", "always", "never"),
        },
    )
    drop_over_length: bool = field(
        default=False,
        metadata={"help": "drop lists that need truncation (counted) instead of truncating"},
    )
    empty_responses: str = field(
        default="error", metadata={"help": "error | drop", "choices": ("error", "drop")}
    )
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
    packed_prompt: bool | None = field(
        default=None,
        metadata={
            "help": "share the prompt by packing it and its responses into one sequence (block "
            "attention mask) instead of through the KV cache; unset (the default): packed when the "
            "attention packing adds is at most a fifth of the layers' matmul work (short lists, "
            "pairs), estimated once from the data; always packed under activation checkpointing",
            "conflicts": ("shared_prompt",),  # packing is a way of sharing the prompt
        },
    )
    logps_chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "chunked log-probs: the output head runs on this many positions at a time "
            "(forward and backward), so the full tokens x vocabulary logits never exist; default: "
            "from the vocabulary (128 MiB of fp32 logits: 512 positions at 49k, 256 at 128k); "
            "0 = full logits. Plain-head models (llama, mistral, qwen2/3, gpt2), DDP/FSDP/ZeRO "
            "included; others (or a LoRA-wrapped head) use the full logits",
            "check": ">= 0",
        },
    )
    dtype: str = field(
        default="float32",
        metadata={
            "help": "weights dtype: float32 | bfloat16 (mixed precision: --bf16 true)",
            "choices": tuple(DTYPES),
        },
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "attention kernel: eager | sdpa | flex_attention | flash_attention_2 "
            "(default: transformers' choice, sdpa). flex_attention runs the packed scorer's "
            "block mask as a fused kernel, GPU only (torch has no CPU backward for it)",
            "choices": ATTN_IMPLEMENTATIONS,
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
            "removed first); without it (or --resume) a non-empty output_dir is refused",
            "conflicts": ("resume",),
        },
    )

    def __post_init__(self):
        if self.loss not in ALL_LOSSES:
            raise ValueError(f"unknown loss '{self.loss}' (choose from: {', '.join(ALL_LOSSES)})")
        check_choices(self)  # every field's `choices` (loss options included)
        check_conflicts(self)  # e.g. overwrite and resume
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
        if self.attn_implementation == "flex_attention" and not torch.cuda.is_available():
            raise ValueError("attn_implementation flex_attention trains only on a GPU")
        if self.reference == "adapters-off" and not self.use_lora:
            raise ValueError("reference: adapters-off needs use_lora: true")

    @property
    def uses_scores(self) -> bool:
        """Do the rows need scores (every loss but those whose spec says not, e.g. sft)?"""
        return self.reward_model or L.SPECS[self.loss].uses_scores

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
        accepted = set(loss_defaults(self.loss))
        kwargs = {}
        for name in LOSS_OPTIONS:
            value = getattr(self, name)
            if value is None:
                continue
            if name not in accepted:
                raise UserError(f"option '{name}' does not apply to loss '{self.loss}'", field=name)
            kwargs[name] = value
        return kwargs
