"""Validating rows: reading, normalizing and the checks across rows (duplicate ids, empty
responses, required scores, minimum k, tied lists) with every filter counted in a LoadReport."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from rankalign.data.files import read_records, row_error
from rankalign.data.layouts import normalize
from rankalign.errors import UserError


@dataclass
class LoadReport:
    """Counts of what was read, kept and filtered: printed and saved beside outputs, never silent."""

    rows_read: int = 0
    rows_kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "dropped": dict(self.dropped),
            "notes": dict(self.notes),
        }

    def summary(self) -> str:
        parts = [f"read {self.rows_read} rows, kept {self.rows_kept}"]
        parts += [f"dropped {n} ({why})" for why, n in sorted(self.dropped.items())]
        parts += [f"{n} {what}" for what, n in sorted(self.notes.items())]
        return "; ".join(parts)


@dataclass
class LoadedData:
    rows: list[dict]
    locations: list[dict]
    report: LoadReport


def load_lists(
    spec: str | os.PathLike,
    *,
    require_scores: bool = False,
    min_responses: int = 0,
    empty_responses: str = "error",
    drop_tied_lists: bool = False,
    limit: int | None = None,
) -> LoadedData:
    """Read and validate ranked lists.

    - `require_scores`: every row must carry scores (training inputs).
    - `min_responses`: rows with fewer responses are an error naming the line (e.g. k=1 with a
      ranking loss).
    - `empty_responses`: "error" (default) or "drop" (the empty responses are removed, counted).
    - `drop_tied_lists`: drop lists whose scores are all equal (counted); otherwise counted only.
    """
    if empty_responses not in ("error", "drop"):
        raise UserError(f"empty_responses must be 'error' or 'drop', got '{empty_responses}'")
    rows, locs, report, seen = [], [], LoadReport(), {}
    for i, (rec, loc) in enumerate(read_records(spec)):
        if limit is not None and len(rows) >= limit:
            break
        report.rows_read += 1
        row = normalize(rec, loc, i)
        if row["id"] in seen:
            raise row_error(
                loc, "id", f"duplicate id '{row['id']}' (first seen at {_where(seen[row['id']])})"
            )
        seen[row["id"]] = loc
        empty = [j for j, r in enumerate(row["responses"]) if not r.strip()]
        if empty and empty_responses == "error":
            raise row_error(
                loc,
                f"responses[{empty[0]}]",
                "empty or whitespace-only response "
                "(set empty_responses: drop to remove such responses)",
            )
        if empty:
            keep = [j for j in range(len(row["responses"])) if j not in empty]
            for key in ("responses", "scores", "sources"):
                if key in row:
                    row[key] = [row[key][j] for j in keep]
            report.notes["empty responses removed"] += len(empty)
        if require_scores and "scores" not in row:
            raise row_error(loc, "scores", "missing (run `rankalign score` first, or add scores)")
        if len(row["responses"]) < min_responses:
            if empty:
                report.dropped["too few responses after removing empty ones"] += 1
                continue
            raise row_error(
                loc,
                "responses",
                f"has {len(row['responses'])} response(s); this needs at least {min_responses}",
            )
        scores = row.get("scores")
        if scores and len(scores) > 1 and len(set(scores)) == 1:
            if drop_tied_lists:
                report.dropped["all responses tied"] += 1
                continue
            report.notes["lists with all responses tied"] += 1
        rows.append(row)
        locs.append(loc)
    report.rows_kept = len(rows)
    if not rows:
        raise UserError(
            "no usable rows" + (f" ({report.summary()})" if report.rows_read else ""), file=spec
        )
    return LoadedData(rows, locs, report)


def _where(loc: dict) -> str:
    return f"line {loc['line']}" if "line" in loc else f"row {loc.get('row')}"
