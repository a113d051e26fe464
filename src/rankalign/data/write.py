"""Writing outputs: atomic text, strict JSON (NaN/Infinity become null with a note), JSONL, and
the check that an output can be written before a command writes anything."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rankalign.errors import UserError


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
