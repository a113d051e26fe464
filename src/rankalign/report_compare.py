"""The `rankalign compare` report: compare.json, compare.md, compare.html and two plots
(held-out reward per method with its 95% interval; held-out reward against optimizer step).
"""

from __future__ import annotations

import os
from pathlib import Path

from rankalign.data import atomic_write_text, write_json
from rankalign.report_blocks import (
    bullets,
    finite,
    fmt,
    heading,
    image,
    pct,
    render_html,
    render_markdown,
    text,
)
from rankalign.report_blocks import table as table_block  # compare's own dicts are `table`
from rankalign.report_plots import pyplot, save_figure

COMPARE_PLOTS = ("compare_reward.png", "compare_steps.png")


def compare_reward_points(methods: dict[str, dict]) -> list[tuple[str, float, float, float]]:
    """(method, mean, mean - ci_low, ci_high - mean) of each method with a finite mean; an
    undefined bound draws no bar on its side."""
    points = []
    for name, m in methods.items():
        mean = m.get("mean_reward")
        if not finite(mean):
            continue
        low = mean - m["ci_low"] if finite(m.get("ci_low")) else 0.0
        high = m["ci_high"] - mean if finite(m.get("ci_high")) else 0.0
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
    if finite(base):
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
        n for n, c in curves.items() if n != "base" and any(finite(p.get("mean_reward")) for p in c)
    ]
    for name, curve in curves.items():
        pts = [p for p in curve if finite(p.get("mean_reward"))]
        if name not in drawn:
            continue
        steps = [p["step"] for p in pts]
        (line,) = ax.plot(steps, [p["mean_reward"] for p in pts], marker="o", label=name)
        # intervals of more than three methods overlap into one grey area: lines only then
        if len(drawn) <= 3 and all(finite(p.get(k)) for p in pts for k in ("ci_low", "ci_high")):
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
        heading("rankalign compare", 1),
        text(
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
    gpu = any(finite(m.get("peak_gpu_mb")) for m in table["methods"].values())
    if gpu:
        header.append("peak GPU MiB")
    rows = []
    for name, m in table["methods"].items():
        ci = f"[{fmt(m.get('ci_low'))}, {fmt(m.get('ci_high'))}]"
        row = [name, m.get("loss") or "-", m.get("n"), m.get("mean_reward"), ci]
        row += [pct(m.get("win_rate")), pct(m.get("tie_rate")), m.get("perplexity")]
        row += [m.get("mean_length"), m.get("train_seconds"), m.get("peak_rss_mb")]
        rows.append(row + ([m.get("peak_gpu_mb")] if gpu else []))
    blocks.append(table_block(header, rows))
    for file, alt in (
        ("compare_reward.png", "held-out reward per method"),
        ("compare_steps.png", "held-out reward vs training step"),
    ):
        if file in plots:
            blocks.append(image(file, alt))
    notes = [
        f"{name}: {key}: {why}"
        for name, m in table["methods"].items()
        for key, why in (m.get("notes") or {}).items()
    ]
    if notes:
        blocks += [heading("Notes"), bullets(notes)]
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
        finite(p.get("mean_reward"))
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
