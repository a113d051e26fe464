"""Tokenized ranked lists as a memory-mapped Arrow table, cached on disk and shared.

Training reads its data in one streaming pass: each row is read and validated
(`data.iter_lists`: the checks and one-line errors of `load_lists`), batches of rows are
tokenized (`tokenization.encode_lists`: the ids `encode_list` gives, every text of a batch in one
fast-tokenizer call) and appended to an Arrow IPC file, token ids as int32. Training maps the
file: no row is held as Python lists, and every process of a run maps the same pages.

Cache: the file is named by a key over everything that decides its content: the data's bytes,
the tokenizer (its full serialization, special tokens and chat template), the template mode, the
length and filter options, and the source of the modules that turn rows into ids. A rerun, a
resume, a `compare` method after the first and every process of a distributed run find it and
map it. Whichever process comes first builds it under a file lock; the others wait, then map.
Each table has a record beside it (rows, size, SHA-256, the data report); a table that does not
match its record (a kill mid-write, a damaged disk) is rebuilt.

The folder is `$RANKALIGN_DATA_CACHE`, else `$XDG_CACHE_HOME/rankalign/tokenized` (default
`~/.cache/rankalign/tokenized`); where it cannot be written the table is built in a temporary
folder for this process alone.
"""

from __future__ import annotations

import atexit
import bisect
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path

import torch

from rankalign.data import LoadReport, atomic_write_text, iter_lists, looks_like_hub_name
from rankalign.errors import UserError
from rankalign.tokenization import encode_lists

CACHE_ENV = "RANKALIGN_DATA_CACHE"
# bumped when the table's columns or their meaning change
FORMAT = 1
BATCH_ROWS = 1000  # rows tokenized per tokenizer call and per Arrow record batch


def cache_dir() -> Path:
    """Where tokenized tables are kept (module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rankalign" / "tokenized"


def _schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()),
            ("prompt_ids", pa.list_(pa.int32())),
            ("response_ids", pa.list_(pa.list_(pa.int32()))),
            ("scores", pa.list_(pa.float64())),
        ]
    )


# ----------------------------------------------------------------------------- the cache key


def _file_digest(path: Path, h) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)


def content_hash(spec: str | os.PathLike) -> str | None:
    """SHA-256 of the data's bytes: a file, every file of a `save_to_disk` folder (with their
    names), or a hub dataset's cached Arrow files. None where the data cannot be read this way;
    the reader then reports why (its own one-line error), and nothing is cached."""
    path, h = Path(spec), hashlib.sha256()
    try:
        if path.is_file():
            _file_digest(path, h)
        elif path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                h.update(f"{f.relative_to(path)}\0".encode())
                _file_digest(f, h)
        elif not path.exists() and looks_like_hub_name(str(spec)):
            import datasets

            name, _, split = str(spec).partition(":")
            ds = datasets.load_dataset(name, split=split or "train")
            h.update(str(spec).encode())
            for f in ds.cache_files:
                _file_digest(Path(f["filename"]), h)
        else:
            return None
    except Exception:  # unreadable, or not a dataset: the reader says what is wrong
        return None
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """What decides a tokenizer's ids: a fast tokenizer's full serialization (vocabulary, merges,
    normalizer, post-processor), else its vocabulary and init options; plus the special tokens
    and the chat template."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
        h.update(
            json.dumps(getattr(tokenizer, "init_kwargs", {}), sort_keys=True, default=str).encode()
        )
    extra = {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "special": getattr(tokenizer, "all_special_tokens", None),
        "chat_template": getattr(tokenizer, "chat_template", None),
    }
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _code_hash() -> str:
    """The source of the modules that turn rows into ids: a change to any of them is a new key."""
    from rankalign import tokenization
    from rankalign.data import files, layouts, validate

    h = hashlib.sha256()
    for module in (files, layouts, validate, tokenization, sys.modules[__name__]):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()


def table_key(data_hash: str, tokenizer, options: dict) -> str:
    parts = {
        "format": FORMAT,
        "code": _code_hash(),
        "data": data_hash,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "options": options,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


# ----------------------------------------------------------------------------- building


def _batches(rows: Iterator, size: int) -> Iterator[list]:
    while batch := list(islice(rows, size)):
        yield batch


def _row_estimate(spec: str | os.PathLike, limit: int | None) -> int | None:
    """Rows to expect, for the progress bar's ETA: a JSONL file's lines, a Parquet file's rows;
    None (a rate without ETA) for the other sources."""
    path = Path(spec)
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson") and path.is_file():
            n, last = 0, b"\n"
            with open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    n, last = n + chunk.count(b"\n"), chunk[-1:]
            total = n + (last != b"\n")
        elif path.suffix.lower() == ".parquet" and path.is_file():
            import pyarrow.parquet as pq

            total = pq.ParquetFile(path).metadata.num_rows
        else:
            return None
    except Exception:  # the reader reports an unreadable file
        return None
    return min(total, limit) if limit is not None else total


def build_table(
    spec: str | os.PathLike, tokenizer, dest: Path, *, load: dict, encoding: dict
) -> dict:
    """Read, validate and tokenize `spec` into the Arrow file `dest`; returns the data report.

    `load`: `iter_lists` options; `encoding`: `encode_lists` options plus `drop_over_length`.
    Errors come in the order the in-memory path gives them: every row is validated before a
    tokenization error (a prompt the template mode cannot encode) is raised."""
    import pyarrow as pa
    from tqdm.auto import tqdm

    encoding = dict(encoding)
    drop_over_length = encoding.pop("drop_over_length")
    report = LoadReport()
    # tokenization's counts follow validation's in the report, as when all rows were validated
    # first
    tok_dropped, tok_notes = Counter(), Counter()
    schema, kept, pending = _schema(), 0, None
    # on a terminal only, after 2 s (small data shows none), and cleared if the build fails: a
    # refused run prints its one error line alone
    bar = tqdm(
        total=_row_estimate(spec, load.get("limit")),
        desc=f"rankalign: tokenizing {Path(spec).name}",
        unit=" rows",
        file=sys.stderr,
        disable=None,
        delay=2,
    )
    rows = iter_lists(spec, report, **load)
    try:
        with pa.OSFile(str(dest), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for batch in _batches(rows, BATCH_ROWS):
                bar.update(report.rows_read - bar.n)
                if pending is not None:  # keep validating: a bad row is reported before this
                    continue
                try:
                    encs = encode_lists(
                        tokenizer,
                        [r["prompt"] for r, _ in batch],
                        [r["responses"] for r, _ in batch],
                        **encoding,
                    )
                except UserError as e:
                    pending = e
                    continue
                cols = {"id": [], "prompt_ids": [], "response_ids": [], "scores": []}
                for (row, _), enc in zip(batch, encs):
                    if enc.prompt_truncated or enc.responses_truncated:
                        if drop_over_length:
                            tok_dropped["over max_length"] += 1
                            continue
                        tok_notes["prompts truncated"] += int(enc.prompt_truncated)
                        tok_notes["responses truncated"] += enc.responses_truncated
                    cols["id"].append(row["id"])
                    cols["prompt_ids"].append(enc.prompt_ids)
                    cols["response_ids"].append(enc.response_ids)
                    cols["scores"].append(row.get("scores") or [0.0] * len(row["responses"]))
                kept += len(cols["id"])
                writer.write_batch(pa.record_batch(cols, schema=schema))
            bar.update(report.rows_read - bar.n)
        if pending is not None:
            raise pending
        report.dropped.update(tok_dropped)
        report.notes.update(tok_notes)
        report.rows_kept = kept
        if not kept:
            raise UserError(f"no rows left after filtering ({report.summary()})", file=spec)
    except BaseException:
        bar.leave = False
        raise
    finally:
        bar.close()
    return report.as_dict() | {"summary": report.summary()}


# ----------------------------------------------------------------------------- the cache


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` held by this process (released when the file closes, also if
    the process dies), announced on a terminal when another process holds it."""
    try:
        import fcntl
    except ImportError:  # no flock here: every process builds its own copy
        yield
        return
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if sys.stderr.isatty():  # as the progress bar: logs and refusals stay one line
                print(
                    "rankalign: another process is tokenizing this data; waiting for it",
                    file=sys.stderr,
                )
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    _file_digest(path, h)
    return h.hexdigest()


def _check_cached(table: Path, record: Path, key: str) -> dict | str:
    """The record of a cached table that matches it, or why it does not."""
    try:
        meta = json.loads(record.read_text())
    except (OSError, ValueError) as e:
        return f"unreadable record ({type(e).__name__})"
    if not isinstance(meta, dict) or meta.get("key") != key or meta.get("format") != FORMAT:
        return "record of another table"
    try:
        if table.stat().st_size != meta.get("bytes"):
            return "size differs from its record"
        if _sha256(table) != meta.get("sha256"):
            return "checksum differs from its record"
    except OSError as e:
        return f"unreadable table ({e.strerror or e})"
    return meta


def _private_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="rankalign-tokenized-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _writable_cache() -> Path | None:
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK | os.X_OK) else None


def token_table(spec: str | os.PathLike, tokenizer, *, load: dict, encoding: dict) -> TokenTable:
    """The tokenized table of `spec`: mapped from the cache, else built (and cached)."""
    data_hash = content_hash(spec)
    folder = _writable_cache() if data_hash is not None else None
    if folder is None:  # nothing to key a shared table by, or nowhere to keep it
        folder, key = _private_dir(), "private"
    else:
        key = table_key(data_hash, tokenizer, {**load, **encoding})
    table, record = folder / f"{key}.arrow", folder / f"{key}.json"
    with _locked(folder / f"{key}.lock"):
        if table.exists() or record.exists():
            found = _check_cached(table, record, key)
            if isinstance(found, dict):
                return TokenTable(table, key, found["report"], built=False)
            print(
                f"rankalign: tokenized-data cache {table} is damaged ({found}): rebuilding",
                file=sys.stderr,
            )
        tmp = folder / f".{key}.{os.getpid()}.arrow.tmp"
        try:
            report = build_table(spec, tokenizer, tmp, load=load, encoding=encoding)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            meta = {
                "key": key,
                "format": FORMAT,
                "data": str(spec),
                "bytes": tmp.stat().st_size,
                "sha256": _sha256(tmp),
                "report": report,
            }
            os.replace(tmp, table)
        finally:
            tmp.unlink(missing_ok=True)
        atomic_write_text(record, json.dumps(meta, indent=1) + "\n")  # last: the table is whole
    # a private table has no key over its inputs: its tokens' checksum stands for it (the
    # reference log-probs' cache key uses the fingerprint)
    fingerprint = key if key != "private" else meta["sha256"][:24]
    return TokenTable(table, fingerprint, report, built=True)


# ----------------------------------------------------------------------------- the dataset


class TokenTable(torch.utils.data.Dataset):
    """Tokenized ranked lists on a memory-mapped Arrow file: item i is the dict the collator
    takes (`id`, `prompt_ids`, `response_ids`, `scores`, and `ref_logp` once attached), built
    from the mapped columns when asked for.

    `fingerprint` is the table's cache key (data, tokenizer, template mode, length options; for
    a private table, its checksum): the reference log-probs' cache key uses it. `built`: this process built the table (False:
    mapped from the cache)."""

    def __init__(self, path: Path, fingerprint: str, report: dict, *, built: bool):
        self.path, self.fingerprint, self.report, self.built = (
            Path(path),
            fingerprint,
            report,
            built,
        )
        self._ref: tuple | None = None
        self._open()

    def _open(self) -> None:
        import pyarrow as pa

        table = pa.ipc.open_file(pa.memory_map(str(self.path))).read_all()
        self._chunks, self._starts, n = [], [], 0
        for batch in table.to_batches():
            prompts, responses, scores = (
                batch.column(c) for c in ("prompt_ids", "response_ids", "scores")
            )
            # zero-copy views of the mapped buffers: offsets index into the (unsliced) values
            self._chunks.append(
                (
                    batch.column("id"),
                    prompts.offsets.to_numpy(),
                    prompts.values.to_numpy(),
                    responses.offsets.to_numpy(),
                    responses.values.offsets.to_numpy(),
                    responses.values.values.to_numpy(),
                    scores.offsets.to_numpy(),
                    scores.values.to_numpy(),
                )
            )
            self._starts.append(n)
            n += batch.num_rows
        self._len = n

    def __getstate__(self) -> dict:  # DataLoader workers map the file again
        return {k: v for k, v in self.__dict__.items() if k not in ("_chunks", "_starts")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> dict:
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(i)  # also ends iteration over the dataset
        c = bisect.bisect_right(self._starts, i) - 1
        j = i - self._starts[c]
        ids, p_off, p_val, r_off, ri_off, r_val, s_off, s_val = self._chunks[c]
        a, b = r_off[j], r_off[j + 1]
        item = {
            "id": ids[j].as_py(),
            "prompt_ids": p_val[p_off[j] : p_off[j + 1]].tolist(),
            "response_ids": [r_val[ri_off[t] : ri_off[t + 1]].tolist() for t in range(a, b)],
            "scores": s_val[s_off[j] : s_off[j + 1]].tolist(),
        }
        if self._ref is not None:
            offsets, values = self._ref
            item["ref_logp"] = values[offsets[i] : offsets[i + 1]].tolist()
        return item

    @property
    def shared(self) -> bool:
        """Is the table in the shared cache (False: a private table, removed at exit)?"""
        return self.path.stem != "private"

    @property
    def items(self) -> list[dict]:
        """Every item as a list of dicts (built on each access: for small data and tests)."""
        return [self[i] for i in range(len(self))]

    def response_counts(self) -> list[int]:
        """k of each list, in order."""
        import numpy as np

        return np.concatenate([np.diff(chunk[3]) for chunk in self._chunks]).tolist()

    def attach_ref_logp(self, flat: list[float]) -> None:
        """Reference log-probs, one per response in table order, served as `ref_logp`."""
        import numpy as np

        offsets = np.concatenate([[0], np.cumsum(self.response_counts())])
        if offsets[-1] != len(flat):
            raise ValueError(f"{len(flat)} reference log-probs for {offsets[-1]} responses")
        self._ref = (offsets, np.asarray(flat, dtype=np.float64))
