"""`rankalign compare`: which method wins? Every method trained on the same scored candidates,
side by side on the same held-out prompts.

    rankalign compare --config examples/compare-demo.yaml

The seeds are comparisons: RRHF Tables 2-7 (RRHF vs best-of-n, with and without the ranking
loss), the thesis proposal's listwise-vs-pairwise question, RLHF Workflow Table 4 (iterative vs
offline). One run:

    sample once (or take `data`) -> score
      -> per method and seed: train from the same start model, the same `max_steps` optimizer
         steps, the same seed; checkpoints every `eval_every` steps
      -> evaluate every checkpoint and the final model on the same held-out prompts (greedy,
         or `eval_samples` samples per prompt with the KL from the start model)
      -> compare.json (the table and the paired comparisons), compare_reward.png,
         compare_steps.png, compare_frontier.png, compare.md/.html

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
Perplexity (under the start model) and mean length are averaged over seeds. Base (untrained,
seed-free) is evaluated once.

Sampled evaluation (`eval_samples: n`, with `eval_temperature` / `eval_top_p`;
`evaluate --eval_samples`): each model draws n responses per held-out prompt and a prompt's
reward (and length) is their mean, so it is an estimate rather than one greedy draw; the pooled
interval then resamples prompts (a prompt's mean over seeds is one unit, n = prompts) as the
paired statistics do. `eval_samples: 0` is greedy, as before. With samples, every evaluated
model (each checkpoint too) gets KL(pi || start model) from its own samples
(`evaluate --kl_reference`, `drift.kl_estimate`; base's is 0 by definition and not estimated):
the KL column and `compare_frontier.png` (reward against KL, the DPO paper's Figure 2 view). It
is the KL at `eval_temperature: 1`, `eval_top_p: 1`; at another setting the samples come from
the tempered policy and the column is E_tempered[log pi - log pi_ref] (a note says so). The
samples are texts re-encoded by the tokenizer (the backends return text, not the ids drawn).

Paired statistics (`compare_table.paired_section`, `rankalign.paired`): every method is
evaluated on the same prompts, so each method is compared with base and with every other method
prompt by prompt (a method's reward on a prompt: the mean over its seeds): the mean difference
with a paired bootstrap 95% interval (prompts resampled), the exact sign test, the Wilcoxon
signed-rank test, Holm's correction of the Wilcoxon p-values over all comparisons of the table
and a verdict (better / worse / no detectable difference); against base also the difference at
equal response length. The prompt is the unit: with few seeds the seed-to-seed variance of
training sits inside each prompt's mean but is not resampled on its own.

`--quick`: a first look in a few minutes (2.7 min with the default methods on 2 idle CPU cores;
at most 8 train prompts, 12 held-out prompts, 2 steps, one seed, no checkpoints); its table and
compare.md say it is too small to decide, and a folder holding a quick run is refused to a full
run (and the reverse).

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

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rankalign import api
from rankalign.config import dump_config, load_yaml, load_yaml_text, option, parse_config
from rankalign.data import load_lists, write_json, write_jsonl
from rankalign.errors import UserError
from rankalign.tokenization import CHAT_TEMPLATE_MODES
from rankalign.workflows import demo as demo_workflow
from rankalign.workflows import loop as loop_workflow
from rankalign.workflows.compare_measure import measured
from rankalign.workflows.compare_methods import DEFAULT_METHODS, Method, parse_methods
from rankalign.workflows.compare_table import build_table, summary_table

# --quick: caps that bring a run to a first look in a few minutes (2.7 min measured, default
# methods, 2 idle CPU cores)
QUICK = {"train_prompts": 8, "heldout_prompts": 12, "max_steps": 2, "max_new_tokens": 16}
QUICK_NOTE = (
    "a --quick run (at most {heldout_prompts} held-out prompts, {max_steps} optimizer steps, one "
    "seed): a first look, too small to decide between methods; rerun without --quick".format(
        **QUICK
    )
)


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
    eval_samples: int = option(
        0,
        ">= 0",
        "responses sampled per held-out prompt and model, averaged per prompt (the unit), and "
        "the KL from the start model; 0: one greedy response, no KL",
    )
    eval_temperature: float = option(1.0, "> 0", "sampling temperature of eval_samples")
    eval_top_p: float = option(1.0, "(0, 1]", "nucleus mass of eval_samples")
    quick: bool = option(
        False,
        help=f"a first look in a few minutes (caps: {', '.join(f'{k} {v}' for k, v in QUICK.items())}"
        ", one seed, no checkpoints), labelled too small to decide",
    )

    def __post_init__(self):
        if self.quick:
            for key, cap in QUICK.items():
                setattr(self, key, min(getattr(self, key), cap))
            self.seeds, self.eval_every = 1, None
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
        quick = f" (--quick caps max_steps at {QUICK['max_steps']})" if cfg.quick else ""
        raise UserError(
            f"'{m.name}': max_steps ({cfg.max_steps}) must split evenly over {iterations} "
            f"iterations (the same number of optimizer steps as the offline methods){quick}",
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
    earlier = out / "compare_config.yaml"
    if earlier.is_file():  # a quick run's results must not pass for a full run's (resume)
        was_quick = bool((load_yaml(earlier).get("compare") or {}).get("quick", False))
        if was_quick != cfg.quick:
            kind = "a --quick run" if was_quick else "a run without --quick"
            raise UserError(f"{out} holds {kind}: use another --out", field="quick")
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


# ----------------------------------------------------------------------------- stages


def _stage(title: str) -> None:
    print(f"\n[compare] {title}", file=sys.stderr, flush=True)


def _evaluate(
    cfg: CompareConfig, entries: list[str], heldout: Path, out: Path, seed: int, kl: bool = True
) -> dict:
    """Generations of `entries` on the held-out prompts (greedy, or `eval_samples` samples per
    prompt: a prompt's reward and length are its samples' means), rewarded; perplexity under the
    start model; with samples and `kl`, the KL from the start model (`evaluate --kl_reference`).
    Returns {entry: {mean_reward, ..., kl, ids, rewards, lengths, kls: per-prompt lists}}
    (lengths in tokens of the start model's tokenizer)."""
    from rankalign.models import load_tokenizer, resolve_model

    sampled = {}
    if cfg.eval_samples:
        sampled = {
            "eval_samples": cfg.eval_samples,
            "temperature": cfg.eval_temperature,
            "top_p": cfg.eval_top_p,
            "kl_reference": resolve_model(cfg.model) if kl else None,
        }
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
        **sampled,
    ).metrics
    rows = [json.loads(x) for x in (out / "per_prompt.jsonl").read_text().splitlines()]
    tok = load_tokenizer(resolve_model(cfg.model))  # lengths as evaluate's mean_length counts
    result = {}
    for name, m in metrics["models"].items():
        keep = ("mean_reward", "ci_low", "ci_high", "perplexity", "mean_length", "n")
        keep += ("kl", "kl_ci_low", "kl_ci_high") if "kl" in m else ()
        result[name] = {k: m.get(k) for k in keep}
        result[name]["ids"] = [r["id"] for r in rows]
        result[name]["rewards"] = [r["rewards"].get(name) for r in rows]
        texts = [r["samples"][name] if cfg.eval_samples else [r["responses"][name]] for r in rows]
        result[name]["lengths"] = [
            float(np.mean([len(tok(t, add_special_tokens=False).input_ids) for t in ts]))
            for ts in texts
        ]
        if "kl" in m:
            result[name]["kls"] = [r["kl"][name] for r in rows]
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
    # its KL from itself is 0 by definition (tested in evaluate): not estimated
    evaluated = _evaluate(
        cfg, [f"final={cfg.model}"], paths["heldout"], where / "eval", cfg.seed, kl=False
    )
    if cfg.eval_samples:
        final = evaluated["final"]
        final.update(kl=0.0, kl_ci_low=0.0, kl_ci_high=0.0, kls=[0.0] * len(final["ids"]))
    result = {"method": "base", "kind": "base", "loss": None, "seed": None}
    result.update(final=evaluated["final"], curve=[{"step": 0, **evaluated["final"]}])
    write_json(done, result)
    return result


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
    table = build_table(
        results,
        resamples=cfg.bootstrap_resamples,
        seed=cfg.seed,
        quick=cfg.quick,
        by_prompt=cfg.eval_samples > 0,
    )
    if cfg.quick:  # in compare.md's notes too
        table["methods"]["base"].setdefault("notes", {})["quick"] = QUICK_NOTE
    table["settings"] = {
        "model": cfg.model,
        "reward": cfg.reward,
        "max_steps": cfg.max_steps,
        "batch_size": cfg.batch_size,
        "seeds": _seeds(cfg),
        "heldout_prompts": table["methods"]["base"]["n"],
        "minutes": (time.time() - started) / 60,
        "quick": cfg.quick,
        "evaluation": (
            f"{cfg.eval_samples} samples per prompt (temperature {cfg.eval_temperature}, top_p "
            f"{cfg.eval_top_p}), a prompt's reward their mean"
            if cfg.eval_samples
            else "greedy"
        ),
        "eval_samples": cfg.eval_samples,
    }
    _stage("report")
    from rankalign.report import write_compare_report

    table["files"] = write_compare_report(table, out)
    if cfg.quick:
        print(f"\n{QUICK_NOTE}")
    print(summary_table(table))
    print(f"\nreport: {out / 'compare.html'}  ({table['settings']['minutes']:.1f} min)")
    return table


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
