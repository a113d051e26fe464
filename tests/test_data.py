"""Tests for rankalign.data: readers, layout normalizers, validation, filters and writers.

Every layout is written by the test itself into each supported file format (.jsonl, .json,
.parquet, .csv, .tsv and a `datasets.save_to_disk` folder) and must normalize to the same rows.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest

from rankalign.data import (
    HH_ASSISTANT,
    ShardedWriter,
    atomic_write_text,
    load_lists,
    normalize,
    read_records,
    write_jsonl,
)
from rankalign.errors import UserError

# --------------------------------------------------------------------------------------------
# fixtures of every layout: (records as a user would write them, expected normalized rows)

SYS = {"role": "system", "content": "Be kind and brief."}
U1 = {"role": "user", "content": "Hi, who are you?"}
A1 = {"role": "assistant", "content": "A helpful assistant."}
U2 = {"role": "user", "content": "Can you name a fruit?"}

HH_PROMPT_1 = (
    "\n\nHuman: What is a cat?\n\nAssistant: A small feline that people keep as a pet."
    "\n\nHuman: And a dog?\n\nAssistant:"
)
HH_PROMPT_2 = "\n\nHuman: How do I boil an egg?\n\nAssistant:"

LAYOUTS: dict[str, tuple[list[dict], list[dict]]] = {
    "ranked": (
        [
            {
                "id": "r1",
                "prompt": "Explain tides.",
                "responses": ["The moon pulls the water.", "Magic.", "Wind, mostly."],
                "scores": [2.0, -1.0, 0.5],
                "sources": ["policy:beam", "dataset:chosen", "dataset:rejected"],
                "topic": "science",
            },
            {
                "id": "r2",
                "prompt": "Name a color.",
                "responses": ["Blue.", "Seven."],
                "scores": [1.5, -0.5],
                "sources": ["policy:greedy", "policy:top-p"],
                "topic": "art",
            },
        ],
        [
            {
                "id": "r1",
                "prompt": "Explain tides.",
                "responses": ["The moon pulls the water.", "Magic.", "Wind, mostly."],
                "scores": [2.0, -1.0, 0.5],
                "sources": ["policy:beam", "dataset:chosen", "dataset:rejected"],
                "topic": "science",
            },
            {
                "id": "r2",
                "prompt": "Name a color.",
                "responses": ["Blue.", "Seven."],
                "scores": [1.5, -0.5],
                "sources": ["policy:greedy", "policy:top-p"],
                "topic": "art",
            },
        ],
    ),
    "rrhf-original": (
        [
            {
                "query": HH_PROMPT_2,
                "responses": [
                    " Put it in boiling water.",
                    " Ask a chicken.",
                    " Ten minutes in boiling water, then cold water.",
                ],
                "scores": [-0.75, -2.5, 0.25],
            },
            {
                "query": HH_PROMPT_1,
                "responses": [" A loyal canine.", " No."],
                "scores": [1.0, -1.0],
            },
        ],
        [
            {
                "id": "row-000000",
                "prompt": HH_PROMPT_2,
                "responses": [
                    " Put it in boiling water.",
                    " Ask a chicken.",
                    " Ten minutes in boiling water, then cold water.",
                ],
                "scores": [-0.75, -2.5, 0.25],
            },
            {
                "id": "row-000001",
                "prompt": HH_PROMPT_1,
                "responses": [" A loyal canine.", " No."],
                "scores": [1.0, -1.0],
            },
        ],
    ),
    "pairwise": (
        [
            {"prompt": "Write a greeting.", "chosen": "Hello, friend!", "rejected": "Go away."},
            {"prompt": "2 + 2 =", "chosen": "4", "rejected": "5"},
        ],
        [
            {
                "id": "row-000000",
                "prompt": "Write a greeting.",
                "responses": ["Hello, friend!", "Go away."],
                "scores": [1.0, 0.0],
                "sources": ["dataset:chosen", "dataset:rejected"],
            },
            {
                "id": "row-000001",
                "prompt": "2 + 2 =",
                "responses": ["4", "5"],
                "scores": [1.0, 0.0],
                "sources": ["dataset:chosen", "dataset:rejected"],
            },
        ],
    ),
    "pairwise-messages": (
        [
            {
                "id": "pm1",
                "prompt": [SYS, U1],
                "chosen": [{"role": "assistant", "content": "A helpful assistant."}],
                "rejected": [{"role": "assistant", "content": "Nobody."}],
            },
            {
                "id": "pm2",
                "prompt": [U1, A1, U2],
                "chosen": [{"role": "assistant", "content": "An apple."}],
                "rejected": [{"role": "assistant", "content": "A rock."}],
            },
        ],
        [
            {
                "id": "pm1",
                "prompt": [SYS, U1],
                "responses": ["A helpful assistant.", "Nobody."],
                "scores": [1.0, 0.0],
                "sources": ["dataset:chosen", "dataset:rejected"],
            },
            {
                "id": "pm2",
                "prompt": [U1, A1, U2],
                "responses": ["An apple.", "A rock."],
                "scores": [1.0, 0.0],
                "sources": ["dataset:chosen", "dataset:rejected"],
            },
        ],
    ),
    "conversation-pair": (  # chosen / rejected are whole conversations sharing all but the reply
        [
            {
                "id": "cp1",
                "chosen": [U1, A1, U2, {"role": "assistant", "content": "A pear."}],
                "rejected": [U1, A1, U2, {"role": "assistant", "content": "No."}],
            },
            {
                "id": "cp2",
                "chosen": [U2, {"role": "assistant", "content": "A banana."}],
                "rejected": [U2, {"role": "assistant", "content": "A car."}],
            },
        ],
        [
            {
                "id": "cp1",
                "prompt": [U1, A1, U2],
                "responses": ["A pear.", "No."],
                "scores": [1.0, 0.0],
                "sources": ["dataset:chosen", "dataset:rejected"],
            },
            {
                "id": "cp2",
                "prompt": [U2],
                "responses": ["A banana.", "A car."],
                "scores": [1.0, 0.0],
                "sources": ["dataset:chosen", "dataset:rejected"],
            },
        ],
    ),
    "hh": (
        [
            {
                "chosen": HH_PROMPT_1 + " A loyal canine, often a family pet.",
                "rejected": HH_PROMPT_1 + " I don't know.",
            },
            {
                "chosen": HH_PROMPT_2 + " Put it in boiling water for ten minutes.",
                "rejected": HH_PROMPT_2 + " Microwave it in the shell.",
            },
        ],
        [
            {
                "id": "row-000000",
                "prompt": HH_PROMPT_1,
                "responses": [" A loyal canine, often a family pet.", " I don't know."],
                "scores": [1.0, 0.0],
                "sources": ["dataset:chosen", "dataset:rejected"],
            },
            {
                "id": "row-000001",
                "prompt": HH_PROMPT_2,
                "responses": [
                    " Put it in boiling water for ten minutes.",
                    " Microwave it in the shell.",
                ],
                "scores": [1.0, 0.0],
                "sources": ["dataset:chosen", "dataset:rejected"],
            },
        ],
    ),
    "pro": (  # PRO's own layout: one prefix per candidate, each a list of text pieces
        [
            {
                "prefix": [["\n\nHuman: Hi", "\n\nAssistant:"]] * 3,
                "suffix": [" Hello there!", " Hi.", " What do you want?"],
                "reward": [1.25, 0.5, -2.0],
            },
            {
                "prefix": [["\n\nHuman: Bye", "\n\nAssistant:"]] * 2,
                "suffix": [" Goodbye!", " Finally."],
                "reward": [0.75, -1.0],
            },
        ],
        [
            {
                "id": "row-000000",
                "prompt": "\n\nHuman: Hi\n\nAssistant:",
                "responses": [" Hello there!", " Hi.", " What do you want?"],
                "scores": [1.25, 0.5, -2.0],
            },
            {
                "id": "row-000001",
                "prompt": "\n\nHuman: Bye\n\nAssistant:",
                "responses": [" Goodbye!", " Finally."],
                "scores": [0.75, -1.0],
            },
        ],
    ),
    "messages": (
        [
            {"id": "m1", "messages": [SYS, U1, A1]},
            {"id": "m2", "messages": [U1, A1, U2, {"role": "assistant", "content": "A kiwi."}]},
        ],
        [
            {"id": "m1", "prompt": [SYS, U1], "responses": ["A helpful assistant."]},
            {"id": "m2", "prompt": [U1, A1, U2], "responses": ["A kiwi."]},
        ],
    ),
    "prompt-only": (
        [
            {"id": "p1", "prompt": "Tell me a joke."},
            {"id": "p2", "prompt": [U2]},
        ],
        [
            {"id": "p1", "prompt": "Tell me a joke.", "responses": []},
            {"id": "p2", "prompt": [U2], "responses": []},
        ],
    ),
}
# A column cannot hold both a string and a list in Parquet / datasets: split prompt-only there.
TYPED_FORMATS = ("parquet", "dataset")
FORMATS = ("jsonl", "json", "json-data", "parquet", "csv", "tsv", "dataset")


def _csv_cell(value):
    if isinstance(value, list | dict):
        return json.dumps(value)
    return value


def write_records(records: list[dict], fmt: str, directory: Path, name: str = "data") -> Path:
    """Write `records` in format `fmt` (as a user's tool would) and return the path to read."""
    directory.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path = directory / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif fmt == "json":
        path = directory / f"{name}.json"
        path.write_text(json.dumps(records, indent=2), encoding="utf-8")
    elif fmt == "json-data":
        path = directory / f"{name}.json"
        path.write_text(json.dumps({"data": records}), encoding="utf-8")
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = directory / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(records), path)
    elif fmt in ("csv", "tsv"):
        path = directory / f"{name}.{fmt}"
        columns = list(dict.fromkeys(k for r in records for k in r))
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, delimiter="\t" if fmt == "tsv" else ",")
            writer.writeheader()
            for r in records:
                writer.writerow({k: _csv_cell(v) for k, v in r.items()})
    elif fmt == "dataset":
        import datasets

        path = directory / f"{name}-dataset"
        datasets.Dataset.from_list(records).save_to_disk(str(path))
    else:  # pragma: no cover
        raise AssertionError(fmt)
    return path


def _cases():
    for layout in LAYOUTS:
        for fmt in FORMATS:
            yield pytest.param(layout, fmt, id=f"{layout}-{fmt}")


@pytest.mark.parametrize(("layout", "fmt"), list(_cases()))
def test_every_layout_from_every_format(layout, fmt, tmp_path):
    records, expected = LAYOUTS[layout]
    if layout == "prompt-only" and fmt in TYPED_FORMATS:
        records, expected = records[:1], expected[:1]
    path = write_records(records, fmt, tmp_path)
    loaded = load_lists(path)
    assert loaded.rows == expected
    assert loaded.report.rows_read == loaded.report.rows_kept == len(expected)
    assert sum(loaded.report.dropped.values()) == 0
    # every row knows where it came from
    assert len(loaded.locations) == len(expected)
    for i, loc in enumerate(loaded.locations):
        assert loc["file"] == str(path)
        if fmt == "jsonl":
            assert loc["line"] == i + 1
        elif fmt in ("csv", "tsv"):
            assert "line" in loc
        else:
            assert loc["row"] == i + 1  # rows count from 1, like lines


def test_scores_become_floats_and_ints_are_accepted(tmp_path):
    path = write_records(
        [{"id": "a", "prompt": "p", "responses": ["x", "y"], "scores": [3, -1]}], "jsonl", tmp_path
    )
    (row,) = load_lists(path).rows
    assert row["scores"] == [3.0, -1.0]
    assert all(type(s) is float for s in row["scores"])


def test_prompt_key_aliases(tmp_path):
    recs = [
        {"id": "a", "prompt": "one"},
        {"id": "b", "query": "two"},
        {"id": "c", "instruction": "three"},
        {"id": "d", "question": "four"},
    ]
    rows = load_lists(write_records(recs, "jsonl", tmp_path)).rows
    assert [r["prompt"] for r in rows] == ["one", "two", "three", "four"]
    assert all(r["responses"] == [] for r in rows)


def test_prompt_only_mixed_keys_from_parquet_nulls(tmp_path):
    # Parquet fills a column missing from a row with null: the next prompt key must be used.
    recs = [
        {"id": "a", "prompt": "one", "instruction": None},
        {"id": "b", "prompt": None, "instruction": "two"},
    ]
    rows = load_lists(write_records(recs, "parquet", tmp_path)).rows
    assert [r["prompt"] for r in rows] == ["one", "two"]


def test_response_as_assistant_message_in_ranked_list(tmp_path):
    rec = {
        "id": "a",
        "prompt": [U2],
        "responses": [
            {"role": "assistant", "content": "An apple."},
            [{"role": "assistant", "content": "A pear."}],
            "A plum.",
        ],
        "scores": [1, 2, 3],
    }
    (row,) = load_lists(write_records([rec], "jsonl", tmp_path)).rows
    assert row["responses"] == ["An apple.", "A pear.", "A plum."]


# --------------------------------------------------------------------------------------------
# Anthropic-HH transcripts


def test_hh_multi_turn_split_at_last_assistant():
    prefix = (
        "\n\nHuman: I need help with my garden.\n\nAssistant: Sure, what do you grow?"
        "\n\nHuman: Tomatoes. They keep dying.\n\nAssistant: How often do you water them?"
        "\n\nHuman: Every day.\n\nAssistant:"
    )
    rec = {
        "chosen": prefix + " That may be too much; water deeply twice a week.",
        "rejected": prefix + " Buy plastic ones.",
    }
    row = normalize(rec, {"file": "hh.jsonl", "line": 1}, 0)
    assert row["prompt"] == prefix
    assert row["prompt"].endswith("Assistant:")
    assert row["prompt"].count(HH_ASSISTANT) == 3
    assert row["responses"] == [
        " That may be too much; water deeply twice a week.",
        " Buy plastic ones.",
    ]
    # nothing is lost or duplicated by the split
    assert row["prompt"] + row["responses"][0] == rec["chosen"]
    assert row["prompt"] + row["responses"][1] == rec["rejected"]
    assert row["scores"] == [1.0, 0.0]


def test_hh_response_with_human_mention_is_not_split_early():
    prefix = "\n\nHuman: Quote a dialogue.\n\nAssistant:"
    chosen = prefix + ' Human: "hello" Assistant: "hi"'
    row = normalize({"chosen": chosen, "rejected": prefix + " No."}, {"file": "f", "line": 1}, 0)
    assert row["prompt"] == prefix
    assert row["responses"] == [' Human: "hello" Assistant: "hi"', " No."]


def test_hh_different_dialogues_is_an_error():
    rec = {
        "chosen": "\n\nHuman: A?\n\nAssistant: yes.\n\nHuman: B?\n\nAssistant: ok",
        "rejected": "\n\nHuman: A?\n\nAssistant: no.\n\nHuman: B?\n\nAssistant: ok",
    }
    with pytest.raises(UserError) as e:
        normalize(rec, {"file": "hh.jsonl", "line": 7}, 6)
    msg = str(e.value)
    assert "hh.jsonl" in msg and "line 7" in msg and "'rejected'" in msg


def test_hh_without_assistant_turn_is_an_error():
    with pytest.raises(UserError, match=r"hh\.jsonl, line 2, field 'chosen'"):
        normalize(
            {"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: hi"},
            {"file": "hh.jsonl", "line": 2},
            1,
        )


# --------------------------------------------------------------------------------------------
# PRO layout


def test_pro_list_of_lists_prefix_joined():
    rec = {
        "prefix": [["\n\nHuman: Hi", "\n\nAssistant: Hello.", "\n\nHuman: Bye", "\n\nAssistant:"]]
        * 2,
        "suffix": [" See you!", " Whatever."],
        "reward": [0.9, -0.3],
    }
    row = normalize(rec, {"file": "pro.jsonl", "line": 1}, 0)
    assert row["prompt"] == "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Bye\n\nAssistant:"
    assert row["responses"] == [" See you!", " Whatever."]
    assert row["scores"] == [0.9, -0.3]


def test_pro_string_prefix_and_missing_reward():
    row = normalize({"prefix": "Q: 1+1?\nA:", "suffix": [" 2", " 3"]}, {"file": "f", "row": 0}, 0)
    assert row["prompt"] == "Q: 1+1?\nA:"
    assert row["responses"] == [" 2", " 3"]
    assert "scores" not in row


def test_pro_different_prefixes_is_an_error():
    rec = {"prefix": [["Human: a"], ["Human: b"]], "suffix": ["x", "y"], "reward": [1, 0]}
    with pytest.raises(UserError, match=r"pro\.jsonl, line 4, field 'prefix'"):
        normalize(rec, {"file": "pro.jsonl", "line": 4}, 3)


def test_pro_reward_length_mismatch():
    rec = {"prefix": "p", "suffix": ["x", "y", "z"], "reward": [1, 0]}
    with pytest.raises(UserError, match=r"line 1, field 'scores'.*2 values for 3 responses"):
        normalize(rec, {"file": "pro.jsonl", "line": 1}, 0)


# --------------------------------------------------------------------------------------------
# validation: one-line errors naming file, line/row and field

BAD_SCORES = [  # the bad row has three responses
    pytest.param([1.0, float("nan"), 2.0], "scores[1]", id="nan"),
    pytest.param([float("inf"), 0.0, 1.0], "scores[0]", id="inf"),
    pytest.param([0.0, 1.0, float("-inf")], "scores[2]", id="-inf"),
    pytest.param([True, 0.0, 1.0], "scores[0]", id="bool"),
    pytest.param([1.0, "high", 0.0], "scores[1]", id="string"),
    pytest.param([1.0, 0.0, None], "scores[2]", id="null"),
    pytest.param([1.0, [2.0], 0.0], "scores[1]", id="nested-list"),
    pytest.param([1.0, 2.0], "scores", id="too-few"),
    pytest.param([1.0, 2.0, 3.0, 4.0], "scores", id="too-many"),
    pytest.param(0.5, "scores", id="not-a-list"),
    pytest.param({"a": 1.0}, "scores", id="dict"),
]


def _ranked_records(bad_scores):
    good = {"id": "good", "prompt": "p", "responses": ["a", "b", "c"], "scores": [1.0, 0.0, 2.0]}
    bad = {"id": "bad", "prompt": "q", "responses": ["x", "y", "z"], "scores": bad_scores}
    return [good, good | {"id": "good2"}, bad]


@pytest.mark.parametrize(("scores", "field"), BAD_SCORES)
def test_bad_scores_jsonl_name_file_line_field(scores, field, tmp_path):
    path = tmp_path / "lists.jsonl"
    # json.dumps writes NaN / Infinity literals, which Python's reader (and many tools) accept
    path.write_text("".join(json.dumps(r) + "\n" for r in _ranked_records(scores)), "utf-8")
    with pytest.raises(UserError) as e:
        load_lists(path)
    msg = str(e.value)
    assert str(path) in msg
    assert "line 3" in msg
    assert f"field '{field}'" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("fmt", ["json", "parquet", "dataset"])
def test_nan_score_row_formats_name_row(fmt, tmp_path):
    records = _ranked_records([1.0, float("nan"), 2.0])
    path = write_records(records, fmt, tmp_path)
    with pytest.raises(UserError) as e:
        load_lists(path)
    msg = str(e.value)
    assert str(path) in msg and "row 3" in msg and "field 'scores[1]'" in msg
    assert "nan" in msg


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_bad_score_csv_names_line(fmt, tmp_path):
    path = write_records(_ranked_records([1.0, "x", 2.0]), fmt, tmp_path)
    with pytest.raises(UserError) as e:
        load_lists(path)
    msg = str(e.value)
    assert str(path) in msg and "line 4" in msg and "field 'scores[1]'" in msg  # header = line 1


def test_bad_score_csv_with_multiline_cells_names_the_real_line(tmp_path):
    records = [
        {
            "id": "a",
            "prompt": HH_PROMPT_1,
            "responses": [" yes\nand more", " no"],
            "scores": [1, 0],
        },
        {"id": "b", "prompt": HH_PROMPT_2, "responses": [" yes", " no"], "scores": [1, "x"]},
    ]
    path = write_records(records, "csv", tmp_path)
    lines = path.read_text(encoding="utf-8").split("\n")
    first = next(i for i, t in enumerate(lines, start=1) if t.startswith("b,"))
    last = first + HH_PROMPT_2.count("\n")
    with pytest.raises(UserError) as e:
        load_lists(path)
    named = [n for n in range(first, last + 1) if f"line {n}," in str(e.value)]
    assert named, f"expected a line in {first}..{last}: {e.value}"


def test_missing_prompt_and_bad_prompt_types(tmp_path):
    cases = [
        ({"id": "a", "responses": ["x", "y"], "scores": [1, 0]}, "prompt"),
        ({"id": "a", "prompt": 42, "responses": ["x", "y"], "scores": [1, 0]}, "prompt"),
        ({"id": "a", "prompt": "  ", "responses": ["x", "y"], "scores": [1, 0]}, "prompt"),
        ({"id": "a", "prompt": [], "responses": ["x", "y"], "scores": [1, 0]}, "prompt"),
        ({"id": "a", "prompt": [{"role": "bot", "content": "x"}], "responses": ["x"]}, "prompt"),
        ({"id": "a", "prompt": [{"role": "user", "content": 3}], "responses": ["x"]}, "prompt"),
        ({"id": "a", "query": ["not a message"], "responses": ["x"]}, "query"),
        ({"id": "a", "prompt": "p", "responses": "x"}, "responses"),
        ({"id": "a", "prompt": "p", "responses": ["x", 1]}, "responses[1]"),
        (
            {"id": "a", "prompt": "p", "responses": ["x", {"role": "user", "content": "u"}]},
            "responses[1]",
        ),
        ({"id": "a", "prompt": "p", "responses": ["x", []]}, "responses[1]"),
        ({"id": "a", "prompt": "p", "responses": ["x", "y"], "sources": ["s"]}, "sources"),
        ({"id": "a", "prompt": "p", "chosen": "x"}, "rejected"),
        ({"id": "a", "prompt": "p", "rejected": "x"}, "chosen"),
        ({"id": "a", "suffix": "x", "prefix": "p"}, "suffix"),
        ({"id": "a", "messages": [U1]}, "messages"),
        ({"id": "a", "messages": [U1, A1, U2]}, "messages"),
        ({"id": "a", "chosen": [U1, A1], "rejected": [U2, A1]}, "rejected"),
    ]
    for rec, field in cases:
        path = tmp_path / "one.jsonl"
        path.write_text(json.dumps({"id": "ok", "prompt": "p"}) + "\n" + json.dumps(rec) + "\n")
        with pytest.raises(UserError) as e:
            load_lists(path)
        msg = str(e.value)
        assert f"{path}, line 2, field '{field}'" in msg, (rec, msg)


def test_unrecognized_layout_names_line_and_fields(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "hi", "label": 1}\n')
    with pytest.raises(UserError, match=r"x\.jsonl, line 1: unrecognized layout.*label, text"):
        load_lists(path)


def test_duplicate_ids_name_both_places(tmp_path):
    recs = [
        {"id": "a", "prompt": "p", "responses": ["x", "y"], "scores": [1, 0]},
        {"id": "b", "prompt": "p", "responses": ["x", "y"], "scores": [1, 0]},
        {"id": "a", "prompt": "q", "responses": ["z", "w"], "scores": [0, 1]},
    ]
    path = write_records(recs, "jsonl", tmp_path)
    with pytest.raises(UserError) as e:
        load_lists(path)
    msg = str(e.value)
    assert "line 3" in msg and "field 'id'" in msg and "'a'" in msg and "line 1" in msg
    path = write_records(recs, "json", tmp_path)
    with pytest.raises(UserError, match=r"row 3, field 'id'.*first seen at row 1"):
        load_lists(path)


def test_numeric_ids_are_strings_and_duplicates_across_types_detected(tmp_path):
    recs = [{"id": 7, "prompt": "p"}, {"id": "7", "prompt": "q"}]
    with pytest.raises(UserError, match="duplicate id '7'"):
        load_lists(write_records(recs, "jsonl", tmp_path))


def test_require_scores_and_min_responses(tmp_path):
    path = write_records([{"id": "a", "prompt": "p", "responses": ["x", "y"]}], "jsonl", tmp_path)
    assert load_lists(path).rows[0]["responses"] == ["x", "y"]
    with pytest.raises(UserError, match=r"line 1, field 'scores'"):
        load_lists(path, require_scores=True)
    path = write_records(
        [{"id": "a", "prompt": "p", "responses": ["x"], "scores": [1]}], "jsonl", tmp_path
    )
    assert len(load_lists(path, min_responses=1).rows) == 1
    with pytest.raises(UserError, match=r"line 1, field 'responses'.*at least 2"):
        load_lists(path, min_responses=2)


def test_missing_responses_with_scores_names_responses(tmp_path):
    path = tmp_path / "lists.jsonl"
    path.write_text('{"id": "a", "prompt": "p", "scores": [1.0, 0.0], "sources": ["x", "y"]}\n')
    with pytest.raises(UserError) as e:
        load_lists(path, require_scores=True, min_responses=2)
    assert "field 'responses'" in str(e.value)


# --------------------------------------------------------------------------------------------
# readers: structure errors


def test_reader_errors(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": "a"}\n\n   \n{"prompt": \n')
    with pytest.raises(UserError, match=r"bad\.jsonl, line 4: invalid JSON"):
        list(read_records(p))
    p.write_text('{"prompt": "a"}\n[1, 2]\n')
    with pytest.raises(UserError, match=r"line 2: expected a JSON object, got list"):
        list(read_records(p))
    p.write_bytes(b'{"prompt": "a"}\n{"prompt": "\xff\xfe"}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl, line 2: not valid UTF-8"):
        list(read_records(p))
    j = tmp_path / "bad.json"
    j.write_text('{"prompt": "a"}')
    with pytest.raises(UserError, match=r"bad\.json: a \.json file must hold a list"):
        list(read_records(j))
    j.write_text('[{"prompt": "a"}, "b"]')
    with pytest.raises(UserError, match=r"bad\.json, row 2: expected a JSON object, got str"):
        list(read_records(j))
    j.write_text('[\n{"prompt": "a"},\n{"prompt" "b"}\n]')
    with pytest.raises(UserError, match=r"bad\.json, line 3: invalid JSON"):
        list(read_records(j))
    j.write_bytes(b'[{"prompt": "\xff"}]')
    with pytest.raises(UserError, match=r"bad\.json: not valid UTF-8"):
        list(read_records(j))
    t = tmp_path / "data.txt"
    t.write_text('{"prompt": "a"}\n')
    with pytest.raises(UserError, match=r"data\.txt: unknown file type '\.txt'"):
        list(read_records(t))
    q = tmp_path / "broken.parquet"
    q.write_bytes(b"this is not parquet")
    with pytest.raises(UserError, match=r"broken\.parquet: cannot read Parquet"):
        list(read_records(q))
    d = tmp_path / "not-a-dataset"
    d.mkdir()
    with pytest.raises(UserError, match=r"not-a-dataset: not a datasets\.save_to_disk folder"):
        list(read_records(d))
    with pytest.raises(UserError, match="file not found"):
        list(read_records(tmp_path / "missing.jsonl"))


def test_empty_file_is_an_error_naming_it(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("\n \n")
    with pytest.raises(UserError, match=r"empty\.jsonl: no usable rows"):
        load_lists(p)


def test_dataset_dict_folder_uses_train_split(tmp_path):
    import datasets

    recs, expected = LAYOUTS["ranked"]
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(recs), "test": datasets.Dataset.from_list(recs[:1])}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert load_lists(tmp_path / "dd").rows == expected
    datasets.DatasetDict({"test": datasets.Dataset.from_list(recs)}).save_to_disk(
        str(tmp_path / "dd2")
    )
    with pytest.raises(UserError, match=r"dd2: dataset folder has splits \['test'\]"):
        load_lists(tmp_path / "dd2")


def test_limit_reads_only_that_many(tmp_path):
    recs = [{"id": str(i), "prompt": f"p{i}"} for i in range(10)]
    loaded = load_lists(write_records(recs, "jsonl", tmp_path), limit=3)
    assert [r["id"] for r in loaded.rows] == ["0", "1", "2"]
    assert loaded.report.rows_read == 3


# --------------------------------------------------------------------------------------------
# filters: counted, never silent


def _check_accounting(report):
    assert report.rows_read == report.rows_kept + sum(report.dropped.values()), report.as_dict()


def test_empty_response_is_an_error_by_default(tmp_path):
    recs = [
        {"id": "a", "prompt": "p", "responses": ["x", "y"], "scores": [1, 0]},
        {"id": "b", "prompt": "p", "responses": ["x", " \n\t"], "scores": [1, 0]},
    ]
    with pytest.raises(UserError) as e:
        load_lists(write_records(recs, "jsonl", tmp_path))
    msg = str(e.value)
    assert "line 2" in msg and "field 'responses[1]'" in msg and "empty" in msg


def test_empty_responses_dropped_and_counted(tmp_path):
    recs = [
        {
            "id": "a",
            "prompt": "p",
            "responses": ["good", "", "fine", "  "],
            "scores": [3.0, 2.0, 1.0, 0.0],
            "sources": ["s0", "s1", "s2", "s3"],
        },
        {"id": "b", "prompt": "q", "responses": ["x", "y"], "scores": [1.0, 0.0]},
        {"id": "c", "prompt": "r", "responses": ["\n", "z", "w"], "scores": [5.0, 1.0, 0.0]},
    ]
    loaded = load_lists(
        write_records(recs, "jsonl", tmp_path), empty_responses="drop", min_responses=2
    )
    a, b, c = loaded.rows
    assert a["responses"] == ["good", "fine"]
    assert a["scores"] == [3.0, 1.0]  # scores and sources stay aligned with their responses
    assert a["sources"] == ["s0", "s2"]
    assert b["responses"] == ["x", "y"]
    assert c["responses"] == ["z", "w"] and c["scores"] == [1.0, 0.0]
    assert loaded.report.notes["empty responses removed"] == 3
    assert "3 empty responses removed" in loaded.report.summary()
    _check_accounting(loaded.report)


def test_empty_response_drop_leaves_too_few_then_row_dropped_and_counted(tmp_path):
    recs = [
        {"id": "a", "prompt": "p", "chosen": "Hello!", "rejected": "Bye."},
        {"id": "b", "prompt": "q", "chosen": "Sure.", "rejected": ""},
    ]
    loaded = load_lists(
        write_records(recs, "jsonl", tmp_path),
        empty_responses="drop",
        min_responses=2,
        require_scores=True,
    )
    assert [r["id"] for r in loaded.rows] == ["a"]
    assert sum(loaded.report.dropped.values()) == 1
    _check_accounting(loaded.report)


def test_bad_empty_responses_option():
    with pytest.raises(UserError, match="empty_responses"):
        load_lists("whatever.jsonl", empty_responses="keep")


def test_tied_lists_counted_then_dropped_when_asked(tmp_path):
    recs = [
        {"id": "a", "prompt": "p", "responses": ["x", "y"], "scores": [1.0, 1.0]},
        {"id": "b", "prompt": "p", "responses": ["x", "y", "z"], "scores": [1.0, 1.0, 2.0]},
        {"id": "c", "prompt": "p", "responses": ["x", "y", "z"], "scores": [0, 0, 0]},
        {"id": "d", "prompt": "p", "responses": ["x"], "scores": [1.0]},
        {"id": "e", "prompt": "p", "responses": ["x", "y"], "scores": [2.0, -1.0]},
    ]
    path = write_records(recs, "jsonl", tmp_path)
    kept = load_lists(path)
    assert [r["id"] for r in kept.rows] == ["a", "b", "c", "d", "e"]
    assert kept.report.notes["lists with all responses tied"] == 2
    assert "2 lists with all responses tied" in kept.report.summary()
    _check_accounting(kept.report)

    dropped = load_lists(path, drop_tied_lists=True)
    assert [r["id"] for r in dropped.rows] == ["b", "d", "e"]
    assert dropped.report.rows_read == 5 and dropped.report.rows_kept == 3
    assert dropped.report.dropped["all responses tied"] == 2
    assert "dropped 2 (all responses tied)" in dropped.report.summary()
    _check_accounting(dropped.report)
    as_dict = dropped.report.as_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict


def test_everything_dropped_is_an_error_with_the_counts(tmp_path):
    recs = [{"id": "a", "prompt": "p", "responses": ["x", "y"], "scores": [1.0, 1.0]}]
    with pytest.raises(UserError, match=r"no usable rows.*dropped 1 \(all responses tied\)"):
        load_lists(write_records(recs, "jsonl", tmp_path), drop_tied_lists=True)


def test_accounting_on_a_mixed_file(tmp_path):
    recs = []
    for i in range(30):
        scores = [1.0, 1.0] if i % 3 == 0 else [float(i), 0.0]
        responses = ["a", ""] if i % 5 == 0 else ["a", "b"]
        recs.append(
            {
                "id": f"r{i}",
                "prompt": f"p{i}",
                "responses": responses + ["c"],
                "scores": scores + [0.5],
            }
        )
    path = write_records(recs, "jsonl", tmp_path)
    loaded = load_lists(path, empty_responses="drop", drop_tied_lists=True, min_responses=2)
    _check_accounting(loaded.report)
    assert loaded.report.rows_read == 30
    assert loaded.report.notes["empty responses removed"] == 6


# --------------------------------------------------------------------------------------------
# writers


def _no_temp_files(directory: Path) -> list[str]:
    return [p.name for p in directory.rglob("*") if p.name.endswith(".tmp")]


def test_atomic_write_text_writes_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "dir" / "out.txt"
    atomic_write_text(target, "héllo\n")
    assert target.read_text(encoding="utf-8") == "héllo\n"
    atomic_write_text(target, "second")
    assert target.read_text(encoding="utf-8") == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_atomic_write_text_keeps_old_content_when_writing_fails(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("old content\n", encoding="utf-8")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(target, "new content " + "\ud800")  # a lone surrogate cannot be encoded
    assert target.read_text(encoding="utf-8") == "old content\n"
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl"]
    with pytest.raises(TypeError):
        atomic_write_text(target, b"bytes are not text")  # type: ignore[arg-type]
    assert target.read_text(encoding="utf-8") == "old content\n"
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl"]


def test_write_jsonl_round_trip(tmp_path):
    rows = [{"id": "ü", "prompt": [U1], "responses": ["日本", "x"], "scores": [1.0, -2.5]}]
    write_jsonl(tmp_path / "o.jsonl", rows)
    text = (tmp_path / "o.jsonl").read_text(encoding="utf-8")
    assert "日本" in text and text.endswith("\n")
    assert load_lists(tmp_path / "o.jsonl").rows == rows


def _rows(n):
    return [
        {"id": f"id-{i}", "prompt": f"p{i}", "responses": [f"r{i}"], "scores": [float(i)]}
        for i in range(n)
    ]


def test_sharded_writer_resume_after_partial_shards(tmp_path):
    out = tmp_path / "scored.jsonl"
    rows = _rows(11)
    order = [r["id"] for r in rows]
    processing = [rows[i] for i in (3, 1, 4, 0, 9, 2, 5)]  # finished out of order

    w1 = ShardedWriter(out, shard_size=2)
    for r in processing:
        w1.add(r)
    # "killed" here: 3 shards (6 rows) committed, the 7th row only in memory
    del w1
    assert not out.exists()

    w2 = ShardedWriter(out, shard_size=2)
    done = w2.done_ids()
    assert done == {rows[i]["id"] for i in (3, 1, 4, 0, 9, 2)}
    todo = [r for r in rows if r["id"] not in done]
    assert [r["id"] for r in todo] == ["id-5", "id-6", "id-7", "id-8", "id-10"]
    for r in todo:
        w2.add(r)
    merged = w2.finish(order)
    assert merged == rows
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows
    assert not w2.parts.exists()
    assert sorted(os.listdir(tmp_path)) == ["scored.jsonl"]


def test_sharded_writer_resume_does_not_overwrite_shards(tmp_path):
    out = tmp_path / "o.jsonl"
    rows = _rows(6)
    w = ShardedWriter(out, shard_size=2)
    for r in rows[:4]:
        w.add(r)
    for round_ in range(2):  # resuming twice keeps appending new shards
        w = ShardedWriter(out, shard_size=2)
        w.add(rows[4 + round_])
        w.flush()
    w = ShardedWriter(out, shard_size=2)
    assert w.done_ids() == {r["id"] for r in rows}
    assert len(w.done_rows()) == 6  # nothing duplicated
    assert w.finish([r["id"] for r in rows]) == rows


def test_sharded_writer_ignores_and_removes_stale_tmp(tmp_path):
    out = tmp_path / "o.jsonl"
    rows = _rows(5)
    w = ShardedWriter(out, shard_size=2)
    for r in rows[:2]:
        w.add(r)
    # a kill in the middle of writing the second shard leaves a partial temp file
    stale = w.parts / ".shard-000001.jsonl.x1y2z3.tmp"
    stale.write_text(json.dumps(rows[2]) + "\n" + '{"id": "id-3", "pro')
    w2 = ShardedWriter(out, shard_size=2)
    assert w2.done_ids() == {"id-0", "id-1"}  # the row only in the temp file is not done
    assert _no_temp_files(tmp_path) == []
    for r in rows[2:]:
        w2.add(r)
    assert w2.finish([r["id"] for r in rows]) == rows
    assert not w2.parts.exists()
    assert sorted(os.listdir(tmp_path)) == ["o.jsonl"]


def test_sharded_writer_finish_with_missing_rows_keeps_parts(tmp_path):
    out = tmp_path / "o.jsonl"
    rows = _rows(3)
    w = ShardedWriter(out, shard_size=10)
    w.add(rows[0])
    w.add(rows[2])
    with pytest.raises(RuntimeError, match="missing"):
        w.finish([r["id"] for r in rows])
    assert not out.exists()  # no incomplete output where a complete one is expected
    w = ShardedWriter(out, shard_size=10)
    assert w.done_ids() == {"id-0", "id-2"}  # the flushed rows survive for a resume
    w.add(rows[1])
    assert w.finish([r["id"] for r in rows]) == rows


def test_sharded_writer_output_replaces_old_file_atomically(tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text("stale previous output\n")
    w = ShardedWriter(out, shard_size=1)
    for r in _rows(2):
        w.add(r)
    assert out.read_text() == "stale previous output\n"  # untouched until finish
    w.finish(["id-1", "id-0"])
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["id-1", "id-0"]


def test_nan_is_not_a_silent_float(tmp_path):
    # guard: the readers must not turn NaN into something that passes math.isfinite
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": "a", "prompt": "p", "responses": ["x", "y"], "scores": [NaN, 1]}\n')
    with pytest.raises(UserError):
        load_lists(path)
    assert not math.isfinite(json.loads("NaN"))


# --------------------------------------------------------------------------------------------
# the small layout files shipped under tests/data/layouts/

LAYOUT_DIR = Path(__file__).parent / "data" / "layouts"
SHIPPED = {
    "ranked.jsonl": [3, 2, 3],
    "rrhf_original.jsonl": [2],
    "pairwise.jsonl": [2, 2],
    "hh.jsonl": [2],
    "pro.jsonl": [3],
    "messages.jsonl": [1],
    "prompts.jsonl": [0, 0],
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_layout_files(name):
    loaded = load_lists(LAYOUT_DIR / name)
    assert [len(r["responses"]) for r in loaded.rows] == SHIPPED[name]
    for row in loaded.rows:
        assert isinstance(row["id"], str)
        assert isinstance(row["prompt"], str | list)
        if "scores" in row:
            assert len(row["scores"]) == len(row["responses"])
    if name == "hh.jsonl":
        (row,) = loaded.rows
        assert row["prompt"].endswith("\n\nHuman: and a bad one?\n\nAssistant:")
        assert row["responses"] == [" a boring one.", " i loved it."]


def test_sharegpt_rows_sft_and_ranking():
    """LLaMA-Factory's sharegpt layout: `conversations` of {from, value} turns (+ `system`)."""
    loc = {"file": "sharegpt.json", "row": 3}
    sft = {
        "conversations": [
            {"from": "human", "value": "hi"},
            {"from": "gpt", "value": "hello"},
        ],
        "system": "be brief",
    }
    row = normalize(sft, loc, 2)
    assert row["prompt"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert row["responses"] == ["hello"] and "conversations" not in row and "system" not in row
    ranking = {
        "conversations": [{"from": "human", "value": "hi"}],
        "chosen": {"from": "gpt", "value": "good"},
        "rejected": {"from": "gpt", "value": "bad"},
    }
    row = normalize(ranking, loc, 2)
    assert row["prompt"] == [{"role": "user", "content": "hi"}]
    assert row["responses"] == ["good", "bad"] and row["scores"] == [1.0, 0.0]
    # {from, value} turns are accepted wherever message lists are
    row = normalize({"prompt": [{"from": "human", "value": "q"}], "responses": ["a"]}, loc, 0)
    assert row["prompt"] == [{"role": "user", "content": "q"}]


def test_sharegpt_bad_speaker_names_file_row_and_field():
    bad = {"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "x"}]}
    with pytest.raises(UserError) as e:
        normalize(bad, {"file": "sharegpt.json", "row": 3}, 2)
    text = str(e.value)
    assert "sharegpt.json" in text and "3" in text and "conversations[1].from" in text
    assert "'bot'" in text and "\n" not in text
    ends_with_reply = {
        "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}],
        "chosen": "a",
        "rejected": "b",
    }
    with pytest.raises(UserError, match="must end with a prompt turn"):
        normalize(ends_with_reply, {"file": "f", "row": 1}, 0)
