"""The building blocks every loss of `losses.py` shares: the (B, K) inputs, their sanitizing,
preference pairs, Plackett-Luce, the ranking metrics the trainer logs, and the reward models'
Bradley-Terry loss (thesis Eq. 6-7). Torch only; the conventions are in `losses.py`'s docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

PAIR_MODES = ("all", "best-worst")


@dataclass
class LossInputs:
    """Per-response tensors of a batch of B ranked lists, padded to K responses.

    logp: (B, K) sum of token log-probs of each response under the policy.
    lengths: (B, K) token count of each response (>= 1 where valid).
    scores: (B, K) rewards, higher is better; ties allowed.
    mask: (B, K) bool, True where the response exists.
    ref_logp: (B, K) reference-model sum log-probs, for dpo / ipo / listwise-dpo.
    """

    logp: torch.Tensor
    lengths: torch.Tensor
    scores: torch.Tensor
    mask: torch.Tensor
    ref_logp: torch.Tensor | None = None


LossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]


# ---------------------------------------------------------------------------------------------
# shared helpers


class Clean(NamedTuple):
    logp: torch.Tensor  # 0 in padded slots
    p: torch.Tensor  # logp / lengths, 0 in padded slots
    lengths: torch.Tensor  # 1 in padded slots
    scores: torch.Tensor  # 0 in padded slots
    mask: torch.Tensor
    ref_logp: torch.Tensor | None  # 0 in padded slots


def clean(inputs: LossInputs, *, need_ref: bool = False, method: str = "") -> Clean:
    """Validate shapes and replace every padded slot by a harmless finite value."""
    logp, mask = inputs.logp, inputs.mask
    if logp.dim() != 2:
        raise ValueError(f"logp must have shape (B, K), got {tuple(logp.shape)}")
    names = {"lengths": inputs.lengths, "scores": inputs.scores, "mask": mask}
    if inputs.ref_logp is not None:
        names["ref_logp"] = inputs.ref_logp
    for name, t in names.items():
        if t.shape != logp.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, logp has {tuple(logp.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got {mask.dtype}")
    if need_ref and inputs.ref_logp is None:
        raise ValueError(f"loss '{method}' needs reference log-probs (LossInputs.ref_logp)")

    dtype = torch.promote_types(logp.dtype, torch.float32)
    mask = mask.to(logp.device)

    def fill(t: torch.Tensor, value: float) -> torch.Tensor:
        return torch.where(mask, t.to(device=logp.device, dtype=dtype), value)

    clean_logp = fill(logp, 0.0)
    lengths = fill(inputs.lengths, 1.0)
    scores = fill(inputs.scores, 0.0)
    ref = None if inputs.ref_logp is None else fill(inputs.ref_logp, 0.0)
    return Clean(clean_logp, clean_logp / lengths, lengths, scores, mask, ref)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def preference_pairs(scores: torch.Tensor, mask: torch.Tensor, mode: str = "all") -> torch.Tensor:
    """Bool (B, K, K): ``[b, i, j]`` True iff i and j are valid and ``scores[b, i] > scores[b, j]``.

    mode "all": every strictly ordered pair (ties give no pair).
    mode "best-worst": only (argmax valid score, argmin valid score) per list (first index on
    ties), and no pair when those two scores tie.
    """
    check_choice("pair_mode", mode, PAIR_MODES)
    mask = mask.bool()
    s = torch.where(mask, scores, 0)
    pairs = (s.unsqueeze(2) > s.unsqueeze(1)) & mask.unsqueeze(2) & mask.unsqueeze(1)
    if mode == "all":
        return pairs
    sf = scores.to(torch.promote_types(scores.dtype, torch.float32))
    best = torch.where(mask, sf, float("-inf")).argmax(dim=1)
    worst = torch.where(mask, sf, float("inf")).argmin(dim=1)
    rows = torch.arange(scores.shape[0], device=scores.device)
    only = torch.zeros_like(pairs)
    only[rows, best, worst] = pairs[rows, best, worst]
    return only


def best_index(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Long (B,): index of the highest-scored valid response (first on ties; 0 if none valid)."""
    sf = scores.to(torch.promote_types(scores.dtype, torch.float32))
    return torch.where(mask.bool(), sf, float("-inf")).argmax(dim=1)


def pick(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b]] for each b."""
    return x.gather(1, index.unsqueeze(1)).squeeze(1)


def pair_mean(values: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """(B,) per-list mean of values[b, i, j] over its pairs; 0 for a list without pairs."""
    total = torch.where(pairs, values, 0.0).sum(dim=(1, 2))
    return total / pairs.sum(dim=(1, 2)).clamp(min=1).to(values.dtype)


def pair_diff(x: torch.Tensor) -> torch.Tensor:
    """(B, K, K) with [b, i, j] = x[b, i] - x[b, j]."""
    return x.unsqueeze(2) - x.unsqueeze(1)


def plackett_luce(
    s: torch.Tensor, pairs: torch.Tensor, gaps: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,) per-list ``-sum_k log(exp(s_k) / (exp(s_k) + sum_{i: r_i < r_k} exp(s_i)))``.

    Only k with at least one strictly lower-scored response contribute. With ``gaps`` (the
    reward differences r_k - r_i), the k-th term uses s_i * gap for negatives and s_k * max gap
    for the positive (PRO code's reward-gap temperatures).
    """
    has_neg = pairs.any(dim=2)  # (B, K)
    neg = s.unsqueeze(1).expand_as(pairs)  # [b, k, i] = s_i
    pos = s
    if gaps is not None:
        neg = neg * gaps
        max_gap = torch.where(pairs, gaps, float("-inf")).amax(dim=2)
        pos = s * torch.where(has_neg, max_gap, 0.0)
    neg = torch.where(pairs, neg, float("-inf"))
    logits = torch.cat([pos.unsqueeze(2), neg], dim=2)  # positive first, then negatives
    term = torch.logsumexp(logits, dim=2) - pos  # -log softmax of the positive
    return torch.where(has_neg, term, 0.0).sum(dim=1)


def parts(**values: torch.Tensor) -> dict[str, torch.Tensor]:
    return {name: v.mean().detach() for name, v in values.items()}


@torch.no_grad()
def ranking_metrics(inputs: LossInputs, pair_mode: str = "all") -> dict[str, torch.Tensor]:
    """How well the policy ranks the responses, over all preference pairs i > j in the batch.

    The policy's score is ``p = logp / lengths`` (RRHF's reward-model view, paper Sec. 4), or the
    implicit reward ``logp - ref_logp`` (without beta) when ``ref_logp`` is given.
    Returns "num_pairs" always, and, only when there is at least one pair, "rank_accuracy"
    (fraction of pairs with ``p_i > p_j``) and "reward_margin" (mean of ``p_i - p_j``).
    All values are detached scalar tensors.
    """
    x = clean(inputs)
    pairs = preference_pairs(x.scores, x.mask, pair_mode)
    p = x.p if x.ref_logp is None else x.logp - x.ref_logp
    diff = pair_diff(p)[pairs]
    out = {"num_pairs": torch.tensor(diff.numel(), device=p.device)}
    if diff.numel() > 0:
        out["rank_accuracy"] = (diff > 0).to(p.dtype).mean()
        out["reward_margin"] = diff.mean()
    return out


MARGIN_MODES = ("constant", "score-gap")


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
