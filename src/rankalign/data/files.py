"""Reading files: every source of rows (JSONL, JSON, Parquet, CSV/TSV, a `save_to_disk` folder,
a hub dataset) as (record, location) pairs, and the parser-level checks every record passes.

The JSON parser leaves markers for what `json.loads` would hide (a duplicate key, an integer
literal past Python's digit limit); `check_value` turns them, lone surrogates and nesting past
MAX_DEPTH into one-line UserErrors naming the file, line/row and field.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rankalign.errors import UserError

# Containers inside containers: real rows nest a few levels; a file nested thousands of levels
# deep is an attack on recursive code (the parsers, deepcopy, json.dumps), not data.
MAX_DEPTH = 100
FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv", ".tsv")
# Temporary folders holding rows given as Python data to the API (`api._python_data`): a
# record of the run names them as such, not by a path that is gone once the call returns.
PYTHON_ROWS_PREFIX = "rankalign-python-rows-"


def python_rows_path(path: str | os.PathLike | None) -> bool:
    """Is `path` a temporary file of rows given as Python data?"""
    return path is not None and Path(path).parent.name.startswith(PYTHON_ROWS_PREFIX)


def row_error(loc: dict, field_name: str | None, message: str) -> UserError:
    """The one-line error for a row at `loc` (file, line or row) and its field."""
    return UserError(
        message, file=loc.get("file"), line=loc.get("line"), row=loc.get("row"), field=field_name
    )


def field_path(path: tuple) -> str | None:
    """('prompt', 0, 'content') -> "prompt[0].content"; None for the record itself."""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return text.removeprefix(".") or None


def _looks_like_hub_name(spec: str) -> bool:
    name = spec.split(":")[0]
    parts = name.split("/")
    suffix = Path(name).suffix.lower()
    return (
        len(parts) == 2
        and all(parts)
        and not spec.startswith((".", "/", "~"))
        and suffix not in FILE_SUFFIXES
    )


def read_records(spec: str | os.PathLike) -> Iterator[tuple[dict, dict]]:
    """Yield (record, location) from a file, a `load_from_disk` folder or a hub dataset.

    location is {"file": ..., "line": n} for line-based files, {"file": ..., "row": n} otherwise;
    both count from 1, as a person counts the rows of a file.
    A hub dataset is `org/name` or `org/name:split` (default split `train`). Every record is an
    object that passed `check_value`; any failure to read is a UserError naming the path.
    """
    try:
        for rec, loc in _read_any(spec):
            check_value(rec, loc)
            if not isinstance(rec, dict):
                raise row_error(loc, None, f"expected a JSON object, got {type(rec).__name__}")
            yield rec, loc
    except OSError as e:  # unreadable, a folder where a file is expected, an I/O error, ...
        raise UserError(f"cannot read: {e.strerror or e}", file=e.filename or spec) from None


def _read_any(spec: str | os.PathLike) -> Iterator[tuple[Any, dict]]:
    path = Path(spec)
    suffix = path.suffix.lower()
    # a folder named like a file (data.jsonl/) goes to that file's reader, whose open() says
    # "Is a directory"
    if path.is_dir() and suffix not in FILE_SUFFIXES:
        yield from _read_dataset_dir(path)
        return
    if not path.exists():
        if _looks_like_hub_name(str(spec)):
            yield from _read_hub(str(spec))
            return
        raise UserError("file not found", file=spec)
    if not path.is_dir() and not path.is_file():
        # a device (/dev/zero never ends) or a FIFO (blocks until a writer comes)
        raise UserError("not a regular file", file=spec)
    if suffix in (".jsonl", ".ndjson"):
        yield from _read_jsonl(path)
    elif suffix == ".json":
        yield from _read_json(path)
    elif suffix == ".parquet":
        yield from _read_parquet(path)
    elif suffix in (".csv", ".tsv"):
        yield from _read_csv(path, delimiter="\t" if suffix == ".tsv" else ",")
    else:
        raise UserError(
            f"unknown file type '{suffix}' (use .jsonl, .json, .parquet, .csv or a dataset folder)",
            file=path,
        )


class _DuplicateKeys(dict):
    """A JSON object that repeats `key` (json.loads alone keeps the last value silently)."""

    def __init__(self, pairs: list, key: str):
        super().__init__(pairs)
        self.key = key

    def error(self, loc: dict, path: tuple = ()) -> UserError:
        return row_error(loc, field_path((*path, self.key)), f"duplicate key '{self.key}'")


class _TooLongInt:
    """An integer literal with more digits than Python converts (sys.get_int_max_str_digits)."""

    def __init__(self, literal: str):
        self.digits = len(literal.lstrip("-"))

    def error(self, loc: dict, path: tuple = ()) -> UserError:
        limit = sys.get_int_max_str_digits()
        return row_error(
            loc,
            field_path(path),
            f"integer literal with {self.digits:,} digits (more than {limit:,})",
        )


def _object(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) < len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                return _DuplicateKeys(pairs, key)
            seen.add(key)
    return obj


def _parse_int(literal: str) -> int | _TooLongInt:
    try:
        return int(literal)
    except ValueError:  # the scanner matched a valid literal: only the digit limit is left
        return _TooLongInt(literal)


def _loads(text: str, loc: dict) -> Any:
    """json.loads that leaves duplicate keys and over-long integers as markers for `check_value`,
    which knows the row and field to name (json.loads itself would keep the last duplicate, and
    raise a ValueError naming neither for the integer)."""
    try:
        return json.loads(text, parse_int=_parse_int, object_pairs_hook=_object)
    except RecursionError:  # the parser recurses once per level: far past MAX_DEPTH
        raise row_error(loc, None, f"nested more than {MAX_DEPTH} levels deep") from None


# A row holds a prompt and k responses of at most layouts.MAX_TEXT_CHARS each; a longer line
# is not a row (a device file, a binary): read no more of it than this.
MAX_LINE_BYTES = 256 * 2**20


def _lines(f) -> Iterator[bytes]:
    """The lines of a binary file, each read with a bounded buffer."""
    while raw := f.readline(MAX_LINE_BYTES + 1):
        yield raw


def _read_jsonl(path: Path) -> Iterator[tuple[Any, dict]]:
    with open(path, "rb") as f:
        for n, raw in enumerate(_lines(f), start=1):
            if len(raw) > MAX_LINE_BYTES:
                raise UserError(
                    f"line longer than {MAX_LINE_BYTES // 2**20} MiB: not a JSONL row",
                    file=path,
                    line=n,
                )
            if n == 1:  # some editors start a UTF-8 file with a byte-order mark
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"not valid UTF-8 (byte {e.start})", file=path, line=n) from None
            if not text.strip():
                continue
            loc = {"file": str(path), "line": n}
            try:
                rec = _loads(text, loc)
            except json.JSONDecodeError as e:
                raise UserError(
                    f"invalid JSON: {e.msg} (column {e.colno})", file=path, line=n
                ) from None
            yield rec, loc


def read_json_file(path: str | os.PathLike) -> Any:
    """One JSON document (a model config, metrics, a trainer log), checked as strictly as data
    rows: duplicate keys, nesting, unencodable strings and every read failure are one-line
    UserErrors naming the file (and line). NaN/Infinity, which Python's JSON writer emits into
    trainer logs, are read as numbers."""
    path = Path(path)
    data = _parse_json_file(path)
    check_value(data, {"file": str(path)})
    return data


def _parse_json_file(path: Path) -> Any:
    """A whole .json file parsed (a leading BOM is fine); not yet `check_value`d, so a reader
    of rows can check each row with its own location."""
    try:
        text = path.read_bytes().removeprefix(codecs.BOM_UTF8).decode("utf-8")
        return _loads(text, {"file": str(path)})
    except UnicodeDecodeError as e:
        raise UserError(f"not valid UTF-8 (byte {e.start})", file=path) from None
    except json.JSONDecodeError as e:
        raise UserError(
            f"invalid JSON: {e.msg} (column {e.colno})", file=path, line=e.lineno
        ) from None
    except OSError as e:
        raise UserError(f"cannot read: {e.strerror or e}", file=path) from None


def _read_json(path: Path) -> Iterator[tuple[Any, dict]]:
    data = _parse_json_file(path)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        if isinstance(data, _DuplicateKeys):  # the rows are checked one by one, the wrapper here
            raise data.error({"file": str(path)})
        data = data["data"]
    if not isinstance(data, list):
        raise UserError("a .json file must hold a list of objects (or {'data': [...]})", file=path)
    for i, rec in enumerate(data, start=1):
        yield rec, {"file": str(path), "row": i}


def _read_parquet(path: Path) -> Iterator[tuple[dict, dict]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise UserError(f"cannot read Parquet: {str(e).splitlines()[0]}", file=path) from None
    for i, rec in enumerate(table.to_pylist(), start=1):
        yield rec, {"file": str(path), "row": i}


def _read_csv(path: Path, delimiter: str) -> Iterator[tuple[dict, dict]]:
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)  # as written by spreadsheet programs
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError("not valid UTF-8", file=path, line=line) from None
    # The csv module's cell limit (131,072 characters by default) is below MAX_TEXT_CHARS. No
    # cell is longer than the file, which is in memory already: with this limit the size check of
    # `layouts.normalize` is what refuses an over-long prompt or response, with its usual message.
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    # a record's first line (quoted cells can span lines, as HH dialogues do); csv's own line_num
    # at an error can be the line before
    start = 1
    try:
        if reader.fieldnames is None:  # an empty file: no rows
            return
        start = reader.line_num + 1
        for rec in reader:
            loc = {"file": str(path), "line": start}
            # list-valued columns (responses, scores, ...) are JSON text in a CSV cell
            for key, value in rec.items():
                if isinstance(value, str) and value[:1] in "[{":
                    try:
                        rec[key] = _loads(value, loc)
                    except json.JSONDecodeError:
                        pass
            yield rec, loc
            start = reader.line_num + 1
    except csv.Error as e:
        raise UserError(f"invalid CSV: {e}", file=path, line=start) from None


def _read_dataset_dir(path: Path) -> Iterator[tuple[dict, dict]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise UserError(
            f"not a datasets.save_to_disk folder: {str(e).splitlines()[0]}", file=path
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise UserError(
                f"dataset folder has splits {list(ds)}; point at one split's folder", file=path
            )
        ds = ds["train"]
    for i, rec in enumerate(ds, start=1):
        yield rec, {"file": str(path), "row": i}


def _read_hub(spec: str) -> Iterator[tuple[dict, dict]]:
    import datasets

    name, _, split = spec.partition(":")
    try:
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as e:
        raise UserError(
            f"cannot load hub dataset '{name}' ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
            file=spec,
        ) from None
    for i, rec in enumerate(ds, start=1):
        yield rec, {"file": spec, "row": i}


def check_value(value: Any, loc: dict, path: tuple = ()) -> None:
    """Refuse what a parser let through but later stages cannot use, naming its field.

    - a string or key that does not encode as UTF-8 (a lone surrogate from a JSON or YAML escape
      such as "\\ud800" passes everything until the output is written);
    - containers nested more than MAX_DEPTH deep;
    - the markers `_loads` leaves for a duplicate key or an over-long integer literal.
    """
    if isinstance(value, str):
        _check_encodable(value, loc, path)
    elif isinstance(value, _TooLongInt):
        raise value.error(loc, path)
    elif isinstance(value, dict | list | tuple):
        if len(path) >= MAX_DEPTH:  # the top-level field: the full path would be a long line
            raise row_error(loc, field_path(path[:1]), f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            for key in value:
                if isinstance(key, str):
                    _check_encodable(key, loc, path, what="key")
            if isinstance(value, _DuplicateKeys):
                raise value.error(loc, path)
            # keys become path parts as strings: an int key is not a list index
            items = ((str(k), v) for k, v in value.items())
        else:
            items = enumerate(value)
        for part, item in items:
            if not isinstance(item, int | float | None):  # skip numbers fast (long score lists)
                check_value(item, loc, (*path, part))


def _check_encodable(text: str, loc: dict, path: tuple, what: str = "text") -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise row_error(
            loc,
            field_path(path),
            f"{what} holds a lone surrogate \\u{ord(text[e.start]):04x} at character {e.start} "
            "(not valid Unicode)",
        ) from None
