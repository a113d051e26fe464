"""`rankalign <command>`: one sub-command per pipeline stage.

Each stage module exposes `main(argv) -> int` and parses its own options (a `--config` YAML plus
flags, see config.py). Here: dispatch, and turning errors into one line and an exit code
(2 for user errors) unless `--debug` asks for the traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from .config import redact_text
from .errors import UserError, one_line

COMMANDS = {
    "train": (
        "rankalign.train",
        "train a policy (rrhf, pro, listwise-dpo, dpo, ...) or a reward model",
    ),
    "sample": ("rankalign.sample", "k candidate responses per prompt from many sources"),
    "score": ("rankalign.score", "fill in rewards: reward models, judges, rules, length penalty"),
    "evaluate": (
        "rankalign.evaluate",
        "reward, perplexity, RM accuracy, best-of-n, win rate; a report",
    ),
    "loop": ("rankalign.loop", "online iterative alignment"),
    "demo": ("rankalign.demo", "the embedded default, end to end, offline"),
}


def run_command(name: str, argv: list[str]) -> None:
    """Run `rankalign NAME ARGV...` in this process (pipelines chain the stages this way)."""
    rc = importlib.import_module(COMMANDS[name][0]).main(argv)
    if rc:
        raise UserError(f"stage `rankalign {name}` failed (exit {rc})")


def _usage() -> str:
    lines = [
        "usage: rankalign <command> [--config FILE.yaml] [--flag value ...] [--debug]",
        "",
        "commands:",
    ]
    for name, (module, help_) in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            lines.append(f"  {name:<10} {help_}")
    lines += ["", "`rankalign <command> --help` lists a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"rankalign {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS or importlib.util.find_spec(COMMANDS[name][0]) is None:
        print(f"rankalign: error: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from .models import settle_deepspeed_accelerator

        settle_deepspeed_accelerator()
        module = importlib.import_module(COMMANDS[name][0])
        return int(module.main(rest) or 0)
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
