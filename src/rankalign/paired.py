"""Paired statistics: two methods measured on the same units (in `compare`, the held-out prompts),
compared unit by unit. Model-free, numpy and the standard library only.

Every method is evaluated on the same prompts, so the per-prompt differences are paired: a hard
prompt is hard for both methods, and the difference removes it. The mean paired difference, its
paired bootstrap interval, the exact sign test, the Wilcoxon signed-rank test, Holm's step-down
correction over a table's comparisons, and a length-controlled difference. Every function returns
a plain dict (strict JSON): an undefined value is None, with its reason under `notes`.
"""

from __future__ import annotations

import math

import numpy as np

from rankalign.metrics import bootstrap_ci

# the Wilcoxon test's exact null distribution up to this many non-zero differences without tied
# magnitudes (scipy's `method="auto"` uses the same bound); the normal approximation beyond
EXACT_WILCOXON_MAX_N = 50


def _undefined(keys, why: str, **known) -> dict:
    return {**known, **dict.fromkeys(keys), "notes": dict.fromkeys(keys, why)}


def paired_values(a, b) -> tuple[np.ndarray, np.ndarray, int]:
    """(a, b, dropped): the units where both values are known (not None); `dropped` counts the
    others. a and b list the same units in the same order."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same units: {len(a)} vs {len(b)} values")
    keep = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    xs = np.asarray([x for x, _ in keep], dtype=float)
    ys = np.asarray([y for _, y in keep], dtype=float)
    return xs, ys, len(a) - len(keep)


def mean_difference(
    differences, *, resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict:
    """Mean of the per-unit differences d_i = a_i - b_i and its paired bootstrap interval:
    `metrics.bootstrap_ci` of the d_i, i.e. units drawn with replacement, both methods' values of
    a drawn unit kept together (percentile interval, seeded: the same seed gives the same
    interval). Undefined (None + note): the mean with no unit; the interval with one unit or when
    every unit has the same difference (the bootstrap distribution is then a single point, which
    says nothing about other units)."""
    d = np.asarray(differences, dtype=float)
    keys = ("mean_difference", "ci_low", "ci_high")
    if d.size == 0:
        return _undefined(keys, "no unit with both values: the difference is undefined", n=0)
    out = {"n": int(d.size), "mean_difference": float(d.mean())}
    if d.size == 1 or np.all(d == d[0]):
        why = (
            "one unit: no interval"
            if d.size == 1
            else "every unit has the same difference (zero variance): no interval"
        )
        return {**out, "ci_low": None, "ci_high": None, "notes": dict.fromkeys(keys[1:], why)}
    low, high = bootstrap_ci(d, resamples=resamples, confidence=confidence, seed=seed)
    return {**out, "ci_low": low, "ci_high": high}


def sign_test(differences) -> dict:
    """Exact two-sided sign test of H0 "a unit is as likely to favour a as b".

    Ties (d_i = 0) are dropped. With m = positive + negative and k = min(positive, negative),
    p = min(1, 2 P(X <= k)), X ~ Binomial(m, 1/2), computed exactly: 2 sum_{i<=k} C(m, i) / 2^m
    (the same as scipy's `binomtest(k, m).pvalue`: for p = 1/2 the binomial is symmetric).
    Undefined with no non-zero difference."""
    d = np.asarray(differences, dtype=float)
    pos, neg = int((d > 0).sum()), int((d < 0).sum())
    out = {"n": pos + neg, "positive": pos, "negative": neg, "ties": int(d.size) - pos - neg}
    m = pos + neg
    if m == 0:
        why = "every difference is zero (all ties)" if d.size else "no unit"
        return {**out, "p_value": None, "notes": {"p_value": why + ": the sign test is undefined"}}
    tail = sum(math.comb(m, i) for i in range(min(pos, neg) + 1))
    return {**out, "p_value": min(1.0, 2 * tail / 2**m)}  # exact integers, one rounding


def average_ranks(values) -> np.ndarray:
    """Ranks 1..n of `values`, tied values sharing the mean of the ranks they span."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size)
    i = 0
    while i < x.size:
        j = i
        while j + 1 < x.size and x[order[j + 1]] == x[order[i]]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1  # mean of ranks i+1 .. j+1
        i = j + 1
    return ranks


def signed_rank_counts(n: int) -> list[int]:
    """counts[s] = number of subsets of {1, ..., n} whose sum is s (s = 0 .. n(n+1)/2): under H0
    each of the 2^n sign patterns is equally likely, so P(W+ = s) = counts[s] / 2^n."""
    counts = [1] + [0] * (n * (n + 1) // 2)
    for r in range(1, n + 1):  # add rank r to every subset of {1..r-1}
        for s in range(r * (r + 1) // 2, r - 1, -1):
            counts[s] += counts[s - r]
    return counts


def wilcoxon_signed_rank(differences) -> dict:
    """Two-sided Wilcoxon signed-rank test of H0 "the differences are symmetric about 0".

    Zeros are dropped (Wilcoxon's own rule; scipy's `zero_method="wilcox"`). The n remaining |d_i|
    are ranked (ties get their average rank); W+ = sum of the ranks of positive d_i,
    W- = n(n+1)/2 - W+.
    - `exact` when n <= 50 and no |d_i| are tied: p = min(1, 2 P(W+ <= min(W+, W-))) from the
      exact null distribution (`signed_rank_counts`);
    - otherwise `normal`: z = max(0, |W+ - n(n+1)/4| - 1/2) / sigma with the tie-corrected
      variance sigma^2 = n(n+1)(2n+1)/24 - sum_t (t^3 - t)/48 (t: sizes of the groups of tied
      |d_i|) and the continuity correction 1/2; p = erfc(z / sqrt 2) = 2 (1 - Phi(z)).
    Undefined with no non-zero difference."""
    d = np.asarray(differences, dtype=float)
    nonzero = d[d != 0]
    n = int(nonzero.size)
    out = {"n": n, "zeros": int(d.size) - n}
    if n == 0:
        why = "every difference is zero (all ties)" if d.size else "no unit"
        return {
            **out,
            **dict.fromkeys(("w_plus", "w_minus", "p_value", "method")),
            "notes": {"p_value": why + ": the signed-rank test is undefined"},
        }
    magnitude = np.abs(nonzero)
    ranks = average_ranks(magnitude)
    w_plus = float(ranks[nonzero > 0].sum())
    w_minus = n * (n + 1) / 2 - w_plus
    _, tie_sizes = np.unique(magnitude, return_counts=True)
    if n <= EXACT_WILCOXON_MAX_N and tie_sizes.max() == 1:
        counts = signed_rank_counts(n)
        w = int(round(min(w_plus, w_minus)))  # integer ranks when nothing is tied
        p = min(1.0, 2 * sum(counts[: w + 1]) / 2**n)
        method = "exact"
    else:
        var = n * (n + 1) * (2 * n + 1) / 24 - float((tie_sizes**3 - tie_sizes).sum()) / 48
        z = max(0.0, abs(w_plus - n * (n + 1) / 4) - 0.5) / math.sqrt(var)
        p = math.erfc(z / math.sqrt(2))
        method = "normal"
    return {**out, "w_plus": w_plus, "w_minus": w_minus, "p_value": p, "method": method}


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (family-wise error), in the input's order.

    The m known p-values sorted ascending p_(1) <= ... <= p_(m) get
    p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)); reject H_(i) iff p~_(i) <= alpha. A None
    (an undefined test) stays None and is not counted in m."""
    known = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(known)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for j, (p, i) in enumerate(known):
        running = max(running, min(1.0, (m - j) * p))
        adjusted[i] = running
    return adjusted


def length_controlled_difference(
    reward_differences,
    length_differences,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """The reward difference at equal response length: the intercept of the least-squares line
    (with intercept) of the per-unit reward difference on the per-unit length difference,
    dr_i = a + b dl_i + e_i, so a = mean(dr) - b mean(dl), b = S_xy / S_xx. `difference` is a,
    the difference predicted for two responses of the same length; `slope` is b, the reward per
    unit of length that the two methods' length gap explains. This is the linear analogue of
    AlpacaEval's length-controlled win rate (Dubois et al. 2024), which fits a GLM of the
    preference on the length difference and reads it off at length difference 0.

    The interval is a paired bootstrap: units drawn with replacement, the line refitted, the
    percentiles of the intercepts (a resample whose length differences are all equal has no
    line and is left out; `resamples_used` counts the rest).

    When every length difference is 0 the units are already at equal length: the difference is
    the plain mean difference (and its interval), slope None. Undefined (None + note): fewer than
    3 units, or one length difference shared by all units that is not 0 (length and method cannot
    be told apart)."""
    y = np.asarray(reward_differences, dtype=float)
    x = np.asarray(length_differences, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"{y.size} reward differences but {x.size} length differences")
    keys = ("difference", "ci_low", "ci_high", "slope")
    if y.size < 3:
        why = f"{y.size} units: a line needs at least 3 to leave a residual"
        return _undefined(keys, why, n=int(y.size))
    if np.all(x == 0):
        mean = mean_difference(y, resamples=resamples, confidence=confidence, seed=seed)
        note = "every pair has equal length: the difference is already at equal length"
        notes = {**mean.get("notes", {}), "slope": note}
        return {
            "n": int(y.size),
            "difference": mean["mean_difference"],
            "ci_low": mean["ci_low"],
            "ci_high": mean["ci_high"],
            "slope": None,
            "resamples_used": resamples if mean["ci_low"] is not None else 0,
            "notes": notes,
        }
    if x.max() == x.min():
        why = "every unit has the same non-zero length difference: length and method are confounded"
        return _undefined(keys, why, n=int(y.size))
    a, b = _ols(x[None], y[None])
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // y.size)  # about 2M indices at a time, as bootstrap_ci
    intercepts = []
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, y.size, size=(min(chunk, resamples - start), y.size))
        xs, ys = x[idx], y[idx]
        line = xs.max(1) > xs.min(1)  # exact: two distinct lengths, so S_xx > 0
        intercepts.append(_ols(xs[line], ys[line])[0])
    intercepts = np.concatenate(intercepts)
    out = {"n": int(y.size), "difference": float(a[0]), "slope": float(b[0])}
    if not intercepts.size:
        why = "no bootstrap resample had two different length differences"
        return {**out, "ci_low": None, "ci_high": None, "resamples_used": 0,
                "notes": dict.fromkeys(("ci_low", "ci_high"), why)}  # fmt: skip
    alpha = (1 - confidence) / 2
    low, high = np.quantile(intercepts, [alpha, 1 - alpha])
    return {**out, "ci_low": float(low), "ci_high": float(high),
            "resamples_used": int(intercepts.size)}  # fmt: skip


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise least squares y = a + b x over (R, n) arrays: (a, b), each (R,)."""
    xm, ym = x.mean(1, keepdims=True), y.mean(1, keepdims=True)
    b = ((x - xm) * (y - ym)).sum(1) / ((x - xm) ** 2).sum(1)
    return ym[:, 0] - b * xm[:, 0], b


def paired_comparison(
    a, b, *, resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict:
    """a vs b on the same units (None: unknown, that unit left out and counted as `unscored`):
    the mean difference a - b with its paired bootstrap interval (`mean_difference`), the exact
    sign test and the Wilcoxon signed-rank test of the differences."""
    xs, ys, dropped = paired_values(a, b)
    d = xs - ys
    out = mean_difference(d, resamples=resamples, confidence=confidence, seed=seed)
    out["unscored"] = dropped
    out["sign_test"] = sign_test(d)
    out["wilcoxon"] = wilcoxon_signed_rank(d)
    return out


def verdict(c: dict) -> str:
    """The verdict of a `paired_comparison` `c` that carries `significant` (its Holm-corrected
    Wilcoxon p-value at the table's alpha): better / worse when the test rejects and the ranks
    (W+ vs W-) and the mean difference point the same way; mixed when they point apart; no
    difference when every scored unit is tied (the test is then undefined)."""
    if c["significant"] is None:  # no non-zero difference: tied everywhere, or nothing scored
        return "no difference (every prompt tied)" if c["wilcoxon"]["zeros"] else "undefined"
    if not c["significant"]:
        return "no detectable difference"
    w = c["wilcoxon"]
    ranks, mean = np.sign(w["w_plus"] - w["w_minus"]), np.sign(c["mean_difference"])
    if ranks == mean != 0:
        return "better" if mean > 0 else "worse"
    return "mixed (ranks and mean disagree)"


def decide(comparisons: list[dict], alpha: float) -> list[dict]:
    """Each `paired_comparison` of one table gains `p_holm` (Holm's adjustment of its Wilcoxon
    p-value over all of them), `significant` (p_holm <= alpha; None, with the reason as a note,
    where the test is undefined) and its `verdict`."""
    for c, p in zip(comparisons, holm([c["wilcoxon"]["p_value"] for c in comparisons])):
        c["p_holm"], c["significant"] = p, (None if p is None else p <= alpha)
        if p is None:
            why = c["wilcoxon"]["notes"]["p_value"]
            c.setdefault("notes", {}).update(p_holm=why, significant=why)
        c["verdict"] = verdict(c)
    return comparisons


def versus(paired: dict, a: str, b: str) -> dict | None:
    """The comparison of `a` against `b` from a paired section (a dict whose `comparisons` hold
    `method` vs `versus`, as `compare_table.paired_section` writes), in either order: `b` vs `a`
    is stored, `a` vs `b` is its mirror (differences and bounds negated, positive/negative and
    W+/W- swapped, better/worse swapped; the p-values are the same)."""
    for c in paired.get("comparisons", []):
        if (c["method"], c["versus"]) == (a, b):
            return c
        if (c["method"], c["versus"]) == (b, a):
            return _mirror(c)
    return None


def _mirror(c: dict) -> dict:
    flip = {"better": "worse", "worse": "better"}
    out = {**c, "method": c["versus"], "versus": c["method"]}
    out["verdict"] = flip.get(c["verdict"], c["verdict"])
    out.update(_negated(c, "mean_difference"))
    s, w = c["sign_test"], c["wilcoxon"]
    out["sign_test"] = {**s, "positive": s["negative"], "negative": s["positive"]}
    out["wilcoxon"] = {**w, "w_plus": w["w_minus"], "w_minus": w["w_plus"]}
    if "length_controlled" in c:  # -dr = -a + b (-dl): the slope stays, the intercept flips
        out["length_controlled"] = {
            **c["length_controlled"],
            **_negated(c["length_controlled"], "difference"),
        }
    return out


def _negated(d: dict, key: str) -> dict:
    return {key: _neg(d[key]), "ci_low": _neg(d["ci_high"]), "ci_high": _neg(d["ci_low"])}


def _neg(x: float | None) -> float | None:
    return None if x is None else -x
