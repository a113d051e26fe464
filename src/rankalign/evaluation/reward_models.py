"""`rankalign evaluate --rm PATH --pairs FILE [--samples FILE]`: a reward model (`rm`), a
preference model (`preference`) or a policy as a reward model via p_i = logp / len (`policy`, RRHF
Table 5) on labelled pairs: accuracy overall, per `category`/`subset` column and RewardBench
section (ties apart), and the reward-length Pearson correlation per prompt on k samples (RLHF
Workflow Fig. 5). The model is loaded through the score stage's reward class, so these numbers
are what `rankalign score` would rank by.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from rankalign.config import dump_config
from rankalign.data import load_lists, read_json_file, write_json, write_jsonl
from rankalign.errors import UserError
from rankalign.evaluation.config import EvaluateConfig
from rankalign.metrics import pairwise_accuracy, reward_length_correlation
from rankalign.models import torch_dtype
from rankalign.report_blocks import (
    heading,
    image,
    number,
    pct,
    table,
    text,
    write_documents,
)
from rankalign.report_plots import plot_reward_length, pyplot, save_figure
from rankalign.report_sections import reward_length_table
from rankalign.reward_inputs import trained_with
from rankalign.tokenization import length_fn

KINDS = ("auto", "rm", "preference", "policy")


def detect_kind(model_path: str) -> str:
    """rm / preference from our metadata; else rm for a sequence classifier, else policy."""
    loss = trained_with(model_path).get("loss")
    if loss:
        return "rm" if loss == "bt-reward" else "preference"
    cfg_file = Path(model_path) / "config.json"
    if cfg_file.is_file():
        config = read_json_file(cfg_file)
        archs = (config.get("architectures") if isinstance(config, dict) else None) or []
        if any(isinstance(a, str) and a.endswith("ForSequenceClassification") for a in archs):
            return "rm"
    return "policy"


def reward_spec(
    model_path: str,
    kind: str,
    *,
    format: str | None = None,
    template: str | None = None,
    chat_template: str | None = None,
    max_length: int = 1024,
) -> dict:
    """The score stage's reward spec that scores like the model was trained (metadata file)."""
    meta = trained_with(model_path) if Path(model_path).is_dir() else {}
    if kind == "rm":
        spec = {"kind": "rm", "path": model_path, "format": format or meta.get("format", "auto")}
        if meta.get("max_positions") and max_length > meta["max_positions"]:
            spec["max_length"] = meta["max_positions"]  # an encoder has no positions beyond
    elif kind == "preference":
        spec = {"kind": "preference", "path": model_path}
        tfile = template or (
            str(Path(model_path) / meta["template"]) if meta.get("template") else None
        )
        if tfile:
            spec["template"] = tfile
        spec["chat_template"] = chat_template or meta.get("chat_template", "auto")
    elif kind == "policy":  # RRHF Table 5: p_i = logp / len
        spec = {"kind": "policy-logprob", "path": model_path}
        if chat_template:
            spec["chat_template"] = chat_template
    else:
        raise UserError(f"kind must be one of {', '.join(KINDS)}, got '{kind}'", field="kind")
    return spec


def score_rows(reward, rows: list[dict], chunk: int = 64) -> list[list[float | None]]:
    """The reward's value of every response; None where it gave none or a non-finite one."""
    out = []
    for s in range(0, len(rows), chunk):
        out += [
            [v if v is not None and math.isfinite(v) else None for v in values]
            for values in reward.score(rows[s : s + chunk])
        ]
    return out


def _plot_accuracy(acc: dict, path: Path, title: str) -> bool:
    plt = pyplot()
    groups = {"overall": acc["overall"], **acc.get("by_section", {}), **acc.get("by_category", {})}
    groups = {k: g for k, g in groups.items() if g.get("accuracy") is not None}
    if not groups:  # no pair to rank: nothing to draw
        return False
    names = list(groups)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 2), 3.4))
    ax.bar(range(len(names)), [100 * groups[n]["accuracy"] for n in names], color="tab:blue")
    ax.axhline(50, color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("pair accuracy (%)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path, "Pair accuracy by group")
    return True


def report_blocks(metrics: dict) -> list[dict]:
    """The reward-model report: accuracy overall and by group, then the reward-length table
    (the evaluate report's, `report_sections.reward_length_table`)."""

    def acc_table(groups: dict) -> dict:
        keys = ("n", "correct", "wrong", "ties")
        rows = [[name] + [a[k] for k in keys] + [pct(a["accuracy"])] for name, a in groups.items()]
        return table(["group", "pairs", "correct", "wrong", "ties", "accuracy"], rows)

    acc = metrics["accuracy"]
    b = [
        heading("Reward-model evaluation", 1),
        text(
            f"Model `{metrics['model']}` ({metrics['kind']}, scored as "
            f"`{metrics['reward_spec']['kind']}`) on `{metrics['pairs_file']}`."
        ),
        heading("Accuracy on labelled pairs"),
        acc_table({"overall": acc["overall"]}),
    ]
    if acc["overall"].get("accuracy") is None:
        b.append(text("Accuracy: " + acc["overall"]["notes"]["accuracy"] + "."))
    for key, title in (("by_section", "RewardBench sections"), ("by_category", "By category")):
        if acc.get(key):
            b += [heading(title, 3), acc_table(acc[key])]
    b.append(
        text(
            "A pair (every s_i > s_j of a list; chosen/rejected for pairwise rows) is "
            "correct when the model scores the preferred response strictly higher; equal "
            "scores are ties, counted apart (accuracy counts them as wrong)."
        )
    )
    if "accuracy.png" in metrics["plots"]:
        b.append(image("accuracy.png", "Pair accuracy by group"))
    rl = metrics.get("reward_length")
    if rl:
        b += [
            heading("Reward-length correlation"),
            reward_length_table({metrics["samples_file"]: rl}),
            text(
                "Per prompt, the Pearson r between this model's rewards of the k samples "
                "and their lengths (RLHF Workflow Fig. 5: 0.19 for UltraRM-13B, 0.06 for their BT "
                "model); prompts with fewer than 2 samples or constant values are skipped."
            ),
        ]
        if "reward_length.png" in metrics["plots"]:
            b.append(image("reward_length.png", "Reward-length r"))
    return b


@dataclass
class _RMEvaluation:
    """A validated reward-model evaluation: the loaded reward and the read files."""

    cfg: EvaluateConfig
    kind: str  # `auto` resolved
    spec: dict
    reward: object
    pairs: object  # data.LoadedData
    samples: object | None


def prepare_rm_evaluation(cfg: EvaluateConfig) -> _RMEvaluation:
    """Check the options and the output folder, read and validate the pairs (and samples), and
    load the model through the score stage's reward class; writes nothing."""
    from rankalign.config import check_options
    from rankalign.data import check_output_location
    from rankalign.models import load_tokenizer, resolve_model
    from rankalign.scoring.rewards.registry import build_rewards, parse_reward_spec

    check_options(cfg)  # types, finite numbers, ranges (parse_config did it for the CLI)
    torch_dtype(cfg.dtype)  # a known name, before anything loads
    check_output_location(cfg.out, folder=True)
    path = resolve_model(cfg.rm)
    kind = detect_kind(path) if cfg.kind == "auto" else cfg.kind
    spec = reward_spec(
        path,
        kind,
        format=cfg.format,
        template=cfg.template,
        chat_template=None if cfg.chat_template == "auto" else cfg.chat_template,
        max_length=cfg.max_length,
    )
    pairs = load_lists(cfg.pairs, require_scores=True, min_responses=2, limit=cfg.max_rows)
    samples_path = cfg.samples[0] if cfg.samples else None
    samples = load_lists(samples_path, min_responses=2, limit=cfg.max_rows) if cfg.samples else None
    load_tokenizer(path)  # cheap, and a clear error before the model loads
    defaults = {
        "batch_size": cfg.batch_size,
        "max_length": cfg.max_length,
        "dtype": cfg.dtype,
        "device": cfg.device or "auto",
    }
    (reward,) = build_rewards([parse_reward_spec(spec)], defaults)  # last: loads the model
    return _RMEvaluation(cfg, kind, spec, reward, pairs, samples)


def run_rm_evaluation(ev: _RMEvaluation) -> dict:
    """Score the validated pairs (and samples) and write the outputs; returns the metrics."""
    out, kind, reward = Path(ev.cfg.out), ev.kind, ev.reward
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("accuracy.png", "reward_length.png"):  # no plot may outlive its data
        (out / stale).unlink(missing_ok=True)
    scores = score_rows(reward, ev.pairs.rows)
    metrics = {
        "model": ev.cfg.rm,
        "kind": kind,
        "reward_spec": ev.spec,
        "pairs_file": ev.cfg.pairs,
        "pairs_data": ev.pairs.report.as_dict(),
        "accuracy": pairwise_accuracy(ev.pairs.rows, scores),
        "plots": [],
    }
    write_jsonl(
        out / "scored_pairs.jsonl",
        [{**row, "model_scores": s} for row, s in zip(ev.pairs.rows, scores)],
    )
    if _plot_accuracy(metrics["accuracy"], out / "accuracy.png", f"Pair accuracy: {kind}"):
        metrics["plots"].append("accuracy.png")
    if ev.samples is not None:
        values = score_rows(reward, ev.samples.rows)
        rows = [  # responses without a finite value are left out of their prompt's r
            {
                **row,
                "responses": [x for x, v in zip(row["responses"], vs) if v is not None],
                "scores": [v for v in vs if v is not None],
            }
            for row, vs in zip(ev.samples.rows, values)
        ]
        unit = ev.cfg.length_unit
        rl = reward_length_correlation(rows, length_fn(unit, reward.tokenizer), unit)
        metrics["samples_file"], metrics["reward_length"] = ev.cfg.samples[0], rl
        if rl["per_prompt"]:
            plot_reward_length({kind: rl}, out / "reward_length.png")
            metrics["plots"].append("reward_length.png")
    write_json(out / "metrics.json", metrics)
    write_documents(report_blocks(metrics), out, "report")
    return metrics


def evaluate_reward_model(cfg: EvaluateConfig) -> dict:
    """`rankalign evaluate --rm PATH --pairs FILE [--samples FILE] [--out DIR]`: validate, then
    write OUT/evaluate_config.yaml and the evaluation; returns the metrics."""
    if not cfg.pairs:
        raise UserError("reward-model evaluation needs --pairs FILE", field="pairs")
    prepared = prepare_rm_evaluation(cfg)  # nothing is written before this
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(out / "evaluate_config.yaml", {"evaluate": cfg})
    return run_rm_evaluation(prepared)


def print_rm_summary(m: dict, cfg: EvaluateConfig) -> None:
    a = m["accuracy"]["overall"]
    print(
        f"{m['kind']} {cfg.rm}: accuracy {number(a['accuracy'], '.4f')} "
        f"({a['correct']}/{a['n']}, {a['ties']} ties)"
    )
    if a["accuracy"] is None:
        print(f"  {a['notes']['accuracy']}")
    for cat, c in m["accuracy"].get("by_category", {}).items():
        print(f"  {cat}: {number(c['accuracy'], '.4f')} ({c['correct']}/{c['n']})")
    if m.get("reward_length"):
        print(f"  reward-length mean r: {number(m['reward_length']['mean_r'])}")
    print(f"rankalign evaluate: report in {Path(cfg.out) / 'report.md'}")
