"""LLM judge: parsing varied answers, and whole runs against a real local HTTP judge server."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rankalign import cli
from rankalign.cli import main as cli_main
from rankalign.cli import run_command
from rankalign.scoring.rewards.judge import WOMBAT_RUBRIC, build_prompt, parse_judgment

# ----------------------------------------------------------------------------- parsing corpus

CORPUS = [
    # the Wombat style: one line per response
    (
        "Response 1: Relevance: 5, Correctness: 4, Coherence: 5, Safety: 5\n"
        "Response 2: Relevance: 3, Correctness: 2, Coherence: 4, Safety: 5",
        2,
        [19, 14],
    ),
    (
        "Response 1: Relevance 5, Correctness 5, Coherence 5, Safety 5. "
        "Response 2: Relevance 4, Correctness 3, Coherence 4, Safety 5. "
        "Response 3: Relevance 1, Correctness 1, Coherence 2, Safety 5.",
        3,
        [20, 16, 9],
    ),
    # chatty markdown with bold labels, "x/5" and "out of 5"
    (
        "Sure! Here are my scores.\n\n**Response 1**\n- **Relevance**: 4/5\n"
        "- **Correctness**: 4/5\n- **Coherence**: 5/5\n- **Safety**: 5/5\n\n"
        "**Response 2**\n- Relevance: 1 out of 5\n"
        "- Correctness: 1\n- Coherence: 2\n- Safety: 5\n\nOverall, response 1 is better.",
        2,
        [18, 9],
    ),
    # JSON: fenced, keyed by response, a list, nested, string values
    (
        '```json\n{"response 1": {"relevance": 5, "correctness": 4, "coherence": 5, "safety": 5},\n'
        ' "response 2": {"relevance": 2, "correctness": 2, "coherence": 3, "safety": 5}}\n```',
        2,
        [19, 12],
    ),
    (
        '[{"Relevance": 4, "Correctness": 4, "Coherence": 4, "Safety": 5}, '
        '{"Relevance": "3/5", "Correctness": 3, "Coherence": 3, "Safety": 5}]',
        2,
        [17, 14],
    ),
    (
        '{"scores": [{"response": 2, "relevance": 1, "correctness": 1, "coherence": 1, '
        '"safety": 1}, {"response": 1, "relevance": 5, "correctness": 5, "coherence": 5, '
        '"safety": 5}]}',
        2,
        [20, 4],
    ),
    ('{"Response_1": [5, 4, 5, 5], "Response_2": {"total": 11}}', 2, [19, 11]),
    # markdown tables, with and without the scale in the header
    (
        "| Response | Relevance | Correctness | Coherence | Safety |\n|---|---|---|---|---|\n"
        "| 1 | 5 | 5 | 5 | 5 |\n| 2 | 2 | 1 | 3 | 4 |",
        2,
        [20, 10],
    ),
    (
        "|  | Relevance (1-5) | Correctness (1-5) | Coherence (1-5) | Safety (1-5) | Total |\n"
        "|:--|:-:|:-:|:-:|:-:|:-:|\n| Response 1 | 4 | 4 | 4 | 4 | 16 |\n"
        "| Response 2 | 3 | 3 | 3 | 3 | 12 |",
        2,
        [16, 12],
    ),
    # bare lists and totals
    ("Response 1: 5 4 5 5\nResponse 2: 3, 3, 4, 5", 2, [19, 15]),
    ("Response 1: 5/5/4/5 (19)\nResponse 2: 4, 4, 4, 4 = 16", 2, [19, 16]),
    ("Response 1: Score: 15/20\nResponse 2: Total: 12", 2, [15, 12]),
    ("Response 1: 18/20\nResponse 2: 7/20", 2, [18, 7]),
    ("1. 5 5 5 5\n2. 4 4 4 4", 2, [20, 16]),
    # aspect-major: one line per aspect, one value per response
    ("Relevance: 5, 3\nCorrectness: 4, 2\nCoherence: 5, 4\nSafety: 5, 5", 2, [19, 14]),
    # one response (mode=single): no header needed; the echoed scale is not a score
    ("Relevance (1-5): 4\nCorrectness (1-5): 3\nCoherence (1-5): 5\nSafety (1-5): 5", 1, [17]),
    ("Relevance - 4; Correctness - 4; Coherence - 4; Safety - 5 (Total: 17)", 1, [17]),
    # refusals and garbage: nothing guessed
    ("I'm sorry, but I can't help with rating these responses.", 2, [None, None]),
    (
        "As an AI language model, I do not have personal opinions about responses 1 and 2.",
        2,
        [None, None],
    ),
    ("", 1, [None]),
    ("asdkjh 12 qwe ### 7", 2, [None, None]),
    ("Response 1: great!\nResponse 2: bad!", 2, [None, None]),
    # out of range, another scale, averages: refused, not clamped or rescaled
    (
        "Response 1: Relevance: 7, Correctness: 4, Coherence: 5, Safety: 5\n"
        "Response 2: Relevance: 3, Correctness: 3, Coherence: 3, Safety: 3",
        2,
        [None, 12],
    ),
    ("Relevance: 8/10, Correctness: 7/10, Coherence: 9/10, Safety: 10/10", 1, [None]),
    ("Total score: 4.5/5", 1, [None]),
    # partial answers: what is there is kept
    ("Response 1: 5 5 5 5", 2, [20, None]),
]


def score_main(argv: list[str]) -> int:
    """`rankalign score ARGV` in this process, errors raised (not turned into exit codes)."""
    run_command("score", argv)
    return 0


@pytest.mark.parametrize("answer,k,want", CORPUS, ids=[f"case{i}" for i in range(len(CORPUS))])
def test_parse_varied_answers(answer, k, want):
    assert parse_judgment(answer, k) == want


def test_parse_custom_aspects_and_scale():
    answer = "Response 1: Helpfulness: 9, Honesty: 10\nResponse 2: Helpfulness 3 Honesty 4"
    assert parse_judgment(answer, 2, ("Helpfulness", "Honesty"), 1, 10) == [19, 7]


def test_wombat_prompt():
    text = build_prompt(WOMBAT_RUBRIC, [{"role": "user", "content": "Q {x}?"}], ["a", "b {y}"])
    assert text.startswith("Score different responses separately without explanation")
    assert "Relevance (does it relevant to user's query)" in text
    assert text.endswith("Query: Human: Q {x}?\n\nAssistant: Response 1: a Response 2: b {y}")


# ----------------------------------------------------------------------------- a local judge server


def _answer(prompt: str, retry: bool) -> tuple[int, str]:
    """How the fake judge answers: chosen by a [tag] in the query; scores come from q=N."""
    aspects = [
        a
        for a in ("Relevance", "Correctness", "Coherence", "Safety", "Helpfulness", "Honesty")
        if a in prompt.split("Query:")[0] or a in prompt[:200]
    ]
    blocks = re.split(r"Response (\d+): ", prompt)[1:]
    qs = [int(m.group(1)) if (m := re.search(r"q=(\d+)", text)) else 1 for text in blocks[1::2]]
    tag = re.search(r"\[(\w[\w-]*)\]", prompt).group(1)
    if tag == "error":
        return 500, "internal error"
    if tag == "timeout":
        time.sleep(2.0)
    if tag == "garbage" or (tag == "refuse-once" and not retry):
        return 200, (
            "I'm sorry, but I can't help with that."
            if tag != "garbage"
            else "The the the. Lorem ipsum 42."
        )
    if tag == "json":
        return 200, json.dumps([{a.lower(): q for a in aspects} for q in qs])
    if tag == "table":
        head = "| Response | " + " | ".join(aspects) + " |\n|" + "---|" * (len(aspects) + 1)
        return 200, head + "".join(
            f"\n| {i + 1} | " + " | ".join([str(q)] * len(aspects)) + " |" for i, q in enumerate(qs)
        )
    if tag == "partial":
        qs = qs[:-1]
    return 200, "\n".join(
        f"Response {i + 1}: " + ", ".join(f"{a}: {q}" for a in aspects) for i, q in enumerate(qs)
    )


class JudgeHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        messages = body["messages"]
        self.server.requests.append(messages)
        self.server.auth.append(self.headers.get("Authorization"))
        status, text = _answer(messages[0]["content"], retry=len(messages) > 1)
        payload = (
            json.dumps(
                {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
            )
            if status == 200
            else json.dumps({"error": text})
        ).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the client gave up (timeout test)
            pass

    def log_message(self, *args):
        pass


@pytest.fixture()
def judge_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), JudgeHandler)
    server.daemon_threads = True
    server.requests, server.auth = [], []
    server.handle_error = lambda *a: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def judge_spec(server, **extra) -> str:
    opts = {
        "model": "test-judge",
        "base_url": f"http://127.0.0.1:{server.server_port}/v1",
        "retries": 1,
        "max_retries": 1,
        "backoff": 0.01,
        "timeout": 0.5,
        "concurrency": 8,
        **extra,
    }
    return "judge:" + ",".join(f"{k}={v}" for k, v in opts.items())


ROWS = [
    {"id": "lines", "prompt": "[lines] what is rain?", "responses": ["water q=5", "idk q=2"]},
    {
        "id": "json",
        "prompt": "[json] what is snow?",
        "responses": ["frozen q=4", "hot q=1", "? q=3"],
    },
    {
        "id": "table",
        "prompt": [{"role": "user", "content": "[table] what is hail?"}],
        "responses": ["ice q=3", "rain q=2"],
    },
    {"id": "refuse", "prompt": "[refuse-once] how to bake?", "responses": ["oven q=5", "no q=1"]},
    {"id": "garbage", "prompt": "[garbage] why?", "responses": ["because q=3", "no q=1"]},
    {"id": "error", "prompt": "[error] who?", "responses": ["me q=3", "you q=1"]},
    {"id": "timeout", "prompt": "[timeout] when?", "responses": ["now q=3", "later q=2"]},
    {
        "id": "partial",
        "prompt": "[partial] where?",
        "responses": ["here q=5", "there q=2", "x q=3"],
    },
]


def run(tmp_path, spec, *extra, rows=ROWS):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    assert (
        cli_main(
            [
                "score",
                "--in",
                str(src),
                "--out",
                str(out),
                "--reward",
                spec,
                "--overwrite",
                "true",
                *extra,
            ]
        )
        == 0
    )
    failed = tmp_path / "out.failed.jsonl"

    def read(path):
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    return (
        {r["id"]: r for r in read(out)},
        {r["id"]: r for r in read(failed)},
        json.loads((tmp_path / "out.summary.json").read_text()),
    )


def test_run_survives_errors_timeouts_and_garbage(tmp_path, judge_server):
    ok, failed, summary = run(tmp_path, judge_spec(judge_server))
    assert ok["lines"]["scores"] == [20, 8]
    assert ok["json"]["scores"] == [16, 4, 12]
    assert ok["table"]["scores"] == [12, 8]
    assert ok["refuse"]["scores"] == [20, 4]  # parsed on the retry
    # the default policy (skip, as the paper): unscored rows leave the training file, marked
    assert set(ok) == {"lines", "json", "table", "refuse"}
    assert set(failed) == {"garbage", "error", "timeout", "partial"}
    reasons = {rid: row["score_failed"]["judge"] for rid, row in failed.items()}
    assert "unparseable answer" in reasons["garbage"][0]["reason"]
    assert "HTTP 500" in reasons["error"][0]["reason"]
    assert "timed out" in reasons["timeout"][0]["reason"]
    assert [f["response"] for f in reasons["partial"]] == [2]
    assert "scores" not in failed["partial"] and failed["partial"]["score_parts"]["judge"] == [
        20,
        8,
        None,
    ]
    assert summary["rows_skipped"] == 4
    assert summary["failures"]["judge"] == {"responses": 7, "rows": 4}
    # a retry carries the bad answer and a format reminder; the garbage row was asked twice
    garbage = [m for m in judge_server.requests if "[garbage]" in m[0]["content"]]
    assert len(garbage) == 2 and garbage[1][1]["role"] == "assistant"
    assert "Response 1: Relevance: <1-5>, Correctness: <1-5>" in garbage[1][2]["content"]


def test_min_policy_keeps_partly_judged_lists(tmp_path, judge_server):
    rows = [r for r in ROWS if r["id"] in ("lines", "partial", "garbage")]
    ok, failed, summary = run(
        tmp_path, judge_spec(judge_server, retries=0), "--on_failure", "min", rows=rows
    )
    assert ok["partial"]["scores"] == [20, 8, 8]  # the unjudged response ties the worst
    assert ok["partial"]["score_failed"]["judge"][0]["response"] == 2
    assert set(failed) == {"garbage"}  # nothing judged in that list: still skipped
    assert summary["failures"]["judge"] == {"responses": 3, "rows": 2}


def test_single_mode_and_custom_rubric(tmp_path, judge_server):
    rows = [r for r in ROWS if r["id"] in ("lines", "json")]
    ok, _, _ = run(tmp_path, judge_spec(judge_server, mode="single"), rows=rows)
    assert ok["lines"]["scores"] == [20, 8] and ok["json"]["scores"] == [16, 4, 12]
    assert all(
        m[0]["content"].count("Response 1:") == 1 and "Response 2:" not in m[0]["content"]
        for m in judge_server.requests
    )
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate Helpfulness and Honesty from 1 to 10.\n{query}\n{responses}")
    ok, _, _ = run(
        tmp_path,
        judge_spec(judge_server, rubric=rubric, aspects="Helpfulness|Honesty", max=10),
        rows=rows,
    )
    assert ok["lines"]["scores"] == [10, 4]
    assert judge_server.requests[-1][0]["content"].startswith("Rate Helpfulness and Honesty")


def test_unreachable_judge_is_a_user_error(tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(ROWS[0]) + "\n")
    spec = f"judge:model=m,base_url=http://127.0.0.1:{port}/v1,max_retries=0"
    assert (
        cli.main(["score", "--in", str(src), "--out", str(tmp_path / "o.jsonl"), "--reward", spec])
        == 2
    )
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("rankalign")]
    assert len(err) == 1 and "unreachable" in err[0]
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.jsonl.parts").exists()


def test_api_key_comes_from_the_environment_and_is_not_dumped(tmp_path, judge_server, monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-secret-123")
    run(tmp_path, judge_spec(judge_server, api_key_env="MY_JUDGE_KEY"), rows=ROWS[:1])
    assert judge_server.auth == ["Bearer sk-secret-123"]
    assert "sk-secret" not in (tmp_path / "out.config.yaml").read_text()
