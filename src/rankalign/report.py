"""The evaluation report: `metrics.json`, `report.md`, `report.html` and PNG plots in one folder.

`write_report(metrics, out_dir)` takes the dict `rankalign.evaluate` builds and writes:

| file | content |
|---|---|
| metrics.json | every number, as computed (valid JSON: an undefined value is `null`, with a `notes` entry saying why) |
| report.md / report.html | the same tables and plots; the HTML is self-contained (inline CSS) and refers to the PNGs beside it by relative path |
| reward.png | average reward per model with its 95% bootstrap interval (bar + error bars) |
| best_of_n.png | expected best-of-n reward against n (RRHF paper Table 2 "Best-of-4", Eq. 7) |
| reward_length.png | per-prompt reward-length Pearson coefficients (RLHF Workflow Fig. 5) |
| training.png | loss and ranking accuracy curves from trainer logs (RRHF paper Figure 3) |
| loop.png | each numeric per-iteration metric of a `loop` run |

Both documents are rendered from one list of blocks (heading, text, table, image, example), so
they always hold the same content. Each PNG records the names of the curves it draws in its
`Description` text chunk (`curves: a; b; ...`), read from the axes' legends and titles.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from rankalign.data import atomic_write_text, write_json

PLOT_FILES = ("reward.png", "best_of_n.png", "reward_length.png", "training.png", "loop.png")

# ----------------------------------------------------------------------------- plots


def pyplot():
    """matplotlib.pyplot rendering to files only (the Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, title: str) -> list[str]:
    """Save a figure as PNG with its curve names in the metadata and close it; return those names.

    The PNG is written beside `path` and renamed over it: a reader never sees half a file."""
    names = []
    for ax in fig.axes:
        if ax.get_title():
            names.append(ax.get_title())
        names += [label for label in ax.get_legend_handles_labels()[1] if not label.startswith("_")]
    names = list(dict.fromkeys(names))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(
        tmp,
        dpi=100,
        bbox_inches="tight",
        metadata={"Title": title, "Description": "curves: " + "; ".join(names)},
    )
    os.replace(tmp, path)
    pyplot().close(fig)
    return names


def plot_rewards(models: dict[str, dict], path: Path) -> list[str]:
    """Bars: mean reward per model; error bars: its 95% bootstrap interval."""
    plt = pyplot()
    rows = [(name, m) for name, m in models.items() if _finite(m.get("mean_reward"))]
    names = [name for name, _ in rows]
    means = [m["mean_reward"] for _, m in rows]

    def bound(m, key):
        return m[key] if _finite(m.get(key)) else m["mean_reward"]

    low = [m["mean_reward"] - bound(m, "ci_low") for _, m in rows]
    high = [bound(m, "ci_high") - m["mean_reward"] for _, m in rows]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(names) + 2), 3.6))
    ax.bar(
        range(len(names)),
        means,
        yerr=[low, high],
        capsize=6,
        color="tab:blue",
        label="mean reward (95% bootstrap CI)",
    )
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylabel("reward")
    ax.set_title("Average reward per model")
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path, "Average reward per model")


def plot_best_of_n(curves: dict[str, list[dict]], path: Path) -> list[str]:
    """One line per sample set: expected max reward of n samples against n (log2 axis)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for label, curve in curves.items():
        ax.plot(
            [p["n"] for p in curve],
            [p["expected_max"] for p in curve],
            marker="o",
            label=f"best-of-n: {label}",
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("n (samples per prompt)")
    ax.set_ylabel("expected max reward")
    ax.set_title("Best-of-n reward")
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path, "Best-of-n reward")


def plot_reward_length(sets: dict[str, dict], path: Path) -> list[str]:
    """Left: histogram of per-prompt Pearson r; right: r against mean length (Fig. 5's axes)."""
    plt = pyplot()
    fig, (hist, scatter) = plt.subplots(1, 2, figsize=(9, 3.6))
    for label, rl in sets.items():
        rs = [p["r"] for p in rl["per_prompt"]]
        mean_r = f"{rl['mean_r']:.2f}" if _finite(rl.get("mean_r")) else "n/a"
        hist.hist(rs, bins=20, range=(-1, 1), alpha=0.6, label=f"{label} (mean r={mean_r})")
        scatter.scatter(
            [p["mean_length"] for p in rl["per_prompt"]], rs, s=12, alpha=0.7, label=label
        )
    hist.set_xlabel("reward-length Pearson r (per prompt)")
    hist.set_ylabel("prompts")
    hist.set_title("Reward-length correlation")
    hist.legend(loc="best", fontsize=8)
    scatter.axhline(0, color="grey", lw=0.5)
    units = {rl.get("length_unit", "tokens") for rl in sets.values()}
    scatter.set_xlabel(f"mean response length ({', '.join(sorted(units))})")
    scatter.set_ylabel("Pearson r")
    scatter.set_title("Correlation against mean response length")
    scatter.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, "Reward-length correlation")


TRAIN_PANELS = (
    ("Ranking accuracy", "pair accuracy", ("rank_accuracy", "eval_rank_accuracy")),
    ("Reward margin", "margin (w - l)", ("reward_margin", "eval_reward_margin")),
    ("Learning rate", "learning rate", ("learning_rate",)),
)
LOSS_SCALE_RATIO = 10.0  # loss curves further apart than this get panels of their own


def _is_loss(key: str) -> bool:
    return key.removeprefix("eval_") == "loss" or key.removeprefix("eval_").startswith("loss_")


def training_panels(runs: dict[str, list[dict]]) -> list[dict]:
    """The data `plot_training` draws, one dict per panel: `title`, `ylabel` and `series`
    ({label: (steps, values)}). Losses are grouped by scale: curves whose typical size (median
    |value|) is within LOSS_SCALE_RATIO of the panel's largest share a panel, so RRHF's SFT term
    (~40) does not flatten its ranking term (~0.2). Then pair accuracy, reward margin and the
    learning rate, each where logged."""

    def series(keys) -> dict[str, tuple[list, list]]:
        out = {}
        for run, log in runs.items():
            for key in keys:
                points = [(e["step"], e[key]) for e in log if _finite(e.get(key)) and "step" in e]
                if points:
                    steps, values = zip(*points)
                    out[f"{run}: {key}" if len(runs) > 1 else key] = (list(steps), list(values))
        return out

    loss_keys = list(
        dict.fromkeys(k for log in runs.values() for e in log for k in e if _is_loss(k))
    )
    losses = series(loss_keys)
    size = {
        label: float(np.median(np.abs(values))) or 1e-12 for label, (_, values) in losses.items()
    }
    groups: list[list[str]] = []
    for label in sorted(losses, key=lambda lb: -size[lb]):
        if groups and size[groups[-1][0]] / size[label] <= LOSS_SCALE_RATIO:
            groups[-1].append(label)
        else:
            groups.append([label])
    groups.sort(key=lambda g: min(loss_keys.index(lb.split(": ")[-1]) for lb in g))
    panels = [
        {
            "title": "Training loss" if len(groups) == 1 else f"Training loss: {', '.join(g)}",
            "ylabel": "loss",
            "series": {label: losses[label] for label in sorted(g, key=list(losses).index)},
        }
        for g in groups
    ]
    for title, ylabel, keys in TRAIN_PANELS:
        if data := series(keys):
            panels.append({"title": title, "ylabel": ylabel, "series": data})
    return panels


def plot_training(runs: dict[str, list[dict]], path: Path) -> list[str]:
    """Trainer `log_history` curves against the global step (`training_panels`): losses in
    panels by scale, then pair accuracy, reward margin and learning rate; axes labelled."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    panels = training_panels(runs)
    cols = max(1, min(3, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False, layout="constrained"
    )
    for ax, panel in zip(axes.flat, panels):
        for label, (steps, values) in panel["series"].items():
            ax.plot(steps, values, marker="." if len(steps) < 40 else None, label=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step")
        ax.set_ylabel(panel["ylabel"])
        ax.set_title(panel["title"], fontsize=9)
        if panel["ylabel"] == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        ax.legend(loc="best", fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    return save_figure(fig, path, "Training curves")


LOOP_REWARD_KEYS = ("heldout.mean_reward", "mean_reward", "max_reward")
LOOP_TITLES = {
    "heldout.mean_reward": "held-out reward (greedy, 95% CI)",
    "mean_reward": "sample reward: mean",
    "max_reward": "sample reward: mean of each prompt's best",
    "std_reward": "sample reward: std",
}


def flatten_metrics(d: dict, prefix: str = "") -> dict:
    """Nested metric dicts as one level, `a.b` keys (`heldout.mean_reward`)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten_metrics(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def loop_panels(iterations: list[dict]) -> list[dict]:
    """The data `plot_loop` draws, one dict per panel: `title`, `key`, `x`, `y`, `yerr` (None or
    [below, above] lists from the `ci_low`/`ci_high` beside the key) and `ylim` (shared by
    every reward panel, so one scale compares them, error bars included; None elsewhere).

    `iterations` are flat per-iteration dicts (`flatten_metrics`), iteration 0 (the base
    policy's held-out reward) included when the run has it. Left out: interval bounds (drawn as
    error bars), copies of a plotted value (`heldout_reward`, `heldout_reward_before`) and series
    that never change (counts that stay constant say nothing per iteration)."""
    its = [flatten_metrics(it) for it in iterations]
    if any("heldout.mean_reward" in it for it in its):
        its = [
            {k: v for k, v in it.items() if k not in ("heldout_reward", "heldout_reward_before")}
            for it in its
        ]
    keys = [
        k
        for k in _numeric_keys(its)
        if not k.endswith(("ci_low", "ci_high")) and k not in ("heldout.n", "heldout.std")
    ]
    keys.sort(key=lambda k: LOOP_REWARD_KEYS.index(k) if k in LOOP_REWARD_KEYS else 99)
    panels = []
    for key in keys:
        pts = [(it.get("iteration", i), it) for i, it in enumerate(its) if _finite(it.get(key))]
        ys = [it[key] for _, it in pts]
        if len(set(ys)) < 2 and len(ys) > 1 or not ys:
            continue
        prefix = key[: -len("mean_reward")] if key.endswith("mean_reward") else None
        yerr = None
        if prefix is not None and any(_finite(it.get(prefix + "ci_low")) for _, it in pts):
            yerr = [
                [
                    it[key] - it[prefix + "ci_low"] if _finite(it.get(prefix + "ci_low")) else 0.0
                    for _, it in pts
                ],
                [
                    it[prefix + "ci_high"] - it[key] if _finite(it.get(prefix + "ci_high")) else 0.0
                    for _, it in pts
                ],
            ]
        panels.append(
            {
                "key": key,
                "title": LOOP_TITLES.get(key, key),
                "x": [x for x, _ in pts],
                "y": ys,
                "yerr": yerr,
                "ylim": None,
            }
        )
    rewards = [p for p in panels if p["key"] in LOOP_REWARD_KEYS]
    if rewards:
        lows = [
            y - (p["yerr"][0][i] if p["yerr"] else 0) for p in rewards for i, y in enumerate(p["y"])
        ]
        highs = [
            y + (p["yerr"][1][i] if p["yerr"] else 0) for p in rewards for i, y in enumerate(p["y"])
        ]
        pad = 0.05 * ((max(highs) - min(lows)) or 1.0)
        for p in rewards:
            p["ylim"] = (min(lows) - pad, max(highs) + pad)
    return panels


def plot_loop(iterations: list[dict], path: Path) -> list[str]:
    """One small panel per varying per-iteration metric (`loop_panels`): intervals as error
    bars, the reward panels on one y-range, iteration 0 = the base policy."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    panels = loop_panels(iterations)
    cols = max(1, min(3, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    # constrained layout keeps the figure title clear of the panels' titles
    fig, axes = plt.subplots(
        rows, cols, figsize=(4 * cols, 3 * rows + 0.4), squeeze=False, layout="constrained"
    )
    xs = [x for p in panels for x in p["x"]]
    for ax, p in zip(axes.flat, panels):
        ax.errorbar(p["x"], p["y"], yerr=p["yerr"], marker="o", capsize=4, label=p["title"])
        if p["ylim"]:
            ax.set_ylim(*p["ylim"])
            ax.set_ylabel("reward")
        ax.set_xlim(min(xs) - 0.3, max(xs) + 0.3)  # every panel on the same iterations
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("iteration (0 = base policy)" if 0 in p["x"] else "iteration")
        ax.set_title(p["title"], fontsize=9)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("Per-iteration metrics")
    return save_figure(fig, path, "Per-iteration metrics")


def _numeric_keys(iterations: list[dict]) -> list[str]:
    keys: dict[str, None] = {}
    for it in iterations:
        for k, v in it.items():
            if k != "iteration" and _finite(v):
                keys[k] = None
    return list(keys)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


# ----------------------------------------------------------------------------- blocks


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        return f"{v:.{digits}f}"
    return str(v)


def pct(v: Any) -> str:
    """A fraction as a percentage for tables; "-" where it is undefined."""
    return f"{100 * v:.1f}%" if _finite(v) else "-"


def number(v: Any, spec: str = ".3f", missing: str = "n/a") -> str:
    """A metric for the console (`spec` as in format(), e.g. "+.3f"); `missing` where it is
    undefined (None, NaN) or absent, as metrics are since they are written as strict JSON."""
    return format(v, spec) if _finite(v) else missing


def _table(header: list[str], rows: list[list[Any]]) -> dict:
    return {"kind": "table", "header": header, "rows": [[_fmt(c) for c in r] for r in rows]}


def _text(s: str) -> dict:
    return {"kind": "text", "text": s}


def _heading(s: str, level: int = 2) -> dict:
    return {"kind": "heading", "text": s, "level": level}


def _image(file: str, alt: str) -> dict:
    return {"kind": "image", "file": file, "alt": alt}


def model_table(models: dict[str, dict]) -> dict:
    """The side-by-side table (RRHF paper Table 2): one row per model, present columns only."""
    optional = [
        ("perplexity", "PPL"),
        ("mean_length", "length (tokens)"),
        ("bleu", "BLEU"),
        ("rouge1", "ROUGE-1"),
        ("rouge2", "ROUGE-2"),
        ("rougeL", "ROUGE-L"),
    ]
    cols = [(k, h) for k, h in optional if any(_finite(m.get(k)) for m in models.values())]
    if any(m.get("empty_responses") for m in models.values()):  # a format mismatch shows here
        cols.append(("empty_responses", "empty responses"))
    header = ["model", "n", "reward", "95% CI", "std"] + [h for _, h in cols]
    rows = []
    for name, m in models.items():
        ci = f"[{_fmt(m.get('ci_low'))}, {_fmt(m.get('ci_high'))}]"
        rows.append(
            [name, m.get("n"), m.get("mean_reward"), ci, m.get("std")] + [m.get(k) for k, _ in cols]
        )
    return _table(header, rows)


def build_blocks(metrics: dict, plots: dict[str, list[str]]) -> list[dict]:
    """The report's content, in order; sections without data are left out."""
    b: list[dict] = [_heading("rankalign evaluation report", 1)]
    cfg = metrics.get("config", {})
    models = metrics.get("models") or {}
    header = []  # only what this evaluation used: a --loop_run alone has no prompts
    if cfg.get("prompts"):
        header.append(f"Prompts: `{cfg['prompts']}` ({metrics.get('num_prompts', '?')} prompts)")
    if cfg.get("reward"):
        header.append(f"reward: `{' + '.join(map(str, cfg['reward']))}`")
    if any(m.get("kind") == "model" for m in models.values()):
        header.append(
            f"generation: {cfg.get('strategy', 'greedy')}, {cfg.get('max_new_tokens')} new tokens"
        )
    if header:
        header[0] = header[0][0].upper() + header[0][1:]
        b.append(_text("; ".join(header) + "."))
    if models:
        explain = (
            "reward: mean over prompts with a 95% percentile-bootstrap interval "
            f"({cfg.get('bootstrap_resamples', 1000)} resamples, seed {cfg.get('seed', 0)})"
        )
        if metrics.get("perplexity_model"):
            explain += (
                "; PPL: perplexity of the responses given their prompts under "
                f"`{metrics['perplexity_model']}`"
            )
        b += [_heading("Models"), model_table(models), _text(explain + ".")]
        if "reward.png" in plots:
            b.append(_image("reward.png", "Average reward per model with 95% intervals"))
    if metrics.get("win_rates"):
        b += [
            _heading("Win rate"),
            _table(
                ["model", "baseline", "judge", "n", "win", "tie", "lose", "win rate", "win+tie/2"],
                [
                    [
                        w["model"],
                        w["baseline"],
                        w["judge"],
                        w["n"],
                        w["wins"],
                        w["ties"],
                        w["losses"],
                        pct(w["win_rate"]),
                        pct(w["win_rate_ties_half"]),
                    ]
                    for w in metrics["win_rates"]
                ],
            ),
        ]
    if metrics.get("rm_accuracy"):
        b += [
            _heading("Reward-model accuracy on pairs"),
            _table(
                ["scorer", "pairs", "correct", "wrong", "ties", "accuracy"],
                [
                    [a["scorer"], a["n"], a["correct"], a["wrong"], a["ties"], pct(a["accuracy"])]
                    for a in metrics["rm_accuracy"]
                ],
            ),
            *[
                _text(f"{a['scorer']}: {a['notes']['accuracy']}.")
                for a in metrics["rm_accuracy"]
                if a.get("accuracy") is None and (a.get("notes") or {}).get("accuracy")
            ],
            _text(
                "A pair is correct when the chosen response scores strictly higher than the "
                "rejected one; a policy scores a response by p_i = log-prob / tokens "
                "(RRHF paper Table 5); equal scores are ties, counted apart."
            ),
        ]
    if metrics.get("best_of_n"):
        curves = metrics["best_of_n"]
        ns = sorted({p["n"] for c in curves.values() for p in c})
        rows = [
            [label] + [next((_fmt(p["expected_max"]) for p in c if p["n"] == n), "-") for n in ns]
            for label, c in curves.items()
        ]
        b += [
            _heading("Best-of-n"),
            {"kind": "table", "header": ["samples"] + [f"n={n}" for n in ns], "rows": rows},
            _text(
                "Expected maximum reward of n responses drawn without replacement from a "
                "prompt's k scored samples, averaged over prompts with k >= n (exact, over "
                "all C(k, n) subsets)."
            ),
        ]
        if "best_of_n.png" in plots:
            b.append(_image("best_of_n.png", "Best-of-n reward curve"))
    if metrics.get("sample_stats"):
        for label, stats in metrics["sample_stats"].items():
            b += [
                _heading(f"Sample statistics: {label}"),
                _table(
                    [
                        "source",
                        "prompts",
                        "responses",
                        "mean",
                        "std",
                        "mean best",
                        "best",
                    ],
                    [
                        [
                            s["source"],
                            s["prompts"],
                            s["responses"],
                            s["mean"],
                            s["std"],
                            s["max"],
                            s["best"],
                        ]
                        for s in stats
                    ],
                ),
            ]
        b.append(
            _text(
                "RRHF paper Table 6 columns: mean and std over all responses of a source; "
                "mean best (the paper's max) = the average over prompts of the best response's "
                "reward; best = the highest reward."
            )
        )
    if metrics.get("reward_length"):
        rl = metrics["reward_length"]
        b += [
            _heading("Reward-length correlation"),
            _table(
                ["samples", "length unit", "prompts", "skipped", "mean r", "median r", "r > 0"],
                [
                    [
                        k,
                        v["length_unit"],
                        v["prompts"],
                        v["skipped"],
                        v["mean_r"],
                        v["median_r"],
                        pct(v["positive_fraction"]),
                    ]
                    for k, v in rl.items()
                ],
            ),
            _text(
                "Pearson r between reward and response length over each prompt's k samples "
                "(RLHF Workflow Fig. 5); prompts with fewer than 2 samples or constant "
                "reward/length are skipped."
            ),
        ]
        if "reward_length.png" in plots:
            b.append(_image("reward_length.png", "Reward-length correlation"))
    if metrics.get("training"):
        b.append(_heading("Training curves"))
        rows = []
        for run, log in metrics["training"].items():
            last = {k: v for e in log for k, v in e.items() if _finite(v)}
            rows.append(
                [
                    run,
                    last.get("step"),
                    last.get("loss"),
                    last.get("rank_accuracy"),
                    last.get("eval_loss"),
                    last.get("eval_rank_accuracy"),
                ]
            )
        b.append(
            _table(
                ["run", "last step", "loss", "rank accuracy", "eval loss", "eval rank accuracy"],
                rows,
            )
        )
        if "training.png" in plots:
            b.append(_image("training.png", "Training loss and ranking accuracy"))
    if metrics.get("loop"):
        its = [flatten_metrics(it) for it in metrics["loop"]["iterations"]]
        keys = _numeric_keys(its)
        if "heldout.mean_reward" in keys:  # copies of it, kept in metrics.json for old readers
            keys = [k for k in keys if k not in ("heldout_reward", "heldout_reward_before")]
        b += [
            _heading("Iterations"),
            _table(
                ["iteration"] + keys,
                [[it.get("iteration", i)] + [it.get(k) for k in keys] for i, it in enumerate(its)],
            ),
        ]
        if "loop.png" in plots:
            b.append(_image("loop.png", "Per-iteration metrics"))
    if metrics.get("examples"):
        b.append(_heading("Example generations"))
        for ex in metrics["examples"]:
            b.append(
                {
                    "kind": "example",
                    "id": ex["id"],
                    "prompt": ex["prompt"],
                    "responses": ex["responses"],
                    "rewards": ex.get("rewards") or {},
                }
            )
    notes = metrics.get("notes")
    if isinstance(notes, dict):  # {key: why} of undefined values
        notes = [f"{k}: {v}" for k, v in notes.items()]
    if notes:
        b += [_heading("Notes"), {"kind": "list", "items": [str(n) for n in notes]}]
    return b


# ----------------------------------------------------------------------------- renderers


def _response_label(example: dict, name: str) -> str:
    """An example response's heading: the entry's name and, when scored, its reward."""
    rewards = example.get("rewards") or {}
    if name not in rewards:
        return name
    return f"{name} (reward {_fmt(rewards[name], 4)})"


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[dict]) -> str:
    out = []
    for blk in blocks:
        kind = blk["kind"]
        if kind == "heading":
            out.append("#" * blk["level"] + " " + blk["text"])
        elif kind == "text":
            out.append(blk["text"])
        elif kind == "table":
            out.append("| " + " | ".join(map(_md_cell, blk["header"])) + " |")
            out.append("|" + "---|" * len(blk["header"]))
            out += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in blk["rows"]]
        elif kind == "image":
            out.append(f"![{blk['alt']}]({blk['file']})")
        elif kind == "list":
            out += [f"- {item}" for item in blk["items"]]
        elif kind == "example":
            out.append(f"**{blk['id']}** — prompt:\n\n```text\n{_prompt_str(blk['prompt'])}\n```")
            for name, text in blk["responses"].items():
                out.append(f"*{_response_label(blk, name)}*:\n\n```text\n{text}\n```")
        out.append("")
    return "\n".join(out)


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;display:block;margin:1em 0}pre{background:#f6f6f6;padding:.6em;white-space:pre-wrap}
.example{border-left:3px solid #8ab;padding-left:1em;margin:1em 0}code{background:#f3f3f3}"""

# Counts images that actually decoded (naturalWidth > 0) once the page has loaded, and writes
# the count into the page: a headless browser's --dump-dom shows whether the plots load.
IMAGE_CHECK_JS = """window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  document.getElementById('images-loaded').textContent = ok + '/' + imgs.length;
});"""


def _inline(s: str) -> str:
    """Escape text; `code` spans become <code>."""
    parts = html.escape(s).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(blocks: list[dict]) -> str:
    title = next((b["text"] for b in blocks if b["kind"] == "heading"), "report")
    body = []
    for blk in blocks:
        kind = blk["kind"]
        if kind == "heading":
            body.append(f"<h{blk['level']}>{html.escape(blk['text'])}</h{blk['level']}>")
        elif kind == "text":
            body.append(f"<p>{_inline(blk['text'])}</p>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in blk["header"])
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                for r in blk["rows"]
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "image":
            body.append(f'<img src="{html.escape(blk["file"])}" alt="{html.escape(blk["alt"])}">')
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in blk["items"]) + "</ul>")
        elif kind == "example":
            parts = [
                f"<div class='example'><p><b>{html.escape(blk['id'])}</b> — prompt:</p>",
                f"<pre>{html.escape(_prompt_str(blk['prompt']))}</pre>",
            ]
            for name, text in blk["responses"].items():
                label = html.escape(_response_label(blk, name))
                parts.append(f"<p><i>{label}</i>:</p><pre>{html.escape(text)}</pre>")
            body.append("".join(parts) + "</div>")
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        # hidden: for headless-browser checks (--dump-dom), not for readers
        + "\n<p class='footer' hidden>images loaded: <span id='images-loaded'>?</span></p>"
        + f"\n<script>{IMAGE_CHECK_JS}</script>\n</body></html>\n"
    )


def _prompt_str(prompt: Any) -> str:
    if isinstance(prompt, list):  # chat messages
        return "\n".join(f"[{m.get('role')}] {m.get('content')}" for m in prompt)
    return str(prompt)


# ----------------------------------------------------------------------------- entry point


def make_plots(metrics: dict, out_dir: str | os.PathLike) -> dict[str, list[str]]:
    """Draw every plot the metrics have data for; returns {file: curve names}."""
    out = Path(out_dir)
    plots: dict[str, list[str]] = {}
    jobs = []
    if any(_finite(m.get("mean_reward")) for m in (metrics.get("models") or {}).values()):
        jobs.append(("reward.png", plot_rewards, metrics["models"]))
    if metrics.get("best_of_n"):
        jobs.append(("best_of_n.png", plot_best_of_n, metrics["best_of_n"]))
    if any(v.get("per_prompt") for v in (metrics.get("reward_length") or {}).values()):
        jobs.append(("reward_length.png", plot_reward_length, metrics["reward_length"]))
    if metrics.get("training"):
        jobs.append(("training.png", plot_training, metrics["training"]))
    if metrics.get("loop") and loop_panels(metrics["loop"]["iterations"]):
        jobs.append(("loop.png", plot_loop, metrics["loop"]["iterations"]))
    from tqdm.auto import tqdm

    for file, fn, data in tqdm(jobs, desc="plots", unit="plot", disable=not jobs):
        plots[file] = fn(data, out / file)
    return plots


def write_report(metrics: dict, out_dir: str | os.PathLike) -> dict[str, str]:
    """Write metrics.json, the PNG plots, report.md and report.html into `out_dir`.

    Returns the paths written, by name.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in PLOT_FILES:  # a plot from an earlier run must not survive without its data
        (out / stale).unlink(missing_ok=True)
    plots = make_plots(metrics, out)
    metrics = {**metrics, "plots": plots}
    write_json(out / "metrics.json", metrics, ensure_ascii=False)  # NaN -> null with a note
    blocks = build_blocks(metrics, plots)
    atomic_write_text(out / "report.md", render_markdown(blocks))
    atomic_write_text(out / "report.html", render_html(blocks))
    paths = {
        "metrics": out / "metrics.json",
        "markdown": out / "report.md",
        "html": out / "report.html",
    }
    paths.update({file: out / file for file in plots})
    return {k: str(v) for k, v in paths.items()}


# ----------------------------------------------------------------------------- compare


COMPARE_PLOTS = ("compare_reward.png", "compare_steps.png")


def compare_reward_points(methods: dict[str, dict]) -> list[tuple[str, float, float, float]]:
    """(method, mean, mean - ci_low, ci_high - mean) of each method with a finite mean; an
    undefined bound draws no bar on its side."""
    points = []
    for name, m in methods.items():
        mean = m.get("mean_reward")
        if not _finite(mean):
            continue
        low = mean - m["ci_low"] if _finite(m.get("ci_low")) else 0.0
        high = m["ci_high"] - mean if _finite(m.get("ci_high")) else 0.0
        points.append((name, mean, low, high))
    return points


def plot_compare_rewards(methods: dict[str, dict], path: Path) -> list[str]:
    """Mean held-out reward per method (base included) with its 95% bootstrap interval."""
    plt = pyplot()
    points = compare_reward_points(methods)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(points) + 2), 3.6))
    x = range(len(points))
    ax.errorbar(
        x,
        [p[1] for p in points],
        yerr=[[p[2] for p in points], [p[3] for p in points]],
        fmt="o",
        capsize=6,
        color="tab:blue",
        label="mean held-out reward (95% bootstrap CI)",
    )
    base = methods.get("base", {}).get("mean_reward")
    if _finite(base):
        ax.axhline(base, color="grey", lw=0.8, ls="--", label="base")
    ax.set_xticks(list(x), [p[0] for p in points], rotation=20, ha="right")
    ax.set_ylabel("reward")
    ax.set_title("Held-out reward per method")
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path, "Held-out reward per method")


def plot_compare_steps(curves: dict[str, list[dict]], path: Path) -> list[str]:
    """Held-out reward against optimizer step, one line per method (step 0: the base model);
    with at most three methods, each one's 95% bootstrap interval shaded."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    drawn = [
        n
        for n, c in curves.items()
        if n != "base" and any(_finite(p.get("mean_reward")) for p in c)
    ]
    for name, curve in curves.items():
        pts = [p for p in curve if _finite(p.get("mean_reward"))]
        if name not in drawn:
            continue
        steps = [p["step"] for p in pts]
        (line,) = ax.plot(steps, [p["mean_reward"] for p in pts], marker="o", label=name)
        # intervals of more than three methods overlap into one grey area: lines only then
        if len(drawn) <= 3 and all(_finite(p.get(k)) for p in pts for k in ("ci_low", "ci_high")):
            low, high = [p["ci_low"] for p in pts], [p["ci_high"] for p in pts]
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.12, lw=0)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("mean held-out reward")
    ax.set_title("Held-out reward vs training step")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return save_figure(fig, path, "Held-out reward vs training step")


def compare_blocks(table: dict, plots: dict[str, list[str]]) -> list[dict]:
    s = table.get("settings", {})
    blocks = [
        _heading("rankalign compare", 1),
        _text(
            f"Start model `{s.get('model')}`, reward `{s.get('reward')}`, {s.get('max_steps')} "
            f"optimizer steps per method (batch {s.get('batch_size')}), seeds {s.get('seeds')}, "
            f"{s.get('heldout_prompts')} held-out prompts, greedy generation. The reward's 95% "
            "bootstrap interval pools every seed's held-out rewards; the win rate compares each "
            "prompt's reward with base's on the same prompt (ties apart). Perplexity is under the "
            "start model; length in tokens; train time and peak resident memory are measured "
            "around each training call (a loop method's include its sampling and scoring)."
        ),
    ]
    header = ["method", "loss", "n", "reward", "95% CI", "win vs base", "tie", "PPL", "length"]
    header += ["train s", "peak RSS MiB"]
    gpu = any(_finite(m.get("peak_gpu_mb")) for m in table["methods"].values())
    if gpu:
        header.append("peak GPU MiB")
    rows = []
    for name, m in table["methods"].items():
        ci = f"[{_fmt(m.get('ci_low'))}, {_fmt(m.get('ci_high'))}]"
        row = [name, m.get("loss") or "-", m.get("n"), m.get("mean_reward"), ci]
        row += [pct(m.get("win_rate")), pct(m.get("tie_rate")), m.get("perplexity")]
        row += [m.get("mean_length"), m.get("train_seconds"), m.get("peak_rss_mb")]
        rows.append(row + ([m.get("peak_gpu_mb")] if gpu else []))
    blocks.append(_table(header, rows))
    for file, alt in (
        ("compare_reward.png", "held-out reward per method"),
        ("compare_steps.png", "held-out reward vs training step"),
    ):
        if file in plots:
            blocks.append(_image(file, alt))
    notes = [
        f"{name}: {key}: {why}"
        for name, m in table["methods"].items()
        for key, why in (m.get("notes") or {}).items()
    ]
    if notes:
        blocks += [_heading("Notes"), {"kind": "list", "items": notes}]
    return blocks


def write_compare_report(table: dict, out_dir: str | os.PathLike) -> dict[str, str]:
    """compare.json, compare_reward.png, compare_steps.png, compare.md and compare.html."""
    out = Path(out_dir)
    plots: dict[str, list[str]] = {}
    for stale in COMPARE_PLOTS:
        (out / stale).unlink(missing_ok=True)
    if compare_reward_points(table["methods"]):
        plots["compare_reward.png"] = plot_compare_rewards(
            table["methods"], out / "compare_reward.png"
        )
    if any(
        _finite(p.get("mean_reward"))
        for name, c in table["curves"].items()
        if name != "base"
        for p in c
    ):
        plots["compare_steps.png"] = plot_compare_steps(table["curves"], out / "compare_steps.png")
    write_json(out / "compare.json", {**table, "plots": plots}, ensure_ascii=False)
    blocks = compare_blocks(table, plots)
    atomic_write_text(out / "compare.md", render_markdown(blocks))
    atomic_write_text(out / "compare.html", render_html(blocks))
    names = ("compare.json", "compare.md", "compare.html", *plots)
    return {name: str(out / name) for name in names}
