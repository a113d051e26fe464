"""Every option with a range or choices, in every command's config class (the loss specs' options
included), is refused when its value is bad, as a flag, a YAML key and a Python keyword alike:
one line, exit 2 / UserError, before the command writes anything. Contradictory options and a
name given twice are refused the same way."""

from __future__ import annotations

import dataclasses
import importlib
import re
import typing
from pathlib import Path

import pytest
import yaml

from rankalign.cli import COMMANDS, main
from rankalign.errors import UserError
from rankalign.option_checks import EXTERNAL_CHECKS, in_range
from rankalign.sampling.config import SourceConfig

# command -> its config class and options that make it fail fast (a missing input) if a bad value
# were ever let through; every output goes under the test's empty working folder
CLASSES = {
    "sample": (
        "rankalign.sampling.config:SampleConfig",
        {"prompts": "missing.jsonl", "preset": "DP"},
    ),
    "score": ("rankalign.scoring.config:ScoreConfig", {"input": "missing.jsonl"}),
    "train": ("rankalign.training.config:TrainConfig", {"data": "missing.jsonl"}),
    "evaluate": ("rankalign.evaluation.config:EvaluateConfig", {"samples": ["missing.jsonl"]}),
    "loop": ("rankalign.workflows.loop:LoopConfig", {"prompts": "missing.jsonl"}),
    "demo": ("rankalign.workflows.demo:DemoConfig", {"prompts": "missing.jsonl"}),
    "compare": ("rankalign.workflows.compare:CompareConfig", {"prompts": "missing.jsonl"}),
    "annotate": ("rankalign.annotation.config:AnnotateConfig", {"input": "missing.jsonl"}),
}
OUT = {"sample": "out", "score": "out", "train": "output_dir", "evaluate": "out", "annotate": "out"}


def _class(command: str):
    module, name = CLASSES[command][0].split(":")
    return getattr(importlib.import_module(module), name)


def _number_type(cls, name: str) -> type:
    hint = typing.get_type_hints(cls).get(name, float)
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return int if args[0] is int else float


def bad_value(check: str, kind: type):
    """A value just outside the range `check` (config.py's forms), of type `kind`."""
    m = re.match(r"^\s*(>=|<=|>|<)\s*(\S+)\s*$", check)
    if m:
        bound = float(m.group(2))
        value = {">": bound, ">=": bound - 1, "<": bound, "<=": bound + 1}[m.group(1)]
    else:
        low, high = (float(x) for x in re.findall(r"-?[\d.e+]+", check)[:2])
        value = high + 1 if check.strip().endswith("]") else high
    value = kind(value)
    assert not in_range(value, check), (check, value)
    return value


def walked() -> list[tuple[str, str, object]]:
    """(command, option, bad value) for every field with a range or choices."""
    out = []
    for command in CLASSES:
        cls = _class(command)
        for f in dataclasses.fields(cls):
            if f.metadata.get("choices"):
                out.append((command, f.name, "not-a-choice"))
            elif f.metadata.get("check"):
                out.append(
                    (command, f.name, bad_value(f.metadata["check"], _number_type(cls, f.name)))
                )
    from transformers import TrainingArguments

    for name, check in EXTERNAL_CHECKS["TrainingArguments"].items():
        out.append(("train", name, bad_value(check, _number_type(TrainingArguments, name))))
    return out


CASES = walked()


def test_the_walk_covers_every_command_and_the_loss_options():
    from rankalign.training.config import LOSS_OPTIONS

    commands = {c for c, _, _ in CASES}
    assert commands == set(CLASSES) and set(CLASSES) == set(COMMANDS)
    walked_train = {name for c, name, _ in CASES if c == "train"}
    assert set(LOSS_OPTIONS) <= walked_train  # every loss option has a range or choices
    assert {"lipo_labels", "sft_reduction", "nca_alpha", "learning_rate"} <= walked_train


def _options(command: str, name: str, value) -> dict:
    options = dict(CLASSES[command][1])
    if command in OUT:
        options[OUT[command]] = "out"
    options.pop(name, None)
    options[name] = value
    return options


def _argv(options: dict) -> list[str]:
    argv = []
    for key, value in options.items():
        argv += [f"--{key}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    return argv


def _refused_by_cli(argv: list[str], name: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and name in err, err


@pytest.mark.parametrize("command, name, value", CASES, ids=[f"{c}-{n}" for c, n, _ in CASES])
def test_a_bad_value_is_refused_before_anything_is_written(
    command, name, value, tmp_path, monkeypatch, capsys
):
    work, inputs = tmp_path / "work", tmp_path / "inputs"
    work.mkdir()
    inputs.mkdir()
    monkeypatch.chdir(work)
    options = _options(command, name, value)
    # a flag
    _refused_by_cli([command, *_argv(options)], name, capsys)
    # a YAML key
    config = inputs / "run.yaml"
    config.write_text(yaml.safe_dump(options))
    _refused_by_cli([command, "--config", str(config)], name, capsys)
    # a Python keyword
    module, function = COMMANDS[command][0].split(":")
    with pytest.raises(UserError, match=name):
        getattr(importlib.import_module(module), function)(**options)
    assert not any(work.iterdir()), sorted(p.name for p in work.rglob("*"))


SOURCE_CASES = [
    (f.name, bad_value(f.metadata["check"], _number_type(SourceConfig, f.name)))
    for f in dataclasses.fields(SourceConfig)
    if f.metadata.get("check")
]


@pytest.mark.parametrize("name, value", SOURCE_CASES, ids=[n for n, _ in SOURCE_CASES])
def test_a_bad_source_option_is_refused_before_anything_is_written(
    name, value, tmp_path, monkeypatch, capsys
):
    import rankalign

    monkeypatch.chdir(tmp_path)
    source = {"kind": "policy", "strategy": "sample", name: value}
    config = tmp_path.parent / f"{tmp_path.name}-sources.yaml"
    config.write_text(yaml.safe_dump({"prompts": "p.jsonl", "out": "o", "sources": [source]}))
    _refused_by_cli(["sample", "--config", str(config)], name, capsys)
    with pytest.raises(UserError, match=name):
        rankalign.sample(prompts="p.jsonl", out="o", sources=[source])
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- the three refusals


def _lists(path: Path) -> str:
    path.write_text('{"prompt": "p", "responses": ["a", "b"], "scores": [1.0, 0.0]}\n')
    return str(path)


def test_train_refuses_a_bad_lipo_label_before_any_file(tmp_path, monkeypatch, capsys):
    """It used to write data_report.json, rankalign_config.yaml and a reference cache, then
    fail at the first step with an internal error."""
    data = _lists(tmp_path / "d.jsonl")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    argv = ["train", "--data", data, "--loss", "lipo", "--lipo_labels", "bogus"]
    _refused_by_cli([*argv, "--output_dir", "run"], "lipo_labels", capsys)
    assert not any(work.iterdir())


def test_train_refuses_overwrite_with_resume(tmp_path, monkeypatch, capsys):
    data = _lists(tmp_path / "d.jsonl")
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--data", data, "--output_dir", "run", "--overwrite", "true"]
    assert main([*argv, "--resume", "true"]) == 2
    err = capsys.readouterr().err
    assert "overwrite true contradicts resume true" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()
    import rankalign

    with pytest.raises(UserError, match="contradicts resume"):
        rankalign.train_config(data=data, overwrite=True, resume=True)
    rankalign.train_config(data=data, overwrite=True)  # each alone is fine
    rankalign.train_config(data=data, resume=True)


def test_other_contradictory_pairs_are_refused():
    import rankalign

    with pytest.raises(UserError, match="packed_prompt true contradicts shared_prompt false"):
        rankalign.train_config(data="d.jsonl", packed_prompt=True, shared_prompt=False)
    # a switch given as false contradicts nothing (packed_prompt's default is unset, not false)
    rankalign.train_config(data="d.jsonl", packed_prompt=False, shared_prompt=False)
    with pytest.raises(UserError, match="rm r contradicts model"):
        rankalign.evaluate_config(rm="r", pairs="p.jsonl", model=["m"])


def test_evaluate_refuses_a_name_given_twice(tmp_path, monkeypatch, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "1", "prompt": "p"}\n')
    a, b = (tmp_path / f"{x}.jsonl" for x in "ab")
    for f in (a, b):
        f.write_text('{"id": "1", "prompt": "p", "responses": ["r"]}\n')
    monkeypatch.chdir(tmp_path)
    argv = ["evaluate", "--prompts", str(prompts), "--reward", "length", "--out", "ev"]
    assert main([*argv, "--model", f"twin={a}", f"twin={b}"]) == 2
    err = capsys.readouterr().err
    assert "the name 'twin' is given twice" in err and err.count("\n") == 1
    assert not (tmp_path / "ev").exists()


def test_derived_names_still_step_aside(tmp_path):
    from rankalign.evaluation.entries import parse_entries

    names = [e.name for e in parse_entries(["dataset:x", "y=dataset:y", "dataset:x"], [])]
    assert names == ["dataset:x", "y", "dataset:x-2"]
    # a name derived from a file's stem never takes a name the user gave, even one given later
    (tmp_path / "x.jsonl").write_text("")
    names = [e.name for e in parse_entries([str(tmp_path / "x.jsonl"), "x=dataset:y"], [])]
    assert names == ["x-2", "x"]
