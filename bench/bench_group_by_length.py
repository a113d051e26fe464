"""Padding: RRHF training steps over batches in random order vs `group_by_length` batches.

Lists are shaped like Anthropic HH samples (prompt and response lengths spread around 160 and
80 tokens, k responses each). The same lists are batched two ways: random order (the Trainer's
default) and transformers' LengthGroupedSampler on rankalign's list cost (prompt + k x longest
response, the shared-prompt scorer's tokens), as `--train_sampling_strategy group_by_length` does. Batches spread over each epoch
are timed step by step, the two orders alternating in one process; real (unpadded) tokens per second and the
padded share of the computed tokens are printed side by side.

    python bench/bench_group_by_length.py                   # embedded SmolLM2-135M (CPU, fp32)
    python bench/bench_group_by_length.py --device cuda --dtype bfloat16 --batch 8

Results are appended to bench/results/group_by_length.jsonl with machine info.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from common import append_record, machine_info

sys.path.insert(0, str(Path(__file__).parents[1] / "src"))
from bench_scorer import step  # noqa: E402
from transformers.trainer_pt_utils import LengthGroupedSampler  # noqa: E402

from rankalign.logprobs import collate_lists, list_length
from rankalign.models import load_causal_lm, resolve_model
from rankalign.tokenization import EncodedList


def hh_like_lists(n: int, k: int, vocab: int, seed: int) -> list[EncodedList]:
    """Lengths from a log-normal around HH's means, cut at the paper's 192-token sequences."""
    g = torch.Generator().manual_seed(seed)

    def length(mean: float, low: int, high: int) -> int:
        x = float(torch.exp(torch.randn(1, generator=g) * 0.6) * mean)
        return int(min(max(x, low), high))

    lists = []
    for _ in range(n):
        p = length(140, 8, 160)
        prompt = torch.randint(3, vocab, (p,), generator=g).tolist()
        responses = [
            torch.randint(3, vocab, (length(70, 4, 192 - p),), generator=g).tolist()
            for _ in range(k)
        ]
        lists.append(EncodedList(prompt, responses))
    return lists


def computed_tokens(batch: dict) -> tuple[int, int]:
    """(tokens the shared-prompt scorer computes incl. padding, real tokens)."""
    b, lp = batch["prompt_ids"].shape
    n, lr = batch["response_ids"].shape
    real = int(batch["prompt_lengths"].sum() + batch["response_lengths"].sum())
    return b * lp + n * lr, real


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--lists", type=int, default=512)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4, help="lists per step")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per order (after a warm-up)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "group_by_length.jsonl")
    )
    args = ap.parse_args()

    model = load_causal_lm(resolve_model(args.model), dtype=args.dtype).to(args.device)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the same weights for both orders
    lists = hh_like_lists(args.lists, args.k, model.config.vocab_size, args.seed)
    g = torch.Generator().manual_seed(args.seed)
    orders = {
        "random": torch.randperm(len(lists), generator=g).tolist(),
        "group_by_length": list(
            LengthGroupedSampler(
                args.batch,
                lengths=[
                    list_length(
                        {"prompt_ids": x.prompt_ids, "response_ids": x.response_ids}, "cached"
                    )
                    for x in lists
                ],
                generator=g,
            )
        ),
    }
    batches = {
        name: [
            {
                n: v.to(args.device)
                for n, v in collate_lists([lists[i] for i in order[s : s + args.batch]], 0).items()
            }
            for s in range(0, len(order), args.batch)
        ]
        for name, order in orders.items()
    }
    padded = {}
    for name, bs in batches.items():  # over the whole epoch, not only the timed steps
        computed, real = map(sum, zip(*(computed_tokens(b) for b in bs)))
        padded[name] = 1 - real / computed
    scores = torch.randn(args.batch, args.k, generator=g).to(args.device)
    times = {name: [] for name in batches}
    tokens = {name: 0 for name in batches}
    computed = {name: 0 for name in batches}
    # batches spread over the epoch (grouped batches range from short to long), the first one
    # a warm-up; the orders alternate step by step, so both see the same machine load
    n = len(next(iter(batches.values())))
    picked = [round(i * (n - 1) / args.steps) for i in range(args.steps + 1)]
    for s, i in enumerate(picked):
        for name, bs in batches.items():
            b = bs[i]
            dt = step(model, opt, b, scores[: b["num_responses"].shape[0]], "shared", args.device)
            if s > 0:
                times[name].append(dt)
                computed[name] += computed_tokens(b)[0]
                tokens[name] += computed_tokens(b)[1]
    rate = {name: tokens[name] / sum(times[name]) for name in batches}
    computed_rate = {name: computed[name] / sum(times[name]) for name in batches}
    for name in batches:
        print(
            f"{name:16s} {rate[name]:6.0f} real tokens/s ({computed_rate[name]:.0f} computed incl. "
            f"padding); padding {padded[name]:.0%} of computed tokens over the epoch; median step "
            f"{statistics.median(times[name]):.2f} s"
        )
    ratio = rate["group_by_length"] / rate["random"]
    print(f"group_by_length / random: x{ratio:.2f} real tokens/s")
    append_record(
        args.out,
        "group_by_length",
        {
            "args": vars(args),
            "machine": machine_info(args.device),
            "padding_share": padded,
            "real_tokens_per_s": rate,
            "computed_tokens_per_s": computed_rate,
            "speedup": ratio,
            "step_s": times,
        },
    )


if __name__ == "__main__":
    main()
