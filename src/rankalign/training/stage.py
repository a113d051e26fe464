"""`rankalign train`: one command, a pluggable loss over ranked lists.

    rankalign train --config run.yaml --loss rrhf --data lists.jsonl --output_dir runs/rrhf

Policy losses (rrhf, pro, listwise-dpo, dpo, ...) train the policy (`training/policy.py`): for each
batch of lists the trainer computes logp[b, i] and len[b, i] (logprobs.py) and calls the loss
(losses.py). `--loss bt-reward | preference` trains a reward / preference model instead
(`training/reward_model.py`). Everything else — accumulation, schedules, precision, checkpoints,
resume, logging, distributed launch — is transformers' Trainer driven by TrainingArguments, so
every `TrainingArguments` flag works here too.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainingArguments

from rankalign.config import parse_config, peek_option
from rankalign.errors import UserError
from rankalign.training.config import TrainConfig, defaults_for
from rankalign.training.policy import train_policy
from rankalign.training.reward_model import train_preference_model, train_reward_model
from rankalign.training.setup import check_report_to, keep_token_off_disk
from rankalign.training.trainers import sampling_strategy


def parse_args(
    argv: list[str], options: dict | None = None
) -> tuple[TrainConfig, TrainingArguments]:
    """argv (flags, `--config FILE`) and `options` (Python keyword arguments) -> the run's
    TrainConfig and TrainingArguments, every value checked."""
    # the per-loss defaults (config.LOSS_DEFAULTS) need the loss name before the full parse
    loss = (options or {}).get("loss") or peek_option(argv, "loss") or "rrhf"
    cfg, args, _ = parse_config(
        argv,
        (TrainConfig, TrainingArguments),
        prog="rankalign train",
        defaults=defaults_for(str(loss)),
        options=options,
    )
    keep_token_off_disk(args)
    check_report_to(args)
    if args.remove_unused_columns:
        # the collators read our tokenized columns (prompt_ids, response_ids, ...), which the
        # Trainer would drop as "unused" by the model's forward
        raise UserError(
            "remove_unused_columns must be false for rankalign's datasets (its default here)",
            field="remove_unused_columns",
        )
    if not cfg.data:
        raise UserError("no training data: pass --data FILE (or `data:` in the config)")
    cfg.loss_kwargs()  # options that do not apply to the loss fail before any work starts
    if not cfg.reward_model and sampling_strategy(args) == "batch_rebalance":
        raise UserError(
            "train_sampling_strategy batch_rebalance is not supported for ranked lists; "
            "use group_by_length",
            field="train_sampling_strategy",
        )
    if args.output_dir is None or args.output_dir == "trainer_output":
        args.output_dir = str(Path("runs") / cfg.loss)
    return cfg, args


def run(cfg: TrainConfig, args: TrainingArguments) -> dict:
    """Train (a policy, or a reward / preference model) and save; returns the summary."""
    if cfg.loss == "bt-reward":
        return train_reward_model(cfg, args)
    if cfg.loss == "preference":
        return train_preference_model(cfg, args)
    return train_policy(cfg, args)
