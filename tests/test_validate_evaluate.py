"""Validate, then write: `rankalign evaluate`, `rankalign evaluate --rm` and `rankalign train
--loss bt-reward | preference` through the real CLI entry (`rankalign.cli.main`).

A refused run (a bad option, a bad input row, a bad model folder, an output path that cannot be
a folder) exits 2 with exactly one stderr line `rankalign CMD: error: ...` naming the file and
field, no traceback, and leaves the output folder as it was: absent, or byte for byte the same.
An evaluation whose every labelled pair is tied exits 0 with a strictly valid metrics.json whose
accuracy is null with a note.

Cheap on purpose: the `evaluate` cases use `dataset:FIELD` entries and rule rewards (no model),
the others the conftest's tiny random Llama.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

# transformers' log handler keeps the sys.stderr of the moment it is imported: imported here, at
# collection, not first inside a test whose captured stream is closed after it (a later warning
# would then print "--- Logging error ---" and its traceback into another test's stderr)
from transformers.utils import logging as hf_logging

from rankalign.cli import main

HERE = Path(__file__).parent
GOOD_LISTS = HERE / "data" / "layouts" / "ranked.jsonl"
BAD = HERE / "data" / "bad"


def _strict_json(text: str):
    """json.loads that refuses NaN / Infinity (which Python's own writer emits)."""

    def refuse(constant):
        raise ValueError(f"not valid JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def _snapshot(folder: Path) -> dict[str, bytes] | None:
    if not folder.exists():
        return None
    if folder.is_file():
        return {"": folder.read_bytes()}
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    } | {str(p.relative_to(folder)) + "/": b"" for p in folder.rglob("*") if p.is_dir()}


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse would exit this way: a failure here
        return e.code if isinstance(e.code, int) else 1


def _refused(argv, out: Path, capfd, command: str, expect: list[str]) -> str:
    """Run argv; check the one-line refusal and that `out` is exactly as before."""
    before = _snapshot(out)
    capfd.readouterr()
    rc = _run(argv)
    cap = capfd.readouterr()
    assert rc == 2, f"exit code {rc}; stderr:\n{cap.err[-3000:]}"
    assert "Traceback" not in cap.err and "Traceback" not in cap.out
    lines = cap.err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{cap.err[-3000:]}"
    line = lines[0]
    assert line.startswith(f"rankalign {command}: error:"), line
    for fragment in expect:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert _snapshot(out) == before, f"{out} changed by a refused run"
    return line


# ----------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("validate-inputs")
    prompts = [
        {"id": "a", "prompt": "hello there, ", "chosen": "fine thanks", "rejected": "awful"},
        {"id": "b", "prompt": "what is a good movie? ", "chosen": "a great one", "rejected": "bad"},
    ]
    tied = [
        {"id": "t1", "prompt": "hi", "responses": ["the movie", "the film was"], "scores": [1, 1]},
        {"id": "t2", "prompt": "yo", "responses": ["great", "boring"], "scores": [0.5, 0.5]},
    ]
    not_json = d / "trainer_state_run"
    not_json.mkdir()
    (not_json / "trainer_state.json").write_text('{"log_history": [\n  {"loss": 1.0},\n  oops\n]}')
    twice = d / "duplicate_key_run"
    twice.mkdir()
    (twice / "trainer_state.json").write_text('{"log_history": [{"loss": NaN, "loss": 1.0}]}')
    loop = d / "loop_run"
    (loop / "iter-0").mkdir(parents=True)
    (loop / "iter-0" / "metrics.json").write_text("{not json")
    deep = d / "deep_loop_run"
    (deep / "iter-0").mkdir(parents=True)
    (deep / "iter-0" / "metrics.json").write_text('{"a": ' + "[" * 5000 + "]" * 5000 + "}")
    no_config = d / "no-config-model"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes(b"")
    template_missing = d / "nowhere" / "template.txt"
    return {
        "dir": str(d),
        "prompts": _write_jsonl(d / "prompts.jsonl", prompts),
        "bad_prompts": _write_jsonl(
            d / "bad_prompts.jsonl",
            [prompts[0], '{"id": "b", "prompt": "yo", "chosen": '],
        ),
        "pairs": _write_jsonl(d / "pairs.jsonl", prompts),
        "bad_pairs": _write_jsonl(
            d / "bad_pairs.jsonl",
            [
                prompts[0],
                {"id": "x", "prompt": "q", "responses": ["a", "b"], "scores": ["high", 0]},
            ],
        ),
        "tied": _write_jsonl(d / "tied.jsonl", tied),
        "bad_samples": _write_jsonl(
            d / "bad_samples.jsonl",
            [{"id": "s1", "prompt": "q", "responses": ["a", "b"]}, {"id": "s2", "prompt": "q"}],
        ),
        "responses_missing_id": _write_jsonl(
            d / "responses.jsonl", [{"id": "a", "prompt": "hello there, ", "responses": ["ok"]}]
        ),
        "bad_run": str(not_json),
        "duplicate_key_run": str(twice),
        "bad_loop": str(loop),
        "deep_loop": str(deep),
        "no_config": str(no_config),
        "template_missing": str(template_missing),
        "file": _write_jsonl(d / "a_file.txt", ["not a folder"]),
    }


@pytest.fixture(scope="module")
def bad_config_model(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny model with a config.json that is not JSON."""
    d = tmp_path_factory.mktemp("bad-config-model") / "model"
    shutil.copytree(tiny_model_dir, d)
    (d / "config.json").write_text('{"model_type": "llama",')
    return str(d)


@pytest.fixture(scope="module")
def truncated_weights_model(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny model with its safetensors file cut to its first 100 bytes."""
    d = tmp_path_factory.mktemp("truncated-weights-model") / "model"
    shutil.copytree(tiny_model_dir, d)
    weights = d / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    return str(d)


@pytest.fixture(scope="module")
def no_tokenizer_model(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny model's config and weights without any tokenizer file."""
    d = tmp_path_factory.mktemp("no-tokenizer-model") / "model"
    d.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        if (Path(tiny_model_dir) / name).is_file():
            shutil.copy(Path(tiny_model_dir) / name, d / name)
    return str(d)


def _yaml(tmp_path: Path, values: dict) -> str:
    path = tmp_path / "options.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


# ----------------------------------------------------------------------------- rankalign evaluate


def _evaluate(inputs, out: Path, *extra: str) -> list[str]:
    return [
        "evaluate",
        "--model",
        "good=dataset:chosen",
        "--baseline",
        "dataset:rejected",
        "--prompts",
        inputs["prompts"],
        "--reward",
        "length:lambda=0.01",
        "--ppl_model",
        "none",
        "--out",
        str(out),
        *extra,
    ]


def test_evaluate_good_run_passes_the_same_checks(inputs, tmp_path, capfd):
    """The arguments the refusals below start from are good: exit 0 and a valid report."""
    out = tmp_path / "out"
    assert _run(_evaluate(inputs, out, "--pairs", inputs["pairs"])) == 0, capfd.readouterr().err
    metrics = _strict_json((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"good", "dataset:rejected"}
    assert (out / "evaluate_config.yaml").is_file()


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["--bootstrap_resamples", "-1"], ["bootstrap_resamples"]),
        (["--batch_size", "0"], ["batch_size", ">= 1"]),
        (["--tie_tolerance", "-0.5"], ["tie_tolerance"]),
        (["--num_samples", "2.5"], ["num_samples"]),
        (["--confidence", "1.5"], ["confidence"]),
        (["--confidence", "1"], ["confidence", "(0, 1)"]),
        (["--top_p", "nan"], ["top_p"]),
        # refused before the run, not when --num_samples builds its sampler
        (["--num_samples", "2", "--top_p", "0"], ["top_p", "(0, 1]"]),
        (["--dtype", "float64"], ["dtype", "float64"]),
        (["--chat_template", "sometimes"], ["chat_template"]),
        (["--stop", ""], ["stop"]),
        (["--max_new_tokens", "0"], ["max_new_tokens"]),
    ],
    ids=[
        "negative-bootstrap",
        "batch-0",
        "negative-tie",
        "int-2.5",
        "confidence",
        "confidence-1",
        "nan",
        "top-p-0",
        "dtype",
        "chat-template",
        "empty-stop",
        "tokens-0",
    ],
)
def test_evaluate_bad_option(inputs, tmp_path, capfd, extra, expect):
    out = tmp_path / "out"
    _refused(_evaluate(inputs, out, *extra), out, capfd, "evaluate", expect)


@pytest.mark.parametrize(
    ("values", "expect"),
    [
        ({"temperature": float("nan")}, ["temperature", "finite"]),
        ({"max_new_tokens": 2.5}, ["max_new_tokens"]),
        ({"bootstrap_resamples": 0}, ["bootstrap_resamples"]),
        ({"examples": -1}, ["examples"]),
    ],
    ids=["nan-temperature", "float-for-int", "resamples-0", "examples-negative"],
)
def test_evaluate_bad_option_in_yaml(inputs, tmp_path, capfd, values, expect):
    out = tmp_path / "out"
    config = _yaml(tmp_path, values)
    line = _refused(_evaluate(inputs, out, "--config", config), out, capfd, "evaluate", expect)
    assert "options.yaml" in line


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["--prompts", "{bad_prompts}"], ["bad_prompts.jsonl", "line 2"]),
        (["--pairs", "{bad_pairs}"], ["bad_pairs.jsonl", "line 2", "scores[0]"]),
        (["--samples", "{bad_samples}"], ["bad_samples.jsonl", "line 2"]),
        (["--train_data", "{bad_samples}"], ["bad_samples.jsonl", "line 2"]),
        (["--train_runs", "{bad_run}"], ["trainer_state.json", "line 3", "invalid JSON"]),
        (["--train_runs", "{duplicate_key_run}"], ["trainer_state.json", "duplicate key 'loss'"]),
        (["--loop_run", "{bad_loop}"], ["metrics.json", "invalid JSON"]),
        (["--loop_run", "{deep_loop}"], ["metrics.json", "nested"]),
        (["--model", "r={responses_missing_id}"], ["responses.jsonl", "prompt id 'b'"]),
        (["--model", "dataset:nope"], ["prompts.jsonl", "field 'nope'"]),
    ],
    ids=[
        "prompts",
        "pairs",
        "samples",
        "train-data",
        "train-run",
        "train-run-duplicate-key",
        "loop-run",
        "loop-run-too-deep",
        "responses",
        "field",
    ],
)
def test_evaluate_bad_input_row(inputs, tmp_path, capfd, extra, expect):
    out = tmp_path / "out"
    extra = [x.format(**inputs) for x in extra]
    _refused(_evaluate(inputs, out, *extra), out, capfd, "evaluate", expect)


def test_evaluate_unscored_training_file_without_reward(inputs, tmp_path, capfd):
    out = tmp_path / "out"
    argv = ["evaluate", "--train_data", inputs["responses_missing_id"], "--out", str(out)]
    _refused(argv, out, capfd, "evaluate", ["responses.jsonl", "no scores"])


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["--model", "pol={no_config}"], ["no-config-model", "config.json"]),
        (["--reward", "rm:{no_config}"], ["no-config-model", "config.json"]),
        (["--ppl_model", "{no_config}"], ["no-config-model", "config.json"]),
        (["--pairs", "{pairs}", "--rm_scorers", "policy:{no_config}"], ["no-config-model"]),
        (
            ["--pairs", "{pairs}", "--rm_scorers", "rm:{no_config}"],
            ["field 'rm_scorers'", "no-config-model", "config.json"],
        ),
        (
            ["--win_judge", "rm:{no_config}"],
            ["field 'win_judge'", "no-config-model", "config.json"],
        ),
    ],
    ids=["model", "reward-model", "ppl-model", "policy-scorer", "rm-scorer", "win-judge"],
)
def test_evaluate_bad_model_folder(inputs, tmp_path, capfd, extra, expect):
    out = tmp_path / "out"
    extra = [x.format(**inputs) for x in extra]
    _refused(_evaluate(inputs, out, *extra), out, capfd, "evaluate", expect)


@pytest.mark.parametrize("option", ["--model", "--reward", "--ppl_model"])
def test_evaluate_truncated_weights(inputs, truncated_weights_model, tmp_path, capfd, option):
    out = tmp_path / "out"
    value = {
        "--model": f"pol={truncated_weights_model}",
        "--reward": f"rm:{truncated_weights_model}",
        "--ppl_model": truncated_weights_model,
    }[option]
    argv = _evaluate(inputs, out, option, value)
    _refused(argv, out, capfd, "evaluate", ["model.safetensors"])


def test_rm_evaluate_and_train_truncated_weights(inputs, truncated_weights_model, tmp_path, capfd):
    out = tmp_path / "out"
    argv = _rm_evaluate(truncated_weights_model, inputs["pairs"], out)
    _refused(argv, out, capfd, "evaluate", ["model.safetensors"])
    for loss in ("bt-reward", "preference"):
        argv = _train(truncated_weights_model, str(GOOD_LISTS), out, loss=loss)
        _refused(argv, out, capfd, "train", ["model.safetensors"])


def test_evaluate_model_folder_without_tokenizer(inputs, no_tokenizer_model, tmp_path, capfd):
    out = tmp_path / "out"
    argv = _evaluate(inputs, out, "--model", f"pol={no_tokenizer_model}")
    _refused(argv, out, capfd, "evaluate", ["no-tokenizer-model", "tokenizer"])


def test_evaluate_win_judges_with_one_name(inputs, tmp_path, capfd):
    out = tmp_path / "out"
    argv = _evaluate(inputs, out, "--win_judge", "length:lambda=1", "length:lambda=2")
    line = _refused(argv, out, capfd, "evaluate", ["field 'win_judge'", "named 'length'"])
    assert "field 'reward" not in line
    # RM scorers score one at a time: the same name twice is fine there
    argv = _evaluate(inputs, out, "--pairs", inputs["pairs"])
    assert _run([*argv, "--rm_scorers", "length:lambda=1", "length:lambda=2"]) == 0


@pytest.mark.parametrize("option", ["--win_judge", "--rm_scorers"])
@pytest.mark.parametrize(
    ("spec", "expect"),
    [
        ("oracle:x", ["unknown reward kind 'oracle'"]),
        ("length:lambda=-1", ["lambda"]),
        ("python:{dir}/rewards.py:nope", ["no function 'nope'"]),
        ("length:lambda=1,unit=tokens", ["tokenizer"]),
    ],
    ids=["kind", "range", "python-function", "length-tokenizer"],
)
def test_evaluate_reward_options_name_themselves(inputs, tmp_path, capfd, option, spec, expect):
    """Errors in the specs of --win_judge and --rm_scorers (whose rewards are built during the
    run) are found before it, and name their own option, not --reward."""
    (Path(inputs["dir"]) / "rewards.py").write_text(
        "def reward(prompt, response):\n    return 1.0\n"
    )
    out = tmp_path / "out"
    argv = _evaluate(inputs, out, "--pairs", inputs["pairs"], option, spec.format(**inputs))
    field = f"field '{option[2:]}"
    line = _refused(argv, out, capfd, "evaluate", [field, *expect])
    assert "field 'reward" not in line


@pytest.mark.parametrize("option", ["--reward", "--win_judge", "--rm_scorers"])
def test_evaluate_refuses_pickle_only_reward_models(inputs, tmp_path, capfd, option):
    """A reward model with only pickle weights is refused before the run, naming its option."""
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"never loaded")
    out = tmp_path / "out"
    argv = _evaluate(inputs, out, "--pairs", inputs["pairs"], option, f"rm:{folder}")
    expect = [f"field '{option[2:]}", f"reward 'rm:{folder}'", "pickle"]
    _refused(argv, out, capfd, "evaluate", expect)


def test_evaluate_model_folder_with_corrupt_config(inputs, bad_config_model, tmp_path, capfd):
    out = tmp_path / "out"
    argv = _evaluate(inputs, out, "--model", f"pol={bad_config_model}")
    _refused(argv, out, capfd, "evaluate", ["config.json"])


def test_evaluate_out_is_a_file(inputs, tmp_path, capfd):
    out = Path(inputs["file"])
    _refused(_evaluate(inputs, out), out, capfd, "evaluate", ["a_file.txt", "not a folder"])
    below = out / "sub"
    _refused(_evaluate(inputs, below), out, capfd, "evaluate", ["a_file.txt", "not a folder"])


def test_evaluate_existing_out_folder_is_left_byte_identical(inputs, tmp_path, capfd):
    out = tmp_path / "out"
    assert _run(_evaluate(inputs, out)) == 0  # a finished evaluation
    before = _snapshot(out)
    assert "metrics.json" in before and "evaluate_config.yaml" in before
    _refused(
        _evaluate(inputs, out, "--pairs", inputs["bad_pairs"]),
        out,
        capfd,
        "evaluate",
        ["bad_pairs.jsonl", "line 2"],
    )
    _refused(
        _evaluate(inputs, out, "--reward", f"rm:{inputs['no_config']}"),
        out,
        capfd,
        "evaluate",
        ["config.json"],
    )


def test_evaluate_all_tied_pairs_give_null_accuracy_with_a_note(inputs, tmp_path, capfd):
    out = tmp_path / "out"
    argv = ["evaluate", "--pairs", inputs["tied"], "--reward", "length:lambda=0.01"]
    assert _run([*argv, "--out", str(out)]) == 0, capfd.readouterr().err
    metrics = _strict_json((out / "metrics.json").read_text())
    (acc,) = metrics["rm_accuracy"]
    assert acc["n"] == 0 and acc["accuracy"] is None and acc["accuracy_ties_half"] is None
    assert "tied" in acc["notes"]["accuracy"]
    assert any("tied" in n for n in metrics["notes"])
    assert "tied" in (out / "report.md").read_text()
    # --report false writes metrics.json alone, as strictly
    out2 = tmp_path / "plain"
    assert _run([*argv, "--out", str(out2), "--report", "false"]) == 0
    assert _strict_json((out2 / "metrics.json").read_text())["rm_accuracy"][0]["accuracy"] is None


def test_evaluate_undefined_metrics_are_null_and_printing_survives(inputs, tmp_path, capfd):
    """A reward that gives NaN for everything: no response is scored, so mean reward, interval
    and win rate are undefined. metrics.json and per_prompt.jsonl are strictly valid JSON with
    nulls and notes saying why, and the console line says n/a instead of crashing."""
    rw = tmp_path / "rw.py"
    rw.write_text("def reward(prompt, response):\n    return float('nan')\n")
    out = tmp_path / "out"
    argv = _evaluate(inputs, out)
    argv[argv.index("length:lambda=0.01")] = f"python:{rw}:reward"
    rc = _run(argv)
    cap = capfd.readouterr()
    assert rc == 0, cap.err
    metrics = _strict_json((out / "metrics.json").read_text())
    m = metrics["models"]["good"]
    assert m["n"] == 0 and m["mean_reward"] is None and m["ci_low"] is None
    assert "could be scored" in m["notes"]["mean_reward"]
    (w,) = metrics["win_rates"]
    assert (w["n"], w["unjudged"], w["win_rate"]) == (0, 2, None)
    assert "judged" in w["notes"]["win_rate"]
    assert any("could not be scored" in n for n in metrics["notes"])
    for line in (out / "per_prompt.jsonl").read_text().splitlines():
        assert set(_strict_json(line)["rewards"].values()) == {None}
    assert "good: reward n/a [n/a, n/a]" in cap.out


# ----------------------------------------------------------------------------- evaluate --rm


def test_pair_accuracy_is_null_with_a_reason_when_no_pair_counts():
    from rankalign.metrics import pair_accuracy, pairwise_accuracy

    empty = pair_accuracy([], [], empty_note="why")
    assert empty["accuracy"] is None and empty["notes"] == {
        "accuracy": "why",
        "accuracy_ties_half": "why",
    }
    tied = pairwise_accuracy([{"scores": [1.0, 1.0]}], [[0.2, 0.1]])["overall"]
    assert tied["accuracy"] is None and "tied" in tied["notes"]["accuracy"]
    # a response without a finite model score is left out and counted, never compared
    rows = [{"scores": [1.0, 0.0]}, {"scores": [1.0, 0.0]}]
    acc = pairwise_accuracy(rows, [[0.9, 0.1], [None, 0.3]])["overall"]
    assert (acc["n"], acc["correct"], acc["unscored"], acc["accuracy"]) == (1, 1, 1, 1.0)
    none = pairwise_accuracy(rows[:1], [[None, 0.1]])["overall"]
    assert none["accuracy"] is None and "scored" in none["notes"]["accuracy"]
    json.loads(json.dumps(none), parse_constant=lambda c: pytest.fail(c))


def _rm_evaluate(model: str, pairs: str, out: Path, *extra: str) -> list[str]:
    return ["evaluate", "--rm", model, "--pairs", pairs, "--out", str(out), *extra]


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["--batch_size", "0"], ["batch_size"]),
        (["--max_rows", "0"], ["max_rows"]),
        (["--max_length", "1"], ["max_length"]),
        (["--kind", "oracle"], ["kind"]),
        (["--length_unit", "miles"], ["length_unit"]),
        (["--dtype", "float64"], ["dtype", "float64"]),
    ],
    ids=["batch-0", "rows-0", "length-1", "kind", "unit", "dtype"],
)
def test_rm_evaluate_bad_option(inputs, tiny_model_dir, tmp_path, capfd, extra, expect):
    out = tmp_path / "out"
    argv = _rm_evaluate(tiny_model_dir, inputs["pairs"], out, *extra)
    _refused(argv, out, capfd, "evaluate", expect)


def test_rm_evaluate_nan_from_yaml(inputs, tiny_model_dir, tmp_path, capfd):
    out = tmp_path / "out"
    config = _yaml(tmp_path, {"batch_size": 2, "max_length": float("nan")})
    argv = _rm_evaluate(tiny_model_dir, inputs["pairs"], out, "--config", config)
    _refused(argv, out, capfd, "evaluate", ["options.yaml", "max_length"])


@pytest.mark.parametrize(
    ("pairs", "extra", "expect"),
    [
        ("bad_pairs", [], ["bad_pairs.jsonl", "line 2", "scores[0]"]),
        ("pairs", ["--samples", "{bad_samples}"], ["bad_samples.jsonl", "line 2"]),
        ("bad_prompts", [], ["bad_prompts.jsonl", "line 2"]),
    ],
    ids=["pairs", "samples", "json"],
)
def test_rm_evaluate_bad_input_row(inputs, tiny_model_dir, tmp_path, capfd, pairs, extra, expect):
    out = tmp_path / "out"
    extra = [x.format(**inputs) for x in extra]
    argv = _rm_evaluate(tiny_model_dir, inputs[pairs], out, *extra)
    _refused(argv, out, capfd, "evaluate", expect)


def test_rm_evaluate_bad_model_folder(
    inputs, bad_config_model, no_tokenizer_model, tmp_path, capfd
):
    out = tmp_path / "out"
    argv = _rm_evaluate(no_tokenizer_model, inputs["pairs"], out)
    _refused(argv, out, capfd, "evaluate", ["no-tokenizer-model", "tokenizer"])
    argv = _rm_evaluate(inputs["no_config"], inputs["pairs"], out)
    _refused(argv, out, capfd, "evaluate", ["no-config-model", "config.json"])
    argv = _rm_evaluate(bad_config_model, inputs["pairs"], out)
    _refused(argv, out, capfd, "evaluate", ["config.json"])
    missing = str(Path(inputs["dir"]) / "no-such-model")
    _refused(_rm_evaluate(missing, inputs["pairs"], out), out, capfd, "evaluate", ["no-such-model"])


def test_rm_evaluate_api_takes_the_cli_options(inputs, tiny_model_dir, tmp_path, capfd):
    """`rankalign.evaluate(rm=..., pairs=..., **options)`: the options are EvaluateConfig's,
    checked as the CLI checks them, before any write."""
    from PIL import Image

    import rankalign
    from rankalign.errors import UserError

    out = tmp_path / "out"
    for bad, field in (({"batch_size": 0}, "batch_size"), ({"dtype": "float64"}, "dtype")):
        with pytest.raises(UserError, match=f"field '{field}'"):
            rankalign.evaluate(
                rm=tiny_model_dir, pairs=inputs["pairs"], out=str(out), kind="policy", **bad
            )
    with pytest.raises(UserError, match="unknown option 'batchsize'"):
        rankalign.evaluate(rm=tiny_model_dir, pairs=inputs["pairs"], out=str(out), batchsize=2)
    assert not out.exists()
    m = rankalign.evaluate(
        rm=Path(tiny_model_dir),
        pairs=Path(inputs["pairs"]),
        out=out,
        kind="auto",
        samples=[Path(inputs["tied"])],
        length_unit="chars",
        batch_size=1,
        max_rows=1,
    ).metrics
    assert (m["model"], m["kind"], m["pairs_file"]) == (tiny_model_dir, "policy", inputs["pairs"])
    assert m["accuracy"]["overall"]["n"] == 1 and m["pairs_data"]["rows_kept"] == 1
    assert m["samples_file"] == inputs["tied"] and m["reward_length"]["length_unit"] == "chars"
    assert _strict_json((out / "metrics.json").read_text())["kind"] == "policy"
    with Image.open(out / "accuracy.png") as im:  # report.save_figure: curve names recorded
        assert "chance" in im.text.get("Description", "")


@pytest.mark.parametrize(
    ("metadata", "expect"),
    [
        ('{"loss": "bt-reward", "loss": "preference"}', ["duplicate key 'loss'"]),
        ('["bt-reward"]', ["expected a JSON object"]),
        ('{"loss": "bt-reward"', ["invalid JSON"]),
    ],
    ids=["duplicate-key", "not-an-object", "invalid"],
)
def test_rm_evaluate_bad_metadata_file(inputs, tiny_model_dir, tmp_path, capfd, metadata, expect):
    """`--kind auto` reads the model's rankalign_reward_model.json as strictly as data files."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "rankalign_reward_model.json").write_text(metadata)
    out = tmp_path / "out"
    argv = _rm_evaluate(str(model), inputs["pairs"], out)
    _refused(argv, out, capfd, "evaluate", ["rankalign_reward_model.json", *expect])


def test_rm_evaluate_out_is_a_file(inputs, tiny_model_dir, tmp_path, capfd):
    out = Path(inputs["file"])
    argv = _rm_evaluate(tiny_model_dir, inputs["pairs"], out)
    _refused(argv, out, capfd, "evaluate", ["a_file.txt", "not a folder"])


def test_rm_evaluate_all_tied_pairs(inputs, tiny_model_dir, tmp_path, capfd):
    out = tmp_path / "out"
    rc = _run(_rm_evaluate(tiny_model_dir, inputs["tied"], out))
    cap = capfd.readouterr()
    assert rc == 0, cap.err
    metrics = _strict_json((out / "metrics.json").read_text())
    overall = metrics["accuracy"]["overall"]
    assert overall["n"] == 0 and overall["accuracy"] is None
    assert "tied" in overall["notes"]["accuracy"]
    assert "accuracy.png" not in metrics["plots"] and not (out / "accuracy.png").exists()
    assert "accuracy n/a" in cap.out and "tied" in (out / "report.md").read_text()


# ----------------------------------------------------------------------------- train


def _train(model: str, data: str, out: Path, *extra: str, loss: str = "bt-reward") -> list[str]:
    return [
        "train",
        "--loss",
        loss,
        "--model",
        model,
        "--data",
        data,
        "--output_dir",
        str(out),
        "--max_steps",
        "1",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        *extra,
    ]


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["--lora_r", "0"], ["lora_r"]),
        (["--max_length", "1"], ["max_length"]),
        (["--margin", "nan"], ["margin"]),
        (["--center_rewards_coefficient", "-1"], ["center_rewards_coefficient"]),
        (["--lora_dropout", "1.5"], ["lora_dropout"]),
        (["--max_rows", "0"], ["max_rows"]),
        (["--per_device_train_batch_size", "0"], ["per_device_train_batch_size"]),
    ],
    ids=["lora-r", "max-length", "nan-margin", "center", "dropout", "rows", "batch"],
)
def test_train_reward_model_bad_option(tiny_model_dir, tmp_path, capfd, extra, expect):
    out = tmp_path / "out"
    argv = _train(tiny_model_dir, str(GOOD_LISTS), out, *extra)
    _refused(argv, out, capfd, "train", expect)


def test_train_reward_model_nan_from_yaml(tiny_model_dir, tmp_path, capfd):
    out = tmp_path / "out"
    config = _yaml(tmp_path, {"lora_dropout": float("nan")})
    argv = _train(tiny_model_dir, str(GOOD_LISTS), out, "--config", config)
    _refused(argv, out, capfd, "train", ["options.yaml", "lora_dropout"])


@pytest.mark.parametrize("loss", ["bt-reward", "preference"])
@pytest.mark.parametrize(
    ("data", "extra", "expect"),
    [
        (str(BAD / "bad_json_line.jsonl"), [], ["bad_json_line.jsonl", "line 2"]),
        (str(BAD / "score_string.jsonl"), [], ["score_string.jsonl", "line 2", "scores[0]"]),
        (str(BAD / "all_tied.jsonl"), [], ["all_tied.jsonl", "no training examples"]),
        (
            str(GOOD_LISTS),
            ["--eval_data", str(BAD / "missing_scores.jsonl")],
            ["missing_scores.jsonl", "scores"],
        ),
    ],
    ids=["bad-json", "score-string", "all-tied", "eval-data"],
)
def test_train_reward_model_bad_input_row(
    tiny_model_dir, tmp_path, capfd, loss, data, extra, expect
):
    out = tmp_path / "out"
    argv = _train(tiny_model_dir, data, out, *extra, loss=loss)
    _refused(argv, out, capfd, "train", expect)


@pytest.mark.parametrize("loss", ["bt-reward", "preference"])
def test_train_reward_model_lora_modules_not_in_the_model(tiny_model_dir, tmp_path, capfd, loss):
    """The model loads (its progress bar is switched off here), then the adapters cannot be
    added: still refused before the first write."""
    out = tmp_path / "out"
    extra = ["--use_lora", "true", "--lora_target_modules", "no_such_proj"]
    argv = _train(tiny_model_dir, str(GOOD_LISTS), out, *extra, loss=loss)
    hf_logging.disable_progress_bar()
    try:
        _refused(argv, out, capfd, "train", ["lora_target_modules", "LoRA"])
    finally:
        hf_logging.enable_progress_bar()


def test_train_preference_template_missing(inputs, tiny_model_dir, tmp_path, capfd):
    out = tmp_path / "out"
    argv = _train(
        tiny_model_dir,
        str(GOOD_LISTS),
        out,
        "--template",
        inputs["template_missing"],
        loss="preference",
    )
    _refused(argv, out, capfd, "train", ["template.txt"])


@pytest.mark.parametrize("loss", ["bt-reward", "preference"])
def test_train_reward_model_bad_model_folder(
    inputs, bad_config_model, no_tokenizer_model, tmp_path, capfd, loss
):
    out = tmp_path / "out"
    argv = _train(no_tokenizer_model, str(GOOD_LISTS), out, loss=loss)
    _refused(argv, out, capfd, "train", ["no-tokenizer-model", "tokenizer"])
    argv = _train(inputs["no_config"], str(GOOD_LISTS), out, loss=loss)
    _refused(argv, out, capfd, "train", ["no-config-model", "config.json"])
    argv = _train(bad_config_model, str(GOOD_LISTS), out, loss=loss)
    _refused(argv, out, capfd, "train", ["config.json"])


@pytest.mark.parametrize("loss", ["bt-reward", "preference"])
def test_train_reward_model_output_dir_is_a_file(inputs, tiny_model_dir, tmp_path, capfd, loss):
    out = Path(inputs["file"])
    argv = _train(tiny_model_dir, str(GOOD_LISTS), out, loss=loss)
    _refused(argv, out, capfd, "train", ["a_file.txt", "not a folder"])


def test_train_reward_model_existing_output_dir_is_left_byte_identical(
    tiny_model_dir, tmp_path, capfd
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("an earlier run's file\n")
    (out / "checkpoint-3").mkdir()  # what --overwrite would remove, once everything is checked
    argv = _train(tiny_model_dir, str(BAD / "bad_json_line.jsonl"), out)
    _refused(argv, out, capfd, "train", ["output folder is not empty", "--overwrite true"])
    argv = _train(tiny_model_dir, str(BAD / "bad_json_line.jsonl"), out, "--overwrite", "true")
    _refused(argv, out, capfd, "train", ["bad_json_line.jsonl", "line 2"])
