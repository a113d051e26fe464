"""`rankalign compare`: which method wins? Every method trained on the same scored candidates,
side by side on the same held-out prompts.

    rankalign compare --config examples/compare-demo.yaml

The seeds are comparisons: RRHF Tables 2-7 (RRHF vs best-of-n, with and without the ranking
loss), the thesis proposal's listwise-vs-pairwise question, RLHF Workflow Table 4 (iterative vs
offline). One run:

    sample once (or take `data`) -> score
      -> per method and seed: train from the same start model, the same `max_steps` optimizer
         steps, the same seed; checkpoints every `eval_every` steps
      -> evaluate every checkpoint and the final model on the same held-out prompts (greedy)
      -> compare.json (the table), compare_reward.png, compare_steps.png, compare.md/.html

Methods (`methods`): a list whose entries are a name or a one-key mapping `{name: overrides}`.

- `base`: the start model, untrained; always evaluated (the win-rate reference, step 0).
- a loss of `rankalign train` (rrhf, pro, listwise-dpo, lipo, infonca, nca, dpo, ipo, slic,
  simpo, cpo, sft, raft; `_` may stand for `-`), or any name with `loss: LOSS` in its overrides;
- `sft-best`: RRHF without the ranking loss (`rank_weight: 0`), SFT on each list's best
  response: the RRHF paper's Table 7 ablation;
- `loop: true`: online iterative training (`rankalign loop`, RLHF Workflow Algorithm 1) at the
  same budget: the train prompts split over `iterations`, `num_samples` = the offline
  candidates per prompt (the same number of sampled responses), `max_steps / iterations`
  optimizer steps per iteration (the same number of steps).

Overrides are options of `rankalign train` (or, with `loop: true`, of `rankalign loop`), checked
by that command's parser before anything runs.

Pooling: with `seeds: S` each trained method runs with seeds seed..seed+S-1; the held-out
rewards of all seeds go into one bootstrap interval (n = prompts x seeds) and one win rate
against base (per prompt and seed: reward above, equal to or below base's on that prompt).
Perplexity (under the start model) and mean length are averaged over seeds. Generation is
greedy, so base (untrained, seed-free) is evaluated once.

Measured around each training call, in this process: wall time (`time.perf_counter`), and peak
memory: on CUDA `torch.cuda.max_memory_allocated` (peak_gpu_mb), always the process's peak
resident set (VmHWM from /proc/self/status, reset through /proc/self/clear_refs before the call,
so it is the training call's own peak; it includes the Python and torch runtime, and null with a
note where the kernel does not allow the reset). A loop method's time is the whole loop
(sampling and scoring included: that is its cost).

Resume: a (method, seed) is done when its `result.json` exists (written atomically after its
training and evaluation); a training counts as done when its `train_summary.json` exists. A
killed compare reruns only the unfinished methods.
"""

from __future__ import annotations

import gc
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rankalign import api
from rankalign.config import dump_config, load_yaml_text, option, parse_config
from rankalign.data import load_lists, write_json, write_jsonl
from rankalign.errors import UserError
from rankalign.losses import LOSSES
from rankalign.metrics import bootstrap_ci, win_rate
from rankalign.metrics import compare as verdict
from rankalign.report import number
from rankalign.tokenization import CHAT_TEMPLATE_MODES
from rankalign.workflows import demo as demo_workflow
from rankalign.workflows import loop as loop_workflow

SPECIAL = ("base", "sft-best")
DEFAULT_METHODS = "base,sft-best,rrhf,pro,listwise-dpo,dpo,simpo"
# options compare sets itself for every method: an override of them would break equal budgets
FIXED = ("data", "model", "output_dir", "max_steps", "seed", "save_strategy", "save_steps")


@dataclass
class CompareConfig:
    out: str = option("runs/compare", help="output folder (rerun to resume)")
    model: str = option("smollm2", help="start model of every method (and `base`)")
    methods: list | str | None = option(
        DEFAULT_METHODS,
        help="methods: a list of names or {name: overrides} (YAML), or 'a,b,c'; names: base, "
        "sft-best, a loss of `rankalign train`, or any name with `loss:` / `loop: true`",
    )
    prompts: str | None = option(
        None, help="prompts with a `split` column (train/heldout); default: the demo's set"
    )
    data: str | None = option(
        None, help="scored ranked lists to train on (skips sampling and scoring); needs --heldout"
    )
    heldout: str | None = option(
        None, help="held-out prompts (default: split heldout of --prompts)"
    )
    train_prompts: int = option(24, ">= 1", "train prompts sampled (without --data)")
    heldout_prompts: int = option(24, ">= 1", "held-out prompts evaluated")
    sources: list | str | None = option(
        None,
        help="candidate sources of `rankalign sample` (YAML list); default: the demo's 4 diverse "
        "beam + 2 top-p",
    )
    reward: str = option("sentiment", help="reward spec of `rankalign score`")
    max_new_tokens: int = option(24, ">= 1", "sampling and evaluation")
    chat_template: str = option(
        "always", help=" | ".join(CHAT_TEMPLATE_MODES), choices=CHAT_TEMPLATE_MODES
    )
    max_steps: int = option(8, ">= 1", "optimizer steps of every method (the same budget)")
    eval_every: int | None = option(
        None, ">= 1", "also evaluate checkpoints every N steps (reward vs step); default none"
    )
    learning_rate: float | None = option(
        None, "> 0", "every method's learning rate (default: each loss's; overrides win)"
    )
    batch_size: int = option(4, ">= 1", "lists per optimizer step")
    max_length: int = option(160, ">= 2")
    use_lora: bool = False
    seed: int = option(42, ">= 0")
    seeds: int = option(1, ">= 1", "seeds per method (seed, seed+1, ...), pooled into one CI")
    bootstrap_resamples: int = option(1000, ">= 1")
    keep_models: bool = option(True, help="keep each method's final model (false: deleted)")

    def __post_init__(self):
        if self.chat_template not in CHAT_TEMPLATE_MODES:
            raise ValueError(
                f"chat_template must be one of {', '.join(CHAT_TEMPLATE_MODES)}, "
                f"got '{self.chat_template}'"
            )
        if self.sources is None:
            self.sources = [dict(x) for x in demo_workflow.SOURCES]
        elif isinstance(self.sources, str):
            self.sources = load_yaml_text(self.sources, "sources")
        if not isinstance(self.sources, list) or not all(isinstance(x, dict) for x in self.sources):
            raise ValueError("sources must be a list of source mappings (see rankalign sample)")
        if self.eval_every is not None and self.eval_every >= self.max_steps:
            raise ValueError(f"eval_every ({self.eval_every}) must be below max_steps")


@dataclass
class Method:
    name: str
    kind: str  # base | train | loop
    loss: str | None = None
    overrides: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- methods


def parse_methods(value: Any) -> list[Method]:
    """`methods` (a list of names / one-key mappings, a YAML string or 'a,b,c') -> Methods,
    `base` first. Unknown names and malformed entries are a UserError naming the entry."""
    if isinstance(value, str):
        text = value.strip()
        value = (
            load_yaml_text(text, "methods")
            if text.startswith(("[", "-", "{"))
            else [x.strip() for x in text.split(",") if x.strip()]
        )
    if isinstance(value, dict):  # a mapping in a YAML string: the same as a list of one-key maps
        value = [{k: v} for k, v in value.items()]
    if not isinstance(value, list) or not value:
        raise UserError("expected a non-empty list of methods", field="methods")
    methods: dict[str, Method] = {}
    for i, entry in enumerate(value):
        where = f"methods[{i}]"
        if isinstance(entry, str):
            name, over = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            name, over = next(iter(entry.items()))
            over = {} if over is None else over
        else:
            raise UserError("expected a name or a one-key mapping {name: options}", field=where)
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise UserError(f"bad method name {name!r}", field=where)
        if not isinstance(over, dict):
            raise UserError(f"'{name}': options must be a mapping", field=where)
        if name in methods:
            raise UserError(f"method '{name}' is listed twice", field=where)
        methods[name] = _method(name, dict(over), where)
    base = methods.pop("base", Method("base", "base"))
    return [base, *methods.values()]


def _method(name: str, over: dict, where: str) -> Method:
    fixed = sorted(k for k in over if k in FIXED)
    if fixed:
        raise UserError(
            f"'{name}': {', '.join(fixed)} is set by compare for every method (equal budgets)",
            field=where,
        )
    if name == "base":
        if over:
            raise UserError(
                "'base' takes no options (it is the untrained start model)", field=where
            )
        return Method(name, "base")
    loop = over.pop("loop", False)
    if not isinstance(loop, bool):
        raise UserError(f"'{name}': loop must be true or false", field=where)
    loss = over.pop("loss", None)
    if loss is None:
        if name == "sft-best":
            loss = "rrhf"
            over.setdefault("rank_weight", 0.0)
        elif name.replace("_", "-") in LOSSES:
            loss = name.replace("_", "-")
        elif loop and name.startswith("loop-") and name[5:].replace("_", "-") in LOSSES:
            loss = name[5:].replace("_", "-")
        else:
            raise UserError(
                f"unknown method '{name}': use base, sft-best, a loss ({', '.join(LOSSES)}), "
                "or give it `loss:` (and `loop: true` for online training)",
                field=where,
            )
    if not isinstance(loss, str) or loss.replace("_", "-") not in LOSSES:
        raise UserError(f"'{name}': unknown loss {loss!r} ({', '.join(LOSSES)})", field=where)
    return Method(name, "loop" if loop else "train", loss.replace("_", "-"), over)


def _train_options(cfg: CompareConfig, m: Method, data: Path, out: Path, seed: int) -> dict:
    options = {
        "data": str(data),
        "model": cfg.model,
        "loss": m.loss,
        "output_dir": str(out),
        "overwrite": True,  # a folder left by a killed run is trained again from the start
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.batch_size,
        "max_length": cfg.max_length,
        "chat_template": cfg.chat_template,
        "logging_steps": 1,
        "warmup_steps": 0.1,
        "seed": seed,
        "use_lora": cfg.use_lora,
        "ref_cache_dir": str(Path(cfg.out) / "ref_cache"),  # same data, same start: one cache
        "save_strategy": "steps" if cfg.eval_every else "no",
        "report_to": "none",
    }
    if cfg.eval_every:
        # weights only: the curve needs the model at step N, not the optimizer state to resume
        options.update(save_steps=cfg.eval_every, save_only_model=True)
    if cfg.learning_rate is not None:
        options["learning_rate"] = cfg.learning_rate
    return {**options, **m.overrides}


def candidates_per_prompt(cfg: CompareConfig) -> int:
    """Responses sampled per train prompt (each source's `num`, 1 when not given)."""
    return sum(int(x.get("num", 1)) for x in cfg.sources)


def _loop_options(cfg: CompareConfig, m: Method, prompts: Path, out: Path, seed: int) -> dict:
    from rankalign.training.config import defaults_for

    over = dict(m.overrides)
    iterations = over.pop("iterations", 2)
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise UserError(f"'{m.name}': iterations must be an integer >= 1", field="methods")
    if cfg.max_steps % iterations:
        raise UserError(
            f"'{m.name}': max_steps ({cfg.max_steps}) must split evenly over {iterations} "
            "iterations (the same number of optimizer steps as the offline methods)",
            field="methods",
        )
    lr = cfg.learning_rate or defaults_for(m.loss)["learning_rate"]
    options = {
        "prompts": str(prompts),
        "out": str(out),
        "model": cfg.model,
        "iterations": iterations,
        "num_samples": candidates_per_prompt(cfg),
        "max_new_tokens": cfg.max_new_tokens,
        "chat_template": cfg.chat_template,
        "reward": [cfg.reward],
        "builder": "list",
        "loss": m.loss,
        "steps_per_iteration": cfg.max_steps // iterations,
        "learning_rate": lr,
        "batch_size": cfg.batch_size,
        "max_length": cfg.max_length,
        "use_lora": cfg.use_lora,
        # every iteration's model is evaluated for the reward-vs-step curve (then removed here)
        "keep_models": "all",
        "train_args": ["--warmup_steps", "0.1", "--logging_steps", "1"],
        "seed": seed,
    }
    extra = over.pop("train_args", [])
    if isinstance(extra, str):
        extra = extra.split()
    if not isinstance(extra, list):
        raise UserError(f"'{m.name}': train_args must be a list of flags", field="methods")
    return {**options, **over, "train_args": options["train_args"] + [str(x) for x in extra]}


# ----------------------------------------------------------------------------- validation


def _paths(cfg: CompareConfig) -> dict[str, Path]:
    out = Path(cfg.out)
    return {
        "train_prompts": out / "prompts_train.jsonl",
        "heldout": out / "prompts_heldout.jsonl",
        "candidates": out / "candidates.jsonl",
        "scored": out / "scored.jsonl",
    }


def _sample_options(cfg: CompareConfig, paths: dict) -> dict:
    return {
        "prompts": str(paths["train_prompts"]),
        "out": str(paths["candidates"]),
        "model": cfg.model,
        "sources": cfg.sources,
        "max_new_tokens": cfg.max_new_tokens,
        "batch_size": 8,
        "chat_template": cfg.chat_template,
        "seed": cfg.seed,
    }


def _method_dir(cfg: CompareConfig, name: str, seed: int | None = None) -> Path:
    d = Path(cfg.out) / "methods" / name
    return d if seed is None else d / f"seed-{seed}"


def validate(cfg: CompareConfig) -> tuple[list[Method], tuple | None]:
    """Every check of a compare run; writes nothing: options, methods (each one's options parsed
    by `rankalign train`'s / `rankalign loop`'s own parser), output folder, prompts or data,
    reward spec, the start model and its tokenizer. Returns (methods, (train, held-out) rows)."""
    from rankalign.data import check_output_location
    from rankalign.models import load_tokenizer, resolve_model
    from rankalign.scoring.rewards.registry import check_reward_models, parse_reward_specs

    methods = parse_methods(cfg.methods)
    out = Path(cfg.out)
    check_output_location(
        out, folder=True, files=[out / n for n in ("compare_config.yaml", "compare.json")]
    )
    specs = parse_reward_specs([cfg.reward])
    prompts = None
    if cfg.data:
        if not cfg.heldout:
            raise UserError("with --data, pass --heldout (the held-out prompts)", field="heldout")
        load_lists(cfg.data, require_scores=True)
        load_lists(cfg.heldout)
    else:
        prompts = demo_workflow.read_prompts(cfg)
        if cfg.heldout:
            load_lists(cfg.heldout)
    paths = _paths(cfg)
    data = Path(cfg.data) if cfg.data else paths["scored"]
    if not cfg.data:
        try:
            api.sample_config(**_sample_options(cfg, paths))
        except UserError as e:
            raise UserError(f"the sample stage would refuse: {e}", field="sources") from None
    for m in methods:
        for s in _seeds(cfg):
            where = _method_dir(cfg, m.name, s)
            try:
                if m.kind == "train":
                    api.train_config(**_train_options(cfg, m, data, where / "model", s))
                elif m.kind == "loop":
                    loop_workflow.loop_config(
                        **_loop_options(cfg, m, paths["train_prompts"], where / "loop", s)
                    )
            except UserError as e:
                raise UserError(f"method '{m.name}': {e}", field="methods") from None
    check_reward_models(specs, defaults={})
    tokenizer = load_tokenizer(resolve_model(cfg.model))
    if cfg.chat_template == "always" and not getattr(tokenizer, "chat_template", None):
        raise UserError("chat_template: always needs a tokenizer with a chat template")
    return methods, prompts


def _seeds(cfg: CompareConfig) -> list[int]:
    return list(range(cfg.seed, cfg.seed + cfg.seeds))


# ----------------------------------------------------------------------------- measuring


def _reset_peak_rss() -> bool:
    try:  # "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def measured(fn) -> dict:
    """Run `fn()` and measure it: wall seconds, peak RSS (MiB) of this process during the call
    (null with a note where it cannot be reset), peak CUDA memory allocated (MiB) on a GPU."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    gc.collect()
    reset = _reset_peak_rss()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    hwm = _status_kb("VmHWM") if reset else None
    out = {
        "train_seconds": seconds,
        "peak_rss_mb": hwm / 1024 if hwm is not None else None,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }
    if hwm is None:
        out["notes"] = {"peak_rss_mb": "the peak RSS could not be reset (/proc/self/clear_refs)"}
    return out


# ----------------------------------------------------------------------------- stages


def _stage(title: str) -> None:
    print(f"\n[compare] {title}", file=sys.stderr, flush=True)


def _evaluate(cfg: CompareConfig, entries: list[str], heldout: Path, out: Path, seed: int) -> dict:
    """Greedy generations of `entries` on the held-out prompts, rewarded; perplexity under the
    start model. Returns {entry: {mean_reward, ..., rewards: per-prompt list}}."""
    from rankalign.models import resolve_model

    metrics = api.evaluate(
        model=entries,
        prompts=str(heldout),
        reward=[cfg.reward],
        out=str(out),
        max_new_tokens=cfg.max_new_tokens,
        chat_template=cfg.chat_template,
        max_rows=cfg.heldout_prompts,
        ppl_model=resolve_model(cfg.model),
        max_length=cfg.max_length + cfg.max_new_tokens,
        bootstrap_resamples=cfg.bootstrap_resamples,
        seed=seed,
        report=False,
    ).metrics
    rows = [json.loads(x) for x in (out / "per_prompt.jsonl").read_text().splitlines()]
    result = {}
    for name, m in metrics["models"].items():
        keep = ("mean_reward", "ci_low", "ci_high", "perplexity", "mean_length", "n")
        result[name] = {k: m.get(k) for k in keep}
        result[name]["ids"] = [r["id"] for r in rows]
        result[name]["rewards"] = [r["rewards"].get(name) for r in rows]
    return result


def _curve_entries(cfg: CompareConfig, m: Method, where: Path) -> tuple[list[str], dict]:
    """(evaluate entries, {entry: step}): the final model and the intermediate checkpoints."""
    if m.kind == "loop":
        loop_dir = where / "loop"
        iters = sorted(loop_dir.glob("iter-*/model"), key=lambda p: int(p.parent.name[5:]))
        per = cfg.max_steps // len(iters)
        steps = {f"iter-{i}": i * per for i in range(1, len(iters) + 1)}
        entries = [f"iter-{i}={loop_dir / f'iter-{i}' / 'model'}" for i in range(1, len(iters))]
        entries.append(f"final={iters[-1]}")
        return entries, {**steps, "final": cfg.max_steps}
    model = where / "model"
    entries, steps = [], {"final": cfg.max_steps}
    if cfg.eval_every:
        for ckpt in sorted(model.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
            step = int(ckpt.name.split("-")[1])
            if step < cfg.max_steps:
                entries.append(f"step-{step}={ckpt}")
                steps[f"step-{step}"] = step
    return [*entries, f"final={model}"], steps


def run_method(cfg: CompareConfig, m: Method, seed: int, paths: dict, data: Path) -> dict:
    """Train (unless done) and evaluate one method with one seed -> its result.json."""
    where = _method_dir(cfg, m.name, seed)
    done = where / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    where.mkdir(parents=True, exist_ok=True)
    resources = where / "train_resources.json"
    if m.kind == "loop":
        finished = (where / "loop" / "metrics.json").is_file()

        def fn():
            loop_workflow.loop(
                **_loop_options(cfg, m, paths["train_prompts"], where / "loop", seed)
            )
    else:
        finished = (where / "model" / "train_summary.json").is_file()

        def fn():
            api.train(**_train_options(cfg, m, data, where / "model", seed))

    if not finished:
        _stage(f"train {m.name} (seed {seed}, {cfg.max_steps} steps)")
        write_json(resources, measured(fn))
    usage = json.loads(resources.read_text()) if resources.is_file() else {}
    if not usage:  # trained by an earlier run that was killed before it recorded the usage
        why = "the training finished in an earlier, interrupted run: not measured"
        usage = {
            "train_seconds": None,
            "peak_rss_mb": None,
            "peak_gpu_mb": None,
            "notes": {"train_seconds": why, "peak_rss_mb": why},
        }
    _stage(f"evaluate {m.name} (seed {seed})")
    entries, steps = _curve_entries(cfg, m, where)
    evaluated = _evaluate(cfg, entries, paths["heldout"], where / "eval", seed)
    result = {
        "method": m.name,
        "kind": m.kind,
        "loss": m.loss,
        "seed": seed,
        **usage,
        "final": evaluated["final"],
        "curve": [{"step": steps[k], **v} for k, v in evaluated.items()],
    }
    result["curve"].sort(key=lambda p: p["step"])
    write_json(done, result)
    for ckpt in (where / "model").glob("checkpoint-*"):  # evaluated: the weights are not needed
        shutil.rmtree(ckpt, ignore_errors=True)
    if not cfg.keep_models:
        shutil.rmtree(where / "model", ignore_errors=True)
        for model in (where / "loop").glob("iter-*/model"):
            shutil.rmtree(model, ignore_errors=True)
    return result


def run_base(cfg: CompareConfig, paths: dict) -> dict:
    where = _method_dir(cfg, "base")
    done = where / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    _stage("evaluate base (the start model)")
    evaluated = _evaluate(cfg, [f"final={cfg.model}"], paths["heldout"], where / "eval", cfg.seed)
    result = {"method": "base", "kind": "base", "loss": None, "seed": None}
    result.update(final=evaluated["final"], curve=[{"step": 0, **evaluated["final"]}])
    write_json(done, result)
    return result


# ----------------------------------------------------------------------------- the table


def _mean(values: list) -> float | None:
    x = [v for v in values if v is not None]
    return float(np.mean(x)) if x else None


def pooled(points: list[dict], *, resamples: int, seed: int) -> dict:
    """One mean and bootstrap interval over the rewards of several seeds' evaluations (each a
    dict with a per-prompt `rewards` list): n = prompts x seeds, None rewards left out."""
    values = [v for p in points for v in p["rewards"] if v is not None]
    if not values:
        why = "no held-out response could be scored: the mean reward is undefined"
        keys = ("mean_reward", "ci_low", "ci_high")
        return {**dict.fromkeys(keys), "n": 0, "notes": dict.fromkeys(keys, why)}
    low, high = bootstrap_ci(values, resamples=resamples, seed=seed)
    return {"mean_reward": float(np.mean(values)), "ci_low": low, "ci_high": high, "n": len(values)}


def win_rate_vs(points: list[dict], base: dict) -> dict:
    """Per prompt and seed, the method's reward against base's on the same prompt (+1, 0, -1;
    None where either is unscored), pooled over seeds (`metrics.win_rate`)."""
    base_reward = dict(zip(base["ids"], base["rewards"]))
    verdicts = []
    for p in points:
        for pid, r in zip(p["ids"], p["rewards"]):
            b = base_reward.get(pid)
            verdicts.append(None if r is None or b is None else verdict(r, b))
    return win_rate(verdicts)


def build_table(results: dict[str, list[dict]], *, resamples: int = 1000, seed: int = 0) -> dict:
    """{method: [result per seed]} -> compare.json's content: one row per method (pooled reward
    and CI, win rate vs base, perplexity, length, train time, peak memory) and one reward-vs-step
    curve per method (step 0 = base). `base` must be among the results."""
    base = results["base"][0]["final"]
    rows, curves = {}, {}
    for name, runs in results.items():
        finals = [r["final"] for r in runs]
        row = {
            "kind": runs[0]["kind"],
            "loss": runs[0]["loss"],
            "seeds": [r["seed"] for r in runs if r["seed"] is not None],
            **pooled(finals, resamples=resamples, seed=seed),
        }
        notes = dict(row.pop("notes", {}))
        if name == "base":
            row.update(dict.fromkeys(("win_rate", "tie_rate", "loss_rate")))
            notes["win_rate"] = "base is the reference of the win rate"
        else:
            w = win_rate_vs(finals, base)
            row.update({k: w[k] for k in ("win_rate", "tie_rate", "loss_rate")})
            row["win_n"] = w["n"]
            notes.update(w.get("notes", {}))
        row["perplexity"] = _mean([f.get("perplexity") for f in finals])
        row["mean_length"] = _mean([f.get("mean_length") for f in finals])
        for key in ("train_seconds", "peak_rss_mb", "peak_gpu_mb"):
            values = [r.get(key) for r in runs]
            if name == "base" or all(v is None for v in values):
                row[key] = None
                if name != "base" and key != "peak_gpu_mb":
                    notes[key] = next(
                        (r["notes"][key] for r in runs if key in r.get("notes", {})), "not measured"
                    )
            else:  # time: mean over seeds; memory: the highest peak
                known = [v for v in values if v is not None]
                row[key] = float(np.mean(known)) if key == "train_seconds" else float(max(known))
        if notes:
            row["notes"] = notes
        rows[name] = row
        by_step: dict[int, list[dict]] = {}
        for r in runs:
            for p in r["curve"]:
                by_step.setdefault(p["step"], []).append(p)
        if name != "base":
            by_step.setdefault(0, []).append(base)
        curves[name] = [
            {"step": s, **pooled(by_step[s], resamples=resamples, seed=seed)}
            for s in sorted(by_step)
        ]
    return {"methods": rows, "curves": curves}


# ----------------------------------------------------------------------------- run


def run(cfg: CompareConfig) -> dict:
    methods, prompts = validate(cfg)  # validate, then write
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(out / "compare_config.yaml", {"compare": cfg})
    started = time.time()
    paths = _paths(cfg)
    if prompts is not None:
        demo_workflow.split_prompts(prompts, out)
    if cfg.heldout:
        paths["heldout"] = Path(cfg.heldout)
    data = Path(cfg.data) if cfg.data else paths["scored"]
    if cfg.data and any(m.kind == "loop" for m in methods):
        rows = load_lists(cfg.data).rows
        write_jsonl(paths["train_prompts"], [{"id": r["id"], "prompt": r["prompt"]} for r in rows])
    if not cfg.data:
        _stage(f"sample: {cfg.train_prompts} prompts from {cfg.model}")
        if not paths["candidates"].is_file():
            api.sample(**_sample_options(cfg, paths))
        _stage(f"score: {cfg.reward}")
        if not paths["scored"].is_file():
            api.score(input=str(paths["candidates"]), out=str(paths["scored"]), reward=[cfg.reward])
    results = {"base": [run_base(cfg, paths)]}
    for m in methods[1:]:
        results[m.name] = [run_method(cfg, m, s, paths, data) for s in _seeds(cfg)]
    table = build_table(results, resamples=cfg.bootstrap_resamples, seed=cfg.seed)
    table["settings"] = {
        "model": cfg.model,
        "reward": cfg.reward,
        "max_steps": cfg.max_steps,
        "batch_size": cfg.batch_size,
        "seeds": _seeds(cfg),
        "heldout_prompts": table["methods"]["base"]["n"],
        "minutes": (time.time() - started) / 60,
    }
    _stage("report")
    from rankalign.report import write_compare_report

    table["files"] = write_compare_report(table, out)
    print(summary_table(table))
    print(f"\nreport: {out / 'compare.html'}  ({table['settings']['minutes']:.1f} min)")
    return table


def summary_table(table: dict) -> str:
    lines = [
        "| method | mean reward (95% CI) | win rate vs base | perplexity | length | "
        "train s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in table["methods"].items():
        ci = ", ".join(number(m.get(k), "+.3f") for k in ("ci_low", "ci_high"))
        win = number(100 * m["win_rate"], ".0f") + "%" if m.get("win_rate") is not None else "-"
        lines.append(
            f"| {name} | {number(m.get('mean_reward'), '+.3f')} ({ci}) | {win} | "
            f"{number(m.get('perplexity'), '.2f')} | {number(m.get('mean_length'), '.1f')} | "
            f"{number(m.get('train_seconds'), '.0f', '-')} | "
            f"{number(m.get('peak_rss_mb'), '.0f', '-')} |"
        )
    return "\n".join(lines)


def compare_config(config=None, *, argv: tuple | list = (), **options) -> CompareConfig:
    """The checked options of `rankalign compare` (nothing runs, nothing is written)."""
    argv, options = api.config_inputs(config, options, argv)
    cfg = parse_config(argv, (CompareConfig,), prog="rankalign compare", options=options)[0]
    parse_methods(cfg.methods)  # the methods' names and shapes (their options: at validation)
    return cfg


def compare(config=None, *, argv: tuple | list = (), **options) -> api.Result:
    """Every method on the same scored candidates, the same budget and seeds, the same held-out
    prompts -> compare.json, compare.md/.html and plots in `out`; resumes a killed run.
    `result.metrics["methods"]`: one row per method."""
    cfg = compare_config(config, argv=argv, **options)
    return api.Result("compare", Path(cfg.out), run(cfg), cfg)
