"""The core computation: per-response sum of token log-probs and token count (docs/design.md §3).

For B prompts with up to K responses each, `response_logps` returns logp[b, i] and len[b, i].
Every loss is a pure function of these (B, K) tensors.

Three paths give the same numbers (tested to 1e-5 in fp32):
- naive: each response row is [prompt, response], right-padded; one forward over B*K rows.
- shared prompt (default): the prompt runs once per list; its key/value cache is gathered for
  the list's k responses, so prompt tokens are computed once instead of k times. The prompt pass
  covers all prompt tokens but the last; the response pass starts with that last prompt token,
  so its logits line up with the response tokens and no prompt logits are needed.
- packed: the prompt and its k responses as one sequence with a block attention mask; what runs
  under activation checkpointing, which drops the KV cache in training passes.

Token log-probs are `gathered label logit - logsumexp(logits)`: no full-vocabulary log_softmax
copy is made. With chunked log-probs (`chunk` > 0, or None: sized from the vocabulary) the full
logits are never held at all: `chunked_head` applies the output head a chunk of positions at a
time inside the model's forward, in the backward pass too.
"""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import pad_sequence

from rankalign.chunked_head import head_returns_logps, resolve_chunk
from rankalign.models import cache_kwarg
from rankalign.tokenization import EncodedList, encode_list


def collate_lists(encoded: list[EncodedList], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch of encoded lists (to the batch's own longest prompt / response)."""
    prompts = [torch.tensor(e.prompt_ids, dtype=torch.long) for e in encoded]
    responses, list_index, slot = [], [], []
    for b, e in enumerate(encoded):
        for i, r in enumerate(e.response_ids):
            responses.append(torch.tensor(r, dtype=torch.long))
            list_index.append(b)
            slot.append(i)
    if not responses:
        raise ValueError("a batch needs at least one response")
    return {
        "prompt_ids": pad_sequence(prompts, batch_first=True, padding_value=pad_id),
        "prompt_lengths": torch.tensor([len(p) for p in prompts]),
        "response_ids": pad_sequence(responses, batch_first=True, padding_value=pad_id),
        "response_lengths": torch.tensor([len(r) for r in responses]),
        "list_index": torch.tensor(list_index),
        "slot": torch.tensor(slot),
        "num_responses": torch.tensor([len(e.response_ids) for e in encoded]),
    }


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) per position, as the label's logit minus the logsumexp over the vocabulary."""
    logits = logits.float()
    picked = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _identity(x):
    return x


def scored_forward(model, select, labels: torch.Tensor, chunk: int, **inputs) -> torch.Tensor:
    """log p(labels) from one forward of `model(**inputs)`: `select` picks, from what the output
    head sees (..., H) or the logits it makes (..., V), the rows that predict `labels`. Chunked
    (inside the forward, `head_returns_logps`) when chunk > 0, else from the full logits."""
    if chunk > 0:
        with head_returns_logps(model, select, labels, chunk):
            return model(**inputs).logits
    return token_logps(select(model(**inputs).logits), labels)


def _to_lists(values: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scatter per-response-row values (N,) into (B, K) with a validity mask."""
    B = batch["num_responses"].shape[0]
    K = int(batch["num_responses"].max())
    idx = batch["list_index"] * K + batch["slot"]
    logp = values.new_zeros(B * K).index_put((idx,), values).view(B, K)
    lengths = torch.zeros(B * K, dtype=values.dtype, device=values.device)
    lengths = lengths.index_put((idx,), batch["response_lengths"].to(values.dtype)).view(B, K)
    mask = (
        torch.zeros(B * K, dtype=torch.bool, device=values.device)
        .index_fill(0, idx, True)
        .view(B, K)
    )
    return logp, lengths, mask


def naive_response_logps(model, batch: dict, chunk: int = 0):
    """Reference path: one [prompt + response] row per response."""
    li, plen, rlen = batch["list_index"], batch["prompt_lengths"], batch["response_lengths"]
    rows, labels_mask = [], []
    for n in range(li.shape[0]):
        p = batch["prompt_ids"][li[n], : plen[li[n]]]
        r = batch["response_ids"][n, : rlen[n]]
        rows.append(torch.cat([p, r]))
        labels_mask.append(
            torch.cat([torch.zeros_like(p, dtype=torch.bool), torch.ones_like(r, dtype=torch.bool)])
        )
    ids = pad_sequence(rows, batch_first=True, padding_value=0)
    attn = pad_sequence([torch.ones_like(r) for r in rows], batch_first=True, padding_value=0)
    is_label = pad_sequence(labels_mask, batch_first=True, padding_value=False)
    tok = scored_forward(
        model,
        lambda x: x[:, :-1],
        ids[:, 1:],
        chunk,
        input_ids=ids,
        attention_mask=attn,
        use_cache=False,
    )
    values = torch.where(is_label[:, 1:], tok, torch.zeros_like(tok)).sum(-1)
    return _to_lists(values, batch)


def shared_response_logps(model, batch: dict, chunk: int = 0):
    """Fast path: the prompt once per list, its KV cache reused by the list's k responses."""
    from transformers import DynamicCache

    prompt_ids, plen = batch["prompt_ids"], batch["prompt_lengths"]
    li, resp, rlen = batch["list_index"], batch["response_ids"], batch["response_lengths"]
    device = prompt_ids.device
    Lp = prompt_ids.shape[1] - 1  # the prompt pass covers all prompt tokens but the last
    config = getattr(model, "module", model).config  # DDP wraps the model; its config is inside
    cache, kwarg = DynamicCache(config=config), cache_kwarg(model)
    if Lp > 0:
        # Right padding + an all-ones mask: pads come after the real tokens, so causality already
        # hides them from real tokens, and no query row is fully masked (no NaN in the cache).
        model(
            input_ids=prompt_ids[:, :Lp],
            attention_mask=torch.ones_like(prompt_ids[:, :Lp]),
            use_cache=True,
            position_ids=torch.arange(Lp, device=device).expand(prompt_ids.shape[0], Lp),
            logits_to_keep=1,
            **{kwarg: cache},
        )
        # a forward that ignored the cache keyword (a renamed argument swallowed by **kwargs)
        # would leave it empty and the responses would be scored without their prompt
        if cache.get_seq_length() != Lp:
            raise RuntimeError(
                f"the model did not fill the prompt's KV cache passed as `{kwarg}=`; "
                "use the packed scorer (packed_prompt true) or the naive one (shared_prompt false)"
            )
        cache.reorder_cache(li)  # one cache row per response (index_select, differentiable)
    last = prompt_ids.gather(1, (plen - 1).unsqueeze(1))[li]  # (N, 1) last prompt token
    ids = torch.cat([last, resp], dim=1)[:, :-1]  # inputs: last prompt token + response[:-1]
    N, Lr = resp.shape
    steps = torch.arange(Lr, device=device)
    past_mask = (torch.arange(Lp, device=device).unsqueeze(0) < (plen[li] - 1).unsqueeze(1)).long()
    attn = torch.cat([past_mask, torch.ones(N, Lr, dtype=torch.long, device=device)], dim=1)
    pos = (plen[li] - 1).unsqueeze(1) + steps.unsqueeze(0)
    tok = scored_forward(
        model,
        _identity,
        resp,
        chunk,
        input_ids=ids,
        attention_mask=attn,
        position_ids=pos,
        use_cache=Lp > 0,
        **{kwarg: cache if Lp > 0 else None},
    )
    values = torch.where(steps.unsqueeze(0) < rlen.unsqueeze(1), tok, torch.zeros_like(tok)).sum(-1)
    return _to_lists(values, batch)


def packed_response_logps(model, batch: dict, chunk: int = 0):
    """Shared prompt without a KV cache: one sequence per list, [prompt, r_1, ..., r_k], with a
    block mask (each response sees the prompt and its own earlier tokens) and position ids that
    restart after the prompt for every response. Each prompt is computed once, as in the cached
    path, and it runs where the cache cannot: under activation checkpointing, whose checkpointed
    layers drop the KV cache. Needs an attention that takes a 4D mask (sdpa, eager)."""
    prompt_ids, resp, rlen = batch["prompt_ids"], batch["response_ids"], batch["response_lengths"]
    # the layout is built on the host from plain lists (one device sync, not one per response)
    plen, li, sizes = batch["prompt_lengths"].tolist(), batch["list_index"].tolist(), rlen.tolist()
    device = prompt_ids.device
    B, N = len(plen), len(li)
    total = list(plen)
    start = []  # where each response begins in its list's sequence
    for n in range(N):
        start.append(total[li[n]])
        total[li[n]] += sizes[n]
    T = max(total)
    ids = torch.zeros(B, T, dtype=torch.long, device=device)
    pos = torch.zeros(B, T, dtype=torch.long, device=device)
    seg = torch.full((B, T), -1, device=device)  # -1 pad, 0 prompt, n + 1 response n
    for b in range(B):
        ids[b, : plen[b]] = prompt_ids[b, : plen[b]]
        pos[b, : plen[b]] = torch.arange(plen[b], device=device)
        seg[b, : plen[b]] = 0
    for n in range(N):
        b, s, m = li[n], start[n], sizes[n]
        ids[b, s : s + m] = resp[n, :m]
        pos[b, s : s + m] = torch.arange(plen[b], plen[b] + m, device=device)
        seg[b, s : s + m] = n + 1
    impl = getattr(getattr(model, "module", model).config, "_attn_implementation", "sdpa")
    if impl == "flex_attention":  # a block mask: the kernel skips the fully masked blocks
        mask = packed_block_mask(seg)
    else:
        allowed = packed_visible(seg)
        if impl == "eager":  # eager adds the mask to the scores
            dtype = next(model.parameters()).dtype
            mask = torch.zeros(B, 1, T, T, dtype=dtype, device=device)
            mask = mask.masked_fill(~allowed.unsqueeze(1), torch.finfo(dtype).min)
        else:  # sdpa: True = attend
            mask = allowed.unsqueeze(1)
    # logits only from the last prompt token on: earlier prompt positions predict nothing we score
    first = min(plen) - 1
    Lr = resp.shape[1]
    steps = torch.arange(Lr, device=device)
    # response n's token t is predicted at the position of the token before it
    src = torch.tensor(start, device=device).unsqueeze(1) + steps.unsqueeze(0) - 1
    src[:, 0] = torch.tensor([plen[b] - 1 for b in li], device=device)
    valid = steps.unsqueeze(0) < rlen.unsqueeze(1)
    src = torch.where(valid, src, torch.full_like(src, first)) - first
    lists = torch.tensor(li, device=device).unsqueeze(1)
    # the head's input covers sequence positions first .. T - 1; (N, Lr) rows picked from it
    tok = scored_forward(
        model,
        lambda x: x[lists, src],
        resp,
        chunk,
        input_ids=ids,
        attention_mask=mask,
        position_ids=pos,
        use_cache=False,
        logits_to_keep=T - first,
    )
    values = torch.where(valid, tok, torch.zeros_like(tok)).sum(-1)
    return _to_lists(values, batch)


def packed_visible(seg: torch.Tensor) -> torch.Tensor:
    """(B, T, T) query-key visibility of the packed layout, from each position's segment
    (-1 pad, 0 prompt, n + 1 response n): causal, and a key is visible when it is the prompt or
    the query's own response; pads see themselves (no empty row, no NaN)."""
    T = seg.shape[1]
    q, k = seg.unsqueeze(2), seg.unsqueeze(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=seg.device).tril()
    allowed = causal & (k >= 0) & ((k == 0) | (k == q))
    return allowed | torch.eye(T, dtype=torch.bool, device=seg.device)


def packed_block_mask(seg: torch.Tensor):
    """`packed_visible` as FlexAttention's block mask (the same rule per query-key pair, tested
    equal). Blocks that are wholly masked (one response's keys for another's queries) are
    skipped by the kernel instead of computed and discarded, as the dense 4D mask must."""
    from torch.nn.attention.flex_attention import create_block_mask

    def visible(b, h, q, kv):
        key = seg[b, kv]
        same = (key == 0) | (key == seg[b, q])
        return ((kv <= q) & (key >= 0) & same) | (q == kv)

    B, T = seg.shape
    return create_block_mask(visible, B, None, T, T, device=seg.device)


def packed_supported(model) -> bool:
    """Does the attention take the packed layout's mask? sdpa and eager a dense 4D one;
    FlexAttention a block mask, on a GPU only: torch has no CPU backward for it, and its
    compiled CPU forward (torch 2.13) is wrong for some rows of a batch when transformers'
    score_mod is present (checked against sdpa: one list of three off by ~1.6)."""
    inner = getattr(model, "module", model)
    impl = getattr(inner.config, "_attn_implementation", None)
    if impl == "flex_attention":
        return next(inner.parameters()).device.type == "cuda"
    return impl in ("sdpa", "eager")


def checkpointing_active(model) -> bool:
    """Whether this forward pass runs under activation checkpointing: checkpointed layers drop
    the KV cache (transformers sets the layers' `cache`, before 5.24 `past_key_values`, to None),
    which the shared-prompt path needs. Since 5.24 they keep it when no gradient is taken, but
    earlier 5.x releases drop it in every training-mode pass, so any training-mode pass counts."""
    return model.training and any(
        getattr(m, "gradient_checkpointing", False) is True for m in model.modules()
    )


def response_logps(
    model, batch: dict, shared_prompt: bool = True, packed: bool = False, chunk: int | None = 0
):
    """(logp, lengths, mask), each (B, K): sum of token log-probs, token counts, validity.

    shared_prompt=False: the naive path. Otherwise the cached path, or the packed one when asked
    (`packed`) or under activation checkpointing (training only), whose checkpointed layers drop
    the KV cache; where the attention takes no 4D mask (flash-attention) packed is unavailable.
    chunk: chunked log-probs (the head applied `chunk` positions at a time; None: as many as
    the vocabulary allows, `chunk_for_vocab`) where the model allows it (`chunk_supported`);
    0, or a head that cannot be chunked: the full logits.
    """
    chunk = resolve_chunk(model, chunk)
    if not shared_prompt:
        return naive_response_logps(model, batch, chunk)
    checkpointed = checkpointing_active(model)
    if (packed or checkpointed) and packed_supported(model):
        return packed_response_logps(model, batch, chunk)
    if checkpointed:
        return naive_response_logps(model, batch, chunk)
    return shared_response_logps(model, batch, chunk)


class ListDataset(torch.utils.data.Dataset):
    """Tokenized ranked lists (+ reference log-probs once computed)."""

    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def list_length(item: dict, scorer: str = "cached") -> int:
    """Tokens a list costs padded on its own, the key that batches similar lists together.
    cached (shared prompt via the KV cache): the prompt once, k responses padded to the longest;
    packed: the prompt and its responses back to back; naive: k rows of prompt + response padded
    to the longest (logprobs.py)."""
    sizes = [len(r) for r in item["response_ids"]]
    if scorer == "cached":
        return len(item["prompt_ids"]) + len(sizes) * max(sizes)
    if scorer == "packed":
        return len(item["prompt_ids"]) + sum(sizes)
    return len(sizes) * (len(item["prompt_ids"]) + max(sizes))


# `packed_prompt` unset packs when the attention that packing adds is at most this share of the
# layers' matmul work. Packing runs a list as one forward whose attention spans the whole
# [prompt, r_1, ..., r_k] sequence; the KV cache runs the prompt and the responses as two
# passes, so every weight gets two gradients to sum. Measured on CPU (SmolLM2, bench/README.md):
# packed 1.3x faster on short pairs (adds 2%), 1.05-1.09x at prompt 160 with k = 4-8 responses
# of 80-120 tokens (adds 13-18%), 1.5x slower at k = 8 x 256 (adds 56%).
PACKED_EXTRA_ATTENTION = 0.2


def packing_pays(config, dataset, sample: int = 1024) -> bool:
    """Is the packed scorer the cheaper one for this data (`packed_prompt` unset)? Estimated from
    the model's shape and up to `sample` evenly spaced lists: the extra attention of packing,
    (P + sum|r|)^2 - (P^2 / 2 + sum |r| (P + |r| / 2)) query-key pairs per list, each 4 x width
    FLOPs, against 2 x (4 d^2 + 3 d x intermediate) FLOPs per token for the layers' matmuls."""
    d, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    if not d or not heads:  # a config that does not name its sizes: the KV cache, as before
        return False
    width = heads * (getattr(config, "head_dim", None) or d // heads)
    inter = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d
    per_token, per_pair = 2 * (4 * d * d + 3 * d * inter), 4 * width
    n, m = len(dataset), min(len(dataset), sample)
    extra = tokens = 0
    for item in (dataset[j * n // m] for j in range(m)):  # distinct, increasing indices
        P, sizes = len(item["prompt_ids"]), [len(r) for r in item["response_ids"]]
        total = P + sum(sizes)
        extra += total * total - (P * P / 2 + sum(r * (P + r / 2) for r in sizes))
        tokens += total
    return extra * per_pair <= PACKED_EXTRA_ATTENTION * tokens * per_token


def make_collator(pad_id: int):
    def collate(features: list[dict]) -> dict:
        enc = [EncodedList(f["prompt_ids"], f["response_ids"]) for f in features]
        batch = collate_lists(enc, pad_id)
        K = int(batch["num_responses"].max())
        scores = torch.zeros(len(features), K)
        for b, f in enumerate(features):
            scores[b, : len(f["scores"])] = torch.tensor(f["scores"], dtype=torch.float)
        batch["scores"] = scores
        if "ref_logp" in features[0]:
            ref = torch.zeros(len(features), K)
            for b, f in enumerate(features):
                ref[b, : len(f["ref_logp"])] = torch.tensor(f["ref_logp"], dtype=torch.float)
            batch["ref_logp"] = ref
        return batch

    return collate


@torch.no_grad()
def compute_logps(
    model,
    dataset: ListDataset,
    pad_id: int,
    batch_size: int,
    shared_prompt: bool,
    desc: str = "reference log-probs",
    packed: bool = False,
    split: bool = True,
    chunk: int | None = None,
) -> list[list[float]]:
    """Per-list response log-probs of `model` over the whole dataset, in dataset order.

    split=True (one dataset shared by every process, e.g. the training data): under several
    processes each computes every world_size-th batch and the results are gathered. Every process
    runs the same number of forward passes (the last batch repeats where a share is short):
    ZeRO-3 gathers parameters collectively in each forward. split=False: this process's own rows
    (e.g. its share of a scoring run), computed here alone. chunk: as `response_logps`.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    state = PartialState()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    collate = make_collator(pad_id)
    # batch by length: little padding
    scorer = ("packed" if packed else "cached") if shared_prompt else "naive"
    order = sorted(range(len(dataset)), key=lambda i: -list_length(dataset[i], scorer))
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    rank, world = (state.process_index, state.num_processes) if split else (0, 1)
    mine = batches[rank::world]
    steps = -(-len(batches) // world)
    results: dict[int, list[float]] = {}
    bar = tqdm(
        range(steps), desc=desc, unit="batch", leave=split, disable=not state.is_main_process
    )
    for step in bar:
        idx = mine[step] if step < len(mine) else batches[-1]
        batch = {k: v.to(device) for k, v in collate([dataset[i] for i in idx]).items()}
        logp, _, mask = response_logps(model, batch, shared_prompt, packed, chunk)
        if step < len(mine):
            for j, i in enumerate(idx):
                results[i] = logp[j][mask[j]].double().tolist()
    if world > 1:
        results = {i: v for part in gather_object([results]) for i, v in part.items()}
    model.train(was_training)
    return [results[i] for i in range(len(dataset))]


def encode_rows(
    tokenizer,
    prompts: list,
    responses: list[list[str]],
    *,
    max_length: int,
    min_response_tokens: int,
    chat_template: str,
    eos: bool = True,
) -> tuple[ListDataset, int]:
    """(prompt, responses) rows -> the ListDataset every log-prob computation runs on (training's
    reference, perplexity, the policy as a reward, the loop's KL penalty), token ids as
    `tokenization.encode_list` builds them for training. Returns (dataset, pieces truncated)."""
    items, truncated = [], 0
    for prompt, resps in zip(prompts, responses):
        enc = encode_list(
            tokenizer,
            prompt,
            resps,
            max_length=max_length,
            min_response_tokens=min_response_tokens,
            chat_template=chat_template,
            eos=eos,
        )
        truncated += enc.responses_truncated + int(enc.prompt_truncated)
        items.append(
            {
                "prompt_ids": enc.prompt_ids,
                "response_ids": enc.response_ids,
                "scores": [0.0] * len(resps),
            }
        )
    return ListDataset(items), truncated


def rows_logps(
    model,
    tokenizer,
    prompts: list,
    responses: list[list[str]],
    *,
    batch_size: int,
    desc: str,
    **encoding,
) -> tuple[list[list[float]], list[list[int]], int]:
    """Sum log-prob and token count of each response of each row under `model` (the shared-prompt
    scorer, batched by length; `encoding`: `encode_rows` options). Returns (logps, lengths,
    pieces truncated)."""
    dataset, truncated = encode_rows(tokenizer, prompts, responses, **encoding)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    logps = compute_logps(model, dataset, pad_id, batch_size, True, desc=desc, split=False)
    lengths = [[len(ids) for ids in item["response_ids"]] for item in dataset.items]
    return logps, lengths, truncated
