"""Readers of the training logs an evaluation plots: `trainer_state.json` of training runs and the
per-iteration metrics of a loop run.
"""

from __future__ import annotations

import re
from pathlib import Path

from rankalign.data import read_json_file
from rankalign.errors import UserError
from rankalign.report_plots import flatten_metrics


def read_training_log(run: str) -> list[dict]:
    """`log_history` of a training run: DIR/trainer_state.json, else the newest checkpoint's."""
    path = Path(run)
    if path.is_dir():
        candidates = [path / "trainer_state.json"]
        ckpts = sorted(
            path.glob("checkpoint-*/trainer_state.json"),
            key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0),
        )
        candidates += ckpts[::-1]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise UserError(
                "no trainer_state.json here or in a checkpoint-* folder "
                "(Trainer writes it with each checkpoint)",
                file=run,
            )
    if not path.is_file():
        raise UserError("training run not found", file=run)
    state = read_json_file(path)
    if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
        raise UserError("no log_history list", file=path, field="log_history")
    return [e for e in state["log_history"] if isinstance(e, dict)]


def read_loop_metrics(run: str) -> list[dict]:
    """Per-iteration metrics of a loop run: DIR/iter-*/metrics.json (one dict each, in iteration
    order), or one JSON file / DIR/metrics.json holding a list of per-iteration dicts. Nested
    dicts are flattened (`heldout.mean_reward`). The base policy's held-out reward (a loop's
    DIR/iter-0-heldout.json, or `initial_heldout` in its metrics.json) is iteration 0."""
    path = Path(run)
    files = (
        sorted(
            path.glob("iter-*/metrics.json"),
            key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0),
        )
        if path.is_dir()
        else []
    )
    its = []
    base = path / "iter-0-heldout.json"
    if path.is_dir() and base.is_file() and not any(f.parent.name == "iter-0" for f in files):
        data = read_json_file(base)
        if not isinstance(data, dict):
            raise UserError("expected a JSON object of metrics", file=base)
        its.append({"iteration": 0, **flatten_metrics({"heldout": data})})
    if files:
        for f in files:
            data = read_json_file(f)
            if not isinstance(data, dict):
                raise UserError("expected a JSON object of metrics", file=f)
            it = flatten_metrics(data)
            it.setdefault("iteration", int(re.sub(r"\D", "", f.parent.name) or len(its)))
            its.append(it)
        return its
    single = path / "metrics.json" if path.is_dir() else path
    if not single.is_file():
        raise UserError("no iter-*/metrics.json or metrics.json", file=run)
    data = read_json_file(single)
    initial = None
    if isinstance(data, dict) and isinstance(data.get("iterations"), list):
        initial = data.get("initial_heldout")
        data = data["iterations"]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise UserError("expected a list of per-iteration objects", file=single)
    its = [flatten_metrics(d) | {"iteration": d.get("iteration", i)} for i, d in enumerate(data)]
    if isinstance(initial, dict) and not any(it["iteration"] == 0 for it in its):
        its.insert(0, {"iteration": 0, **flatten_metrics({"heldout": initial})})
    return its


def run_labels(paths: list[str]) -> list[str]:
    """A label per run folder: its name, or the shortest path suffix that tells it apart from
    the others (`a/model`, `b/model` for two folders named `model`)."""
    parts = [Path(p.rstrip("/\\") or p).resolve().parts for p in paths]
    labels = []
    for own in parts:
        for n in range(1, len(own) + 1):
            label = "/".join(own[-n:])
            if all(own == other or own[-n:] != other[-n:] for other in parts):
                break
        while label in labels:  # the same folder given twice
            label += "'"
        labels.append(label)
    return labels
