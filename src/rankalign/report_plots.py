"""The report's plots: PNG files whose `Description` text chunk names the curves they draw
(`curves: a; b; ...`, read from the axes' legends and titles), so a test or a reader can check a
plot without looking at it. The `*_panels` functions return the data a multi-panel plot draws,
for tests and for other tables.

| file | content |
|---|---|
| reward.png | average reward per model with its 95% bootstrap interval (bar + error bars) |
| best_of_n.png | expected best-of-n reward against n (RRHF paper Table 2 "Best-of-4", Eq. 7) |
| reward_length.png | per-prompt reward-length Pearson coefficients (RLHF Workflow Fig. 5) |
| training.png | loss and ranking accuracy curves from trainer logs (RRHF paper Figure 3) |
| loop.png | each numeric per-iteration metric of a `loop` run |
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from rankalign.report_blocks import finite


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
    rows = [(name, m) for name, m in models.items() if finite(m.get("mean_reward"))]
    names = [name for name, _ in rows]
    means = [m["mean_reward"] for _, m in rows]

    def bound(m, key):
        return m[key] if finite(m.get(key)) else m["mean_reward"]

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
        mean_r = f"{rl['mean_r']:.2f}" if finite(rl.get("mean_r")) else "n/a"
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
                points = [(e["step"], e[key]) for e in log if finite(e.get(key)) and "step" in e]
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
        for k in numeric_keys(its)
        if not k.endswith(("ci_low", "ci_high")) and k not in ("heldout.n", "heldout.std")
    ]
    keys.sort(key=lambda k: LOOP_REWARD_KEYS.index(k) if k in LOOP_REWARD_KEYS else 99)
    panels = []
    for key in keys:
        pts = [(it.get("iteration", i), it) for i, it in enumerate(its) if finite(it.get(key))]
        ys = [it[key] for _, it in pts]
        if len(set(ys)) < 2 and len(ys) > 1 or not ys:
            continue
        prefix = key[: -len("mean_reward")] if key.endswith("mean_reward") else None
        yerr = None
        if prefix is not None and any(finite(it.get(prefix + "ci_low")) for _, it in pts):
            yerr = [
                [
                    it[key] - it[prefix + "ci_low"] if finite(it.get(prefix + "ci_low")) else 0.0
                    for _, it in pts
                ],
                [
                    it[prefix + "ci_high"] - it[key] if finite(it.get(prefix + "ci_high")) else 0.0
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


def numeric_keys(iterations: list[dict]) -> list[str]:
    """Every key with a finite number in some iteration (`iteration` apart), first seen first."""
    keys: dict[str, None] = {}
    for it in iterations:
        for k, v in it.items():
            if k != "iteration" and finite(v):
                keys[k] = None
    return list(keys)
