"""The Arrow path (rankalign.tokenized): the ids and the data report of the in-memory path
(`load_lists` + `encode_list` per row) on every layout fixture; the cache keyed, checked and
rebuilt; one build shared by racing processes; bad rows refused as before, nothing kept."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import build_tokenizer

from rankalign.data import load_lists
from rankalign.errors import UserError
from rankalign.tokenization import encode_list
from rankalign.tokenized import BATCH_ROWS, CACHE_ENV, token_table

HERE = Path(__file__).parent
LAYOUTS = sorted((HERE / "data" / "layouts").glob("*.jsonl"))
LOAD = dict(
    require_scores=False,
    min_responses=0,
    empty_responses="error",
    drop_tied_lists=False,
    limit=None,
)


def _encoding(max_length=512, mode="auto", drop=False, min_response_tokens=4):
    return dict(
        max_length=max_length,
        min_response_tokens=min_response_tokens,
        chat_template=mode,
        drop_over_length=drop,
    )


def _naive(path, tokenizer, load, encoding):
    """The in-memory path as training used it before the table: every row validated, then each
    encoded alone by `encode_list`; the same report."""
    loaded = load_lists(path, **load)
    items, report = [], loaded.report
    for row in loaded.rows:
        enc = encode_list(
            tokenizer,
            row["prompt"],
            row["responses"],
            max_length=encoding["max_length"],
            min_response_tokens=encoding["min_response_tokens"],
            chat_template=encoding["chat_template"],
        )
        if enc.prompt_truncated or enc.responses_truncated:
            if encoding["drop_over_length"]:
                report.dropped["over max_length"] += 1
                continue
            report.notes["prompts truncated"] += int(enc.prompt_truncated)
            report.notes["responses truncated"] += enc.responses_truncated
        items.append(
            {
                "id": row["id"],
                "prompt_ids": enc.prompt_ids,
                "response_ids": enc.response_ids,
                "scores": row.get("scores") or [0.0] * len(row["responses"]),
            }
        )
    report.rows_kept = len(items)
    if not items:
        raise UserError(f"no rows left after filtering ({report.summary()})", file=path)
    return items, report.as_dict() | {"summary": report.summary()}


def _outcome(fn):
    try:
        return fn()
    except UserError as e:
        return f"UserError: {e}"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


@pytest.mark.parametrize("path", LAYOUTS, ids=[p.name for p in LAYOUTS])
@pytest.mark.parametrize("mode", ["auto", "always", "never"])
@pytest.mark.parametrize("max_length, drop", [(512, False), (12, False), (12, True)])
@pytest.mark.parametrize("bos", [True, False], ids=["bos", "no-bos"])
def test_arrow_ids_and_report_equal_the_in_memory_path(path, mode, max_length, drop, bos, cache):
    tokenizer = build_tokenizer(add_bos=bos)
    encoding = _encoding(max_length, mode, drop)
    expected = _outcome(lambda: _naive(path, tokenizer, LOAD, encoding))

    def arrow():
        table = token_table(path, tokenizer, load=LOAD, encoding=encoding)
        return table.items, table.report

    assert _outcome(arrow) == expected


def _rows(n, bad_at=None, messages_at=None):
    rows = []
    for i in range(n):
        prompt = f"the movie number {i} was great?"
        if i == messages_at:
            prompt = [{"role": "user", "content": prompt}]
        rows.append(
            {
                "id": f"r{i}",
                "prompt": prompt,
                "responses": [" i loved it", " sad"],
                "scores": [1, 0],
            }
        )
    if bad_at is not None:
        rows[bad_at]["scores"] = [1, "high"]
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_a_table_spanning_batches_equals_the_in_memory_path(tmp_path, cache, tokenizer):
    path = tmp_path / "many.jsonl"
    path.write_text(_rows(BATCH_ROWS * 2 + 7))
    table = token_table(path, tokenizer, load=LOAD, encoding=_encoding())
    items, report = _naive(path, tokenizer, LOAD, _encoding())
    assert len(table) == len(items) == BATCH_ROWS * 2 + 7
    assert table.items == items and table.report == report
    assert table[-1] == items[-1] and [table[i] for i in (0, BATCH_ROWS, 2 * BATCH_ROWS)] == [
        items[i] for i in (0, BATCH_ROWS, 2 * BATCH_ROWS)
    ]
    with pytest.raises(IndexError):
        table[len(items)]
    assert pickle.loads(pickle.dumps(table)).items == items  # DataLoader workers map it again


def test_reference_log_probs_attach_per_response(tmp_path, cache, tokenizer):
    table = token_table(LAYOUTS[-2], tokenizer, load=LOAD, encoding=_encoding())
    counts = [len(it["response_ids"]) for it in table.items]
    assert table.response_counts() == counts
    flat = [float(v) for v in range(sum(counts))]
    table.attach_ref_logp(flat)
    starts = [sum(counts[:i]) for i in range(len(counts))]
    assert [it["ref_logp"] for it in table.items] == [
        flat[s : s + k] for s, k in zip(starts, counts)
    ]
    with pytest.raises(ValueError, match="reference log-probs for"):
        table.attach_ref_logp(flat[:-1])


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_a_rerun_maps_the_cache_and_every_key_part_counts(tmp_path, cache, tokenizer):
    path = tmp_path / "rows.jsonl"
    path.write_text(_rows(20))
    first = token_table(path, tokenizer, load=LOAD, encoding=_encoding())
    again = token_table(path, tokenizer, load=LOAD, encoding=_encoding())
    assert first.built and not again.built
    assert again.path == first.path and again.items == first.items
    assert again.report == first.report
    others = [
        token_table(path, tokenizer, load=LOAD, encoding=_encoding(max_length=16)),
        token_table(path, tokenizer, load=LOAD, encoding=_encoding(mode="never")),
        token_table(path, tokenizer, load=LOAD | {"limit": 5}, encoding=_encoding()),
        token_table(path, build_tokenizer(add_bos=False), load=LOAD, encoding=_encoding()),
    ]
    path.write_text(_rows(21))  # the same file name, other content
    others.append(token_table(path, tokenizer, load=LOAD, encoding=_encoding()))
    assert all(t.built for t in others)
    assert len({t.fingerprint for t in [first, *others]}) == 6
    assert len(_files(cache)) == 2 * 6  # a table and its record each


@pytest.mark.parametrize("damage", ["truncate", "flip", "record", "no-record"])
def test_a_damaged_cache_is_detected_and_rebuilt(damage, tmp_path, cache, tokenizer, capsys):
    path = tmp_path / "rows.jsonl"
    path.write_text(_rows(30))
    first = token_table(path, tokenizer, load=LOAD, encoding=_encoding())
    expected = first.items
    arrow, record = first.path, first.path.with_suffix(".json")
    del first  # unmapped, as by a run that ended
    data = arrow.read_bytes()
    if damage == "truncate":  # a kill while writing, a full disk
        arrow.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # the same size, one token id changed
        i = len(data) // 2
        arrow.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
    elif damage == "record":
        record.write_text("{not json")
    else:
        record.unlink()
    rebuilt = token_table(path, tokenizer, load=LOAD, encoding=_encoding())
    assert rebuilt.built and rebuilt.items == expected
    assert "is damaged" in capsys.readouterr().err
    assert not token_table(path, tokenizer, load=LOAD, encoding=_encoding()).built


BAD = HERE / "data" / "bad"


TRAINING = LOAD | {"require_scores": True, "min_responses": 2}


@pytest.mark.parametrize("name", sorted(p.name for p in BAD.glob("*.jsonl")))
def test_the_bad_corpus_gives_the_same_errors_and_leaves_no_table(name, cache, tokenizer):
    expected = _outcome(lambda: _naive(BAD / name, tokenizer, TRAINING, _encoding()))

    def arrow():
        table = token_table(BAD / name, tokenizer, load=TRAINING, encoding=_encoding())
        return table.items, table.report

    assert _outcome(arrow) == expected
    if isinstance(expected, str):  # refused: one line, and nothing left in the cache
        assert len(expected.splitlines()) == 1 and _files(cache) == []


def test_a_bad_row_after_an_unencodable_prompt_is_still_the_error(tmp_path, cache, tokenizer):
    """The in-memory path validated every row before encoding any: a message-list prompt under
    chat_template never (row 3) loses to a bad score two batches later."""
    path = tmp_path / "rows.jsonl"
    path.write_text(_rows(BATCH_ROWS * 2 + 5, bad_at=BATCH_ROWS * 2 + 1, messages_at=3))
    encoding = _encoding(mode="never")
    expected = _outcome(lambda: _naive(path, tokenizer, LOAD, encoding))
    assert "line 2002" in expected and "scores[1]" in expected
    got = _outcome(lambda: token_table(path, tokenizer, load=LOAD, encoding=encoding))
    assert got == expected and _files(cache) == []
    path.write_text(_rows(BATCH_ROWS * 2 + 5, messages_at=3))  # alone, the prompt is the error
    expected = _outcome(lambda: _naive(path, tokenizer, LOAD, encoding))
    assert "needs a chat template" in expected
    assert _outcome(lambda: token_table(path, tokenizer, load=LOAD, encoding=encoding)) == expected


CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    sys.path.insert(0, {tests!r})
    from conftest import build_tokenizer
    from rankalign.tokenized import token_table

    tokenizer = build_tokenizer()
    open({ready!r} + str(os.getpid()), "w").close()
    while not os.path.exists({go!r}):
        time.sleep(0.01)
    table = token_table({data!r}, tokenizer, load={load!r}, encoding={encoding!r})
    print(json.dumps({{"built": table.built, "key": table.fingerprint, "rows": len(table),
                       "last": table[len(table) - 1]}}))
    """
)


def test_two_processes_share_one_build(tmp_path, cache):
    path = tmp_path / "rows.jsonl"
    path.write_text(_rows(BATCH_ROWS * 3))
    ready, go = tmp_path / "ready-", tmp_path / "go"
    script = CHILD.format(
        tests=str(HERE),
        ready=str(ready),
        go=str(go),
        data=str(path),
        load=LOAD,
        encoding=_encoding(),
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        for _ in range(2)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        assert all(c.poll() is None for c in children), children[0].communicate()
        time.sleep(0.05)
    go.touch()  # both start at once: one builds, the other waits on the lock and maps
    outs = []
    for c in children:
        out, err = c.communicate(timeout=300)
        assert c.returncode == 0, err.decode()
        outs.append((json.loads(out), err.decode()))
    results = [o for o, _ in outs]
    assert sorted(r["built"] for r in results) == [False, True]
    assert results[0]["key"] == results[1]["key"] and results[0]["rows"] == BATCH_ROWS * 3
    assert results[0]["last"] == results[1]["last"]
    assert len(_files(cache)) == 2


def test_an_unwritable_cache_folder_gives_a_private_table(tmp_path, monkeypatch, tokenizer):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))  # under a file: cannot be created
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(_rows(5))
    b.write_text(_rows(6))
    first, other, again = (
        token_table(p, tokenizer, load=LOAD, encoding=_encoding()) for p in (a, b, a)
    )
    assert first.built and other.built and again.built  # nothing shared
    assert len({first.path.parent, other.path.parent, again.path.parent}) == 3
    assert first.items == _naive(a, tokenizer, LOAD, _encoding())[0]
    # the reference cache key: equal tokens, equal fingerprints; other tokens, another
    assert first.fingerprint == again.fingerprint != other.fingerprint
