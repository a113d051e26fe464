"""The resume protocol: resumable sharded output for long stages (sample, score).

A long stage writes OUT through a ShardedWriter: rows are committed in shards in OUT.parts/ (one
writer per process, told apart by a tag in shard names), and OUT.parts/run.json holds a hash of
what decides the outputs. A rerun of the same command skips the rows already committed; a rerun
with other settings is refused; the last step merges the shards into OUT.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from rankalign.data.write import atomic_write_text, write_jsonl
from rankalign.errors import UserError


def done_rows(parts: str | os.PathLike) -> list[dict]:
    """The rows committed in a ShardedWriter folder (`<out>.parts/`), in shard order; none when
    the folder does not exist (read only: nothing is created)."""
    parts = Path(parts)
    rows = []
    for shard in sorted(parts.glob("shard-*.jsonl")) if parts.is_dir() else []:
        rows += [
            json.loads(line) for line in shard.read_text(encoding="utf-8").splitlines() if line
        ]
    return rows


def done_ids(parts: str | os.PathLike) -> set[str]:
    """Ids of the rows committed in `parts` (see `done_rows`)."""
    return {r["id"] for r in done_rows(parts)}


RUN_FILE = "run.json"


def parts_folder(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _run_hash(identity: dict) -> str:
    # a hash, not the values: an identity may hold secrets (an api key in a reward spec)
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_resume(out: str | os.PathLike, identity: dict, *, overwrite: bool) -> set[str]:
    """The validation side of the resume protocol (reads only). Returns the ids a partial run of
    the same `identity` already committed (none with `overwrite`); refuses a partial run of
    other settings, and an existing OUT without `overwrite`."""
    out, parts = Path(out), parts_folder(out)
    if overwrite:
        return set()
    if parts.is_dir():
        record = parts / RUN_FILE
        before = json.loads(record.read_text()).get("hash") if record.is_file() else None
        if before != _run_hash(identity):
            raise UserError(
                f"a partial run with other settings is in {parts.name}/: rerun the same "
                "command to finish it, or pass --overwrite true",
                file=out,
            )
        return done_ids(parts)
    if out.exists():
        raise UserError("output exists (pass --overwrite true to replace it)", file=out)
    return set()


def start_run(out: str | os.PathLike, identity: dict, *, overwrite: bool) -> None:
    """After validation, on one process: clear what `overwrite` replaces and record `identity`
    in OUT.parts/ (before any shard is written)."""
    out, parts = Path(out), parts_folder(out)
    if overwrite:
        out.unlink(missing_ok=True)
        if parts.exists():
            shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write_text(parts / RUN_FILE, json.dumps({"hash": _run_hash(identity)}) + "\n")


class ShardedWriter:
    """Resumable output for long stages: rows are committed in atomically written shards.

    Shards live in `<out>.parts/`; each holds the rows of consecutive input positions. After a
    kill, `done_ids` tells which rows are finished; `finish` merges shards in input order into
    `<out>` (atomically) and removes the folder. A row is never written twice or lost.
    Several processes share the folder, each with its own `tag` (e.g. "rank1-") in shard names.
    """

    def __init__(self, out: str | os.PathLike, shard_size: int = 64, tag: str = ""):
        self.out = Path(out)
        self.parts = parts_folder(out)
        self.shard_size, self.tag = shard_size, tag
        self.parts.mkdir(parents=True, exist_ok=True)
        # temp files a kill left behind (only this writer's: other processes may be writing)
        for stale in self.parts.glob(f".shard-{tag}[0-9]*.tmp"):
            stale.unlink()
        self._pending: list[dict] = []
        self._next = len(list(self.parts.glob(f"shard-{tag}[0-9]*.jsonl")))

    def done_rows(self) -> list[dict]:
        return done_rows(self.parts)

    def done_ids(self) -> set[str]:
        return done_ids(self.parts)

    def add(self, row: dict) -> None:
        self._pending.append(row)
        if len(self._pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        write_jsonl(self.parts / f"shard-{self.tag}{self._next:06d}.jsonl", self._pending)
        self._next += 1
        self._pending = []

    def finish(self, order: list[str], prepare=None) -> list[dict]:
        """Merge all shards into the output in the order of `order` (the input ids), each row
        through `prepare` first when given (e.g. to take private counters off)."""
        self.flush()
        by_id: dict[str, dict] = {}
        for r in self.done_rows():
            by_id.setdefault(r["id"], r)
        missing = [i for i in order if i not in by_id]
        if missing:
            raise RuntimeError(
                f"{len(missing)} rows missing from {self.parts} (first: {missing[0]})"
            )
        rows = [prepare(by_id[i]) if prepare else by_id[i] for i in order]
        write_jsonl(self.out, rows)
        shutil.rmtree(self.parts)
        return rows
