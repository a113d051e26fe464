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

The shared building blocks (inputs, pairs, Plackett-Luce, ranking metrics) and the reward
models' ``bradley_terry_loss`` (thesis Eq. 6-7) live in ``loss_core`` and are re-exported here.

Each loss is registered by ``@_loss(name, learning_rate, *options)`` right above its
function: a :class:`~rankalign.loss_spec.LossSpec` (options, reference, minimum k, scores,
learning rate). ``LOSSES``, ``NEEDS_REFERENCE``, ``MIN_RESPONSES``, the train command's loss
options and defaults, and the loss table (``python -m rankalign.losses``) are derived from them:
adding a loss is one function, its spec and its tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rankalign.loss_core import (
    MARGIN_MODES,
    PAIR_MODES,
    LossFn,
    LossInputs,
    best_index,
    bradley_terry_loss,
    check_choice,
    clean,
    pair_diff,
    pair_mean,
    parts,
    pick,
    plackett_luce,
    preference_pairs,
    ranking_metrics,
)
from rankalign.loss_spec import LossSpec, Option, loss_table

__all__ = [
    "LOSSES",
    "MARGIN_MODES",
    "PAIR_MODES",
    "MIN_RESPONSES",
    "NEEDS_REFERENCE",
    "SPECS",
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

SFT_REDUCTIONS = ("mean", "sum")
PRO_SFT_SCALES = ("none", "n-1-squared")
PRO_TEMPERATURES = ("none", "reward-gap")
IPO_LOG_RATIOS = ("sequence", "token")
LIPO_LABELS = ("normalized", "raw")

# Options shared by several losses: one declaration, one meaning (loss_spec.merged_options).
BETA = Option(
    "beta", "inverse temperature of the implicit reward (dpo family; simpo's reward scale)", "> 0"
)
MARGIN = Option("margin", "rrhf: margin in the ranking hinge; slic: hinge margin", ">= 0")
SFT_WEIGHT = Option("sft_weight", "weight of the SFT term", ">= 0")
SFT_REDUCTION = Option(
    "sft_reduction", "sum | mean: the SFT term over the response's tokens", None, SFT_REDUCTIONS
)
PAIR_MODE = Option(
    "pair_mode",
    "all | best-worst: the pairs of a list of k > 2 (pairwise losses, reward models)",
    None,
    PAIR_MODES,
)
NCA_ALPHA = Option(
    "nca_alpha",
    "infonca, nca: temperature of the target softmax(scores / alpha) (1e-4, the released "
    "code's: near one-hot on the best response)",
    "> 0",
)
# learning rates from the papers: RRHF §4.1 2e-5 (its SFT-like relatives too); DPO 1e-6 (its
# successors use the same order of magnitude)
LR_RRHF, LR_DPO = 2e-5, 1e-6

SPECS: dict[str, LossSpec] = {}


def _loss(name: str, learning_rate: float, *options: Option, **spec):
    """Register the decorated function as loss `name`, trained at `learning_rate`, whose keyword
    arguments are `options`; `spec`: the other fields of loss_spec.LossSpec."""

    def register(fn):
        if name in SPECS:
            raise ValueError(f"loss '{name}' registered twice")
        SPECS[name] = LossSpec(
            name=name, fn=fn, learning_rate=learning_rate, options=options, **spec
        )
        return fn

    return register


# ---------------------------------------------------------------------------------------------
# listwise losses


RANK_WEIGHT = Option("rank_weight", "weight of the ranking term", ">= 0")


@_loss("rrhf", LR_RRHF, RANK_WEIGHT, MARGIN, SFT_WEIGHT, SFT_REDUCTION, PAIR_MODE)
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
    check_choice("sft_reduction", sft_reduction, SFT_REDUCTIONS)
    x = clean(inputs)
    pairs = preference_pairs(x.scores, x.mask, pair_mode)
    hinge = F.relu(margin - pair_diff(x.p))  # [b, i, j] = max(0, p_j - p_i + margin)
    rank = torch.where(pairs, hinge, 0.0).sum(dim=(1, 2))
    best = best_index(x.scores, x.mask)
    sft_nll = -pick(x.logp if sft_reduction == "sum" else x.p, best)
    loss = (rank_weight * rank + sft_weight * sft_nll).mean()
    return loss, parts(rank=rank, sft=sft_nll)


PRO_TEMPERATURE = Option(
    "pro_temperature", "pro: none | reward-gap (the released PRO code's)", None, PRO_TEMPERATURES
)
PRO_SFT_SCALE = Option(
    "pro_sft_scale",
    "pro: none | n-1-squared (SFT weight x (n-1)^2 for n responses, the released code's; "
    "with --sft_reduction sum and --sft_weight 0.05 it is released PRO)",
    None,
    PRO_SFT_SCALES,
)


@_loss("pro", LR_RRHF, SFT_WEIGHT, PRO_TEMPERATURE, SFT_REDUCTION, PRO_SFT_SCALE)
def pro(
    inputs: LossInputs,
    *,
    sft_weight: float = 1.0,
    pro_temperature: str = "none",
    sft_reduction: str = "mean",
    pro_sft_scale: str = "none",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PRO, Preference Ranking Optimization (Song et al. 2023; thesis Eq. 15-18).

    With responses sorted by score and ``s = p`` (length-normalized log-prob), per list
    ``L_PRO = -sum_k log( exp(s_k) / (exp(s_k) + sum_{i: r_i < r_k} exp(s_i)) )`` over the k that
    have a strictly lower-scored response; for a strict ranking this is Eq. 18,
    ``-sum_{k=1}^{n-1} log(exp(s_k) / sum_{i>=k} exp(s_i))``. Computed with logsumexp.
    ``pro_temperature="reward-gap"`` (released PRO code): in the k-th term each negative's score is
    multiplied by ``r_k - r_i`` and the positive's by ``max_i (r_k - r_i)``.
    ``L = L_PRO + sft_weight * L_SFT`` (Eq. 17) with ``L_SFT = -p_best`` (token-mean NLL,
    ``sft_reduction="mean"``) or ``-logp_best`` (summed NLL, ``"sum"``, the released code's), and
    ``pro_sft_scale="n-1-squared"`` multiplies the SFT weight by ``(n - 1)^2`` for a list of n
    responses (the released code's ``sft_weight * (n - 1)^2``, i.e. the paper's beta = 0.05 (l-1)^2
    with sft_weight 0.05). Parts: "rank", "sft" (the unweighted NLL).
    """
    check_choice("pro_temperature", pro_temperature, PRO_TEMPERATURES)
    check_choice("sft_reduction", sft_reduction, SFT_REDUCTIONS)
    check_choice("pro_sft_scale", pro_sft_scale, PRO_SFT_SCALES)
    x = clean(inputs)
    pairs = preference_pairs(x.scores, x.mask, "all")
    gaps = pair_diff(x.scores) if pro_temperature == "reward-gap" else None
    rank = plackett_luce(x.p, pairs, gaps)
    best = best_index(x.scores, x.mask)
    sft_nll = -pick(x.p if sft_reduction == "mean" else x.logp, best)
    weight = torch.full_like(sft_nll, sft_weight)
    if pro_sft_scale == "n-1-squared":
        weight = weight * (x.mask.sum(dim=1).to(sft_nll.dtype) - 1) ** 2
    loss = (rank + weight * sft_nll).mean()
    return loss, parts(rank=rank, sft=sft_nll)


@_loss("listwise-dpo", LR_DPO, BETA, needs_reference=True)
def listwise_dpo(
    inputs: LossInputs, *, beta: float = 0.1
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Listwise DPO: Plackett-Luce over DPO's implicit rewards (thesis Eq. 19-20).

    ``u_i = beta * (logp_i - ref_logp_i)``; per list
    ``-sum_k log( exp(u_k) / (exp(u_k) + sum_{i: r_i < r_k} exp(u_i)) )``, i.e. the negative log
    of Eq. 20's product, whose k-th factor compares y_k against y_{k+1..n} (Eq. 20 as printed
    repeats y_1 in the numerator). Equals :func:`dpo` when k = 2. Parts: "rank".
    """
    x = clean(inputs, need_ref=True, method="listwise-dpo")
    pairs = preference_pairs(x.scores, x.mask, "all")
    rank = plackett_luce(beta * (x.logp - x.ref_logp), pairs)
    return rank.mean(), parts(rank=rank)


# ---------------------------------------------------------------------------------------------
# listwise losses from learning-to-rank and noise-contrastive estimation


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


LIPO_LABELS_OPTION = Option(
    "lipo_labels",
    "lipo: normalized (each list's scores mapped onto [0, 1]) | raw (scores as gains' labels "
    "as given)",
    None,
    LIPO_LABELS,
)


@_loss("lipo", LR_DPO, BETA, LIPO_LABELS_OPTION, needs_reference=True)
def lipo(
    inputs: LossInputs, *, beta: float = 0.1, lipo_labels: str = "normalized"
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
    a list matters. ``lipo_labels="normalized"`` (default) maps each list's scores linearly onto
    [0, 1] (best 1, worst 0): the order and the relative gaps within the list are kept, the
    unit is not; ``lipo_labels="raw"`` uses the scores as given (already in [0, 1], or a deliberate
    scale). With k = 2 every list has Delta = 1 - 1/log2(3), so LiPO-lambda is that constant
    times DPO with the same beta. Parts: "rank".
    """
    check_choice("lipo_labels", lipo_labels, LIPO_LABELS)
    x = clean(inputs, need_ref=True, method="lipo")
    s = beta * (x.logp - x.ref_logp)
    pairs = preference_pairs(x.scores, x.mask, "all")
    with torch.no_grad():
        gain = torch.pow(2.0, _list_labels(x.scores, x.mask, lipo_labels)) - 1
        inv_discount = 1 / torch.log2(1 + _ranks(s.detach(), x.mask))
        delta = pair_diff(gain).abs() * pair_diff(inv_discount).abs()
    rank = torch.where(pairs, -delta * F.logsigmoid(pair_diff(s)), 0.0).sum(dim=(1, 2))
    return rank.mean(), parts(rank=rank)


def _nca_targets(scores: torch.Tensor, mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """(B, K) target weights w = softmax(scores / alpha) over each list's valid responses."""
    if alpha <= 0:
        raise ValueError(f"nca_alpha must be > 0, got {alpha}")
    return torch.softmax(torch.where(mask, scores / alpha, float("-inf")), dim=1)


@_loss("infonca", LR_DPO, BETA, NCA_ALPHA, needs_reference=True)
def infonca(
    inputs: LossInputs, *, beta: float = 0.1, nca_alpha: float = 1e-4
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
    x = clean(inputs, need_ref=True, method="infonca")
    r = beta * (x.logp - x.ref_logp)
    w = _nca_targets(x.scores, x.mask, nca_alpha)
    log_q = torch.log_softmax(torch.where(x.mask, r, float("-inf")), dim=1)
    has_pair = preference_pairs(x.scores, x.mask, "all").any(dim=(1, 2))
    rank = -torch.where(x.mask, w * log_q, 0.0).sum(dim=1)
    rank = torch.where(has_pair, rank, 0.0)
    return rank.mean(), parts(rank=rank)


@_loss("nca", LR_DPO, BETA, NCA_ALPHA, needs_reference=True)
def nca(
    inputs: LossInputs, *, beta: float = 0.1, nca_alpha: float = 1e-4
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """NCA (Chen et al. 2024, arXiv 2402.05369; released code's `nca_loss`).

    ``r_i = beta * (logp_i - ref_logp_i)``, ``w = softmax(scores / alpha)``; per list of k
    responses ``L = -sum_i [ w_i log sigmoid(r_i) + (1/k) log sigmoid(-r_i) ]``: each response's
    own implicit reward is pulled up by its target weight and every one is pushed down equally,
    so unlike InfoNCA the absolute likelihoods are anchored, not only their differences. With
    k = 2 and a one-hot w it is TRL's ``nca_pair``. A list without a preference pair adds 0.
    Parts: "rank".
    """
    x = clean(inputs, need_ref=True, method="nca")
    r = beta * (x.logp - x.ref_logp)
    w = _nca_targets(x.scores, x.mask, nca_alpha)
    k = x.mask.sum(dim=1, keepdim=True).clamp(min=1).to(r.dtype)
    terms = w * F.logsigmoid(r) + F.logsigmoid(-r) / k
    has_pair = preference_pairs(x.scores, x.mask, "all").any(dim=(1, 2))
    rank = torch.where(has_pair, -torch.where(x.mask, terms, 0.0).sum(dim=1), 0.0)
    return rank.mean(), parts(rank=rank)


# ---------------------------------------------------------------------------------------------
# pairwise losses: per list, the MEAN over its preference pairs (w = i, l = j in pair [i, j])


LABEL_SMOOTHING = Option("label_smoothing", "conservative DPO's label smoothing", "[0, 0.5]")


@_loss("dpo", LR_DPO, BETA, LABEL_SMOOTHING, PAIR_MODE, needs_reference=True)
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
    x = clean(inputs, need_ref=True, method="dpo")
    pairs = preference_pairs(x.scores, x.mask, pair_mode)
    h = pair_diff(x.logp - x.ref_logp)
    per_pair = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(
        -beta * h
    )
    rank = pair_mean(per_pair, pairs)
    return rank.mean(), parts(rank=rank)


IPO_LOG_RATIO = Option(
    "ipo_log_ratio",
    "ipo: sequence (sum log-ratios, the paper as printed) | token (per-token means, TRL's "
    "loss_type ipo)",
    None,
    IPO_LOG_RATIOS,
)


@_loss("ipo", LR_DPO, BETA, PAIR_MODE, IPO_LOG_RATIO, needs_reference=True)
def ipo(
    inputs: LossInputs,
    *,
    beta: float = 0.1,
    pair_mode: str = "all",
    ipo_log_ratio: str = "sequence",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IPO (Azar et al. 2023, Eq. 17): pair loss ``(h - 1 / (2 * beta))^2``.

    ``ipo_log_ratio="sequence"`` (default, the paper as printed): ``h = (logp_w - ref_w) -
    (logp_l - ref_l)`` on sequence sums. ``ipo_log_ratio="token"`` (TRL's ``loss_type="ipo"``, the form
    the IPO authors endorsed later): each response's log-ratio divided by its token count,
    ``h = (logp_w - ref_w) / len_w - (logp_l - ref_l) / len_l``. The target margin 1 / (2 beta)
    is then per token instead of per sequence, so the same beta is a very different
    regularisation strength in the two forms. Per list: mean over pairs. Parts: "rank".
    """
    if beta <= 0:
        raise ValueError(f"ipo needs beta > 0, got {beta}")
    check_choice("ipo_log_ratio", ipo_log_ratio, IPO_LOG_RATIOS)
    x = clean(inputs, need_ref=True, method="ipo")
    pairs = preference_pairs(x.scores, x.mask, pair_mode)
    ratio = x.logp - x.ref_logp
    h = pair_diff(ratio / x.lengths if ipo_log_ratio == "token" else ratio)
    rank = pair_mean((h - 1 / (2 * beta)) ** 2, pairs)
    return rank.mean(), parts(rank=rank)


@_loss("slic", LR_DPO, MARGIN, SFT_WEIGHT, PAIR_MODE)
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
    x = clean(inputs)
    pairs = preference_pairs(x.scores, x.mask, pair_mode)
    rank = pair_mean(F.relu(margin - pair_diff(x.logp)), pairs)
    sft_nll = -pick(x.logp, best_index(x.scores, x.mask))
    loss = (rank + sft_weight * sft_nll).mean()
    return loss, parts(rank=rank, sft=sft_nll)


GAMMA = Option("gamma", "target reward margin (simpo)", ">= 0")


@_loss("simpo", LR_DPO, BETA, GAMMA, PAIR_MODE)
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
    x = clean(inputs)
    pairs = preference_pairs(x.scores, x.mask, pair_mode)
    rank = pair_mean(-F.logsigmoid(beta * pair_diff(x.p) - gamma), pairs)
    return rank.mean(), parts(rank=rank)


@_loss("cpo", LR_DPO, BETA, SFT_WEIGHT, PAIR_MODE)
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
    x = clean(inputs)
    pairs = preference_pairs(x.scores, x.mask, pair_mode)
    rank = pair_mean(-F.logsigmoid(beta * pair_diff(x.logp)), pairs)
    sft_nll = -pick(x.p, best_index(x.scores, x.mask))
    loss = (rank + sft_weight * sft_nll).mean()
    return loss, parts(rank=rank, sft=sft_nll)


# ---------------------------------------------------------------------------------------------
# supervised losses


@_loss("sft", LR_RRHF, SFT_REDUCTION, min_responses=1, uses_scores=False)
def sft(
    inputs: LossInputs, *, sft_reduction: str = "mean"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SFT: negative log-likelihood of every valid response (scores are ignored).

    Per list, ``"mean"``: token mean over the list, ``-sum_i logp_i / sum_i len_i``;
    ``"sum"``: mean over responses of the sequence NLL, ``-mean_i logp_i``. Parts: "sft".
    """
    check_choice("sft_reduction", sft_reduction, SFT_REDUCTIONS)
    x = clean(inputs)
    total = x.logp.sum(dim=1)
    if sft_reduction == "mean":
        denom = torch.where(x.mask, x.lengths, 0.0).sum(dim=1)
    else:
        denom = x.mask.sum(dim=1).to(total.dtype)
    nll = -total / denom.clamp(min=1)
    return nll.mean(), parts(sft=nll)


@_loss("raft", LR_RRHF, SFT_REDUCTION, min_responses=1)
def raft(
    inputs: LossInputs, *, sft_reduction: str = "mean"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """RAFT (Dong et al. 2023): SFT on the best-scored response of each list only.

    ``"mean"``: ``-logp[best] / len[best]``; ``"sum"``: ``-logp[best]``. Parts: "sft".
    """
    check_choice("sft_reduction", sft_reduction, SFT_REDUCTIONS)
    x = clean(inputs)
    nll = -pick(x.p if sft_reduction == "mean" else x.logp, best_index(x.scores, x.mask))
    return nll.mean(), parts(sft=nll)


# derived from the specs (one per loss, in registration order)
LOSSES: dict[str, LossFn] = {name: spec.fn for name, spec in SPECS.items()}
NEEDS_REFERENCE: frozenset[str] = frozenset(n for n, s in SPECS.items() if s.needs_reference)
MIN_RESPONSES: dict[str, int] = {name: spec.min_responses for name, spec in SPECS.items()}


if __name__ == "__main__":  # the loss table of docs/design.md §4, from the specs
    print(loss_table(SPECS))
