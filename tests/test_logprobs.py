"""The scorer: shared-prompt path equals the naive per-row path; gather-minus-logsumexp is right."""

from __future__ import annotations

import pytest
import torch
from conftest import build_gpt2, build_llama

from rankalign.logprobs import collate_lists, response_logps, token_logps
from rankalign.tokenization import EncodedList, encode_list

LISTS = [
    ("the movie was", ["great", "terrible and boring i think", "ok", "the film was terrible"]),
    ("Human: what is a good movie? Assistant:", ["a great one"]),
    ("hi", ["hello there, how are you today?", "fine"]),
    ("i think this is wonderful, amazing, fantastic work and the movie was great", ["sad", "bad"]),
]


def _batch(tokenizer, lists=LISTS):
    enc = [encode_list(tokenizer, p, r, max_length=64, min_response_tokens=4) for p, r in lists]
    return collate_lists(enc, tokenizer.pad_token_id)


def _manual(model, tokenizer, prompt, response):
    enc = encode_list(tokenizer, prompt, [response], max_length=64, min_response_tokens=4)
    ids = torch.tensor([enc.prompt_ids + enc.response_ids[0]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1]
    lp = torch.log_softmax(logits.double(), -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    return lp[len(enc.prompt_ids) - 1 :].sum().item(), len(enc.response_ids[0])


@pytest.mark.parametrize("build", [build_llama, build_gpt2], ids=["llama", "gpt2"])
def test_shared_prompt_equals_naive(tokenizer, build):
    model = build(len(tokenizer))
    batch = _batch(tokenizer)
    with torch.no_grad():
        naive = response_logps(model, batch, shared_prompt=False)
        shared = response_logps(model, batch, shared_prompt=True)
    torch.testing.assert_close(shared[0], naive[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(shared[1], naive[1]) and torch.equal(shared[2], naive[2])
    # variable k: padded slots are invalid and zero
    assert shared[2].tolist() == [
        [True] * 4,
        [True, False, False, False],
        [True, True, False, False],
        [True, True, False, False],
    ]
    assert (shared[0][~shared[2]] == 0).all()


@pytest.mark.parametrize("build", [build_llama, build_gpt2], ids=["llama", "gpt2"])
def test_logps_match_a_single_unpadded_forward(tokenizer, build):
    model = build(len(tokenizer))
    batch = _batch(tokenizer)
    with torch.no_grad():
        logp, lengths, _ = response_logps(model, batch, shared_prompt=True)
    for b, (prompt, responses) in enumerate(LISTS):
        for i, r in enumerate(responses):
            expect, n = _manual(model, tokenizer, prompt, r)
            assert lengths[b, i].item() == n
            assert logp[b, i].item() == pytest.approx(expect, rel=1e-5, abs=1e-4)


@pytest.mark.parametrize("build", [build_llama, build_gpt2], ids=["llama", "gpt2"])
def test_shared_prompt_gradients_equal_naive(tokenizer, build):
    batch = _batch(tokenizer)
    grads = []
    for shared in (False, True):
        model = build(len(tokenizer))
        # eval mode: GPT-2's dropout would make the two passes differ; gradients still flow
        logp, lengths, mask = response_logps(model, batch, shared_prompt=shared)
        (logp[mask] / lengths[mask]).sum().backward()
        grads.append(
            torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        )
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)


def test_one_token_prompts_and_single_list(tokenizer):
    model = build_llama(len(tokenizer))
    enc = [encode_list(tokenizer, "hi", ["fine", "great"], max_length=32, min_response_tokens=4)]
    enc[0].prompt_ids = enc[0].prompt_ids[-1:]  # a 1-token prompt: the prompt pass is empty
    batch = collate_lists(enc, tokenizer.pad_token_id)
    with torch.no_grad():
        a = response_logps(model, batch, shared_prompt=False)[0]
        b = response_logps(model, batch, shared_prompt=True)[0]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_token_logps_is_log_softmax_gather():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11) * 4
    labels = torch.randint(0, 11, (3, 5))
    expect = torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)
    torch.testing.assert_close(token_logps(logits, labels), expect)


def test_activation_checkpointing_keeps_scores_right(tokenizer, monkeypatch):
    """Checkpointed layers drop the KV cache in training passes: the cached path would score
    responses without their prompt. Under checkpointing the packed path runs and is right."""
    from rankalign import logprobs
    from rankalign.logprobs import checkpointing_active

    packed_calls = []
    real_packed = logprobs.packed_response_logps
    monkeypatch.setattr(
        logprobs,
        "packed_response_logps",
        lambda m, b, chunk=0: packed_calls.append(1) or real_packed(m, b, chunk),
    )
    batch = _batch(tokenizer)
    model = build_llama(len(tokenizer))  # no dropout: train and eval passes agree
    with torch.no_grad():
        want = response_logps(model, batch, shared_prompt=False)[0]
    # transformers 5.x renamed gradient_checkpointing_enable
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    model.train()
    assert checkpointing_active(model)
    got = response_logps(model, batch, shared_prompt=True)[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert packed_calls  # the prompt is still shared, not the naive path
    model.eval()  # eval passes keep the cache: the shared path runs
    assert not checkpointing_active(model)
    with torch.no_grad():
        torch.testing.assert_close(response_logps(model, batch)[0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("build", [build_llama, build_gpt2], ids=["llama", "gpt2"])
def test_packed_shared_prompt_equals_naive(tokenizer, build, attn):
    """One sequence per list with a block mask: the same log-probs and gradients as the naive
    path (variable k and lengths, padding)."""
    from rankalign.logprobs import packed_response_logps

    batch = _batch(tokenizer)
    results = []
    for packed in (False, True):
        model = build(len(tokenizer))
        model.set_attn_implementation(attn)
        fn = packed_response_logps if packed else lambda m, b: response_logps(m, b, False)
        logp, lengths, mask = fn(model, batch)  # eval mode (GPT-2 dropout), gradients flow
        (logp[mask] / lengths[mask]).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((logp.detach(), lengths, mask, grads))
    (naive, nlen, nmask, ngrad), (packed, plen, pmask, pgrad) = results
    torch.testing.assert_close(packed, naive, rtol=1e-5, atol=1e-5)
    assert torch.equal(plen, nlen) and torch.equal(pmask, nmask)
    assert ngrad.keys() == pgrad.keys()
    for n in ngrad:
        torch.testing.assert_close(pgrad[n], ngrad[n], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("packed", [False, True], ids=["cached", "packed"])
@pytest.mark.parametrize("build", [build_llama, build_gpt2], ids=["llama", "gpt2"])
def test_shared_prompt_scores_depend_on_the_prompt(tokenizer, build, packed):
    """Equal to the naive path, and clearly not what the responses score without their prompt
    (after its last token alone, the cached path's response-pass input). The tiny random models
    differ from the prompt-less scores by up to ~0.27 (Llama) and ~0.82 (GPT-2) nats, far above
    the 1e-2 asked here and the 1e-5 tolerance: scores that lost the prompt fail one check."""
    enc = [encode_list(tokenizer, p, r, max_length=64, min_response_tokens=4) for p, r in LISTS]
    bare = [EncodedList(e.prompt_ids[-1:], e.response_ids) for e in enc]
    model = build(len(tokenizer))
    batch = collate_lists(enc, tokenizer.pad_token_id)
    with torch.no_grad():
        shared, _, mask = response_logps(model, batch, shared_prompt=True, packed=packed)
        naive = response_logps(model, batch, shared_prompt=False)[0]
        promptless = response_logps(
            model, collate_lists(bare, tokenizer.pad_token_id), shared_prompt=False
        )[0]
    torch.testing.assert_close(shared, naive, rtol=1e-5, atol=1e-5)
    assert (shared - promptless)[mask].abs().max().item() > 1e-2


@pytest.mark.parametrize("build", [build_llama, build_gpt2], ids=["llama", "gpt2"])
def test_an_ignored_cache_keyword_is_an_error_not_promptless_scores(tokenizer, build, monkeypatch):
    """A forward that swallowed the cache keyword in **kwargs (as a transformers release that
    dropped a renamed argument would) leaves the prompt's cache empty: the scorer says so."""
    from rankalign import logprobs

    monkeypatch.setattr(logprobs, "cache_kwarg", lambda model: "renamed_away")
    model = build(len(tokenizer))
    with torch.no_grad(), pytest.raises(RuntimeError, match="did not fill the prompt's KV cache"):
        response_logps(model, _batch(tokenizer), shared_prompt=True)


def _lists(prompt: int, responses: list[int], n: int = 3) -> list[dict]:
    return [{"prompt_ids": [5] * prompt, "response_ids": [[6] * r for r in responses]}] * n


def test_packing_pays_on_short_lists_and_not_on_long_ones():
    """`packed_prompt` unset, on SmolLM2's shape (d 576, 9 heads, intermediate 1536), at the
    shapes measured in bench/README.md: packing adds 2% (short pairs), 13% (prompt 160, k = 4 x
    120) and 56% (prompt 64, k = 8 x 256) to the layers' matmul work, against the 20% limit."""
    from transformers import LlamaConfig

    from rankalign.logprobs import packing_pays

    config = LlamaConfig(hidden_size=576, num_attention_heads=9, intermediate_size=1536)
    assert packing_pays(config, _lists(20, [35, 35]))
    assert packing_pays(config, _lists(160, [120] * 4))
    assert not packing_pays(config, _lists(64, [256] * 8))
    # a wider model's matmuls outweigh the same attention: k = 8 x 256 packs at d = 4096
    wide = LlamaConfig(hidden_size=4096, num_attention_heads=32, intermediate_size=14336)
    assert packing_pays(wide, _lists(64, [256] * 8))
    # GPT-2 names its sizes differently (n_inner None: 4 d)
    from transformers import GPT2Config

    assert packing_pays(GPT2Config(n_embd=64, n_head=4), _lists(4, [6, 6]))
    assert not packing_pays(GPT2Config(n_embd=64, n_head=4), _lists(64, [256] * 8))
    assert not packing_pays(object(), _lists(20, [35, 35]))  # sizes unknown: the KV cache
