"""The Python API: each stage as a function, the same code path as the command line.

    import rankalign

    lists = [{"prompt": "Hi", "responses": ["Hello!", "go away"], "scores": [1.0, 0.0]}]
    result = rankalign.train(data=lists, loss="rrhf", output_dir="runs/rrhf", max_steps=2)
    result.output, result.metrics["train_loss"]

Every function takes its command's options as keyword arguments (the names of `--help`, the
keys of the YAML files), optionally on top of a YAML file (`config="run.yaml"`) or of a config
object (`config=SampleConfig(...)`), and checks them exactly as the command line does (types,
ranges, every input row, the model's files) before anything is written. Input options also take
Python data: a list of dicts (or a `datasets.Dataset`) is read as the rows of a JSONL file.

`X_config(...)` builds and checks the options of X without running anything; `X(...)` runs it
and returns a `Result`. `rankalign CMD ...` is `X(argv=...)` plus printing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankalign.annotation.config import AnnotateConfig
from rankalign.annotation.stage import run as run_annotate
from rankalign.config import parse_config
from rankalign.data import PYTHON_ROWS_PREFIX, write_jsonl
from rankalign.errors import UserError
from rankalign.evaluation.config import EvaluateConfig
from rankalign.evaluation.stage import evaluate as run_evaluate
from rankalign.sampling.config import SampleConfig
from rankalign.sampling.stage import run as run_sample
from rankalign.scoring.config import ScoreConfig
from rankalign.scoring.stage import run as run_score
from rankalign.training.stage import parse_args as parse_train_args
from rankalign.training.stage import run as run_train

# options that name input rows: Python data given there is written to a temporary JSONL file
DATA_OPTIONS = {
    "sample": ("prompts",),
    "score": ("input",),
    "train": ("data", "eval_data"),
    "evaluate": ("prompts", "pairs"),
    "annotate": ("input",),
}


@dataclass
class Result:
    """What a stage produced: its main output (file or folder), its summary metrics and the
    checked configuration it ran with."""

    command: str
    output: Path | None
    metrics: dict = field(default_factory=dict)
    config: Any = None


def config_inputs(config: Any, options: dict, argv: tuple | list) -> tuple[list[str], dict]:
    """(argv, options) for parse_config from a YAML path, a config object or nothing; paths
    given as `Path` objects become the strings the options hold."""
    argv = list(argv)
    options = {
        k: [str(x) if isinstance(x, Path) else x for x in v]
        if isinstance(v, list)
        else str(v)
        if isinstance(v, Path)
        else v
        for k, v in options.items()
    }
    if config is None:
        return argv, options
    if isinstance(config, str | Path):
        return ["--config", str(config), *argv], options
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        given = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        return argv, {**given, **options}
    raise UserError(f"config must be a YAML path or a config object, got {type(config).__name__}")


@contextlib.contextmanager
def _python_data(command: str, options: dict) -> Iterator[dict]:
    """Options with Python rows (lists of dicts, datasets) swapped for temporary JSONL files;
    the rows are then read and checked by the same reader as files are (row N = line N)."""
    inline = {
        k: v
        for k, v in options.items()
        if k in DATA_OPTIONS.get(command, ()) and v is not None and not isinstance(v, str | Path)
    }
    if not inline:
        yield options
        return
    with tempfile.TemporaryDirectory(prefix=f"{PYTHON_ROWS_PREFIX}{command}-") as tmp:
        resolved = dict(options)
        for name, rows in inline.items():
            if hasattr(rows, "to_list"):  # a datasets.Dataset
                rows = rows.to_list()
            elif hasattr(rows, "column_names") and isinstance(rows, dict):  # DatasetDict
                raise UserError(
                    f"a DatasetDict: pass one split, e.g. {name}['{next(iter(rows), 'train')}']",
                    field=name,
                )
            if not isinstance(rows, list | tuple):
                raise UserError(
                    f"expected a path or a list of dicts, got {type(rows).__name__}", field=name
                )
            for i, row in enumerate(rows, start=1):
                if not isinstance(row, dict):
                    raise UserError(
                        f"row {i}: expected a dict, got {type(row).__name__}", field=name
                    )
            path = Path(tmp) / f"{name}.jsonl"
            write_jsonl(path, rows)
            resolved[name] = str(path)
        yield resolved


def sample_config(config: Any = None, *, argv: tuple | list = (), **options) -> SampleConfig:
    """The checked options of `rankalign sample` (nothing runs, nothing is written)."""
    argv, options = config_inputs(config, options, argv)
    return parse_config(argv, (SampleConfig,), prog="rankalign sample", options=options)[0]


def score_config(config: Any = None, *, argv: tuple | list = (), **options) -> ScoreConfig:
    """The checked options of `rankalign score` (nothing runs, nothing is written)."""
    argv, options = config_inputs(config, options, argv)
    return parse_config(argv, (ScoreConfig,), prog="rankalign score", options=options)[0]


def train_config(config: Any = None, *, argv: tuple | list = (), **options) -> tuple:
    """The checked (TrainConfig, TrainingArguments) of `rankalign train`: the options of both
    classes go in one namespace (`loss=...`, `learning_rate=...`), per-loss defaults applied."""
    argv, options = config_inputs(config, options, argv)
    return parse_train_args(argv, options)


def evaluate_config(config: Any = None, *, argv: tuple | list = (), **options) -> EvaluateConfig:
    """The checked options of `rankalign evaluate` (nothing runs, nothing is written)."""
    argv, options = config_inputs(config, options, argv)
    return parse_config(argv, (EvaluateConfig,), prog="rankalign evaluate", options=options)[0]


def annotate_config(config: Any = None, *, argv: tuple | list = (), **options) -> AnnotateConfig:
    """The checked options of `rankalign annotate` (nothing is read, served or written)."""
    argv, options = config_inputs(config, options, argv)
    return parse_config(argv, (AnnotateConfig,), prog="rankalign annotate", options=options)[0]


def sample(config: Any = None, *, argv: tuple | list = (), **options) -> Result:
    """k candidate responses per prompt from the configured sources -> ranked lists (no scores)
    in `out`. Resumes a killed run with the same options."""
    with _python_data("sample", options) as options:
        cfg = sample_config(config, argv=argv, **options)
        summary = run_sample(cfg)
    return Result("sample", Path(cfg.out), summary or {}, cfg)


def score(config: Any = None, *, argv: tuple | list = (), **options) -> Result:
    """Fill in `scores` with the configured rewards -> `out`. Resumes a killed run."""
    with _python_data("score", options) as options:
        cfg = score_config(config, argv=argv, **options)
        summary = run_score(cfg)
    return Result("score", Path(cfg.out), summary or {}, cfg)


def train(config: Any = None, *, argv: tuple | list = (), **options) -> Result:
    """Train a policy (rrhf, pro, listwise-dpo, dpo, ...) or a reward model (bt-reward,
    preference) -> a `save_pretrained` folder in `output_dir`."""
    with _python_data("train", options) as options:
        cfg, args = train_config(config, argv=argv, **options)
        summary = run_train(cfg, args)
    return Result("train", Path(args.output_dir), summary, (cfg, args))


def evaluate(config: Any = None, *, argv: tuple | list = (), **options) -> Result:
    """Policies (`model=[...]`), samples, pairs, training logs or a reward model (`rm=...`)
    -> metrics.json and a report in `out`."""
    with _python_data("evaluate", options) as options:
        cfg = evaluate_config(config, argv=argv, **options)
        metrics = run_evaluate(cfg)
    return Result("evaluate", Path(cfg.out), metrics, cfg)


def annotate(config: Any = None, *, argv: tuple | list = (), **options) -> Result:
    """Serve a local page where a person ranks each prompt's responses -> ranked lists in
    `out` (one row per answered prompt, written as each answer comes; rerun to resume; several
    annotators merge by mean rank). Returns when the server stops (Ctrl-C). With `agreement=FILE`
    nothing is served: Kendall's tau-b and Krippendorff's alpha of FILE's annotations."""
    with _python_data("annotate", options) as options:
        cfg = annotate_config(config, argv=argv, **options)
        metrics = run_annotate(cfg)
    return Result("annotate", Path(cfg.agreement or cfg.out), metrics, cfg)
