"""Report documents as blocks: one list of blocks renders as Markdown and as self-contained HTML,
so the two always hold the same content.

A block is a dict with a `kind`: `heading` (text, level), `text` (inline `code` spans allowed),
`table` (header, rows of strings), `image` (file, alt; a PNG beside the document), `list`
(items) or `example` (id, prompt, responses {name: text}, rewards {name: value}). Build them with
`heading`, `text`, `table`, `image`, `bullets` and `example`; `table` formats its cells with
`fmt`, so every report writes numbers the same way (3 decimals, "-" where undefined).
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Any

from rankalign.data import atomic_write_text


def finite(v: Any) -> bool:
    """A real, finite number (not a bool, None or NaN)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def fmt(v: Any, digits: int = 3) -> str:
    """A table cell: floats to `digits` decimals; "-" for None and non-finite values."""
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
    return f"{100 * v:.1f}%" if finite(v) else "-"


def number(v: Any, spec: str = ".3f", missing: str = "n/a") -> str:
    """A metric for the console (`spec` as in format(), e.g. "+.3f"); `missing` where it is
    undefined (None, NaN) or absent, as metrics are since they are written as strict JSON."""
    return format(v, spec) if finite(v) else missing


def heading(s: str, level: int = 2) -> dict:
    return {"kind": "heading", "text": s, "level": level}


def text(s: str) -> dict:
    return {"kind": "text", "text": s}


def table(header: list[str], rows: list[list[Any]]) -> dict:
    """A table block; every cell through `fmt` (a string is kept as it is)."""
    return {"kind": "table", "header": header, "rows": [[fmt(c) for c in r] for r in rows]}


def image(file: str, alt: str) -> dict:
    return {"kind": "image", "file": file, "alt": alt}


def bullets(items: list[Any]) -> dict:
    return {"kind": "list", "items": [str(i) for i in items]}


def example(ex: dict) -> dict:
    """An example generation: `id`, `prompt` (text or chat messages), `responses` {name: text}
    and `rewards` {name: value} (a response without one is shown without)."""
    return {
        "kind": "example",
        "id": ex["id"],
        "prompt": ex["prompt"],
        "responses": ex["responses"],
        "rewards": ex.get("rewards") or {},
    }


def _response_label(blk: dict, name: str) -> str:
    """An example response's heading: the entry's name and, when scored, its reward."""
    rewards = blk.get("rewards") or {}
    if name not in rewards:
        return name
    return f"{name} (reward {fmt(rewards[name], 4)})"


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
            for name, response in blk["responses"].items():
                out.append(f"*{_response_label(blk, name)}*:\n\n```text\n{response}\n```")
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
            for name, response in blk["responses"].items():
                label = html.escape(_response_label(blk, name))
                parts.append(f"<p><i>{label}</i>:</p><pre>{html.escape(response)}</pre>")
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


def write_documents(blocks: list[dict], out_dir: str | os.PathLike, stem: str) -> dict[str, str]:
    """OUT/STEM.md and OUT/STEM.html from one list of blocks (each written atomically)."""
    out = Path(out_dir)
    atomic_write_text(out / f"{stem}.md", render_markdown(blocks))
    atomic_write_text(out / f"{stem}.html", render_html(blocks))
    return {"markdown": str(out / f"{stem}.md"), "html": str(out / f"{stem}.html")}
