"""Normalizing layouts: one record of any accepted layout (docs/design.md §1) as a ranked-list
row, validated field by field (prompt, responses, scores, sources, sizes)."""

from __future__ import annotations

import json
import math
from typing import Any

from rankalign.data.files import row_error

HH_ASSISTANT = "\n\nAssistant:"
PROMPT_KEYS = ("prompt", "query", "instruction", "question")
ROLES = {"system", "user", "assistant", "tool", "developer"}
# ShareGPT turns (`{"from": ..., "value": ...}`, LLaMA-Factory's sharegpt format) as chat roles;
# accepted wherever a message list is
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "observation": "tool",
    "function_call": "assistant",
}
# A prompt or response longer than this is an input error, not text to tokenize for minutes
# (1M characters is ~250K tokens, beyond any context window).
MAX_TEXT_CHARS = 1_000_000


def _sharegpt_turn(m: Any, loc: dict, field_name: str) -> Any:
    """A ShareGPT turn `{from, value}` as a `{role, content}` message (anything else as is)."""
    if not (isinstance(m, dict) and "from" in m and "role" not in m):
        return m
    role = SHAREGPT_ROLES.get(m["from"]) if isinstance(m["from"], str) else None
    if role is None:
        raise row_error(
            loc,
            f"{field_name}.from",
            f"unknown ShareGPT speaker {m['from']!r} (use {', '.join(SHAREGPT_ROLES)})",
        )
    if "value" not in m:
        raise row_error(loc, field_name, "a ShareGPT turn needs 'from' and 'value'")
    return {"role": role, "content": m["value"]}


def _check_messages(value: Any, loc: dict, field_name: str) -> list[dict]:
    if not value:
        raise row_error(loc, field_name, "empty message list")
    if isinstance(value, list):
        value = [_sharegpt_turn(m, loc, f"{field_name}[{i}]") for i, m in enumerate(value)]
    for m in value:
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m):
            raise row_error(loc, field_name, "each message needs 'role' and 'content'")
        if m["role"] not in ROLES:
            raise row_error(loc, field_name, f"unknown message role '{m['role']}'")
        if not isinstance(m["content"], str):
            raise row_error(loc, field_name, "message 'content' must be a string")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _prompt(value: Any, loc: dict, field_name: str) -> str | list[dict]:
    if isinstance(value, str):
        if not value.strip():
            raise row_error(loc, field_name, "empty prompt")
        return value
    if isinstance(value, list):
        return _check_messages(value, loc, field_name)
    raise row_error(
        loc,
        field_name,
        f"prompt must be a string or a list of messages, got {type(value).__name__}",
    )


def _response(value: Any, loc: dict, field_name: str) -> str:
    """A response is a string, or a single assistant message (or a list ending in one)."""
    if isinstance(value, str):
        return value
    value = _sharegpt_turn(value, loc, field_name)
    if (
        isinstance(value, dict)
        and value.get("role") == "assistant"
        and isinstance(value.get("content"), str)
    ):
        return value["content"]
    if isinstance(value, list) and value:
        return _response(value[-1], loc, field_name)
    raise row_error(
        loc,
        field_name,
        f"response must be a string or an assistant message, got {type(value).__name__}",
    )


def _number(value: Any, loc: dict, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise row_error(loc, field_name, f"score must be a number, got {json.dumps(value)[:40]}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range (about 1.8e308)
        raise row_error(
            loc, field_name, "score is an integer beyond the float range (must be finite)"
        ) from None
    if not math.isfinite(number):
        raise row_error(loc, field_name, f"score is {number} (must be finite)")
    return number


def _split_hh(chosen: str, rejected: str, loc: dict) -> tuple[str, str, str]:
    """Split Anthropic-HH transcripts into (shared prompt ending in 'Assistant:', chosen, rejected)."""
    cut_c, cut_r = chosen.rfind(HH_ASSISTANT), rejected.rfind(HH_ASSISTANT)
    if cut_c < 0 or cut_r < 0:
        raise row_error(
            loc, "chosen", f"no '{HH_ASSISTANT.strip()}' turn to split the HH transcript at"
        )
    end = cut_c + len(HH_ASSISTANT)
    prompt = chosen[:end]
    if rejected[: cut_r + len(HH_ASSISTANT)] != prompt:
        raise row_error(
            loc,
            "rejected",
            "chosen and rejected do not share the dialogue up to the last Assistant turn",
        )
    return prompt, chosen[end:], rejected[cut_r + len(HH_ASSISTANT) :]


def _check_size(row: dict, loc: dict) -> None:
    prompt = row["prompt"]
    texts = (
        [("prompt", prompt)]
        if isinstance(prompt, str)
        else [(f"prompt[{i}].content", m["content"]) for i, m in enumerate(prompt)]
    )
    texts += [(f"responses[{i}]", r) for i, r in enumerate(row["responses"])]
    for name, text in texts:
        if len(text) > MAX_TEXT_CHARS:
            raise row_error(
                loc,
                name,
                f"{len(text):,} characters (more than {MAX_TEXT_CHARS:,}): "
                "not a prompt or response",
            )


PRO_TAGS = {"<|prompter|>": "\n\nHuman: ", "<|assistant|>": "\n\nAssistant: "}


def pro_prefix(turns: list[str]) -> tuple[str, bool]:
    """A PRO `prefix` (a list of turns) as text, and whether it was tagged. PRO's released HH
    files tag turns `<|prompter|>...` / `<|assistant|>...`; its collator renders them as
    `\n\nHuman: ...\n\nAssistant: ...`, strips the end and joins the response with one space
    (`HH_DataManager.train_data_collator`), which is what the model saw in PRO's training.
    Untagged pieces are joined as they are."""
    text = "".join(turns)
    if not any(tag in text for tag in PRO_TAGS):
        return text, False
    for tag, role in PRO_TAGS.items():
        text = text.replace(tag, role)
    return text.rstrip(), True


def _from_sharegpt(rec: dict, loc: dict) -> dict:
    """A LLaMA-Factory sharegpt row (`conversations`, optional `system`) in the `messages`
    layout (SFT), or with `chosen`/`rejected` (its ranking layout) as a pair whose prompt is the
    conversation."""
    rec = dict(rec)
    turns = _check_messages(rec.pop("conversations"), loc, "conversations")
    system = rec.pop("system", None)
    if system is not None:
        if not isinstance(system, str):
            raise row_error(loc, "system", f"must be a string, got {type(system).__name__}")
        if system.strip() and turns[0]["role"] != "system":
            turns = [{"role": "system", "content": system}, *turns]
    if "chosen" in rec or "rejected" in rec:
        if turns[-1]["role"] == "assistant":
            raise row_error(
                loc,
                "conversations",
                "with chosen/rejected the conversation must end with a "
                "prompt turn (human), not an assistant one",
            )
        rec["prompt"] = turns
    else:
        rec["messages"] = turns
    return rec


def normalize(rec: dict, loc: dict, index: int) -> dict:
    """Turn one record of any supported layout into a ranked-list row (validated)."""
    known = {
        "id",
        "prompt",
        "query",
        "instruction",
        "question",
        "responses",
        "scores",
        "sources",
        "chosen",
        "rejected",
        "prefix",
        "suffix",
        "reward",
        "messages",
    }
    if "conversations" in rec and not any(
        k in rec for k in ("messages", "responses", *PROMPT_KEYS)
    ):
        rec = _from_sharegpt(rec, loc)
    extra = {k: v for k, v in rec.items() if k not in known}
    row_id = rec.get("id", rec.get("_id"))
    row: dict[str, Any] = {"id": str(row_id) if row_id is not None else f"row-{index:06d}"}
    prompt_key = next((k for k in PROMPT_KEYS if rec.get(k) is not None), None)

    if "responses" in rec:  # ranked list / RRHF original
        if prompt_key is None:
            raise row_error(loc, "prompt", "missing prompt (or 'query')")
        row["prompt"] = _prompt(rec[prompt_key], loc, prompt_key)
        responses = rec["responses"]
        if not isinstance(responses, list):
            raise row_error(loc, "responses", f"must be a list, got {type(responses).__name__}")
        row["responses"] = [_response(r, loc, f"responses[{i}]") for i, r in enumerate(responses)]
        for key in ("scores", "sources"):
            if rec.get(key) is not None:
                row[key] = rec[key]
    elif "chosen" in rec or "rejected" in rec:  # pairwise or HH transcript
        for key in ("chosen", "rejected"):
            if rec.get(key) is None:
                raise row_error(
                    loc, key, "missing (pairwise rows need both 'chosen' and 'rejected')"
                )
        if prompt_key is not None:
            row["prompt"] = _prompt(rec[prompt_key], loc, prompt_key)
            row["responses"] = [
                _response(rec["chosen"], loc, "chosen"),
                _response(rec["rejected"], loc, "rejected"),
            ]
        elif isinstance(rec["chosen"], str) and isinstance(rec["rejected"], str):
            prompt, c, r = _split_hh(rec["chosen"], rec["rejected"], loc)
            row["prompt"], row["responses"] = prompt, [c, r]
        else:  # conversational pair without a prompt: the shared messages before the last reply
            c, r = (_check_messages(rec[k], loc, k) for k in ("chosen", "rejected"))
            if c[:-1] != r[:-1] or not c[:-1]:
                raise row_error(
                    loc, "rejected", "chosen and rejected conversations do not share a prompt"
                )
            row["prompt"], row["responses"] = (
                c[:-1],
                [_response(c[-1], loc, "chosen"), _response(r[-1], loc, "rejected")],
            )
        row["scores"] = [1.0, 0.0]
        row["sources"] = ["dataset:chosen", "dataset:rejected"]
    elif "suffix" in rec:  # PRO layout
        prefix = rec.get("prefix")
        if isinstance(prefix, list) and prefix and isinstance(prefix[0], list):
            if any(p != prefix[0] for p in prefix):
                raise row_error(
                    loc, "prefix", "candidates have different prefixes; one prompt per row"
                )
            prefix = prefix[0]
        tagged = False
        if isinstance(prefix, list):
            prefix, tagged = pro_prefix([str(p) for p in prefix])
        row["prompt"] = _prompt(prefix, loc, "prefix")
        if not isinstance(rec["suffix"], list):
            raise row_error(loc, "suffix", "must be a list of responses")
        row["responses"] = [_response(r, loc, f"suffix[{i}]") for i, r in enumerate(rec["suffix"])]
        if tagged:  # PRO's collator joins prompt and response with one space
            row["responses"] = [" " + r for r in row["responses"]]
        if rec.get("reward") is not None:
            row["scores"] = rec["reward"]
    elif "messages" in rec:  # one conversation: SFT data (k = 1)
        msgs = _check_messages(rec["messages"], loc, "messages")
        if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
            raise row_error(loc, "messages", "a conversation must end with an assistant message")
        row["prompt"], row["responses"] = msgs[:-1], [msgs[-1]["content"]]
    elif prompt_key is not None:  # prompts only (input of the sample stage)
        if rec.get("scores") is not None or rec.get("sources") is not None:
            raise row_error(
                loc, "responses", "missing (the row has scores/sources but no responses)"
            )
        row["prompt"] = _prompt(rec[prompt_key], loc, prompt_key)
        row["responses"] = []
    else:
        raise row_error(
            loc, None, f"unrecognized layout (fields: {', '.join(sorted(rec)) or 'none'})"
        )

    _check_size(row, loc)
    k = len(row["responses"])
    if "scores" in row:
        scores = row["scores"]
        if not isinstance(scores, list):
            raise row_error(loc, "scores", f"must be a list, got {type(scores).__name__}")
        if len(scores) != k:
            raise row_error(loc, "scores", f"has {len(scores)} values for {k} responses")
        row["scores"] = [_number(s, loc, f"scores[{i}]") for i, s in enumerate(scores)]
    if "sources" in row:
        if not isinstance(row["sources"], list) or len(row["sources"]) != k:
            raise row_error(loc, "sources", f"must be a list of {k} strings")
        row["sources"] = [str(s) for s in row["sources"]]
    row.update(extra)
    return row
