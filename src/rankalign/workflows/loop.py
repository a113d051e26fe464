"""`rankalign loop`: online iterative alignment (RLHF Workflow Algorithm 1; RRHF IP-n / OP-k).

    rankalign loop --config examples/loop-tiny.yaml

Iteration t (folder `iter-t/`) takes its slice of the prompt set, samples `num_samples` responses
per prompt from the CURRENT policy (the last iteration's model), scores them, builds training
data, and trains starting from the current policy. The reference model of every iteration is
the initial policy pi_0 (RLHF Workflow §3.3). Before the first iteration and after each one the
policy is evaluated on held-out prompts (greedy generations, mean reward with a 95% interval).

Data builders (`builder`):
- `best-worst`: one pair per prompt, best vs worst sample; prompts where they tie are dropped
  (counted in metrics as `dropped_ties`), as RLHF Workflow does;
- `all-pairs`: every strictly ordered pair of a prompt's samples, one row each;
- `list`: the whole ranked list (the listwise losses: rrhf, pro, listwise-dpo, ...);
- `rso`: statistical rejection sampling (RSO, thesis §2.6): two samples accepted with
  probability exp((r - r_max) / rso_beta), paired by reward;
- `raft`: best-of-n filtering: each prompt's best sample (train with loss sft/raft).
Ranking may use a length penalty r - char_penalty * |y| (characters; RLHF Workflow eq. 8).

RRHF sampling policies (paper Table 1): IP-n is this loop with `builder: list`, `loss: rrhf`;
OP-k is `steps_per_iteration: k` (resample from the online policy every k optimizer steps);
OP-k+KL adds `kl_coef: 0.01` (reward minus kl_coef * log(pi/pi_ref) of each sample, paper §5).

Every stage is skipped when its output is complete (outputs are written atomically), so a run
killed anywhere resumes where it stopped and, seeded, produces the same files.
"""

from __future__ import annotations

import json
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rankalign import api
from rankalign.config import dump_config, option, parse_config
from rankalign.data import load_lists, write_json, write_jsonl
from rankalign.errors import UserError
from rankalign.losses import NEEDS_REFERENCE
from rankalign.metrics import reward_table
from rankalign.report import number
from rankalign.tokenization import CHAT_TEMPLATE_MODES

BUILDERS = ("best-worst", "all-pairs", "list", "rso", "raft")
KEEP_MODELS = ("last", "all")
# weight files of a saved model (top level only: a LoRA run's adapter/ folder is kept)
WEIGHT_PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model*.bin.index.json",
)


@dataclass
class LoopConfig:
    prompts: str | None = option(None, help="prompt set (any layout); split across iterations")
    out: str = option("runs/loop", help="run folder (rerun to resume)")
    model: str = option("smollm2", help="initial policy pi_0 (also the reference)")
    iterations: int = option(3, ">= 1", "sample -> score -> train rounds")
    prompts_per_iteration: int | None = option(None, ">= 1", "default: the prompt set split evenly")
    heldout: str | None = option(None, help="held-out prompts for the per-iteration reward")
    max_heldout: int | None = option(None, ">= 1", "use the first N held-out prompts")
    # sampling (through `rankalign sample`)
    num_samples: int = option(8, ">= 1", "responses sampled per prompt")
    temperature: float = option(0.8, "> 0", "sampling temperature")
    top_p: float = option(1.0, "(0, 1]", "nucleus sampling: keep this probability mass")
    strategy: str = option("sample", help="sample | diverse-beam (RRHF DP)")
    max_new_tokens: int = option(128, ">= 1", "tokens generated per response")
    chat_template: str = option(
        "auto", help=" | ".join(CHAT_TEMPLATE_MODES), choices=CHAT_TEMPLATE_MODES
    )
    backend: str = option(
        "hf", help="generation backend of sampling and the held-out evaluation: hf | vllm (GPU)"
    )
    # scoring (through `rankalign score`)
    reward: list[str] = field(
        default_factory=lambda: ["sentiment"],
        metadata={"help": "reward specs of `rankalign score` (summed)"},
    )
    char_penalty: float = option(
        0.0, help="lambda in r - lambda*|y| (|y| in characters) when ranking a list's samples"
    )
    kl_coef: float = option(
        0.0, ">= 0", "OP-k+KL: reward - kl_coef*log(pi/pi_ref) (paper §5: 0.01)"
    )
    # data and training (through `rankalign train`)
    builder: str = option("best-worst", help=" | ".join(BUILDERS), choices=BUILDERS)
    rso_beta: float = option(0.5, "> 0", "rso builder: temperature of the rejection sampling")
    loss: str = option("dpo", help="`rankalign train` loss of each iteration")
    hybrid: bool = option(False, help="train each iteration on all data so far")
    offline_data: str | None = option(None, help="ranked lists added to every iteration (hybrid)")
    steps_per_iteration: int | None = option(None, ">= 1", "OP-k: optimizer steps per iteration")
    epochs: float = option(1.0, "> 0", "training epochs per iteration")
    learning_rate: float = option(5e-7, "> 0", "training learning rate")
    batch_size: int = option(4, ">= 1", "lists per training step (per device)")
    beta: float | None = option(
        None, "> 0", "the loss's beta (default: the loss's own, see train --help)"
    )
    max_length: int = option(512, ">= 2", "prompt + response tokens in training")
    use_lora: bool = option(False, help="train LoRA adapters instead of every weight")
    keep_models: str = option(
        "last",
        help="last: only the newest iteration's model weights stay (earlier ones are removed once "
        "the next iteration has trained; LoRA adapters, configs and logs stay) | all: every "
        "iteration's",
        choices=KEEP_MODELS,
    )
    train_args: list[str] = field(
        default_factory=list, metadata={"help": "extra `rankalign train` flags"}
    )
    seed: int = option(42, ">= 0", "seed of sampling, prompt split and training")

    def __post_init__(self):
        if self.builder not in BUILDERS:
            raise ValueError(f"unknown builder '{self.builder}' (use {', '.join(BUILDERS)})")
        if self.builder in ("best-worst", "all-pairs", "rso") and self.num_samples < 2:
            raise ValueError(f"builder {self.builder} needs num_samples >= 2")
        if self.chat_template not in CHAT_TEMPLATE_MODES:
            raise ValueError(
                f"chat_template must be one of {', '.join(CHAT_TEMPLATE_MODES)}, "
                f"got '{self.chat_template}'"
            )
        if self.keep_models not in KEEP_MODELS:
            raise ValueError(
                f"keep_models must be one of {', '.join(KEEP_MODELS)}, got '{self.keep_models}'"
            )
        if isinstance(self.reward, str | dict):
            self.reward = [self.reward]
        if isinstance(self.train_args, str):
            self.train_args = self.train_args.split()


# ----------------------------------------------------------------------------- data builders


def ranking_scores(row: dict, char_penalty: float) -> list[float]:
    return [s - char_penalty * len(r) for s, r in zip(row["scores"], row["responses"])]


def build_training_rows(
    rows: list[dict], cfg: LoopConfig, iteration: int
) -> tuple[list[dict], dict]:
    """Turn scored samples into training rows with the configured builder; count what is dropped."""
    out, stats = [], {"prompts": len(rows), "dropped_ties": 0, "dropped_too_few": 0}
    for row in rows:
        scores = ranking_scores(row, cfg.char_penalty)
        resp, k = row["responses"], len(row["responses"])
        base = {"prompt": row["prompt"]}
        if k == 0 or (k < 2 and cfg.builder != "raft"):
            stats["dropped_too_few"] += 1
            continue
        order = sorted(range(k), key=lambda i: -scores[i])  # best first (stable on ties)
        if cfg.builder == "raft":
            out.append(
                {
                    **base,
                    "id": row["id"],
                    "responses": [resp[order[0]]],
                    "scores": [scores[order[0]]],
                }
            )
            continue
        if scores[order[0]] == scores[order[-1]]:
            stats["dropped_ties"] += 1
            continue
        if cfg.builder == "best-worst":
            b, w = order[0], order[-1]
            out.append(
                {
                    **base,
                    "id": row["id"],
                    "responses": [resp[b], resp[w]],
                    "scores": [scores[b], scores[w]],
                }
            )
        elif cfg.builder == "list":
            out.append({**base, "id": row["id"], "responses": resp, "scores": scores})
        elif cfg.builder == "all-pairs":
            n = 0
            for a in range(k):
                for b in range(k):
                    if scores[a] > scores[b]:
                        out.append(
                            {
                                **base,
                                "id": f"{row['id']}#{n}",
                                "responses": [resp[a], resp[b]],
                                "scores": [scores[a], scores[b]],
                            }
                        )
                        n += 1
        elif cfg.builder == "rso":
            pair = rso_pair(
                scores, cfg.rso_beta, random.Random(f"{cfg.seed}|{iteration}|{row['id']}")
            )
            if pair is None:
                stats["dropped_ties"] += 1
                continue
            a, b = pair
            out.append(
                {
                    **base,
                    "id": row["id"],
                    "responses": [resp[a], resp[b]],
                    "scores": [scores[a], scores[b]],
                }
            )
    stats["training_rows"] = len(out)
    return out, stats


def rso_pair(
    scores: list[float], beta: float, rng: random.Random, max_passes: int = 100
) -> tuple[int, int] | None:
    """Statistical rejection sampling (Liu et al. 2023): accept candidates with probability
    exp((r - r_max) / beta) until two are accepted (without replacement); order them by reward."""
    if len(scores) < 2:
        return None
    r_max, accepted, pool, passes = max(scores), [], [], 0
    while len(accepted) < 2:
        if not pool:  # a pass over the candidates is done: the rejected ones get another chance
            passes += 1
            if passes > max_passes:  # the others are far below the best: no second sample
                return None
            pool = [j for j in range(len(scores)) if j not in accepted]
        i = pool.pop(rng.randrange(len(pool)))
        if rng.random() < math.exp((scores[i] - r_max) / beta):
            accepted.append(i)
            pool = [j for j in pool if j != i]
    if scores[accepted[0]] == scores[accepted[1]]:
        return None
    a, b = sorted(accepted, key=lambda i: -scores[i])
    return a, b


# ----------------------------------------------------------------------------- stages


def _done(path: Path) -> bool:
    return path.is_file()


def iteration_stats(rows: list[dict]) -> dict:
    """An iteration's samples: RRHF Table 6 reward columns (`metrics.reward_table`) and length."""
    table = reward_table([(r, v) for r, row in enumerate(rows) for v in row["scores"]])
    lengths = [len(x) for r in rows for x in r["responses"]]
    return {
        "mean_reward": table["mean"],
        "std_reward": table["std"],
        "max_reward": table["max"],
        "mean_response_chars": sum(lengths) / len(lengths),
    }


def add_kl_penalty(scored: Path, out: Path, policy: str, reference: str, cfg: LoopConfig) -> None:
    """OP-k+KL (RRHF §5): r_i - coef * (log pi(y_i|x) - log pi_ref(y_i|x)), sequence log-probs."""
    from rankalign.logprobs import rows_logps
    from rankalign.models import load_causal_lm, load_tokenizer, resolve_model

    rows = load_lists(scored).rows
    tok = load_tokenizer(resolve_model(policy))
    logps = [
        rows_logps(
            load_causal_lm(resolve_model(m)),
            tok,
            [r["prompt"] for r in rows],
            [r["responses"] for r in rows],
            batch_size=8,
            desc=f"kl: {name}",
            max_length=cfg.max_length,
            min_response_tokens=64,  # as `rankalign train` encodes lists
            chat_template=cfg.chat_template,
        )[0]
        for name, m in (("policy", policy), ("reference", reference))
    ]
    for row, lp, lr in zip(rows, *logps):
        row.setdefault("score_parts", {})["kl"] = [a - b for a, b in zip(lp, lr)]
        row["scores"] = [s - cfg.kl_coef * (a - b) for s, a, b in zip(row["scores"], lp, lr)]
    write_jsonl(out, rows)


def _heldout_options(cfg: LoopConfig, out: str) -> dict:
    return {
        "prompts": cfg.heldout,
        "reward": list(cfg.reward),
        "out": out,
        "max_new_tokens": cfg.max_new_tokens,
        "chat_template": cfg.chat_template,
        "seed": cfg.seed,
        "max_rows": cfg.max_heldout,
        "ppl_model": "none",
        "backend": cfg.backend,
    }


def heldout_reward(model: str, cfg: LoopConfig, out: Path) -> dict:
    m = api.evaluate(model=[f"policy={model}"], **_heldout_options(cfg, str(out))).metrics
    r = m["models"]["policy"]
    return {"mean_reward": r["mean_reward"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]}


def _sample_options(cfg: LoopConfig, it: Path, model: str, t: int) -> dict:
    source = {
        "kind": "policy",
        "strategy": cfg.strategy,
        "num": cfg.num_samples,
        "temperature": cfg.temperature,
    }
    if cfg.strategy == "sample":
        source["top_p"] = cfg.top_p
    return {
        "prompts": str(it / "prompts.jsonl"),
        "out": str(it / "samples.jsonl"),
        "model": model,
        "sources": [source],
        "max_new_tokens": cfg.max_new_tokens,
        "chat_template": cfg.chat_template,
        "backend": cfg.backend,
        "seed": cfg.seed + t,
    }


def _score_options(cfg: LoopConfig, it: Path, raw: Path) -> dict:
    return {"input": str(it / "samples.jsonl"), "out": str(raw), "reward": list(cfg.reward)}


def _train_options(cfg: LoopConfig, data: Path, model: str, model_dir: Path, pi0: str) -> dict:
    """`rankalign train` options of one iteration (`cfg.train_args` go on top, as flags)."""
    options = {
        "data": str(data),
        "model": model,
        "loss": cfg.loss,
        "output_dir": str(model_dir),
        "learning_rate": cfg.learning_rate,
        "per_device_train_batch_size": cfg.batch_size,
        "num_train_epochs": cfg.epochs,
        "max_length": cfg.max_length,
        "chat_template": cfg.chat_template,
        "save_strategy": "no",
        "seed": cfg.seed,
        "use_lora": cfg.use_lora,
        "ref_cache_dir": str(Path(cfg.out) / "ref_cache"),
        # an iteration without train_summary.json did not finish: its folder is retrained
        "overwrite": True,
    }
    if cfg.loss in NEEDS_REFERENCE:
        options["ref_model"] = pi0  # reference = pi_0 in every iteration
    if cfg.beta is not None:
        options["beta"] = cfg.beta
    if cfg.steps_per_iteration:
        options["max_steps"] = cfg.steps_per_iteration
    return options


def validate(cfg: LoopConfig) -> tuple[list[dict], str]:
    """Every check of a loop run; writes nothing. Returns (prompts, resolved pi_0).

    The loop's options (parse_config), the output folder, every row of the prompt, held-out and
    offline files, the reward specs and their models, the options each stage will get (parsed by
    the stage's own parser, so `train_args` and the loss are checked now, not at iteration 1's
    training; the held-out evaluation's checked as evaluate checks them) and the initial policy
    (its files and tokenizer)."""
    from rankalign.data import check_output_location
    from rankalign.models import load_tokenizer, resolve_model
    from rankalign.scoring.rewards.registry import check_reward_models, parse_reward_specs

    if not cfg.prompts:
        raise UserError("no prompts: pass --prompts FILE (or `prompts:` in the config)")
    out = Path(cfg.out)
    check_output_location(
        out,
        folder=True,
        files=[out / n for n in ("loop_config.yaml", "metrics.json", "loop.png")],
    )
    for i, r in enumerate(cfg.reward):
        if not isinstance(r, str):
            raise UserError(
                "the loop's rewards are spec strings (kind:key=value,...), got a "
                f"{type(r).__name__}",
                field=f"reward[{i}]",
            )
    specs = parse_reward_specs(cfg.reward)
    prompts = load_lists(cfg.prompts).rows
    if cfg.heldout:
        load_lists(cfg.heldout)
    if cfg.offline_data:
        load_lists(cfg.offline_data, require_scores=True)
    # the stages' options as the loop passes them (iteration 1's paths; nothing is read)
    it, model = out / "iter-1", str(cfg.model)
    train_options = _train_options(cfg, it / "d.jsonl", model, it, model)
    stages = [
        ("sample", lambda: api.sample_config(**_sample_options(cfg, it, model, 1))),
        ("score", lambda: api.score_config(**_score_options(cfg, it, it / "scores.jsonl"))),
        ("train", lambda: api.train_config(argv=cfg.train_args, **train_options)),
    ]
    if cfg.heldout:
        heldout = _heldout_options(cfg, str(out / "heldout"))
        stages.append(("evaluate", lambda: api.evaluate_config(**heldout)))
    hints = {
        "sample": " (from strategy, num_samples, temperature, top_p, max_new_tokens, chat_template, "
        "backend)",
        "score": " (from reward)",
        "train": " (from loss, learning_rate, batch_size, epochs, beta, max_length, train_args)",
        "evaluate": " (from heldout, max_heldout, max_new_tokens, chat_template, seed, backend)",
    }
    for name, parse in stages:
        try:
            parse()
        except UserError as e:
            raise UserError(
                f"the {name} stage would refuse the loop's options: {e}{hints[name]}"
            ) from None
    check_reward_models(specs, defaults={})  # no --allow_pickle here: safetensors only
    pi0 = resolve_model(cfg.model)  # the reference of every iteration
    load_tokenizer(pi0)
    return prompts, pi0


def run(cfg: LoopConfig) -> dict:
    """Run (or resume) the loop; returns the summary written to OUT/metrics.json."""
    prompts, pi0 = validate(cfg)  # validate, then write
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(out / "loop_config.yaml", {"loop": cfg})
    per = cfg.prompts_per_iteration or math.ceil(len(prompts) / cfg.iterations)
    current = pi0
    history: list[Path] = []
    all_metrics = []
    if cfg.heldout:
        base = out / "iter-0-heldout.json"
        if not _done(base):
            write_json(base, heldout_reward(current, cfg, out / "heldout" / "initial"))
        initial = json.loads(base.read_text())
    for t in range(1, cfg.iterations + 1):
        it = out / f"iter-{t}"
        it.mkdir(exist_ok=True)
        print(f"\n[loop] iteration {t}/{cfg.iterations}", file=sys.stderr, flush=True)
        chunk = [prompts[(i + (t - 1) * per) % len(prompts)] for i in range(per)]  # cycles for OP-k
        if not _done(it / "prompts.jsonl"):
            write_jsonl(
                it / "prompts.jsonl", [{"id": f"{r['id']}", "prompt": r["prompt"]} for r in chunk]
            )
        if not _done(it / "samples.jsonl"):
            api.sample(**_sample_options(cfg, it, current, t))
        raw = it / ("scores.raw.jsonl" if cfg.kl_coef else "scores.jsonl")
        if not _done(raw):
            api.score(**_score_options(cfg, it, raw))
        if cfg.kl_coef and not _done(it / "scores.jsonl"):
            add_kl_penalty(raw, it / "scores.jsonl", current, pi0, cfg)
        scored = load_lists(it / "scores.jsonl", require_scores=True).rows
        rows, stats = build_training_rows(scored, cfg, t)
        if not _done(it / "train_data.jsonl"):
            write_jsonl(it / "train_data.jsonl", rows)
        data = it / "train_data.jsonl"
        history.append(data)
        if cfg.hybrid or cfg.offline_data:
            data = it / "train_data_hybrid.jsonl"
            if not _done(data):
                merged = [
                    r for h in (history if cfg.hybrid else history[-1:]) for r in load_lists(h).rows
                ]
                if cfg.offline_data:
                    merged += load_lists(cfg.offline_data, require_scores=True).rows
                write_jsonl(data, [dict(r, id=f"{i:07d}-{r['id']}") for i, r in enumerate(merged)])
        model_dir = it / "model"
        if not _done(model_dir / "train_summary.json"):
            api.train(argv=cfg.train_args, **_train_options(cfg, data, current, model_dir, pi0))
        if cfg.keep_models == "last" and t > 1:  # iteration t no longer needs t-1's weights
            drop_weights(out / f"iter-{t - 1}" / "model")
        current = str(model_dir)
        metrics_path = it / "metrics.json"
        if not _done(metrics_path):
            metrics = {"iteration": t, **iteration_stats(scored), **stats}
            if cfg.heldout:
                metrics["heldout_reward_before"] = (
                    initial if t == 1 else all_metrics[-1]["heldout"]
                )["mean_reward"]
                metrics["heldout"] = heldout_reward(current, cfg, it / "heldout")
                metrics["heldout_reward"] = metrics["heldout"]["mean_reward"]
            write_json(metrics_path, metrics)
        all_metrics.append(json.loads(metrics_path.read_text()))
    summary = {
        "initial_heldout": initial if cfg.heldout else None,
        "iterations": all_metrics,
        "final_model": current,
        "reference_model": pi0,
    }
    write_json(out / "metrics.json", summary)
    plot_iterations(all_metrics, out / "loop.png", initial if cfg.heldout else None)
    return summary


def drop_weights(model_dir: Path) -> list[str]:
    """Remove a finished iteration's weight files (`keep_models: last`); returns their names.

    Called only once the next iteration's training is complete (its train_summary.json exists),
    so a resumed run never needs them: every stage that read this model is done and skipped.
    Its config, tokenizer, logs and LoRA adapter stay (the adapters, applied in order to pi_0,
    rebuild any iteration)."""
    removed = sorted({f for pattern in WEIGHT_PATTERNS for f in model_dir.glob(pattern)})
    for f in removed:
        f.unlink()
    if removed:
        print(
            f"[loop] removed {model_dir}'s weights ({len(removed)} files; keep_models: last)",
            file=sys.stderr,
            flush=True,
        )
    return [f.name for f in removed]


def plot_iterations(metrics: list[dict], path: Path, initial: dict | None = None) -> None:
    """loop.png: the per-iteration metrics, with iteration 0 (the base policy's held-out reward,
    `initial`) first, so the plot shows the change the loop made (`report.loop_panels`)."""
    try:
        from rankalign.report import plot_loop
    except ImportError:
        return
    plot_loop(with_initial(metrics, initial), path)


def with_initial(metrics: list[dict], initial: dict | None) -> list[dict]:
    """The per-iteration metrics preceded by iteration 0 when the base policy was evaluated."""
    return ([{"iteration": 0, "heldout": initial}] if initial else []) + list(metrics)


def loop_config(config=None, *, argv: tuple | list = (), **options) -> LoopConfig:
    """The checked options of `rankalign loop` (nothing runs, nothing is written)."""
    argv, options = api.config_inputs(config, options, argv)
    return parse_config(argv, (LoopConfig,), prog="rankalign loop", options=options)[0]


def loop(config=None, *, argv: tuple | list = (), **options) -> api.Result:
    """Online iterative alignment (sample -> score -> train, `iterations` times) in `out`;
    resumes a killed run. `result.metrics["iterations"]`: one dict per iteration."""
    cfg = loop_config(config, argv=argv, **options)
    summary = run(cfg)
    return api.Result(
        "loop",
        Path(cfg.out),
        {"iterations": summary["iterations"], "initial_heldout": summary["initial_heldout"]},
        cfg,
    )


def _interval(m: dict) -> str:
    return (
        f"{number(m.get('mean_reward'), '+.3f')} "
        f"[{number(m.get('ci_low'), '+.3f')}, {number(m.get('ci_high'), '+.3f')}]"
    )


def summary_lines(metrics: dict) -> list[str]:
    """The console summary: the base policy's held-out reward (iteration 0) first, then each
    iteration's, all with their 95% intervals, so a change can be read against its noise."""
    lines = []
    if metrics.get("initial_heldout"):
        lines.append(f"iteration 0 (base policy): held-out {_interval(metrics['initial_heldout'])}")
    for m in metrics["iterations"]:
        line = (
            f"iteration {m['iteration']}: sample reward mean {number(m['mean_reward'], '+.3f')} "
            f"best per prompt {number(m['max_reward'], '+.3f')}"
        )
        if isinstance(m.get("heldout"), dict):
            line += f"; held-out {_interval(m['heldout'])}"
        elif "heldout_reward" in m:
            line += f"; held-out {number(m['heldout_reward'], '+.3f')}"
        lines.append(line + f"; dropped ties {m['dropped_ties']}")
    if metrics.get("initial_heldout") and metrics["iterations"]:
        last = metrics["iterations"][-1].get("heldout") or {}
        base = metrics["initial_heldout"].get("mean_reward")
        if _finite(last.get("mean_reward")) and _finite(base):
            lines.append(
                f"held-out change over the base policy: {last['mean_reward'] - base:+.3f} "
                "(compare the intervals above)"
            )
    return lines


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def print_summary(result: api.Result) -> None:
    for line in summary_lines(result.metrics):
        print(line)
    print(f"run: {result.output}  (plot: {result.output / 'loop.png'})")
