"""The evaluation report: `metrics.json`, `report.md`, `report.html` and PNG plots in one folder.

`write_report(metrics, out_dir)` takes the dict `rankalign.evaluate` builds and writes:

| file | content |
|---|---|
| metrics.json | every number, as computed (valid JSON: an undefined value is `null`, with a `notes` entry saying why) |
| report.md / report.html | the same tables and plots; the HTML is self-contained (inline CSS) and refers to the PNGs beside it by relative path |
| *.png | the plots of the sections with data (`report_plots`: reward, best_of_n, reward_length, training, loop) |

The report is the sections of `report_sections` in registry order (`build_blocks` concatenates
their blocks, `make_plots` draws their plots); both documents render from that one list of
blocks (`report_blocks`), so they always hold the same content. The modules below this one:
`report_blocks` (blocks, number formats, Markdown/HTML), `report_plots` (the PNGs),
`report_sections` (the registry), `report_compare` (the `compare` report). Their public names are
importable from here too.
"""

from __future__ import annotations

import os
from pathlib import Path

from rankalign.data import write_json
from rankalign.report_blocks import (
    number,
    pct,
    render_html,
    render_markdown,
    write_documents,
)
from rankalign.report_compare import (
    COMPARE_PLOTS,
    compare_blocks,
    compare_reward_points,
    plot_compare_rewards,
    plot_compare_steps,
    write_compare_report,
)
from rankalign.report_plots import (
    flatten_metrics,
    loop_panels,
    plot_best_of_n,
    plot_loop,
    plot_reward_length,
    plot_rewards,
    plot_training,
    pyplot,
    save_figure,
    training_panels,
)
from rankalign.report_sections import model_table, sections

__all__ = [
    "COMPARE_PLOTS",
    "PLOT_FILES",
    "build_blocks",
    "compare_blocks",
    "compare_reward_points",
    "flatten_metrics",
    "loop_panels",
    "make_plots",
    "model_table",
    "number",
    "pct",
    "plot_best_of_n",
    "plot_compare_rewards",
    "plot_compare_steps",
    "plot_loop",
    "plot_reward_length",
    "plot_rewards",
    "plot_training",
    "pyplot",
    "render_html",
    "render_markdown",
    "save_figure",
    "training_panels",
    "write_compare_report",
    "write_report",
]

PLOT_FILES = tuple(s.plot.file for s in sections() if s.plot)  # the built-in sections' plots


def build_blocks(metrics: dict, plots: dict[str, list[str]]) -> list[dict]:
    """The report's content: every registered section's blocks, in order (a section without
    data gives none)."""
    return [block for section in sections() for block in section.render(metrics, plots)]


def make_plots(metrics: dict, out_dir: str | os.PathLike) -> dict[str, list[str]]:
    """Draw every plot the metrics have data for; returns {file: curve names}."""
    out = Path(out_dir)
    jobs = [
        (s.plot, data)
        for s in sections()
        if s.plot is not None and (data := s.plot.data(metrics)) is not None
    ]
    from tqdm.auto import tqdm

    plots: dict[str, list[str]] = {}
    for plot, data in tqdm(jobs, desc="plots", unit="plot", disable=not jobs):
        plots[plot.file] = plot.draw(data, out / plot.file)
    return plots


def write_report(metrics: dict, out_dir: str | os.PathLike) -> dict[str, str]:
    """Write metrics.json, the PNG plots, report.md and report.html into `out_dir`.

    Returns the paths written, by name.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for section in sections():  # a plot from an earlier run must not survive without its data
        if section.plot is not None:
            (out / section.plot.file).unlink(missing_ok=True)
    plots = make_plots(metrics, out)
    metrics = {**metrics, "plots": plots}
    write_json(out / "metrics.json", metrics, ensure_ascii=False)  # NaN -> null with a note
    paths = {"metrics": str(out / "metrics.json")}
    paths.update(write_documents(build_blocks(metrics, plots), out, "report"))
    paths.update({file: str(out / file) for file in plots})
    return paths
