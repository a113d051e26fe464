"""The steps of `rankalign evaluate` that use sampled evaluation or a baseline's per-prompt
rewards: scoring each prompt's `--eval_samples` (their mean is the prompt's reward), the KL of
each model from `--kl_reference` on its own samples (`drift`), and the paired statistics of each
--model against each --baseline (`paired_baselines`). Listed in `steps.STEPS`.
"""

from __future__ import annotations

import gc

import numpy as np

from rankalign.evaluation.config import EvaluateConfig
from rankalign.evaluation.entries import Entry
from rankalign.evaluation.scoring import load_lm
from rankalign.metrics import reward_summary
from rankalign.models import load_tokenizer

# `inp` and `made` are `steps.Inputs` and `steps.Made` (not imported: steps imports this module)


def score_samples(inp, made, e: Entry, notes: list) -> dict:
    """`score_entries` of an entry with eval samples: every sample scored, the per-prompt means
    in `made.rewards` and their summary."""
    cfg, lists = inp.cfg, made.drawn[e.name]
    texts = [t for ls in lists for t in ls]
    m = {
        "mean_length_chars": float(np.mean([len(t) for t in texts])) if texts else None,
        "empty_responses": sum(not t.strip() for t in texts),
        "eval_samples": cfg.eval_samples,
        "reward_unit": f"per-prompt mean reward of {cfg.eval_samples} samples",
    }
    if inp.rewards is None:
        return m
    rows = [row for row, ls in zip(inp.rows, lists) for _ in ls]
    flat = inp.rewards.score_responses(rows, texts, f"reward {e.name}")
    per, start = [], 0
    for ls in lists:
        per.append(flat[start : start + len(ls)])
        start += len(ls)
    made.sample_rewards[e.name] = per
    means = [_mean_known(v) for v in per]
    made.rewards[e.name] = means
    if None in flat:
        notes.append(
            f"{e.name}: {flat.count(None)} of {len(flat)} samples could not be scored (no "
            "value, or not a finite number) and are left out of their prompt's mean"
        )
    summary = reward_summary(
        means, resamples=cfg.bootstrap_resamples, confidence=cfg.confidence, seed=cfg.seed
    )
    return {**m, **summary}


def _mean_known(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def sample_logps(model, tokenizer, rows, lists, cfg: EvaluateConfig, entry: Entry, desc: str):
    """Sequence log-probs (token sums, EOS included) of each prompt's samples under `model`,
    encoded as the entry's prompts are (its chat template mode): the terms of the KL estimate
    (`drift`)."""
    from rankalign.logprobs import rows_logps
    from rankalign.tokenization import resolve_chat_template

    logps, _, _ = rows_logps(
        model,
        tokenizer,
        [row["prompt"] for row in rows],
        lists,
        batch_size=cfg.batch_size,
        desc=desc,
        max_length=cfg.max_length,
        min_response_tokens=min(512, cfg.max_length // 2),
        chat_template=resolve_chat_template(cfg.chat_template, entry.path),
    )
    return logps


def drift(inp, made) -> dict:
    """With --kl_reference: KL(model || reference) of every model entry, estimated from its own
    eval samples (`drift.kl_estimate`: per sample log pi(y|x) - log pi_ref(y|x), the mean per
    prompt, the mean over prompts with its bootstrap interval; the prompt is the unit).

    Both log-probs are of the same token ids: the sample's text re-encoded by the entry's
    tokenizer (a backend returns text, not the ids it drew; a BPE text may re-encode to other ids
    than were sampled, and a sample cut at a stop string or at max_new_tokens gets the EOS that
    the encoding appends: the same for every model, and exactly 0 for a model against itself).
    It is KL(pi || pi_ref) at temperature 1 and top_p 1; at another temperature or top_p the
    samples come from the tempered policy and the number is E_tempered[log pi - log pi_ref], not
    the KL (noted)."""
    cfg = inp.cfg
    if not made.policy_logps:
        return {}
    from rankalign.drift import kl_estimate
    from rankalign.models import resolve_model

    path = resolve_model(cfg.kl_reference)
    model, _ = load_lm(path, cfg)
    models, notes = {}, []
    for e in inp.entries:
        if e.name not in made.policy_logps:
            continue
        tok = load_tokenizer(e.path, trust_remote_code=cfg.trust_remote_code)  # the policy's ids
        desc = f"kl: {e.name} under the reference"
        ref = sample_logps(model, tok, inp.rows, made.drawn[e.name], cfg, e, desc)
        est = kl_estimate(
            made.policy_logps[e.name],
            ref,
            resamples=cfg.bootstrap_resamples,
            confidence=cfg.confidence,
            seed=cfg.seed,
        )
        made.kl[e.name] = est["per_prompt"]
        m = {"kl": est["kl"], "kl_ci_low": est["ci_low"], "kl_ci_high": est["ci_high"]}
        m["kl_samples"] = est["samples"]
        if est.get("notes"):
            m["notes"] = {f"kl_{k}" if k != "kl" else k: v for k, v in est["notes"].items()}
        models[e.name] = m
    del model
    gc.collect()
    if cfg.temperature != 1 or cfg.top_p != 1:
        notes.append(
            f"KL: the eval samples are drawn at temperature {cfg.temperature}, top_p "
            f"{cfg.top_p}: the KL column is the mean log ratio under that tempered policy, not "
            "KL(pi || pi_ref) (exact at temperature 1, top_p 1)"
        )
    return {"kl_reference": path, "models": models, "notes": notes}


def paired_baselines(inp, made) -> dict:
    """Every --model against every --baseline prompt by prompt (`paired.paired_comparison` of
    the per-prompt rewards: with --eval_samples the per-prompt means; the prompt is the unit):
    the mean difference with its paired bootstrap interval, the exact sign test and the Wilcoxon
    signed-rank test, Holm's correction of the Wilcoxon p-values over all these comparisons,
    `significant` at alpha = 1 - confidence and the verdict (`paired.verdict`)."""
    from rankalign.paired import decide, paired_comparison

    cfg = inp.cfg
    pairs = [
        (m.name, b.name)
        for m in inp.entries
        if not m.baseline and m.name in made.rewards
        for b in inp.entries
        if b.baseline and b.name in made.rewards
    ]
    if not pairs:
        return {}
    alpha = 1 - cfg.confidence
    comparisons = []
    for m, b in pairs:
        c = {"model": m, "baseline": b}
        c.update(
            paired_comparison(
                made.rewards[m],
                made.rewards[b],
                resamples=cfg.bootstrap_resamples,
                confidence=cfg.confidence,
                seed=cfg.seed,
            )
        )
        comparisons.append(c)
    decide(comparisons, alpha)
    unit = "prompt (its reward"
    unit += f": the mean of {cfg.eval_samples} samples)" if cfg.eval_samples else ")"
    return {
        "paired": {
            "unit": unit,
            "test": "Wilcoxon signed-rank, zero differences dropped",
            "correction": f"Holm over all {len(comparisons)} model-baseline comparisons",
            "alpha": alpha,
            "comparisons": comparisons,
        }
    }
