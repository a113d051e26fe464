"""Turning a ranked list into token ids: one prompt, k responses, fitted to a length budget.

Rules (the released RRHF code's known tokenization bugs fixed):
- a message-list prompt goes through the tokenizer's chat template with the generation prompt;
  a string prompt is used as raw text (HH style) unless `chat_template="always"`;
- a response is tokenized without special tokens and ends with EOS, so no BOS is ever inserted
  between prompt and response;
- when prompt + response exceed `max_length`, the prompt is cut from the left and every response
  keeps at least `min_response_tokens` (or its whole length, if shorter).
"""

from __future__ import annotations

from dataclasses import dataclass

from rankalign.errors import UserError

CHAT_TEMPLATE_MODES = ("auto", "always", "never")


def prompt_text(tokenizer, prompt: str | list[dict], chat_template: str = "auto") -> str:
    """The prompt as the text the model sees (chat template applied when it should be)."""
    if chat_template not in CHAT_TEMPLATE_MODES:
        raise UserError(
            f"chat_template must be one of {CHAT_TEMPLATE_MODES}, got '{chat_template}'"
        )
    use_template = isinstance(prompt, list) or chat_template == "always"
    if chat_template == "never" and isinstance(prompt, list):
        raise UserError("a message-list prompt needs a chat template (chat_template is 'never')")
    if not use_template:
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            "the tokenizer has no chat template; use string prompts or set chat_template: never"
        )
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode_prompt(tokenizer, prompt: str | list[dict], chat_template: str = "auto") -> list[int]:
    text = prompt_text(tokenizer, prompt, chat_template)
    if isinstance(prompt, list) or chat_template == "always":
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
    # a left-truncated prompt keeps its BOS: the model never saw text without one
    bos = prompt_ids[:1] if prompt_ids[:1] == [tokenizer.bos_token_id] else []
    enc = fit_to_length(
        prompt_ids[len(bos) :],
        [
            encode_response(tokenizer, r)
            if eos
            else tokenizer(r, add_special_tokens=False).input_ids
            for r in responses
        ],
        max_length - len(bos),
        min_response_tokens,
    )
    enc.prompt_ids = bos + enc.prompt_ids
    return enc


HH_STOP = ["\n\nHuman:", "\n\nAssistant:"]


def length_fn(unit: str, tokenizer):
    """How long a text is in `unit`: tokens (of `tokenizer`), chars or words."""
    if unit == "tokens":
        return lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)
    if unit == "words":
        return lambda text: len(text.split())
    return len
