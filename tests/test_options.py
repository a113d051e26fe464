"""Options as a TRL or LLaMA-Factory user types them: help text and effective defaults for every
option, ours listed before TrainingArguments', TRL's names as aliases, "did you mean" for a
misspelt option or key, no prefix matching, TrainingArguments' own `--debug`, and missing
logging packages named with what to install. All parse-level: nothing trains here."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

import rankalign
from rankalign.cli import main, split_debug
from rankalign.errors import UserError
from rankalign.training.config import LOSS_OPTIONS, TrainConfig, loss_defaults

OURS = [
    "rankalign.sampling.config:SampleConfig",
    "rankalign.scoring.config:ScoreConfig",
    "rankalign.training.config:TrainConfig",
    "rankalign.evaluation.config:EvaluateConfig",
    "rankalign.workflows.loop:LoopConfig",
    "rankalign.workflows.demo:DemoConfig",
]


def _help(command: str, capsys, *extra: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([command, *extra, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("spec", OURS)
def test_every_option_of_ours_has_help_text(spec):
    import importlib

    module, name = spec.split(":")
    cls = getattr(importlib.import_module(module), name)
    bare = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("help", "").strip()]
    assert not bare, f"{name}: options without help: {bare}"


def test_train_help_shows_ours_first_and_per_loss_defaults(capsys):
    shown = _help("train", capsys)
    ours = shown.index("rankalign train options:")
    theirs = shown.index("TrainingArguments options (transformers):")
    assert ours < theirs < shown.index("--learning_rate")
    assert shown.index("--beta") < theirs
    assert "default: None" not in shown  # an unset option says what it falls back to
    beta = shown[shown.index("--beta") : shown.index("--margin")]
    beta = " ".join(beta.split()).replace("- ", "-")  # argparse wraps at hyphens
    assert "default: 0.1 (listwise-dpo" in beta and "2.0 (simpo)" in beta
    assert "usage: rankalign train [--config FILE.yaml]" in shown  # not hundreds of flags
    # TrainingArguments' defaults shown are the chosen loss's (training/config.LOSS_DEFAULTS)
    dpo = _help("train", capsys, "--loss", "dpo")
    lr = dpo[dpo.index("--learning_rate") :].split("--", 2)[1]
    assert "1e-06" in lr


def test_per_loss_defaults_are_the_loss_functions_own():
    import inspect

    from rankalign import losses as L

    assert (
        loss_defaults("simpo")["beta"]
        == inspect.signature(L.LOSSES["simpo"]).parameters["beta"].default
    )
    assert loss_defaults("rrhf")["rank_weight"] == 1.0 and "beta" not in loss_defaults("rrhf")
    assert loss_defaults("bt-reward") == {"margin": 0.0, "pair_mode": "all"}


def test_effective_loss_options_record_the_values_used():
    used = TrainConfig(data="x", loss="dpo").effective_loss_options()
    assert used["beta"] == 0.1 and used["label_smoothing"] == 0.0
    assert used["rank_weight"] is None  # dpo takes no rank_weight
    assert set(used) == set(LOSS_OPTIONS)
    assert TrainConfig(data="x", loss="dpo", beta=0.3).effective_loss_options()["beta"] == 0.3


def test_trl_names_are_aliases_as_flags_keys_and_keywords(tmp_path):
    cfg, _ = rankalign.train_config(
        argv=["--model_name_or_path", "m", "--dataset_name", "d.jsonl", "--output_dir", "o"]
    )
    assert (cfg.model, cfg.data) == ("m", "d.jsonl")
    config = tmp_path / "trl.yaml"
    config.write_text("model_name_or_path: m2\ndataset_name: d2.jsonl\n")
    cfg, _ = rankalign.train_config(str(config))
    assert (cfg.model, cfg.data) == ("m2", "d2.jsonl")
    cfg, _ = rankalign.train_config(model_name_or_path="m3", data="d3.jsonl")
    assert cfg.model == "m3"
    # each command maps dataset_name onto its own input option
    assert (
        rankalign.sample_config(dataset_name="p.jsonl", out="o.jsonl", preset="DP").prompts
        == "p.jsonl"
    )
    assert rankalign.score_config(dataset_name="i.jsonl", out="o.jsonl").input == "i.jsonl"
    with pytest.raises(UserError, match="'model_name_or_path' and 'model' name the same"):
        rankalign.train_config(model_name_or_path="a", model="b", data="d")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["--learning_rat", "1e-5"],
            "unknown option '--learning_rat' (did you mean '--learning_rate'?)",
        ),
        (["--learning_rat=1e-5"], "did you mean '--learning_rate'?"),
        (["--lr", "1e-5"], "unknown option '--lr'"),  # argparse would have taken any prefix
        (["--max_stepz", "3"], "did you mean '--max_steps'?"),
    ],
)
def test_unknown_and_abbreviated_flags_are_refused_with_a_suggestion(argv, expected):
    with pytest.raises(UserError) as e:
        rankalign.train_config(argv=["--data", "d.jsonl", *argv])
    assert expected in str(e.value)


def test_unknown_yaml_key_and_keyword_get_a_suggestion(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("data: d.jsonl\nlerning_rate: 1e-5\n")
    with pytest.raises(
        UserError, match=r"unknown option 'lerning_rate' \(did you mean 'learning_rate'\?\)"
    ):
        rankalign.train_config(str(config))
    with pytest.raises(UserError, match="did you mean 'max_new_tokens'"):
        rankalign.sample_config(prompts="p", out="o", max_new_token=3)


def test_cli_reports_a_misspelt_flag_in_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["train", "--data", "d.jsonl", "--output_dir", str(out), "--learning_rat", "1e-5"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "did you mean '--learning_rate'" in err
    assert not out.exists()


def test_debug_without_a_value_is_ours_with_one_it_is_training_arguments():
    assert split_debug(["train", "--debug", "--data", "x"]) == (True, ["train", "--data", "x"])
    assert split_debug(["train", "--data", "x", "--debug"]) == (True, ["train", "--data", "x"])
    traceback, argv = split_debug(["train", "--debug", "underflow_overflow", "--data", "x"])
    assert not traceback and argv == ["train", "--debug", "underflow_overflow", "--data", "x"]
    _, args = rankalign.train_config(argv=argv[1:])
    assert [getattr(d, "value", d) for d in args.debug] == ["underflow_overflow"]


def test_missing_logging_package_is_one_line_with_the_install_hint(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    missing = {"tensorboard", "tensorboardX", "wandb"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a)
    )
    for integration in ("tensorboard", "wandb"):
        with pytest.raises(UserError, match=r"pip install 'rankalign\[logging\]'") as e:
            rankalign.train_config(data="d.jsonl", report_to=integration)
        assert f"report_to {integration}: the " in str(e.value)


def test_logging_extra_installs_the_integrations():
    from pathlib import Path

    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    extra = " ".join(project["project"]["optional-dependencies"]["logging"])
    assert "tensorboard" in extra and "wandb" in extra


def test_remove_unused_columns_true_is_refused_with_the_reason():
    _, args = rankalign.train_config(data="d.jsonl")
    assert args.remove_unused_columns is False  # our required setting, applied by default
    with pytest.raises(UserError, match="remove_unused_columns must be false"):
        rankalign.train_config(data="d.jsonl", remove_unused_columns=True)


def test_resolved_config_reruns_with_the_same_values(tmp_path):
    """`rankalign_config.yaml` holds the values used (no `beta: null` for dpo) and reruns."""
    from rankalign.config import dump_config

    cfg, args = rankalign.train_config(data="d.jsonl", loss="dpo")
    used = dataclasses.asdict(cfg) | cfg.effective_loss_options()
    dump_config(tmp_path / "c.yaml", {"rankalign": used, "training_args": args.to_dict()})
    dumped = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert dumped["rankalign"]["beta"] == 0.1
    again, args2 = rankalign.train_config(str(tmp_path / "c.yaml"))
    assert again.loss_kwargs()["beta"] == 0.1 and args2.learning_rate == args.learning_rate


def test_misspelt_command_gets_a_suggestion(capsys):
    assert main(["trian", "--data", "x"]) == 2
    assert "unknown command 'trian' (did you mean 'train'?)" in capsys.readouterr().err
