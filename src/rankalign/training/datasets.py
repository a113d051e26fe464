"""Rows -> training examples: tokenized ranked lists for the policy losses (`tokenize_lists`),
(chosen, rejected) pairs for the Bradley-Terry reward model and A/B prompts for the preference
model, with their collators. Every filter is counted in the data report.
"""

from __future__ import annotations

import random

import torch

from rankalign.data import load_lists
from rankalign.errors import UserError
from rankalign.logprobs import ListDataset
from rankalign.losses import preference_pairs
from rankalign.reward_inputs import (
    answer_tokens,
    encode_rm_input,
    preference_ids,
    preference_prompt,
)
from rankalign.tokenization import encode_list
from rankalign.training.config import TrainConfig


def tokenize_lists(
    path: str, tokenizer, cfg: TrainConfig, *, min_responses: int
) -> tuple[ListDataset, dict]:
    loaded = load_lists(
        path,
        require_scores=cfg.uses_scores,
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


def _load(path: str, cfg: TrainConfig, *, min_responses: int = 2):
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


def build_bt_dataset(path: str, tokenizer, cfg: TrainConfig) -> tuple[ListDataset, dict]:
    """One item per ranked list: the encoded input of each response and its score."""
    loaded = _load(path, cfg)
    report, items = loaded.report, []
    for row in loaded.rows:
        if not _list_pairs(row["scores"], cfg.pair_mode or "all"):
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


def _finish(items: list[dict], report, path: str) -> tuple[ListDataset, dict]:
    report.rows_kept = len(items)
    if not items:
        raise UserError(f"no training examples left ({report.summary()})", file=path)
    return ListDataset(items), report.as_dict() | {"summary": report.summary()}


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


def build_preference_dataset(
    path: str, tokenizer, cfg: TrainConfig, template: str, seed: int
) -> tuple[ListDataset, dict]:
    """One example per ordered pair (better, worse) of a list, in a random order (seeded by
    seed, row id and the pair, so it does not depend on the file order), or in both orders."""
    loaded = _load(path, cfg)
    report, items = loaded.report, []
    tok_a, tok_b = answer_tokens(tokenizer)
    for row in loaded.rows:
        pairs = _list_pairs(row["scores"], cfg.pair_mode or "all")
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
