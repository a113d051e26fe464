"""The annotate page in a real browser: headless Chromium (Debian's package) driven by
Playwright. Two prompts ranked by keyboard only, a reload mid-way, and the output file holds
exactly the rankings made, in order, once each; a response holding `<script>` is shown as text
and runs nothing."""

from __future__ import annotations

import pytest
from conftest import chromium, require
from test_annotate import Server, read_rows, write_rows

from rankalign.annotation.store import shown_order

HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
CANDIDATES = [
    {"id": "q1", "prompt": "Write a haiku about rain.", "responses": ["drip", HOSTILE, "no"]},
    {
        "id": "q2",
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2+2?"},
        ],
        "responses": ["4", "5", "four", "<b>22</b>"],
    },
]


@pytest.fixture
def browser():
    executable = chromium()  # CI installs both (.ci/run, the `test` extra)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


def _texts(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "nodes => nodes.map(n => n.textContent)")


def test_rank_two_prompts_by_keyboard_with_a_reload(browser, tmp_path):
    src = write_rows(tmp_path / "in.jsonl", CANDIDATES)
    out = tmp_path / "ranked.jsonl"
    with Server(src, out, "--annotator", "kim", "--seed", "7") as server:
        page = browser.new_page()
        response = page.goto(server.url)
        assert "script-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_selector("#responses .card")
        assert page.text_content("#row-id") == "q1"
        assert page.text_content("#progress").startswith("0 of 2 ranked")
        shown1 = shown_order(7, "kim", "q1", 3)
        # untrusted text stays text: the card shows the markup, no element or script came of it
        assert _texts(page, "#responses .text") == [CANDIDATES[0]["responses"][i] for i in shown1]
        assert page.evaluate("window.__pwned") is None
        assert page.query_selector_all("#responses script, #responses img") == []
        # the rendering itself is safe, not only the Content-Security-Policy: without it too
        unguarded = browser.new_page(bypass_csp=True)
        unguarded.goto(server.url)
        unguarded.wait_for_selector("#responses .card")
        unguarded.wait_for_timeout(300)  # an <img onerror> would have fired by now
        assert unguarded.evaluate("window.__pwned") is None
        assert unguarded.query_selector_all("#responses script, #responses img") == []
        unguarded.close()
        # keys 3, 1, 2: the third shown response best, then the first, then the second
        for key in ("3", "1", "2"):
            page.keyboard.press(key)
        assert _texts(page, "#responses .rank") == ["1st", "2nd", "3rd"]
        page.keyboard.press("Enter")
        page.wait_for_selector("#row-id:text-is('q2')")  # (no wait_for_function: the CSP)
        assert page.text_content("#progress").startswith("1 of 2 ranked")
        assert [r["id"] for r in read_rows(out)] == ["q1"]

        # half a ranking, then a reload: the page comes back at q2 with nothing ranked yet
        page.keyboard.press("4")
        page.reload()
        page.wait_for_selector("#responses .card")
        assert page.text_content("#row-id") == "q2"
        assert _texts(page, "#responses .rank") == ["unranked"] * 4
        turns = _texts(page, "#prompt .turn")
        assert turns == ["systemBe brief.", "userWhat is 2+2?"]
        # 2, 4, "=" (4 tied with 2), 1; Enter ranks the one left (3) last and submits
        for key in ("2", "4", "=", "1"):
            page.keyboard.press(key)
        assert _texts(page, "#responses .rank") == ["1st (tie)", "1st (tie)", "3rd", "unranked"]
        page.keyboard.press("Enter")
        page.wait_for_selector("#finished:not([hidden])")
        assert "All 2 prompts are ranked" in page.text_content("#finished-text")
        # a second Enter on the finished page, and a stale resubmit, add nothing
        page.keyboard.press("Enter")
        stale = page.evaluate(
            """async (shown) => (await fetch('/api/answer', {method: 'POST',
                headers: {'Content-Type': 'application/json'},
                body: JSON.stringify({id: 'q1', shown_order: shown, order: [0, 1, 2], ties: [],
                                      all_bad: false})})).status""",
            shown1,
        )
        assert stale == 409
        assert page.evaluate("window.__pwned") is None

    rows = read_rows(out)
    assert [r["id"] for r in rows] == ["q1", "q2"]
    assert [len(r["annotations"]) for r in rows] == [1, 1]
    a1, a2 = rows[0]["annotations"][0], rows[1]["annotations"][0]
    assert a1["annotator"] == a2["annotator"] == "kim"
    assert a1["order"] == [shown1[2], shown1[0], shown1[1]] and a1["ties"] == []
    assert a1["shown_order"] == shown1 and a1["all_bad"] is False and a1["seconds"] > 0
    shown2 = shown_order(7, "kim", "q2", 4)
    assert a2["order"] == [shown2[1], shown2[3], shown2[0], shown2[2]]
    assert a2["ties"] == [[shown2[1], shown2[3]]]
    scores = [0.0] * 4
    scores[shown2[1]] = scores[shown2[3]] = 4 - 1.5
    scores[shown2[0]], scores[shown2[2]] = 4 - 3, 4 - 4
    assert rows[1]["scores"] == scores
    assert rows[0]["responses"] == CANDIDATES[0]["responses"]  # the hostile text, unchanged


def _order(page) -> list[str]:
    """Card ids top to bottom (ranked first, best first)."""
    return page.eval_on_selector_all("#responses .card", "nodes => nodes.map(n => n.id)")


def test_drag_focus_keys_and_all_bad(browser, tmp_path):
    rows = [
        {"id": "d1", "prompt": "a", "responses": ["x", "y", "z"]},
        {"id": "d2", "prompt": "b", "responses": ["u", "v"]},
    ]
    out = tmp_path / "ranked.jsonl"
    with Server(write_rows(tmp_path / "in.jsonl", rows), out, "--annotator", "lee") as server:
        page = browser.new_page()
        page.goto(server.url)
        page.wait_for_selector("#responses .card")
        for key in ("1", "2", "3"):
            page.keyboard.press(key)
        assert _order(page) == ["response-1", "response-2", "response-3"]
        # drag the third onto the first: it takes first place
        page.drag_and_drop("#response-3", "#response-1")
        assert _order(page) == ["response-3", "response-1", "response-2"]
        # the focused card moves with Alt+Down; Space unranks it and ranks it again (last)
        page.focus("#response-3")
        page.keyboard.press("Alt+ArrowDown")
        assert _order(page) == ["response-1", "response-3", "response-2"]
        page.keyboard.press("Space")
        assert _order(page) == ["response-1", "response-2", "response-3"]
        assert _texts(page, "#responses .rank") == ["1st", "2nd", "unranked"]
        page.keyboard.press("Space")
        assert _texts(page, "#responses .rank") == ["1st", "2nd", "3rd"]
        page.keyboard.press("Enter")
        page.wait_for_selector("#row-id:text-is('d2')")
        page.keyboard.press("B")  # all bad: submits with every response tied
        page.keyboard.press("Enter")
        page.wait_for_selector("#finished:not([hidden])")
    first, second = read_rows(out)
    shown = shown_order(0, "lee", "d1", 3)
    assert first["annotations"][0]["order"] == [shown[0], shown[1], shown[2]]
    assert second["all_bad"] is True and second["scores"] == [0.5, 0.5]
    assert second["annotations"][0]["ties"] == [shown_order(0, "lee", "d2", 2)]
