"""`rankalign demo`: RRHF end to end, offline, on the embedded SmolLM2-135M-Instruct.

A miniature of the RRHF paper's IMDB positive-sentiment experiment (Appendix C): prompts ask for
short movie opinions whose sentiment varies; the reward is the vaderSentiment compound score.

    sample (diverse beam + top-p, paper DP/SP scaled down) -> score (sentiment)
      -> train RRHF, and SFT-on-best (RRHF without the ranking loss: the paper's Table 7 ablation)
      -> evaluate base vs RRHF vs SFT-on-best on held-out prompts -> report with plots

Each stage is the same command a user runs (`rankalign sample|score|train|evaluate`) and is
skipped when its output is already complete, so a killed demo resumes where it stopped.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from rankalign import api
from rankalign.config import dump_config, parse_config
from rankalign.data import load_lists, write_jsonl
from rankalign.errors import UserError
from rankalign.report import number

# (quick, full) sizes: --quick finishes in about 5 minutes on 2 CPU cores
SIZES = {
    "train_prompts": (32, 80),
    "heldout_prompts": (40, 40),
    "max_new_tokens": (24, 32),
    "epochs": (2, 2),
}


# the paper's DP (diverse beam) and SP (top-p) sources, scaled down: 6 candidates per prompt
SOURCES = [
    {
        "kind": "policy",
        "strategy": "diverse-beam",
        "num": 4,
        "num_beams": 4,
        "num_beam_groups": 4,
        "diversity_penalty": 1.0,
        "temperature": 0.8,
    },
    {"kind": "policy", "strategy": "top-p", "num": 2, "top_p": 1.0, "temperature": 0.8},
]


@dataclass
class DemoConfig:
    out: str = field(default="runs/demo", metadata={"help": "output folder (rerun to resume)"})
    model: str = field(
        default="smollm2", metadata={"help": "policy: 'smollm2' (embedded), a folder or a hub name"}
    )
    quick: bool = field(
        default=False, metadata={"help": "the small version (about 5 minutes on 2 CPU cores)"}
    )
    prompts: str | None = field(
        default=None,
        metadata={
            "help": "prompt file with a `split` column (train/heldout); default: the shipped set"
        },
    )
    reward: str = field(default="sentiment", metadata={"help": "reward spec of `rankalign score`"})
    train_prompts: int | None = field(
        default=None,
        metadata={"help": "training prompts (default: 80; --quick 32)", "check": ">= 1"},
    )
    heldout_prompts: int | None = field(
        default=None, metadata={"help": "held-out prompts evaluated (default: 40)", "check": ">= 1"}
    )
    max_new_tokens: int | None = field(
        default=None,
        metadata={"help": "tokens per response (default: 32; --quick 24)", "check": ">= 1"},
    )
    epochs: float | None = field(
        default=None, metadata={"help": "training epochs (default: 2)", "check": "> 0"}
    )
    # full fine-tuning: on 2 CPU cores a step took 17 s against 30 s with LoRA (all-linear, r=16)
    use_lora: bool = field(
        default=False, metadata={"help": "train LoRA adapters instead of every weight"}
    )
    learning_rate: float = field(
        default=5e-5, metadata={"help": "training learning rate", "check": "> 0"}
    )
    # token-mean SFT term (as the released RRHF code, without its padded-length bug): with the
    # sum, the SFT term outweighs the ranking term and RRHF ends up no better than SFT-on-best
    sft_reduction: str = field(
        default="mean",
        metadata={"help": "RRHF's SFT term: mean | sum (paper Eq. 4)", "choices": ("mean", "sum")},
    )
    batch_size: int = field(
        default=4, metadata={"help": "lists per optimizer step", "check": ">= 1"}
    )
    seed: int = field(default=42, metadata={"help": "seed of every stage", "check": ">= 0"})

    def __post_init__(self):
        if self.sft_reduction not in ("mean", "sum"):
            raise ValueError(f"sft_reduction must be mean or sum, got '{self.sft_reduction}'")
        i = 0 if self.quick else 1
        for name, sizes in SIZES.items():
            if getattr(self, name) is None:
                setattr(self, name, sizes[i])


def _stage(n: int, total: int, title: str) -> float:
    print(f"\n[{n}/{total}] {title}", file=sys.stderr, flush=True)
    return time.time()


def read_prompts(cfg: DemoConfig) -> tuple[list[dict], list[dict]]:
    """The train and held-out prompts (every row of the file checked); writes nothing."""
    src = cfg.prompts or str(resources.files("rankalign") / "assets" / "demo_prompts.jsonl")
    rows = load_lists(src).rows
    train = [r for r in rows if r.get("split", "train") == "train"][: cfg.train_prompts]
    held = [r for r in rows if r.get("split") == "heldout"][: cfg.heldout_prompts]
    if not train or not held:
        raise UserError("the demo prompts need rows with split 'train' and 'heldout'", file=src)
    return train, held


def split_prompts(parts: tuple[list[dict], list[dict]], out: Path) -> tuple[Path, Path]:
    """Write the (train, held-out) prompts that `validate` read into the run folder."""
    paths = out / "prompts_train.jsonl", out / "prompts_heldout.jsonl"
    for path, part in zip(paths, parts):
        write_jsonl(path, [{"id": r["id"], "prompt": r["prompt"]} for r in part])
    return paths


def _train_options(cfg: DemoConfig, scored: Path) -> dict:
    return {
        "data": str(scored),
        "model": cfg.model,
        "chat_template": "always",
        "max_length": 160,
        "num_train_epochs": cfg.epochs,
        "learning_rate": cfg.learning_rate,
        "per_device_train_batch_size": cfg.batch_size,
        "save_strategy": "no",
        "logging_steps": 1,
        "seed": cfg.seed,
        "use_lora": cfg.use_lora,
        "warmup_steps": 0.1,
        "sft_reduction": cfg.sft_reduction,
    }


def validate(cfg: DemoConfig) -> tuple[list[dict], list[dict]]:
    """Every check of a demo run; writes nothing: the output folder, the prompts, the reward
    spec, the training options (parsed by `rankalign train`'s parser) and the model (its files
    and tokenizer; the embedded default is converted once into the cache)."""
    from rankalign.data import check_output_location
    from rankalign.models import load_tokenizer, resolve_model
    from rankalign.scoring.rewards.registry import check_reward_models, parse_reward_specs

    out = Path(cfg.out)
    check_output_location(
        out,
        folder=True,
        files=[out / n for n in ("demo_config.yaml", "prompts_train.jsonl", "candidates.jsonl")],
    )
    specs = parse_reward_specs([cfg.reward])
    train, held = read_prompts(cfg)
    try:
        api.train_config(**_train_options(cfg, out / "scored.jsonl"), output_dir=str(out))
    except UserError as e:
        raise UserError(f"the train stage would refuse the demo's options: {e}") from None
    check_reward_models(specs, defaults={})  # no --allow_pickle here: safetensors only
    path = resolve_model(cfg.model)
    tokenizer = load_tokenizer(path)
    if not getattr(tokenizer, "chat_template", None):  # the demo's stages use chat_template: always
        raise UserError("the demo needs a model whose tokenizer has a chat template", file=path)
    return train, held


def run(cfg: DemoConfig) -> dict:
    prompts = validate(cfg)  # validate, then write
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(out / "demo_config.yaml", {"demo": cfg})
    started = time.time()
    total = 6
    train_prompts, heldout = split_prompts(prompts, out)

    candidates, scored = out / "candidates.jsonl", out / "scored.jsonl"
    _stage(
        1,
        total,
        f"sample: {cfg.train_prompts} prompts, diverse beam (4 groups) + top-p from {cfg.model}",
    )
    if not candidates.is_file():
        api.sample(
            prompts=str(train_prompts),
            out=str(candidates),
            model=cfg.model,
            sources=SOURCES,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=8,
            chat_template="always",
            seed=cfg.seed,
        )

    _stage(2, total, f"score: reward {cfg.reward}")
    if not scored.is_file():
        api.score(input=str(candidates), out=str(scored), reward=[cfg.reward])

    train_options = _train_options(cfg, scored)
    runs = {
        "rrhf": {"loss": "rrhf"},
        # the paper's Table 7 ablation: RRHF without the ranking loss = SFT on each list's best
        "sft-best": {"loss": "rrhf", "rank_weight": 0.0},
    }
    for n, (name, extra) in enumerate(runs.items(), start=3):
        _stage(n, total, f"train {name}")
        if not (out / name / "train_summary.json").is_file():  # else: unfinished, retrained
            api.train(**train_options, **extra, output_dir=str(out / name), overwrite=True)

    _stage(5, total, f"evaluate base vs rrhf vs sft-best on {cfg.heldout_prompts} held-out prompts")
    metrics = api.evaluate(
        model=[f"base={cfg.model}", f"rrhf={out / 'rrhf'}", f"sft-best={out / 'sft-best'}"],
        prompts=str(heldout),
        reward=[cfg.reward],
        out=str(out / "report"),
        samples=[str(scored)],
        train_runs=[str(out / "rrhf"), str(out / "sft-best")],
        max_new_tokens=cfg.max_new_tokens,
        chat_template="always",
        seed=cfg.seed,
    ).metrics
    _stage(6, total, "summary")
    table = summary_table(metrics)
    print(table)
    minutes = (time.time() - started) / 60
    print(f"\nreport: {out / 'report' / 'report.html'}  ({minutes:.1f} min)")
    return metrics


def summary_table(metrics: dict) -> str:
    lines = ["| model | mean reward (95% CI) | perplexity | mean length |", "|---|---|---|---|"]
    for name, m in metrics["models"].items():
        reward = ", ".join(number(m.get(k), "+.3f") for k in ("ci_low", "ci_high"))
        lines.append(
            f"| {name} | {number(m.get('mean_reward'), '+.3f')} ({reward}) | "
            f"{number(m.get('perplexity'), '.2f')} | {number(m.get('mean_length'), '.1f')} |"
        )
    return "\n".join(lines)


def demo_config(config=None, *, argv: tuple | list = (), **options) -> DemoConfig:
    """The checked options of `rankalign demo` (nothing runs, nothing is written)."""
    argv, options = api.config_inputs(config, options, argv)
    return parse_config(argv, (DemoConfig,), prog="rankalign demo", options=options)[0]


def demo(config=None, *, argv: tuple | list = (), **options) -> api.Result:
    """The embedded default end to end, offline: sample, score, train RRHF and SFT-on-best,
    evaluate them against the base model; the report is in `out/report`."""
    cfg = demo_config(config, argv=argv, **options)
    return api.Result("demo", Path(cfg.out), run(cfg), cfg)
