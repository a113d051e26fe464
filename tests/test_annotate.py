"""`rankalign annotate`: the ranking arithmetic and agreement statistics against hand-worked and
published values, the answer checks, the one-line refusals (nothing written), a real server
killed between answers (nothing lost, resumes at the first unranked prompt), annotators merged
on one file, and the ranked output training with `--loss rrhf` as it is."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import rankalign
from rankalign.annotation.agreement import agreement, kendall_tau_b, krippendorff_alpha_ordinal
from rankalign.annotation.store import Store, merged_scores, parse_answer, ranks, shown_order
from rankalign.cli import main
from rankalign.errors import UserError

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = Path(__file__).resolve().parents[1] / "examples" / "data" / "tiny_lists.jsonl"


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


CANDIDATES = [
    {"id": "p1", "prompt": "Name a fruit.", "responses": ["apple", "a car", "banana"]},
    {
        "id": "p2",
        "prompt": [{"role": "user", "content": "2+2?"}],
        "responses": ["4", "5", "four", "22"],
        "scores": [1.0, -1.0, 0.5, -2.0],
        "sources": ["a", "b", "c", "d"],
    },
    {"id": "p3", "prompt": "Say hi.", "responses": ["hi", "bye"]},
]


# ----------------------------------------------------------------------------- arithmetic


def test_ranks_and_merged_scores_by_hand():
    assert ranks([2, 0, 1], []) == [2.0, 3.0, 1.0]
    # responses 1 and 2 tie for 2nd and 3rd place: both get rank 2.5
    assert ranks([0, 1, 2], [[1, 2]]) == [1.0, 2.5, 2.5]
    # one annotator: k - rank, ties equal
    assert merged_scores([{"order": [0, 1, 2], "ties": [[1, 2]]}], 3) == [2.0, 0.5, 0.5]
    # two annotators: Borda [2, 1, 0] and [1, 2, 0] average to [1.5, 1.5, 0]
    both = [{"order": [0, 1, 2], "ties": []}, {"order": [1, 0, 2], "ties": []}]
    assert merged_scores(both, 3) == [1.5, 1.5, 0.0]


def test_kendall_tau_b_by_hand():
    # 5 concordant pairs, 1 discordant, no ties: (5 - 1) / 6
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # C = 4, D = 0, one pair tied in each: 4 / sqrt(5 * 5)
    assert kendall_tau_b([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    assert kendall_tau_b([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert kendall_tau_b([1, 1, 1], [1, 2, 3]) is None  # one side ties everything


def test_krippendorff_alpha_ordinal_published_example():
    """Krippendorff (2011), 'Computing Krippendorff's alpha-reliability', section C: 4 observers,
    12 units, missing values; alpha ordinal = 0.815."""
    n = None
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
        [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n],
    ]
    units = [[row[u] for row in data if row[u] is not None] for u in range(12)]
    assert round(krippendorff_alpha_ordinal(units), 3) == 0.815


def test_krippendorff_alpha_ordinal_by_hand():
    """Two annotators rank 3 responses: ranks (1,2,3) and (1,3,2). Values 1,2,3 each occur
    twice (n = 6); o_11 = 2, o_23 = o_32 = 2. Ordinal δ²: (1,2) = (2+2-2)² = 4, (2,3) = 4,
    (1,3) = (6-2)² = 16. D_o ∝ 2·4 + 2·4 = 16; D_e ∝ 2·(4·4 + 4·4 + 4·16)/5 = 38.4;
    alpha = 1 - 16/38.4 = 7/12."""
    assert krippendorff_alpha_ordinal([[1, 1], [2, 3], [3, 2]]) == pytest.approx(7 / 12)
    assert krippendorff_alpha_ordinal([[1, 1], [2, 2]]) == pytest.approx(1.0)
    assert krippendorff_alpha_ordinal([[1, 1], [1, 1]]) is None  # no variation at all
    assert krippendorff_alpha_ordinal([[1], [2]]) is None  # nothing pairable


def _annotation(who, order, ties=(), all_bad=False):
    return {
        "annotator": who,
        "order": order,
        "ties": [list(t) for t in ties],
        "seconds": 3.0,
        "shown_order": sorted(order),
        "all_bad": all_bad,
    }


def test_agreement_report_by_hand(tmp_path, capsys):
    rows = [
        {
            "id": "r1",
            "prompt": "x",
            "responses": ["a", "b", "c"],
            "scores": [2.0, 0.5, 0.5],
            "prior_scores": [0.9, 0.1, 0.5],
            "annotations": [_annotation("ann", [0, 1, 2]), _annotation("bob", [0, 2, 1])],
        },
        {
            "id": "r2",
            "prompt": "y",
            "responses": ["a", "b"],
            "scores": [1.0, 0.0],
            "prior_scores": [0.0, 1.0],
            "score_parts": {"length": [1.0, None]},
            "annotations": [_annotation("ann", [0, 1])],
        },
    ]
    path = write_rows(tmp_path / "ranked.jsonl", rows)
    report = agreement(str(path))
    between = report["between_annotators"]
    assert report["annotators"] == {"ann": 2, "bob": 1}
    # only r1 has two annotators: ranks (1,2,3) vs (1,3,2) -> tau 1/3, alpha 7/12 (above)
    assert (between["rows"], between["pairs"]) == (1, 1)
    assert between["kendall_tau_b"] == pytest.approx(1 / 3)
    assert between["krippendorff_alpha_ordinal"] == pytest.approx(7 / 12)
    prior = report["against_scores"]["prior_scores"]
    # ann: r1 scores (3,2,1) vs prior (.9,.1,.5): C=2, D=1 -> 1/3; r2 reversed -> -1; mean -1/3
    # bob: r1 (3,1,2) vs (.9,.1,.5) -> 1; merged r1 (3,1.5,1.5) vs prior: C=2, D=0, one tie
    # -> 2/sqrt(2*3); merged r2 -> -1
    assert prior["rows"] == 2
    assert prior["kendall_tau_b"]["ann"] == pytest.approx((1 / 3 - 1) / 2)
    assert prior["kendall_tau_b"]["bob"] == pytest.approx(1.0)
    assert prior["kendall_tau_b"]["merged"] == pytest.approx((2 / math.sqrt(6) - 1) / 2)
    assert report["against_scores"]["score_parts.length"]["rows"] == 0  # its None is skipped
    assert rankalign.annotate(agreement=str(path)).metrics == report  # the Python API
    assert main(["annotate", "--agreement", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Kendall's tau-b +0.333" in out and "Krippendorff's alpha (ordinal) +0.583" in out


# ----------------------------------------------------------------------------- answers


def _row(k=3):
    return {"id": "x", "prompt": "p", "responses": [f"r{i}" for i in range(k)]}


def test_an_answer_maps_page_positions_to_response_indices():
    shown = [2, 0, 1]  # position 0 on the page shows response 2, ...
    answer = {"id": "x", "shown_order": shown, "order": [1, 2, 0], "ties": [[2, 0]]}
    a = parse_answer({**answer, "all_bad": False}, _row(), shown, "ann", 4.25)
    assert a == {
        "annotator": "ann",
        "order": [0, 1, 2],
        "ties": [[1, 2]],
        "seconds": 4.25,
        "shown_order": shown,
        "all_bad": False,
    }
    bad = parse_answer({**answer, "all_bad": True}, _row(), shown, "ann", 1.0)
    assert (bad["order"], bad["ties"], bad["all_bad"]) == (shown, [shown], True)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"order": [0, 1]}, "permutation"),
        ({"order": [0, 1, 1]}, "permutation"),
        ({"order": [0, 1, 3]}, "permutation"),
        ({"order": [True, 0, 2]}, "integers"),
        ({"order": "012"}, "integers"),
        ({"ties": [[0, 2]]}, "adjacent"),
        ({"ties": [[0]]}, "2 or more"),
        ({"ties": [[0, 0]]}, "2 or more"),
        ({"ties": [[0, 1], [1, 2]]}, "two ties"),
        ({"ties": [[0, 5]]}, "outside"),
        ({"ties": [0, 1]}, "lists of integers"),
        ({"all_bad": 1}, "all_bad"),
        ({"shown_order": [0, 1, 2]}, "stale"),
        ({"id": "y"}, "stale"),
        ({"extra": 1}, "exactly the keys"),
    ],
)
def test_malformed_answers_are_refused(change, message):
    shown = [2, 0, 1]
    answer = {"id": "x", "shown_order": shown, "order": [0, 1, 2], "ties": [], "all_bad": False}
    with pytest.raises(ValueError, match=message):
        parse_answer({**answer, **change}, _row(), shown, "ann", 1.0)


def test_the_shown_order_is_a_seeded_shuffle_per_annotator():
    orders = {tuple(shown_order(0, "ann", f"id{i}", 5)) for i in range(20)}
    assert all(sorted(o) == list(range(5)) for o in orders) and len(orders) > 5
    assert shown_order(0, "ann", "id1", 5) == shown_order(0, "ann", "id1", 5)
    assert {tuple(shown_order(s, "ann", "id1", 5)) for s in range(10)} != {(0, 1, 2, 3, 4)}


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "args, rows, message",
    [
        ([], None, "input is required"),
        (["--in", "in.jsonl"], None, "out is required"),
        (["--port", "70000"], CANDIDATES, "port"),
        (["--annotator", " x"], CANDIDATES, "annotator"),
        (["--annotator", "a/b"], CANDIDATES, "annotator"),
        (["--agreement", "x.jsonl"], CANDIDATES, "without --in/--out"),
        (["--max_rows", "0"], CANDIDATES, "max_rows"),
        ([], [{"id": "a", "prompt": "p", "responses": ["only one"]}], "no row with 2 or more"),
        ([], [{"id": "a", "prompt": "p", "responses": ["x", ""]}], "line 1, field 'responses[1]'"),
        ([], [{"id": "a", "prompt": "p", "responses": ["x", "y"], "scores": [1]}], "scores"),
        ([], [CANDIDATES[0], CANDIDATES[0]], "duplicate id"),
        (
            [],
            [{**CANDIDATES[0], "annotations": [{"annotator": "a", "order": [0, 0, 1]}]}],
            "annotations[0]",
        ),
    ],
)
def test_bad_options_and_inputs_exit_2_with_one_line_and_write_nothing(
    tmp_path, capsys, args, rows, message
):
    out = tmp_path / "o" / "ranked.jsonl"
    argv = ["annotate", *args]
    if rows is not None:
        argv += ["--in", str(write_rows(tmp_path / "in.jsonl", rows)), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "o").exists()


def test_an_output_from_other_candidates_is_refused(tmp_path, capsys):
    src = write_rows(tmp_path / "in.jsonl", CANDIDATES)
    out = tmp_path / "ranked.jsonl"
    other = {**CANDIDATES[0], "responses": ["apple", "a car", "cherry"]}
    write_rows(out, [{**other, "scores": [2, 1, 0], "annotations": []}])
    before = out.read_text()
    assert main(["annotate", "--in", str(src), "--out", str(out)]) == 2
    assert "other responses than the input's" in capsys.readouterr().err
    assert out.read_text() == before
    write_rows(out, [{"id": "zz", "prompt": "q", "responses": ["a", "b"]}])
    before = out.read_text()
    assert main(["annotate", "--in", str(src), "--out", str(out)]) == 2
    assert "not among the input's rows" in capsys.readouterr().err
    assert out.read_text() == before
    assert not list(tmp_path.glob(".ranked*"))


def test_the_input_as_output_and_a_file_without_annotations_are_refused(tmp_path, capsys):
    src = write_rows(tmp_path / "in.jsonl", CANDIDATES)
    before = src.read_text()
    assert main(["annotate", "--in", str(src), "--out", str(src)]) == 2
    assert "is the input too" in capsys.readouterr().err
    assert main(["annotate", "--in", str(src), "--out", f"{tmp_path}/./in.jsonl"]) == 2
    other = write_rows(tmp_path / "scored.jsonl", CANDIDATES[:1])
    assert main(["annotate", "--in", str(src), "--out", str(other)]) == 2
    assert "has no annotations" in capsys.readouterr().err
    assert src.read_text() == before


def test_rows_with_one_response_are_left_out_and_counted(tmp_path):
    rows = [{"id": "one", "prompt": "p", "responses": ["only"]}, *CANDIDATES]
    store = Store(str(write_rows(tmp_path / "in.jsonl", rows)), str(tmp_path / "o.jsonl"), "a", 0)
    assert store.order == ["p1", "p2", "p3"] and store.next_id() == "p1"
    assert store.report.dropped == {"fewer than 2 responses": 1}


def test_a_port_in_use_is_refused_before_serving(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        src = write_rows(tmp_path / "in.jsonl", CANDIDATES)
        out = tmp_path / "o" / "ranked.jsonl"
        assert main(["annotate", "--in", str(src), "--out", str(out), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot serve on 127.0.0.1:{port}" in err and len(err.strip().splitlines()) == 1
    assert not out.parent.exists()


def test_the_python_api_checks_options_like_the_command_line():
    cfg = rankalign.annotate_config(input="in.jsonl", out="o.jsonl", port=0, annotator="kim")
    assert (cfg.input, cfg.out, cfg.port, cfg.host) == ("in.jsonl", "o.jsonl", 0, "127.0.0.1")
    assert (
        rankalign.annotate_config(argv=["--in", "a.jsonl", "--out", "b.jsonl"]).input == "a.jsonl"
    )
    with pytest.raises(UserError, match="port"):
        rankalign.annotate_config(input="in.jsonl", out="o.jsonl", port=-1)
    with pytest.raises(UserError, match="did you mean 'annotator'"):
        rankalign.annotate_config(input="in.jsonl", out="o.jsonl", anotator="kim")


def test_help_lists_every_option_and_states_the_merge(capsys):
    import dataclasses

    from rankalign.annotation.config import AnnotateConfig

    with pytest.raises(SystemExit) as exit_:
        main(["annotate", "--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    assert all(f"--{f.name}" in shown for f in dataclasses.fields(AnnotateConfig))
    assert "--in" in shown and "mean rank" in shown and "Borda" in shown


# ----------------------------------------------------------------------------- the server


class Server:
    """`rankalign annotate` in a subprocess on a free port, talked to over HTTP."""

    def __init__(self, src: Path, out: Path, *extra: str):
        env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
        env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
        argv = ["annotate", "--in", str(src), "--out", str(out), "--port", "0", *extra]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rankalign.cli", *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()  # "... open http://127.0.0.1:PORT/ (Ctrl-C ..."
        if "open http" not in line:
            self.proc.kill()
            raise AssertionError(f"no server: {line!r} {self.proc.stderr.read()[-2000:]}")
        self.url = line.split("open ")[1].split()[0]

    def call(self, path: str, body=None, headers=None) -> tuple[int, dict]:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body))
        request = urllib.request.Request(
            self.url.rstrip("/") + path,
            data=data.encode() if isinstance(data, str) else data,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            text = e.read()
            try:
                return e.code, json.loads(text)
            except json.JSONDecodeError:
                return e.code, {"text": text.decode(errors="replace")}

    def answer(self, state: dict, order: list[int], ties=(), all_bad=False) -> tuple[int, dict]:
        item = state["item"]
        body = {
            "id": item["id"],
            "shown_order": item["shown_order"],
            "order": order,
            "ties": [list(t) for t in ties],
            "all_bad": all_bad,
        }
        return self.call("/api/answer", body)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc.stdout.close()
        self.proc.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.kill()


def test_server_killed_between_answers_loses_nothing_and_resumes(tmp_path):
    src = write_rows(tmp_path / "in.jsonl", CANDIDATES)
    out = tmp_path / "o" / "ranked.jsonl"
    with Server(src, out, "--annotator", "ann") as server:
        status, state = server.call("/api/state")
        assert status == 200 and state["item"]["id"] == "p1" and not out.exists()
        assert state["progress"] == {"done": 0, "total": 3, "skipped": 0, "eta_seconds": None}
        first = state
        status, state = server.answer(first, [2, 0, 1])
        assert status == 200 and state["recorded"] == "p1" and state["item"]["id"] == "p2"
        assert state["progress"]["done"] == 1 and state["progress"]["eta_seconds"] is not None
        # the same submit again (a double click, a stale tab): refused, nothing duplicated
        status, again = server.answer(first, [0, 1, 2])
        assert status == 409 and again["item"]["id"] == "p2"
        # checked server-side whatever the page sends; none of these writes anything
        assert server.answer(state, [0, 1, 2])[0] == 400  # k = 4: not a permutation
        assert server.answer(state, [0, 1, 2, 3], ties=[[0, 2]])[0] == 400
        assert server.call("/api/answer", b"x" * 70_000)[0] == 413
        assert server.call("/api/answer", b"{", {"Content-Type": "text/plain"})[0] == 400
        assert server.call("/api/answer", b"[1, 2]")[0] == 400
        assert server.call("/api/answer", {"id": [1]})[0] == 400
        assert server.call("/api/skip", {"id": {"a": 1}})[0] == 400
        assert server.call("/api/state", headers={"Host": "attacker.example"})[0] == 400
        rows = read_rows(out)
        server.kill()
    # what the first answer wrote survives the SIGKILL as it was
    assert [r["id"] for r in rows] == ["p1"]
    expected_p1 = [first["item"]["shown_order"][p] for p in (2, 0, 1)]
    assert rows[0]["annotations"][0]["order"] == expected_p1
    with Server(src, out, "--annotator", "ann") as server:
        status, state = server.call("/api/state")
        assert state["item"]["id"] == "p2" and state["progress"]["done"] == 1  # first unranked
        assert state["item"]["shown_order"] == shown_order(0, "ann", "p2", 4)  # as before
        status, state = server.call("/api/skip", {"id": "p2"})
        assert state["item"]["id"] == "p3" and state["progress"]["skipped"] == 1
        status, state = server.answer(state, [0, 1], all_bad=True)
        assert status == 200 and state["item"] is None  # p2 skipped
        status, state = server.call("/api/revisit", {})
        assert state["item"]["id"] == "p2"
        status, state = server.answer(state, [3, 2, 1, 0], ties=[[2, 1]])
        assert status == 200 and state["item"] is None and state["progress"]["done"] == 3
        server.kill()
    rows = read_rows(out)
    assert [r["id"] for r in rows] == ["p1", "p2", "p3"]  # input order, each once
    assert [len(r["annotations"]) for r in rows] == [1, 1, 1]
    p2 = rows[1]
    shown = shown_order(0, "ann", "p2", 4)
    order = [shown[p] for p in (3, 2, 1, 0)]
    assert p2["annotations"][0]["order"] == order
    assert p2["annotations"][0]["ties"] == [[shown[2], shown[1]]]
    expected = [0.0] * 4
    for place, i in enumerate(order):
        expected[i] = 4 - (place + 1)
    expected[shown[2]] = expected[shown[1]] = 4 - 2.5
    assert p2["scores"] == expected
    assert p2["prior_scores"] == CANDIDATES[1]["scores"] and p2["sources"] == ["a", "b", "c", "d"]
    assert p2["prompt"] == CANDIDATES[1]["prompt"]
    assert rows[2]["all_bad"] is True and rows[2]["scores"] == [0.5, 0.5]
    assert "all_bad" not in rows[0]


def test_two_annotators_merge_on_one_file(tmp_path):
    src = write_rows(tmp_path / "in.jsonl", CANDIDATES)
    out = tmp_path / "ranked.jsonl"
    ann, bob = Store(str(src), str(out), "ann", 0), Store(str(src), str(out), "bob", 0)

    def rank(store, row_id, order):
        shown = store.shown(row_id)
        positions = [shown.index(i) for i in order]
        answer = {"id": row_id, "shown_order": shown, "order": positions, "ties": []}
        return store.answer({**answer, "all_bad": False}, 1.0)

    # interleaved, as two servers on one file would write: neither loses the other's answer
    assert rank(ann, "p1", [0, 2, 1]) and rank(bob, "p1", [2, 0, 1]) and rank(ann, "p3", [0, 1])
    assert not rank(bob, "p1", [0, 1, 2])  # bob already answered p1
    rows = read_rows(out)
    assert [r["id"] for r in rows] == ["p1", "p3"]
    assert [a["annotator"] for a in rows[0]["annotations"]] == ["ann", "bob"]
    # ranks (1, 3, 2) and (2, 3, 1): mean (1.5, 3, 1.5) -> scores 3 - mean rank
    assert rows[0]["scores"] == [1.5, 0.0, 1.5]
    assert Store(str(src), str(out), "bob", 0).next_id() == "p2"
    # the merged file as the input of a third session: bob is not asked about p1 again
    again = Store(str(out), str(tmp_path / "more.jsonl"), "bob", 0)
    assert again.order == ["p1", "p3"] and again.next_id() == "p3"
    assert again.rows["p1"]["scores"] == [1.5, 0.0, 1.5]  # the annotators' scores, kept
    between = agreement(str(out))["between_annotators"]
    assert between["rows"] == 1 and between["kendall_tau_b"] == pytest.approx(1 / 3)


def test_ranked_output_trains_with_rrhf_unchanged(tmp_path, tiny_model_dir):
    """Rank every list of the tiny example (whose model scores become prior_scores) through
    the Store.answer the server calls, then `rankalign train --loss rrhf` on the file as written."""
    out = tmp_path / "ranked.jsonl"
    store = Store(str(TINY), str(out), "ann", 0)
    for row_id in store.order:
        row, shown = store.rows[row_id], store.shown(row_id)
        by_length = sorted(range(len(row["responses"])), key=lambda i: -len(row["responses"][i]))
        answer = {"id": row_id, "shown_order": shown, "ties": [], "all_bad": False}
        answer["order"] = [shown.index(i) for i in by_length]
        assert store.answer(answer, 1.0)
    rows = read_rows(out)
    assert len(rows) == len(store.order) and all("prior_scores" in r for r in rows)
    argv = ["train", "--model", tiny_model_dir, "--data", str(out), "--loss", "rrhf"]
    argv += ["--output_dir", str(tmp_path / "run"), "--max_steps", "2", "--save_strategy", "no"]
    argv += ["--per_device_train_batch_size", "4", "--disable_tqdm", "true"]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["global_step"] == 2 and math.isfinite(summary["train_loss"])
