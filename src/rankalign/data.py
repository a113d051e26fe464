"""The ranked list: readers, layout normalizers, validation, filters and atomic/resumable writers.

One unit flows between every stage (docs/design.md §1):

    {"id": "hh-00017", "prompt": "...", "responses": ["...", "..."],
     "scores": [0.8, -1.2], "sources": ["policy:diverse-beam", "dataset:chosen"]}

`prompt` is a string or a list of chat messages; `scores` are optional until the score stage,
higher is better, ties allowed; k may differ between rows. Readers accept the layouts below and
normalize them into this unit; any other field of a row is kept as is.

| layout | fields |
|---|---|
| ranked list / RRHF original | `prompt` or `query`, `responses`, optional `scores` / `sources` |
| pairwise | `prompt`, `chosen`, `rejected` (strings or message lists) |
| Anthropic-HH transcript | `chosen`, `rejected` full dialogues, split at the last `\\n\\nAssistant:` |
| PRO | `prefix`, `suffix`, `reward` |
| conversation | `messages` (the last assistant message is the response) |
| ShareGPT (LLaMA-Factory) | `conversations` of `{from, value}` turns (+ optional `system`): SFT, or the prompt of a `chosen`/`rejected` pair |
| prompt only | `prompt` (or `query` / `instruction` / `question`) |
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankalign.errors import UserError

HH_ASSISTANT = "\n\nAssistant:"
PROMPT_KEYS = ("prompt", "query", "instruction", "question")
ROLES = {"system", "user", "assistant", "tool", "developer"}
# ShareGPT turns (`{"from": ..., "value": ...}`, LLaMA-Factory's sharegpt format) as chat roles;
# accepted wherever a message list is
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "observation": "tool",
    "function_call": "assistant",
}
# A prompt or response longer than this is an input error, not text to tokenize for minutes
# (1M characters is ~250K tokens, beyond any context window).
MAX_TEXT_CHARS = 1_000_000
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


# ----------------------------------------------------------------------------- reading


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
                raise _err(loc, None, f"expected a JSON object, got {type(rec).__name__}")
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
        return _err(loc, _field((*path, self.key)), f"duplicate key '{self.key}'")


class _TooLongInt:
    """An integer literal with more digits than Python converts (sys.get_int_max_str_digits)."""

    def __init__(self, literal: str):
        self.digits = len(literal.lstrip("-"))

    def error(self, loc: dict, path: tuple = ()) -> UserError:
        limit = sys.get_int_max_str_digits()
        return _err(
            loc, _field(path), f"integer literal with {self.digits:,} digits (more than {limit:,})"
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
        raise _err(loc, None, f"nested more than {MAX_DEPTH} levels deep") from None


# A row holds a prompt and k responses of at most MAX_TEXT_CHARS each; a longer line is not a
# row (a device file, a binary): read no more of it than this.
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
    # cell is longer than the file, which is in memory already: with this limit `_check_size`
    # is what refuses an over-long prompt or response, with its usual message.
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


# ----------------------------------------------------------------------------- normalizing


def _err(loc: dict, field_name: str | None, message: str) -> UserError:
    return UserError(
        message, file=loc.get("file"), line=loc.get("line"), row=loc.get("row"), field=field_name
    )


def _field(path: tuple) -> str | None:
    """('prompt', 0, 'content') -> "prompt[0].content"; None for the record itself."""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return text.removeprefix(".") or None


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
            raise _err(loc, _field(path[:1]), f"nested more than {MAX_DEPTH} levels deep")
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
        raise _err(
            loc,
            _field(path),
            f"{what} holds a lone surrogate \\u{ord(text[e.start]):04x} at character {e.start} "
            "(not valid Unicode)",
        ) from None


def _sharegpt_turn(m: Any, loc: dict, field_name: str) -> Any:
    """A ShareGPT turn `{from, value}` as a `{role, content}` message (anything else as is)."""
    if not (isinstance(m, dict) and "from" in m and "role" not in m):
        return m
    role = SHAREGPT_ROLES.get(m["from"]) if isinstance(m["from"], str) else None
    if role is None:
        raise _err(
            loc,
            f"{field_name}.from",
            f"unknown ShareGPT speaker {m['from']!r} (use {', '.join(SHAREGPT_ROLES)})",
        )
    if "value" not in m:
        raise _err(loc, field_name, "a ShareGPT turn needs 'from' and 'value'")
    return {"role": role, "content": m["value"]}


def _check_messages(value: Any, loc: dict, field_name: str) -> list[dict]:
    if not value:
        raise _err(loc, field_name, "empty message list")
    if isinstance(value, list):
        value = [_sharegpt_turn(m, loc, f"{field_name}[{i}]") for i, m in enumerate(value)]
    for m in value:
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m):
            raise _err(loc, field_name, "each message needs 'role' and 'content'")
        if m["role"] not in ROLES:
            raise _err(loc, field_name, f"unknown message role '{m['role']}'")
        if not isinstance(m["content"], str):
            raise _err(loc, field_name, "message 'content' must be a string")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _prompt(value: Any, loc: dict, field_name: str) -> str | list[dict]:
    if isinstance(value, str):
        if not value.strip():
            raise _err(loc, field_name, "empty prompt")
        return value
    if isinstance(value, list):
        return _check_messages(value, loc, field_name)
    raise _err(
        loc,
        field_name,
        f"prompt must be a string or a list of messages, got {type(value).__name__}",
    )


def _response(value: Any, loc: dict, field_name: str) -> str:
    """A response is a string, or a single assistant message (or a list ending in one)."""
    if isinstance(value, str):
        return value
    value = _sharegpt_turn(value, loc, field_name)
    if (
        isinstance(value, dict)
        and value.get("role") == "assistant"
        and isinstance(value.get("content"), str)
    ):
        return value["content"]
    if isinstance(value, list) and value:
        return _response(value[-1], loc, field_name)
    raise _err(
        loc,
        field_name,
        f"response must be a string or an assistant message, got {type(value).__name__}",
    )


def _number(value: Any, loc: dict, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _err(loc, field_name, f"score must be a number, got {json.dumps(value)[:40]}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range (about 1.8e308)
        raise _err(
            loc, field_name, "score is an integer beyond the float range (must be finite)"
        ) from None
    if not math.isfinite(number):
        raise _err(loc, field_name, f"score is {number} (must be finite)")
    return number


def _split_hh(chosen: str, rejected: str, loc: dict) -> tuple[str, str, str]:
    """Split Anthropic-HH transcripts into (shared prompt ending in 'Assistant:', chosen, rejected)."""
    cut_c, cut_r = chosen.rfind(HH_ASSISTANT), rejected.rfind(HH_ASSISTANT)
    if cut_c < 0 or cut_r < 0:
        raise _err(loc, "chosen", f"no '{HH_ASSISTANT.strip()}' turn to split the HH transcript at")
    end = cut_c + len(HH_ASSISTANT)
    prompt = chosen[:end]
    if rejected[: cut_r + len(HH_ASSISTANT)] != prompt:
        raise _err(
            loc,
            "rejected",
            "chosen and rejected do not share the dialogue up to the last Assistant turn",
        )
    return prompt, chosen[end:], rejected[cut_r + len(HH_ASSISTANT) :]


def _check_size(row: dict, loc: dict) -> None:
    prompt = row["prompt"]
    texts = (
        [("prompt", prompt)]
        if isinstance(prompt, str)
        else [(f"prompt[{i}].content", m["content"]) for i, m in enumerate(prompt)]
    )
    texts += [(f"responses[{i}]", r) for i, r in enumerate(row["responses"])]
    for name, text in texts:
        if len(text) > MAX_TEXT_CHARS:
            raise _err(
                loc,
                name,
                f"{len(text):,} characters (more than {MAX_TEXT_CHARS:,}): "
                "not a prompt or response",
            )


PRO_TAGS = {"<|prompter|>": "\n\nHuman: ", "<|assistant|>": "\n\nAssistant: "}


def pro_prefix(turns: list[str]) -> tuple[str, bool]:
    """A PRO `prefix` (a list of turns) as text, and whether it was tagged. PRO's released HH
    files tag turns `<|prompter|>...` / `<|assistant|>...`; its collator renders them as
    `\n\nHuman: ...\n\nAssistant: ...`, strips the end and joins the response with one space
    (`HH_DataManager.train_data_collator`), which is what the model saw in PRO's training.
    Untagged pieces are joined as they are."""
    text = "".join(turns)
    if not any(tag in text for tag in PRO_TAGS):
        return text, False
    for tag, role in PRO_TAGS.items():
        text = text.replace(tag, role)
    return text.rstrip(), True


def _from_sharegpt(rec: dict, loc: dict) -> dict:
    """A LLaMA-Factory sharegpt row (`conversations`, optional `system`) in the `messages`
    layout (SFT), or with `chosen`/`rejected` (its ranking layout) as a pair whose prompt is the
    conversation."""
    rec = dict(rec)
    turns = _check_messages(rec.pop("conversations"), loc, "conversations")
    system = rec.pop("system", None)
    if system is not None:
        if not isinstance(system, str):
            raise _err(loc, "system", f"must be a string, got {type(system).__name__}")
        if system.strip() and turns[0]["role"] != "system":
            turns = [{"role": "system", "content": system}, *turns]
    if "chosen" in rec or "rejected" in rec:
        if turns[-1]["role"] == "assistant":
            raise _err(
                loc,
                "conversations",
                "with chosen/rejected the conversation must end with a "
                "prompt turn (human), not an assistant one",
            )
        rec["prompt"] = turns
    else:
        rec["messages"] = turns
    return rec


def normalize(rec: dict, loc: dict, index: int) -> dict:
    """Turn one record of any supported layout into a ranked-list row (validated)."""
    known = {
        "id",
        "prompt",
        "query",
        "instruction",
        "question",
        "responses",
        "scores",
        "sources",
        "chosen",
        "rejected",
        "prefix",
        "suffix",
        "reward",
        "messages",
        "sft_index",
    }
    if "conversations" in rec and not any(
        k in rec for k in ("messages", "responses", *PROMPT_KEYS)
    ):
        rec = _from_sharegpt(rec, loc)
    extra = {k: v for k, v in rec.items() if k not in known}
    row_id = rec.get("id", rec.get("_id"))
    row: dict[str, Any] = {"id": str(row_id) if row_id is not None else f"row-{index:06d}"}
    prompt_key = next((k for k in PROMPT_KEYS if rec.get(k) is not None), None)

    if "responses" in rec:  # ranked list / RRHF original
        if prompt_key is None:
            raise _err(loc, "prompt", "missing prompt (or 'query')")
        row["prompt"] = _prompt(rec[prompt_key], loc, prompt_key)
        responses = rec["responses"]
        if not isinstance(responses, list):
            raise _err(loc, "responses", f"must be a list, got {type(responses).__name__}")
        row["responses"] = [_response(r, loc, f"responses[{i}]") for i, r in enumerate(responses)]
        for key in ("scores", "sources"):
            if rec.get(key) is not None:
                row[key] = rec[key]
    elif "chosen" in rec or "rejected" in rec:  # pairwise or HH transcript
        for key in ("chosen", "rejected"):
            if rec.get(key) is None:
                raise _err(loc, key, "missing (pairwise rows need both 'chosen' and 'rejected')")
        if prompt_key is not None:
            row["prompt"] = _prompt(rec[prompt_key], loc, prompt_key)
            row["responses"] = [
                _response(rec["chosen"], loc, "chosen"),
                _response(rec["rejected"], loc, "rejected"),
            ]
        elif isinstance(rec["chosen"], str) and isinstance(rec["rejected"], str):
            prompt, c, r = _split_hh(rec["chosen"], rec["rejected"], loc)
            row["prompt"], row["responses"] = prompt, [c, r]
        else:  # conversational pair without a prompt: the shared messages before the last reply
            c, r = (_check_messages(rec[k], loc, k) for k in ("chosen", "rejected"))
            if c[:-1] != r[:-1] or not c[:-1]:
                raise _err(
                    loc, "rejected", "chosen and rejected conversations do not share a prompt"
                )
            row["prompt"], row["responses"] = (
                c[:-1],
                [_response(c[-1], loc, "chosen"), _response(r[-1], loc, "rejected")],
            )
        row["scores"] = [1.0, 0.0]
        row["sources"] = ["dataset:chosen", "dataset:rejected"]
    elif "suffix" in rec:  # PRO layout
        prefix = rec.get("prefix")
        if isinstance(prefix, list) and prefix and isinstance(prefix[0], list):
            if any(p != prefix[0] for p in prefix):
                raise _err(loc, "prefix", "candidates have different prefixes; one prompt per row")
            prefix = prefix[0]
        tagged = False
        if isinstance(prefix, list):
            prefix, tagged = pro_prefix([str(p) for p in prefix])
        row["prompt"] = _prompt(prefix, loc, "prefix")
        if not isinstance(rec["suffix"], list):
            raise _err(loc, "suffix", "must be a list of responses")
        row["responses"] = [_response(r, loc, f"suffix[{i}]") for i, r in enumerate(rec["suffix"])]
        if tagged:  # PRO's collator joins prompt and response with one space
            row["responses"] = [" " + r for r in row["responses"]]
        if rec.get("reward") is not None:
            row["scores"] = rec["reward"]
    elif "messages" in rec:  # one conversation: SFT data (k = 1)
        msgs = _check_messages(rec["messages"], loc, "messages")
        if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
            raise _err(loc, "messages", "a conversation must end with an assistant message")
        row["prompt"], row["responses"] = msgs[:-1], [msgs[-1]["content"]]
    elif prompt_key is not None:  # prompts only (input of the sample stage)
        if rec.get("scores") is not None or rec.get("sources") is not None:
            raise _err(loc, "responses", "missing (the row has scores/sources but no responses)")
        row["prompt"] = _prompt(rec[prompt_key], loc, prompt_key)
        row["responses"] = []
    else:
        raise _err(loc, None, f"unrecognized layout (fields: {', '.join(sorted(rec)) or 'none'})")

    _check_size(row, loc)
    k = len(row["responses"])
    if "scores" in row:
        scores = row["scores"]
        if not isinstance(scores, list):
            raise _err(loc, "scores", f"must be a list, got {type(scores).__name__}")
        if len(scores) != k:
            raise _err(loc, "scores", f"has {len(scores)} values for {k} responses")
        row["scores"] = [_number(s, loc, f"scores[{i}]") for i, s in enumerate(scores)]
    if "sources" in row:
        if not isinstance(row["sources"], list) or len(row["sources"]) != k:
            raise _err(loc, "sources", f"must be a list of {k} strings")
        row["sources"] = [str(s) for s in row["sources"]]
    row.update(extra)
    return row


# ----------------------------------------------------------------------------- loading with filters


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
            raise _err(
                loc, "id", f"duplicate id '{row['id']}' (first seen at {_where(seen[row['id']])})"
            )
        seen[row["id"]] = loc
        empty = [j for j, r in enumerate(row["responses"]) if not r.strip()]
        if empty and empty_responses == "error":
            raise _err(
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
            raise _err(loc, "scores", "missing (run `rankalign score` first, or add scores)")
        if len(row["responses"]) < min_responses:
            if empty:
                report.dropped["too few responses after removing empty ones"] += 1
                continue
            raise _err(
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


# ----------------------------------------------------------------------------- writing


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read-and-restore
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file so that readers see either the old content or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def strict_json(obj: Any) -> Any:
    """`obj` with every NaN/Infinity replaced by None (JSON has no such numbers).

    Where a metric is undefined the dict that held it gains `notes: {key: why}` unless the caller
    already explained it there, so a reader of the file sees `null` with a reason."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        out, notes = {}, {}
        for k, v in obj.items():
            if isinstance(v, float) and not math.isfinite(v):
                notes[str(k)] = f"undefined ({v} is not a number JSON can hold)"
            out[k] = strict_json(v)
        # a `notes` field that is not a dict is the caller's own data: left alone
        if notes and isinstance(out.get("notes", {}), dict):
            out["notes"] = {**notes, **out.get("notes", {})}
        return out
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    return obj


def json_text(obj: Any, **kwargs) -> str:
    """Valid JSON text (NaN/Infinity become null with a note, see `strict_json`)."""
    kwargs.setdefault("indent", 2)
    kwargs.setdefault("default", str)
    return json.dumps(strict_json(obj), allow_nan=False, **kwargs) + "\n"


def write_json(path: str | os.PathLike, obj: Any, **kwargs) -> None:
    """Atomically write `obj` as valid JSON (metrics, summaries, reports' data)."""
    atomic_write_text(path, json_text(obj, **kwargs))


def check_output_location(
    path: str | Path,
    *,
    folder: bool = False,
    field: str = "out",
    files: tuple | list = (),
    folders: tuple | list = (),
) -> list[Path]:
    """Refuse an output that cannot be written, before a command writes anything.

    `path` is the output file (or, with `folder`, the output folder); `files` and `folders` are
    the other paths the command writes (side files, shard folders). The folder that will hold
    the output must exist or be creatable: its nearest existing ancestor must be a writable
    folder. Returns the folders that do not exist yet (the first write creates them)."""
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise UserError(
                "exists and is not a folder (this output is a folder)", file=path, field=field
            )
        home = path
    else:
        if path.is_dir():
            raise UserError("is a folder (this output is a file)", file=path, field=field)
        home = path.parent
    for f in files:
        if Path(f).is_dir():
            raise UserError("is a folder where this command writes a file", file=f, field=field)
    for d in folders:
        if Path(d).exists() and not Path(d).is_dir():
            raise UserError("is a file where this command keeps a folder", file=d, field=field)
    missing, ancestor = [], Path(os.path.abspath(home))
    while not ancestor.exists():
        if ancestor.is_symlink():
            raise UserError("is a broken symbolic link", file=ancestor, field=field)
        missing.append(ancestor)
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(
            f"cannot create the output's folder: '{ancestor}' is a file, not a folder",
            file=path,
            field=field,
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"cannot write in '{ancestor}' (permission denied)", file=path, field=field)
    return missing


def side_path(out: str | os.PathLike, suffix: str) -> Path:
    """A file beside a stage's output: `scored.jsonl` -> `scored<suffix>` (config, summary, ...)."""
    out = Path(out)
    stem = out.stem if out.suffix in (".jsonl", ".json", ".ndjson") else out.name
    return out.with_name(stem + suffix)


def to_jsonl(rows: Iterable[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    atomic_write_text(path, to_jsonl(rows))


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


# ----------------------------------------------------------------------------- resume protocol
# A long stage (sample, score) writes OUT through a ShardedWriter: rows are committed in shards in
# OUT.parts/ (one writer per process, told apart by a tag in shard names), and OUT.parts/run.json
# holds a hash of what decides the outputs. A rerun of the same command skips the rows already
# committed; a rerun with other settings is refused; the last step merges the shards into OUT.

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
