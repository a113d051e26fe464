"""Options of `rankalign score` (`ScoreConfig`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from rankalign.models import DTYPES
from rankalign.scoring.rewards.registry import kinds_help
from rankalign.tokenization import CHAT_TEMPLATE_MODES


class _Repeatable(argparse.Action):
    """`--reward A --reward B C` adds up; flags replace the YAML list (flags override YAML)."""

    def __call__(self, parser, namespace, values, option_string=None):
        so_far = getattr(namespace, self.dest) if getattr(self, "_seen", False) else []
        setattr(namespace, self.dest, [*so_far, *values])
        self._seen = True


@dataclass
class ScoreConfig:
    input: str = field(
        default=None,
        metadata={
            "aliases": ["--in"],
            "help": "(required) ranked lists to score (JSONL, "
            "JSON, Parquet, CSV, a dataset folder; any layout data.py reads)",
        },
    )
    out: str = field(
        default=None,
        metadata={"help": "(required) output JSONL; shards live in OUT.parts/ until the end"},
    )
    reward: list[str] = field(
        default_factory=list,
        metadata={
            "action": _Repeatable,
            "help": f"reward spec, repeatable: {kinds_help()}; each takes weight=W and name=N",
        },
    )
    on_failure: str = field(
        default="skip",
        metadata={
            "help": "responses a reward could not score: skip (row to <stem>.failed.jsonl) or min",
            "choices": ("skip", "min"),
        },
    )
    shard_size: int = field(
        default=64, metadata={"help": "rows per committed shard (and per pass)", "check": ">= 1"}
    )
    batch_size: int = field(
        default=8, metadata={"help": "sequences per model forward pass", "check": ">= 1"}
    )
    max_length: int = field(
        default=1024, metadata={"help": "token limit of model inputs", "check": ">= 2"}
    )
    dtype: str = field(
        default="float32",
        metadata={"help": "model dtype: float32, bfloat16 or float16", "choices": tuple(DTYPES)},
    )
    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu, cuda:0"})
    chat_template: str = field(
        default="auto",
        metadata={"help": " | ".join(CHAT_TEMPLATE_MODES), "choices": CHAT_TEMPLATE_MODES},
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "run the model repository's own Python code"}
    )
    allow_pickle: bool = field(default=False, metadata={"help": "allow .bin (pickle) weights"})
    empty_responses: str = field(
        default="error", metadata={"help": "error or drop", "choices": ("error", "drop")}
    )
    max_rows: int | None = field(
        default=None,
        metadata={"aliases": ["--limit"], "help": "score only the first N rows", "check": ">= 1"},
    )
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output"})

    def __post_init__(self):
        for name in ("input", "out"):
            if not getattr(self, name):
                raise ValueError(f"the option --{name} is required")
        if self.on_failure not in ("skip", "min"):
            raise ValueError(f"on_failure must be skip or min, got '{self.on_failure}'")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got '{self.dtype}'")
        if self.chat_template not in CHAT_TEMPLATE_MODES:
            raise ValueError(
                f"chat_template must be one of {', '.join(CHAT_TEMPLATE_MODES)}, "
                f"got '{self.chat_template}'"
            )
        if self.empty_responses not in ("error", "drop"):
            raise ValueError(f"empty_responses must be error or drop, got '{self.empty_responses}'")
        if not isinstance(self.reward, list):
            self.reward = [self.reward]
