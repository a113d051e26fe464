"""Setting a training run up: model loading options, LoRA adapters, checks that the Trainer would
only make once running (report_to, optimizer, scheduler kwargs, eval data) and a meta-device
skeleton check of the model config, weights and LoRA options — all before any write.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from rankalign.errors import UserError
from rankalign.models import (
    check_weights_fit,
)


def load_options(cfg) -> dict:
    """`load_causal_lm` options of a TrainConfig."""
    return {
        "dtype": cfg.dtype,
        "trust_remote_code": cfg.trust_remote_code,
        "allow_pickle": cfg.allow_pickle,
        "attn_implementation": cfg.attn_implementation,
    }


def with_lora(model, cfg, task_type: str = "CAUSAL_LM"):
    """`model` with LoRA adapters when `cfg.use_lora` (cfg: TrainConfig).
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
    evaluation without data, the optimizer and its arguments, the learning-rate schedule and
    its kwargs (logging integrations: `check_report_to`, when the options are parsed)."""
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


# report_to integrations -> (modules, any of which is enough; what to pip install). The
# `logging` extra installs the two most used; the others are named as their packages.
REPORT_TO_PACKAGES = {
    "tensorboard": (("tensorboard", "tensorboardX"), "'rankalign[logging]'"),
    "wandb": (("wandb",), "'rankalign[logging]'"),
    "mlflow": (("mlflow",), "mlflow"),
    "comet_ml": (("comet_ml",), "comet-ml"),
    "neptune": (("neptune",), "neptune"),
    "clearml": (("clearml",), "clearml"),
    "dagshub": (("dagshub",), "dagshub"),
    "codecarbon": (("codecarbon",), "codecarbon"),
    "dvclive": (("dvclive",), "dvclive"),
    "swanlab": (("swanlab",), "swanlab"),
    "trackio": (("trackio",), "trackio"),
    "azure_ml": (("azureml",), "azureml-core"),
    "flyte": (("flytekit",), "flytekit"),
}


def check_report_to(args: TrainingArguments) -> None:
    """A logging integration (`--report_to tensorboard`) whose package is missing: one line with
    what to install, when the options are parsed (the Trainer would fail after outputs exist)."""
    import importlib.util

    from transformers.integrations import get_reporting_integration_callbacks

    names = [args.report_to] if isinstance(args.report_to, str) else list(args.report_to or [])
    names = [n for n in names if n not in ("none", "all")]  # "all": the installed ones
    for name in names:
        modules, pip = REPORT_TO_PACKAGES.get(name, ((), None))
        if modules and not any(importlib.util.find_spec(m) for m in modules):
            raise UserError(
                f"report_to {name}: the {modules[0]} package is not installed (pip install {pip})",
                field="report_to",
            )
    try:
        for callback in get_reporting_integration_callbacks(names):
            callback()  # the integration's own check (a version it cannot use, ...)
    except (ImportError, RuntimeError, ValueError) as e:
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise UserError(msg, field="report_to") from None


def check_model_skeleton(cfg, model_path: str) -> None:
    """Build the model's skeleton from its config on the meta device (no weights, no memory):
    a config that builds no model, weight files whose shapes do not fit it, and LoRA options
    that do not fit it all fail before anything is written."""
    if zero3_enabled() or cfg.trust_remote_code:
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


def keep_token_off_disk(args: TrainingArguments) -> None:
    """Move `--hub_token` into the environment, where huggingface_hub reads it when pushing:
    off `args`, it cannot reach training_args.bin in the output folder and every checkpoint."""
    if args.hub_token:
        os.environ["HF_TOKEN"], args.hub_token = args.hub_token, None


def zero3_enabled() -> bool:
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()
