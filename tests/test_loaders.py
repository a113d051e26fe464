"""Readers under hostile input: every failure is one UserError line naming file, line/row, field.

Classes covered: numbers Python or a float cannot hold, parser limits (nesting, CSV cell size,
lone surrogates, duplicate keys), YAML configs (aliases, duplicate keys, nesting), operating
system errors on input paths, and a leading UTF-8 byte-order mark (accepted).
"""

from __future__ import annotations

import builtins
import csv
import errno
import json
import os
from pathlib import Path

import pytest

from rankalign import data
from rankalign.config import load_yaml
from rankalign.data import MAX_DEPTH, MAX_TEXT_CHARS, load_lists, read_records
from rankalign.data import files as data_files
from rankalign.errors import UserError

HERE = Path(__file__).parent
BAD = HERE / "data" / "bad"
LAYOUTS = HERE / "data" / "layouts"
GOOD = {"id": "a", "prompt": "hello", "responses": ["x", "y"], "scores": [1, 0]}
BOM = b"\xef\xbb\xbf"


def _error(load, path, *args) -> str:
    with pytest.raises(UserError) as info:
        load(path, *args)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message or Path(path).name in message, message
    return message


def _assert_in(message: str, *fragments: str) -> None:
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def _jsonl(tmp_path: Path, second_line: str, name: str = "rows.jsonl") -> Path:
    """A file whose line 1 is a good row and line 2 is `second_line` (raw JSON text)."""
    path = tmp_path / name
    path.write_text(json.dumps(GOOD) + "\n" + second_line + "\n", encoding="utf-8")
    return path


def _row(**fields) -> dict:
    return {"id": "b", "prompt": "p", "responses": ["u", "v"], **fields}


def _write(tmp_path: Path, fmt: str, rows_json: list[str]) -> Path:
    """Rows given as raw JSON object text, written as .jsonl or .json (a list)."""
    path = tmp_path / f"rows.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(r + "\n" for r in rows_json), encoding="utf-8")
    else:
        path.write_text("[\n" + ",\n".join(rows_json) + "\n]\n", encoding="utf-8")
    return path


WHERE = {"jsonl": "line 2", "json": "row 2"}  # the second row, in each format's terms


# ----------------------------------------------------------------------------- 1. numbers


def test_integer_score_beyond_float_range_names_line_and_field(tmp_path):
    big = "1" + "0" * 400  # a valid JSON integer; float() of it overflows
    path = _jsonl(
        tmp_path, f'{{"id": "b", "prompt": "p", "responses": ["u", "v"], "scores": [0, {big}]}}'
    )
    message = _error(load_lists, path)
    _assert_in(message, "line 2", "field 'scores[1]'", "float range", "must be finite")


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_integer_literal_past_the_digit_limit_names_line_and_field(fmt, tmp_path):
    huge = "9" * 5000  # json.loads alone raises ValueError naming neither line nor field
    row = f'{{"id": "b", "prompt": "p", "responses": ["u", "v"], "scores": [{huge}, 0]}}'
    path = _write(tmp_path, fmt, [json.dumps(GOOD), row])
    message = _error(load_lists, path)
    _assert_in(message, WHERE[fmt], "field 'scores[0]'", "5,000 digits")


def test_integer_literal_past_the_digit_limit_in_an_extra_field(tmp_path):
    path = _jsonl(tmp_path, json.dumps(_row())[:-1] + ', "meta": {"n": [-' + "1" * 5000 + "]}}")
    _assert_in(_error(load_lists, path), "line 2", "field 'meta.n[0]'", "5,000 digits")


def test_integer_literal_past_the_digit_limit_in_a_csv_cell(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text(
        'prompt,responses,scores\np,"[""u"", ""v""]","[1, ' + "7" * 5000 + ']"\n', encoding="utf-8"
    )
    _assert_in(_error(load_lists, path), "line 2", "field 'scores[1]'", "digits")


@pytest.mark.parametrize("literal", ["1e309", "-1e400", "1" + "0" * 400 + ".0"])
def test_float_literal_past_the_range_is_still_not_finite(literal, tmp_path):
    path = _jsonl(
        tmp_path, f'{{"id": "b", "prompt": "p", "responses": ["u", "v"], "scores": [{literal}, 0]}}'
    )
    _assert_in(_error(load_lists, path), "line 2", "field 'scores[0]'", "inf", "must be finite")


def test_large_finite_integer_scores_are_accepted(tmp_path):
    path = _jsonl(tmp_path, json.dumps(_row(scores=[10**300, -(10**300)])))
    assert load_lists(path).rows[1]["scores"] == [1e300, -1e300]


# ----------------------------------------------------------------------------- 2. parser limits


def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_nesting_that_overflows_the_parser_is_a_user_error(fmt, tmp_path):
    deep = json.dumps(_row())[:-1] + ', "meta": ' + "[" * 100_000 + "}"  # RecursionError before
    path = _write(tmp_path, fmt, [json.dumps(GOOD), deep])
    message = _error(load_lists, path)
    _assert_in(message, f"more than {MAX_DEPTH} levels deep")
    if fmt == "jsonl":
        assert "line 2" in message


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_nesting_past_the_bound_names_the_field(fmt, tmp_path):
    # the record is level 1, "meta" level 2: MAX_DEPTH levels in all are fine, one more is not
    ok = json.dumps(_row(id="ok"))[:-1] + f', "meta": {_nested(MAX_DEPTH - 1)}}}'
    deep = json.dumps(_row())[:-1] + f', "meta": {_nested(MAX_DEPTH)}}}'
    assert len(load_lists(_write(tmp_path, fmt, [ok])).rows) == 1
    message = _error(load_lists, _write(tmp_path, fmt, [json.dumps(GOOD), deep]))
    _assert_in(message, WHERE[fmt], "field 'meta'", f"nested more than {MAX_DEPTH} levels deep")


def test_deep_nesting_in_a_csv_cell(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text('prompt,responses\np,"[""u"", ""v""]"\nq,' + "[" * 100_000 + "\n")
    _assert_in(_error(load_lists, path), "line 3", "levels deep")


def test_csv_cell_over_the_csv_module_default_but_under_the_limit_is_read(tmp_path):
    path = tmp_path / "rows.csv"
    long_prompt = "w" * 200_000  # over csv's default field limit (131,072)
    path.write_text(f'prompt,responses\n{long_prompt},"[""u"", ""v""]"\n', encoding="utf-8")
    assert load_lists(path).rows[0]["prompt"] == long_prompt


@pytest.mark.parametrize("suffix", ["csv", "tsv"])
def test_csv_cell_over_max_text_chars_gets_the_size_message(suffix, tmp_path):
    path = tmp_path / f"rows.{suffix}"
    sep = "," if suffix == "csv" else "\t"
    long_prompt = "w" * (MAX_TEXT_CHARS + 10)
    path.write_text(
        f'prompt{sep}responses\np{sep}"[""u"", ""v""]"\n{long_prompt}{sep}"[""u"", ""v""]"\n',
        encoding="utf-8",
    )
    message = _error(load_lists, path)
    _assert_in(message, "line 3", "field 'prompt'", f"more than {MAX_TEXT_CHARS:,}")


def test_csv_module_errors_become_user_errors_with_the_line(tmp_path, monkeypatch):
    """The reader raises the limit itself; a limit it cannot raise shows csv's own error."""
    real_limit = csv.field_size_limit
    old = real_limit(1000)
    monkeypatch.setattr(csv, "field_size_limit", lambda *new: 1000)
    try:
        path = tmp_path / "rows.csv"
        path.write_text(f'prompt,responses\np,"[""u""]"\n{"w" * 2000},"[""u""]"\n')
        message = _error(load_lists, path)
    finally:
        real_limit(old)
    _assert_in(message, "line 3", "invalid CSV", "field larger than field limit")


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
@pytest.mark.parametrize(
    "row, field",
    [
        ('{"id": "b", "prompt": "p", "responses": ["u", "v\\ud800"]}', "responses[1]"),
        ('{"id": "b", "prompt": "\\udfff", "responses": ["u", "v"]}', "prompt"),
        (
            '{"id": "b", "prompt": [{"role": "user", "content": "a\\udc00b"}], "responses": ["u"]}',
            "prompt[0].content",
        ),
        ('{"id": "b", "prompt": "p", "responses": ["u"], "meta": {"k\\ud800": 1}}', "meta"),
    ],
    ids=["response", "prompt", "message-content", "nested-key"],
)
def test_lone_surrogates_are_refused_at_read_time_naming_the_field(fmt, row, field, tmp_path):
    path = _write(tmp_path, fmt, [json.dumps(GOOD), row])
    message = _error(load_lists, path)
    _assert_in(message, WHERE[fmt], f"field '{field}'", "surrogate")
    message.encode("utf-8")  # the error line itself can be printed


def test_lone_surrogate_in_a_top_level_key(tmp_path):
    path = _jsonl(tmp_path, '{"id": "b", "prompt": "p", "responses": ["u"], "\\ud800": 1}')
    _assert_in(_error(load_lists, path), "line 2", "key holds a lone surrogate")


def test_paired_surrogate_escapes_are_fine(tmp_path):
    path = _jsonl(tmp_path, '{"id": "b", "prompt": "smile \\ud83d\\ude00", "responses": ["u"]}')
    assert load_lists(path).rows[1]["prompt"] == "smile \U0001f600"


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_duplicate_keys_in_a_row_are_refused_naming_the_key(fmt, tmp_path):
    row = '{"id": "b", "prompt": "a", "prompt": "b", "responses": ["u", "v"]}'
    message = _error(load_lists, _write(tmp_path, fmt, [json.dumps(GOOD), row]))
    _assert_in(message, WHERE[fmt], "field 'prompt'", "duplicate key 'prompt'")


def test_duplicate_keys_in_a_nested_object(tmp_path):
    row = '{"id": "b", "prompt": [{"role": "user", "content": "a", "role": "system"}]}'
    message = _error(load_lists, _write(tmp_path, "json", [json.dumps(GOOD), row]))
    _assert_in(message, "row 2", "field 'prompt[0].role'", "duplicate key 'role'")


def test_duplicate_data_key_in_a_json_wrapper(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(f'{{"data": [{json.dumps(GOOD)}], "data": []}}')
    _assert_in(_error(load_lists, path), "field 'data'", "duplicate key 'data'")


def test_rows_of_every_reader_pass_the_same_check(tmp_path, monkeypatch):
    """Parquet rows (and folders, hub datasets) go through the same check in read_records."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"prompt": ["p"], "responses": [["u"]], "meta": [[[[1]]]]}), path)
    monkeypatch.setattr(data_files, "MAX_DEPTH", 3)  # the row and 3 levels of lists: one too many
    message = _error(lambda p: list(read_records(p)), path)
    _assert_in(message, "row 1", "field 'meta'", "more than 3 levels")


# ----------------------------------------------------------------------------- 3. YAML configs


def test_yaml_alias_bomb_is_refused_before_expanding():
    path = BAD / "yaml_alias_bomb.yaml"
    message = _error(load_yaml, path)
    _assert_in(message, "line 2", "YAML aliases/anchors are not allowed in config files")


@pytest.mark.parametrize(
    "text, line",
    [("loss: rrhf\nbeta: &b 0.1\n", 2), ("a: 1\nb:\n  - x\n  - *missing\n", 4)],
    ids=["anchor-alone", "alias-alone"],
)
def test_any_yaml_anchor_or_alias_is_refused(text, line, tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    _assert_in(_error(load_yaml, path), f"line {line}", "aliases/anchors are not allowed")


def test_yaml_duplicate_key_is_refused_naming_key_and_line():
    message = _error(load_yaml, BAD / "yaml_duplicate_key.yaml")
    _assert_in(message, "line 3", "duplicate key 'learning_rate'")


def test_yaml_duplicate_key_in_a_nested_mapping(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("loss: rrhf\nextra:\n  a: 1\n  b: 2\n  a: 3\n")
    _assert_in(_error(load_yaml, path), "line 5", "duplicate key 'a'")


def test_yaml_deep_nesting_is_refused_naming_the_option():
    message = _error(load_yaml, BAD / "yaml_deep_nesting.yaml")
    _assert_in(message, "field 'learning_rate'", f"nested more than {MAX_DEPTH} levels deep")


def test_yaml_nesting_that_overflows_the_parser_is_a_user_error(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("a: " + "[" * 100_000 + "\n")
    _assert_in(_error(load_yaml, path), f"nested more than {MAX_DEPTH} levels deep")


def test_yaml_lone_surrogate_escape_is_refused(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text('loss: rrhf\nrun_name: "x\\ud800"\n')
    _assert_in(_error(load_yaml, path), "field 'run_name'", "surrogate")


def test_yaml_config_that_is_a_directory(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.mkdir()
    _assert_in(_error(load_yaml, path), os.strerror(errno.EISDIR))


def test_yaml_config_that_cannot_be_read(tmp_path, monkeypatch):
    path = tmp_path / "cfg.yaml"
    path.write_text("loss: rrhf\n")

    def denied(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "read_text", denied)
    _assert_in(_error(load_yaml, path), os.strerror(errno.EACCES))


def test_yaml_missing_file_is_still_not_found(tmp_path):
    _assert_in(_error(load_yaml, tmp_path / "none.yaml"), "not found")


def test_plain_yaml_still_loads(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("loss: rrhf\nlearning_rate: 1.0e-5\nextra:\n  list: [1, 2]\n  on: true\n")
    assert load_yaml(path) == {
        "loss": "rrhf",
        "learning_rate": 1e-5,
        "extra": {"list": [1, 2], True: True},
    }


# ----------------------------------------------------------------------------- 4. OS errors


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".ndjson"])
def test_a_directory_named_like_a_data_file(suffix, tmp_path):
    path = tmp_path / f"rows{suffix}"
    path.mkdir()
    _assert_in(_error(load_lists, path), os.strerror(errno.EISDIR))


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files whatever the mode"
)
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_an_unreadable_file_for_real(suffix, tmp_path):
    path = tmp_path / f"rows{suffix}"
    path.write_text(json.dumps(GOOD) + "\n")
    path.chmod(0)
    try:
        _assert_in(_error(load_lists, path), os.strerror(errno.EACCES))
    finally:
        path.chmod(0o644)


def _raise(err: int):
    def fail(*args, **kwargs):
        raise OSError(err, os.strerror(err), str(args[0]) if args else None)

    return fail


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
@pytest.mark.parametrize("err", [errno.EACCES, errno.EIO])
def test_an_os_error_while_opening_is_a_user_error(suffix, err, tmp_path, monkeypatch):
    path = tmp_path / f"rows{suffix}"
    path.write_text(json.dumps(GOOD) + "\n")
    # .jsonl streams through open(); .json and .csv read the whole file
    monkeypatch.setattr(data_files, "open", _raise(err), raising=False)
    monkeypatch.setattr(Path, "read_bytes", _raise(err))
    _assert_in(_error(load_lists, path), os.strerror(err))


def test_an_os_error_in_the_middle_of_a_file(tmp_path, monkeypatch):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(_row()) + "\n")

    class FailingFile:
        def __init__(self, *args):
            self.f = builtins.open(*args)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def readline(self, *args):  # the first line, then an I/O error
            if self.f.tell() == 0:
                return self.f.readline(*args)
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(data_files, "open", FailingFile, raising=False)
    _assert_in(_error(load_lists, path), os.strerror(errno.EIO))


def test_an_os_error_checking_the_path(tmp_path, monkeypatch):
    path = tmp_path / "rows.jsonl"
    monkeypatch.setattr(Path, "is_dir", _raise(errno.EACCES))
    _assert_in(_error(load_lists, path), os.strerror(errno.EACCES))


# ----------------------------------------------------------------------------- 5. byte-order mark


def test_shipped_bom_file_loads():
    assert LAYOUTS.joinpath("bom.jsonl").read_bytes().startswith(BOM)
    loaded = load_lists(LAYOUTS / "bom.jsonl")
    assert [r["id"] for r in loaded.rows] == ["a", "b"]


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "tsv"])
def test_a_leading_bom_is_accepted(fmt, tmp_path):
    path = tmp_path / f"rows.{fmt}"
    if fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        text = f'prompt{sep}responses\nhello{sep}"[""x"", ""y""]"\n'
    else:
        text = json.dumps(GOOD) + "\n" if fmt == "jsonl" else json.dumps([GOOD])
    path.write_bytes(BOM + text.encode("utf-8"))
    (row,) = load_lists(path).rows
    assert row["prompt"] == "hello" and row["responses"] == ["x", "y"]


def test_a_bom_in_the_middle_of_a_jsonl_file_is_still_an_error(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes((json.dumps(GOOD) + "\n").encode() + BOM + json.dumps(_row()).encode())
    _assert_in(_error(load_lists, path), "line 2", "invalid JSON")


def test_a_yaml_config_with_a_bom_loads(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_bytes(BOM + b"loss: rrhf\n")
    assert load_yaml(path) == {"loss": "rrhf"}


# ----------------------------------------------------------------------------- the bad corpus

CORPUS = [
    ("dup_key.jsonl", ["line 2", "field 'prompt'", "duplicate key 'prompt'"]),
    ("big_int_score.jsonl", ["line 2", "field 'scores[1]'", "float range"]),
    ("huge_int_literal.jsonl", ["line 2", "field 'scores[0]'", "5,000 digits"]),
    ("deep_nesting.jsonl", ["line 2", "levels deep"]),
    ("lone_surrogate.jsonl", ["line 2", "field 'responses[1]'", "surrogate"]),
]


@pytest.mark.parametrize("name, fragments", CORPUS, ids=[n for n, _ in CORPUS])
def test_bad_corpus_files(name, fragments):
    _assert_in(_error(load_lists, BAD / name), name, *fragments)


def test_a_device_or_fifo_is_not_read(tmp_path):
    """/dev/zero never ends and a FIFO blocks until a writer comes: neither is a data file."""
    zero = tmp_path / "zero.jsonl"
    zero.symlink_to("/dev/zero")
    _assert_in(_error(lambda p: list(data.read_records(p)), zero), "not a regular file")
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    _assert_in(_error(lambda p: list(data.read_records(p)), fifo), "not a regular file")


def test_a_line_past_the_line_limit_is_refused_with_its_number(tmp_path, monkeypatch):
    monkeypatch.setattr(data_files, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "long.jsonl"
    good = '{"id": "a", "prompt": "p", "responses": ["x", "y"], "scores": [1, 0]}'
    path.write_text(good + "\n" + "x" * 5000 + "\n")
    _assert_in(_error(lambda p: list(data.read_records(p)), path), "line 2", "longer than")
