"""The `rankalign compare` report: compare.json, compare.md, compare.html and three plots
(held-out reward per method with its 95% interval; held-out reward against optimizer step;
held-out reward against KL from the start model, the reward-KL frontier of the DPO paper's
Figure 2), the table with each method's paired difference from base, and the methods x methods
matrix of paired differences.
"""

from __future__ import annotations

import os
from pathlib import Path

from rankalign.data import atomic_write_text, write_json
from rankalign.paired import versus
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

COMPARE_PLOTS = ("compare_reward.png", "compare_steps.png", "compare_frontier.png")
QUICK_BANNER = (
    "**A --quick run: too small to decide.** A first look (few prompts, few steps, one seed); "
    "no verdict is drawn from it. Rerun without --quick to compare methods."
)


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


def frontier_points(table: dict) -> dict[str, list[dict]]:
    """{method: the curve points (step, mean_reward, ci_low, ci_high, kl, kl_ci_low, kl_ci_high)
    with a finite reward and KL}: one point per evaluated checkpoint (the final model last);
    base is its own step-0 point. Methods without a KL estimate (greedy evaluation) are left
    out."""
    out = {}
    for name, curve in table.get("curves", {}).items():
        pts = [p for p in curve if finite(p.get("mean_reward")) and finite(p.get("kl"))]
        if name != "base":
            pts = [p for p in pts if p["step"] > 0]  # step 0 is base's own point
        if pts:
            out[name] = pts
    return out


def _err(p: dict, key: str, low: str, high: str) -> tuple[float, float]:
    lo = p[key] - p[low] if finite(p.get(low)) else 0.0
    hi = p[high] - p[key] if finite(p.get(high)) else 0.0
    return max(lo, 0.0), max(hi, 0.0)


def plot_compare_frontier(points: dict[str, list[dict]], path: Path) -> list[str]:
    """Mean held-out reward against KL(policy || start model), one marker per method's final
    model with both 95% intervals as error bars; where checkpoints were evaluated, a thin line
    through the method's earlier points (reward bought by drifting lies to the right)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for name, pts in points.items():
        last = pts[-1]
        xe, ye = (
            _err(last, "kl", "kl_ci_low", "kl_ci_high"),
            _err(last, "mean_reward", "ci_low", "ci_high"),
        )
        bar = ax.errorbar(
            [last["kl"]],
            [last["mean_reward"]],
            xerr=[[xe[0]], [xe[1]]],
            yerr=[[ye[0]], [ye[1]]],
            fmt="s" if name == "base" else "o",
            capsize=4,
            label=name,
        )
        if len(pts) > 1:
            color = bar.lines[0].get_color()
            ax.plot([p["kl"] for p in pts], [p["mean_reward"] for p in pts], color=color,
                    lw=0.8, alpha=0.6, marker=".")  # fmt: skip
    ax.axvline(0.0, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("KL(policy || start model), nats per response")
    ax.set_ylabel("mean held-out reward")
    ax.set_title("Reward vs drift")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return save_figure(fig, path, "Reward vs drift")


def paired_matrix(table: dict) -> dict | None:
    """The methods x methods table of mean paired differences (row minus column, per held-out
    prompt; `compare_table.versus`), `*` where significant after Holm's correction; "·" on the
    diagonal, "-" where undefined. None without paired comparisons."""
    paired = table.get("paired") or {}
    if not paired.get("comparisons"):
        return None
    names = list(table["methods"])
    rows = []
    for a in names:
        row = [a]
        for b in names:
            if a == b:
                row.append("·")
                continue
            c = versus(paired, a, b)
            if c is None or not finite(c.get("mean_difference")):
                row.append("-")
                continue
            row.append(f"{c['mean_difference']:+.3f}" + ("*" if c.get("significant") else ""))
        rows.append(row)
    return table_block(["row − column", *names], rows)


def _delta_cells(table: dict, name: str) -> list:
    """Δ vs base, its paired interval, the verdict, the length-controlled Δ with its interval."""
    c = versus(table.get("paired") or {}, name, "base") if name != "base" else None
    if c is None:
        return ["-", "-", "-", "-"]
    ci = f"[{fmt(c.get('ci_low'))}, {fmt(c.get('ci_high'))}]"
    lc = c.get("length_controlled") or {}
    lc_cell = "-"
    if finite(lc.get("difference")):
        lc_cell = f"{lc['difference']:+.3f} [{fmt(lc.get('ci_low'))}, {fmt(lc.get('ci_high'))}]"
    return [f"{c['mean_difference']:+.3f}" if finite(c.get("mean_difference")) else "-", ci,
            c.get("verdict") or "-", lc_cell]  # fmt: skip


def compare_blocks(table: dict, plots: dict[str, list[str]]) -> list[dict]:
    s = table.get("settings", {})
    paired = table.get("paired") or {}
    blocks = [heading("rankalign compare", 1)]
    if s.get("quick"):
        blocks.append(text(QUICK_BANNER))
    blocks.append(
        text(
            f"Start model `{s.get('model')}`, reward `{s.get('reward')}`, {s.get('max_steps')} "
            f"optimizer steps per method (batch {s.get('batch_size')}), seeds {s.get('seeds')}, "
            f"{s.get('heldout_prompts')} held-out prompts, evaluation: "
            f"{s.get('evaluation', 'greedy')}. The reward's 95% bootstrap interval "
            + (
                "resamples prompts (a prompt's mean over seeds and samples is one unit)"
                if s.get("eval_samples")
                else "pools every seed's held-out rewards"
            )
            + "; Δ vs base is the mean paired difference from base per "
            "held-out prompt with its paired bootstrap interval, and the verdict reads the "
            "Wilcoxon signed-rank test after Holm's correction over every comparison of the "
            "table; Δ at equal length regresses the per-prompt length difference out. KL is "
            "KL(policy || start model) from the policy's own samples (per prompt, then the mean "
            "over prompts with a bootstrap interval). The win rate compares each prompt's reward "
            "with base's on the same prompt (ties apart). Perplexity is under the start model; "
            "length in tokens; train time and peak resident memory are measured around each "
            "training call (a loop method's include its sampling and scoring)."
        )
    )
    header = ["method", "loss", "n", "reward", "95% CI", "Δ vs base", "Δ 95% CI", "verdict"]
    header += ["Δ at equal length", "KL", "KL 95% CI", "win vs base", "tie", "PPL", "length"]
    header += ["train s", "peak RSS MiB"]
    gpu = any(finite(m.get("peak_gpu_mb")) for m in table["methods"].values())
    if gpu:
        header.append("peak GPU MiB")
    rows = []
    for name, m in table["methods"].items():
        ci = f"[{fmt(m.get('ci_low'))}, {fmt(m.get('ci_high'))}]"
        kl_ci = f"[{fmt(m.get('kl_ci_low'))}, {fmt(m.get('kl_ci_high'))}]"
        row = [name, m.get("loss") or "-", m.get("n"), m.get("mean_reward"), ci]
        row += _delta_cells(table, name) + [m.get("kl"), kl_ci]
        row += [pct(m.get("win_rate")), pct(m.get("tie_rate")), m.get("perplexity")]
        row += [m.get("mean_length"), m.get("train_seconds"), m.get("peak_rss_mb")]
        rows.append(row + ([m.get("peak_gpu_mb")] if gpu else []))
    blocks.append(table_block(header, rows))
    matrix = paired_matrix(table)
    if matrix is not None:
        said = (
            f"Mean paired difference of the row's method minus the column's, per {paired.get('unit', 'held-out prompt')}; "
            f"`*`: significant after {paired.get('correction', 'Holm')} (Wilcoxon signed-rank, "
            f"alpha {paired.get('alpha', 0.05)})."
        )
        if s.get("quick"):
            said += " A --quick run: too small to decide, no verdict is drawn."
        blocks += [heading("Paired differences"), matrix, text(said)]
    for file, alt in (
        ("compare_reward.png", "held-out reward per method"),
        ("compare_steps.png", "held-out reward vs training step"),
        ("compare_frontier.png", "held-out reward vs KL from the start model"),
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
    """compare.json, compare_reward.png, compare_steps.png, compare_frontier.png (where KL was
    estimated), compare.md and compare.html."""
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
    frontier = frontier_points(table)
    if any(name != "base" for name in frontier):
        plots["compare_frontier.png"] = plot_compare_frontier(
            frontier, out / "compare_frontier.png"
        )
    write_json(out / "compare.json", {**table, "plots": plots}, ensure_ascii=False)
    blocks = compare_blocks(table, plots)
    atomic_write_text(out / "compare.md", render_markdown(blocks))
    atomic_write_text(out / "compare.html", render_html(blocks))
    names = ("compare.json", "compare.md", "compare.html", *plots)
    return {name: str(out / name) for name in names}
