"""Rewards R(x, y_i) = r_i for every response of a ranked list (RRHF paper §3.1).

A reward is named by a spec string (flag `--reward`, repeatable) or a YAML mapping:

    KIND[:ITEM[,ITEM...]]      ITEM = key=value, or one positional value (the kind's main option)

    sentiment                          vaderSentiment compound score of the response, in [-1, 1]
    length:lambda=0.01,unit=chars      -lambda * |y| (RLHF Workflow eq. 8; unit chars or tokens)
    rm:PATH                            AutoModelForSequenceClassification (also our BT models)
    causal-rm:PATH                     causal LM body + scalar v_head/score layer, read at EOS
    preference:PATH                    pairwise A/B preference LM, wins against the others
    judge:model=NAME,base_url=URL      LLM judge with the RRHF Wombat rubric (see judge.py)
    python:MODULE:FUNCTION             user function (prompt, response) -> float
    policy-logprob:PATH                length-normalized log-prob p_i = logp / len (paper §3.2)
    input                              the scores already in the input rows

    YAML:  reward: [{kind: rm, path: ./rm, weight: 2}, "length:lambda=0.001"]

Every kind accepts `weight` (default 1) and `name` (the key in `score_parts`, default the kind).
The row's score is the weighted sum of its parts. A value holding a comma cannot be written in
the string form; use the YAML form.

Each reward returns, per row, one value per response, or None where it could not score a
response (only the judge does that); score.py applies the failure policy to those.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import in_range, range_error
from .errors import UserError
from .models import DTYPES, default_device, torch_dtype
from .tokenization import CHAT_TEMPLATE_MODES

_MODEL = {"path": str, "batch_size": int, "max_length": int, "dtype": str, "device": str}
_MODEL |= dict.fromkeys(("trust_remote_code", "allow_pickle"), bool)
_JUDGE = dict.fromkeys(("model", "base_url", "api_key_env", "rubric", "aspects", "mode"), str)
_JUDGE |= dict.fromkeys(("min", "max", "temperature", "timeout", "backoff"), float)
_JUDGE |= dict.fromkeys(("retries", "max_tokens", "concurrency", "max_retries", "seed"), int)
# kind -> (name of the positional option, allowed options and their types)
KINDS: dict[str, tuple[str | None, dict[str, type]]] = {
    "sentiment": (None, {"text": str}),
    "length": (None, {"lambda": float, "unit": str, "tokenizer": str}),
    "rm": ("path", {**_MODEL, "format": str, "label": str, "output": str}),
    "causal-rm": ("path", {**_MODEL, "format": str, "append_eos": bool}),
    "preference": ("path", {**_MODEL, "template": str, "chat_template": str}),
    "judge": ("model", _JUDGE),
    "python": ("function", {"function": str}),
    "policy-logprob": ("path", {**_MODEL, "chat_template": str, "min_response_tokens": int}),
    "input": (None, {}),
}
# the option a kind cannot do without
REQUIRED = {kind: main for kind, (main, _) in KINDS.items() if main is not None}
REQUIRED["length"] = "lambda"  # no hidden default: its scale depends on the other rewards
_KEY = re.compile(r"[A-Za-z_][\w-]*")


@dataclass
class RewardSpec:
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    name: str = ""
    text: str = ""  # the spec as the user wrote it, for messages

    def as_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "weight": self.weight, **self.options}


# ranges (as config's `check`) and choices of option values (checked when a spec is parsed,
# before any model loads)
RANGES = {
    "batch_size": ">= 1",
    "max_length": ">= 2",
    "lambda": ">= 0",
    "min_response_tokens": ">= 0",
    "timeout": "> 0",
    "backoff": ">= 0",
    "temperature": ">= 0",
    "retries": ">= 0",
    "max_retries": ">= 0",
    "max_tokens": ">= 1",
    "concurrency": ">= 1",
}
CHOICES = {
    "unit": ("chars", "tokens"),
    "format": ("auto", "chat", "concat", "pair"),
    "output": ("logit", "prob"),
    "mode": ("list", "single"),
    "text": ("response", "full"),
    "chat_template": CHAT_TEMPLATE_MODES,
    "dtype": DTYPES,
}
# options that name a model folder or hub model (resolved and checked before anything loads)
MODEL_OPTIONS = {"rm": "path", "causal-rm": "path", "preference": "path", "policy-logprob": "path"}


def _brief(value: Any, limit: int = 60) -> str:
    """A value for a message, never longer than `limit` (a spec may be huge)."""
    if isinstance(value, dict | list | tuple | set):
        return f"a {type(value).__name__} of {len(value)} items"
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _convert(value: Any, typ: type, key: str, fail) -> Any:
    if isinstance(value, dict | list | tuple | set):
        raise fail(f"'{key}' must be a single value, got {_brief(value)}")
    if typ is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes", "on"):
            return True
        if str(value).lower() in ("false", "0", "no", "off"):
            return False
        raise fail(f"'{key}' must be true or false, got '{_brief(value)}'")
    if typ in (int, float):
        out = None
        if isinstance(value, bool):
            pass
        elif typ is int and isinstance(value, float):
            out = int(value) if value.is_integer() else None
        else:
            try:
                out = typ(value)
            except (TypeError, ValueError, OverflowError):
                out = None
        if out is None or (typ is float and not math.isfinite(out)):
            raise fail(
                f"'{key}' must be a{'n integer' if typ is int else ' finite number'}, "
                f"got '{_brief(value)}'"
            )
        if key in RANGES and not in_range(out, RANGES[key]):
            raise fail(f"'{key}' {range_error(RANGES[key], out)}")
        return out
    out = str(value)
    if key in CHOICES and out not in CHOICES[key]:
        raise fail(f"'{key}' must be one of {', '.join(CHOICES[key])}, got '{_brief(out)}'")
    return out


def parse_reward_spec(spec: str | dict, field: str = "reward") -> RewardSpec:
    """`rm:./model,weight=2` or {"kind": "rm", "path": "./model", "weight": 2} -> RewardSpec.

    A mapping must be flat: string keys, scalar values (it is refused, never expanded, when it
    holds lists or mappings). Every value is checked: its type, range (RANGES) and choices."""
    if isinstance(spec, dict):
        for key, value in spec.items():
            if not isinstance(key, str):
                raise UserError(
                    f"a reward mapping's keys are option names, got {type(key).__name__} "
                    f"'{_brief(key)}'",
                    field=field,
                )
            if value is not None and not isinstance(value, str | int | float | bool):
                raise UserError(
                    f"reward option '{_brief(key)}' must be a single value, got {_brief(value)}",
                    field=field,
                )
        text = str(spec)[:300]  # flat scalars: as long as the input, no longer
    elif isinstance(spec, str):
        text = spec[:300]
    else:
        raise UserError(
            "a reward is a spec string (e.g. rm:PATH) or a mapping of option: value, "
            f"got {type(spec).__name__}"
            + ("" if isinstance(spec, list | tuple | set) else f" '{_brief(spec)}'"),
            field=field,
        )

    def fail(msg: str) -> UserError:
        return UserError(f"reward '{text}': {msg}", field=field)

    positional = None
    if isinstance(spec, dict):
        items = dict(spec)
        kind = items.pop("kind", "")
        if not kind:
            raise fail("a reward mapping needs 'kind'")
        if not isinstance(kind, str):
            raise fail(f"'kind' must be a string, got {_brief(kind)}")
    else:
        kind, _, body = spec.strip().partition(":")
        items = {}
        for part in (p.strip() for p in body.split(",")) if body.strip() else []:
            key, eq, value = part.partition("=")
            if eq and _KEY.fullmatch(key.strip()):
                if key.strip() in items:
                    raise fail(f"'{key.strip()}' given twice")
                items[key.strip()] = value.strip()
            elif positional is None and part:
                positional = part
            else:
                raise fail(
                    f"unexpected '{_brief(part)}' (options are key=value, separated by commas)"
                )
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise fail(f"unknown reward kind '{_brief(kind)}' (known: {', '.join(KINDS)})")
    main, allowed = KINDS[kind]
    if positional is not None:
        if main is None:
            raise fail(f"'{kind}' takes no positional value (got '{_brief(positional)}')")
        if main in items:
            raise fail(f"'{main}' given twice")
        items[main] = positional
    weight = _convert(items.pop("weight", 1.0), float, "weight", fail)
    name = items.pop("name", None)
    name = kind if name is None else str(name)
    if not name.strip():
        raise fail("'name' must not be empty")
    options = {}
    for key, value in items.items():
        if key not in allowed:
            known = ", ".join([*allowed, "weight", "name"])
            raise fail(f"unknown option '{_brief(key)}' for '{kind}' (known: {known})")
        if value is None:
            continue
        options[key] = _convert(value, allowed[key], key, fail)
    if kind in REQUIRED and options.get(REQUIRED[kind]) in (None, ""):
        raise fail(f"'{kind}' needs '{REQUIRED[kind]}' (e.g. {kind}:VALUE)")
    if kind == "judge" and float(options.get("min", 1)) >= float(options.get("max", 5)):
        raise fail("'min' must be below 'max'")
    return RewardSpec(kind, options, weight, name, text)


def parse_reward_specs(specs: list, field: str = "reward") -> list[RewardSpec]:
    """Every spec of the option `field`, one weighted sum: errors name the entry (`field[i]`)
    when there are several, and two specs may not share a name (the keys of `score_parts`)."""
    if not isinstance(specs, list | tuple):
        specs = [specs]
    out = [
        parse_reward_spec(s, field=field if len(specs) == 1 else f"{field}[{i}]")
        for i, s in enumerate(specs)
    ]
    names = Counter(s.name for s in out)
    dupes = [n for n, c in names.items() if c > 1]
    if dupes:
        raise UserError(
            f"two rewards are named '{dupes[0]}'; give one a name=... option", field=field
        )
    return out


def _spec_error(e: UserError, spec: RewardSpec, field: str | None) -> UserError:
    """`e`, raised for `spec`, as one message naming the spec once (and `field` when given)."""
    msg = str(e)
    if not msg.startswith(f"reward '{spec.text}'"):
        msg = f"reward '{spec.text}': {msg}"
    return UserError(msg, field=field)


def check_reward_models(
    specs: list[RewardSpec], field: str | None = None, defaults: dict | None = None
) -> None:
    """Resolve every model a reward names (folder files checked, see models.resolve_model) and
    every file it reads, without loading anything: a bad path fails before a command writes.

    A local model folder with only pickle weights is refused unless `allow_pickle` is true in
    the spec's options or, when the spec does not say, in `defaults` (the command's options, as
    `build_rewards` gets them); with neither, the check is left to `build_rewards`. Errors name
    the spec, and `field` (the option it came from) when given."""
    from .models import check_weights_format, resolve_model

    for spec in specs:
        try:
            if spec.kind in MODEL_OPTIONS:
                path = resolve_model(spec.options[MODEL_OPTIONS[spec.kind]])
                allow = spec.options.get("allow_pickle")
                if allow is None and defaults is not None:
                    allow = defaults.get("allow_pickle", False)
                if allow is not None:
                    check_weights_format(path, bool(allow))
            if spec.kind == "length" and spec.options.get("tokenizer"):
                resolve_model(spec.options["tokenizer"])
            if spec.kind == "python":
                module = spec.options["function"].rpartition(":")[0]
                if module.endswith(".py") and not Path(module).is_file():
                    raise UserError("file not found", file=module)
            if spec.kind == "judge" and spec.options.get("rubric"):
                if not Path(spec.options["rubric"]).is_file():
                    raise UserError("judge rubric file not found", file=spec.options["rubric"])
        except UserError as e:
            raise _spec_error(e, spec, field) from None


# ----------------------------------------------------------------------------- shared helpers


def context_text(prompt: str | list[dict]) -> str:
    """A prompt as plain text: a string as is, messages as an HH transcript ending 'Assistant:'."""
    if isinstance(prompt, str):
        return prompt
    roles = {"user": "Human", "assistant": "Assistant"}
    turns = "".join(
        f"\n\n{roles.get(m['role'], m['role'].title())}: {m['content']}" for m in prompt
    )
    return turns + "\n\nAssistant:"


def rm_format(tokenizer, prompt, fmt: str = "auto") -> str:
    """Resolve `auto`: chat for message-list prompts when the tokenizer has a template."""
    if fmt not in ("auto", "chat", "concat", "pair"):
        raise UserError(f"format must be auto, chat, concat or pair, got '{fmt}'")
    if fmt != "auto":
        return fmt
    if isinstance(prompt, list) and getattr(tokenizer, "chat_template", None):
        return "chat"
    return "concat"


def rm_text(tokenizer, prompt, response: str, fmt: str = "auto") -> str | tuple[str, str]:
    """The input a reward model reads for (prompt, response); the BT trainer should use the same.

    - chat: the tokenizer's chat template over the prompt messages plus the assistant reply;
    - concat: prompt text + response (HH style: the prompt ends with 'Assistant:');
    - pair: (prompt text, response) as a text pair (OpenAssistant DeBERTa-style cross-encoders);
    - auto: chat for message-list prompts when the tokenizer has a template, else concat.
    """
    fmt = rm_format(tokenizer, prompt, fmt)
    if fmt == "chat":
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        messages = [*messages, {"role": "assistant", "content": response}]
        return tokenizer.apply_chat_template(messages, tokenize=False)
    ctx = context_text(prompt)
    if fmt == "pair":
        return ctx, response
    # a transcript we rendered ends in 'Assistant:'; HH responses already start with a space
    sep = " " if isinstance(prompt, list) and not response.startswith(" ") else ""
    return ctx + sep + response


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Index batches, longest first, so each batch pads only to its own longest row."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), max(1, batch_size))]


def _flat(rows: list[dict]) -> list[tuple[int, int]]:
    return [(r, i) for r, row in enumerate(rows) for i in range(len(row["responses"]))]


def _unflat(values: list, rows: list[dict]) -> list[list]:
    out, pos = [], 0
    for row in rows:
        k = len(row["responses"])
        out.append(list(values[pos : pos + k]))
        pos += k
    return out


def _progress(iterable, desc: str, total: int | None = None):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, unit="batch")


# ----------------------------------------------------------------------------- base


class Reward:
    """One reward component. `score(rows)` -> per row, one float (or None: failed) per response."""

    def __init__(self, spec: RewardSpec, defaults: dict):
        self.spec, self.name, self.weight = spec, spec.name, spec.weight
        self.opt = {**defaults, **spec.options}
        # row id -> {response index: reason}, filled by rewards that can fail (the judge)
        self.failures: dict[str, dict[int, str]] = {}

    def score(self, rows: list[dict]) -> list[list[float | None]]:
        raise NotImplementedError


class InputScores(Reward):
    """`input`: keep the scores the rows came with (e.g. dataset chosen=1 / rejected=0)."""

    def score(self, rows):
        for row in rows:
            if row.get("scores") is None:
                raise UserError(f"reward 'input': row '{row['id']}' has no scores")
        return [list(row["scores"]) for row in rows]


class Sentiment(Reward):
    """`sentiment`: VADER compound score in [-1, 1] (offline stand-in for the IMDB classifier of
    RRHF Appendix C). `text=full` scores prompt + response instead of the response alone."""

    def __init__(self, spec, defaults):
        super().__init__(spec, defaults)
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError:
            raise UserError("needs vaderSentiment: pip install vaderSentiment") from None
        self.analyzer = SentimentIntensityAnalyzer()
        self.full = self.opt.get("text", "response") == "full"
        if self.opt.get("text", "response") not in ("response", "full"):
            raise UserError("text must be 'response' or 'full'")

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

    def __init__(self, spec, defaults):
        super().__init__(spec, defaults)
        self.lam = float(self.opt["lambda"])
        self.unit = self.opt.get("unit", "chars")
        if self.unit not in ("chars", "tokens"):
            raise UserError(f"unit must be chars or tokens, got '{self.unit}'")
        self.tokenizer = None
        if self.unit == "tokens":
            if not self.opt.get("tokenizer"):
                raise UserError("unit=tokens needs tokenizer=PATH")
            from .models import load_tokenizer, resolve_model

            self.tokenizer = load_tokenizer(resolve_model(self.opt["tokenizer"]))

    def size(self, response: str) -> int:
        if self.tokenizer is None:
            return len(response)
        return len(self.tokenizer(response, add_special_tokens=False).input_ids)

    def score(self, rows):
        return [[-self.lam * self.size(r) for r in row["responses"]] for row in rows]


class PythonFunction(Reward):
    """`python:MODULE:FUNCTION` (MODULE may be a .py file): fn(prompt, response) -> float."""

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


# ----------------------------------------------------------------------------- model rewards


def trained_with(path: str) -> dict:
    """What `rankalign train --loss bt-reward | preference` saved beside its model (the input
    format, the preference template), so `rm:PATH` / `preference:PATH` read it as trained;
    {} without that file. A file that cannot be read, is not JSON or is not a JSON object is a
    one-line UserError naming it, never silently ignored."""
    from .data import read_json_file

    f = Path(path) / "rankalign_reward_model.json"
    if not f.is_file():
        return {}
    data = read_json_file(f)
    if not isinstance(data, dict):
        raise UserError(f"expected a JSON object, got {type(data).__name__}", file=f)
    return data


class ModelReward(Reward):
    """Shared loading of a local or hub model (safe defaults: safetensors, no remote code)."""

    def __init__(self, spec, defaults):
        super().__init__(spec, defaults)
        from .models import check_weights_format, load_tokenizer, resolve_model

        self.path = resolve_model(self.opt["path"])
        check_weights_format(self.path, bool(self.opt.get("allow_pickle")))
        self.batch_size = int(self.opt.get("batch_size", 8))
        self.max_length = int(self.opt.get("max_length", 1024))
        self.dtype = torch_dtype(self.opt.get("dtype", "float32"))
        self.device = default_device(self.opt.get("device", "auto"))
        self.tokenizer = load_tokenizer(
            self.path, trust_remote_code=bool(self.opt.get("trust_remote_code"))
        )

    def _from_pretrained(self, auto_class):
        try:
            return (
                auto_class.from_pretrained(
                    self.path,
                    dtype=self.dtype,
                    trust_remote_code=bool(self.opt.get("trust_remote_code")),
                    use_safetensors=None if self.opt.get("allow_pickle") else True,
                )
                .to(self.device)
                .eval()
            )
        except (OSError, ValueError) as e:
            raise UserError(
                f"cannot load model: {str(e).splitlines()[0][:300]}", file=self.path
            ) from None


class SequenceClassifierReward(ModelReward):
    """`rm:PATH`: an AutoModelForSequenceClassification (OpenAssistant-style reward models, and
    our own Bradley-Terry models). The value is the model's own pooled logit (last non-pad token
    for decoders, [CLS] for encoders), so it equals a plain forward pass or an HF pipeline.
    Inputs are sorted by length and right-padded; `label=NAME|INDEX` picks a logit of a
    multi-class model (e.g. POSITIVE of a sentiment classifier), `output=prob` its softmax."""

    def __init__(self, spec, defaults):
        super().__init__(spec, defaults)
        from transformers import AutoModelForSequenceClassification

        self.model = self._from_pretrained(AutoModelForSequenceClassification)
        tok, config = self.tokenizer, self.model.config
        # batching needs a pad id, and the model finds its last token by that same id
        if config.pad_token_id is None:
            config.pad_token_id = tok.pad_token_id
        tok.pad_token = tok.convert_ids_to_tokens(config.pad_token_id)
        tok.padding_side, tok.truncation_side = "right", "left"  # keep the response's end
        self.format = self.opt.get("format") or trained_with(self.path).get("format", "auto")
        self.prob = self.opt.get("output", "logit") == "prob"
        label = self.opt.get("label")
        if label is None:
            if config.num_labels != 1:
                raise UserError(
                    f"the model has {config.num_labels} labels "
                    f"({', '.join(map(str, config.id2label.values()))}); pick one "
                    "with label=NAME",
                    file=self.path,
                )
            self.label = 0
        elif str(label).isdigit():
            self.label = int(label)
        else:
            names = {str(v).lower(): int(k) for k, v in config.id2label.items()}
            if str(label).lower() not in names:
                raise UserError(f"no label '{label}' (labels: {', '.join(names)})", file=self.path)
            self.label = names[str(label).lower()]

    def _encode(self, prompt, response):
        fmt = rm_format(self.tokenizer, prompt, self.format)
        text = rm_text(self.tokenizer, prompt, response, fmt)
        # a chat template writes its own special tokens; plain text gets the tokenizer's
        kw = {
            "truncation": "only_first" if fmt == "pair" else True,
            "max_length": self.max_length,
            "add_special_tokens": fmt != "chat",
        }
        return self.tokenizer(*text, **kw) if fmt == "pair" else self.tokenizer(text, **kw)

    def score(self, rows):
        import torch

        flat = _flat(rows)
        enc = [self._encode(rows[r]["prompt"], rows[r]["responses"][i]) for r, i in flat]
        values: list[float] = [0.0] * len(enc)
        batches = length_batches([len(e["input_ids"]) for e in enc], self.batch_size)
        for batch in _progress(batches, self.name):
            inputs = self.tokenizer.pad([enc[j] for j in batch], return_tensors="pt").to(
                self.device
            )
            with torch.inference_mode():
                logits = self.model(**inputs).logits.float()
            out = logits.softmax(-1)[:, self.label] if self.prob else logits[:, self.label]
            for j, v in zip(batch, out.tolist()):
                values[j] = v
        return _unflat(values, rows)


# ("summary.weight" also matches TRL's "v_head.summary.weight")
HEAD_KEYS = (
    "v_head.weight",
    "score.weight",
    "summary.weight",
    "value_head.weight",
    "reward_head.weight",
)


def load_scalar_head_model(path: str, dtype, trust_remote_code: bool = False):
    """A causal-LM body (AutoModel) plus a linear scalar head, from one checkpoint folder.

    The RRHF paper's reward model (Dahoas/gptj-rm-static) and TRL value-head checkpoints store
    the body under a wrapper prefix (`transformer.`, `model.`, `pretrained_model.` ...) next to
    `v_head.weight`; the prefix is found by matching key suffixes against the body's own keys.
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    folder = Path(path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(
            snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
        )
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UserError("no .safetensors weights in the folder", file=folder)
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    head = next((k for h in HEAD_KEYS for k in state if k == h or k.endswith("." + h)), None)
    if head is None:
        raise UserError(
            f"no scalar head in the checkpoint (looked for {', '.join(HEAD_KEYS)})", file=folder
        )
    weight, bias = state.pop(head).float(), state.pop(head[: -len("weight")] + "bias", None)
    if weight.numel() != weight.shape[-1] or (bias is not None and bias.numel() != 1):
        raise UserError(
            f"head '{head}' has shape {tuple(weight.shape)}; expected one output", file=folder
        )
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    body = AutoModel.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    wanted = set(body.state_dict())
    prefixes = Counter()
    for key in state:
        parts = key.split(".")
        prefixes.update(
            ".".join(parts[:j]) for j in range(len(parts)) if ".".join(parts[j:]) in wanted
        )
    prefix = prefixes.most_common(1)[0][0] if prefixes else ""
    cut = len(prefix) + 1 if prefix else 0
    mapped = {k[cut:]: v for k, v in state.items() if k.startswith(prefix) and k[cut:] in wanted}
    missing = sorted(wanted - set(mapped))
    if missing:
        raise UserError(
            f"checkpoint does not match the {config.model_type} body: {len(missing)} "
            f"weights missing (first: {missing[0]})",
            file=folder,
        )
    body.load_state_dict(mapped, strict=False)
    return body, weight.reshape(-1), (bias.float().reshape(()) if bias is not None else None)


class CausalHeadReward(ModelReward):
    """`causal-rm:PATH`: a causal LM with a scalar head, read at the last (EOS) token.

    The text is formatted like `rm:` and, as in the RRHF/trlx reward-model code, EOS is appended
    (`append_eos=false` to turn off); the hidden state of the last real token goes through the
    head in fp32. Right padding keeps causal attention exact for each real token."""

    def __init__(self, spec, defaults):
        super().__init__(spec, defaults)
        body, w, b = load_scalar_head_model(
            self.path, self.dtype, bool(self.opt.get("trust_remote_code"))
        )
        self.body = body.to(self.device).eval()
        self.w, self.b = w.to(self.device), (b.to(self.device) if b is not None else None)
        self.format = self.opt.get("format", "auto")
        self.append_eos = bool(self.opt.get("append_eos", True))

    def _ids(self, prompt, response) -> list[int]:
        fmt = rm_format(self.tokenizer, prompt, self.format)
        if fmt == "pair":
            raise UserError(f"reward '{self.spec.text}': format=pair is for encoders")
        text = rm_text(self.tokenizer, prompt, response, fmt)
        ids = self.tokenizer(text, add_special_tokens=fmt != "chat").input_ids
        eos = self.tokenizer.eos_token_id
        if self.append_eos and eos is not None and (not ids or ids[-1] != eos):
            ids = ids + [eos]
        return ids[-self.max_length :]  # keep the end: the score is read there

    def score(self, rows):
        import torch

        flat = _flat(rows)
        ids = [self._ids(rows[r]["prompt"], rows[r]["responses"][i]) for r, i in flat]
        values: list[float] = [0.0] * len(ids)
        pad = self.tokenizer.pad_token_id or 0
        for batch in _progress(length_batches([len(x) for x in ids], self.batch_size), self.name):
            width = max(len(ids[j]) for j in batch)
            inp = torch.tensor([ids[j] + [pad] * (width - len(ids[j])) for j in batch])
            attn = torch.tensor([[1] * len(ids[j]) + [0] * (width - len(ids[j])) for j in batch])
            with torch.inference_mode():
                hidden = self.body(
                    input_ids=inp.to(self.device), attention_mask=attn.to(self.device)
                ).last_hidden_state
                last = hidden[torch.arange(len(batch)), attn.sum(1).to(self.device) - 1].float()
                out = last @ self.w + (self.b if self.b is not None else 0.0)
            for j, v in zip(batch, out.tolist()):
                values[j] = v
        return _unflat(values, rows)


PREFERENCE_TEMPLATE = "[CONTEXT] {context} [RESPONSE A] {response_a} [RESPONSE B] {response_b} \n"


def preference_prompt(
    tokenizer,
    prompt,
    response_a: str,
    response_b: str,
    template: str = PREFERENCE_TEMPLATE,
    chat_template: str = "auto",
) -> str:
    """The text a pairwise preference model reads; its next token answers "A" or "B"
    (RLHF Workflow §2.2). The preference trainer should build its inputs with this function."""
    text = (
        template.replace("{context}", context_text(prompt))
        .replace("{response_a}", response_a)
        .replace("{response_b}", response_b)
    )
    if chat_template == "never" or (chat_template == "auto" and not tokenizer.chat_template):
        return text
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
    )


class PreferenceReward(ModelReward):
    """`preference:PATH`: P(a > b) from the next-token logits of "A" vs "B", both orders averaged
    to cancel position bias: P(i > j) = (P_A(i, j) + 1 - P_A(j, i)) / 2, so P(j > i) = 1 - P(i > j).
    A list of k responses is ranked by wins against the others: r_i = mean_{j != i} P(i > j)
    (k (k-1) forward passes per list; a single response gets 0.5)."""

    def __init__(self, spec, defaults):
        super().__init__(spec, defaults)
        from transformers import AutoModelForCausalLM

        self.model = self._from_pretrained(AutoModelForCausalLM)
        meta = trained_with(self.path)
        self.template = PREFERENCE_TEMPLATE
        tfile = self.opt.get("template") or (
            meta.get("template") and Path(self.path) / meta["template"]
        )
        if tfile:
            if not Path(tfile).is_file():
                raise UserError("preference template file not found", file=tfile)
            self.template = Path(tfile).read_text(encoding="utf-8")
        # an explicit option wins over what the model was trained with, which wins over --chat_template
        self.chat = (
            spec.options.get("chat_template")
            or meta.get("chat_template")
            or self.opt.get("chat_template", "auto")
        )
        tok = self.tokenizer
        self.token_a = tok.encode("A", add_special_tokens=False)[0]
        self.token_b = tok.encode("B", add_special_tokens=False)[0]
        if self.token_a == self.token_b:
            raise UserError("the tokenizer does not tell 'A' from 'B'", file=self.path)

    def prob_first(self, texts: list[str]) -> list[float]:
        """P("A") / (P("A") + P("B")) at the next token after each text."""
        import torch

        special = self.chat == "never" or not self.tokenizer.chat_template
        ids = [
            self.tokenizer(t, add_special_tokens=special).input_ids[-self.max_length :]
            for t in texts
        ]
        pad = self.tokenizer.pad_token_id or 0
        out: list[float] = [0.0] * len(ids)
        for batch in _progress(length_batches([len(x) for x in ids], self.batch_size), self.name):
            width = max(len(ids[j]) for j in batch)
            # left padding with explicit positions: the last position is every row's next token
            inp = torch.tensor([[pad] * (width - len(ids[j])) + ids[j] for j in batch])
            attn = torch.tensor([[0] * (width - len(ids[j])) + [1] * len(ids[j]) for j in batch])
            pos = (attn.cumsum(1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = self.model(
                    input_ids=inp.to(self.device),
                    attention_mask=attn.to(self.device),
                    position_ids=pos.to(self.device),
                    logits_to_keep=1,
                ).logits[:, -1]
            pa = logits.float()[:, [self.token_a, self.token_b]].softmax(-1)[:, 0]
            for j, v in zip(batch, pa.tolist()):
                out[j] = v
        return out

    def score(self, rows):
        pairs = [
            (r, i, j)
            for r, row in enumerate(rows)
            for i in range(len(row["responses"]))
            for j in range(len(row["responses"]))
            if i != j
        ]
        texts = [
            preference_prompt(
                self.tokenizer,
                rows[r]["prompt"],
                rows[r]["responses"][i],
                rows[r]["responses"][j],
                self.template,
                self.chat,
            )
            for r, i, j in pairs
        ]
        p_first = dict(zip(pairs, self.prob_first(texts)))
        out = []
        for r, row in enumerate(rows):
            k = len(row["responses"])
            win = [
                [(p_first[r, i, j] + 1 - p_first[r, j, i]) / 2 for j in range(k) if j != i]
                for i in range(k)
            ]
            out.append([sum(w) / len(w) if w else 0.5 for w in win])
        return out


class PolicyLogprob(ModelReward):
    """`policy-logprob:PATH`: the policy as reward model, p_i = logp(y_i | x) / |y_i|
    (RRHF paper §3.2 and Table 5: the length-normalized log-prob RRHF itself ranks with)."""

    def __init__(self, spec, defaults):
        super().__init__(spec, defaults)
        from transformers import AutoModelForCausalLM

        self.model = self._from_pretrained(AutoModelForCausalLM)

    def score(self, rows):
        results = policy_logps(
            self.model,
            self.tokenizer,
            rows,
            max_length=self.max_length,
            min_response_tokens=int(self.opt.get("min_response_tokens", 64)),
            chat_template=self.opt.get("chat_template", "auto"),
            batch_size=self.batch_size,
            desc=self.name,
        )
        return [[lp / max(n, 1) for lp, n in zip(logps, lens)] for logps, lens in results]


def policy_logps(
    model, tokenizer, rows, *, max_length, min_response_tokens, chat_template, batch_size, desc
):
    """Per row, (sum log-prob of each response, its token count) under `model`."""
    import torch

    from . import logprobs

    if hasattr(logprobs, "score_rows"):
        return logprobs.score_rows(
            model,
            tokenizer,
            rows,
            max_length=max_length,
            min_response_tokens=min_response_tokens,
            chat_template=chat_template,
            batch_size=batch_size,
            desc=desc,
        )
    # the same computation from the trainer's building blocks (until score_rows exists)
    from .tokenization import encode_list

    enc = [
        encode_list(
            tokenizer,
            r["prompt"],
            r["responses"],
            max_length=max_length,
            min_response_tokens=min_response_tokens,
            chat_template=chat_template,
        )
        for r in rows
    ]
    sizes = [len(e.prompt_ids) + max(map(len, e.response_ids)) for e in enc]
    out: list = [None] * len(rows)
    device = next(model.parameters()).device
    for batch in _progress(length_batches(sizes, batch_size), desc):
        tensors = logprobs.collate_lists([enc[j] for j in batch], tokenizer.pad_token_id or 0)
        with torch.inference_mode():
            logp, lens, _ = logprobs.response_logps(
                model, {k: v.to(device) for k, v in tensors.items()}
            )
        for n, j in enumerate(batch):
            k = len(rows[j]["responses"])
            out[j] = (logp[n, :k].tolist(), [int(x) for x in lens[n, :k].tolist()])
    return out


def _judge(spec, defaults):
    from .judge import JudgeReward

    return JudgeReward(spec, defaults)


BUILDERS = {
    "input": InputScores,
    "sentiment": Sentiment,
    "length": LengthPenalty,
    "python": PythonFunction,
    "rm": SequenceClassifierReward,
    "causal-rm": CausalHeadReward,
    "preference": PreferenceReward,
    "policy-logprob": PolicyLogprob,
    "judge": _judge,
}


def build_rewards(
    specs: list[RewardSpec], defaults: dict | None = None, field: str = "reward"
) -> list[Reward]:
    """Instantiate (load) every reward of specs parsed by `parse_reward_specs` (which refuses two
    with one name); errors name `field` (the option the specs came from) and the spec."""
    rewards = []
    for spec in specs:
        try:
            rewards.append(BUILDERS[spec.kind](spec, dict(defaults or {})))
        except UserError as e:
            raise _spec_error(e, spec, field) from None
    return rewards
