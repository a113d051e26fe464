"""The report's section registry: the evaluate and reward-model reports render exactly the
documents of the code before the registry (golden files), and a registered section reaches both
documents and draws its plot.

The golden files in tests/data/report/ were rendered from `metrics.json` there (a representative
metrics dict: every section, undefined values with notes, a chat prompt, `|` and `<` in names)
by `build_blocks` / the reward-model report as they were before the report was split into
sections. Regenerate them (`python tests/test_report_sections.py`) only when the report is meant
to change, and read the diff.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rankalign import report_sections
from rankalign.evaluation.reward_models import report_blocks as rm_blocks
from rankalign.report import build_blocks, render_html, render_markdown, write_report
from rankalign.report_blocks import heading, table, text
from rankalign.report_plots import pyplot, save_figure
from rankalign.report_sections import Plot, Section, register_section

GOLDEN = Path(__file__).parent / "data" / "report"


def _metrics() -> dict:
    return json.loads((GOLDEN / "metrics.json").read_text())


def _documents() -> dict[str, str]:
    m = _metrics()
    blocks = build_blocks(m["evaluate"], m["evaluate"]["plots"])
    return {
        "evaluate.md": render_markdown(blocks),
        "evaluate.html": render_html(blocks),
        "rm.md": render_markdown(rm_blocks(m["rm"])),
        "rm_tied.md": render_markdown(rm_blocks(m["rm_tied"])),
    }


@pytest.mark.parametrize("name", ["evaluate.md", "evaluate.html", "rm.md", "rm_tied.md"])
def test_sections_render_the_golden_documents(name):
    assert _documents()[name] == (GOLDEN / name).read_text()


def test_each_section_renders_only_from_its_own_metrics():
    """A section without its metrics gives no block; with only its metrics, blocks of its own."""
    m = _metrics()["evaluate"]
    for section in report_sections.sections():
        if section.name in ("header", "notes"):
            continue
        assert section.render({"config": m["config"]}, {}) == [], section.name
        keys = {
            "models": ["models", "perplexity_model"],
            "iterations": ["loop"],
        }.get(section.name, [section.name])
        alone = section.render({"config": m["config"], **{k: m[k] for k in keys}}, m["plots"])
        assert alone and alone[0]["kind"] == "heading", section.name


def _draw_custom(values: list[float], path: Path) -> list[str]:
    fig, ax = pyplot().subplots()
    ax.plot(values, label="custom curve")
    ax.legend()
    return save_figure(fig, path, "Custom")


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry for one test: registering leaves the real one as it was."""
    monkeypatch.setattr(report_sections, "SECTIONS", list(report_sections.SECTIONS))


def _custom_section() -> Section:
    def render(metrics, plots):
        if not metrics.get("custom"):
            return []
        b = [heading("Custom metric"), table(["name", "value"], [["a <b>", metrics["custom"][0]]])]
        b.append(text("A `custom` explanation."))
        if "custom.png" in plots:
            b.append({"kind": "image", "file": "custom.png", "alt": "custom plot"})
        return b

    return Section("custom", render, Plot("custom.png", lambda m: m.get("custom"), _draw_custom))


def test_a_registered_section_appears_in_report_md_and_html(tmp_path, registry):
    register_section(_custom_section())
    full = _metrics()["evaluate"]  # the sections without a plot (drawing takes seconds)
    keys = ("config", "num_prompts", "win_rates", "rm_accuracy", "examples", "notes")
    metrics = {**{k: full[k] for k in keys}, "custom": [1.25, 2.0]}
    paths = write_report(metrics, tmp_path)
    md = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    assert "## Custom metric\n\n| name | value |\n|---|---|\n| a <b> | 1.250 |" in md
    assert "<h2>Custom metric</h2>\n<table><thead><tr><th>name</th><th>value</th>" in page
    assert "<td>a &lt;b&gt;</td><td>1.250</td>" in page
    assert "<p>A <code>custom</code> explanation.</p>" in page
    # ahead of the examples (the default place), after the built-in metrics sections
    assert md.index("## Reward-model") < md.index("## Custom metric") < md.index("## Example")
    assert page.index("<h2>Custom metric</h2>") < page.index("<h2>Example generations</h2>")
    assert "![custom plot](custom.png)" in md and '<img src="custom.png"' in page
    assert (tmp_path / "custom.png").is_file() and paths["custom.png"].endswith("custom.png")
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["custom"] == [1.25, 2.0] and saved["plots"]["custom.png"] == ["custom curve"]
    # a rerun without the metric leaves no stale plot and no section
    metrics.pop("custom")
    write_report(metrics, tmp_path)
    assert not (tmp_path / "custom.png").exists()
    assert "Custom metric" not in (tmp_path / "report.md").read_text()


def test_register_section_places_and_refuses(registry):
    register_section(Section("first", lambda m, p: [heading("First")]), before="header")
    register_section(Section("last", lambda m, p: [heading("Last")]), before=None)
    names = [s.name for s in report_sections.sections()]
    assert names[0] == "first" and names[-1] == "last" and names[-2] == "notes"
    blocks = build_blocks({}, {})
    assert [b["text"] for b in blocks] == ["First", "rankalign evaluation report", "Last"]
    with pytest.raises(ValueError, match="already registered"):
        register_section(Section("models", lambda m, p: []))
    with pytest.raises(ValueError, match="reward.png"):
        register_section(Section("x", lambda m, p: [], Plot("reward.png", dict.get, _draw_custom)))
    with pytest.raises(ValueError, match="no report section 'nope'"):
        register_section(Section("y", lambda m, p: []), before="nope")


def test_the_registry_copy_did_not_leak():
    assert [s.name for s in report_sections.sections()] == [
        "header",
        "models",
        "win_rates",
        "paired",
        "rm_accuracy",
        "best_of_n",
        "sample_stats",
        "reward_length",
        "training",
        "iterations",
        "examples",
        "notes",
    ]


if __name__ == "__main__":  # regenerate the golden files (see the module docstring)
    for file, content in _documents().items():
        (GOLDEN / file).write_text(content)
    print(f"wrote {len(_documents())} files under {GOLDEN}", file=sys.stderr)
