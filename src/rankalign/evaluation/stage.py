"""`rankalign evaluate`: reward, perplexity, RM accuracy, best-of-n, win rate, BLEU/ROUGE,
reward-length correlation, and a report with plots (RRHF paper §4, RLHF Workflow Fig. 5).

    rankalign evaluate --model rrhf=runs/rrhf --baseline base=smollm2 dataset:chosen \\
        --prompts heldout.jsonl --reward sentiment --out eval/ \\
        [--pairs test_pairs.jsonl] [--samples scored.jsonl] [--train_data train.jsonl] \\
        [--train_runs runs/rrhf] [--loop_run runs/loop]

Every `--model` / `--baseline` is an *entry*: `NAME=SPEC` or `SPEC`, where SPEC is a model (a
folder, a hub name, `smollm2`), a file of responses (ranked-list rows; the first response of each
row, matched by id), or `dataset:FIELD`, the prompts file's own responses (`dataset:chosen`,
`dataset:rejected` of pairwise rows, `dataset:reference`, or any other field). Models generate on
the prompts with the sample stage's decoder (greedy, 128 new tokens, cut at a new
`Human:`/`Assistant:` turn by default); generations are cached in `OUT/generations/NAME.jsonl`
and reused by a rerun with the same settings.

Metrics (each section only when its inputs are given):
- reward of every entry: mean over prompts, std, and a 95% percentile-bootstrap interval;
- perplexity of every entry's responses given their prompts under `--ppl_model`
  (default: the base policy, i.e. the first model among the baselines, else the first model);
- win rate of every `--model` against every `--baseline`, per prompt, ties counted; with an LLM
  judge both orders are asked and only a consistent verdict counts (else a tie);
- RM accuracy on `--pairs`: for the reward and for every model as a reward model via
  p_i = logp / tokens (RRHF paper Table 5);
- best-of-n curve from scored samples (`--samples`, or `--num_samples K` drawn here);
- reward-length Pearson r per prompt over the same samples (RLHF Workflow Fig. 5);
- sample statistics of scored training files by source (RRHF paper Table 6);
- BLEU / ROUGE against the prompts' `reference` field;
- training curves (`--train_runs`, trainer_state.json) and per-iteration loop metrics.
Outputs: OUT/metrics.json, OUT/report.md, OUT/report.html, PNG plots, OUT/per_prompt.jsonl.

`prepare` validates and reads every input, writing nothing; `execute` runs the steps of
`evaluation/steps.py` and writes the report (`rankalign.report`).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from rankalign.config import dump_config
from rankalign.data import check_output_location, load_lists, write_json
from rankalign.errors import UserError
from rankalign.evaluation.config import EvaluateConfig
from rankalign.evaluation.entries import (
    Entry,
    dataset_responses,
    file_responses,
    parse_entries,
)
from rankalign.evaluation.logs import read_loop_metrics, read_training_log, run_labels
from rankalign.evaluation.reward_models import evaluate_reward_model, print_rm_summary
from rankalign.evaluation.scoring import RewardSet
from rankalign.evaluation.steps import STEPS, Inputs, Made, add_part
from rankalign.models import load_tokenizer
from rankalign.report_blocks import number

# numeric ranges: the fields' `check` metadata (config.check_options, run by
# parse_config and again by `prepare`, so the API's configurations are checked too);
# dtype: models.torch_dtype, in `prepare`


def _reward_specs(texts: list, option: str, defaults: dict, *, summed: bool = True) -> list:
    """The reward specs of `option` checked as the score stage checks --reward, loading no model:
    parsed (`registry.parse_reward_specs`; the names of `summed` specs, one weighted sum, must
    differ) and every model and file they name resolved, pickle-only weights refused unless
    allowed (`registry.check_reward_models`). Rewards of another option are built later, during
    the run, so the ones without a model are built once now (a python: function is imported).
    Every error names `option`."""
    from rankalign.scoring.rewards.registry import (
        MODEL_OPTIONS,
        build_rewards,
        check_reward_models,
        parse_reward_spec,
        parse_reward_specs,
    )

    if summed:
        specs = parse_reward_specs(texts, field=option)
    else:
        specs = [parse_reward_spec(t, field=option) for t in texts]
    check_reward_models(specs, field=option, defaults=defaults)
    if option != "reward":  # --reward's rewards are built (loaded) right after this
        for s in specs:
            if s.kind not in MODEL_OPTIONS:
                build_rewards([s], defaults, field=option)
    return specs


def prepare(cfg: EvaluateConfig, entries: list[Entry]) -> Inputs:
    """Validate and read everything the evaluation needs, writing nothing: the output folder,
    the prompts, every entry's responses from files or dataset fields, the pairs, samples,
    training files, training logs and loop metrics, every model path (resolved and checked),
    and the rewards (built: their models load here). Any problem is a UserError."""
    from rankalign.config import check_options
    from rankalign.models import resolve_model, torch_dtype

    check_options(cfg)  # types, finite numbers, ranges (parse_config did it for the CLI)
    torch_dtype(cfg.dtype)  # a known name (the models load later, during the run)
    if entries and not cfg.prompts:
        raise UserError("--model/--baseline need --prompts FILE")
    check_output_location(cfg.out, folder=True)
    defaults = {
        "batch_size": cfg.batch_size,
        "max_length": cfg.max_length,
        "dtype": cfg.dtype,
        "device": cfg.device or "auto",
        "trust_remote_code": cfg.trust_remote_code,
        "allow_pickle": cfg.allow_pickle,
        "chat_template": cfg.chat_template,
    }
    rows = load_lists(cfg.prompts, limit=cfg.max_rows).rows if cfg.prompts else []
    read = {}
    for e in entries:  # responses that are read, not generated
        if e.kind == "dataset":
            read[e.name] = dataset_responses(rows, e.spec.split(":", 1)[1], cfg.prompts)
        elif e.kind == "file":
            read[e.name] = file_responses(rows, e.path)
    pairs = load_lists(cfg.pairs, min_responses=2, require_scores=True).rows if cfg.pairs else []
    sample_files = {Path(p).stem: load_lists(p, min_responses=1).rows for p in cfg.samples}
    train_rows = {}
    for path in cfg.train_data:
        train_rows[path] = load_lists(path, min_responses=1).rows
        if not cfg.reward and not all(row.get("scores") is not None for row in train_rows[path]):
            raise UserError("training file has no scores (and no --reward to score it)", file=path)
    train_logs = {
        name: read_training_log(run_dir)
        for name, run_dir in zip(run_labels(cfg.train_runs), cfg.train_runs)
    }
    loop_iterations = read_loop_metrics(cfg.loop_run) if cfg.loop_run else None
    lm_paths = [e.path for e in entries if e.kind == "model"]  # resolved by parse_entries
    if cfg.ppl_model not in ("auto", "none"):
        lm_paths.append(resolve_model(cfg.ppl_model))
    if cfg.kl_reference:
        lm_paths.append(resolve_model(cfg.kl_reference))
    scorers = [s for s in cfg.rm_scorers if s not in ("reward", "models")]
    for spec in scorers:
        if spec.startswith(("policy:", "policy-logprob:")):
            path = spec.split(":", 1)[1]
            if not path:
                raise UserError(f"rm_scorers '{spec}': needs a model path", field="rm_scorers")
            lm_paths.append(resolve_model(path))
    for path in dict.fromkeys(lm_paths):  # a folder without a usable tokenizer: refused now
        load_tokenizer(path, trust_remote_code=cfg.trust_remote_code)
    scorer_specs = [s for s in scorers if not s.startswith(("policy:", "policy-logprob:"))]
    _reward_specs(scorer_specs, "rm_scorers", defaults, summed=False)  # each scores alone
    win_judge = _reward_specs(cfg.win_judge, "win_judge", defaults)
    rewards = None
    if cfg.reward:  # last: it may load reward models
        rewards = RewardSet(_reward_specs(cfg.reward, "reward", defaults), defaults)
    return Inputs(
        cfg,
        entries,
        rows,
        defaults,
        read=read,
        pairs=pairs,
        sample_files=sample_files,
        train_rows=train_rows,
        train_logs=train_logs,
        loop_iterations=loop_iterations,
        rewards=rewards,
        win_judge=win_judge,
    )


def execute(inp: Inputs) -> dict:
    """The evaluation proper, on validated inputs: every step of `steps.STEPS` in order, its
    part added to the metrics; then metrics.json and the report. Writes into OUT."""
    cfg = inp.cfg
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"config": dataclasses.asdict(cfg), "notes": [], "num_prompts": len(inp.rows)}
    made = Made(responses=dict(inp.read))
    for step in STEPS:
        add_part(metrics, step(inp, made))
    if cfg.report:
        from rankalign.report import write_report

        write_report(metrics, out)
    else:
        write_json(out / "metrics.json", metrics)
    return metrics


def evaluate(cfg: EvaluateConfig) -> dict:
    """Run the evaluation `cfg` asks for (policies, samples, pairs, training logs; or a reward
    model with --rm); everything is validated before OUT is written. Returns the metrics."""
    if cfg.rm:
        return evaluate_reward_model(cfg)
    if not (
        cfg.model
        or cfg.baseline
        or cfg.samples
        or cfg.train_data
        or cfg.train_runs
        or cfg.loop_run
        or cfg.pairs
    ):
        raise UserError(
            "nothing to evaluate: pass --model M --prompts FILE --reward SPEC "
            "(or --samples / --pairs / --train_data / --train_runs / --loop_run / --rm)"
        )
    prepared = prepare(cfg, parse_entries(cfg.model, cfg.baseline))  # validates everything
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    dump_config(Path(cfg.out) / "evaluate_config.yaml", {"evaluate": cfg})
    return execute(prepared)


def print_summary(metrics: dict, cfg: EvaluateConfig) -> None:
    if cfg.rm:
        print_rm_summary(metrics, cfg)
        return
    for name, m in metrics.get("models", {}).items():
        line = (
            f"{name}: reward {number(m.get('mean_reward'), '.4f')} "
            f"[{number(m.get('ci_low'), '.4f')}, {number(m.get('ci_high'), '.4f')}]"
        )
        if "perplexity" in m:
            line += f", ppl {number(m['perplexity'], '.2f')}"
        print(line)
    for note in metrics.get("notes") or []:  # one line each, in the report's notes too
        if isinstance(note, str) and " responses are empty " in note:
            print(f"warning: {note}", file=sys.stderr)
    print(f"rankalign evaluate: report in {Path(cfg.out) / 'report.html'}")
