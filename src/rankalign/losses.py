"""Ranking losses: every method is a pure function of per-response (B, K) tensors.

For a batch of B prompts with up to K responses each, the trainer computes per response the sum
of its token log-probs ``logp[b, i]`` and its token count ``lengths[b, i]`` and passes them, with
the rewards ``scores``, a validity ``mask`` and (where needed) reference log-probs, as a
:class:`LossInputs`. Each loss ``fn(inputs, **hyperparameters)`` returns ``(loss, parts)``: a
scalar (the mean over the B lists of a per-list loss) and a dict of detached scalar components.

Conventions shared by every loss:

* ``p_i = logp_i / lengths_i`` is the length-normalized log-prob (RRHF Eq. 1).
* A preference pair (i, j) means ``scores[i] > scores[j]`` strictly: ties never form a pair, and
  a tied response is never used as a negative for another. ``pair_mode="best-worst"`` keeps one
  pair per list (highest vs lowest score).
* The "best" response of a list is the first valid one with the highest score.
* Padded slots (``mask == False``) may hold anything, NaN included: inputs are sanitized with
  ``torch.where`` before any arithmetic, so they never reach the loss or its gradients.
* A list with no pair (e.g. all tied) adds 0 to the batch mean; nothing divides by zero.
* Computation is done in at least float32 (float64 inputs stay float64).

Methods: ``rrhf`` (RRHF paper Eq. 1-5), ``pro`` (thesis Eq. 15-18), ``listwise_dpo`` (thesis
Eq. 19-20), ``lipo`` (LiPO-lambda, Liu et al. 2024), ``infonca`` and ``nca`` (Chen et al. 2024),
``dpo`` (thesis Eq. 12), ``ipo`` (Azar et al. 2023), ``slic`` (thesis Eq. 14), ``simpo`` (Meng
et al. 2024), ``cpo`` (Xu et al. 2024), ``sft`` and ``raft`` (Dong et al. 2023); and for reward
models ``bradley_terry_loss`` (thesis Eq. 6-7).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "LOSSES",
    "MIN_RESPONSES",
    "NEEDS_REFERENCE",
    "LossFn",
    "LossInputs",
    "best_index",
    "cpo",
    "bradley_terry_loss",
    "dpo",
    "infonca",
    "ipo",
    "lipo",
    "listwise_dpo",
    "nca",
    "preference_pairs",
    "pro",
    "raft",
    "ranking_metrics",
    "rrhf",
    "sft",
    "simpo",
    "slic",
]

PAIR_MODES = ("all", "best-worst")
SFT_REDUCTIONS = ("mean", "sum")
PRO_SFT_SCALES = ("none", "n-1-squared")
IPO_LOG_RATIOS = ("sequence", "token")


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


class _Clean(NamedTuple):
    logp: torch.Tensor  # 0 in padded slots
    p: torch.Tensor  # logp / lengths, 0 in padded slots
    lengths: torch.Tensor  # 1 in padded slots
    scores: torch.Tensor  # 0 in padded slots
    mask: torch.Tensor
    ref_logp: torch.Tensor | None  # 0 in padded slots


def _clean(inputs: LossInputs, *, need_ref: bool = False, method: str = "") -> _Clean:
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
    return _Clean(clean_logp, clean_logp / lengths, lengths, scores, mask, ref)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def preference_pairs(scores: torch.Tensor, mask: torch.Tensor, mode: str = "all") -> torch.Tensor:
    """Bool (B, K, K): ``[b, i, j]`` True iff i and j are valid and ``scores[b, i] > scores[b, j]``.

    mode "all": every strictly ordered pair (ties give no pair).
    mode "best-worst": only (argmax valid score, argmin valid score) per list (first index on
    ties), and no pair when those two scores tie.
    """
    _check_choice("pair_mode", mode, PAIR_MODES)
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


def _pick(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b]] for each b."""
    return x.gather(1, index.unsqueeze(1)).squeeze(1)


def _pair_mean(values: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """(B,) per-list mean of values[b, i, j] over its pairs; 0 for a list without pairs."""
    total = torch.where(pairs, values, 0.0).sum(dim=(1, 2))
    return total / pairs.sum(dim=(1, 2)).clamp(min=1).to(values.dtype)


def _pair_diff(x: torch.Tensor) -> torch.Tensor:
    """(B, K, K) with [b, i, j] = x[b, i] - x[b, j]."""
    return x.unsqueeze(2) - x.unsqueeze(1)


def _plackett_luce(
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


def _parts(**values: torch.Tensor) -> dict[str, torch.Tensor]:
    return {name: v.mean().detach() for name, v in values.items()}


# ---------------------------------------------------------------------------------------------
# listwise losses


def rrhf(
    inputs: LossInputs,
    *,
    rank_weight: float = 1.0,
    margin: float = 0.0,
    sft_weight: float = 1.0,
    sft_reduction: str = "sum",
    pair_mode: str = "all",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """RRHF (Yuan et al. 2023, RRHF paper Eq. 1-5; thesis Eq. 13).

    ``p_i = logp_i / len_i`` (Eq. 1); per list
    ``L_rank = sum_{r_i > r_j} max(0, p_j - p_i + margin)`` (Eq. 2, which has margin 0: the paper's
    ``sum_{r_i < r_j} max(0, p_i - p_j)``); ``L_ft = -logp[i']`` with ``i' = argmax_i r_i``
    (Eq. 3-4), or the token mean ``-logp[i'] / len[i']`` with ``sft_reduction="mean"`` (divided
    by the best response's own length, not the padded length as in the released code).
    ``L = rank_weight * L_rank + sft_weight * L_ft`` (Eq. 5). Parts: "rank", "sft" (unweighted).
    """
    _check_choice("sft_reduction", sft_reduction, SFT_REDUCTIONS)
    x = _clean(inputs)
    pairs = preference_pairs(x.scores, x.mask, pair_mode)
    hinge = F.relu(margin - _pair_diff(x.p))  # [b, i, j] = max(0, p_j - p_i + margin)
    rank = torch.where(pairs, hinge, 0.0).sum(dim=(1, 2))
    best = best_index(x.scores, x.mask)
    sft_nll = -_pick(x.logp if sft_reduction == "sum" else x.p, best)
    loss = (rank_weight * rank + sft_weight * sft_nll).mean()
    return loss, _parts(rank=rank, sft=sft_nll)


def pro(
    inputs: LossInputs,
    *,
    sft_weight: float = 1.0,
    temperature: str = "none",
    sft_reduction: str = "mean",
    sft_scale: str = "none",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PRO, Preference Ranking Optimization (Song et al. 2023; thesis Eq. 15-18).

    With responses sorted by score and ``s = p`` (length-normalized log-prob), per list
    ``L_PRO = -sum_k log( exp(s_k) / (exp(s_k) + sum_{i: r_i < r_k} exp(s_i)) )`` over the k that
    have a strictly lower-scored response; for a strict ranking this is Eq. 18,
    ``-sum_{k=1}^{n-1} log(exp(s_k) / sum_{i>=k} exp(s_i))``. Computed with logsumexp.
    ``temperature="reward-gap"`` (released PRO code): in the k-th term each negative's score is
    multiplied by ``r_k - r_i`` and the positive's by ``max_i (r_k - r_i)``.
    ``L = L_PRO + sft_weight * L_SFT`` (Eq. 17) with ``L_SFT = -p_best`` (token-mean NLL,
    ``sft_reduction="mean"``) or ``-logp_best`` (summed NLL, ``"sum"``, the released code's), and
    ``sft_scale="n-1-squared"`` multiplies the SFT weight by ``(n - 1)^2`` for a list of n
    responses (the released code's ``sft_weight * (n - 1)^2``, i.e. the paper's beta = 0.05 (l-1)^2
    with sft_weight 0.05). Parts: "rank", "sft" (the unweighted NLL).
    """
    _check_choice("temperature", temperature, ("none", "reward-gap"))
    _check_choice("sft_reduction", sft_reduction, SFT_REDUCTIONS)
    _check_choice("sft_scale", sft_scale, PRO_SFT_SCALES)
    x = _clean(inputs)
    pairs = preference_pairs(x.scores, x.mask, "all")
    gaps = _pair_diff(x.scores) if temperature == "reward-gap" else None
    rank = _plackett_luce(x.p, pairs, gaps)
    best = best_index(x.scores, x.mask)
    sft_nll = -_pick(x.p if sft_reduction == "mean" else x.logp, best)
    weight = torch.full_like(sft_nll, sft_weight)
    if sft_scale == "n-1-squared":
        weight = weight * (x.mask.sum(dim=1).to(sft_nll.dtype) - 1) ** 2
    loss = (rank + weight * sft_nll).mean()
    return loss, _parts(rank=rank, sft=sft_nll)


def listwise_dpo(
    inputs: LossInputs, *, beta: float = 0.1
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Listwise DPO: Plackett-Luce over DPO's implicit rewards (thesis Eq. 19-20).

    ``u_i = beta * (logp_i - ref_logp_i)``; per list
    ``-sum_k log( exp(u_k) / (exp(u_k) + sum_{i: r_i < r_k} exp(u_i)) )``, i.e. the negative log
    of Eq. 20's product, whose k-th factor compares y_k against y_{k+1..n} (Eq. 20 as printed
    repeats y_1 in the numerator). Equals :func:`dpo` when k = 2. Parts: "rank".
    """
    x = _clean(inputs, need_ref=True, method="listwise-dpo")
    pairs = preference_pairs(x.scores, x.mask, "all")
    rank = _plackett_luce(beta * (x.logp - x.ref_logp), pairs)
    return rank.mean(), _parts(rank=rank)


# ---------------------------------------------------------------------------------------------
# listwise losses from learning-to-rank and noise-contrastive estimation

LIPO_LABELS = ("normalized", "raw")


def _list_labels(scores: torch.Tensor, mask: torch.Tensor, labels: str) -> torch.Tensor:
    """psi (B, K) for LiPO's gains: each list's scores min-max normalized to [0, 1] (a list whose
    scores are all equal gets 0), or the scores as given ("raw"); 0 in padded slots."""
    if labels == "raw":
        return torch.where(mask, scores, 0.0)
    low = torch.where(mask, scores, float("inf")).amin(dim=1, keepdim=True)
    high = torch.where(mask, scores, float("-inf")).amax(dim=1, keepdim=True)
    span = (high - low).clamp(min=torch.finfo(scores.dtype).tiny)
    psi = torch.where(high > low, (scores - low) / span, 0.0)
    return torch.where(mask, psi, 0.0)


def _ranks(s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, K) 1-based rank of each valid response when its list is sorted by s, descending (the
    first index first among equal s); padded slots rank after every valid one."""
    keyed = torch.where(mask, s, float("-inf"))
    order = torch.argsort(keyed, dim=1, descending=True, stable=True)
    return torch.argsort(order, dim=1, stable=True).to(s.dtype) + 1


def lipo(
    inputs: LossInputs, *, beta: float = 0.1, labels: str = "normalized"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """LiPO-lambda (Liu et al. 2024, "LiPO: Listwise Preference Optimization through
    Learning-to-Rank", arXiv 2402.01878, §4, the Lambda loss of LambdaMART / LambdaLoss).

    ``s_i = beta * (logp_i - ref_logp_i)``; per list
    ``L = -sum_{psi_i > psi_j} Delta_ij * log sigmoid(s_i - s_j)`` with the Lambda weight
    ``Delta_ij = |G_i - G_j| * |1 / D(tau_i) - 1 / D(tau_j)|``, gain ``G_i = 2^psi_i - 1``,
    discount ``D(tau) = log2(1 + tau)`` and ``tau_i`` the 1-based rank of y_i when the list is
    sorted by s, descending. Delta is a constant (no gradient through the gains or the ranks).
    The pairs are summed (not averaged) within a list, as in the paper; the batch loss is the
    mean over lists.

    ``psi`` are the list's labels. The paper's are in [0, 1] (each response's mean win
    probability within its list); rewards come on any scale (a reward model's logits, a judge's
    1-10), and the exponential gain 2^psi would make a reward's unit decide how much the top of
    a list matters. ``labels="normalized"`` (default) maps each list's scores linearly onto
    [0, 1] (best 1, worst 0): the order and the relative gaps within the list are kept, the
    unit is not; ``labels="raw"`` uses the scores as given (already in [0, 1], or a deliberate
    scale). With k = 2 every list has Delta = 1 - 1/log2(3), so LiPO-lambda is that constant
    times DPO with the same beta. Parts: "rank".
    """
    _check_choice("labels", labels, LIPO_LABELS)
    x = _clean(inputs, need_ref=True, method="lipo")
    s = beta * (x.logp - x.ref_logp)
    pairs = preference_pairs(x.scores, x.mask, "all")
    with torch.no_grad():
        gain = torch.pow(2.0, _list_labels(x.scores, x.mask, labels)) - 1
        inv_discount = 1 / torch.log2(1 + _ranks(s.detach(), x.mask))
        delta = _pair_diff(gain).abs() * _pair_diff(inv_discount).abs()
    rank = torch.where(pairs, -delta * F.logsigmoid(_pair_diff(s)), 0.0).sum(dim=(1, 2))
    return rank.mean(), _parts(rank=rank)


def _nca_targets(scores: torch.Tensor, mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """(B, K) target weights w = softmax(scores / alpha) over each list's valid responses."""
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    return torch.softmax(torch.where(mask, scores / alpha, float("-inf")), dim=1)


def infonca(
    inputs: LossInputs, *, beta: float = 0.1, alpha: float = 1e-4
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """InfoNCA (Chen et al. 2024, "Noise Contrastive Alignment of Language Models with Explicit
    Rewards", arXiv 2402.05369; released code thu-ml/Noise-Contrastive-Alignment, `nca_loss`).

    ``r_i = beta * (logp_i - ref_logp_i)`` (sequence sums), target ``w = softmax(scores / alpha)``
    over the list; per list ``L = -sum_i w_i log softmax_i(r)``: a cross-entropy between the
    reward-weighted target and the policy's implicit distribution over the k responses. A list
    without a preference pair (all scores tied) adds 0 (the shared convention). alpha -> 0 makes
    w one-hot on the best response; with k = 2 that is exactly DPO. alpha is on the rewards'
    scale; the default 1e-4 is the released code's (`NCAConfig.temperature_alpha`): a near
    one-hot target; a larger alpha spreads the target over the list by reward gaps.
    Parts: "rank".
    """
    x = _clean(inputs, need_ref=True, method="infonca")
    r = beta * (x.logp - x.ref_logp)
    w = _nca_targets(x.scores, x.mask, alpha)
    log_q = torch.log_softmax(torch.where(x.mask, r, float("-inf")), dim=1)
    has_pair = preference_pairs(x.scores, x.mask, "all").any(dim=(1, 2))
    rank = -torch.where(x.mask, w * log_q, 0.0).sum(dim=1)
    rank = torch.where(has_pair, rank, 0.0)
    return rank.mean(), _parts(rank=rank)


def nca(
    inputs: LossInputs, *, beta: float = 0.1, alpha: float = 1e-4
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """NCA (Chen et al. 2024, arXiv 2402.05369; released code's `nca_loss`).

    ``r_i = beta * (logp_i - ref_logp_i)``, ``w = softmax(scores / alpha)``; per list of k
    responses ``L = -sum_i [ w_i log sigmoid(r_i) + (1/k) log sigmoid(-r_i) ]``: each response's
    own implicit reward is pulled up by its target weight and every one is pushed down equally,
    so unlike InfoNCA the absolute likelihoods are anchored, not only their differences. With
    k = 2 and a one-hot w it is TRL's ``nca_pair``. A list without a preference pair adds 0.
    Parts: "rank".
    """
    x = _clean(inputs, need_ref=True, method="nca")
    r = beta * (x.logp - x.ref_logp)
    w = _nca_targets(x.scores, x.mask, alpha)
    k = x.mask.sum(dim=1, keepdim=True).clamp(min=1).to(r.dtype)
    terms = w * F.logsigmoid(r) + F.logsigmoid(-r) / k
    has_pair = preference_pairs(x.scores, x.mask, "all").any(dim=(1, 2))
    rank = torch.where(has_pair, -torch.where(x.mask, terms, 0.0).sum(dim=1), 0.0)
    return rank.mean(), _parts(rank=rank)


# ---------------------------------------------------------------------------------------------
# pairwise losses: per list, the MEAN over its preference pairs (w = i, l = j in pair [i, j])


def dpo(
    inputs: LossInputs,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    pair_mode: str = "all",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO (Rafailov et al. 2023; thesis Eq. 12).

    ``h = (logp_w - ref_w) - (logp_l - ref_l)``; pair loss ``-log sigmoid(beta * h)``. With
    ``label_smoothing = eps`` (conservative DPO, as TRL's sigmoid loss in its 0.x releases):
    ``-(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)``.
    Per list: mean over its preference pairs. Parts: "rank".
    """
    x = _clean(inputs, need_ref=True, method="dpo")
    pairs = preference_pairs(x.scores, x.mask, pair_mode)
    h = _pair_diff(x.logp - x.ref_logp)
    per_pair = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(
        -beta * h
    )
    rank = _pair_mean(per_pair, pairs)
    return rank.mean(), _parts(rank=rank)


def ipo(
    inputs: LossInputs, *, beta: float = 0.1, pair_mode: str = "all", log_ratio: str = "sequence"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IPO (Azar et al. 2023, Eq. 17): pair loss ``(h - 1 / (2 * beta))^2``.

    ``log_ratio="sequence"`` (default, the paper as printed): ``h = (logp_w - ref_w) -
    (logp_l - ref_l)`` on sequence sums. ``log_ratio="token"`` (TRL's ``loss_type="ipo"``, the form
    the IPO authors endorsed later): each response's log-ratio divided by its token count,
    ``h = (logp_w - ref_w) / len_w - (logp_l - ref_l) / len_l``. The target margin 1 / (2 beta)
    is then per token instead of per sequence, so the same beta is a very different
    regularisation strength in the two forms. Per list: mean over pairs. Parts: "rank".
    """
    if beta <= 0:
        raise ValueError(f"ipo needs beta > 0, got {beta}")
    _check_choice("log_ratio", log_ratio, IPO_LOG_RATIOS)
    x = _clean(inputs, need_ref=True, method="ipo")
    pairs = preference_pairs(x.scores, x.mask, pair_mode)
    ratio = x.logp - x.ref_logp
    h = _pair_diff(ratio / x.lengths if log_ratio == "token" else ratio)
    rank = _pair_mean((h - 1 / (2 * beta)) ** 2, pairs)
    return rank.mean(), _parts(rank=rank)


def slic(
    inputs: LossInputs,
    *,
    margin: float = 1.0,
    sft_weight: float = 0.1,
    pair_mode: str = "all",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SLiC-HF (Zhao et al. 2023; thesis Eq. 14).

    Pair loss ``max(0, margin - logp_w + logp_l)`` (sequence log-probs), averaged over the list's
    pairs, plus ``sft_weight * (-logp[best])`` with y_ref = the best-scored response.
    Parts: "rank", "sft".
    """
    x = _clean(inputs)
    pairs = preference_pairs(x.scores, x.mask, pair_mode)
    rank = _pair_mean(F.relu(margin - _pair_diff(x.logp)), pairs)
    sft_nll = -_pick(x.logp, best_index(x.scores, x.mask))
    loss = (rank + sft_weight * sft_nll).mean()
    return loss, _parts(rank=rank, sft=sft_nll)


def simpo(
    inputs: LossInputs,
    *,
    beta: float = 2.0,
    gamma: float = 0.5,
    pair_mode: str = "all",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SimPO (Meng et al. 2024): pair loss ``-log sigmoid(beta * (p_w - p_l) - gamma)``.

    Length-normalized log-probs, no reference model. Per list: mean over pairs. Parts: "rank".
    """
    x = _clean(inputs)
    pairs = preference_pairs(x.scores, x.mask, pair_mode)
    rank = _pair_mean(-F.logsigmoid(beta * _pair_diff(x.p) - gamma), pairs)
    return rank.mean(), _parts(rank=rank)


def cpo(
    inputs: LossInputs,
    *,
    beta: float = 0.1,
    sft_weight: float = 1.0,
    pair_mode: str = "all",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CPO (Xu et al. 2024): ``-log sigmoid(beta * (logp_w - logp_l))`` + NLL.

    Pair loss on sequence log-probs (DPO with a uniform reference), mean over the list's pairs,
    plus ``sft_weight * (-p_best)`` (token-mean NLL of the best response). Parts: "rank", "sft".
    """
    x = _clean(inputs)
    pairs = preference_pairs(x.scores, x.mask, pair_mode)
    rank = _pair_mean(-F.logsigmoid(beta * _pair_diff(x.logp)), pairs)
    sft_nll = -_pick(x.p, best_index(x.scores, x.mask))
    loss = (rank + sft_weight * sft_nll).mean()
    return loss, _parts(rank=rank, sft=sft_nll)


# ---------------------------------------------------------------------------------------------
# supervised losses


def sft(
    inputs: LossInputs, *, sft_reduction: str = "mean"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SFT: negative log-likelihood of every valid response (scores are ignored).

    Per list, ``"mean"``: token mean over the list, ``-sum_i logp_i / sum_i len_i``;
    ``"sum"``: mean over responses of the sequence NLL, ``-mean_i logp_i``. Parts: "sft".
    """
    _check_choice("sft_reduction", sft_reduction, SFT_REDUCTIONS)
    x = _clean(inputs)
    total = x.logp.sum(dim=1)
    if sft_reduction == "mean":
        denom = torch.where(x.mask, x.lengths, 0.0).sum(dim=1)
    else:
        denom = x.mask.sum(dim=1).to(total.dtype)
    nll = -total / denom.clamp(min=1)
    return nll.mean(), _parts(sft=nll)


def raft(
    inputs: LossInputs, *, sft_reduction: str = "mean"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """RAFT (Dong et al. 2023): SFT on the best-scored response of each list only.

    ``"mean"``: ``-logp[best] / len[best]``; ``"sum"``: ``-logp[best]``. Parts: "sft".
    """
    _check_choice("sft_reduction", sft_reduction, SFT_REDUCTIONS)
    x = _clean(inputs)
    nll = -_pick(x.p if sft_reduction == "mean" else x.logp, best_index(x.scores, x.mask))
    return nll.mean(), _parts(sft=nll)


# ---------------------------------------------------------------------------------------------
# metrics and registry


@torch.no_grad()
def ranking_metrics(inputs: LossInputs, pair_mode: str = "all") -> dict[str, torch.Tensor]:
    """How well the policy ranks the responses, over all preference pairs i > j in the batch.

    The policy's score is ``p = logp / lengths`` (RRHF's reward-model view, paper Sec. 4), or the
    implicit reward ``logp - ref_logp`` (without beta) when ``ref_logp`` is given.
    Returns "num_pairs" always, and, only when there is at least one pair, "rank_accuracy"
    (fraction of pairs with ``p_i > p_j``) and "reward_margin" (mean of ``p_i - p_j``).
    All values are detached scalar tensors.
    """
    x = _clean(inputs)
    pairs = preference_pairs(x.scores, x.mask, pair_mode)
    p = x.p if x.ref_logp is None else x.logp - x.ref_logp
    diff = _pair_diff(p)[pairs]
    out = {"num_pairs": torch.tensor(diff.numel(), device=p.device)}
    if diff.numel() > 0:
        out["rank_accuracy"] = (diff > 0).to(p.dtype).mean()
        out["reward_margin"] = diff.mean()
    return out


LOSSES: dict[str, LossFn] = {
    "rrhf": rrhf,
    "pro": pro,
    "listwise-dpo": listwise_dpo,
    "lipo": lipo,
    "infonca": infonca,
    "nca": nca,
    "dpo": dpo,
    "ipo": ipo,
    "slic": slic,
    "simpo": simpo,
    "cpo": cpo,
    "sft": sft,
    "raft": raft,
}

NEEDS_REFERENCE: frozenset[str] = frozenset(
    {"dpo", "ipo", "listwise-dpo", "lipo", "infonca", "nca"}
)

MIN_RESPONSES: dict[str, int] = {name: 1 if name in ("sft", "raft") else 2 for name in LOSSES}


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
