"""Chunked log-probs: the output head applied a chunk of positions at a time (forward and
backward) gives the full-logits numbers, values and gradients, on every scorer path."""

from __future__ import annotations

import pytest
import torch
from conftest import build_gpt2, build_llama

from rankalign import chunked_head
from rankalign.chunked_head import (
    LOGITS_BUDGET,
    chunk_for_vocab,
    chunk_supported,
    chunked_token_logps,
    head_returns_logps,
    resolve_chunk,
)
from rankalign.logprobs import collate_lists, response_logps, token_logps
from rankalign.tokenization import encode_list

LISTS = [
    ("the movie was", ["great", "terrible and boring i think", "ok", "the film was terrible"]),
    ("Human: what is a good movie? Assistant:", ["a great one"]),
    ("hi", ["hello there, how are you today?", "fine"]),
]
PATHS = {"naive": (False, False), "cached": (True, False), "packed": (True, True)}


def _batch(tokenizer):
    enc = [encode_list(tokenizer, p, r, max_length=64, min_response_tokens=4) for p, r in LISTS]
    return collate_lists(enc, tokenizer.pad_token_id)


def _run(model, batch, path, chunk):
    shared, packed = PATHS[path]
    model.zero_grad()
    logp, lengths, mask = response_logps(model, batch, shared, packed, chunk=chunk)
    (logp[mask] / lengths[mask]).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logp.detach(), grads


@pytest.mark.parametrize("keep", [True, False], ids=["kept-softmax", "recomputed"])
@pytest.mark.parametrize("chunk", [3, 7, 10_000])  # 3 and 7 divide no length here
@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("build", [build_llama, build_gpt2], ids=["llama", "gpt2"])
def test_chunked_equals_full_logits_values_and_gradients(
    tokenizer, build, path, chunk, keep, monkeypatch
):
    """Both backward passes: the softmax kept from the forward (a small batch) and recomputed
    chunk by chunk (a batch over the budget, here forced by a zero budget)."""
    if not keep:
        monkeypatch.setattr(chunked_head, "KEEP_PROBS_BYTES", 0)
    model = build(len(tokenizer))  # eval mode: dropout off; gradients still flow
    assert chunk_supported(model)
    batch = _batch(tokenizer)
    full, full_grads = _run(model, batch, path, chunk=0)
    chunked, chunked_grads = _run(model, batch, path, chunk=chunk)
    torch.testing.assert_close(chunked, full, rtol=1e-6, atol=1e-5)
    assert set(chunked_grads) == set(full_grads)  # the head's weight (tied in GPT-2) included
    for name, g in full_grads.items():
        torch.testing.assert_close(chunked_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("keep", [True, False], ids=["kept-softmax", "recomputed"])
@pytest.mark.parametrize("bias", [False, True])
def test_chunked_token_logps_equals_log_softmax_gather(bias, keep, monkeypatch):
    if not keep:
        monkeypatch.setattr(chunked_head, "KEEP_PROBS_BYTES", 0)
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=bias).double()
    hidden = torch.randn(3, 11, 16, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 50, (3, 11))
    out = chunked_token_logps(hidden, head, labels, chunk=4)
    want = token_logps(head(hidden), labels)
    torch.testing.assert_close(out, want)
    weights = torch.randn(3, 11, dtype=torch.float64)
    got = torch.autograd.grad((out * weights).sum(), [hidden, *head.parameters()])
    expected = torch.autograd.grad((want * weights).sum(), [hidden, *head.parameters()])
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("keep", [True, False], ids=["kept-softmax", "recomputed"])
@pytest.mark.parametrize("bias", [False, True])
def test_chunked_token_logps_under_bf16_autocast(bias, keep, monkeypatch):
    """Under autocast the head's matmuls run in bf16 (the weight's gradient accumulates in fp32
    through a bf16 product, not in place): equal to the full bf16 logits' log-softmax."""
    if not keep:
        monkeypatch.setattr(chunked_head, "KEEP_PROBS_BYTES", 0)
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=bias)
    hidden = torch.randn(3, 11, 16, requires_grad=True)
    labels = torch.randint(0, 50, (3, 11))
    weights = torch.randn(3, 11)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = chunked_token_logps(hidden, head, labels, chunk=4)
        want = token_logps(head(hidden).float(), labels)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    got = torch.autograd.grad((out * weights).sum(), [hidden, *head.parameters()])
    expected = torch.autograd.grad((want * weights).sum(), [hidden, *head.parameters()])
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


def test_head_is_restored_and_unsupported_models_use_full_logits(tokenizer, monkeypatch):
    model = build_llama(len(tokenizer))
    head = model.get_output_embeddings()
    labels = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(RuntimeError), head_returns_logps(model, lambda x: x, labels, 2):
        assert "forward" in head.__dict__
        raise RuntimeError("a failing forward")
    assert "forward" not in head.__dict__  # the class's forward again
    batch = _batch(tokenizer)
    with torch.no_grad():
        full = response_logps(model, batch)[0]
        monkeypatch.setattr(model.config, "model_type", "gemma2")  # soft-capped logits
        assert not chunk_supported(model)
        fallback = response_logps(model, batch, chunk=4)[0]
    torch.testing.assert_close(fallback, full, rtol=0, atol=0)


def test_a_lora_wrapped_head_is_not_chunked(tokenizer):
    from peft import LoraConfig, get_peft_model

    from rankalign.training.setup import quiet_peft

    with quiet_peft():
        model = get_peft_model(
            build_llama(len(tokenizer)), LoraConfig(r=2, target_modules=["lm_head", "q_proj"])
        )
        plain = get_peft_model(
            build_llama(len(tokenizer)), LoraConfig(r=2, target_modules=["q_proj"])
        )
    assert not chunk_supported(model)
    assert chunk_supported(plain)


def test_a_wrapped_model_runs_the_chunked_head_inside_its_forward(tokenizer):
    """DDP / DeepSpeed / FSDP hold the model as `.module` and expect every parameter used inside
    their forward (DDP's gradient hooks; FSDP / ZeRO-3 gather a sharded head only there): the
    chunked head must run within the wrapper's forward call, with the wrapper's numbers."""

    calls = []

    class Wrapper(torch.nn.Module):  # the shape of DistributedDataParallel
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *args, **kwargs):
            head = self.module.get_output_embeddings()
            calls.append("forward" in head.__dict__)  # swapped before the wrapped forward
            out = self.module(*args, **kwargs)
            calls.append(out.logits.dim())  # token log-probs (2-D), not logits (3-D)
            return out

    model = build_llama(len(tokenizer))
    wrapped = Wrapper(model)
    assert chunk_supported(wrapped)
    batch = _batch(tokenizer)
    for path in sorted(PATHS):
        calls.clear()
        full, full_grads = _run(model, batch, path, chunk=0)
        chunked, chunked_grads = _run(wrapped, batch, path, chunk=3)
        assert calls[-2:] == [True, 2], path
        torch.testing.assert_close(chunked, full, rtol=1e-6, atol=1e-5)
        for name, g in full_grads.items():
            torch.testing.assert_close(
                chunked_grads["module." + name], g, rtol=1e-4, atol=1e-6, msg=name
            )


@pytest.mark.parametrize(
    "vocab, chunk",
    [(49_152, 512), (128_256, 256), (256_000, 128), (32_000, 1024), (2_000_000, 64), (50, 1024)],
)
def test_chunk_chosen_from_the_vocabulary(vocab, chunk):
    assert chunk_for_vocab(vocab) == chunk
    if 64 < chunk < 1024:  # the largest power of two within the logits budget
        assert chunk * vocab * 4 <= LOGITS_BUDGET < 2 * chunk * vocab * 4


def test_default_chunk_is_the_vocabularys_and_equals_full_logits(tokenizer):
    model = build_llama(len(tokenizer))  # eval mode: dropout off
    vocab = model.get_output_embeddings().out_features
    assert resolve_chunk(model, None) == chunk_for_vocab(vocab)
    assert resolve_chunk(model, 0) == 0 and resolve_chunk(model, 5) == 5
    batch = _batch(tokenizer)
    full, full_grads = _run(model, batch, "cached", chunk=0)
    auto, auto_grads = _run(model, batch, "cached", chunk=None)
    torch.testing.assert_close(auto, full, rtol=1e-6, atol=1e-5)
    for name, g in full_grads.items():
        torch.testing.assert_close(auto_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_chunked_token_logps_of_no_rows_has_zero_gradients():
    head = torch.nn.Linear(8, 20, bias=True)
    hidden = torch.randn(0, 8, requires_grad=True)
    out = chunked_token_logps(hidden, head, torch.zeros(0, dtype=torch.long), chunk=4)
    assert out.shape == (0,)
    out.sum().backward()
    assert hidden.grad.shape == (0, 8)
    assert torch.equal(head.weight.grad, torch.zeros_like(head.weight))
    assert torch.equal(head.bias.grad, torch.zeros_like(head.bias))
