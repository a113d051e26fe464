"""Chunked log-probs: the output head applied a chunk of positions at a time, in the forward and
the backward pass, so the tokens x vocabulary logits never exist (docs/design.md §3). For one
forward (`head_returns_logps`) the model's output head is switched to `chunked_token_logps`, which
returns the token log-probs as the forward's `.logits`; the head still runs inside the model's own
forward, so wrappers see every parameter used there: DDP's gradient hooks, and FSDP / ZeRO-3,
which gather a sharded head weight only inside the forward. Memory grows with chunk x
vocabulary, not with tokens x vocabulary; the chunk is chosen from the vocabulary
(`chunk_for_vocab`). The scorers (`logprobs`) call it through `scored_forward`.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

# chunked log-probs hold `chunk` x vocabulary fp32 logits at a time (and, in the backward pass,
# their gradient): the chunk is chosen from the vocabulary so that this stays within
# LOGITS_BUDGET bytes, a power of two between 64 and 1024 positions (49k vocabulary: 512;
# Llama 3's 128k: 256; Gemma's 256k: 128). A full-logits step at 2k tokens and 128k holds 1 GiB
# of logits; a 256-position chunk, 128 MiB. Not slower than the full logits on CPU
# (bench/README.md, `bench_memory.py --scoring`).
LOGITS_BUDGET = 128 * 2**20
MIN_CHUNK, MAX_CHUNK = 64, 1024
# a batch whose rows x vocabulary fp32 softmax fits this keeps it from the forward for the
# backward pass (no second head matmul); larger batches recompute it chunk by chunk
KEEP_PROBS_BYTES = LOGITS_BUDGET


def chunk_for_vocab(vocab_size: int) -> int:
    """Positions per chunk for a vocabulary: the largest power of two whose chunk x vocab fp32
    logits fit LOGITS_BUDGET, clamped to [MIN_CHUNK, MAX_CHUNK]."""
    fit = max(1, LOGITS_BUDGET // (4 * max(1, int(vocab_size))))
    return max(MIN_CHUNK, min(MAX_CHUNK, 1 << (fit.bit_length() - 1)))


def resolve_chunk(model, chunk: int | None) -> int:
    """The chunk a scorer uses: None = from the model's vocabulary (`chunk_for_vocab`), 0 = the
    full logits, N = N positions; 0 where the model's head cannot be chunked (`chunk_supported`)."""
    if chunk == 0 or not chunk_supported(model):
        return 0
    if chunk is None:
        inner = getattr(model, "module", model)
        return chunk_for_vocab(inner.get_output_embeddings().out_features)
    return chunk


# model types whose causal-LM forward computes `logits = lm_head(hidden)` and nothing more (no
# logit scaling or soft-capping), so the head can be applied outside it
PLAIN_HEAD_MODELS = frozenset({"llama", "mistral", "qwen2", "qwen3", "gpt2"})


def chunk_supported(model) -> bool:
    """Can the output head be swapped for chunked log-probs? A plain Linear head (not
    LoRA-wrapped, not quantized) of a model type whose forward computes `lm_head(hidden)` and
    nothing more, without accelerate hooks on the head (device maps and offloading wrap the
    head's forward, which the swap would bypass). Distributed wrappers (DDP, DeepSpeed, FSDP)
    are fine: the swapped head runs inside their forward (`head_returns_logps`)."""
    inner = getattr(model, "module", model)  # DDP / DeepSpeedEngine / FSDP hold the model here
    config = getattr(inner, "config", None)
    if getattr(config, "model_type", None) not in PLAIN_HEAD_MODELS:
        return False
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if type(head) is not torch.nn.Linear:
        return False
    return not (hasattr(head, "_hf_hook") or "forward" in head.__dict__)


@contextlib.contextmanager
def head_returns_logps(model, select, labels: torch.Tensor, chunk: int):
    """Within this context the model's forward returns, as `.logits`, the token log-probs of
    `labels` at the head-input rows `select(hidden)` (shape of `labels` + (H,)), computed
    `chunk` positions at a time: the rest of the forward (and every wrapper's hooks, the head's
    own included) runs as usual; only the vocabulary projection changes."""
    head = getattr(model, "module", model).get_output_embeddings()

    def forward(hidden):  # the head's weight is whole here, even when sharded outside
        return chunked_token_logps(select(hidden), head, labels, chunk)

    head.forward = forward  # an instance attribute shadows the class's forward
    try:
        yield
    finally:
        del head.forward


class _ChunkedTokenLogps(torch.autograd.Function):
    """log p(label) per row of `hidden` under the head (weight, bias), `chunk` rows at a time in
    both passes: at most chunk x vocabulary logits exist at once (fp32), never rows x vocabulary;
    except that a batch small enough (rows x vocabulary x 4 bytes <= KEEP_PROBS_BYTES) keeps its
    softmax from the forward, so the backward does not recompute the head's matmul.
    Matmuls run in `dtype` (the autocast dtype when autocast was on, else the weight's)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk, dtype):
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(out)  # saved: the backward's softmax is exp(logits - lse)
        # few rows (a short batch): one pass that keeps their softmax for the backward pass
        # instead of recomputing the head's matmul there; it is no more than the logits budget
        keep = 0 < hidden.shape[0] * weight.shape[0] * 4 <= KEEP_PROBS_BYTES
        if keep:
            chunk = max(chunk, hidden.shape[0])
        probs = ()
        w, b = _cast(weight, bias, dtype)  # once, not once per chunk
        with torch.autocast(hidden.device.type, enabled=False):
            for s in range(0, hidden.shape[0], chunk):
                logits = F.linear(hidden[s : s + chunk].to(dtype), w, b).float()
                picked = logits.gather(1, labels[s : s + chunk, None]).squeeze(1)
                # logsumexp in place: one chunk-sized buffer (torch.logsumexp allocates a second)
                top = logits.amax(1, keepdim=True)
                total = logits.sub_(top).exp_().sum(1, keepdim=True)
                lse[s : s + chunk] = (top + total.log()).squeeze(1)
                out[s : s + chunk] = picked - lse[s : s + chunk]
                if keep:  # the one chunk: its exponentials become its softmax, in place
                    probs = (logits.div_(total),)
                del logits  # before the next chunk's: one chunk-sized buffer at a time
        saved = (hidden, weight, labels, lse, *(() if bias is None else (bias,)))
        ctx.save_for_backward(*saved, *probs)
        ctx.chunk, ctx.dtype, ctx.has_bias, ctx.keep = chunk, dtype, bias is not None, keep
        return out

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, labels, lse, *rest = ctx.saved_tensors
        bias = rest.pop(0) if ctx.has_bias else None
        probs = rest[0] if ctx.keep else None
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        # fp32 sums over the chunks, started by the first chunk's product (not from zeros: the
        # weight-sized fill costs as much as a short batch's whole head)
        grad_w = grad_b = None
        w, b = _cast(weight, bias, ctx.dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            for s in range(0, hidden.shape[0], ctx.chunk):
                h, g_out = hidden[s : s + ctx.chunk], grad[s : s + ctx.chunk].float()
                # d log softmax(z)[y] / dz = onehot(y) - softmax(z), built in one chunk-sized
                # buffer: the softmax from the saved logsumexp, then scaled, all in place
                if probs is not None:
                    g = probs[s : s + ctx.chunk] * -g_out[:, None]
                else:
                    g = F.linear(h.to(ctx.dtype), w, b).float().sub_(lse[s : s + ctx.chunk, None])
                    g = g.exp_().mul_(-g_out[:, None])
                g[torch.arange(g.shape[0], device=g.device), labels[s : s + ctx.chunk]] += g_out
                if need_b:
                    grad_b = g.sum(0) if grad_b is None else grad_b.add_(g.sum(0))
                g, h = g.to(ctx.dtype), h.to(ctx.dtype)
                if need_h:
                    grad_h[s : s + ctx.chunk] = (g @ w).to(hidden.dtype)
                if need_w:
                    if grad_w is None:
                        grad_w = (g.T @ h).float()
                    elif grad_w.dtype == g.dtype:  # fp32: in place, no weight-sized temporary
                        grad_w.addmm_(g.T, h)
                    else:
                        grad_w += (g.T @ h).float()
                del g  # before the next chunk's
        if hidden.shape[0] == 0:  # no rows, no chunk: the gradients are zero
            grad_w, grad_b = (
                torch.zeros_like(weight),
                None if bias is None else torch.zeros_like(bias),
            )
        grad_w = grad_w.to(weight.dtype) if need_w else None
        grad_b = grad_b.to(bias.dtype) if need_b else None
        return grad_h, grad_w, grad_b, None, None, None


def _cast(weight, bias, dtype):
    return weight.to(dtype), (None if bias is None else bias.to(dtype))


def chunked_token_logps(
    hidden: torch.Tensor, head: torch.nn.Linear, labels: torch.Tensor, chunk: int
) -> torch.Tensor:
    """`token_logps(head(hidden), labels)` without ever holding the logits of more than `chunk`
    positions (hidden: (..., H), labels: (...)); equal in values and gradients (tested)."""
    device = hidden.device.type
    dtype = (
        torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else head.weight.dtype
    )
    flat = _ChunkedTokenLogps.apply(
        hidden.reshape(-1, hidden.shape[-1]),
        head.weight,
        head.bias,
        labels.reshape(-1),
        chunk,
        dtype,
    )
    return flat.view(labels.shape)
