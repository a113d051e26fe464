"""Pure statistics over numbers already computed (no model, no I/O): bootstrap confidence
intervals, expected best-of-n, Pearson correlation and reward-length correlation, win rates, pair
accuracy (overall, by category, RewardBench sections) and the RRHF paper's Table 6 reward columns.
Evaluation, scoring summaries and the loop's iteration metrics all compute them here.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np


def bootstrap_ci(
    values, *, resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean.

    `resamples` times: draw n indices with replacement (numpy `default_rng(seed).integers(0, n,
    size=(resamples, n))`, drawn in row chunks, which gives the same numbers), take the mean of
    those values. The interval is the (1 - c)/2 and (1 + c)/2 quantiles of the means.
    No values: (None, None), the interval is undefined.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return None, None
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // x.size)  # bound memory: about 2M indices at a time
    means = np.concatenate(
        [
            x[rng.integers(0, x.size, size=(min(chunk, resamples - s), x.size))].mean(1)
            for s in range(0, resamples, chunk)
        ]
    )
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def reward_summary(values, *, resamples: int, confidence: float, seed: int) -> dict:
    """Mean, std and bootstrap interval of the rewards that are not None (None when none is)."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    if not x.size:
        why = "no response could be scored: the mean reward is undefined"
        keys = ("mean_reward", "std", "ci_low", "ci_high")
        return {**dict.fromkeys(keys), "n": 0, "notes": dict.fromkeys(keys, why)}
    low, high = bootstrap_ci(x, resamples=resamples, confidence=confidence, seed=seed)
    return {
        "mean_reward": float(x.mean()),
        "std": float(x.std()),
        "ci_low": low,
        "ci_high": high,
        "n": int(x.size),
    }


def expected_best_of_n(rewards, n: int) -> float:
    """E[max reward of n responses drawn without replacement from a prompt's k], exactly.

    The average of max(S) over all C(k, n) subsets S of size n. Sort ascending r_(1) <= ... <=
    r_(k): r_(i) is the maximum of exactly C(i-1, n-1) subsets (itself plus n-1 of the i-1 below
    it), so E = sum_i C(i-1, n-1) / C(k, n) * r_(i). (Ties do not matter: tied values are equal.)
    This is the unbiased estimator of best-of-n from k >= n samples, with no sampling noise.
    """
    r = sorted(float(v) for v in rewards)
    k = len(r)
    if not 1 <= n <= k:
        raise ValueError(f"best-of-{n} needs at least {n} samples, got {k}")
    total = math.comb(k, n)
    return sum(math.comb(i - 1, n - 1) * r[i - 1] for i in range(n, k + 1)) / total


def best_of_n_curve(score_lists: list[list[float]]) -> list[dict]:
    """Mean over prompts of expected_best_of_n for every n up to 16, then n = 32, 64, ... and
    the largest k. Every n a sample set can give is there up to 16, so sets of different k
    (3 samples in a file, 4 drawn per model) share their columns in the report's table.

    At each n only prompts with k >= n count (their number is reported)."""
    kmax = max((len(s) for s in score_lists), default=0)
    ns = list(range(1, min(kmax, 16) + 1)) + [2**j for j in range(5, kmax.bit_length())]
    if kmax and kmax not in ns:
        ns.append(kmax)
    curve = []
    for n in ns:
        values = [expected_best_of_n(s, n) for s in score_lists if len(s) >= n]
        curve.append({"n": n, "expected_max": float(np.mean(values)), "prompts": len(values)})
    return curve


def pearson(x, y) -> float | None:
    """Pearson r = sum(dx dy) / sqrt(sum dx^2 sum dy^2); None when undefined (n < 2, constant)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 2:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return float((dx * dy).sum() / denom) if denom > 0 else None


def reward_length_correlation(rows: list[dict], length_fn, unit: str) -> dict:
    """Per prompt, Pearson r between the k responses' rewards and lengths (RLHF Workflow Fig. 5)."""
    per_prompt, skipped = [], 0
    for row in rows:
        lengths = [length_fn(r) for r in row["responses"]]
        r = pearson(row["scores"], lengths)
        if r is None:
            skipped += 1
            continue
        per_prompt.append(
            {"id": row["id"], "r": r, "k": len(lengths), "mean_length": float(np.mean(lengths))}
        )
    rs = np.asarray([p["r"] for p in per_prompt])
    out = {
        "length_unit": unit,
        "prompts": len(per_prompt),
        "skipped": skipped,
        "mean_r": float(rs.mean()) if rs.size else None,
        "median_r": float(np.median(rs)) if rs.size else None,
        "positive_fraction": float((rs > 0).mean()) if rs.size else None,
        "per_prompt": per_prompt,
    }
    if not rs.size:
        why = (
            "no prompt has 2 or more responses with varying rewards and lengths: "
            "the correlation is undefined"
        )
        out["notes"] = dict.fromkeys(("mean_r", "median_r", "positive_fraction"), why)
    return out


def compare(a, b, tolerance: float = 0.0) -> int:
    """+1 when a beats b by more than `tolerance`, -1 when b beats a, 0 for a tie."""
    return 1 if a - b > tolerance else -1 if b - a > tolerance else 0


def win_rate(verdicts: list[int | None]) -> dict:
    """Counts of per-prompt verdicts (+1 win, 0 tie, -1 loss, None = could not be judged)."""
    judged = [v for v in verdicts if v is not None]
    n = len(judged)
    wins, ties, losses = judged.count(1), judged.count(0), judged.count(-1)
    out = {
        "n": n,
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "unjudged": len(verdicts) - n,
        "win_rate": wins / n if n else None,
        "tie_rate": ties / n if n else None,
        "loss_rate": losses / n if n else None,
        "win_rate_ties_half": (wins + ties / 2) / n if n else None,
    }
    if not n:
        why = "no prompt could be judged: the rates are undefined"
        out["notes"] = {k: why for k in out if k.endswith(("_rate", "_half"))}
    return out


NO_PAIR_TIED = "every pair is tied (equal labelled scores): no pair to rank, accuracy undefined"


NO_PAIR_SCORED = "no pair could be scored: accuracy undefined"


def pair_accuracy(preferred: list[float], other: list[float], *, empty_note: str = "") -> dict:
    """Fraction of pairs where the preferred response scores strictly higher; ties apart.

    No pairs: accuracy is None with `notes` saying why (`empty_note`)."""
    correct = sum(p > o for p, o in zip(preferred, other))
    ties = sum(p == o for p, o in zip(preferred, other))
    n = len(preferred)
    out = {
        "n": n,
        "correct": correct,
        "wrong": n - correct - ties,
        "ties": ties,
        "accuracy": correct / n if n else None,
        "accuracy_ties_half": (correct + ties / 2) / n if n else None,
    }
    if not n:
        why = empty_note or "no pair: accuracy undefined"
        out["notes"] = {"accuracy": why, "accuracy_ties_half": why}
    return out


def labelled_pairs(rows: list[dict]) -> list[tuple[int, int, int]]:
    """(row, better, worse) for every pair of responses with different labelled scores."""
    out = []
    for r, row in enumerate(rows):
        s = row["scores"]
        out += [(r, i, j) for i in range(len(s)) for j in range(len(s)) if s[i] > s[j]]
    return out


def reward_table(pairs: list[tuple[int, float]]) -> dict:
    """RRHF paper Table 6 columns of (list index, reward) pairs: mean and std (ddof 0) over the
    responses; max: the mean over lists of each list's best reward; best: the single highest.
    No pair: the values are None with a note (strict JSON)."""
    keys = ("mean", "std", "max", "best")
    if not pairs:
        why = "no scored response: undefined"
        return {
            "prompts": 0,
            "responses": 0,
            **dict.fromkeys(keys),
            "notes": dict.fromkeys(keys, why),
        }
    values = np.asarray([v for _, v in pairs], dtype=float)
    best: dict[int, float] = {}
    for r, v in pairs:
        best[r] = max(best.get(r, -math.inf), v)
    return {
        "prompts": len(best),
        "responses": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "max": float(np.mean(list(best.values()))),
        "best": float(values.max()),
    }


def sample_stats(rows: list[dict]) -> list[dict]:
    """`reward_table` by response source, then for all responses."""
    groups: dict[str, list[tuple[int, float]]] = {}
    for r, row in enumerate(rows):
        sources = row.get("sources") or ["unknown"] * len(row["scores"])
        for s, v in zip(sources, row["scores"]):
            groups.setdefault(s, []).append((r, v))
    groups["all"] = [(r, v) for r, row in enumerate(rows) for v in row["scores"]]
    return [{"source": source, **reward_table(pairs)} for source, pairs in groups.items()]


def reference_metrics(hypotheses: list[str], references: list[list[str]]) -> dict:
    """Corpus BLEU (sacrebleu) and mean ROUGE-1/2/L F1 (rouge-score, stemming; the best of the
    references when there are several)."""
    import sacrebleu
    from rouge_score import rouge_scorer

    k = max(len(r) for r in references)
    streams = [[r[j] if j < len(r) else None for r in references] for j in range(k)]
    bleu = sacrebleu.corpus_bleu(hypotheses, streams).score
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    rouge = {key: [] for key in ("rouge1", "rouge2", "rougeL")}
    for hyp, refs in zip(hypotheses, references):
        scores = scorer.score_multi(refs, hyp)
        for key in rouge:
            rouge[key].append(scores[key].fmeasure)
    return {
        "bleu": float(bleu),
        **{key: float(np.mean(v)) for key, v in rouge.items()},
        "references": len(references),
    }


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


def category_of(row: dict) -> str | None:
    cat = row.get("category", row.get("subset"))
    return None if cat is None else str(cat)


def pairwise_accuracy(rows: list[dict], model_scores: list[list[float]]) -> dict:
    """Accuracy of `model_scores` on the labelled pairs of `rows` (every s_i > s_j of a list):
    overall, per category (a `category` or `subset` column) and, when the subsets are
    RewardBench's, per section (see `rewardbench_sections`). Ties are counted apart."""
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
