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
"""

from __future__ import annotations

import dataclasses
import gc
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rankalign.config import dump_config
from rankalign.data import (
    check_output_location,
    load_lists,
    write_json,
    write_jsonl,
)
from rankalign.errors import UserError
from rankalign.evaluation.config import EvaluateConfig
from rankalign.evaluation.entries import (
    Entry,
    dataset_responses,
    file_responses,
    parse_entries,
    safe_name,
)
from rankalign.evaluation.generate import Generator, cached_generate
from rankalign.evaluation.logs import read_loop_metrics, read_training_log, run_labels
from rankalign.evaluation.reward_models import evaluate_reward_model, print_rm_summary
from rankalign.evaluation.scoring import RewardSet, load_lm, perplexity, policy_scores
from rankalign.metrics import (
    NO_PAIR_TIED,
    best_of_n_curve,
    compare,
    labelled_pairs,
    pairwise_accuracy,
    reference_metrics,
    reward_length_correlation,
    reward_summary,
    sample_stats,
    win_rate,
)
from rankalign.models import load_tokenizer
from rankalign.report import number
from rankalign.tokenization import length_fn

# numeric ranges: the fields' `check` metadata (config.check_options, run by
# parse_config and again by `prepare`, so the API's configurations are checked too);
# dtype: models.torch_dtype, in `prepare`


# ============================================================================ metrics (pure)


# ============================================================================ entries and rewards


# ============================================================================ models


# ============================================================================ logs


# ============================================================================ the run


@dataclass
class _Run:
    """What the steps of one evaluation share."""

    cfg: EvaluateConfig
    entries: list[Entry]
    rows: list[dict]  # the prompts
    defaults: dict  # reward options (batch size, dtype, ...)
    metrics: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    responses: dict[str, list[str]] = field(default_factory=dict)  # entry -> one per prompt
    rewards: RewardSet | None = None
    win_judge: list = field(default_factory=list)  # parsed --win_judge specs (built later)
    entry_rewards: dict[str, list[float | None]] = field(default_factory=dict)
    sample_sets: dict[str, list[dict]] = field(default_factory=dict)  # best-of-n inputs
    pair_rows: list[dict] = field(default_factory=list)
    pair_scores: dict[str, list[list[float]]] = field(default_factory=dict)  # p_i of policies
    sample_files: dict[str, list[dict]] = field(default_factory=dict)  # --samples, by name
    train_rows: dict[str, list[dict]] = field(default_factory=dict)  # --train_data, by path
    train_logs: dict[str, list[dict]] = field(default_factory=dict)  # --train_runs, by name
    loop_iterations: list[dict] | None = None  # --loop_run

    @property
    def models(self) -> dict[str, dict]:
        return self.metrics.setdefault("models", {})


def _reward_specs(texts: list, option: str, defaults: dict, *, summed: bool = True) -> list:
    """The reward specs of `option` checked as the score stage checks --reward, loading no model:
    parsed (`rewards.parse_reward_specs`; the names of `summed` specs, one weighted sum, must
    differ) and every model and file they name resolved, pickle-only weights refused unless
    allowed (`rewards.check_reward_models`). Rewards of another option are built later, during
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


def prepare(cfg: EvaluateConfig, entries: list[Entry]) -> _Run:
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
    r = _Run(cfg, entries, rows, defaults)
    for e in entries:  # responses that are read, not generated
        if e.kind == "dataset":
            r.responses[e.name] = dataset_responses(rows, e.spec.split(":", 1)[1], cfg.prompts)
        elif e.kind == "file":
            r.responses[e.name] = file_responses(rows, e.path)
    if cfg.pairs:
        r.pair_rows = load_lists(cfg.pairs, min_responses=2, require_scores=True).rows
    for path in cfg.samples:
        r.sample_files[Path(path).stem] = load_lists(path, min_responses=1).rows
    for path in cfg.train_data:
        train_rows = load_lists(path, min_responses=1).rows
        if not cfg.reward and not all(row.get("scores") is not None for row in train_rows):
            raise UserError("training file has no scores (and no --reward to score it)", file=path)
        r.train_rows[path] = train_rows
    for name, run_dir in zip(run_labels(cfg.train_runs), cfg.train_runs):
        r.train_logs[name] = read_training_log(run_dir)
    if cfg.loop_run:
        r.loop_iterations = read_loop_metrics(cfg.loop_run)
    lm_paths = [e.path for e in entries if e.kind == "model"]  # resolved by parse_entries
    if cfg.ppl_model not in ("auto", "none"):
        lm_paths.append(resolve_model(cfg.ppl_model))
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
    r.win_judge = _reward_specs(cfg.win_judge, "win_judge", defaults)
    if cfg.reward:
        specs = _reward_specs(cfg.reward, "reward", defaults)
        r.rewards = RewardSet(specs, defaults)  # last: it may load reward models
    return r


def execute(r: _Run) -> dict:
    """The evaluation proper, on validated inputs: writes into OUT."""
    cfg, entries = r.cfg, r.entries
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    r.metrics.update(
        {"config": dataclasses.asdict(cfg), "notes": r.notes, "num_prompts": len(r.rows)}
    )
    if not cfg.reward and entries:
        r.notes.append("no --reward: reward, win rate and best-of-n are not computed")
    _collect_responses(r)
    _score_entries(r)
    _perplexities(r)
    _reference_scores(r)
    _win_rates(r)
    if r.pair_rows:
        r.metrics["rm_accuracy"] = rm_accuracy(
            r.pair_rows, r.pair_scores, cfg, r.rewards, r.defaults
        )
        if not labelled_pairs(r.pair_rows):
            r.notes.append(f"--pairs {cfg.pairs}: {NO_PAIR_TIED}")
    _sample_metrics(r)
    _training_logs(r)
    _per_prompt_outputs(r, out)
    if cfg.report:
        from rankalign.report import write_report

        write_report(r.metrics, out)
    else:
        write_json(out / "metrics.json", r.metrics)
    return r.metrics


def _merge(target: dict, values: dict) -> None:
    """target.update(values), keeping both sides' `notes` (why a value is null)."""
    notes = {**(target.get("notes") or {}), **(values.get("notes") or {})}
    target.update(values)
    if notes:
        target["notes"] = notes


def _collect_responses(r: _Run) -> None:
    """Every entry's response per prompt; each model is loaded once (lazily) for its greedy
    generations, its --num_samples samples and its p_i on the pairs, then freed. (Responses
    from files and dataset fields were read by `prepare`.)"""
    cfg = r.cfg
    for e in r.entries:
        r.models[e.name] = {"spec": e.spec, "kind": e.kind}
    out = Path(cfg.out)
    for e in [e for e in r.entries if e.kind == "model"]:
        gen, name = Generator(e, cfg), safe_name(e.name)
        greedy = cached_generate(
            gen, r.rows, 1, out / "generations" / f"{name}.jsonl", cfg, f"generate {e.name}"
        )
        r.responses[e.name] = [g[0] for g in greedy]
        if cfg.num_samples:
            lists = cached_generate(
                gen,
                r.rows,
                cfg.num_samples,
                out / "samples" / f"{name}.jsonl",
                cfg,
                f"sample {e.name} x{cfg.num_samples}",
            )
            r.sample_sets[e.name] = [
                {
                    "id": row["id"],
                    "prompt": row["prompt"],
                    "responses": ls,
                    "sources": [f"{e.name}:sample"] * len(ls),
                }
                for row, ls in zip(r.rows, lists)
            ]
        if r.pair_rows and "models" in cfg.rm_scorers:
            r.pair_scores[f"p_i: {e.name}"] = policy_scores(
                gen.model, gen.tokenizer, r.pair_rows, cfg, f"p_i {e.name}"
            )
        gen.close()


def _score_entries(r: _Run) -> None:
    """Mean reward, std and bootstrap interval of every entry's responses."""
    for e in r.entries:
        m, texts = r.models[e.name], r.responses[e.name]
        m["mean_length_chars"] = float(np.mean([len(t) for t in texts])) if texts else None
        m["empty_responses"] = sum(not t.strip() for t in texts)
        if m["empty_responses"]:
            r.notes.append(empty_note(e, m["empty_responses"], len(texts), r.cfg))
        if r.rewards is None:
            continue
        values = r.rewards.score_responses(r.rows, texts, f"reward {e.name}")
        r.entry_rewards[e.name] = values
        if None in values:
            r.notes.append(
                f"{e.name}: {values.count(None)} responses could not be scored (no value, or "
                "not a finite number) and are left out of its mean reward"
            )
        _merge(
            m,
            reward_summary(
                values,
                resamples=r.cfg.bootstrap_resamples,
                confidence=r.cfg.confidence,
                seed=r.cfg.seed,
            ),
        )


def empty_note(entry: Entry, empty: int, total: int, cfg: EvaluateConfig) -> str:
    """Why an entry has empty responses, as far as we can tell: a model that stops at once was
    often prompted in another format than it was trained on."""
    text = f"{entry.name}: {empty} of {total} responses are empty (scored as they are)"
    if entry.kind == "model":
        from rankalign.tokenization import resolve_chat_template, trained_chat_template

        used = resolve_chat_template(cfg.chat_template, entry.path)
        trained = trained_chat_template(entry.path)
        text += f"; prompts were encoded with chat_template {used}"
        if trained and trained != used:
            text += f", but the model was trained with {trained}"
        text += " (see --chat_template)"
    return text


def _perplexities(r: _Run) -> None:
    """Perplexity of every entry's responses under one LM (default: the base policy)."""
    path = _ppl_model(r.cfg, r.entries)
    if not path or not r.entries:
        return
    model, tok = load_lm(path, r.cfg)
    r.metrics["perplexity_model"] = path
    prompts = [row["prompt"] for row in r.rows]
    for e in r.entries:
        texts = r.responses[e.name]
        _merge(
            r.models[e.name],
            perplexity(model, tok, prompts, texts, r.cfg, f"perplexity {e.name}"),
        )
        lengths = [len(tok(t, add_special_tokens=False).input_ids) for t in texts]
        r.models[e.name]["mean_length"] = float(np.mean(lengths)) if lengths else None
    del model
    gc.collect()


def _reference_scores(r: _Run) -> None:
    """BLEU / ROUGE of every entry when every prompt carries a `reference` (string or list)."""
    refs = [row.get("reference") for row in r.rows]
    if not any(refs):
        return
    if not all(isinstance(x, str | list) and x for x in refs):
        r.notes.append(
            f"{sum(1 for x in refs if x)} of {len(refs)} prompts carry a reference: "
            "BLEU/ROUGE need every prompt to have one, skipped"
        )
        return
    refs = [[x] if isinstance(x, str) else [str(y) for y in x] for x in refs]
    try:
        for e in r.entries:
            r.models[e.name].update(reference_metrics(r.responses[e.name], refs))
    except ImportError:
        r.notes.append(
            "prompts carry references, but BLEU/ROUGE need sacrebleu and rouge-score "
            "(pip install 'rankalign[metrics]'): skipped"
        )


def _win_rates(r: _Run) -> None:
    """Win rate of every --model against every --baseline, judged by --win_judge or --reward."""
    from tqdm.auto import tqdm

    judge = RewardSet(r.win_judge, r.defaults) if r.win_judge else r.rewards
    pairs = [(m, b) for m in r.entries if not m.baseline for b in r.entries if b.baseline]
    if judge is None or not pairs:
        return
    r.metrics["win_rates"] = []
    for m, b in tqdm(pairs, desc="win rate", unit="pair"):
        verdicts = win_verdicts(
            judge,
            r.rows,
            r.responses[m.name],
            r.responses[b.name],
            r.entry_rewards.get(m.name),
            r.entry_rewards.get(b.name),
            r.cfg.tie_tolerance,
            reuse=judge is r.rewards,
        )
        r.metrics["win_rates"].append(
            {
                "model": m.name,
                "baseline": b.name,
                "judge": judge.label,
                "both_orders": judge.two_orders,
                **win_rate(verdicts),
            }
        )


def _sample_metrics(r: _Run) -> None:
    """Best-of-n and reward-length correlation of every sample set; Table 6 of training files."""
    cfg = r.cfg
    r.sample_sets.update(r.sample_files)  # read by `prepare`, after the sets drawn here
    if r.sample_sets:
        tok = _any_tokenizer(cfg, r.entries) if cfg.length_unit == "tokens" else None
        unit = "chars" if cfg.length_unit == "tokens" and tok is None else cfg.length_unit
        if unit != cfg.length_unit:
            r.notes.append("no tokenizer at hand (no model given): lengths counted in characters")
        length = length_fn(unit, tok)
        r.metrics["best_of_n"], r.metrics["reward_length"] = {}, {}
        for label, rows in r.sample_sets.items():
            rows = _ensure_scores(rows, r.rewards, label)
            if rows is None:
                r.notes.append(f"samples '{label}' have no scores and no --reward: skipped")
                continue
            r.metrics["best_of_n"][label] = best_of_n_curve([row["scores"] for row in rows])
            r.metrics["reward_length"][label] = reward_length_correlation(rows, length, unit)
    for path, train_rows in r.train_rows.items():  # scored, or --reward given (`prepare`)
        rows = _ensure_scores(train_rows, r.rewards, path)
        r.metrics.setdefault("sample_stats", {})[Path(path).stem] = sample_stats(rows)


def _training_logs(r: _Run) -> None:
    """Training logs and loop metrics (read by `prepare`) into the metrics."""
    if r.train_logs:
        r.metrics["training"] = dict(r.train_logs)
    if r.loop_iterations is not None:
        r.metrics["loop"] = {"run": r.cfg.loop_run, "iterations": r.loop_iterations}


def _per_prompt_outputs(r: _Run, out: Path) -> None:
    """OUT/per_prompt.jsonl (every response and reward) and the report's example generations."""
    if not (r.rows and r.entries):
        return
    per_prompt = [
        {
            "id": row["id"],
            "prompt": row["prompt"],
            "responses": {e.name: r.responses[e.name][i] for e in r.entries},
            "rewards": {n: v[i] for n, v in r.entry_rewards.items()},
        }
        for i, row in enumerate(r.rows)
    ]
    write_jsonl(out / "per_prompt.jsonl", per_prompt)
    r.metrics["examples"] = [
        {k: p[k] for k in ("id", "prompt", "responses", "rewards")}
        for p in per_prompt[: r.cfg.examples]
    ]


def win_verdicts(
    judge: RewardSet,
    rows: list[dict],
    mine: list[str],
    theirs: list[str],
    my_rewards,
    their_rewards,
    tolerance: float,
    reuse: bool,
) -> list[int | None]:
    """Per prompt +1 / 0 / -1 (None: unjudged). Pointwise rewards compare the two rewards (reused
    from the reward step when the judge is the reward); pairwise rewards (judge, preference) see
    both responses in one row; an LLM judge is asked in both orders and a verdict counts only when
    both orders agree (otherwise it is a tie: position bias)."""
    if not judge.pairwise:
        if not reuse:
            my_rewards = judge.score_responses(rows, mine, "judge model")
            their_rewards = judge.score_responses(rows, theirs, "judge baseline")
        return [
            None if a is None or b is None else compare(a, b, tolerance)
            for a, b in zip(my_rewards, their_rewards)
        ]
    ab = judge.score(
        [
            {"id": r["id"], "prompt": r["prompt"], "responses": [m, t]}
            for r, m, t in zip(rows, mine, theirs)
        ]
    )
    first = [None if None in v else compare(v[0], v[1], tolerance) for v in ab]
    if not judge.two_orders:
        return first
    ba = judge.score(
        [
            {"id": r["id"], "prompt": r["prompt"], "responses": [t, m]}
            for r, m, t in zip(rows, mine, theirs)
        ]
    )
    second = [None if None in v else compare(v[1], v[0], tolerance) for v in ba]
    return [None if a is None or b is None else a if a == b else 0 for a, b in zip(first, second)]


def rm_accuracy(
    pair_rows: list[dict],
    policy_results: dict[str, list[list[float]]],
    cfg: EvaluateConfig,
    rewards: RewardSet | None,
    defaults: dict,
) -> list[dict]:
    """Accuracy of every scorer on the labelled pairs (overall and per category/subset column)."""
    from rankalign.scoring.rewards.registry import parse_reward_spec

    scorers: dict[str, list[list[float | None]]] = dict(policy_results)
    for spec in cfg.rm_scorers:
        if spec == "models":
            continue
        if spec == "reward":
            if rewards is not None:
                scorers[rewards.label] = rewards.score(pair_rows)
        elif spec.startswith(("policy:", "policy-logprob:")):
            path = spec.split(":", 1)[1]
            from rankalign.models import resolve_model

            model, tok = load_lm(resolve_model(path), cfg)
            scorers[f"p_i: {path}"] = policy_scores(model, tok, pair_rows, cfg, f"p_i {path}")
            del model
        else:
            rs = RewardSet([parse_reward_spec(spec, field="rm_scorers")], defaults)
            scorers[rs.label] = rs.score(pair_rows)
    results = []
    for label, scores in scorers.items():
        acc = pairwise_accuracy(pair_rows, scores)
        res = {"scorer": label, **acc["overall"]}
        if "by_category" in acc:
            res["by_category"] = acc["by_category"]
        results.append(res)
    return results


def _ensure_scores(rows: list[dict], rewards: RewardSet | None, label: str) -> list[dict] | None:
    if all(r.get("scores") is not None for r in rows):
        return rows
    if rewards is None:
        return None
    from tqdm.auto import tqdm

    scored = []
    for s in tqdm(range(0, len(rows), 64), desc=f"score {label}", unit="chunk", leave=False):
        chunk = rows[s : s + 64]
        for row, values in zip(chunk, rewards.score(chunk)):
            keep = [j for j, v in enumerate(values) if v is not None]
            scored.append(
                {
                    **row,
                    "responses": [row["responses"][j] for j in keep],
                    "scores": [values[j] for j in keep],
                }
            )
    return scored


def _ppl_model(cfg: EvaluateConfig, entries: list[Entry]) -> str | None:
    from rankalign.models import resolve_model

    if cfg.ppl_model == "none":
        return None
    if cfg.ppl_model != "auto":
        return resolve_model(cfg.ppl_model)
    models = [e for e in entries if e.kind == "model"]
    base = [e for e in models if e.baseline] or models
    return base[0].path if base else None


def _any_tokenizer(cfg: EvaluateConfig, entries: list[Entry]):
    """For lengths in tokens: the perplexity model's tokenizer, else the first model's."""
    path = _ppl_model(cfg, entries) or next((e.path for e in entries if e.kind == "model"), None)
    return load_tokenizer(path, trust_remote_code=cfg.trust_remote_code) if path else None


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


def write_report(metrics: dict, out_dir) -> dict:
    """Write metrics.json, report.md, report.html and the plots (see rankalign.report)."""
    from rankalign.report import write_report as _write

    return _write(metrics, out_dir)
