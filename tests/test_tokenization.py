"""Tests for rankalign.tokenization with the tiny BPE tokenizer of conftest (it adds BOS `<s>`)."""

from __future__ import annotations

import copy
import random

import pytest

from rankalign.errors import UserError
from rankalign.tokenization import (
    encode_list,
    encode_prompt,
    encode_response,
    fit_to_length,
    is_transcript,
    prompt_text,
    resolve_chat_template,
    trained_chat_template,
)

MESSAGES = [
    {"role": "system", "content": "be nice"},
    {"role": "user", "content": "what is a good movie?"},
]
HH_PROMPT = "\n\nHuman: what is a good movie?\n\nAssistant:"


def _count(ids, token_id):
    return sum(1 for t in ids if t == token_id)


# --------------------------------------------------------------------------------------------
# BOS / EOS


def test_string_prompt_gets_bos_once_at_start(tokenizer):
    bos = tokenizer.bos_token_id
    ids = encode_prompt(tokenizer, HH_PROMPT)
    assert ids[0] == bos
    assert _count(ids, bos) == 1
    assert ids[1:] == tokenizer(HH_PROMPT, add_special_tokens=False).input_ids
    assert prompt_text(tokenizer, HH_PROMPT) == HH_PROMPT  # raw text, no template by default


@pytest.mark.parametrize("response", [" the movie was great", "bad", " a\nb  c ", "", "x"])
def test_response_has_no_bos_and_ends_with_eos(tokenizer, response):
    ids = encode_response(tokenizer, response)
    assert tokenizer.bos_token_id not in ids
    assert ids[-1] == tokenizer.eos_token_id
    assert _count(ids, tokenizer.eos_token_id) == 1
    assert ids[:-1] == tokenizer(response, add_special_tokens=False).input_ids


def test_no_bos_between_prompt_and_response(tokenizer):
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    for prompt in (HH_PROMPT, MESSAGES):
        enc = encode_list(
            tokenizer, prompt, [" a great one", " i think this is bad"], max_length=512
        )
        for r in enc.response_ids:
            seq = enc.prompt_ids + r
            assert bos not in seq[1:], seq
            assert seq[-1] == eos
            assert r[0] != bos


def test_message_prompt_uses_chat_template(tokenizer):
    text = prompt_text(tokenizer, MESSAGES)
    assert text == tokenizer.apply_chat_template(
        MESSAGES, add_generation_prompt=True, tokenize=False
    )
    assert text.endswith("<|assistant|>")  # generation prompt added
    ids = encode_prompt(tokenizer, MESSAGES)
    assert ids == tokenizer(text, add_special_tokens=False).input_ids
    assert ids[-1] == tokenizer.convert_tokens_to_ids("<|assistant|>")
    # the template holds the special tokens it wants; none is added on top of it
    assert tokenizer.bos_token_id not in ids


def test_template_with_bos_gives_exactly_one_bos(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = "{{ bos_token }}" + tokenizer.chat_template
    ids = encode_prompt(tok, MESSAGES)
    assert ids[0] == tok.bos_token_id
    assert _count(ids, tok.bos_token_id) == 1  # no double BOS (template + tokenizer)


def test_chat_template_always_wraps_string_prompt(tokenizer):
    wrapped = prompt_text(tokenizer, "what is a good movie?", chat_template="always")
    assert wrapped == "<|user|>what is a good movie?</s><|assistant|>"
    assert encode_prompt(
        tokenizer, "what is a good movie?", chat_template="always"
    ) == encode_prompt(tokenizer, [{"role": "user", "content": "what is a good movie?"}])
    # "auto" leaves a string prompt as raw text, "never" too
    assert prompt_text(tokenizer, HH_PROMPT, chat_template="auto") == HH_PROMPT
    assert prompt_text(tokenizer, HH_PROMPT, chat_template="never") == HH_PROMPT
    assert encode_prompt(tokenizer, HH_PROMPT, chat_template="never") == encode_prompt(
        tokenizer, HH_PROMPT
    )


def test_never_with_messages_raises(tokenizer):
    with pytest.raises(UserError, match="never"):
        prompt_text(tokenizer, MESSAGES, chat_template="never")
    with pytest.raises(UserError):
        encode_list(tokenizer, MESSAGES, ["x"], chat_template="never")


def test_unknown_chat_template_mode_raises(tokenizer):
    with pytest.raises(UserError, match="chat_template"):
        prompt_text(tokenizer, "hi", chat_template="sometimes")


def test_messages_without_a_template_raise(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    with pytest.raises(UserError, match="no chat template"):
        encode_prompt(tok, MESSAGES)
    with pytest.raises(UserError, match="no chat template"):
        encode_prompt(tok, "hi", chat_template="always")
    assert encode_prompt(tok, "hi")[0] == tok.bos_token_id  # string prompts still work


def test_encode_list_matches_parts(tokenizer):
    responses = [" a great one", " the film was terrible", ""]
    enc = encode_list(tokenizer, HH_PROMPT, responses, max_length=512)
    assert enc.prompt_ids == encode_prompt(tokenizer, HH_PROMPT)
    assert enc.response_ids == [encode_response(tokenizer, r) for r in responses]
    assert not enc.prompt_truncated and enc.responses_truncated == 0


# --------------------------------------------------------------------------------------------
# fitting to a length budget


def test_fits_untouched():
    p, rs = list(range(10)), [list(range(100, 105)), list(range(200, 220))]
    enc = fit_to_length(p, rs, max_length=30, min_response_tokens=4)
    assert enc.prompt_ids == p and enc.response_ids == rs
    assert not enc.prompt_truncated and enc.responses_truncated == 0
    # exactly at the limit also fits
    enc = fit_to_length(p, rs, max_length=30, min_response_tokens=64)
    assert enc.prompt_ids == p and enc.response_ids == rs


def test_long_prompt_left_truncated_keeps_end():
    p = list(range(1000))
    rs = [list(range(5000, 5010)), list(range(6000, 6030))]
    enc = fit_to_length(p, rs, max_length=64, min_response_tokens=16)
    assert enc.prompt_truncated
    assert enc.prompt_ids == p[-len(enc.prompt_ids) :]  # the end of the prompt is kept
    assert enc.prompt_ids[-1] == 999
    # the short response is whole; the long one keeps at least the minimum
    assert enc.response_ids[0] == rs[0]
    assert len(enc.response_ids[1]) >= 16
    assert enc.response_ids[1] == rs[1][: len(enc.response_ids[1])]
    for r in enc.response_ids:
        assert len(enc.prompt_ids) + len(r) <= 64
    assert len(enc.prompt_ids) + max(map(len, enc.response_ids)) == 64  # nothing wasted


def test_long_response_right_truncated():
    p = list(range(10))
    rs = [list(range(100, 400)), list(range(500, 505))]
    enc = fit_to_length(p, rs, max_length=50, min_response_tokens=8)
    assert enc.prompt_ids == p and not enc.prompt_truncated
    assert enc.response_ids[0] == rs[0][:40]  # keeps its beginning, cut at the end
    assert enc.response_ids[1] == rs[1]
    assert enc.responses_truncated == 1


def test_min_response_tokens_larger_than_room():
    enc = fit_to_length(
        list(range(100)), [list(range(1000, 1100))], max_length=20, min_response_tokens=500
    )
    assert len(enc.prompt_ids) >= 1
    assert len(enc.prompt_ids) + len(enc.response_ids[0]) <= 20
    assert len(enc.response_ids[0]) == 19
    assert enc.prompt_ids == list(range(100))[-1:]


def test_max_length_too_small():
    with pytest.raises(UserError):
        fit_to_length([1, 2], [[3]], max_length=1)


def test_no_responses():
    enc = fit_to_length(list(range(10)), [], max_length=6, min_response_tokens=2)
    assert len(enc.prompt_ids) <= 6 and enc.prompt_ids == list(range(4, 10))


def test_fit_property_random_lengths():
    rng = random.Random(1234)
    for trial in range(3000):
        max_length = rng.randint(2, 300)
        min_resp = rng.randint(1, 200)
        plen = rng.randint(1, 600)
        k = rng.randint(1, 5)
        prompt = [rng.randrange(1000) for _ in range(plen)]
        responses = [[rng.randrange(1000) for _ in range(rng.randint(1, 400))] for _ in range(k)]
        enc = fit_to_length(prompt, responses, max_length, min_resp)
        ctx = (trial, max_length, min_resp, plen, [len(r) for r in responses])
        P, R = enc.prompt_ids, enc.response_ids
        assert len(R) == k, ctx
        assert len(P) >= 1, ctx
        assert P == prompt[len(prompt) - len(P) :], ctx  # a suffix: left-truncated
        assert enc.prompt_truncated == (len(P) < plen), ctx
        assert enc.responses_truncated == sum(len(a) < len(b) for a, b in zip(R, responses)), ctx
        for kept, orig in zip(R, responses):
            assert kept == orig[: len(kept)], ctx  # a prefix: right-truncated
            assert len(P) + len(kept) <= max_length, ctx
            assert len(kept) >= min(len(orig), min_resp, max_length - 1), ctx
        fits = plen + max(len(r) for r in responses) <= max_length
        if fits:
            assert P == prompt and R == responses, ctx
        # the prompt is only cut as far as the longest kept response needs
        assert len(P) == min(plen, max_length - max(len(r) for r in R)), ctx
        # a response is only cut when the budget is exhausted
        for kept, orig in zip(R, responses):
            if len(kept) < len(orig):
                assert len(P) + len(kept) == max_length, ctx


def test_encode_list_property_with_tokenizer(tokenizer):
    rng = random.Random(7)
    words = "the movie was great and i loved it bad awful sad hello there wonderful".split()
    for _ in range(150):
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(1, 120)))
        if rng.random() < 0.3:
            prompt = [{"role": "user", "content": prompt}]
        responses = [
            " " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 80)))
            for _ in range(rng.randint(1, 4))
        ]
        max_length = rng.randint(8, 200)
        min_resp = rng.randint(1, 40)
        enc = encode_list(
            tokenizer, prompt, responses, max_length=max_length, min_response_tokens=min_resp
        )
        full = [encode_response(tokenizer, r) for r in responses]
        for kept, orig in zip(enc.response_ids, full):
            assert len(enc.prompt_ids) + len(kept) <= max_length
            # a kept BOS takes one token of the budget along with the last prompt token
            has_bos = int(enc.prompt_ids[:1] == [tokenizer.bos_token_id])
            assert len(kept) >= min(len(orig), min_resp, max_length - 1 - has_bos)
            assert tokenizer.bos_token_id not in kept
            if len(kept) == len(orig):
                assert kept[-1] == tokenizer.eos_token_id


def test_truncated_prompt_keeps_bos(tokenizer):
    long_prompt = "the movie was great and i loved it " * 60  # raw text: the tokenizer's BOS
    full = encode_prompt(tokenizer, long_prompt, chat_template="never")
    enc = encode_list(
        tokenizer,
        long_prompt,
        [" fine", " bad"],
        max_length=48,
        min_response_tokens=8,
        chat_template="never",
    )
    assert enc.prompt_truncated
    assert enc.prompt_ids[0] == tokenizer.bos_token_id
    assert _count(enc.prompt_ids, tokenizer.bos_token_id) == 1
    assert enc.prompt_ids[-5:] == full[-5:]  # still the end of the prompt
    for r in enc.response_ids:
        assert len(enc.prompt_ids) + len(r) <= 48


def test_response_never_truncated_to_nothing():
    try:
        enc = fit_to_length(
            list(range(100)), [[1, 2, 3], [4, 5]], max_length=50, min_response_tokens=0
        )
    except UserError:
        return  # rejecting the option is a fine fix too
    assert all(len(r) >= 1 for r in enc.response_ids), enc.response_ids


def test_auto_applies_the_template_except_to_raw_transcripts(tokenizer):
    """`auto`: a plain string prompt gets the model's chat template (what an Instruct model
    expects); an HH transcript stays raw text; a tokenizer without a template leaves it raw."""
    plain = "what is a good movie?"
    assert prompt_text(tokenizer, plain) == prompt_text(tokenizer, plain, chat_template="always")
    assert "<|assistant|>" in prompt_text(tokenizer, plain)
    for transcript in (HH_PROMPT, "Human: hi there\n\nAssistant:", "a\nAssistant: b"):
        assert is_transcript(transcript)
        assert prompt_text(tokenizer, transcript) == transcript
    for not_one in ("what does a Human: label mean?", plain, MESSAGES):
        assert not is_transcript(not_one)
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    assert prompt_text(bare, plain) == plain
    assert encode_prompt(bare, plain) == bare(plain).input_ids


def test_trained_chat_template_is_read_from_the_model_folder(tmp_path):
    assert trained_chat_template(str(tmp_path)) is None
    assert trained_chat_template("smollm2") is None and resolve_chat_template(None, None) == "auto"
    (tmp_path / "rankalign_config.yaml").write_text("rankalign:\n  chat_template: always\n")
    assert trained_chat_template(str(tmp_path)) == "always"
    assert resolve_chat_template(None, str(tmp_path)) == "always"
    assert resolve_chat_template("never", str(tmp_path)) == "never"  # an explicit mode wins
    (tmp_path / "rankalign_config.yaml").write_text("rankalign:\n  chat_template: often\n")
    with pytest.raises(UserError, match="rankalign_config.yaml.*often"):
        trained_chat_template(str(tmp_path))


def test_ultrafeedback_rows_get_the_template_under_auto(tokenizer):
    """UltraFeedback-style rows: a string prompt with message-list responses."""
    from rankalign.data import normalize

    conv = [{"role": "user", "content": "hi"}]
    row = normalize(
        {
            "prompt": "hi",
            "chosen": [*conv, {"role": "assistant", "content": "hello"}],
            "rejected": [*conv, {"role": "assistant", "content": "go"}],
        },
        {"file": "uf.jsonl", "line": 1},
        0,
    )
    assert row["responses"] == ["hello", "go"]
    assert prompt_text(tokenizer, row["prompt"]) == prompt_text(tokenizer, conv)
