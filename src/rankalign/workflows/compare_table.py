"""`rankalign compare`'s table: from every method's per-seed results (`result.json`) to
compare.json's content and the console table.

- `methods`: one row per method: the pooled mean held-out reward with its bootstrap interval
  (n = prompts x seeds), win rate against base, perplexity, length, train time, peak memory;
- `curves`: held-out reward against optimizer step (step 0: base);
- `paired`: every method against base and against every other method on the same held-out
  prompts (`paired_section`): the mean paired difference, its paired bootstrap interval, the
  exact sign test, the Wilcoxon signed-rank test, Holm's correction over all the table's
  comparisons and a verdict; against base also the length-controlled difference.
"""

from __future__ import annotations

import numpy as np

from rankalign.metrics import bootstrap_ci, win_rate
from rankalign.metrics import compare as compare_rewards
from rankalign.paired import (  # versus: public here too
    decide,
    length_controlled_difference,
    paired_comparison,
    versus,
)
from rankalign.report import number

ALPHA = 0.05  # family-wise error rate of the table's comparisons (Holm)
QUICK_VERDICT = "too small to decide (--quick)"
UNIT = (
    "held-out prompt: each method's reward on a prompt is the mean over its seeds (base: one "
    "evaluation; with eval_samples, each evaluation's reward on a prompt is the mean of its "
    "samples), and the difference of two methods on a prompt is one unit; prompts are "
    "resampled (the seeds of a prompt stay together)"
)


def _mean(values: list) -> float | None:
    x = [v for v in values if v is not None]
    return float(np.mean(x)) if x else None


def pooled(points: list[dict], *, resamples: int, seed: int, by_prompt: bool = False) -> dict:
    """One mean and bootstrap interval over the rewards of several seeds' evaluations (each a
    dict with a per-prompt `rewards` list): n = prompts x seeds, None rewards left out;
    `by_prompt` (sampled evaluation): each prompt's mean over the seeds is one unit, n = prompts
    (the prompt is the unit of resampling, as in the paired statistics)."""
    if by_prompt:
        values = [v for v in per_prompt(points).values() if v is not None]
    else:
        values = [v for p in points for v in p["rewards"] if v is not None]
    if not values:
        why = "no held-out response could be scored: the mean reward is undefined"
        keys = ("mean_reward", "ci_low", "ci_high")
        return {**dict.fromkeys(keys), "n": 0, "notes": dict.fromkeys(keys, why)}
    low, high = bootstrap_ci(values, resamples=resamples, seed=seed)
    return {"mean_reward": float(np.mean(values)), "ci_low": low, "ci_high": high, "n": len(values)}


def pooled_kl(points: list[dict], *, resamples: int, seed: int) -> dict:
    """KL from the start model over several seeds' evaluations: per prompt the mean over seeds
    of its KL estimate (`kls`, from the policy's own samples), then the mean over prompts with a
    bootstrap interval (prompts resampled). None with a note without sampled evaluation."""
    keys = ("kl", "kl_ci_low", "kl_ci_high")
    if not all("kls" in p for p in points):
        why = "greedy evaluation: the KL estimate needs the policy's samples (eval_samples > 0)"
        return {**dict.fromkeys(keys), "notes": dict.fromkeys(keys, why)}
    values = [v for v in per_prompt(points, "kls").values() if v is not None]
    if not values:
        why = "no sample: the KL estimate is undefined"
        return {**dict.fromkeys(keys), "notes": dict.fromkeys(keys, why)}
    if all(v == values[0] for v in values):  # base: 0 by definition, no interval to draw
        return {
            "kl": float(values[0]),
            "kl_ci_low": float(values[0]),
            "kl_ci_high": float(values[0]),
        }
    low, high = bootstrap_ci(values, resamples=resamples, seed=seed)
    return {"kl": float(np.mean(values)), "kl_ci_low": low, "kl_ci_high": high}


def win_rate_vs(points: list[dict], base: dict) -> dict:
    """Per prompt and seed, the method's reward against base's on the same prompt (+1, 0, -1;
    None where either is unscored), pooled over seeds (`metrics.win_rate`)."""
    base_reward = dict(zip(base["ids"], base["rewards"]))
    verdicts = []
    for p in points:
        for pid, r in zip(p["ids"], p["rewards"]):
            b = base_reward.get(pid)
            verdicts.append(None if r is None or b is None else compare_rewards(r, b))
    return win_rate(verdicts)


def build_table(
    results: dict[str, list[dict]],
    *,
    resamples: int = 1000,
    seed: int = 0,
    quick: bool = False,
    by_prompt: bool = False,
) -> dict:
    """{method: [result per seed]} -> compare.json's content: one row per method (pooled reward
    and CI, KL from the start model (`pooled_kl`), win rate vs base, perplexity, length, train
    time, peak memory), one reward-vs-step curve per method (step 0 = base; each point with its
    KL: the reward-KL frontier) and the paired comparisons (`paired_section`; `quick`: a --quick
    run, its verdicts withheld). `by_prompt`: pool by prompt (`pooled`). `base` must be among
    the results."""
    pool = {"resamples": resamples, "seed": seed}
    base = results["base"][0]["final"]
    rows, curves = {}, {}
    for name, runs in results.items():
        finals = [r["final"] for r in runs]
        row = {
            "kind": runs[0]["kind"],
            "loss": runs[0]["loss"],
            "seeds": [r["seed"] for r in runs if r["seed"] is not None],
            **pooled(finals, by_prompt=by_prompt, **pool),
        }
        notes = dict(row.pop("notes", {}))
        kl = pooled_kl(finals, **pool)
        notes.update(kl.pop("notes", {}))
        row.update(kl)
        if name == "base":
            row.update(dict.fromkeys(("win_rate", "tie_rate", "loss_rate")))
            notes["win_rate"] = "base is the reference of the win rate"
        else:
            w = win_rate_vs(finals, base)
            row.update({k: w[k] for k in ("win_rate", "tie_rate", "loss_rate")})
            row["win_n"] = w["n"]
            notes.update(w.get("notes", {}))
        row["perplexity"] = _mean([f.get("perplexity") for f in finals])
        row["mean_length"] = _mean([f.get("mean_length") for f in finals])
        for key in ("train_seconds", "peak_rss_mb", "peak_gpu_mb"):
            values = [r.get(key) for r in runs]
            if name == "base" or all(v is None for v in values):
                row[key] = None
                if name != "base" and key != "peak_gpu_mb":
                    notes[key] = next(
                        (r["notes"][key] for r in runs if key in r.get("notes", {})), "not measured"
                    )
            else:  # time: mean over seeds; memory: the highest peak
                known = [v for v in values if v is not None]
                row[key] = float(np.mean(known)) if key == "train_seconds" else float(max(known))
        if notes:
            row["notes"] = notes
        rows[name] = row
        by_step: dict[int, list[dict]] = {}
        for r in runs:
            for p in r["curve"]:
                by_step.setdefault(p["step"], []).append(p)
        if name != "base":
            by_step.setdefault(0, []).append(base)
        curves[name] = [
            {"step": s, **pooled(by_step[s], by_prompt=by_prompt, **pool)}
            | {k: v for k, v in pooled_kl(by_step[s], **pool).items() if k != "notes"}
            for s in sorted(by_step)
        ]
    paired = paired_section(results, resamples=resamples, seed=seed, quick=quick)
    return {"methods": rows, "curves": curves, "paired": paired}


# ----------------------------------------------------------------------------- paired


def per_prompt(points: list[dict], key: str = "rewards") -> dict[str, float | None]:
    """{prompt id: mean over `points` (a method's seeds) of its known `key` values (None: none)}
    from evaluations holding per-prompt `ids` and `key` lists."""
    values: dict[str, list[float]] = {}
    for p in points:
        for pid, v in zip(p["ids"], p[key]):
            values.setdefault(pid, [])
            if v is not None:
                values[pid].append(v)
    return {pid: float(np.mean(v)) if v else None for pid, v in values.items()}


def paired_section(
    results: dict[str, list[dict]], *, resamples: int, seed: int, quick: bool = False
) -> dict:
    """Every method against every method listed before it (base first), prompt by prompt.

    Per comparison `method` vs `versus` (b - a is its mirror: the difference negated, the same
    p-values): `paired.paired_comparison` of the per-prompt rewards (mean difference, paired
    bootstrap interval, sign test, Wilcoxon), then `p_holm`: Holm's adjustment of the Wilcoxon
    p-values over all comparisons of the table, `significant` (p_holm <= ALPHA) and the
    `verdict`; against base also `length_controlled` (`paired.length_controlled_difference` on
    the per-prompt lengths in tokens). Undefined values are None with a note."""
    finals = {name: [r["final"] for r in runs] for name, runs in results.items()}
    rewards = {name: per_prompt(points) for name, points in finals.items()}
    ids = list(dict.fromkeys(pid for r in rewards.values() for pid in r))
    names = list(results)
    comparisons = []
    for i, a in enumerate(names):
        for b in names[:i]:
            ua = [rewards[a].get(pid) for pid in ids]
            ub = [rewards[b].get(pid) for pid in ids]
            c = {"method": a, "versus": b}
            c.update(paired_comparison(ua, ub, resamples=resamples, seed=seed))
            if b == "base":
                c["length_controlled"] = _length_controlled(
                    finals[a], finals[b], ids, seed, resamples
                )
            comparisons.append(c)
    for c in decide(comparisons, ALPHA):
        if quick:  # a first look: the statistics stand, the verdicts are withheld
            c["verdict"] = QUICK_VERDICT
    out = {
        "unit": UNIT,
        "units": len(ids),
        "test": "Wilcoxon signed-rank (exact for n <= 50 without tied magnitudes, else normal "
        "with tie and continuity correction), zero differences dropped",
        "correction": f"Holm over all {len(comparisons)} comparisons of the table",
        "alpha": ALPHA,
        "comparisons": comparisons,
    }
    if quick:
        out["notes"] = {"verdict": "a --quick run is a first look: too small to decide"}
    return out


def _length_controlled(a: list[dict], b: list[dict], ids: list, seed: int, resamples: int) -> dict:
    """Reward difference at equal length (per-prompt rewards and lengths, means over seeds)."""
    if not all("lengths" in p for p in a + b):
        why = "no per-prompt lengths in result.json (evaluated by an earlier rankalign)"
        keys = ("difference", "ci_low", "ci_high", "slope")
        return {"n": 0, **dict.fromkeys(keys), "notes": dict.fromkeys(keys, why)}
    ra, rb, la, lb = (per_prompt(x, key) for key in ("rewards", "lengths") for x in (a, b))
    rows = [
        (ra.get(i), rb.get(i), la.get(i), lb.get(i))
        for i in ids
        if None not in (ra.get(i), rb.get(i), la.get(i), lb.get(i))
    ]
    dr = [x - y for x, y, _, _ in rows]
    dl = [x - y for _, _, x, y in rows]
    return length_controlled_difference(dr, dl, resamples=resamples, seed=seed)


def summary_table(table: dict) -> str:
    """The console table: one row per method, its difference from base with the paired interval
    and the verdict of the Holm-corrected signed-rank test."""
    lines = [
        "| method | mean reward (95% CI) | Δ vs base (95% CI) | verdict | KL (95% CI) | "
        "win rate vs base | perplexity | length | train s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in table["methods"].items():
        ci = ", ".join(number(m.get(k), "+.3f") for k in ("ci_low", "ci_high"))
        win = number(100 * m["win_rate"], ".0f") + "%" if m.get("win_rate") is not None else "-"
        c = versus(table.get("paired", {}), name, "base")
        delta, said = "-", "-"
        if c is not None:
            bounds = ", ".join(number(c.get(k), "+.3f", "-") for k in ("ci_low", "ci_high"))
            delta = f"{number(c.get('mean_difference'), '+.3f')} ({bounds})"
            said = c["verdict"]
        lines.append(
            f"| {name} | {number(m.get('mean_reward'), '+.3f')} ({ci}) | {delta} | {said} | "
            f"{kl_cell(m)} | {win} | {number(m.get('perplexity'), '.2f')} | {number(m.get('mean_length'), '.1f')} "
            f"| {number(m.get('train_seconds'), '.0f', '-')} | "
            f"{number(m.get('peak_rss_mb'), '.0f', '-')} |"
        )
    return "\n".join(lines)


def kl_cell(m: dict) -> str:
    """`KL (low, high)` of a table row, "-" where it is not estimated (greedy evaluation)."""
    if m.get("kl") is None:
        return "-"
    bounds = ", ".join(number(m.get(k), ".3f", "-") for k in ("kl_ci_low", "kl_ci_high"))
    return f"{number(m['kl'], '.3f')} ({bounds})"
