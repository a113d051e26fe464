"""Batched decoding for the HF generation backend (`generation.HFBackend`): seeded sampling / greedy,
beam and diverse beam search.

All decoders take a batch of prompts (lists of token ids; left-padded here), run the prompt once
(prefill), copy its key/value cache to every sample / beam, and then decode one token per step
with the cache. They return the generated token ids only (no prompt, no EOS, no padding).

- `sample`: greedy (temperature 0) or temperature / top-k / top-p sampling. Each returned row has
  its own seed: the uniforms it consumes are drawn up front from a CPU generator seeded with that
  row's seed, so a row's sample does not depend on which other prompts share its batch, on the
  device, or on a resumed run (up to floating-point effects of padding on the logits, which can
  flip a draw that lands within ~1e-6 of a token boundary).
- `diverse_beam_search`: Vijayakumar et al. 2018 ("Diverse Beam Search", Hamming diversity), which
  transformers 5 removed from its core. With one group it is exactly transformers' beam search
  (`generate(num_beams=B, do_sample=False)`, early_stopping=False); tests check it token for token.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import Any

import torch

from rankalign.models import cache_kwarg, output_cache

StopFn = Callable[[torch.Tensor], torch.Tensor]  # generated ids (rows, t) -> (rows,) bool
NEG = -1.0e9  # "impossible" score, as transformers' beam search uses


def left_pad(
    prompts: list[list[int]], pad_token_id: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token-id lists into (input_ids, attention_mask): decoding appends on the right."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if p:
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


def make_stop_fn(tokenizer, stop_strings: list[str]) -> StopFn | None:
    """Early stop on stop strings (transformers' StopStringCriteria), on generated ids only.

    Only an optimization and a beam-search signal: responses are truncated at the first stop
    string afterwards anyway. Returns None if the tokenizer's vocabulary cannot be processed.
    """
    if not stop_strings:
        return None
    from transformers import StopStringCriteria

    try:
        criteria = StopStringCriteria(tokenizer=tokenizer, stop_strings=list(stop_strings))
    except Exception:  # exotic vocabularies: fall back to truncation only
        return None
    return lambda ids: criteria(ids, None).to(ids.device)


class _Decoder:
    """Prefill once per prompt, repeat the cache `expand` times, then feed one token per step."""

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, expand: int):
        self.model = model
        params = inspect.signature(model.forward).parameters
        # only the last position's logits: never a (batch, prompt_len, vocab) tensor
        self.extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self.use_positions = "position_ids" in params
        self.cache_kwarg = cache_kwarg(model)
        # positions as transformers computes them for left padding: count real tokens only
        positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        self.mask, self.cache = attention_mask, None
        self.logits = self._forward(input_ids, positions)
        self.last_pos = positions[:, -1]
        if expand > 1:
            self.cache.batch_repeat_interleave(expand)
            self.logits = self.logits.repeat_interleave(expand, 0)
            self.mask = self.mask.repeat_interleave(expand, 0)
            self.last_pos = self.last_pos.repeat_interleave(expand, 0)

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        kwargs = {**self.extra, self.cache_kwarg: self.cache}
        if self.use_positions:
            kwargs["position_ids"] = positions
        out = self.model(input_ids=input_ids, attention_mask=self.mask, use_cache=True, **kwargs)
        self.cache = output_cache(out)
        return out.logits[:, -1].float()

    def select(self, rows: torch.Tensor) -> None:
        """Keep only these rows (finished samples leave the batch; beams are reordered)."""
        self.cache.reorder_cache(rows)
        self.mask, self.last_pos = self.mask[rows], self.last_pos[rows]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits for the next token after appending `tokens` (one per row)."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        self.last_pos = self.last_pos + 1
        return self._forward(tokens[:, None], self.last_pos[:, None])


def _strip(tokens: list[int], eos: set[int]) -> list[int]:
    return tokens[:-1] if tokens and tokens[-1] in eos else tokens


# ----------------------------------------------------------------------------- sampling


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Top-k then nucleus filtering (keep the smallest set of tokens with mass >= top_p)."""
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        probs, order = logits.softmax(-1).sort(-1, descending=True)
        mass_before = probs.cumsum(-1) - probs  # the top token always survives (mass_before = 0)
        sorted_remove = mass_before >= top_p
        remove = torch.empty_like(sorted_remove).scatter_(-1, order, sorted_remove)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


@torch.no_grad()
def sample(
    model,
    prompts: list[list[int]],
    *,
    num_return_sequences: int,
    max_new_tokens: int,
    seeds: list[int],
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    eos_token_ids: list[int] = (),
    pad_token_id: int = 0,
    stop: StopFn | None = None,
) -> list[list[list[int]]]:
    """`num_return_sequences` samples per prompt (greedy when temperature == 0).

    seeds: one per returned row (prompt-major: prompt i, sample j -> seeds[i * n + j]).
    Returns tokens[prompt][sample].
    """
    n, steps = num_return_sequences, max_new_tokens
    rows = len(prompts) * n
    if len(seeds) != rows:
        raise ValueError(f"need {rows} seeds, got {len(seeds)}")
    device = next(model.parameters()).device
    # inverse-CDF sampling with per-row uniforms drawn up front: one seed fixes one row's sample
    uniforms = torch.stack(
        [
            torch.rand(steps, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
            for s in seeds
        ]
    ).to(device)
    eos = torch.tensor(list(eos_token_ids), dtype=torch.long, device=device)
    out = torch.full((rows, steps), pad_token_id, dtype=torch.long, device=device)
    length = torch.full((rows,), steps, dtype=torch.long)
    dec = _Decoder(model, *left_pad(prompts, pad_token_id, device), expand=n)
    logits, active = dec.logits, torch.arange(rows, device=device)  # active: rows still decoding
    for t in range(steps):
        if temperature == 0:
            tok = logits.argmax(-1)
        else:
            probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
            cdf = probs.double().cumsum(-1)
            u = uniforms[active, t] * cdf[:, -1]
            tok = torch.searchsorted(cdf, u[:, None], right=True)[:, 0].clamp_(
                max=cdf.shape[-1] - 1
            )
        out[active, t] = tok
        done = torch.isin(tok, eos)
        if stop is not None:
            done |= stop(out[active, : t + 1])
        length[active[done].cpu()] = t + 1
        if t + 1 == steps or bool(done.all()):
            break
        if bool(done.any()):  # finished rows leave the batch: no compute wasted on padding
            keep = (~done).nonzero()[:, 0]
            dec.select(keep)
            active, tok = active[keep], tok[keep]
        logits = dec.step(tok)
    eos_set, out = set(eos_token_ids), out.cpu().tolist()
    rows_out = [_strip(out[r][: length[r]], eos_set) for r in range(rows)]
    return [rows_out[i * n : (i + 1) * n] for i in range(len(prompts))]


# ----------------------------------------------------------------------------- diverse beam search


@torch.no_grad()
def diverse_beam_search(
    model,
    prompts: list[list[int]],
    *,
    num_beams: int,
    max_new_tokens: int,
    num_beam_groups: int = 1,
    diversity_penalty: float = 0.0,
    temperature: float = 1.0,
    length_penalty: float = 1.0,
    num_return_sequences: int | None = None,
    eos_token_ids: list[int] = (),
    pad_token_id: int = 0,
    stop: StopFn | None = None,
) -> tuple[list[list[list[int]]], list[list[float]]]:
    """Diverse beam search (Vijayakumar et al. 2018), batched over prompts, with the KV cache.

    B beams form G groups of S = B/G beams. At each step the groups decode in order; group g's
    token log-probs (of logits / temperature) are lowered by `diversity_penalty` times the number
    of times each token was chosen by groups < g at this step (Hamming diversity), and the
    penalized scores accumulate into the beam scores, as in the paper and transformers 4.x.
    Within a group it is standard beam search: the top 2S candidates, those ending in EOS (or a
    stop string, or at the length limit) become finished hypotheses scored sum_logp / len**lp,
    the best S others continue; a group stops improving when its best running beam cannot beat
    its worst finished one. Returns the best `num_return_sequences` finished hypotheses of all
    groups per prompt (tokens, scores), best first.
    """
    B, G = num_beams, num_beam_groups
    if B % G:
        raise ValueError(f"num_beams ({B}) must be divisible by num_beam_groups ({G})")
    if temperature <= 0:
        raise ValueError("beam search needs temperature > 0")
    S, N, T = B // G, len(prompts), max_new_tokens
    R = num_return_sequences or B
    device = next(model.parameters()).device
    eos = torch.tensor(list(eos_token_ids), dtype=torch.long, device=device)
    K = max(2, 1 + len(eos_token_ids)) * S  # enough candidates that S survive even if all hit EOS
    may_finish = torch.arange(K, device=device) < S  # only the top S may become hypotheses (HF)
    dec = _Decoder(model, *left_pad(prompts, pad_token_id, device), expand=B)  # row n*B + g*S + s
    logits = dec.logits

    run_tok = torch.full((N, G, S, T), pad_token_id, dtype=torch.long, device=device)
    run_score = torch.zeros((N, G, S), device=device)
    run_score[..., 1:] = NEG  # all beams start identical: expand only the first of each group
    fin_tok, fin_score = run_tok.clone(), torch.full((N, G, S), NEG, device=device)
    fin_len = torch.zeros((N, G, S), dtype=torch.long, device=device)
    fin_done = torch.zeros((N, G, S), dtype=torch.bool, device=device)
    improvable = torch.ones((N, G), dtype=torch.bool, device=device)
    parents = torch.zeros((N, G, S), dtype=torch.long, device=device)

    def take(x, idx):  # x (N, K', ...) rows picked by idx (N, S)
        return x.gather(
            1, idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
        )

    for t in range(T):
        logp = torch.log_softmax(logits / temperature, dim=-1).view(N, G, S, -1)
        V = logp.shape[-1]
        chosen = torch.zeros((N, V), device=device)  # tokens picked by earlier groups this step
        all_hit = True
        for g in range(G):
            lp = logp[:, g] - diversity_penalty * chosen[:, None, :] if g else logp[:, g]
            top, idx = (lp + run_score[:, g, :, None]).view(N, S * V).topk(K, dim=-1)
            parent, tok = idx // V, idx % V
            cand = take(run_tok[:, g], parent)
            cand[:, :, t] = tok
            ended = torch.isin(tok, eos)
            if stop is not None:
                ended |= stop(cand[:, :, : t + 1].reshape(N * K, t + 1)).view(N, K)
            hit = ended | (t + 1 == T)
            all_hit &= bool(hit.all())
            # the best S candidates that did not end keep running (at the length limit: the best
            # S, so that the next groups' Hamming penalty sees this group's choices)
            live = top + ended.float() * NEG
            keep = live.topk(S, dim=-1).indices
            run_tok[:, g], run_score[:, g], parents[:, g] = (
                take(cand, keep),
                take(live, keep),
                take(parent, keep),
            )
            # finished candidates (among the top S) compete with the group's finished hypotheses
            new_done = hit & may_finish
            cand_score = top / (t + 1) ** length_penalty
            cand_score = (
                cand_score + ((~improvable[:, g, None]).float() + (~new_done).float()) * NEG
            )
            best = torch.cat([fin_score[:, g], cand_score], 1).topk(S, dim=-1).indices
            new_len = torch.full_like(tok, t + 1)
            for kept, new in (
                (fin_score, cand_score),
                (fin_tok, cand),
                (fin_len, new_len),
                (fin_done, new_done),
            ):
                kept[:, g] = take(torch.cat([kept[:, g], new], 1), best)
            chosen.scatter_add_(1, run_tok[:, g, :, t], torch.ones((N, S), device=device))
        # a group is done when its best running beam cannot beat its worst finished hypothesis
        best_running = run_score[..., :1] / (t + 1) ** length_penalty
        worst_finished = torch.where(fin_done, fin_score.min(-1, keepdim=True).values, NEG)
        improvable &= (best_running > worst_finished).any(-1)
        if t + 1 == T or all_hit or not bool(improvable.any()):
            break
        base = (
            torch.arange(N, device=device)[:, None, None] * B
            + torch.arange(G, device=device)[None, :, None] * S
        )
        dec.select((base + parents).view(-1))
        logits = dec.step(run_tok[..., t].reshape(-1))

    # union of all groups' hypotheses, best first (stable: one group keeps transformers' order)
    ranked = fin_score.view(N, G * S).masked_fill(~fin_done.view(N, G * S), float("-inf"))
    order = torch.sort(ranked, dim=-1, descending=True, stable=True).indices[:, :R].tolist()
    tok = fin_tok.view(N, G * S, T).tolist()
    length, score, done = (x.view(N, G * S).tolist() for x in (fin_len, fin_score, fin_done))
    eos_set = set(eos_token_ids)
    seqs = [
        [_strip(tok[n][h][: length[n][h]], eos_set) for h in row if done[n][h]]
        for n, row in enumerate(order)
    ]
    scores = [[score[n][h] for h in row if done[n][h]] for n, row in enumerate(order)]
    return seqs, scores


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from (run seed, source, prompt id, sample index): stable across runs/batches."""
    return (
        int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")
        >> 1
    )


def truncate_at_stop(text: str, stop: list[str]) -> str:
    """Cut at the earliest stop string (RRHF §4.1: no new Human:/Assistant: turn), then strip."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut].strip()
