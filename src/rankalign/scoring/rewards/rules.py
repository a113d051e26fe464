"""Rewards computed by rules: the input's own scores (`input`), vaderSentiment (`sentiment`), a
length penalty (`length`) and a user's Python function (`python:FILE:NAME`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from rankalign.errors import UserError
from rankalign.reward_inputs import context_text
from rankalign.scoring.rewards.base import Option, Reward, Schema


class InputScores(Reward):
    """`input`: keep the scores the rows came with (e.g. dataset chosen=1 / rejected=0)."""

    schema = Schema("input", example="input")

    def score(self, rows):
        for row in rows:
            if row.get("scores") is None:
                raise UserError(f"reward 'input': row '{row['id']}' has no scores")
        return [list(row["scores"]) for row in rows]


class Sentiment(Reward):
    """`sentiment`: VADER compound score in [-1, 1] (offline stand-in for the IMDB classifier of
    RRHF Appendix C). `text=full` scores prompt + response instead of the response alone."""

    schema = Schema(
        "sentiment",
        {"text": Option(str, "response", choices=("response", "full"))},
        example="sentiment",
    )

    def __init__(self, spec, defaults):
        super().__init__(spec, defaults)
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError:
            raise UserError("needs vaderSentiment: pip install vaderSentiment") from None
        self.analyzer = SentimentIntensityAnalyzer()
        self.full = self.opt["text"] == "full"

    def score(self, rows):
        def text(row, resp):
            return context_text(row["prompt"]) + resp if self.full else resp

        return [
            [self.analyzer.polarity_scores(text(row, r))["compound"] for r in row["responses"]]
            for row in rows
        ]


class LengthPenalty(Reward):
    """`length`: -lambda * |y| (RLHF Workflow eq. 8, r - lambda|a|; added to the other parts).
    |y| is counted in characters (the paper's unit) or in tokens of `tokenizer=PATH`."""

    schema = Schema(
        "length",
        {
            # no default: its scale depends on the other rewards
            "lambda": Option(float, range=">= 0", required=True),
            "unit": Option(str, "chars", choices=("chars", "tokens")),
            "tokenizer": Option(str, role="tokenizer"),
        },
        example="length:lambda=0.01,unit=chars",
    )

    def __init__(self, spec, defaults):
        super().__init__(spec, defaults)
        self.lam = float(self.opt["lambda"])
        self.unit = self.opt["unit"]
        self.tokenizer = None
        if self.unit == "tokens":
            if not self.opt.get("tokenizer"):
                raise UserError("unit=tokens needs tokenizer=PATH")
            from rankalign.models import load_tokenizer, resolve_model

            self.tokenizer = load_tokenizer(resolve_model(self.opt["tokenizer"]))

    def size(self, response: str) -> int:
        if self.tokenizer is None:
            return len(response)
        return len(self.tokenizer(response, add_special_tokens=False).input_ids)

    def score(self, rows):
        return [[-self.lam * self.size(r) for r in row["responses"]] for row in rows]


class PythonFunction(Reward):
    """`python:MODULE:FUNCTION` (MODULE may be a .py file): fn(prompt, response) -> float."""

    schema = Schema(
        "python", {"function": Option(str)}, positional="function", example="python:MODULE:FN"
    )

    @classmethod
    def check_files(cls, options):
        module = options["function"].rpartition(":")[0]
        if module.endswith(".py") and not Path(module).is_file():
            raise UserError("file not found", file=module)

    def __init__(self, spec, defaults):
        super().__init__(spec, defaults)
        target = self.opt["function"]
        module_name, _, fn_name = target.rpartition(":")
        if not module_name or not fn_name:
            raise UserError("expected MODULE:FUNCTION")
        try:
            if module_name.endswith(".py"):
                path = Path(module_name)
                if not path.is_file():
                    raise UserError("file not found", file=path)
                mod_spec = importlib.util.spec_from_file_location(path.stem, path)
                module = importlib.util.module_from_spec(mod_spec)
                mod_spec.loader.exec_module(module)
            else:
                if "" not in sys.path and str(Path.cwd()) not in sys.path:
                    sys.path.insert(0, str(Path.cwd()))  # like `python -m`: the user's own modules
                module = importlib.import_module(module_name)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"cannot import '{module_name}' ({type(e).__name__}: {e})") from e
        self.fn = getattr(module, fn_name, None)
        if not callable(self.fn):
            raise UserError(f"'{module_name}' has no function '{fn_name}'")

    def score(self, rows):
        out = []
        for row in rows:
            values = []
            for i, response in enumerate(row["responses"]):
                try:
                    value = self.fn(row["prompt"], response)
                except Exception as e:
                    raise UserError(
                        f"reward '{self.spec.text}' raised {type(e).__name__}: {e} "
                        f"(row '{row['id']}', response {i})"
                    ) from e
                if isinstance(value, bool) or not isinstance(value, int | float):
                    try:  # numpy / torch scalars
                        value = float(value)
                    except (TypeError, ValueError):
                        raise UserError(
                            f"reward '{self.spec.text}' returned "
                            f"{type(value).__name__}, not a number "
                            f"(row '{row['id']}', response {i})"
                        ) from None
                values.append(float(value))
            out.append(values)
        return out
