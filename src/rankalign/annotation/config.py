"""The options of `rankalign annotate` (one dataclass, parsed by `config.parse_config`)."""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass, field

# an annotator name is stored in every answer and shown on the page: short, printable, no
# leading/trailing space (names are compared exactly when several people share one file)
NAME = re.compile(r"[\w.@+-](?:[\w .@+-]{0,62}[\w.@+-])?")


def default_annotator() -> str:
    """The login name, when it is a valid annotator name; else 'annotator'."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "annotator"
    return name if NAME.fullmatch(name) else "annotator"


@dataclass
class AnnotateConfig:
    input: str = field(
        default=None,
        metadata={
            "aliases": ["--in"],
            "help": "(required unless --agreement) candidates to rank: ranked lists with k >= 2 "
            "responses (JSONL, JSON, Parquet, CSV, a dataset folder; any layout data.py reads)",
        },
    )
    out: str = field(
        default=None,
        metadata={
            "help": "(required unless --agreement) ranked lists: one row per ranked prompt, "
            "rewritten atomically after every answer; rerun to resume (several annotators may "
            "share it: scores = k - mean rank, i.e. the mean Borda count)"
        },
    )
    annotator: str = field(
        default=None,
        metadata={"help": "the name stored with each answer (default: the login name)"},
    )
    host: str = field(
        default="127.0.0.1",
        metadata={
            "help": "address to serve on; anything but loopback exposes the page (no login) "
            "to the network, with a warning"
        },
    )
    port: int = field(
        default=8765, metadata={"help": "port (0: any free port)", "check": "[0, 65535]"}
    )
    seed: int = field(
        default=0,
        metadata={
            "help": "seed of the shown order (per prompt and annotator; recorded in each answer)",
            "check": ">= 0",
        },
    )
    max_rows: int | None = field(
        default=None, metadata={"help": "rank only the first N rows of the input", "check": ">= 1"}
    )
    agreement: str | None = field(
        default=None,
        metadata={
            "help": "instead of serving: print the agreement in this ranked file (Kendall's tau-b "
            "and Krippendorff's alpha, ordinal, between annotators; tau-b of each annotator "
            "against the input's scores and score_parts)"
        },
    )

    def __post_init__(self):
        if self.annotator is None:
            self.annotator = default_annotator()
        if not NAME.fullmatch(self.annotator):
            raise ValueError(
                f"annotator must be 1-64 letters, digits, spaces or . @ + - _ (not at the ends), "
                f"got {self.annotator!r}"
            )
        if self.agreement is not None:
            if self.input is not None or self.out is not None:
                raise ValueError("--agreement reads one ranked file: give it without --in/--out")
            return
        if not self.input:
            raise ValueError("input is required (--in FILE: the candidates to rank)")
        if not self.out:
            raise ValueError("out is required (--out FILE: the ranked lists)")
        if not self.host.strip():
            raise ValueError("host must not be empty")
