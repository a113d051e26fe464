"""The steps of `rankalign evaluate`, in order (`STEPS`). Each step computes one part of
metrics.json from the validated inputs (`Inputs`, read by `stage.prepare`) and returns it; what
a later step needs from an earlier one (the responses, their rewards, the samples drawn here and
the policies' p_i on the pairs) is in `Made`, each of whose fields one step writes.
`stage.execute` runs the steps and adds their parts up (`add_part`); the report renders the
result section by section (`report_sections`).
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rankalign.data import write_jsonl
from rankalign.evaluation.config import EvaluateConfig
from rankalign.evaluation.entries import Entry, safe_name
from rankalign.evaluation.generate import Generator, cached_generate
from rankalign.evaluation.sampled import drift, paired_baselines, sample_logps, score_samples
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
from rankalign.tokenization import length_fn


@dataclass(frozen=True)
class Inputs:
    """Everything an evaluation reads, validated before anything is written (`stage.prepare`)."""

    cfg: EvaluateConfig
    entries: list[Entry]
    rows: list[dict]  # the prompts
    defaults: dict  # reward options (batch size, dtype, ...)
    read: dict[str, list[str]]  # responses of file and dataset entries, one per prompt
    pairs: list[dict]  # --pairs
    sample_files: dict[str, list[dict]]  # --samples, by name
    train_rows: dict[str, list[dict]]  # --train_data, by path
    train_logs: dict[str, list[dict]]  # --train_runs, by name
    loop_iterations: list[dict] | None  # --loop_run
    rewards: RewardSet | None  # --reward, built (its models loaded)
    win_judge: list  # parsed --win_judge specs (built by `win_rates`)


@dataclass
class Made:
    """What steps hand to later steps; each field is written by the step named."""

    responses: dict[str, list[str]]  # entry -> one per prompt (`collect_responses`)
    samples: dict[str, list[dict]] = field(default_factory=dict)  # drawn sets (`collect_responses`)
    pair_scores: dict[str, list[list[float]]] = field(default_factory=dict)  # (`collect_responses`)
    rewards: dict[str, list[float | None]] = field(default_factory=dict)  # (`score_entries`)
    # --eval_samples: entry -> per prompt its n sampled responses (`collect_responses`), their
    # rewards (`score_entries`) and, with --kl_reference, their log-probs under the entry's own
    # model (`collect_responses`) and the per-prompt KL estimates (`drift`)
    drawn: dict[str, list[list[str]]] = field(default_factory=dict)
    sample_rewards: dict[str, list[list[float | None]]] = field(default_factory=dict)
    policy_logps: dict[str, list[list[float]]] = field(default_factory=dict)
    kl: dict[str, list[float]] = field(default_factory=dict)


Step = Callable[[Inputs, Made], dict]


def add_part(metrics: dict, part: dict) -> None:
    """Add a step's part to the metrics: `notes` (a list) extend the notes, `models` ({entry:
    values}) merge into each entry's values (their `notes`, why a value is null, kept from both
    sides), any other key is set."""
    for key, value in part.items():
        if key == "notes":
            metrics["notes"].extend(value)
        elif key == "models":
            for name, values in value.items():
                target = metrics.setdefault("models", {}).setdefault(name, {})
                notes = {**(target.get("notes") or {}), **(values.get("notes") or {})}
                target.update(values)
                if notes:
                    target["notes"] = notes
        else:
            metrics[key] = value


def collect_responses(inp: Inputs, made: Made) -> dict:
    """Every entry's response per prompt; each model is loaded once (lazily) for its greedy
    generations (or, with --eval_samples n, its n sampled responses per prompt instead: the
    first one stands for the prompt in the examples), its --num_samples samples, its p_i on the
    pairs and, with --kl_reference, the log-probs of its eval samples, then freed. (Responses
    from files and dataset fields were read by `stage.prepare`.)"""
    cfg, out = inp.cfg, Path(inp.cfg.out)
    for e in [e for e in inp.entries if e.kind == "model"]:
        gen, name = Generator(e, cfg), safe_name(e.name)
        if cfg.eval_samples:
            drawn = cached_generate(
                gen,
                inp.rows,
                cfg.eval_samples,
                out / "eval_samples" / f"{name}.jsonl",
                cfg,
                f"sample {e.name} x{cfg.eval_samples} (evaluation)",
                request=cfg.eval_request(),
            )
            made.drawn[e.name] = drawn
            made.responses[e.name] = [ls[0] for ls in drawn]
            if cfg.kl_reference:
                made.policy_logps[e.name] = sample_logps(
                    gen.model, gen.tokenizer, inp.rows, drawn, cfg, e, f"kl: {e.name}"
                )
        else:
            greedy = cached_generate(
                gen, inp.rows, 1, out / "generations" / f"{name}.jsonl", cfg, f"generate {e.name}"
            )
            made.responses[e.name] = [g[0] for g in greedy]
        if cfg.num_samples:
            if cfg.eval_samples == cfg.num_samples and cfg.request(cfg.num_samples) == (
                cfg.eval_request()
            ):  # the same draws (same settings, same seeds): not generated twice
                lists = made.drawn[e.name]
            else:
                lists = cached_generate(
                    gen,
                    inp.rows,
                    cfg.num_samples,
                    out / "samples" / f"{name}.jsonl",
                    cfg,
                    f"sample {e.name} x{cfg.num_samples}",
                )
            made.samples[e.name] = [
                {
                    "id": row["id"],
                    "prompt": row["prompt"],
                    "responses": ls,
                    "sources": [f"{e.name}:sample"] * len(ls),
                }
                for row, ls in zip(inp.rows, lists)
            ]
        if inp.pairs and "models" in cfg.rm_scorers:
            made.pair_scores[f"p_i: {e.name}"] = policy_scores(
                gen.model, gen.tokenizer, inp.pairs, cfg, f"p_i {e.name}"
            )
        gen.close()
    return {"models": {e.name: {"spec": e.spec, "kind": e.kind} for e in inp.entries}}


def score_entries(inp: Inputs, made: Made) -> dict:
    """Length, empty responses, and mean reward, std and bootstrap interval of every entry.

    With --eval_samples n, a model's reward on a prompt is the mean of its n samples' rewards
    (those that could be scored; None when none could): these per-prompt means are the units of
    the mean, the interval, the win rates and the paired statistics (`made.rewards`); lengths
    and empty responses count every sample."""
    cfg, models, notes = inp.cfg, {}, []
    if inp.rewards is None and inp.entries:
        notes.append("no --reward: reward, win rate and best-of-n are not computed")
    for e in inp.entries:
        if e.name in made.drawn:
            m = models[e.name] = score_samples(inp, made, e, notes)
            if m["empty_responses"]:
                n = sum(len(ls) for ls in made.drawn[e.name])
                notes.append(empty_note(e, m["empty_responses"], n, cfg))
            continue
        texts = made.responses[e.name]
        m = {
            "mean_length_chars": float(np.mean([len(t) for t in texts])) if texts else None,
            "empty_responses": sum(not t.strip() for t in texts),
        }
        if m["empty_responses"]:
            notes.append(empty_note(e, m["empty_responses"], len(texts), cfg))
        if inp.rewards is not None:
            values = inp.rewards.score_responses(inp.rows, texts, f"reward {e.name}")
            made.rewards[e.name] = values
            if None in values:
                notes.append(
                    f"{e.name}: {values.count(None)} responses could not be scored (no value, "
                    "or not a finite number) and are left out of its mean reward"
                )
            resamples, confidence = cfg.bootstrap_resamples, cfg.confidence
            m.update(
                reward_summary(values, resamples=resamples, confidence=confidence, seed=cfg.seed)
            )
        models[e.name] = m
    return {"models": models, "notes": notes}


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


def perplexities(inp: Inputs, made: Made) -> dict:
    """Perplexity and mean length in tokens of every entry's responses under one LM (default:
    the base policy)."""
    path = ppl_model(inp.cfg, inp.entries)
    if not path or not inp.entries:
        return {}
    model, tok = load_lm(path, inp.cfg)
    models = {}
    for e in inp.entries:
        texts, prompts = made.responses[e.name], [row["prompt"] for row in inp.rows]
        cfg = inp.cfg
        if e.name in made.drawn:  # every sample, its prompt repeated; batches as the KL's
            lists = made.drawn[e.name]
            texts = [t for ls in lists for t in ls]
            prompts = [row["prompt"] for row, ls in zip(inp.rows, lists) for _ in ls]
            cfg = dataclasses.replace(cfg, batch_size=cfg.batch_size * cfg.eval_samples)
        m = perplexity(model, tok, prompts, texts, cfg, f"perplexity {e.name}")
        lengths = [len(tok(t, add_special_tokens=False).input_ids) for t in texts]
        models[e.name] = {**m, "mean_length": float(np.mean(lengths)) if lengths else None}
    del model
    gc.collect()
    return {"perplexity_model": path, "models": models}


def reference_scores(inp: Inputs, made: Made) -> dict:
    """BLEU / ROUGE of every entry when every prompt carries a `reference` (string or list)."""
    refs = [row.get("reference") for row in inp.rows]
    if not any(refs):
        return {}
    if not all(isinstance(x, str | list) and x for x in refs):
        return {
            "notes": [
                f"{sum(1 for x in refs if x)} of {len(refs)} prompts carry a reference: "
                "BLEU/ROUGE need every prompt to have one, skipped"
            ]
        }
    refs = [[x] if isinstance(x, str) else [str(y) for y in x] for x in refs]
    try:
        scores = {e.name: reference_metrics(made.responses[e.name], refs) for e in inp.entries}
    except ImportError:
        return {
            "notes": [
                "prompts carry references, but BLEU/ROUGE need sacrebleu and rouge-score "
                "(pip install 'rankalign[metrics]'): skipped"
            ]
        }
    return {"models": scores}


def win_rates(inp: Inputs, made: Made) -> dict:
    """Win rate of every --model against every --baseline, judged by --win_judge or --reward."""
    from tqdm.auto import tqdm

    judge = RewardSet(inp.win_judge, inp.defaults) if inp.win_judge else inp.rewards
    pairs = [(m, b) for m in inp.entries if not m.baseline for b in inp.entries if b.baseline]
    if judge is None or not pairs:
        return {}
    rates = []
    for m, b in tqdm(pairs, desc="win rate", unit="pair"):
        verdicts = win_verdicts(
            judge,
            inp.rows,
            made.responses[m.name],
            made.responses[b.name],
            made.rewards.get(m.name),
            made.rewards.get(b.name),
            inp.cfg.tie_tolerance,
            reuse=judge is inp.rewards,
        )
        rates.append(
            {
                "model": m.name,
                "baseline": b.name,
                "judge": judge.label,
                "both_orders": judge.two_orders,
                **win_rate(verdicts),
            }
        )
    return {"win_rates": rates}


def rm_accuracies(inp: Inputs, made: Made) -> dict:
    """Accuracy of every --rm_scorers scorer on --pairs (`rm_accuracy`)."""
    if not inp.pairs:
        return {}
    part = {
        "rm_accuracy": rm_accuracy(inp.pairs, made.pair_scores, inp.cfg, inp.rewards, inp.defaults)
    }
    if not labelled_pairs(inp.pairs):
        part["notes"] = [f"--pairs {inp.cfg.pairs}: {NO_PAIR_TIED}"]
    return part


def sample_metrics(inp: Inputs, made: Made) -> dict:
    """Best-of-n and reward-length correlation of every sample set (drawn here, then --samples);
    RRHF Table 6 statistics of every --train_data file."""
    cfg, part, notes = inp.cfg, {}, []
    sets = {**made.samples, **inp.sample_files}
    if sets:
        tok = _any_tokenizer(cfg, inp.entries) if cfg.length_unit == "tokens" else None
        unit = "chars" if cfg.length_unit == "tokens" and tok is None else cfg.length_unit
        if unit != cfg.length_unit:
            notes.append("no tokenizer at hand (no model given): lengths counted in characters")
        length = length_fn(unit, tok)
        part["best_of_n"], part["reward_length"] = {}, {}
        for label, rows in sets.items():
            rows = _ensure_scores(rows, inp.rewards, label)
            if rows is None:
                notes.append(f"samples '{label}' have no scores and no --reward: skipped")
                continue
            part["best_of_n"][label] = best_of_n_curve([row["scores"] for row in rows])
            part["reward_length"][label] = reward_length_correlation(rows, length, unit)
    if inp.train_rows:  # scored, or --reward given (checked by `stage.prepare`)
        part["sample_stats"] = {
            Path(path).stem: sample_stats(_ensure_scores(rows, inp.rewards, path))
            for path, rows in inp.train_rows.items()
        }
    return {**part, "notes": notes}


def training_logs(inp: Inputs, made: Made) -> dict:
    """Training logs and loop metrics (read by `stage.prepare`)."""
    part: dict = {}
    if inp.train_logs:
        part["training"] = dict(inp.train_logs)
    if inp.loop_iterations is not None:
        part["loop"] = {"run": inp.cfg.loop_run, "iterations": inp.loop_iterations}
    return part


def per_prompt_outputs(inp: Inputs, made: Made) -> dict:
    """OUT/per_prompt.jsonl (every response and reward) and the report's example generations."""
    if not (inp.rows and inp.entries):
        return {}
    per_prompt = []
    for i, row in enumerate(inp.rows):
        p = {
            "id": row["id"],
            "prompt": row["prompt"],
            "responses": {e.name: made.responses[e.name][i] for e in inp.entries},
            "rewards": {n: v[i] for n, v in made.rewards.items()},
        }
        if made.drawn:  # --eval_samples: `rewards` are the means of `sample_rewards`
            p["samples"] = {n: v[i] for n, v in made.drawn.items()}
            p["sample_rewards"] = {n: v[i] for n, v in made.sample_rewards.items()}
        if made.kl:
            p["kl"] = {n: v[i] for n, v in made.kl.items()}
        per_prompt.append(p)
    write_jsonl(Path(inp.cfg.out) / "per_prompt.jsonl", per_prompt)
    return {
        "examples": [
            {k: p[k] for k in ("id", "prompt", "responses", "rewards")}
            for p in per_prompt[: inp.cfg.examples]
        ]
    }


STEPS: tuple[Step, ...] = (
    collect_responses,
    score_entries,
    perplexities,
    drift,
    reference_scores,
    win_rates,
    paired_baselines,
    rm_accuracies,
    sample_metrics,
    training_logs,
    per_prompt_outputs,
)


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


def ppl_model(cfg: EvaluateConfig, entries: list[Entry]) -> str | None:
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
    path = ppl_model(cfg, entries) or next((e.path for e in entries if e.kind == "model"), None)
    return load_tokenizer(path, trust_remote_code=cfg.trust_remote_code) if path else None
