"""User errors through the real `rankalign train` CLI: the bad-input corpus in tests/data/bad/.

Each bad input must end with exit code 2 and exactly one stderr line
`rankalign train: error: <file>, line N, field 'X': <problem>` (the parts that apply), no
traceback unless `--debug`, and no model written to the output folder.

Most cases run in this process through `rankalign.cli.main([...])` (torch and transformers are
imported once); a few run the real `python -m rankalign.cli` in subprocesses, started together.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rankalign.cli import main

HERE = Path(__file__).parent
BAD = HERE / "data" / "bad"
GOOD = HERE / "data" / "layouts" / "ranked.jsonl"
PREFIX = "rankalign train: error:"


@dataclass
class Case:
    id: str
    data: str | None = None  # a file in tests/data/bad (None: the good ranked.jsonl)
    config: str | None = None  # a YAML file in tests/data/bad
    args: list[str] = field(default_factory=list)
    expect: list[str] = field(default_factory=list)  # fragments of the one error line
    marks: tuple = ()


CASES = [
    # --- malformed files
    Case("bad-json-line", "bad_json_line.jsonl", expect=["line 2", "invalid JSON"]),
    Case("json-syntax-error", "json_syntax_error.json", expect=["line 3", "invalid JSON"]),
    Case("line-not-an-object", "not_an_object.jsonl", expect=["line 2", "expected a JSON object"]),
    Case("json-not-a-list", "json_not_list.json", expect=["must hold a list"]),
    Case("invalid-utf8-jsonl", "invalid_utf8.jsonl", expect=["line 2", "UTF-8"]),
    Case("invalid-utf8-csv", "invalid_utf8.csv", expect=["UTF-8"]),
    Case(
        "invalid-utf8-csv-line",
        "invalid_utf8.csv",
        expect=["line 3", "UTF-8"],
    ),
    Case("unknown-extension", "unknown_extension.txt", expect=["unknown file type '.txt'"]),
    Case("corrupt-parquet", "corrupt.parquet", expect=["cannot read Parquet"]),
    Case("not-a-dataset-folder", "not_a_dataset_dir", expect=["not a datasets.save_to_disk"]),
    Case("empty-file", "empty.jsonl", expect=["no usable rows"]),
    # --- wrong types
    Case(
        "responses-not-list",
        "wrong_type_responses.jsonl",
        expect=["line 2", "field 'responses'", "must be a list"],
    ),
    Case("prompt-not-string", "wrong_type_prompt.jsonl", expect=["line 2", "field 'prompt'"]),
    Case(
        "response-not-string",
        "wrong_type_response_item.jsonl",
        expect=["line 2", "field 'responses[1]'"],
    ),
    Case("score-string", "score_string.jsonl", expect=["line 2", "field 'scores[0]'", "number"]),
    Case("score-bool", "score_bool.jsonl", expect=["line 2", "field 'scores[1]'", "number"]),
    Case("scores-not-list", "scores_not_list.jsonl", expect=["line 2", "field 'scores'"]),
    Case("csv-bad-score", "csv_bad_score.csv", expect=["line 3", "field 'scores[1]'"]),
    Case(
        "bad-message-role", "bad_message_role.jsonl", expect=["line 2", "field 'prompt'", "'usr'"]
    ),
    Case(
        "message-without-content",
        "message_without_content.jsonl",
        expect=["line 2", "field 'prompt'"],
    ),
    # --- missing fields
    Case("missing-prompt", "missing_prompt.jsonl", expect=["line 2", "field 'prompt'", "missing"]),
    Case(
        "missing-responses",
        "missing_responses.jsonl",
        expect=["line 2", "field 'responses'"],
    ),
    Case("missing-scores", "missing_scores.jsonl", expect=["line 2", "field 'scores'", "missing"]),
    Case(
        "pairwise-missing-rejected",
        "pairwise_missing_rejected.jsonl",
        expect=["line 2", "field 'rejected'", "missing"],
    ),
    Case(
        "unrecognized-layout", "unrecognized_layout.jsonl", expect=["line 2", "unrecognized layout"]
    ),
    # --- values
    Case(
        "length-mismatch",
        "length_mismatch.jsonl",
        expect=["line 3", "field 'scores'", "2 values for 3 responses"],
    ),
    Case("nan-score", "nan_score.jsonl", expect=["line 2", "field 'scores[1]'", "nan"]),
    Case("inf-score", "inf_score.jsonl", expect=["line 2", "field 'scores[0]'", "inf"]),
    Case("neg-inf-score", "neg_inf_score.jsonl", expect=["line 2", "field 'scores[2]'", "-inf"]),
    Case("json-nan-row", "json_nan_row.json", expect=["row 2", "field 'scores[0]'", "nan"]),
    Case(
        "empty-response", "empty_response.jsonl", expect=["line 2", "field 'responses[1]'", "empty"]
    ),
    Case(
        "whitespace-response",
        "whitespace_response.jsonl",
        expect=["line 2", "field 'responses[0]'", "whitespace"],
    ),
    Case("empty-prompt", "empty_prompt.jsonl", expect=["line 2", "field 'prompt'", "empty"]),
    Case("duplicate-id", "duplicate_id.jsonl", expect=["line 3", "field 'id'", "line 1"]),
    Case("k1-rrhf", "k1_rrhf.jsonl", expect=["line 2", "field 'responses'", "at least 2"]),
    Case("k1-dpo", "k1_rrhf.jsonl", args=["--loss", "dpo"], expect=["line 2", "at least 2"]),
    Case(
        "hh-no-shared-prefix",
        "hh_no_shared_prefix.jsonl",
        expect=["line 2", "field 'rejected'", "share"],
    ),
    Case(
        "hh-no-assistant-turn",
        "hh_no_assistant_turn.jsonl",
        expect=["line 2", "field 'chosen'", "Assistant:"],
    ),
    Case("pro-prefix-mismatch", "pro_prefix_mismatch.jsonl", expect=["line 1", "field 'prefix'"]),
    Case(
        "messages-not-ending-assistant",
        "messages_not_ending_assistant.jsonl",
        args=["--loss", "sft"],
        expect=["line 2", "field 'messages'", "assistant"],
    ),
    # --- filters that leave nothing: counted, then an error
    Case(
        "all-tied-dropped",
        "all_tied.jsonl",
        args=["--drop_tied_lists", "true"],
        expect=["no usable rows", "dropped 2 (all responses tied)"],
    ),
    Case(
        "all-over-length-dropped",
        "over_length.jsonl",
        args=["--drop_over_length", "true", "--max_length", "64"],
        expect=["no rows left", "over max_length"],
    ),
    # --- configuration
    Case(
        "unknown-yaml-key",
        config="unknown_key.yaml",
        expect=["unknown_key.yaml", "field 'learning_rat'", "unknown option"],
    ),
    Case(
        "bad-yaml-syntax",
        config="bad_yaml_syntax.yaml",
        expect=["bad_yaml_syntax.yaml", "line 3", "invalid YAML"],
    ),
    Case("yaml-not-mapping", config="yaml_not_mapping.yaml", expect=["yaml_not_mapping.yaml"]),
    Case("invalid-utf8-yaml", config="invalid_utf8.yaml", expect=["invalid_utf8.yaml", "UTF-8"]),
    Case(
        "missing-config-file",
        args=["--config", str(BAD / "no_such_config.yaml")],
        expect=["no_such_config.yaml", "not found"],
    ),
    Case("unknown-loss-yaml", config="unknown_loss.yaml", expect=["unknown loss 'rhff'", "rrhf"]),
    Case("unknown-loss-flag", args=["--loss", "rhff"], expect=["unknown loss 'rhff'", "rrhf"]),
    Case("unknown-flag", args=["--no_such_option", "3"], expect=["--no_such_option"]),
    Case(
        "bad-flag-value",
        args=["--max_steps", "abc"],
        expect=["--max_steps", "'abc'"],
    ),
    Case(
        "option-of-another-loss",
        config="option_for_other_loss.yaml",
        expect=["field 'beta'", "rrhf"],
    ),
    # --- hostile input: parser limits, numbers beyond a float, text that cannot be encoded
    Case(
        "duplicate-key",
        "dup_key.jsonl",
        expect=["line 2", "field 'prompt'", "duplicate key 'prompt'"],
    ),
    Case(
        "big-int-score",
        "big_int_score.jsonl",
        expect=["line 2", "field 'scores[1]'", "float range"],
    ),
    Case(
        "huge-int-literal",
        "huge_int_literal.jsonl",
        expect=["line 2", "field 'scores[0]'", "5,000 digits"],
    ),
    Case("deep-nesting", "deep_nesting.jsonl", expect=["line 2", "nested more than 100 levels"]),
    Case(
        "lone-surrogate",
        "lone_surrogate.jsonl",
        expect=["line 2", "field 'responses[1]'", "surrogate"],
    ),
    Case(
        "yaml-alias-bomb",
        config="yaml_alias_bomb.yaml",
        expect=["yaml_alias_bomb.yaml", "line 2", "aliases/anchors are not allowed"],
    ),
    Case(
        "yaml-duplicate-key",
        config="yaml_duplicate_key.yaml",
        expect=["yaml_duplicate_key.yaml", "line 3", "duplicate key 'learning_rate'"],
    ),
    Case(
        "yaml-deep-nesting",
        config="yaml_deep_nesting.yaml",
        expect=["yaml_deep_nesting.yaml", "field 'learning_rate'", "nested more than 100 levels"],
    ),
    Case(
        "yaml-huge-int",
        config="yaml_huge_int.yaml",
        expect=["yaml_huge_int.yaml", "invalid YAML", "4300 digits"],
    ),
    # --- option values: types, finite numbers, ranges (flags and YAML)
    Case(
        "learning-rate-negative",
        args=["--learning_rate=-1e-5"],
        expect=["field 'learning_rate'", "must be >= 0", "-1e-05"],
    ),
    Case(
        "batch-size-zero",
        args=["--per_device_train_batch_size", "0"],
        expect=["field 'per_device_train_batch_size'", "must be >= 1"],
    ),
    Case(
        "batch-size-fraction-flag",
        args=["--per_device_train_batch_size", "2.5"],
        expect=["--per_device_train_batch_size", "invalid int value: '2.5'"],
    ),
    Case(
        "batch-size-fraction-yaml",
        config="batch_size_float.yaml",
        expect=["batch_size_float.yaml", "field 'per_device_train_batch_size'", "an integer"],
    ),
    Case(
        "epochs-nan-flag",
        args=["--num_train_epochs", "nan"],
        expect=["field 'num_train_epochs'", "finite"],
    ),
    Case(
        "epochs-nan-yaml",
        config="epochs_nan.yaml",
        expect=["epochs_nan.yaml", "field 'num_train_epochs'", "finite"],
    ),
    Case(
        "learning-rate-word-yaml",
        config="learning_rate_word.yaml",
        expect=["learning_rate", "'fast'"],
    ),
    Case(
        "learning-rate-inf-yaml",
        config="learning_rate_inf.yaml",
        expect=["learning_rate_inf.yaml", "field 'learning_rate'", "finite"],
    ),
    Case(
        "beta-negative-yaml",
        config="beta_negative.yaml",
        expect=["beta_negative.yaml", "field 'beta'", "must be > 0"],
    ),
    Case(
        "beta-negative-flag",
        args=["--loss", "dpo", "--beta", "-0.1"],
        expect=["field 'beta'", "must be > 0"],
    ),
    Case(
        "seed-too-large",
        config="seed_too_large.yaml",
        expect=["seed_too_large.yaml", "field 'seed'", "must be in [0, 4294967295]"],
    ),
    Case(
        "max-length-one",
        args=["--max_length", "1"],
        expect=["field 'max_length'", ">= 2"],
    ),
    Case(
        "lora-targets-not-in-model",
        args=["--use_lora", "true", "--lora_target_modules", "nope_proj"],
        expect=["field 'lora_target_modules'", "not found"],
    ),
    Case(
        "max-steps-beyond-int64",
        args=["--max_steps", str(10**20)],
        expect=["field 'max_steps'", "at most 2**63 - 1"],
    ),
    # --- what the Trainer would refuse only once started
    Case(
        "scheduler-kwargs-unknown",
        args=["--lr_scheduler_kwargs", '{"bogus": 1}'],
        expect=["field 'lr_scheduler_kwargs'", "bogus"],
    ),
    Case("optim-args-malformed", args=["--optim_args", "x=y=z"], expect=["field 'optim'"]),
    Case(
        "eval-strategy-without-data",
        args=["--eval_strategy", "steps", "--eval_steps", "1"],
        expect=["field 'eval_strategy'", "--eval_data"],
    ),
    # --- output paths the operating system cannot take
    Case(
        "output-dir-is-a-file",
        args=["--output_dir", str(BAD / "empty.jsonl")],
        expect=["empty.jsonl", "not a folder"],
    ),
    Case(
        "output-dir-under-a-file",
        args=["--output_dir", str(BAD / "empty.jsonl" / "out")],
        expect=["empty.jsonl", "is a file"],
    ),
    Case(
        "model-path-missing",
        args=["--model", str(BAD / "no_such_model_dir")],
        expect=["no_such_model_dir", "does not exist"],
    ),
    Case(
        "model-dir-without-config",
        args=["--model", str(BAD / "not_a_dataset_dir")],
        expect=["not_a_dataset_dir", "config.json"],
    ),
    Case(
        "data-file-missing", data="no_such_file.jsonl", expect=["no_such_file.jsonl", "not found"]
    ),
]


def _argv(case: Case, model_dir: str, out: Path) -> list[str]:
    data = str(BAD / case.data) if case.data else str(GOOD)
    argv = [
        "train",
        "--data",
        data,
        "--model",
        model_dir,
        "--output_dir",
        str(out),
        "--max_steps",
        "1",
        "--report_to",
        "none",
    ]
    if case.config:
        argv += ["--config", str(BAD / case.config)]
    return argv + case.args  # later flags win


def _run_in_process(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse errors exit through SystemExit
        return e.code if isinstance(e.code, int) else 1


def _check_one_error_line(rc: int, err: str, out_text: str, case: Case) -> str:
    assert rc == 2, f"exit code {rc}; stderr:\n{err[-2000:]}"
    assert "Traceback" not in err and "Traceback" not in out_text
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err[-2000:]}"
    line = lines[0]
    assert line.startswith(PREFIX), line
    if case.data:
        assert Path(case.data).name in line, line
    for fragment in case.expect:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def _no_model_written(out: Path) -> None:
    if not out.exists():
        return
    written = sorted(p.name for p in out.rglob("*"))
    assert not any(out.rglob("*.safetensors")), written
    assert not any(out.rglob("checkpoint-*")), written
    assert not any(out.rglob("*.tmp")), written


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_in_process(case, tiny_model_dir, tmp_path, capfd):
    out = tmp_path / "out"
    rc = _run_in_process(_argv(case, tiny_model_dir, out))
    cap = capfd.readouterr()
    _check_one_error_line(rc, cap.err, cap.out, case)
    _no_model_written(out)


def test_corpus_has_the_required_files():
    names = {p.name for p in BAD.iterdir()}
    assert len(names) >= 30
    used = {c.data for c in CASES if c.data} | {c.config for c in CASES if c.config}
    assert names <= used, sorted(names - used)  # every corpus file is exercised


def test_good_file_trains_with_the_same_arguments(tiny_model_dir, tmp_path, capfd):
    """Control: the harness's arguments are valid, so each failure above is the input's fault."""
    out = tmp_path / "out"
    rc = _run_in_process(_argv(Case("good"), tiny_model_dir, out))
    cap = capfd.readouterr()
    assert rc == 0, cap.err[-3000:]
    assert (out / "model.safetensors").is_file()
    assert "Traceback" not in cap.err


# --------------------------------------------------------------------------------------------
# the real command line, in subprocesses started together

SUBPROCESS_CASES = {
    "nan-score": Case("nan-score", "nan_score.jsonl", expect=["line 2", "field 'scores[1]'"]),
    "invalid-utf8": Case("invalid-utf8", "invalid_utf8.jsonl", expect=["line 2", "UTF-8"]),
    "unknown-yaml-key": Case(
        "unknown-yaml-key",
        config="unknown_key.yaml",
        expect=["unknown_key.yaml", "field 'learning_rat'"],
    ),
    "model-path-missing": Case(
        "model-path-missing",
        args=["--model", str(BAD / "no_such_model_dir")],
        expect=["no_such_model_dir", "does not exist"],
    ),
    "debug": Case("debug", "nan_score.jsonl", args=["--debug"]),
}


@pytest.fixture(scope="module")
def subprocess_results(tiny_model_dir, tmp_path_factory):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    procs = {}
    for name, case in SUBPROCESS_CASES.items():
        work = tmp_path_factory.mktemp(f"cli-{name}")
        out = work / "out"
        cmd = [sys.executable, "-m", "rankalign.cli", *_argv(case, tiny_model_dir, out)]
        procs[name] = (
            subprocess.Popen(
                cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            ),
            out,
            work,
        )
    results = {}
    for name, (proc, out, work) in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        results[name] = (proc.returncode, stdout, stderr, out, work)
    return results


@pytest.mark.parametrize("name", [n for n in SUBPROCESS_CASES if n != "debug"])
def test_bad_input_real_cli(name, subprocess_results):
    rc, stdout, stderr, out, work = subprocess_results[name]
    _check_one_error_line(rc, stderr, stdout, SUBPROCESS_CASES[name])
    _no_model_written(out)
    assert not (work / "runs").exists()  # nothing written beside, either


def test_debug_shows_traceback(subprocess_results):
    rc, stdout, stderr, out, _ = subprocess_results["debug"]
    assert rc != 0
    assert "Traceback" in stderr
    assert "UserError" in stderr and "nan_score.jsonl" in stderr and "scores[1]" in stderr
    _no_model_written(out)


def test_a_50mb_single_line_is_a_one_line_error(tmp_path, tiny_model_dir, capsys):
    import json

    from rankalign.cli import main

    path = tmp_path / "huge.jsonl"
    good = {"id": "a", "prompt": "p", "responses": ["x", "y"], "scores": [1, 0]}
    huge = {"id": "b", "prompt": "word " * 10_000_000, "responses": ["x", "y"], "scores": [1, 0]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(huge) + "\n")
    assert path.stat().st_size > 50_000_000
    out = tmp_path / "out"
    rc = main(["train", "--data", str(path), "--model", tiny_model_dir, "--output_dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "line 2" in err[0] and "field 'prompt'" in err[0] and "characters" in err[0]
    assert not list(out.glob("*.safetensors"))


# --------------------------------------------------------------------------------------------
# the model's files are opened before anything is written; secrets never reach the output


def _copy_model(src: str, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage", ["header-claims-2gib", "tensor-outside-file", "config-not-json"])
def test_a_broken_model_folder_is_refused_before_any_write(damage, tiny_model_dir, tmp_path, capfd):
    import struct

    model = _copy_model(tiny_model_dir, tmp_path / "model")
    weights = model / "model.safetensors"
    raw = weights.read_bytes()
    if damage == "header-claims-2gib":
        weights.write_bytes(struct.pack("<Q", 2**31) + raw[8:])
    elif damage == "tensor-outside-file":
        weights.write_bytes(raw[: len(raw) // 2])  # the header now points past the end
    else:
        (model / "config.json").write_text("{not json")
    out = tmp_path / "out"
    rc = _run_in_process(_argv(Case(damage), str(model), out))
    err = capfd.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert ("config.json" if damage == "config-not-json" else "model.safetensors") in err
    assert not out.exists()  # not even the folder


def test_an_output_folder_on_a_pseudo_file_system_is_one_line(tiny_model_dir, capfd):
    target = Path("/proc/rankalign-test-out")
    if not Path("/proc").is_dir():
        pytest.skip("no /proc here")
    rc = _run_in_process(_argv(Case("proc"), tiny_model_dir, target))
    err = capfd.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(PREFIX) and str(target) in err and "Traceback" not in err
    assert not target.exists()


def test_hub_token_is_written_nowhere(tiny_model_dir, tmp_path, capfd, monkeypatch):
    """Not in rankalign_config.yaml (field or recorded command line), not in transformers'
    training_args.bin in the output folder and its checkpoints."""
    import sys as _sys

    token = "hf_" + "Xy7" * 12
    monkeypatch.setenv("HF_TOKEN", "")  # recorded, so the token train puts here is undone
    monkeypatch.delenv("HF_TOKEN")
    out = tmp_path / "out"
    argv = [*_argv(Case("secret"), tiny_model_dir, out), "--hub_token", token]
    argv += ["--save_strategy", "steps", "--save_steps", "1"]
    monkeypatch.setattr(_sys, "argv", ["rankalign", *argv])
    rc = _run_in_process(argv)
    cap = capfd.readouterr()
    assert rc == 0, cap.err[-2000:]
    assert (out / "checkpoint-1" / "training_args.bin").is_file()
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "rankalign_config.yaml" for p in written)
    for path in written:
        assert token.encode() not in path.read_bytes(), path
    assert token not in cap.out and token not in cap.err
    assert "<redacted>" in (out / "rankalign_config.yaml").read_text()


def test_a_secret_in_a_refused_spec_is_not_echoed(tmp_path, capfd):
    """The error line quotes the spec; the key in it is redacted."""
    key = "sk-" + "Q" * 24
    spec = f"judge:model=m,base_url=http://127.0.0.1:9/v1,api_key={key}"
    out = tmp_path / "s.jsonl"
    rc = _run_in_process(["score", "--in", str(GOOD), "--out", str(out), "--reward", spec])
    err = capfd.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert key not in err and "api_key=<redacted>" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("change", [{"vocab_size": 7}, {"vocab_size": -5}])
def test_a_config_that_does_not_fit_its_weights_is_refused_first(
    change, tiny_model_dir, tmp_path, capfd
):
    import json

    model = _copy_model(tiny_model_dir, tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, **change}))
    out = tmp_path / "out"
    rc = _run_in_process(_argv(Case("config"), str(model), out))
    err = capfd.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert str(model) in err and "Traceback" not in err
    assert not out.exists()
