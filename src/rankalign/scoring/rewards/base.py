"""What every reward is: `RewardSpec` (a parsed `KIND[:key=value,...]`), the `Reward` base class
(`score(rows)` -> one value or None per response), the weighted sum of several rewards, and the
batching helpers the model rewards share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Index batches, longest first, so each batch pads only to its own longest row."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), max(1, batch_size))]


def flat_index(rows: list[dict]) -> list[tuple[int, int]]:
    return [(r, i) for r, row in enumerate(rows) for i in range(len(row["responses"]))]


def unflat(values: list, rows: list[dict]) -> list[list]:
    out, pos = [], 0
    for row in rows:
        k = len(row["responses"])
        out.append(list(values[pos : pos + k]))
        pos += k
    return out


def progress(iterable, desc: str, total: int | None = None):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, unit="batch")


class Reward:
    """One reward component. `score(rows)` -> per row, one float (or None: failed) per response."""

    def __init__(self, spec: RewardSpec, defaults: dict):
        self.spec, self.name, self.weight = spec, spec.name, spec.weight
        self.opt = {**defaults, **spec.options}
        # row id -> {response index: reason}, filled by rewards that can fail (the judge)
        self.failures: dict[str, dict[int, str]] = {}

    def score(self, rows: list[dict]) -> list[list[float | None]]:
        raise NotImplementedError


@dataclass
class RewardSpec:
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    name: str = ""
    text: str = ""  # the spec as the user wrote it, for messages

    def as_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "weight": self.weight, **self.options}


def weighted_sum(rewards: list[Reward], values: list[float | None]) -> float | None:
    """A response's score: the weighted sum of its rewards' values (None if one has none)."""
    if any(v is None for v in values):
        return None
    return sum(r.weight * v for r, v in zip(rewards, values))
