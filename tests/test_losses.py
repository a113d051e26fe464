"""Tests for rankalign.losses against formulas recomputed here with plain Python floats."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from conftest import require

from rankalign.losses import (
    LOSSES,
    MIN_RESPONSES,
    NEEDS_REFERENCE,
    LossInputs,
    best_index,
    dpo,
    listwise_dpo,
    preference_pairs,
    pro,
    raft,
    ranking_metrics,
    rrhf,
)

NAN = float("nan")

# ---------------------------------------------------------------------------------------------
# data: each list is a list of responses (logp, length, score, ref_logp)

FIXED = [
    # k=4, strict ranking
    [(-4.0, 2, 1.0, -4.5), (-6.0, 3, 3.0, -5.0), (-3.0, 4, 2.0, -3.5), (-8.0, 5, 0.5, -7.0)],
    # k=3 with a tie at the top
    [(-2.0, 1, 0.2, -2.2), (-3.5, 2, 0.2, -3.0), (-1.0, 2, -1.0, -1.5)],
    # k=2
    [(-7.0, 6, -0.3, -6.0), (-2.5, 2, 0.7, -3.0)],
    # k=3, all tied: no pair
    [(-1.5, 3, 1.0, -1.0), (-2.5, 1, 1.0, -2.0), (-0.5, 2, 1.0, -0.7)],
    # k=4 with a tie in the middle and at the bottom
    [(-5.0, 5, 2.0, -5.5), (-1.2, 3, 1.0, -1.0), (-2.2, 4, 1.0, -2.0), (-9.0, 3, -2.0, -8.0)],
]


def random_lists(seed: int, n: int = 6, kmax: int = 4) -> list:
    rng = random.Random(seed)
    lists = []
    for _ in range(n):
        k = rng.randint(2, kmax)
        lists.append(
            [
                (
                    -rng.uniform(0.5, 12.0),
                    rng.randint(1, 9),
                    float(rng.choice([-1, 0, 1, 2, 3])),  # small set: ties happen
                    -rng.uniform(0.5, 12.0),
                )
                for _ in range(k)
            ]
        )
    return lists


def make(lists, kmax=None, dtype=torch.float64, garbage=NAN, requires_grad=False) -> LossInputs:
    """Pad lists to K responses; padded slots get NaN (or other garbage) everywhere."""
    K = kmax or max(len(x) for x in lists)
    logp, lengths, scores, ref, mask = [], [], [], [], []
    for resp in lists:
        pad = K - len(resp)
        logp.append([r[0] for r in resp] + [garbage] * pad)
        lengths.append([r[1] for r in resp] + [0] * pad)
        scores.append([r[2] for r in resp] + [garbage] * pad)
        ref.append([r[3] for r in resp] + [garbage] * pad)
        mask.append([True] * len(resp) + [False] * pad)
    return LossInputs(
        logp=torch.tensor(logp, dtype=dtype, requires_grad=requires_grad),
        lengths=torch.tensor(lengths),
        scores=torch.tensor(scores, dtype=dtype),
        mask=torch.tensor(mask),
        ref_logp=torch.tensor(ref, dtype=dtype),
    )


# ---------------------------------------------------------------------------------------------
# naive per-list references, straight from the formulas


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def py_best(sc):
    return max(range(len(sc)), key=lambda i: (sc[i], -i))


def py_pairs(sc, mode="all"):
    n = len(sc)
    if mode == "all":
        return [(i, j) for i in range(n) for j in range(n) if sc[i] > sc[j]]
    b = py_best(sc)
    w = min(range(n), key=lambda i: (sc[i], i))
    return [(b, w)] if sc[b] > sc[w] else []


def unpack(resp):
    lp = [r[0] for r in resp]
    ln = [r[1] for r in resp]
    sc = [r[2] for r in resp]
    rf = [r[3] for r in resp]
    return lp, ln, sc, rf, [a / b for a, b in zip(lp, ln)]


def pair_mean(vals):
    return sum(vals) / len(vals) if vals else 0.0


def ref_rrhf(
    resp, rank_weight=1.0, margin=0.0, sft_weight=1.0, sft_reduction="sum", pair_mode="all"
):
    lp, ln, sc, _, p = unpack(resp)
    rank = sum(max(0.0, p[j] - p[i] + margin) for i, j in py_pairs(sc, pair_mode))
    b = py_best(sc)
    ft = -lp[b] if sft_reduction == "sum" else -lp[b] / ln[b]
    return rank_weight * rank + sft_weight * ft, {"rank": rank, "sft": ft}


def py_plackett_luce(s, sc, reward_gap=False):
    total = 0.0
    for k in range(len(s)):
        negs = [i for i in range(len(s)) if sc[i] < sc[k]]
        if not negs:
            continue
        if reward_gap:
            gaps = {i: sc[k] - sc[i] for i in negs}
            num = math.exp(s[k] * max(gaps.values()))
            den = num + sum(math.exp(s[i] * gaps[i]) for i in negs)
        else:
            num = math.exp(s[k])
            den = num + sum(math.exp(s[i]) for i in negs)
        total += -math.log(num / den)
    return total


def ref_pro(
    resp, sft_weight=1.0, pro_temperature="none", sft_reduction="mean", pro_sft_scale="none"
):
    lp, _, sc, _, p = unpack(resp)
    rank = py_plackett_luce(p, sc, reward_gap=pro_temperature == "reward-gap")
    b = py_best(sc)
    ft = -p[b] if sft_reduction == "mean" else -lp[b]
    weight = sft_weight * ((len(resp) - 1) ** 2 if pro_sft_scale == "n-1-squared" else 1)
    return rank + weight * ft, {"rank": rank, "sft": ft}


def ref_listwise_dpo(resp, beta=0.1):
    lp, _, sc, rf, _ = unpack(resp)
    rank = py_plackett_luce([beta * (a - r) for a, r in zip(lp, rf)], sc)
    return rank, {"rank": rank}


def ref_dpo(resp, beta=0.1, label_smoothing=0.0, pair_mode="all"):
    lp, _, sc, rf, _ = unpack(resp)
    vals = []
    for w, lo in py_pairs(sc, pair_mode):
        h = (lp[w] - rf[w]) - (lp[lo] - rf[lo])
        vals.append(-(1 - label_smoothing) * logsig(beta * h) - label_smoothing * logsig(-beta * h))
    rank = pair_mean(vals)
    return rank, {"rank": rank}


def ref_ipo(resp, beta=0.1, pair_mode="all", ipo_log_ratio="sequence"):
    lp, ln, sc, rf, _ = unpack(resp)
    ratio = [(a - r) / (n if ipo_log_ratio == "token" else 1) for a, r, n in zip(lp, rf, ln)]
    vals = [(ratio[w] - ratio[lo] - 1 / (2 * beta)) ** 2 for w, lo in py_pairs(sc, pair_mode)]
    rank = pair_mean(vals)
    return rank, {"rank": rank}


def ref_lipo(resp, beta=0.1, lipo_labels="normalized"):
    lp, _, sc, rf, _ = unpack(resp)
    n = len(resp)
    s = [beta * (a - r) for a, r in zip(lp, rf)]
    lo, hi = min(sc), max(sc)
    if lipo_labels == "raw":
        psi = sc
    else:
        psi = [(x - lo) / (hi - lo) if hi > lo else 0.0 for x in sc]
    gain = [2**x - 1 for x in psi]
    tau = [0] * n
    for position, i in enumerate(sorted(range(n), key=lambda i: (-s[i], i)), start=1):
        tau[i] = position
    inv_d = [1 / math.log2(1 + t) for t in tau]
    rank = sum(
        abs(gain[i] - gain[j]) * abs(inv_d[i] - inv_d[j]) * -logsig(s[i] - s[j])
        for i, j in py_pairs(sc)
    )
    return rank, {"rank": rank}


def py_targets(sc, alpha):
    top = max(x / alpha for x in sc)
    e = [math.exp(x / alpha - top) for x in sc]
    return [v / sum(e) for v in e]


def ref_infonca(resp, beta=0.1, nca_alpha=1e-4):
    lp, _, sc, rf, _ = unpack(resp)
    r = [beta * (a - b) for a, b in zip(lp, rf)]
    if not py_pairs(sc):
        return 0.0, {"rank": 0.0}
    w = py_targets(sc, nca_alpha)
    top = max(r)
    log_z = top + math.log(sum(math.exp(x - top) for x in r))
    rank = -sum(wi * (ri - log_z) for wi, ri in zip(w, r))
    return rank, {"rank": rank}


def ref_nca(resp, beta=0.1, nca_alpha=1e-4):
    lp, _, sc, rf, _ = unpack(resp)
    r = [beta * (a - b) for a, b in zip(lp, rf)]
    if not py_pairs(sc):
        return 0.0, {"rank": 0.0}
    w = py_targets(sc, nca_alpha)
    rank = -sum(wi * logsig(ri) + logsig(-ri) / len(r) for wi, ri in zip(w, r))
    return rank, {"rank": rank}


def ref_slic(resp, margin=1.0, sft_weight=0.1, pair_mode="all"):
    lp, _, sc, _, _ = unpack(resp)
    rank = pair_mean([max(0.0, margin - lp[w] + lp[lo]) for w, lo in py_pairs(sc, pair_mode)])
    ft = -lp[py_best(sc)]
    return rank + sft_weight * ft, {"rank": rank, "sft": ft}


def ref_simpo(resp, beta=2.0, gamma=0.5, pair_mode="all"):
    _, _, sc, _, p = unpack(resp)
    rank = pair_mean(
        [-logsig(beta * p[w] - beta * p[lo] - gamma) for w, lo in py_pairs(sc, pair_mode)]
    )
    return rank, {"rank": rank}


def ref_cpo(resp, beta=0.1, sft_weight=1.0, pair_mode="all"):
    lp, _, sc, _, p = unpack(resp)
    rank = pair_mean([-logsig(beta * (lp[w] - lp[lo])) for w, lo in py_pairs(sc, pair_mode)])
    ft = -p[py_best(sc)]
    return rank + sft_weight * ft, {"rank": rank, "sft": ft}


def ref_sft(resp, sft_reduction="mean"):
    lp, ln, _, _, _ = unpack(resp)
    nll = -sum(lp) / sum(ln) if sft_reduction == "mean" else -sum(lp) / len(lp)
    return nll, {"sft": nll}


def ref_raft(resp, sft_reduction="mean"):
    lp, ln, sc, _, _ = unpack(resp)
    b = py_best(sc)
    nll = -lp[b] / ln[b] if sft_reduction == "mean" else -lp[b]
    return nll, {"sft": nll}


REFERENCES = {
    "rrhf": ref_rrhf,
    "pro": ref_pro,
    "listwise-dpo": ref_listwise_dpo,
    "lipo": ref_lipo,
    "infonca": ref_infonca,
    "nca": ref_nca,
    "dpo": ref_dpo,
    "ipo": ref_ipo,
    "slic": ref_slic,
    "simpo": ref_simpo,
    "cpo": ref_cpo,
    "sft": ref_sft,
    "raft": ref_raft,
}

CONFIGS = [
    ("rrhf", {}),
    ("rrhf", {"margin": 0.5, "rank_weight": 2.0}),
    ("rrhf", {"sft_reduction": "mean", "sft_weight": 0.3}),
    ("rrhf", {"pair_mode": "best-worst", "margin": 0.1}),
    ("pro", {}),
    ("pro", {"pro_temperature": "reward-gap", "sft_weight": 0.5}),
    ("pro", {"sft_weight": 0.0}),
    ("pro", {"sft_reduction": "sum", "pro_sft_scale": "n-1-squared", "sft_weight": 0.05}),
    ("lipo", {}),
    ("lipo", {"beta": 0.5, "lipo_labels": "raw"}),
    ("infonca", {}),
    ("infonca", {"beta": 0.5, "nca_alpha": 1.0}),
    ("nca", {}),
    ("nca", {"beta": 0.5, "nca_alpha": 2.0}),
    ("listwise-dpo", {}),
    ("listwise-dpo", {"beta": 0.5}),
    ("dpo", {}),
    ("dpo", {"beta": 0.5, "label_smoothing": 0.2}),
    ("dpo", {"pair_mode": "best-worst"}),
    ("ipo", {}),
    ("ipo", {"beta": 0.5, "pair_mode": "best-worst"}),
    ("ipo", {"ipo_log_ratio": "token"}),
    ("slic", {}),
    ("slic", {"margin": 2.0, "sft_weight": 0.5}),
    ("simpo", {}),
    ("simpo", {"beta": 1.0, "gamma": 0.2, "pair_mode": "best-worst"}),
    ("cpo", {}),
    ("cpo", {"beta": 0.5, "sft_weight": 0.2}),
    ("sft", {}),
    ("sft", {"sft_reduction": "sum"}),
    ("raft", {}),
    ("raft", {"sft_reduction": "sum"}),
]


def batch_reference(name, lists, kwargs):
    results = [REFERENCES[name](resp, **kwargs) for resp in lists]
    loss = sum(r[0] for r in results) / len(lists)
    parts = {key: sum(r[1][key] for r in results) / len(lists) for key in results[0][1]}
    return loss, parts


def _id(cfg):
    name, kw = cfg
    return name + "".join(f"-{k}={v}" for k, v in kw.items())


@pytest.mark.parametrize("cfg", CONFIGS, ids=[_id(c) for c in CONFIGS])
@pytest.mark.parametrize("data", ["fixed", "random0", "random1", "fixed-k6"])
def test_loss_matches_naive_formula(cfg, data):
    name, kwargs = cfg
    if data == "fixed":
        lists, K = FIXED, None
    elif data == "fixed-k6":  # extra padding columns
        lists, K = FIXED, 6
    else:
        lists, K = random_lists(int(data[-1])), None
    loss, parts = LOSSES[name](make(lists, kmax=K), **kwargs)
    want_loss, want_parts = batch_reference(name, lists, kwargs)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert loss.item() == pytest.approx(want_loss, rel=1e-9, abs=1e-9)
    assert set(parts) == set(want_parts)
    for key, value in parts.items():
        assert value.dim() == 0 and not value.requires_grad
        assert value.item() == pytest.approx(want_parts[key], rel=1e-9, abs=1e-9)


# ---------------------------------------------------------------------------------------------
# hand-worked examples


def test_rrhf_by_hand():
    # p = [-4/2, -6/3, -3/4, -8/5] = [-2, -2, -0.75, -1.6]; scores [1, 3, 2, 0.5]
    # pairs (better, worse): (1,0) (1,2) (1,3) (2,0) (2,3) (0,3)
    # hinges max(0, p_worse - p_better): 0, 1.25, 0.4, 0, 0, 0.4 -> 2.05
    # best = 1: L_ft = 6 (sum) or 2 (mean)
    inputs = make(FIXED[:1])
    loss, parts = rrhf(inputs)
    assert parts["rank"].item() == pytest.approx(2.05)
    assert parts["sft"].item() == pytest.approx(6.0)
    assert loss.item() == pytest.approx(8.05)
    # margin 0.5: hinges 0.5, 1.75, 0.9, 0 (-0.75), 0 (-0.35), 0.9 -> 4.05; weights 2, 0.5; mean
    loss, parts = rrhf(inputs, margin=0.5, rank_weight=2.0, sft_weight=0.5, sft_reduction="mean")
    assert parts["rank"].item() == pytest.approx(4.05)
    assert parts["sft"].item() == pytest.approx(2.0)
    assert loss.item() == pytest.approx(2 * 4.05 + 0.5 * 2.0)


def test_rrhf_all_tied_rank_zero_sft_first():
    lists = [[(-3.0, 3, 0.5, 0.0), (-1.0, 1, 0.5, 0.0), (-2.0, 4, 0.5, 0.0)]]
    loss, parts = rrhf(make(lists, kmax=5))
    assert parts["rank"].item() == 0.0
    assert parts["sft"].item() == 3.0  # first response
    assert loss.item() == 3.0


def test_rrhf_token_mean_uses_best_response_length_not_padded_length():
    # the released RRHF code divides by the padded length; here len[best] = 2, longest is 50
    lists = [[(-4.0, 2, 1.0, 0.0), (-60.0, 50, 0.0, 0.0)], [(-9.0, 3, 0.0, 0.0)]]
    _, parts = rrhf(make(lists), sft_reduction="mean")
    assert parts["sft"].item() == pytest.approx((4.0 / 2 + 9.0 / 3) / 2)


def test_dpo_k2_textbook():
    # logp_w=-4, ref_w=-4.5, logp_l=-6, ref_l=-5: h = 0.5 - (-1) = 1.5
    lists = [[(-6.0, 3, 0.0, -5.0), (-4.0, 2, 1.0, -4.5)]]
    loss, parts = dpo(make(lists), beta=0.1)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.15)), rel=1e-12)
    assert set(parts) == {"rank"}
    eps = 0.25
    loss, _ = dpo(make(lists), beta=0.1, label_smoothing=eps)
    want = (1 - eps) * math.log(1 + math.exp(-0.15)) + eps * math.log(1 + math.exp(0.15))
    assert loss.item() == pytest.approx(want, rel=1e-12)


def test_listwise_dpo_equals_dpo_on_pairs():
    rng = random.Random(3)
    lists = [
        [(-rng.uniform(1, 20), 1, s, -rng.uniform(1, 20)) for s in rng.sample([0.0, 1.0, 2.0], 2)]
        for _ in range(16)
    ]
    for beta in (0.1, 0.7, 3.0):
        a, _ = listwise_dpo(make(lists), beta=beta)
        b, _ = dpo(make(lists), beta=beta)
        assert a.item() == pytest.approx(b.item(), rel=1e-12, abs=1e-12)
    # float32 too
    a, _ = listwise_dpo(make(lists, dtype=torch.float32))
    b, _ = dpo(make(lists, dtype=torch.float32))
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def eq18(resp) -> float:
    """Thesis Eq. 18 literally: sort by reward, -sum_{k=1}^{n-1} log(e^{s_k} / sum_{i>=k} e^{s_i})."""
    ordered = sorted(resp, key=lambda r: -r[2])
    s = [r[0] / r[1] for r in ordered]
    return -sum(
        math.log(math.exp(s[k]) / sum(math.exp(s[i]) for i in range(k, len(s))))
        for k in range(len(s) - 1)
    )


def test_pro_strict_ranking_equals_eq18():
    rng = random.Random(7)
    lists = []
    for k in (2, 3, 4, 4, 3):
        scores = rng.sample(range(10), k)
        lists.append([(-rng.uniform(1, 10), rng.randint(1, 5), float(sc), 0.0) for sc in scores])
    loss, parts = pro(make(lists), sft_weight=0.0)
    want = sum(eq18(r) for r in lists) / len(lists)
    assert loss.item() == pytest.approx(want, rel=1e-10)
    assert parts["rank"].item() == pytest.approx(want, rel=1e-10)


def test_pro_reward_gap_by_hand():
    # k=2: s = [-1, -2], r = [3, 1]: gap 2 -> -log(e^{-2} / (e^{-2} + e^{-4}))
    lists = [[(-1.0, 1, 3.0, 0.0), (-4.0, 2, 1.0, 0.0)]]
    loss, _ = pro(make(lists), pro_temperature="reward-gap", sft_weight=0.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2.0)), rel=1e-12)


def test_pro_ties_are_not_negatives():
    # two tied best responses, one worse: each tied one is compared with the worse one only
    lists = [[(-1.0, 1, 1.0, 0.0), (-2.0, 1, 1.0, 0.0), (-3.0, 1, 0.0, 0.0)]]
    loss, _ = pro(make(lists), sft_weight=0.0)
    want = -math.log(math.exp(-1) / (math.exp(-1) + math.exp(-3))) - math.log(
        math.exp(-2) / (math.exp(-2) + math.exp(-3))
    )
    assert loss.item() == pytest.approx(want, rel=1e-12)


def test_pro_large_scores_do_not_overflow():
    lists = [[(-2000.0, 1, 1.0, 0.0), (-1000.0, 1, 0.0, 0.0)]]
    loss, _ = pro(make(lists, dtype=torch.float32), sft_weight=0.0)
    assert loss.item() == pytest.approx(1000.0)


def test_raft_and_sft_by_hand():
    lists = [[(-4.0, 2, 0.0, 0.0), (-6.0, 3, 5.0, 0.0)], [(-1.0, 4, 0.0, 0.0)]]
    loss, _ = raft(make(lists))
    assert loss.item() == pytest.approx((2.0 + 0.25) / 2)
    loss, _ = LOSSES["sft"](make(lists))
    assert loss.item() == pytest.approx((10.0 / 5 + 0.25) / 2)
    loss, _ = LOSSES["sft"](make(lists), sft_reduction="sum")
    assert loss.item() == pytest.approx((5.0 + 1.0) / 2)


@pytest.mark.parametrize(
    "name",
    ["rrhf", "dpo", "ipo", "slic", "simpo", "cpo", "pro", "listwise-dpo", "lipo", "infonca", "nca"],
)
def test_all_tied_lists_give_zero_rank_without_nan(name):
    lists = [[(-1.0, 2, 0.0, -1.5), (-2.0, 1, 0.0, -1.0)], [(-3.0, 3, 7.0, -2.0)] * 3]
    inputs = make(lists, kmax=4)
    inputs.logp.requires_grad_(True)
    loss, parts = LOSSES[name](inputs)
    assert parts["rank"].item() == 0.0
    (grad,) = torch.autograd.grad(loss, inputs.logp, allow_unused=True)
    assert grad is None or torch.isfinite(grad).all()


# ---------------------------------------------------------------------------------------------
# gradients and robustness


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("garbage", [NAN, float("inf"), -1e30])
def test_gradients_finite_and_zero_on_padding(name, garbage):
    lists = FIXED + random_lists(5)
    inputs = make(lists, kmax=6, dtype=torch.float32, garbage=garbage, requires_grad=True)
    loss, parts = LOSSES[name](inputs)
    assert torch.isfinite(loss)
    assert all(torch.isfinite(v) for v in parts.values())
    (grad,) = torch.autograd.grad(loss, inputs.logp)
    assert torch.isfinite(grad).all()
    assert (grad[~inputs.mask] == 0).all()
    assert grad[inputs.mask].abs().sum() > 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_padding_does_not_change_the_loss(name):
    a, _ = LOSSES[name](make(FIXED))
    b, _ = LOSSES[name](make(FIXED, kmax=7, garbage=123.0))
    assert a.item() == pytest.approx(b.item(), rel=1e-12)


def test_bf16_inputs_and_int_lengths():
    inputs = make(FIXED, dtype=torch.bfloat16, requires_grad=True)
    for name, fn in LOSSES.items():
        loss, _ = fn(inputs)
        assert loss.dtype == torch.float32, name
        (grad,) = torch.autograd.grad(loss, inputs.logp)
        assert grad.dtype == torch.bfloat16 and torch.isfinite(grad.float()).all()


def test_needs_reference_raises_without_ref():
    inputs = make(FIXED)
    inputs.ref_logp = None
    for name in NEEDS_REFERENCE:
        with pytest.raises(ValueError, match="ref"):
            LOSSES[name](inputs)
    for name in set(LOSSES) - NEEDS_REFERENCE:
        LOSSES[name](inputs)  # fine without


def test_bad_arguments_raise():
    inputs = make(FIXED)
    with pytest.raises(ValueError):
        rrhf(inputs, sft_reduction="token")
    with pytest.raises(ValueError):
        dpo(inputs, pair_mode="adjacent")
    with pytest.raises(ValueError):
        pro(inputs, pro_temperature="hot")
    bad = LossInputs(inputs.logp, inputs.lengths[:, :2], inputs.scores, inputs.mask)
    with pytest.raises(ValueError, match="lengths"):
        rrhf(bad)
    with pytest.raises(ValueError, match="bool"):
        rrhf(LossInputs(inputs.logp, inputs.lengths, inputs.scores, inputs.mask.long()))


def test_registry():
    assert set(LOSSES) == {
        "rrhf",
        "pro",
        "listwise-dpo",
        "lipo",
        "infonca",
        "nca",
        "dpo",
        "ipo",
        "slic",
        "simpo",
        "cpo",
        "sft",
        "raft",
    }
    assert NEEDS_REFERENCE == frozenset({"dpo", "ipo", "listwise-dpo", "lipo", "infonca", "nca"})
    assert MIN_RESPONSES == {name: 1 if name in ("sft", "raft") else 2 for name in LOSSES}


# ---------------------------------------------------------------------------------------------
# pairs, best index, metrics


def test_preference_pairs_all_and_best_worst():
    scores = torch.tensor([[1.0, 3.0, 3.0, NAN], [2.0, 2.0, 2.0, 0.0], [5.0, 5.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0, 0]]).bool()
    pairs = preference_pairs(scores, mask)
    assert pairs.dtype == torch.bool and pairs.shape == (3, 4, 4)
    assert sorted(map(tuple, pairs[0].nonzero().tolist())) == [(1, 0), (2, 0)]
    assert not pairs[1].any()  # valid ones all tied; padded 0.0 is ignored
    assert not pairs[2].any()  # padded 9.0 is ignored
    bw = preference_pairs(scores, mask, mode="best-worst")
    assert bw[0].nonzero().tolist() == [[1, 0]]  # first of the tied best
    assert not bw[1].any() and not bw[2].any()
    scores = torch.tensor([[0.0, 1.0, 2.0, 0.0]])
    bw = preference_pairs(scores, torch.ones(1, 4, dtype=torch.bool), mode="best-worst")
    assert bw[0].nonzero().tolist() == [[2, 0]]  # first of the tied worst


def test_best_index():
    scores = torch.tensor([[1.0, 4.0, 4.0, 9.0], [NAN, 0.0, -1.0, NAN], [3.0, 3.0, 3.0, 3.0]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 0], [1, 1, 1, 1]]).bool()
    idx = best_index(scores, mask)
    assert idx.dtype == torch.long
    assert idx.tolist() == [1, 1, 0]


def test_ranking_metrics_length_normalized():
    # list 0: p = [-2, -2, -0.75, -1.6], scores [1, 3, 2, 0.5]
    #   pairs (1,0): 0 (not >), (1,2): -1.25, (1,3): -0.4, (2,0): 1.25, (2,3): 0.85, (0,3): -0.4
    # list 1 (k=2, padded): p = [-7/6, -1.25], scores [-0.3, 0.7]: pair (1,0): -1.25 + 7/6
    inputs = make([FIXED[0], FIXED[2]])
    inputs.ref_logp = None
    m = ranking_metrics(inputs)
    diffs = [0.0, -1.25, -0.4, 1.25, 0.85, -0.4, -1.25 + 7 / 6]
    assert m["num_pairs"].item() == 7
    assert m["rank_accuracy"].item() == pytest.approx(2 / 7)
    assert m["reward_margin"].item() == pytest.approx(sum(diffs) / 7)
    m = ranking_metrics(inputs, pair_mode="best-worst")  # (1,3) and (1,0)
    assert m["num_pairs"].item() == 2
    assert m["rank_accuracy"].item() == 0.0
    assert m["reward_margin"].item() == pytest.approx((-0.4 - 1.25 + 7 / 6) / 2)


def test_ranking_metrics_implicit_reward_and_no_pairs():
    # u = logp - ref: list 2 of FIXED -> u = [-1, 0.5], scores [-0.3, 0.7]: pair (1,0): 1.5
    m = ranking_metrics(make([FIXED[2]]))
    assert m["rank_accuracy"].item() == 1.0
    assert m["reward_margin"].item() == pytest.approx(1.5)
    m = ranking_metrics(make([FIXED[3]]))  # all tied
    assert m["num_pairs"].item() == 0
    assert "rank_accuracy" not in m and "reward_margin" not in m


# ---------------------------------------------------------------------------------------------
# cross-check with TRL's DPO trainer


def _trl_sigmoid_dpo(chosen, rejected, ref_chosen, ref_rejected, beta):
    """Run TRL's own DPOTrainer loss code on given sequence log-probs (no model, no dataset)."""
    trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")
    n, seq = chosen.shape[0], 3
    per_token = torch.zeros(2 * n, seq)
    per_token[:, 0] = torch.cat([chosen, rejected])  # TRL sums over the sequence

    class Accelerator:
        device = torch.device("cpu")

        def gather_for_metrics(self, x):
            return x

        gather = gather_for_metrics

    def model(**kwargs):
        shape = kwargs["input_ids"].shape
        zeros = torch.zeros(shape[0], seq)
        return SimpleNamespace(
            log_probs=per_token,
            entropy=zeros,
            mean_logits=zeros,
            is_top1=zeros.bool(),
            aux_loss=None,
        )

    model.training = True
    trainer = SimpleNamespace(
        model=model,
        accelerator=Accelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=["sigmoid"],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=0.0,
        use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
    )
    ones = torch.ones(2 * n, seq + 1, dtype=torch.long)
    inputs = {
        "input_ids": ones,
        "attention_mask": ones,
        "completion_mask": ones,
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    try:
        return trl_dpo.DPOTrainer._compute_loss(trainer, model, inputs, False)
    except (AttributeError, KeyError, TypeError) as err:  # TRL internals moved
        # `make install` installs TRL (the bench extra): in CI a moved internal must be
        # adapted here, not skipped, or the DPO-equals-TRL check silently stops checking
        require(False, f"this TRL version's DPOTrainer._compute_loss needs more: {err!r}")


def test_dpo_matches_trl():
    gen = torch.Generator().manual_seed(0)
    n, beta = 8, 0.3
    chosen, rejected, ref_c, ref_r = (-30 * torch.rand(n, generator=gen) for _ in range(4))
    want = _trl_sigmoid_dpo(chosen, rejected, ref_c, ref_r, beta)
    inputs = LossInputs(
        logp=torch.stack([chosen, rejected], dim=1),
        lengths=torch.ones(n, 2),
        scores=torch.tensor([[1.0, 0.0]]).expand(n, 2),
        mask=torch.ones(n, 2, dtype=torch.bool),
        ref_logp=torch.stack([ref_c, ref_r], dim=1),
    )
    got, _ = dpo(inputs, beta=beta)
    assert got.item() == pytest.approx(float(want), rel=1e-6)
    # listwise DPO on pairs is the same loss
    got, _ = listwise_dpo(inputs, beta=beta)
    assert got.item() == pytest.approx(float(want), rel=1e-6)


def test_a_loss_spec_is_checked_against_its_function():
    """A spec needs a learning rate, and its options must be exactly the function's keyword
    arguments (names = keywords = config keys = flags), with defaults among their choices."""
    from rankalign.loss_spec import LossSpec, Option, merged_options

    def toy(inputs, *, beta: float = 0.1, mode: str = "a"):
        return inputs

    beta = Option("beta", "inverse temperature", "> 0")
    mode = Option("mode", "a | b", None, ("a", "b"))
    spec = LossSpec(name="toy", fn=toy, learning_rate=1e-6, options=(beta, mode))
    assert spec.defaults() == {"beta": 0.1, "mode": "a"}
    with pytest.raises(TypeError, match="learning_rate"):
        LossSpec(name="toy", fn=toy, options=(beta, mode))
    with pytest.raises(ValueError, match="learning_rate must be a positive float"):
        LossSpec(name="toy", fn=toy, learning_rate=0.0, options=(beta, mode))
    with pytest.raises(ValueError, match="function keywords"):
        LossSpec(name="toy", fn=toy, learning_rate=1e-6, options=(beta,))
    with pytest.raises(ValueError, match="not one of"):
        LossSpec(
            name="toy",
            fn=toy,
            learning_rate=1e-6,
            options=(beta, Option("mode", "b | c", None, ("b", "c"))),
        )
    other = LossSpec(
        name="other", fn=toy, learning_rate=1e-6, options=(Option("beta", "x", ">= 0"), mode)
    )
    with pytest.raises(ValueError, match="declares it unlike"):
        merged_options({"toy": spec, "other": other})
