"""How a reward or preference model sees text: the one contract training and scoring share.

`rm_text` / `encode_rm_input` build a scalar reward model's input (formats auto / chat / concat /
pair, special tokens, truncation from the left) — `train --loss bt-reward` trains on exactly what
`score --reward rm:PATH` later feeds; `preference_prompt` and the A/B answer tokens do the same
for the pairwise preference model; `METADATA_FILE` records how a saved model was trained so
scoring and evaluation read it back (`trained_with`).
"""

from __future__ import annotations

import os
from pathlib import Path

from rankalign.data import read_json_file
from rankalign.errors import UserError


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


METADATA_FILE = "rankalign_reward_model.json"  # how the model was trained: format, template
TEMPLATE_FILE = "preference_template.txt"


def trained_with(path: str) -> dict:
    """What `rankalign train --loss bt-reward | preference` saved beside its model (the input
    format, the preference template), so `rm:PATH` / `preference:PATH` read it as trained;
    {} without that file. A file that cannot be read, is not JSON or is not a JSON object is a
    one-line UserError naming it, never silently ignored."""

    f = Path(path) / METADATA_FILE
    if not f.is_file():
        return {}
    data = read_json_file(f)
    if not isinstance(data, dict):
        raise UserError(f"expected a JSON object, got {type(data).__name__}", file=f)
    return data


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


def encode_rm_input(tokenizer, prompt, response: str, fmt: str, max_length: int | None) -> dict:
    """The token ids `rewards.SequenceClassifierReward` feeds the model for (prompt, response).

    Same text (`rm_text`), same special tokens (none added to a chat template's own), and
    truncation from the left (the tokenizer's truncation_side, set by `prepare_rm_tokenizer`),
    so training and scoring see identical inputs. `max_length=None`: no truncation.
    """
    fmt = rm_format(tokenizer, prompt, fmt)
    text = rm_text(tokenizer, prompt, response, fmt)
    kw = {"add_special_tokens": fmt != "chat"}
    if max_length is not None:
        kw |= {"truncation": "only_first" if fmt == "pair" else True, "max_length": max_length}
    enc = tokenizer(*text, **kw) if fmt == "pair" else tokenizer(text, **kw)
    return dict(enc)


def prepare_rm_tokenizer(tokenizer, config) -> None:
    """Pad id shared by model and tokenizer (the model finds its last token by it), right
    padding, left truncation (keep the response's end): what `rm:` sets up at scoring time."""
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = tokenizer.pad_token_id
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(config.pad_token_id)
    tokenizer.padding_side, tokenizer.truncation_side = "right", "left"


def answer_tokens(tokenizer, where=None) -> tuple[int, int]:
    """The ids of "A" and "B" exactly as `rewards.PreferenceReward` reads them."""
    a = tokenizer.encode("A", add_special_tokens=False)[0]
    b = tokenizer.encode("B", add_special_tokens=False)[0]
    if a == b:
        raise UserError("the tokenizer does not tell 'A' from 'B'", file=where)
    return a, b


def read_template(path: str | os.PathLike | None) -> str:
    """A preference template file (with {context} {response_a} {response_b}); the default
    template without one."""
    if not path:
        return PREFERENCE_TEMPLATE
    tfile = Path(path)
    if not tfile.is_file():
        raise UserError("preference template file not found", file=tfile)
    text = tfile.read_text(encoding="utf-8")
    missing = [k for k in ("{context}", "{response_a}", "{response_b}") if k not in text]
    if missing:
        raise UserError(f"template lacks {', '.join(missing)}", file=tfile)
    return text


def preference_ids(tokenizer, text: str, chat_template: str) -> list[int]:
    """Token ids of a preference prompt as `PreferenceReward.prob_first` builds them (a chat
    template writes its own special tokens); it keeps the last max_length of them."""
    special = chat_template == "never" or not tokenizer.chat_template
    return tokenizer(text, add_special_tokens=special).input_ids
