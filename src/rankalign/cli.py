"""`rankalign <command>`: one sub-command per pipeline stage.

Each command is its Python API function (api.py, workflows/) called with `argv=`: the function
parses the flags and `--config` YAML into the command's config class (config.py) and runs.
Here: dispatch, the command's summary print, and turning errors into one line and an exit code
(2 for user errors) unless `--debug` asks for the traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from rankalign.config import redact_text
from rankalign.errors import UserError, one_line

# name -> (the Python API function as "module:function", help). Each command parses its options
# into its config class and calls that function; `_print_*` below shows its summary.
COMMANDS = {
    "train": (
        "rankalign.api:train",
        "train a policy (rrhf, pro, listwise-dpo, dpo, ...) or a reward model",
    ),
    "sample": ("rankalign.api:sample", "k candidate responses per prompt from many sources"),
    "score": (
        "rankalign.api:score",
        "fill in rewards: reward models, judges, rules, length penalty",
    ),
    "evaluate": (
        "rankalign.api:evaluate",
        "reward, perplexity, RM accuracy, best-of-n, win rate; a report",
    ),
    "annotate": (
        "rankalign.api:annotate",
        "rank the candidates yourself on a local web page; --agreement FILE",
    ),
    "loop": ("rankalign.workflows.loop:loop", "online iterative alignment"),
    "demo": ("rankalign.workflows.demo:demo", "the embedded default, end to end, offline"),
    "compare": (
        "rankalign.workflows.compare:compare",
        "which method wins: every loss on the same candidates, side by side",
    ),
}


def _print_train(result) -> None:
    from rankalign.data import json_text

    print(json_text({k: v for k, v in result.metrics.items() if k != "data"}), end="")


def _print_evaluate(result) -> None:
    from rankalign.evaluation.stage import print_summary

    print_summary(result.metrics, result.config)


def _print_loop(result) -> None:
    from rankalign.workflows.loop import print_summary

    print_summary(result)


# sample, score, demo and compare report as they go
PRINTERS = {"train": _print_train, "evaluate": _print_evaluate, "loop": _print_loop}


def run_command(name: str, argv: list[str]):
    """`rankalign NAME ARGV...` in this process: parse, call the API function, print."""
    from rankalign.config import COMMAND_LINE

    module, function = COMMANDS[name][0].split(":")
    token = COMMAND_LINE.set([name, *argv])  # recorded in the run's config dump
    try:
        result = getattr(importlib.import_module(module), function)(argv=argv)
    finally:
        COMMAND_LINE.reset(token)
    if name in PRINTERS:
        PRINTERS[name](result)
    return result


def _usage() -> str:
    lines = [
        "usage: rankalign <command> [--config FILE.yaml] [--flag value ...] [--debug]",
        "",
        "--debug (no value): the traceback of an error; train's --debug underflow_overflow |",
        "tpu_metrics_debug: TrainingArguments' debug features.",
        "",
        "commands:",
    ]
    for name, (module, help_) in COMMANDS.items():
        if importlib.util.find_spec(module.split(":")[0]) is not None:
            lines.append(f"  {name:<10} {help_}")
    lines += ["", "`rankalign <command> --help` lists a command's options."]
    return "\n".join(lines)


def split_debug(argv: list[str]) -> tuple[bool, list[str]]:
    """(traceback wanted, argv without our flag). A bare `--debug` is ours: the traceback of an
    error. `--debug VALUE` (or `--debug=VALUE`) with one of TrainingArguments' debug features
    (`underflow_overflow`, `tpu_metrics_debug`) stays in argv for `rankalign train`."""

    def feature(value: str | None) -> bool:
        if value is None or value.startswith("-"):
            return False
        from transformers.debug_utils import DebugOption  # seconds: only when it can matter

        return value in {o.value for o in DebugOption}

    out, traceback = [], False
    for i, a in enumerate(argv):
        if a == "--debug" and not feature(argv[i + 1] if i + 1 < len(argv) else None):
            traceback = True
            continue
        out.append(a)
    return traceback, out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug, argv = split_debug(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from rankalign import __version__

        print(f"rankalign {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS or importlib.util.find_spec(COMMANDS[name][0].split(":")[0]) is None:
        from rankalign.config import did_you_mean

        hint = did_you_mean(name, COMMANDS)
        print(f"rankalign: error: unknown command '{name}'{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from rankalign.models import settle_deepspeed_accelerator

        settle_deepspeed_accelerator()
        run_command(name, rest)
        return 0
    except UserError as e:
        if debug:
            raise
        print(redact_text(f"rankalign {name}: error: {e}"), file=sys.stderr)
        return 2
    except OSError as e:
        # an input or output path the operating system refused (permission, read-only file
        # system, a file where a folder is needed, disk full, ...): the path and the reason
        if debug:
            raise
        if not (e.filename or e.strerror):
            return _internal_error(name, e)
        where = f"{e.filename}: " if e.filename else ""
        line = one_line(f"rankalign {name}: error: {where}{e.strerror or e}")
        print(redact_text(line), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"rankalign {name}: interrupted (outputs written so far are kept; rerun to resume)",
            file=sys.stderr,
        )
        return 130
    except SystemExit:
        raise
    except Exception as e:  # a bug or an environment problem: one line, traceback on request
        if debug:
            raise
        return _internal_error(name, e)


def _internal_error(name: str, e: BaseException) -> int:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    line = f"rankalign {name}: internal error: {type(e).__name__}: {msg[:500]}"
    print(redact_text(line) + " (rerun with --debug for the traceback)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
