"""Tokens/s of batched generation vs one prompt at a time, on the same model, side by side.

    python bench/bench_generation.py                      # a small random Llama built here
    python bench/bench_generation.py --model PATH_OR_HUB  # a real model (its tokenizer for prompts)

Both modes run the same decoder (`rankalign.decoding`) over the same prompts with EOS disabled,
so both produce exactly num_prompts x num_return x max_new_tokens tokens; the modes alternate
over `--repeats` rounds after a warm-up and the median time of each is used. The result (with the
machine: CPU count, platform, torch version, device) is printed and appended as one JSON line to
bench/results/generation.jsonl.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from common import append_record, machine_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rankalign.decoding import diverse_beam_search, sample

RESULTS = Path(__file__).resolve().parent / "results" / "generation.jsonl"


def build_model(args):
    """(model, prompts as token-id lists, model name)."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(
        args.min_prompt_tokens, args.max_prompt_tokens + 1, (args.num_prompts,), generator=g
    )
    if args.model:
        from rankalign.models import load_causal_lm, load_tokenizer, resolve_model

        path = resolve_model(args.model)
        tok = load_tokenizer(path)
        model = load_causal_lm(path, device=args.device)
        words = "the movie was great and i loved it but the ending was sad and slow".split()
        prompts = [
            tok(" ".join(words[i % len(words) :] + words)[: 6 * int(n)]).input_ids[: int(n)]
            for i, n in enumerate(lengths)
        ]
        return model.eval(), prompts, args.model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=8000,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=1024,
    )
    model = LlamaForCausalLM(cfg).eval().to(args.device)
    prompts = [torch.randint(3, cfg.vocab_size, (int(n),), generator=g).tolist() for n in lengths]
    return model, prompts, "random-llama(h256,l4,v8000)"


def generate(model, prompts, args, offset=0):
    kw = {"max_new_tokens": args.max_new_tokens, "eos_token_ids": [], "pad_token_id": 0}
    if args.strategy == "diverse-beam":
        seqs, _ = diverse_beam_search(
            model,
            prompts,
            num_beams=args.num_return,
            num_beam_groups=args.num_return,
            diversity_penalty=1.0,
            temperature=0.8,
            **kw,
        )
        return seqs
    seeds = list(range(offset * args.num_return, (offset + len(prompts)) * args.num_return))
    temperature = 0.0 if args.strategy == "greedy" else 0.8
    return sample(
        model,
        prompts,
        num_return_sequences=args.num_return,
        seeds=seeds,
        temperature=temperature,
        **kw,
    )


def timed(fn) -> tuple[float, int]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, sum(len(s) for row in out for s in row)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model", default=None, help="model folder or hub name (default: a random Llama)"
    )
    p.add_argument("--strategy", default="sample", choices=["greedy", "sample", "diverse-beam"])
    p.add_argument("--num_prompts", type=int, default=16)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--num_return", type=int, default=4, help="samples (or beams) per prompt")
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--min_prompt_tokens", type=int, default=16)
    p.add_argument("--max_prompt_tokens", type=int, default=96)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no_save", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, prompts, name = build_model(args)
    # batched as the sample stage does it: sorted by length, then cut into batches
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    batches = [
        [prompts[i] for i in order[s : s + args.batch_size]]
        for s in range(0, len(order), args.batch_size)
    ]

    def one_at_a_time():
        return [row for i, q in enumerate(prompts) for row in generate(model, [q], args, offset=i)]

    def batched():
        return [row for b in batches for row in generate(model, b, args)]

    with torch.inference_mode():
        generate(model, prompts[:2], args)  # warm-up (allocator, kernels)
        times = {"one_at_a_time": [], "batched": []}
        tokens = {}
        for _ in range(args.repeats):  # alternate so that drift in machine load hits both
            for mode, fn in (("one_at_a_time", one_at_a_time), ("batched", batched)):
                seconds, n = timed(fn)
                times[mode].append(seconds)
                tokens[mode] = n
    assert tokens["batched"] == tokens["one_at_a_time"], tokens
    tps = {m: tokens[m] / statistics.median(t) for m, t in times.items()}
    result = {
        "model": name,
        "strategy": args.strategy,
        "num_prompts": args.num_prompts,
        "batch_size": args.batch_size,
        "num_return": args.num_return,
        "max_new_tokens": args.max_new_tokens,
        "prompt_tokens": [args.min_prompt_tokens, args.max_prompt_tokens],
        "tokens": tokens["batched"],
        "seconds": {m: [round(x, 3) for x in t] for m, t in times.items()},
        "tokens_per_s": {m: round(v, 1) for m, v in tps.items()},
        "speedup_batched_vs_one_at_a_time": round(tps["batched"] / tps["one_at_a_time"], 2),
        "machine": machine_info(args.device),
    }
    print(
        f"{name}, {args.strategy}, {args.num_prompts} prompts x {args.num_return} x {args.max_new_tokens} tokens"
    )
    print(f"  one at a time : {tps['one_at_a_time']:8.1f} tokens/s")
    print(f"  batched ({args.batch_size:>3}) : {tps['batched']:8.1f} tokens/s")
    print(f"  ratio         : {result['speedup_batched_vs_one_at_a_time']:.2f}x")
    if not args.no_save:
        append_record(RESULTS, "generation", result)
        print(f"  appended to {RESULTS}")


if __name__ == "__main__":
    main()
