"""The KL estimate of a policy's drift (`rankalign.drift`): zero for a model against itself,
positive after one Adam step towards one response, and equal to a naive per-sample
computation (one plain forward per sample, full log_softmax)."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from conftest import CORPUS, build_llama

from rankalign.drift import estimate_kl, kl_estimate
from rankalign.tokenization import encode_list

PROMPTS = ["hello there", "the film was"]
TARGET = " the movie was great"
MAX_NEW = 24
ENCODING = {"max_length": 64, "chat_template": "never", "min_response_tokens": 8}


def word_tokenizer():
    """A word-level tokenizer: decoding any token sequence and encoding the text again gives the
    same ids, so a decoded sample is scored as the exact tokens that were sampled (a byte-level
    BPE's random bytes would decode to replacement characters and re-encode differently)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    words = sorted({w for line in CORPUS for w in re.findall(r"\w+|[^\w\s]+", line)})
    vocab = {w: i for i, w in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def _trained(reference, tokenizer, steps: int = 1):
    """A copy of `reference` after `steps` Adam steps of NLL on TARGET after each prompt."""
    policy = copy.deepcopy(reference).train()
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = 0.0
        for prompt in PROMPTS:
            enc = encode_list(tokenizer, prompt, [TARGET], **ENCODING)
            ids = torch.tensor([enc.prompt_ids + enc.response_ids[0]])
            labels = ids.clone()
            labels[0, : len(enc.prompt_ids)] = -100
            loss = loss + policy(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return policy.eval()


def _samples(model, tokenizer, n: int = 8) -> list[list[str]]:
    """n samples per prompt from `model` itself (temperature 1, no top-k / top-p), seeded; each
    cut before its first EOS (the encoding appends it again) and decoded with special tokens."""
    torch.manual_seed(0)
    out = []
    for prompt in PROMPTS:
        ids = torch.tensor([encode_list(tokenizer, prompt, [], **ENCODING).prompt_ids])
        with torch.no_grad():
            gen = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                top_k=0,
                top_p=1.0,
                temperature=1.0,
                max_new_tokens=MAX_NEW,
                num_return_sequences=n,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        texts = []
        for row in gen[:, ids.shape[1] :].tolist():
            row = row[: row.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in row else row
            text = tokenizer.decode(row)
            assert tokenizer(text, add_special_tokens=False).input_ids == row  # round trip
            texts.append(text)
        out.append(texts)
    return out


def _naive_logp(model, tokenizer, prompt: str, response: str) -> float:
    """Sum of log softmax(logits)[next token] over the response tokens, one unpadded forward."""
    enc = encode_list(tokenizer, prompt, [response], **ENCODING)
    ids = torch.tensor([enc.prompt_ids + enc.response_ids[0]])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    start = len(enc.prompt_ids)
    return float(sum(logp[t - 1, ids[0, t]] for t in range(start, ids.shape[1])))


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer()


@pytest.fixture(scope="module")
def models(tokenizer):
    reference = build_llama(len(tokenizer)).eval()
    return reference, _trained(reference, tokenizer)


def test_kl_of_a_model_against_itself_is_zero(models, tokenizer):
    reference, _ = models
    samples = _samples(reference, tokenizer)
    out = estimate_kl(reference, reference, tokenizer, PROMPTS, samples, resamples=100, **ENCODING)
    assert out["prompts"] == 2 and out["samples"] == 16
    assert out["kl"] == pytest.approx(0.0, abs=1e-9)
    assert all(v == pytest.approx(0.0, abs=1e-9) for v in out["per_prompt"])


def test_kl_is_positive_after_training_and_equals_the_naive_computation(models, tokenizer):
    reference, policy = models
    samples = _samples(policy, tokenizer)
    out = estimate_kl(policy, reference, tokenizer, PROMPTS, samples, resamples=200, **ENCODING)
    # one step towards TARGET moves the policy away from the start model: KL > 0 (0.50 here, the
    # interval over the 2 prompts' means above 0 as well)
    assert out["kl"] > 0.1 and out["ci_low"] > 0
    naive = [
        sum(
            _naive_logp(policy, tokenizer, p, y) - _naive_logp(reference, tokenizer, p, y)
            for y in ys
        )
        / len(ys)
        for p, ys in zip(PROMPTS, samples)
    ]
    assert out["per_prompt"] == pytest.approx(naive, abs=1e-4)
    assert out["kl"] == pytest.approx(sum(naive) / 2, abs=1e-4)
    assert out["ci_low"] <= out["kl"] <= out["ci_high"]


def test_kl_estimate_by_hand_and_without_samples():
    # prompt 1: ratios (-1 - -2, -3 - -3) = (1, 0), mean 0.5; prompt 2: (2 - 0) = 2; mean 1.25
    out = kl_estimate([[-1.0, -3.0], [2.0], []], [[-2.0, -3.0], [0.0], []], resamples=100)
    assert out["per_prompt"] == [0.5, 2.0] and out["kl"] == pytest.approx(1.25)
    assert (out["prompts"], out["samples"], out["prompts_without_samples"]) == (2, 3, 1)
    none = kl_estimate([[]], [[]])
    assert none["kl"] is None and none["notes"]["kl"]
    with pytest.raises(ValueError, match="same samples"):
        kl_estimate([[1.0]], [[1.0, 2.0]])
