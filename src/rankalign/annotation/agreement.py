"""How much annotators agree with each other and with a model's scores (`annotate --agreement`).

- Kendall's tau-b between two rankings of one list: (C − D) / sqrt((n0 − n1)(n0 − n2)), C/D the
  concordant/discordant pairs, n0 = k(k−1)/2, n1/n2 the pairs tied in the first/second ranking
  (Kendall 1945); undefined (None) when either ranking ties everything. Averaged over every
  (list, pair of annotators), or over every list for an annotator against a model's scores.
- Krippendorff's alpha with the ordinal metric (Krippendorff 2011, "Computing Krippendorff's
  alpha-reliability"): a unit is one response of one list, a value the rank an annotator gave
  it (1 = best, ties share their mean position). alpha = 1 − D_o / D_e with the coincidence
  matrix o_ck = Σ_u (number of c-k pairs in u) / (m_u − 1), n_c = Σ_k o_ck, and
  δ²_ck = (Σ_{g=c..k} n_g − (n_c + n_k)/2)²: D_o = Σ o_ck δ²_ck / n,
  D_e = Σ n_c n_k δ²_ck / (n (n − 1)). Only units with 2+ values count.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

from rankalign.annotation.store import check_annotations, merged_scores, ranks
from rankalign.data import load_lists


def kendall_tau_b(x: list[float], y: list[float]) -> float | None:
    """Kendall's tau-b of two score lists (higher = better in both); None when undefined."""
    n0 = concordant = discordant = tied_x = tied_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        n0 += 1
        dx, dy = (x[i] > x[j]) - (x[i] < x[j]), (y[i] > y[j]) - (y[i] < y[j])
        tied_x += dx == 0
        tied_y += dy == 0
        concordant += dx * dy > 0
        discordant += dx * dy < 0
    denominator = math.sqrt((n0 - tied_x) * (n0 - tied_y))
    return (concordant - discordant) / denominator if denominator else None


def krippendorff_alpha_ordinal(units: list[list[float]]) -> float | None:
    """Krippendorff's alpha, ordinal metric, of `units` (each: the values its coders gave; a
    missing value is simply absent). None when there is no variation to measure (D_e = 0)."""
    units = [u for u in units if len(u) >= 2]
    values = sorted({v for u in units for v in u})
    index = {v: i for i, v in enumerate(values)}
    size = len(values)
    o = [[0.0] * size for _ in range(size)]
    for u in units:
        for a, b in itertools.permutations(range(len(u)), 2):
            o[index[u[a]]][index[u[b]]] += 1 / (len(u) - 1)
    n_c = [sum(row) for row in o]
    n = sum(n_c)
    if n < 2:
        return None
    cumulative = list(itertools.accumulate(n_c, initial=0.0))

    def delta2(c: int, k: int) -> float:
        lo, hi = min(c, k), max(c, k)
        return (cumulative[hi + 1] - cumulative[lo] - (n_c[lo] + n_c[hi]) / 2) ** 2

    observed = sum(o[c][k] * delta2(c, k) for c in range(size) for k in range(size))
    expected = sum(n_c[c] * n_c[k] * delta2(c, k) for c in range(size) for k in range(size))
    expected /= n - 1
    return 1 - observed / expected if expected else None


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def agreement(path: str) -> dict:
    """The agreement report of a ranked file (rows with `annotations`; others are counted)."""
    loaded = load_lists(path, min_responses=2)
    annotated, by_annotator = [], defaultdict(int)
    for row, loc in zip(loaded.rows, loaded.locations):
        if row.get("annotations"):
            check_annotations(row["annotations"], len(row["responses"]), loc)
            annotated.append(row)
            for a in row["annotations"]:
                by_annotator[a["annotator"]] += 1
    taus, units, shared = [], [], 0
    for row in annotated:
        given = {a["annotator"]: ranks(a["order"], a.get("ties", [])) for a in row["annotations"]}
        if len(given) < 2:
            continue
        shared += 1
        for r1, r2 in itertools.combinations(given.values(), 2):
            taus.append(kendall_tau_b([-v for v in r1], [-v for v in r2]))
        k = len(row["responses"])
        units += [[r[i] for r in given.values()] for i in range(k)]
    report = {
        "file": str(path),
        "rows": loaded.report.rows_kept,
        "annotated_rows": len(annotated),
        "annotators": dict(sorted(by_annotator.items())),
        "between_annotators": {
            "rows": shared,
            "pairs": len(taus),
            "undefined_pairs": sum(t is None for t in taus),
            "kendall_tau_b": _mean(taus),
            "krippendorff_alpha_ordinal": krippendorff_alpha_ordinal(units),
        },
        "against_scores": _against_scores(annotated, sorted(by_annotator)),
        "notes": {},
    }
    between = report["between_annotators"]
    if not shared:
        report["notes"]["between_annotators"] = "no row was ranked by two or more annotators"
    elif between["krippendorff_alpha_ordinal"] is None:
        report["notes"]["krippendorff_alpha_ordinal"] = "undefined: every rank given is the same"
    if not report["against_scores"]:
        report["notes"]["against_scores"] = "no row carries prior_scores or score_parts"
    return report


def _against_scores(rows: list[dict], names: list[str]) -> dict:
    """Mean tau-b of each annotator (and of the merged human scores) against each model score
    the rows carry: `prior_scores` (the input's scores) and each `score_parts` reward."""
    out: dict[str, dict] = {}
    references: dict[str, list] = defaultdict(list)  # name -> [(row, values)]
    for row in rows:
        if isinstance(row.get("prior_scores"), list):
            references["prior_scores"].append((row, row["prior_scores"]))
        for part, values in (row.get("score_parts") or {}).items():
            references[f"score_parts.{part}"].append((row, values))
    for name, pairs in sorted(references.items()):
        per: dict[str, list] = defaultdict(list)
        for row, values in pairs:
            k = len(row["responses"])
            if not isinstance(values, list) or len(values) != k:
                continue
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
                continue  # a reward that failed on this row (None) gives no comparison
            for a in row["annotations"]:
                rank = ranks(a["order"], a.get("ties", []))
                per[a["annotator"]].append(kendall_tau_b([-v for v in rank], values))
            per["merged"].append(kendall_tau_b(merged_scores(row["annotations"], k), values))
        out[name] = {
            "rows": len(per["merged"]),
            "kendall_tau_b": {who: _mean(per[who]) for who in [*names, "merged"] if per[who]},
        }
    return out


def print_agreement(report: dict) -> None:
    """The report as a few lines on stdout."""

    def num(v) -> str:
        return "undefined" if v is None else f"{v:+.3f}"

    between = report["between_annotators"]
    who = ", ".join(f"{k} ({v})" for k, v in report["annotators"].items()) or "none"
    print(f"{report['file']}: {report['annotated_rows']} of {report['rows']} rows annotated")
    print(f"annotators (rows ranked): {who}")
    print(
        f"between annotators ({between['rows']} rows ranked by 2+, {between['pairs']} pairs): "
        f"Kendall's tau-b {num(between['kendall_tau_b'])}, "
        f"Krippendorff's alpha (ordinal) {num(between['krippendorff_alpha_ordinal'])}"
    )
    for name, part in report["against_scores"].items():
        taus = ", ".join(f"{k} {num(v)}" for k, v in part["kendall_tau_b"].items())
        print(f"against {name} ({part['rows']} rows), Kendall's tau-b: {taus}")
    for key, note in report["notes"].items():
        print(f"note: {key}: {note}")
