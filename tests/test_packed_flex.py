"""FlexAttention for the packed scorer: its block mask is the dense mask's rule, and the model
scores with it on a GPU. On CPU torch has no FlexAttention backward (and its compiled CPU forward
with transformers' score_mod is wrong for some batch rows), so the packed path keeps the dense
mask there; the model-level equality runs where a GPU is (bench/gpu/check.sh records it too)."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import build_llama

from rankalign.logprobs import (
    collate_lists,
    packed_block_mask,
    packed_supported,
    packed_visible,
    response_logps,
)
from rankalign.tokenization import encode_list

# segments: -1 pad, 0 prompt, n + 1 response n; lists of uneven length, so rows end in pads
SEG = torch.tensor(
    [
        [0] * 4 + [1] * 3 + [2] * 11 + [3] * 4 + [-1] * 2,
        [0] * 15 + [4] * 5 + [-1] * 4,
        [0] * 3 + [5] * 14 + [6] * 4 + [7] * 3,
    ]
)


def test_block_mask_is_the_dense_rule():
    from torch.nn.attention.flex_attention import create_mask

    B, T = SEG.shape
    dense = create_mask(packed_block_mask(SEG).mask_mod, B, None, T, T)[:, 0]
    assert torch.equal(dense, packed_visible(SEG))
    # spot checks of the rule itself: a response sees the prompt and itself, not its sibling
    v = packed_visible(SEG)
    assert v[0, 5, 0] and v[0, 5, 4] and not v[0, 8, 5] and not v[0, 5, 6]
    assert v[0, 22, 22] and not v[0, 22, 4:22].any()  # a pad: itself (and the prompt), no response


def test_flex_attention_with_the_block_mask_equals_sdpa_with_the_dense_mask():
    from torch.nn.attention.flex_attention import flex_attention

    torch.manual_seed(0)
    B, T = SEG.shape
    q, k, v = torch.randn(B, 4, T, 8), torch.randn(B, 2, T, 8), torch.randn(B, 2, T, 8)
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=packed_visible(SEG).unsqueeze(1), enable_gqa=True
    )
    with warnings.catch_warnings():  # eager FlexAttention warns that it is not the fused kernel
        warnings.simplefilter("ignore")
        got = flex_attention(q, k, v, block_mask=packed_block_mask(SEG), enable_gqa=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_flex_models_pack_only_on_a_gpu(tokenizer):
    model = build_llama(len(tokenizer))
    assert packed_supported(model)
    model.set_attn_implementation("flex_attention")
    assert packed_supported(model) is torch.cuda.is_available()


def test_flex_attention_training_is_refused_without_a_gpu():
    from rankalign.training.config import TrainConfig

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="only on a GPU"):
        TrainConfig(data="x.jsonl", attn_implementation="flex_attention")
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        TrainConfig(data="x.jsonl", attn_implementation="flash")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention trains only on a GPU")
def test_packed_flex_equals_naive_on_gpu(tokenizer):
    lists = [
        ("the movie was", ["great", "terrible and boring i think", "ok"]),
        ("hi", ["hello there, how are you today?", "fine"]),
    ]
    enc = [encode_list(tokenizer, p, r, max_length=64, min_response_tokens=4) for p, r in lists]
    batch = {k: t.cuda() for k, t in collate_lists(enc, tokenizer.pad_token_id).items()}
    model = build_llama(len(tokenizer)).cuda()
    want = response_logps(model, batch, shared_prompt=False)[0]
    model.set_attn_implementation("flex_attention")
    logp, lengths, mask = response_logps(model, batch, packed=True, chunk=3)
    torch.testing.assert_close(logp, want, rtol=1e-4, atol=1e-4)
    (logp[mask] / lengths[mask]).sum().backward()  # the fused kernel's backward runs
