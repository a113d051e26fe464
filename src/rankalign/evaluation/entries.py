"""What `--model` / `--baseline` name: a model (folder, hub name, `smollm2`), a responses file,
or `dataset:FIELD` (responses already in the prompts file), parsed into `Entry`s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rankalign.data import (
    load_lists,
)
from rankalign.errors import UserError


@dataclass
class Entry:
    name: str
    spec: str
    kind: str  # model | file | dataset
    path: str | None = None  # resolved model folder / hub name, or the responses file
    baseline: bool = False


def safe_name(name: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", name).strip("_") or "entry"


def parse_entries(models: list[str] | dict, baselines: list[str] | dict) -> list[Entry]:
    """`NAME=SPEC` or `SPEC` (dict form: {name: spec}) into entries with unique names.

    A name the user gave (`NAME=`, a dict key) is kept as given, and one given twice is refused
    (it names the output folder and the report's row); a name derived from the spec yields: a
    repeat gets `-2`, `-3`, ..."""
    from rankalign.models import resolve_model

    given: list[tuple[bool, str | None, str]] = []  # (baseline?, name or None, spec)
    for is_base, items in ((False, models), (True, baselines)):
        if isinstance(items, dict):
            given += [(is_base, name, spec) for name, spec in items.items()]
            continue
        for item in items:
            m = re.match(r"^([\w.\-]+)=(.+)$", item)
            given.append((is_base, m.group(1), m.group(2)) if m else (is_base, None, item))
    explicit: set[str] = set()
    for is_base, name, _ in given:
        if name in explicit:
            option = "baseline" if is_base else "model"
            raise UserError(f"the name '{name}' is given twice: names must be unique", field=option)
        if name is not None:
            explicit.add(name)
    entries: list[Entry] = []
    for is_base, name, spec in given:
        if spec.startswith("dataset:"):
            entry = Entry(name or spec, spec, "dataset", baseline=is_base)
        elif Path(spec).is_file():
            entry = Entry(name or Path(spec).stem, spec, "file", spec, baseline=is_base)
        else:
            path = resolve_model(spec)
            entry = Entry(name or Path(spec.rstrip("/")).name, spec, "model", path, is_base)
        if name is None:  # a derived name steps aside for the given ones and earlier entries
            base, i = entry.name, 2
            while entry.name in explicit or any(e.name == entry.name for e in entries):
                entry.name, i = f"{base}-{i}", i + 1
        entries.append(entry)
    return entries


def dataset_responses(rows: list[dict], field_name: str, where: str) -> list[str]:
    """The prompts file's own responses: a `dataset:FIELD` source of the row, or the row's FIELD."""
    out = []
    for row in rows:
        sources = row.get("sources") or []
        if f"dataset:{field_name}" in sources:
            out.append(row["responses"][sources.index(f"dataset:{field_name}")])
            continue
        value = row.get(field_name)
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, dict):
            value = value.get("content")
        if not isinstance(value, str):
            raise UserError(
                f"row '{row['id']}' has no response '{field_name}'", file=where, field=field_name
            )
        out.append(value)
    return out


def file_responses(rows: list[dict], path: str) -> list[str]:
    """First response of each row of a responses file, matched to the prompts by id."""
    by_id = {r["id"]: r["responses"] for r in load_lists(path, min_responses=1).rows}
    missing = [row["id"] for row in rows if row["id"] not in by_id]
    if missing:
        raise UserError(
            f"no response for prompt id '{missing[0]}' ({len(missing)} missing)", file=path
        )
    return [by_id[row["id"]][0] for row in rows]
