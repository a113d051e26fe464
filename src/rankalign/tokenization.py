"""Turning a ranked list into token ids: one prompt, k responses, fitted to a length budget.

Rules (the released RRHF code's known tokenization bugs fixed):
- `chat_template` chooses whether a prompt goes through the tokenizer's chat template (with the
  generation prompt): `always`, `never`, or `auto` (the default), which applies it when the
  tokenizer has one, except to a string prompt that is itself a raw transcript (`is_transcript`:
  an Anthropic-HH style `Human:` / `Assistant:` turn at the start of a line), which stays raw
  text. A message-list prompt always needs the template;
- a response is tokenized without special tokens and ends with EOS, so no BOS is ever inserted
  between prompt and response;
- when prompt + response exceed `max_length`, the prompt is cut from the left and every response
  keeps at least `min_response_tokens` (or its whole length, if shorter).

A model trained by rankalign records its mode (`rankalign_config.yaml`); `trained_chat_template`
reads it back, so `sample` and `evaluate` encode prompts as training did unless told otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rankalign.errors import UserError

CHAT_TEMPLATE_MODES = ("auto", "always", "never")
# a turn marker at the start of the text or of a line: "Human: hi\n\nAssistant:" (HH's layout)
TRANSCRIPT_TURN = re.compile(r"(?:^|\n)\s*(?:Human|Assistant):")
TRAINED_CONFIG = "rankalign_config.yaml"  # written by `rankalign train` into its output_dir
CHAT_TEMPLATE_HELP = (
    "auto | always | never (default: the mode the model was trained with, from its "
    "rankalign_config.yaml, else auto: the model's chat template unless the prompt is a raw "
    "Human:/Assistant: transcript)"
)


def is_transcript(prompt) -> bool:
    """A string prompt that already holds the dialogue's turns (Anthropic HH: "\\n\\nHuman: ...
    \\n\\nAssistant:"). Such a prompt is the model's input as it is; wrapping it in a chat
    template would nest one dialogue inside another."""
    return isinstance(prompt, str) and TRANSCRIPT_TURN.search(prompt) is not None


def uses_template(tokenizer, prompt: str | list[dict], chat_template: str = "auto") -> bool:
    """Whether `prompt` goes through the chat template under `chat_template` (module rules)."""
    if chat_template not in CHAT_TEMPLATE_MODES:
        raise UserError(
            f"chat_template must be one of {CHAT_TEMPLATE_MODES}, got '{chat_template}'"
        )
    if isinstance(prompt, list):
        if chat_template == "never":
            raise UserError(
                "a message-list prompt needs a chat template (chat_template is 'never')"
            )
        return True
    if chat_template == "auto":
        return bool(getattr(tokenizer, "chat_template", None)) and not is_transcript(prompt)
    return chat_template == "always"


def trained_chat_template(model_path: str | None) -> str | None:
    """The `chat_template` mode a rankalign-trained model was trained with (its output_dir's
    `rankalign_config.yaml`), or None (not a folder, or not trained by rankalign)."""
    if not model_path:
        return None
    path = Path(model_path) / TRAINED_CONFIG
    if not path.is_file():
        return None
    from rankalign.config import load_yaml

    section = load_yaml(path).get("rankalign")
    mode = section.get("chat_template") if isinstance(section, dict) else None
    if mode is not None and mode not in CHAT_TEMPLATE_MODES:
        raise UserError(
            f"chat_template must be one of {', '.join(CHAT_TEMPLATE_MODES)}, got '{mode}'",
            file=path,
            field="rankalign.chat_template",
        )
    return mode


def resolve_chat_template(chat_template: str | None, model_path: str | None) -> str:
    """The mode to encode prompts for `model_path` with: the one given, else the one the model
    was trained with, else `auto`."""
    return chat_template or trained_chat_template(model_path) or "auto"


def prompt_text(tokenizer, prompt: str | list[dict], chat_template: str = "auto") -> str:
    """The prompt as the text the model sees (chat template applied when it should be)."""
    if not uses_template(tokenizer, prompt, chat_template):
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            "the tokenizer has no chat template; use string prompts or set chat_template: never"
        )
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode_prompt(tokenizer, prompt: str | list[dict], chat_template: str = "auto") -> list[int]:
    text = prompt_text(tokenizer, prompt, chat_template)
    if uses_template(tokenizer, prompt, chat_template):
        # the template already holds any BOS/special tokens it wants
        return tokenizer(text, add_special_tokens=False).input_ids
    return tokenizer(text).input_ids


def encode_response(tokenizer, response: str) -> list[int]:
    ids = tokenizer(response, add_special_tokens=False).input_ids
    if tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return ids


@dataclass
class EncodedList:
    prompt_ids: list[int]
    response_ids: list[list[int]]
    prompt_truncated: bool = False
    responses_truncated: int = 0


def fit_to_length(
    prompt_ids: list[int],
    response_ids: list[list[int]],
    max_length: int,
    min_response_tokens: int = 64,
) -> EncodedList:
    """Left-truncate the prompt and right-truncate responses so prompt + each response fits."""
    if max_length < 2:
        raise UserError("max_length must be at least 2", field="max_length")
    if min_response_tokens < 1:
        raise UserError("min_response_tokens must be at least 1", field="min_response_tokens")
    longest = max((len(r) for r in response_ids), default=0)
    # each response may use what the prompt leaves, but never less than the minimum
    allowance = min(max(min_response_tokens, max_length - len(prompt_ids)), max_length - 1)
    responses = [r[:allowance] for r in response_ids]
    keep_prompt = max_length - min(longest, allowance)
    prompt = prompt_ids[-keep_prompt:] if len(prompt_ids) > keep_prompt else prompt_ids
    return EncodedList(
        prompt,
        responses,
        len(prompt) < len(prompt_ids),
        sum(len(a) < len(b) for a, b in zip(responses, response_ids)),
    )


def encode_list(
    tokenizer,
    prompt,
    responses: list[str],
    *,
    max_length: int = 512,
    min_response_tokens: int = 64,
    chat_template: str = "auto",
    eos: bool = True,
) -> EncodedList:
    """Prompt and response token ids, fitted into `max_length` (the prompt is cut from the left
    first, each response keeps at least `min_response_tokens`). eos=False: responses are their
    text's own tokens (generated text that did not end there, e.g. for perplexity)."""
    prompt_ids = encode_prompt(tokenizer, prompt, chat_template)
    response_ids = [
        encode_response(tokenizer, r) if eos else tokenizer(r, add_special_tokens=False).input_ids
        for r in responses
    ]
    return fit_encoded(tokenizer, prompt_ids, response_ids, max_length, min_response_tokens)


def fit_encoded(
    tokenizer,
    prompt_ids: list[int],
    response_ids: list[list[int]],
    max_length: int,
    min_response_tokens: int,
) -> EncodedList:
    """`fit_to_length` for a prompt as the tokenizer encoded it: a left-truncated prompt keeps
    its BOS (the model never saw text without one)."""
    bos = prompt_ids[:1] if prompt_ids[:1] == [tokenizer.bos_token_id] else []
    enc = fit_to_length(
        prompt_ids[len(bos) :], response_ids, max_length - len(bos), min_response_tokens
    )
    enc.prompt_ids = bos + enc.prompt_ids
    return enc


def encode_lists(
    tokenizer,
    prompts: list,
    responses: list[list[str]],
    *,
    max_length: int = 512,
    min_response_tokens: int = 64,
    chat_template: str = "auto",
) -> list[EncodedList]:
    """`encode_list` for many rows at once, the same ids: the texts of all prompts and of all
    responses each go to the tokenizer in one call (a fast tokenizer encodes a batch on every
    core), then each row is fitted as `encode_list` fits it."""
    texts, templated = [], []
    for p in prompts:  # row by row, so the first bad row's error is the one raised
        texts.append(prompt_text(tokenizer, p, chat_template))
        templated.append(uses_template(tokenizer, p, chat_template))
    prompt_ids: list[list[int]] = [[] for _ in prompts]
    for flag in (True, False):  # the template holds its own special tokens (`encode_prompt`)
        idx = [i for i, t in enumerate(templated) if t == flag]
        if idx:
            ids = tokenizer([texts[i] for i in idx], add_special_tokens=not flag).input_ids
            for i, one in zip(idx, ids):
                prompt_ids[i] = one
    flat = [r for rs in responses for r in rs]
    flat_ids = tokenizer(flat, add_special_tokens=False).input_ids if flat else []
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    out, pos = [], 0
    for p_ids, rs in zip(prompt_ids, responses):
        r_ids = [ids + eos for ids in flat_ids[pos : pos + len(rs)]]
        pos += len(rs)
        out.append(fit_encoded(tokenizer, p_ids, r_ids, max_length, min_response_tokens))
    return out


HH_STOP = ["\n\nHuman:", "\n\nAssistant:"]


def length_fn(unit: str, tokenizer):
    """How long a text is in `unit`: tokens (of `tokenizer`), chars or words."""
    if unit == "tokens":
        return lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)
    if unit == "words":
        return lambda text: len(text.split())
    return len
