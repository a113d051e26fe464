"""The ranked output of `rankalign annotate`: answers in, ranked lists out, nothing lost.

A row of OUT is the input row (project format, `data.normalize`) with
- `annotations`: one entry per annotator, `{annotator, order, ties, seconds, shown_order,
  all_bad}`; `order` lists the response indices best first, `ties` the groups of indices ranked
  equal (each group adjacent in `order`), `shown_order` the indices in the order the page showed
  them, `seconds` the time from showing the prompt to the answer;
- `scores`: k − mean rank over the annotators (rank 1 = best; tied responses share the mean of
  their positions, so ties get equal scores). This is the mean Borda count: a response gets a
  point per response ranked below it and half a point per response tied with it;
- `prior_scores`: the input's own `scores` (a reward model's, say), kept for `--agreement`;
- `all_bad: true` when every annotator marked the list "all bad": all k responses tied, so no
  ranking pair comes from it (`train --drop_tied_lists true` leaves such lists out).

Only answered prompts have a row, in input order. Every answer rewrites OUT atomically
(`data.write_jsonl`) under an exclusive lock on OUT's folder, after re-reading it, so several
annotators' servers on one file merge instead of overwriting each other, and a kill at any
moment leaves the file as it was before or after the answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import random
import statistics
from collections.abc import Iterator
from pathlib import Path

from rankalign.annotation.config import NAME
from rankalign.data import check_output_location, load_lists, write_jsonl
from rankalign.errors import UserError

ANSWER_KEYS = {"id", "shown_order", "order", "ties", "all_bad"}


def shown_order(seed: int, annotator: str, row_id: str, k: int) -> list[int]:
    """The order a prompt's responses are shown in: a shuffle seeded by (seed, annotator, id),
    so a reload or a restart shows the same order, and annotators see different orders."""
    digest = hashlib.sha256(f"{seed}\0{annotator}\0{row_id}".encode()).digest()
    order = list(range(k))
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    return order


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_ranking(order, ties, k: int) -> None:
    """Raise ValueError unless `order` is a permutation of 0..k-1 and `ties` a list of disjoint
    groups (2+ distinct indices each) that are adjacent in `order`."""
    if not isinstance(order, list) or not all(_is_int(i) for i in order):
        raise ValueError("order must be a list of integers")
    if sorted(order) != list(range(k)):
        raise ValueError(f"order must be a permutation of 0..{k - 1}, got {order}")
    if not isinstance(ties, list):
        raise ValueError("ties must be a list of lists of integers")
    seen: set[int] = set()
    where = {i: p for p, i in enumerate(order)}
    for group in ties:
        if not isinstance(group, list) or not all(_is_int(i) for i in group):
            raise ValueError("ties must be a list of lists of integers")
        if len(group) < 2 or len(set(group)) != len(group):
            raise ValueError(f"a tie groups 2 or more distinct responses, got {group}")
        if any(i not in where for i in group):
            raise ValueError(f"a tie names a response outside 0..{k - 1}: {group}")
        if seen & set(group):
            raise ValueError(f"a response is in two ties: {group}")
        seen |= set(group)
        positions = sorted(where[i] for i in group)
        if positions[-1] - positions[0] != len(group) - 1:
            raise ValueError(f"tied responses must be adjacent in order: {group}")


def ranks(order: list[int], ties: list[list[int]]) -> list[float]:
    """Rank of each response (index -> rank, 1 = best); a tie group shares the mean of the
    positions it spans (fractional ranking)."""
    rank = {i: float(p + 1) for p, i in enumerate(order)}
    for group in ties:
        mean = sum(rank[i] for i in group) / len(group)
        for i in group:
            rank[i] = mean
    return [rank[i] for i in range(len(order))]


def merged_scores(annotations: list[dict], k: int) -> list[float]:
    """k − mean rank over the annotations (the mean Borda count, half a point per tie)."""
    per = [ranks(a["order"], a.get("ties", [])) for a in annotations]
    return [k - sum(r[i] for r in per) / len(per) for i in range(k)]


def check_annotations(value, k: int, loc: dict) -> list[dict]:
    """The `annotations` of a row read from a file, checked (one-line errors naming the line)."""

    def bad(j: int | None, message: str) -> UserError:
        name = "annotations" if j is None else f"annotations[{j}]"
        return UserError(message, file=loc.get("file"), line=loc.get("line"), field=name)

    if not isinstance(value, list):
        raise bad(None, "must be a list")
    seen = set()
    for j, a in enumerate(value):
        if not isinstance(a, dict):
            raise bad(j, "must be a mapping")
        who = a.get("annotator")
        if not isinstance(who, str) or not NAME.fullmatch(who):
            raise bad(j, f"annotator must be a name, got {who!r}")
        if who in seen:
            raise bad(j, f"annotator '{who}' answered twice")
        seen.add(who)
        try:
            check_ranking(a.get("order"), a.get("ties", []), k)
            check_ranking(a.get("shown_order"), [], k)
        except ValueError as e:
            raise bad(j, str(e)) from None
        s = a.get("seconds")
        if s is not None and (
            not isinstance(s, int | float) or isinstance(s, bool) or not math.isfinite(s) or s < 0
        ):
            raise bad(j, f"seconds must be a number >= 0 or null, got {s!r}")
        if not isinstance(a.get("all_bad", False), bool):
            raise bad(j, "all_bad must be true or false")
    return value


def parse_answer(payload, row: dict, shown: list[int], annotator: str, seconds: float) -> dict:
    """An annotation from the page's answer (positions on the page) in response indices.

    Raises ValueError (the server's 400) unless the payload has exactly the expected keys,
    names this row with the order it was shown in (else it is a stale page), `order` is a
    permutation of the k positions and `ties` is well formed (`check_ranking`). "All bad"
    ignores the order given: every response tied."""
    if not isinstance(payload, dict) or set(payload) != ANSWER_KEYS:
        raise ValueError(f"an answer has exactly the keys {sorted(ANSWER_KEYS)}")
    if payload["id"] != row["id"] or payload["shown_order"] != shown:
        raise ValueError("stale page: this prompt is not shown in that order; reload")
    if not isinstance(payload["all_bad"], bool):
        raise ValueError("all_bad must be true or false")
    k = len(row["responses"])
    check_ranking(payload["order"], payload["ties"], k)
    if payload["all_bad"]:
        order, ties = list(shown), [list(shown)]
    else:
        order = [shown[p] for p in payload["order"]]
        ties = [[shown[p] for p in sorted(g, key=payload["order"].index)] for g in payload["ties"]]
    return {
        "annotator": annotator,
        "order": order,
        "ties": ties,
        "seconds": round(seconds, 3),
        "shown_order": list(shown),
        "all_bad": payload["all_bad"],
    }


def base_row(row: dict) -> dict:
    """An input row as OUT's row starts: its own scores kept as `prior_scores` (unless it is
    itself an annotated row, whose scores are the annotators')."""
    out = dict(row)
    if "annotations" not in out and "scores" in out:
        out["prior_scores"] = out.pop("scores")
    return out


def with_annotations(row: dict, annotations: list[dict]) -> dict:
    """`row` with these annotations and the scores and `all_bad` flag they give."""
    out = {k: v for k, v in row.items() if k not in ("scores", "annotations", "all_bad")}
    out["scores"] = merged_scores(annotations, len(row["responses"]))
    out["annotations"] = annotations
    if all(a.get("all_bad", False) for a in annotations):
        out["all_bad"] = True
    return out


@contextlib.contextmanager
def folder_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on the folder that holds `path` (flock: released if the process dies),
    so two servers never read-modify-write the same output at once."""
    import fcntl

    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class Store:
    """The input rows, the output file and one annotator's progress through them."""

    def __init__(self, input_spec: str, out: str, annotator: str, seed: int, max_rows=None):
        """Reads and checks everything; writes nothing (validate, then serve)."""
        self.out, self.annotator, self.seed = Path(out), annotator, seed
        check_output_location(self.out, field="out")
        if Path(input_spec).exists() and Path(input_spec).resolve() == self.out.resolve():
            # OUT holds only the ranked prompts: the first answer would drop the others
            raise UserError("is the input too; give another --out", file=out, field="out")
        loaded = load_lists(input_spec, limit=max_rows)
        self.report = loaded.report
        self.rows: dict[str, dict] = {}
        for row, loc in zip(loaded.rows, loaded.locations):
            if len(row["responses"]) < 2:  # nothing to rank (sample drops duplicates: k may be 1)
                self.report.dropped["fewer than 2 responses"] += 1
                continue
            if "annotations" in row:
                check_annotations(row["annotations"], len(row["responses"]), loc)
            self.rows[row["id"]] = base_row(row)
        self.report.rows_kept = len(self.rows)
        if not self.rows:
            raise UserError(
                f"no row with 2 or more responses to rank ({self.report.summary()})",
                file=input_spec,
            )
        self.order = list(self.rows)
        # this annotator's answers so far: in OUT, or already in the input (an annotated file
        # given as input), so that nobody is asked twice
        seconds: dict[str, float | None] = {}
        for row in [*self.rows.values(), *self.read_out().values()]:
            for a in row.get("annotations", []):
                if a["annotator"] == annotator:
                    seconds[row["id"]] = a.get("seconds")
        self.done: set[str] = set(seconds)
        self.seconds: list[float] = [s for s in seconds.values() if s is not None]

    def read_out(self) -> dict[str, dict]:
        """OUT's rows by id (none when it does not exist yet), each checked against the input."""
        if not self.out.exists():
            return {}
        rows = {}
        loaded = load_lists(self.out, min_responses=2)
        for row, loc in zip(loaded.rows, loaded.locations):
            given = self.rows.get(row["id"])
            if given is None:
                raise UserError(
                    f"holds row '{row['id']}', which is not among the input's rows "
                    "(another input, or a smaller max_rows? use another --out)",
                    file=self.out,
                    line=loc.get("line"),
                )
            if row["responses"] != given["responses"]:
                raise UserError(
                    f"row '{row['id']}' has other responses than the input's (another input? "
                    "use another --out)",
                    file=self.out,
                    line=loc.get("line"),
                    field="responses",
                )
            if not row.get("annotations"):
                raise UserError(
                    f"row '{row['id']}' has no annotations: not a file `rankalign annotate` "
                    "wrote (use another --out)",
                    file=self.out,
                    line=loc.get("line"),
                    field="annotations",
                )
            check_annotations(row["annotations"], len(row["responses"]), loc)
            rows[row["id"]] = row
        return rows

    def shown(self, row_id: str) -> list[int]:
        return shown_order(self.seed, self.annotator, row_id, len(self.rows[row_id]["responses"]))

    def next_id(self, skipped: set[str] = frozenset()) -> str | None:
        """The first prompt, in input order, this annotator has not ranked nor skipped."""
        return next((i for i in self.order if i not in self.done and i not in skipped), None)

    def answer(self, payload, seconds: float) -> bool:
        """Check an answer from the page (`parse_answer`; ValueError when malformed) and record
        it; False, and nothing written, when this annotator already answered that prompt."""
        row_id = payload.get("id") if isinstance(payload, dict) else None
        if not isinstance(row_id, str) or row_id not in self.rows:
            raise ValueError("id must name a prompt of the input")
        if row_id in self.done:
            return False
        row, shown = self.rows[row_id], self.shown(row_id)
        return self.record(parse_answer(payload, row, shown, self.annotator, seconds), row_id)

    def record(self, annotation: dict, row_id: str) -> bool:
        """Add this annotator's answer for `row_id` to OUT (atomically, under the folder lock);
        False, and nothing written, when the annotator already answered it (a stale or repeated
        submit)."""
        if row_id in self.done:
            return False
        self.out.parent.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.out):
            rows = self.read_out()  # another annotator's server may have written since
            row = rows.get(row_id, self.rows[row_id])
            annotations = list(row.get("annotations", []))
            if any(a["annotator"] == self.annotator for a in annotations):
                self.done.add(row_id)
                return False
            rows[row_id] = with_annotations(row, annotations + [annotation])
            write_jsonl(self.out, [rows[i] for i in self.order if i in rows])
        self.done.add(row_id)
        if annotation.get("seconds") is not None:
            self.seconds.append(annotation["seconds"])
        return True

    def progress(self, skipped: set[str] = frozenset()) -> dict:
        """n of N for this annotator and the time left at their median pace (None before the
        first answer)."""
        total, done = len(self.order), len(self.done & set(self.rows))
        pace = statistics.median(self.seconds) if self.seconds else None
        left = total - done
        return {
            "done": done,
            "total": total,
            "skipped": len(skipped - self.done),
            "eta_seconds": None if pace is None else round(pace * left, 1),
        }
