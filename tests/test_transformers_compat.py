"""The KV-cache keyword across transformers 5.x: `cache` since 5.24, `past_key_values` before.

Our forwards must pass the name the installed model takes and read the cache back from its output
under the name it has, without the deprecation warnings of the old names (5.24 still accepts them,
with a removal date).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import warnings

import pytest
import torch
from conftest import build_gpt2, build_llama

from rankalign.decoding import diverse_beam_search, sample
from rankalign.logprobs import collate_lists, packed_response_logps, response_logps
from rankalign.models import cache_kwarg, output_cache
from rankalign.tokenization import encode_list

LISTS = [
    ("the movie was", ["great", "terrible and boring i think", "ok"]),
    ("hi", ["hello there, how are you today?", "fine"]),
]
PROMPTS = ["the movie was", "hello there, how are you", "i"]


@contextlib.contextmanager
def warnings_and_transformers_logs():
    """Every Python warning and every transformers log record at WARNING or above, as messages.

    transformers' logger does not propagate to the root logger (so pytest's caplog misses it),
    and its `warning_once` remembers messages for the whole process: both are worked around."""
    import transformers.utils.logging  # noqa: F401 - installs Logger.warning_once

    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logger, handler = logging.getLogger("transformers"), Keep(logging.WARNING)
    level = logger.level
    logging.Logger.warning_once.cache_clear()
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
        messages.extend(str(w.message) for w in caught)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def cache_messages(messages: list[str]) -> list[str]:
    return [m for m in messages if "past_key_values" in m or "cache" in m.lower()]


@pytest.mark.parametrize("build", [build_llama, build_gpt2], ids=["llama", "gpt2"])
def test_scoring_and_decoding_warn_about_no_cache_keyword(tokenizer, build):
    model = build(len(tokenizer))
    enc = [encode_list(tokenizer, p, r, max_length=64, min_response_tokens=4) for p, r in LISTS]
    batch = collate_lists(enc, tokenizer.pad_token_id)
    prompts = [tokenizer(p).input_ids for p in PROMPTS]
    with warnings_and_transformers_logs() as messages:
        with torch.no_grad():
            response_logps(model, batch, shared_prompt=True)
        logp, lengths, mask = response_logps(model, batch, shared_prompt=True)  # with gradients
        (logp[mask] / lengths[mask]).sum().backward()
        packed_response_logps(model, batch)
        sample(model, prompts, num_return_sequences=2, max_new_tokens=4, seeds=list(range(6)))
        diverse_beam_search(
            model, prompts, num_beams=4, num_beam_groups=2, diversity_penalty=1.0, max_new_tokens=4
        )
    assert cache_messages(messages) == []


def test_the_warning_capture_sees_the_old_keyword(tokenizer):
    """The check above can fail: on a transformers that renamed the keyword, the old one warns."""
    model = build_llama(len(tokenizer))
    if cache_kwarg(model) != "cache":
        pytest.skip("this transformers takes past_key_values without a warning")
    ids = torch.tensor([tokenizer("the movie was").input_ids])
    with warnings_and_transformers_logs() as messages, torch.no_grad():
        out = model(input_ids=ids, past_key_values=None, use_cache=True)
        out.past_key_values  # noqa: B018 - the old attribute name: a deprecation log record
    assert any("past_key_values" in m for m in cache_messages(messages))


def test_cache_kwarg_follows_the_forward_signature(tokenizer):
    from transformers import LlamaForCausalLM

    model = build_llama(len(tokenizer))
    takes = inspect.signature(LlamaForCausalLM.forward).parameters
    assert cache_kwarg(model) == ("cache" if "cache" in takes else "past_key_values")

    class Wrapper(torch.nn.Module):  # DDP / PEFT: forward(**kwargs) around the model
        def __init__(self, inner):
            super().__init__()
            self.module = inner

        def forward(self, **kwargs):
            return self.module(**kwargs)

    assert cache_kwarg(Wrapper(model)) == cache_kwarg(model)

    class OldStyle(LlamaForCausalLM):  # a remote-code model written before the rename
        def forward(self, input_ids=None, past_key_values=None, **kwargs):
            return super().forward(input_ids=input_ids, **{cache_kwarg(model): past_key_values})

    assert cache_kwarg(OldStyle(model.config)) == "past_key_values"


def test_output_cache_reads_either_field_name(tokenizer):
    model = build_llama(len(tokenizer))
    ids = torch.tensor([tokenizer("the movie was").input_ids])
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
    cache = output_cache(out)
    assert cache is not None and cache.get_seq_length() == ids.shape[1]

    @dataclasses.dataclass
    class OldOutput:  # an output class from before the rename
        logits: torch.Tensor
        past_key_values: object = None

    assert output_cache(OldOutput(out.logits, cache)) is cache
