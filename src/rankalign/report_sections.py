"""The sections of the evaluation report, in a small ordered registry.

A `Section` has a name, a `render(metrics, plots) -> blocks` function (no blocks: the section is
left out, as every section is when its metrics are absent) and optionally a `Plot`: the PNG it
draws from the metrics and shows. `report.build_blocks` concatenates every section's blocks and
`report.make_plots` draws every section's plot, both in registry order; `register_section` adds
one (docs/design.md, "Adding a report section"). The numbers come from the evaluation steps
(`evaluation/steps.py`), which write them into metrics.json under the keys read here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankalign.report_blocks import (
    bullets,
    example,
    finite,
    fmt,
    heading,
    image,
    pct,
    table,
    text,
)
from rankalign.report_plots import (
    flatten_metrics,
    loop_panels,
    numeric_keys,
    plot_best_of_n,
    plot_loop,
    plot_reward_length,
    plot_rewards,
    plot_training,
)

Blocks = list[dict]
Plots = dict[str, list[str]]  # file -> curve names, of the plots drawn


@dataclass(frozen=True)
class Plot:
    """A PNG a section shows: `data(metrics)` picks what `draw(data, path)` takes (None: nothing
    to draw); `draw` returns the curve names (`report_plots.save_figure`)."""

    file: str
    data: Callable[[dict], Any]
    draw: Callable[[Any, Path], list[str]]


@dataclass(frozen=True)
class Section:
    name: str
    render: Callable[[dict, Plots], Blocks]
    plot: Plot | None = None


def _with_plot(blocks: Blocks, plots: Plots, file: str, alt: str) -> Blocks:
    return blocks + [image(file, alt)] if file in plots else blocks


def _explained_table(title: str, tbl: dict, note: str, plots: Plots, plot: tuple) -> Blocks:
    """A heading, one table, the note saying what it shows, and the plot (file, alt text) of
    the same numbers."""
    return _with_plot([heading(title), tbl, text(note)], plots, *plot)


def header(metrics: dict, plots: Plots) -> Blocks:
    """The title and what this evaluation used: a --loop_run alone has no prompts."""
    b = [heading("rankalign evaluation report", 1)]
    cfg = metrics.get("config", {})
    models = metrics.get("models") or {}
    said = []
    if cfg.get("prompts"):
        said.append(f"Prompts: `{cfg['prompts']}` ({metrics.get('num_prompts', '?')} prompts)")
    if cfg.get("reward"):
        said.append(f"reward: `{' + '.join(map(str, cfg['reward']))}`")
    if any(m.get("kind") == "model" for m in models.values()):
        how = cfg.get("strategy", "greedy")
        if cfg.get("eval_samples"):  # the prompt's reward: the mean of its samples
            how = (
                f"{cfg['eval_samples']} samples per prompt (temperature {cfg.get('temperature')}, "
                f"top_p {cfg.get('top_p')}), a prompt's reward the mean of its samples"
            )
        said.append(f"generation: {how}, {cfg.get('max_new_tokens')} new tokens")
    if said:
        said[0] = said[0][0].upper() + said[0][1:]
        b.append(text("; ".join(said) + "."))
    return b


def model_table(models: dict[str, dict]) -> dict:
    """The side-by-side table (RRHF paper Table 2): one row per model, present columns only."""
    optional = [
        ("kl", "KL vs reference"),
        ("perplexity", "PPL"),
        ("mean_length", "length (tokens)"),
        ("bleu", "BLEU"),
        ("rouge1", "ROUGE-1"),
        ("rouge2", "ROUGE-2"),
        ("rougeL", "ROUGE-L"),
    ]
    cols = [(k, h) for k, h in optional if any(finite(m.get(k)) for m in models.values())]
    if any(m.get("empty_responses") for m in models.values()):  # a format mismatch shows here
        cols.append(("empty_responses", "empty responses"))
    head = ["model", "n", "reward", "95% CI", "std"] + [h for _, h in cols]
    rows = []
    for name, m in models.items():
        ci = f"[{fmt(m.get('ci_low'))}, {fmt(m.get('ci_high'))}]"
        rows.append(
            [name, m.get("n"), m.get("mean_reward"), ci, m.get("std")] + [m.get(k) for k, _ in cols]
        )
    return table(head, rows)


def models(metrics: dict, plots: Plots) -> Blocks:
    """Reward, interval, perplexity, length and BLEU/ROUGE of every entry."""
    entries = metrics.get("models") or {}
    if not entries:
        return []
    cfg = metrics.get("config", {})
    explain = (
        "reward: mean over prompts with a 95% percentile-bootstrap interval "
        f"({cfg.get('bootstrap_resamples', 1000)} resamples, seed {cfg.get('seed', 0)})"
    )
    if metrics.get("perplexity_model"):
        explain += (
            "; PPL: perplexity of the responses given their prompts under "
            f"`{metrics['perplexity_model']}`"
        )
    b = [heading("Models"), model_table(entries), text(explain + ".")]
    return _with_plot(b, plots, "reward.png", "Average reward per model with 95% intervals")


def win_rates(metrics: dict, plots: Plots) -> Blocks:
    if not metrics.get("win_rates"):
        return []
    rows = [
        [w["model"], w["baseline"], w["judge"], w["n"], w["wins"], w["ties"], w["losses"]]
        + [pct(w["win_rate"]), pct(w["win_rate_ties_half"])]
        for w in metrics["win_rates"]
    ]
    head = ["model", "baseline", "judge", "n", "win", "tie", "lose", "win rate", "win+tie/2"]
    return [heading("Win rate"), table(head, rows)]


def paired(metrics: dict, plots: Plots) -> Blocks:
    """Each --model against each --baseline, prompt by prompt (`steps.paired_baselines`)."""
    p = metrics.get("paired")
    if not p or not p.get("comparisons"):
        return []
    rows = []
    for c in p["comparisons"]:
        ci = f"[{fmt(c.get('ci_low'))}, {fmt(c.get('ci_high'))}]"
        rows.append(
            [c["model"], c["baseline"], c["n"], c.get("mean_difference"), ci]
            + [c["sign_test"].get("p_value"), c["wilcoxon"].get("p_value"), c.get("p_holm")]
            + [c["verdict"]]
        )
    head = ["model", "baseline", "n", "Δ reward", "95% CI", "sign p", "Wilcoxon p", "Holm p"]
    explain = (
        f"The unit is the {p['unit']}: per prompt, the model's reward minus the baseline's; "
        "the interval is a paired bootstrap over prompts; the verdict reads the Wilcoxon "
        f"signed-rank test after {p['correction']} at alpha {fmt(p['alpha'])}."
    )
    return [heading("Paired comparison with the baselines"), table(head + ["verdict"], rows),
            text(explain)]  # fmt: skip


def rm_accuracy(metrics: dict, plots: Plots) -> Blocks:
    scorers = metrics.get("rm_accuracy")
    if not scorers:
        return []
    rows = [
        [a["scorer"], a["n"], a["correct"], a["wrong"], a["ties"], pct(a["accuracy"])]
        for a in scorers
    ]
    undefined = [
        text(f"{a['scorer']}: {a['notes']['accuracy']}.")
        for a in scorers
        if a.get("accuracy") is None and (a.get("notes") or {}).get("accuracy")
    ]
    return [
        heading("Reward-model accuracy on pairs"),
        table(["scorer", "pairs", "correct", "wrong", "ties", "accuracy"], rows),
        *undefined,
        text(
            "A pair is correct when the chosen response scores strictly higher than the "
            "rejected one; a policy scores a response by p_i = log-prob / tokens "
            "(RRHF paper Table 5); equal scores are ties, counted apart."
        ),
    ]


def best_of_n(metrics: dict, plots: Plots) -> Blocks:
    curves = metrics.get("best_of_n")
    if not curves:
        return []
    ns = sorted({p["n"] for c in curves.values() for p in c})
    rows = [
        [label] + [next((p["expected_max"] for p in c if p["n"] == n), None) for n in ns]
        for label, c in curves.items()
    ]
    return _explained_table(
        "Best-of-n",
        table(["samples"] + [f"n={n}" for n in ns], rows),
        "Expected maximum reward of n responses drawn without replacement from a prompt's k "
        "scored samples, averaged over prompts with k >= n (exact, over all C(k, n) subsets).",
        plots,
        ("best_of_n.png", "Best-of-n reward curve"),
    )


def sample_stats(metrics: dict, plots: Plots) -> Blocks:
    """RRHF paper Table 6 of every scored training file, by source."""
    files = metrics.get("sample_stats")
    if not files:
        return []
    head = ["source", "prompts", "responses", "mean", "std", "mean best", "best"]
    keys = ["source", "prompts", "responses", "mean", "std", "max", "best"]
    b = []
    for label, stats in files.items():
        b += [
            heading(f"Sample statistics: {label}"),
            table(head, [[s[k] for k in keys] for s in stats]),
        ]
    return b + [
        text(
            "RRHF paper Table 6 columns: mean and std over all responses of a source; "
            "mean best (the paper's max) = the average over prompts of the best response's "
            "reward; best = the highest reward."
        )
    ]


def reward_length_table(sets: dict[str, dict]) -> dict:
    """One row per sample set ({label: `metrics.reward_length_correlation` result}); the
    evaluate report and the reward-model report share it."""
    head = ["samples", "length unit", "prompts", "skipped", "mean r", "median r", "r > 0"]
    keys = ["length_unit", "prompts", "skipped", "mean_r", "median_r"]
    rows = [[k] + [v[c] for c in keys] + [pct(v["positive_fraction"])] for k, v in sets.items()]
    return table(head, rows)


def reward_length(metrics: dict, plots: Plots) -> Blocks:
    if not metrics.get("reward_length"):
        return []
    return _explained_table(
        "Reward-length correlation",
        reward_length_table(metrics["reward_length"]),
        "Pearson r between reward and response length over each prompt's k samples (RLHF "
        "Workflow Fig. 5); prompts with fewer than 2 samples or constant reward/length are "
        "skipped.",
        plots,
        ("reward_length.png", "Reward-length correlation"),
    )


def training(metrics: dict, plots: Plots) -> Blocks:
    """The last logged value of each curve per training run."""
    if not metrics.get("training"):
        return []
    keys = ["step", "loss", "rank_accuracy", "eval_loss", "eval_rank_accuracy"]
    rows = []
    for run, log in metrics["training"].items():
        last = {k: v for e in log for k, v in e.items() if finite(v)}
        rows.append([run] + [last.get(k) for k in keys])
    head = ["run", "last step", "loss", "rank accuracy", "eval loss", "eval rank accuracy"]
    b = [heading("Training curves"), table(head, rows)]
    return _with_plot(b, plots, "training.png", "Training loss and ranking accuracy")


def iterations(metrics: dict, plots: Plots) -> Blocks:
    """Every numeric per-iteration metric of a loop run."""
    if not metrics.get("loop"):
        return []
    its = [flatten_metrics(it) for it in metrics["loop"]["iterations"]]
    keys = numeric_keys(its)
    if "heldout.mean_reward" in keys:  # copies of it, kept in metrics.json for old readers
        keys = [k for k in keys if k not in ("heldout_reward", "heldout_reward_before")]
    rows = [[it.get("iteration", i)] + [it.get(k) for k in keys] for i, it in enumerate(its)]
    b = [heading("Iterations"), table(["iteration"] + keys, rows)]
    return _with_plot(b, plots, "loop.png", "Per-iteration metrics")


def examples(metrics: dict, plots: Plots) -> Blocks:
    if not metrics.get("examples"):
        return []
    return [heading("Example generations")] + [example(ex) for ex in metrics["examples"]]


def notes(metrics: dict, plots: Plots) -> Blocks:
    """Why values are undefined or steps were skipped: a list, or {key: why}."""
    said = metrics.get("notes")
    if isinstance(said, dict):
        said = [f"{k}: {v}" for k, v in said.items()]
    return [heading("Notes"), bullets(said)] if said else []


def _reward_plot_data(metrics: dict) -> dict | None:
    entries = metrics.get("models") or {}
    return entries if any(finite(m.get("mean_reward")) for m in entries.values()) else None


def _reward_length_plot_data(metrics: dict) -> dict | None:
    sets = metrics.get("reward_length") or {}
    return sets if any(v.get("per_prompt") for v in sets.values()) else None


def _loop_plot_data(metrics: dict) -> list[dict] | None:
    its = (metrics.get("loop") or {}).get("iterations")
    return its if its and loop_panels(its) else None


SECTIONS: list[Section] = [
    Section("header", header),
    Section("models", models, Plot("reward.png", _reward_plot_data, plot_rewards)),
    Section("win_rates", win_rates),
    Section("paired", paired),
    Section("rm_accuracy", rm_accuracy),
    Section(
        "best_of_n",
        best_of_n,
        Plot("best_of_n.png", lambda m: m.get("best_of_n") or None, plot_best_of_n),
    ),
    Section("sample_stats", sample_stats),
    Section(
        "reward_length",
        reward_length,
        Plot("reward_length.png", _reward_length_plot_data, plot_reward_length),
    ),
    Section(
        "training",
        training,
        Plot("training.png", lambda m: m.get("training") or None, plot_training),
    ),
    Section("iterations", iterations, Plot("loop.png", _loop_plot_data, plot_loop)),
    Section("examples", examples),
    Section("notes", notes),
]


def sections() -> list[Section]:
    """The registry as it is now, in report order."""
    return list(SECTIONS)


def register_section(section: Section, *, before: str | None = "examples") -> None:
    """Add a section to every later report, ahead of the section named `before` (default: the
    example generations, so new metrics come before the long examples and the notes; None: at
    the end). Names and plot files are unique."""
    if any(s.name == section.name for s in SECTIONS):
        raise ValueError(f"report section '{section.name}' is already registered")
    if section.plot and any(s.plot and s.plot.file == section.plot.file for s in SECTIONS):
        raise ValueError(f"plot file '{section.plot.file}' is already drawn by another section")
    names = [s.name for s in SECTIONS]
    if before is not None and before not in names:
        raise ValueError(f"no report section '{before}' (sections: {', '.join(names)})")
    SECTIONS.insert(names.index(before) if before is not None else len(SECTIONS), section)
