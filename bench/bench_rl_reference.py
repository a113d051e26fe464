"""An RL reference for the RRHF paper's central claim: RRHF reaches a reward comparable to RL with
fewer models in memory and less machinery. TRL 1.x dropped PPO, so the RL here is TRL's
`GRPOTrainer` (PPO's clipped objective with group-normalized rewards instead of a critic).

Both arms, same footing:
- the same start model (default: the embedded SmolLM2-135M-Instruct), chat template on;
- the same train prompts (the demo's shipped set, split `train`) and the same reward function:
  rankalign's `sentiment` reward (vaderSentiment compound score), called by GRPO as its
  `reward_funcs` entry;
- the same budget in sampled responses and the same sampler: RRHF samples k = 6 candidates per
  prompt once from the start model (top-p 1.0, temperature 0.8) = P x 6 responses; GRPO draws
  num_generations = 6 completions of one prompt per optimizer step (temperature 0.8, top-p 1.0)
  for P steps = P x 6 responses;
- the same learning rate and max_new_tokens; fp32 weights and no activation checkpointing in both
  (TRL's GRPOConfig turns bf16 and gradient checkpointing on by default: turned off here).
RRHF trains `--rrhf_epochs` epochs over its lists (batch 4), GRPO one pass over the prompts:
the budget held equal is the sampled responses (the expensive part on an accelerator), not the
optimizer steps.

Each arm runs in its own child process (this script with `--arm`): wall time is the child's
whole run (RRHF: sample + score + train; GRPO: train, generation included), peak memory is the
child's own peak resident set (`resource.getrusage(RUSAGE_SELF).ru_maxrss` at its end; CPU) or
`torch.cuda.max_memory_allocated` (GPU). Models held: RRHF 1 (the policy; the reward is a rule,
no model); GRPO 1 with TRL's default beta = 0 (no reference; generation reuses the policy),
2 with `--beta > 0`. Then rankalign's `evaluate` scores base, RRHF and GRPO on the same held-out
prompts (greedy, mean reward with a 95% bootstrap interval).

    python bench/bench_rl_reference.py                    # SmolLM2, 8 prompts (48 responses)
    python bench/bench_rl_reference.py --tiny             # a random tiny Llama (checks the wiring)

Appends one JSON line to bench/results/rl_reference.jsonl.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import append_record, machine_info

ROOT = Path(__file__).parents[1]
K = 6  # sampled responses per prompt, both arms
SOURCES = [{"kind": "policy", "strategy": "top-p", "num": K, "top_p": 1.0, "temperature": 0.8}]


def peak_memory_mb() -> tuple[float, str]:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20, "cuda max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak RSS (ru_maxrss)"


# ----------------------------------------------------------------------------- arms (children)


def arm_rrhf(a: argparse.Namespace, out: Path) -> dict:
    import rankalign

    rankalign.sample(
        prompts=a.train_file,
        out=str(out / "candidates.jsonl"),
        model=a.model,
        sources=SOURCES,
        max_new_tokens=a.max_new_tokens,
        batch_size=8,
        chat_template="always",
        seed=a.seed,
    )
    rankalign.score(
        input=str(out / "candidates.jsonl"), out=str(out / "scored.jsonl"), reward=["sentiment"]
    )
    summary = rankalign.train(
        data=str(out / "scored.jsonl"),
        model=a.model,
        loss="rrhf",
        sft_reduction="mean",
        output_dir=str(out / "model"),
        chat_template="always",
        max_length=160,
        num_train_epochs=a.rrhf_epochs,
        learning_rate=a.learning_rate,
        per_device_train_batch_size=4,
        warmup_steps=0.1,
        logging_steps=1,
        save_strategy="no",
        seed=a.seed,
    ).metrics
    rows = [json.loads(x) for x in (out / "candidates.jsonl").read_text().splitlines()]
    return {
        "sampled_responses": sum(len(r["responses"]) for r in rows),
        "optimizer_steps": summary.get("global_step"),
        "models_in_memory": 1,
    }


def arm_grpo(a: argparse.Namespace, out: Path) -> dict:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rankalign.models import resolve_model
    from rankalign.scoring.rewards.registry import build_rewards, parse_reward_specs

    reward = build_rewards(parse_reward_specs(["sentiment"]))[0]

    def sentiment(prompts, completions, **_):
        """rankalign's `sentiment` reward on each completion's text."""
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [reward.score([{"prompt": "", "responses": [t]}])[0][0] for t in texts]

    prompts = [json.loads(x)["prompt"] for x in Path(a.train_file).read_text().splitlines()]
    data = datasets.Dataset.from_list(
        [{"prompt": [{"role": "user", "content": p}]} for p in prompts]
    )
    path = resolve_model(a.model)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    args = GRPOConfig(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=K,  # completions per step: one prompt's group of K
        num_generations=K,
        max_completion_length=a.max_new_tokens,
        max_steps=len(prompts),  # P steps x K completions = P x K sampled responses
        learning_rate=a.learning_rate,
        temperature=0.8,
        beta=a.beta,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=a.seed,
        use_cpu=not __import__("torch").cuda.is_available(),
        # TRL's GRPOConfig defaults both to True; rankalign trains in fp32 without activation
        # checkpointing, and bf16 matmuls on a CPU are several times slower than fp32
        bf16=False,
        gradient_checkpointing=False,
    )
    trainer = GRPOTrainer(
        model=model, reward_funcs=[sentiment], args=args, train_dataset=data, processing_class=tok
    )
    trainer.train()
    trainer.save_model(str(out / "model"))
    tok.save_pretrained(str(out / "model"))
    return {
        "sampled_responses": trainer.state.global_step * K,
        "optimizer_steps": trainer.state.global_step,
        "models_in_memory": 2 if a.beta > 0 else 1,
        "beta": a.beta,
    }


def child(a: argparse.Namespace) -> None:
    out = Path(a.work) / a.arm
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    info = (arm_rrhf if a.arm == "rrhf" else arm_grpo)(a, out)
    info["wall_s"] = time.perf_counter() - start
    info["peak_memory_mb"], info["memory_measure"] = peak_memory_mb()
    (out / "arm.json").write_text(json.dumps(info))


# ----------------------------------------------------------------------------- parent


def prepare(a: argparse.Namespace, work: Path) -> None:
    from importlib import resources

    src = resources.files("rankalign") / "assets" / "demo_prompts.jsonl"
    rows = [json.loads(x) for x in src.read_text().splitlines() if x.strip()]
    train = [r for r in rows if r.get("split") == "train"][: a.prompts]
    held = [r for r in rows if r.get("split") == "heldout"][: a.heldout]
    for name, part in (("train.jsonl", train), ("heldout.jsonl", held)):
        (work / name).write_text(
            "".join(json.dumps({"id": r["id"], "prompt": r["prompt"]}) + "\n" for r in part)
        )
    if a.tiny:
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import build_llama, build_tokenizer

        tok = build_tokenizer()
        build_llama(len(tok)).save_pretrained(work / "tiny")
        tok.save_pretrained(work / "tiny")
        a.model = str(work / "tiny")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--tiny", action="store_true", help="a random tiny Llama (wiring check)")
    ap.add_argument("--prompts", type=int, default=8, help="train prompts P")
    ap.add_argument("--heldout", type=int, default=24)
    ap.add_argument("--max_new_tokens", type=int, default=24)
    ap.add_argument("--learning_rate", type=float, default=5e-5, help="both arms (the demo's)")
    ap.add_argument("--rrhf_epochs", type=float, default=2)
    ap.add_argument("--beta", type=float, default=0.0, help="GRPO KL coefficient (TRL default 0)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-rl-reference"))
    ap.add_argument("--arm", choices=("rrhf", "grpo"), help=argparse.SUPPRESS)
    ap.add_argument("--train_file", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.arm:
        child(a)
        return
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    prepare(a, work)
    a.train_file = str(work / "train.jsonl")
    arms = {}
    for arm in ("rrhf", "grpo"):
        (work / arm / "arm.json").unlink(missing_ok=True)
        cmd = [sys.executable, __file__, "--arm", arm, "--train_file", a.train_file]
        for key in ("model", "max_new_tokens", "learning_rate", "rrhf_epochs", "beta", "seed"):
            cmd += [f"--{key}", str(getattr(a, key))]
        cmd += ["--work", str(work), "--prompts", str(a.prompts)]
        print(f"[bench] {arm}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        arms[arm] = json.loads((work / arm / "arm.json").read_text())

    import rankalign

    metrics = rankalign.evaluate(
        model=[
            f"base={a.model}",
            f"rrhf={work / 'rrhf' / 'model'}",
            f"grpo={work / 'grpo' / 'model'}",
        ],
        prompts=str(work / "heldout.jsonl"),
        reward=["sentiment"],
        out=str(work / "eval"),
        max_new_tokens=a.max_new_tokens,
        chat_template="always",
        ppl_model="none",
        seed=a.seed,
    ).metrics["models"]
    for name in ("base", "rrhf", "grpo"):
        m = metrics[name]
        arms.setdefault(name, {}).update(
            {k: m.get(k) for k in ("mean_reward", "ci_low", "ci_high", "n")}
        )

    def f(v, spec):
        return format(v, spec) if isinstance(v, int | float) and math.isfinite(v) else "-"

    print("\n| arm | held-out reward (95% CI) | sampled | steps | wall s | peak MiB | models |")
    print("|---|---|---|---|---|---|---|")
    for name in ("base", "rrhf", "grpo"):
        r = arms[name]
        print(
            f"| {name} | {f(r['mean_reward'], '+.3f')} [{f(r['ci_low'], '+.3f')}, "
            f"{f(r['ci_high'], '+.3f')}] | {r.get('sampled_responses', '-')} | "
            f"{r.get('optimizer_steps', '-')} | {f(r.get('wall_s'), '.0f')} | "
            f"{f(r.get('peak_memory_mb'), '.0f')} | {r.get('models_in_memory', '-')} |"
        )
    ratio = {
        "wall_grpo_over_rrhf": arms["grpo"]["wall_s"] / arms["rrhf"]["wall_s"],
        "peak_memory_grpo_over_rrhf": arms["grpo"]["peak_memory_mb"]
        / arms["rrhf"]["peak_memory_mb"],
    }
    print(
        f"GRPO / RRHF: wall time {ratio['wall_grpo_over_rrhf']:.2f}x, "
        f"peak memory {ratio['peak_memory_grpo_over_rrhf']:.2f}x"
    )
    if a.tiny:  # a wiring check: its numbers mean nothing, they are not recorded
        return
    import torch

    append_record(
        ROOT / "bench" / "results" / "rl_reference.jsonl",
        "rl_reference",
        {
            "machine": machine_info("cuda" if torch.cuda.is_available() else "cpu"),
            "model": "tiny-random-llama" if a.tiny else a.model,
            "settings": {
                k: getattr(a, k)
                for k in ("prompts", "heldout", "max_new_tokens", "learning_rate", "rrhf_epochs")
            }
            | {"beta": a.beta, "seed": a.seed, "k": K},
            "arms": arms,
            "ratios": ratio,
        },
    )


if __name__ == "__main__":
    main()
