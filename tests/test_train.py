"""`rankalign train` end to end on a tiny random model: losses go down, resume is exact, the
reference is precomputed once and cached, every loss runs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from rankalign import losses as L
from rankalign.cli import main
from rankalign.logprobs import compute_logps
from rankalign.models import load_causal_lm, load_tokenizer
from rankalign.training.config import TrainConfig
from rankalign.training.datasets import tokenize_lists
from rankalign.training.stage import parse_args

DATA = str(Path(__file__).parents[1] / "examples" / "data" / "tiny_lists.jsonl")


def _train(model_dir, out, *extra):
    argv = [
        "train",
        "--model",
        model_dir,
        "--data",
        DATA,
        "--output_dir",
        str(out),
        "--per_device_train_batch_size",
        "4",
        "--learning_rate",
        "1e-3",
        "--disable_tqdm",
        "true",
        "--save_strategy",
        "no",
        *extra,
    ]
    assert main(argv) == 0
    return json.loads((Path(out) / "train_summary.json").read_text())


def _mean_loss(model_dir, loss="rrhf"):
    tok = load_tokenizer(model_dir)
    cfg = TrainConfig(data=DATA, model=model_dir, loss=loss)
    ds, _ = tokenize_lists(DATA, tok, cfg, min_responses=2)
    model = load_causal_lm(model_dir)
    logps = compute_logps(model, ds, tok.pad_token_id, 8, True, desc="eval")
    total = 0.0
    for item, lp in zip(ds.items, logps):
        k = len(lp)
        inputs = L.LossInputs(
            torch.tensor([lp]),
            torch.tensor([[len(r) for r in item["response_ids"]]], dtype=torch.float),
            torch.tensor([item["scores"]]),
            torch.ones(1, k, dtype=torch.bool),
        )
        total += L.LOSSES[loss](inputs)[0].item()
    return total / len(ds)


def test_rrhf_training_reduces_the_loss(tiny_model_dir, tmp_path):
    before = _mean_loss(tiny_model_dir)
    summary = _train(
        tiny_model_dir, tmp_path / "rrhf", "--num_train_epochs", "3", "--learning_rate", "1e-2"
    )
    after = _mean_loss(str(tmp_path / "rrhf"))
    assert summary["global_step"] == 18  # 24 lists / 4 per step * 3 epochs
    assert after < 0.8 * before
    cfg = yaml.safe_load((tmp_path / "rrhf" / "rankalign_config.yaml").read_text())
    assert cfg["rankalign"]["loss"] == "rrhf" and cfg["training_args"]["learning_rate"] == 1e-2


def test_resume_from_checkpoint_gives_the_same_weights(tiny_model_dir, tmp_path):
    common = ["--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", "--seed", "3"]
    _train(tiny_model_dir, tmp_path / "full", *common)
    # a run that stopped after its step-2 checkpoint, then resumed
    (tmp_path / "cut").mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-2", tmp_path / "cut" / "checkpoint-2")
    _train(tiny_model_dir, tmp_path / "cut", *common, "--resume")
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    init = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    assert any(not torch.equal(a[k], init[k]) for k in a)  # training changed the weights
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)


def test_dpo_reference_is_precomputed_once_and_cached(tiny_model_dir, tmp_path):
    cache = tmp_path / "refcache"
    s1 = _train(
        tiny_model_dir,
        tmp_path / "a",
        "--loss",
        "dpo",
        "--max_steps",
        "2",
        "--ref_cache_dir",
        str(cache),
    )
    files = list(cache.glob("*.safetensors"))
    assert len(files) == 1 and s1["reference_cache"] == str(files[0])
    stamp = files[0].stat().st_mtime_ns
    s2 = _train(
        tiny_model_dir,
        tmp_path / "b",
        "--loss",
        "dpo",
        "--max_steps",
        "2",
        "--ref_cache_dir",
        str(cache),
    )
    assert s2["reference_cache"] == s1["reference_cache"] and files[0].stat().st_mtime_ns == stamp
    cached = load_file(str(files[0]))["logps"]
    tok = load_tokenizer(tiny_model_dir)
    ds, _ = tokenize_lists(
        DATA, tok, TrainConfig(data=DATA, model=tiny_model_dir, loss="dpo"), min_responses=2
    )
    direct = compute_logps(load_causal_lm(tiny_model_dir), ds, tok.pad_token_id, 3, False)
    torch.testing.assert_close(
        cached,
        torch.tensor([v for row in direct for v in row], dtype=torch.float64),
        rtol=1e-5,
        atol=1e-4,
    )


def test_reference_logps_live_beside_the_token_table_and_are_shared(tiny_model_dir, tmp_path):
    """Without --ref_cache_dir the reference log-probs are cached beside the shared token table
    (named after it), so a run in another folder reuses them; a damaged file is recomputed."""
    s1 = _train(tiny_model_dir, tmp_path / "a", "--loss", "dpo", "--max_steps", "1")
    path = Path(s1["reference_cache"])
    table = path.parent / (path.name.split(".ref-logps-")[0] + ".arrow")
    assert table.is_file() and not (tmp_path / "a" / "ref_cache").exists()
    stamp = path.stat().st_mtime_ns
    s2 = _train(tiny_model_dir, tmp_path / "b", "--loss", "dpo", "--max_steps", "1")
    assert s2["reference_cache"] == str(path) and path.stat().st_mtime_ns == stamp
    good = load_file(str(path))["logps"].clone()  # (a mapped view would see the tear)
    path.write_bytes(path.read_bytes()[:40])  # torn
    s3 = _train(tiny_model_dir, tmp_path / "c", "--loss", "dpo", "--max_steps", "1")
    assert s3["reference_cache"] == str(path)
    torch.testing.assert_close(load_file(str(path))["logps"], good, rtol=1e-6, atol=1e-6)


def test_first_dpo_step_loss_is_log2(tiny_model_dir, tmp_path):
    from transformers import TrainerCallback

    seen = []

    class Grab(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                seen.append(float(logs["loss"]))

    import rankalign.training.trainers as T

    orig = T.RankTrainer.__init__

    def init(self, *a, **k):
        orig(self, *a, **k)
        self.add_callback(Grab())

    T.RankTrainer.__init__ = init
    try:
        _train(
            tiny_model_dir,
            tmp_path / "d",
            "--loss",
            "dpo",
            "--max_steps",
            "1",
            "--logging_steps",
            "1",
        )
    finally:
        T.RankTrainer.__init__ = orig
    assert seen[0] == pytest.approx(math.log(2), abs=1e-4)


@pytest.mark.parametrize("loss", sorted(L.LOSSES))
def test_every_loss_trains(tiny_model_dir, tmp_path, loss):
    summary = _train(tiny_model_dir, tmp_path / loss, "--loss", loss, "--max_steps", "2")
    assert summary["global_step"] == 2 and math.isfinite(summary["train_loss"])
    assert (tmp_path / loss / "model.safetensors").is_file()


def test_lora_with_adapters_off_reference(tiny_model_dir, tmp_path):
    out = tmp_path / "lora"
    summary = _train(
        tiny_model_dir,
        out,
        "--loss",
        "dpo",
        "--max_steps",
        "2",
        "--use_lora",
        "true",
        "--reference",
        "adapters-off",
        "--lora_target_modules",
        "q_proj,v_proj",
    )
    assert summary["reference_cache"] is None and math.isfinite(summary["train_loss"])
    assert (out / "adapter" / "adapter_config.json").is_file()
    merged = load_causal_lm(str(out))  # a plain model folder after merging
    assert sum(p.numel() for p in merged.parameters()) == sum(
        p.numel() for p in load_causal_lm(tiny_model_dir).parameters()
    )


def test_yaml_config_and_flag_override(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(
        yaml.safe_dump(
            {
                "data": DATA,
                "loss": "dpo",
                "beta": 0.5,
                "learning_rate": 3e-6,
                "output_dir": str(tmp_path / "o"),
            }
        )
    )
    cfg, args = parse_args(["--config", str(cfg_file), "--beta", "0.25"])
    assert cfg.loss == "dpo" and cfg.beta == 0.25 and args.learning_rate == 3e-6
    cfg, args = parse_args(["--config", str(cfg_file), "--learning_rate", "1e-4"])
    assert cfg.beta == 0.5 and args.learning_rate == 1e-4
    # per-loss paper defaults when nothing sets them
    _, args = parse_args(["--data", DATA, "--loss", "rrhf"])
    assert (
        args.learning_rate == 2e-5
        and args.num_train_epochs == 3
        and args.lr_scheduler_type == "linear"
    )
    _, args = parse_args(["--data", DATA, "--loss", "dpo"])
    assert args.learning_rate == 1e-6


def test_option_that_does_not_apply_to_the_loss_is_an_error(tiny_model_dir, tmp_path, capsys):
    rc = main(
        [
            "train",
            "--model",
            tiny_model_dir,
            "--data",
            DATA,
            "--loss",
            "dpo",
            "--margin",
            "1.0",
            "--output_dir",
            str(tmp_path / "x"),
        ]
    )
    assert rc == 2
    assert "margin" in capsys.readouterr().err


@pytest.mark.parametrize("kill_after", [1, 5])
def test_sigkill_during_training_then_resume_gives_the_same_weights(
    tiny_model_dir, tmp_path, kill_after
):
    import os
    import signal
    import subprocess
    import sys
    import time

    common = [
        "--max_steps",
        "12",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
        "--seed",
        "5",
        "--learning_rate",
        "1e-3",
        "--per_device_train_batch_size",
        "2",
        "--disable_tqdm",
        "true",
    ]
    _train(tiny_model_dir, tmp_path / "full", *common)
    cut = tmp_path / "cut"
    argv = [
        sys.executable,
        "-m",
        "rankalign.cli",
        "train",
        "--model",
        tiny_model_dir,
        "--data",
        DATA,
        "--output_dir",
        str(cut),
        *common,
    ]
    proc = subprocess.Popen(
        argv,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while (
        not (cut / f"checkpoint-{kill_after}" / "trainer_state.json").exists()
        and time.time() < deadline
    ):
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "model.safetensors").exists()
    _train(tiny_model_dir, cut, *common, "--resume")
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(cut / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)


def test_pickle_checkpoints_are_refused_unless_allowed(tokenizer, tmp_path, capsys):
    from conftest import build_llama

    folder = tmp_path / "pickled"
    model = build_llama(len(tokenizer))
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # a pickle checkpoint
    tokenizer.save_pretrained(folder)
    args = [
        "train",
        "--model",
        str(folder),
        "--data",
        DATA,
        "--output_dir",
        str(tmp_path / "o"),
        "--max_steps",
        "1",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "true",
    ]
    assert main(args) == 2
    assert "pickle" in capsys.readouterr().err
    assert main([*args, "--allow_pickle", "true"]) == 0


def test_unwritable_output_dir_fails_before_work(tiny_model_dir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rc = main(
        ["train", "--model", tiny_model_dir, "--data", DATA, "--output_dir", str(blocker / "out")]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and len(err.strip().splitlines()) == 1


def test_group_by_length_batches_lists_of_similar_length(tiny_model_dir, tmp_path, capsys):
    from transformers import TrainingArguments

    from rankalign.logprobs import ListDataset, make_collator
    from rankalign.training.trainers import RankTrainer

    tok = load_tokenizer(tiny_model_dir)
    cfg = TrainConfig(data=DATA, model=tiny_model_dir, loss="rrhf")
    ds, _ = tokenize_lists(DATA, tok, cfg, min_responses=2)
    # transformers groups within mega-batches of up to 50 batches: it needs a few hundred lists
    ds = ListDataset(ds.items * 10)

    def padding(order, batch=4):  # padded tokens a batch order costs (prompts + responses)
        total = 0
        for s in range(0, len(order), batch):
            items = [ds[i] for i in order[s : s + batch]]
            longest_prompt = max(len(x["prompt_ids"]) for x in items)
            longest_response = max(len(r) for x in items for r in x["response_ids"])
            for x in items:
                total += longest_prompt - len(x["prompt_ids"])
                total += sum(longest_response - len(r) for r in x["response_ids"])
        return total

    # transformers < 5.2 names the choice `group_by_length: bool` (train.sampling_strategy)
    new_name = "train_sampling_strategy" in TrainingArguments.__dataclass_fields__

    def trainer(strategy):
        args = TrainingArguments(
            output_dir=str(tmp_path),
            per_device_train_batch_size=4,
            report_to="none",
            use_cpu=True,
            **(
                {"train_sampling_strategy": strategy}
                if new_name
                else {"group_by_length": strategy == "group_by_length"}
            ),
        )
        return RankTrainer(
            model=load_causal_lm(tiny_model_dir),
            args=args,
            train_dataset=ds,
            data_collator=make_collator(tok.pad_token_id),
            loss_name="rrhf",
            loss_kwargs={},
        )

    grouped = list(iter(trainer("group_by_length")._get_train_sampler()))
    assert sorted(grouped) == list(range(len(ds)))  # every list once
    random_order = [list(iter(trainer("random")._get_train_sampler())) for _ in range(5)]
    assert padding(grouped) < 0.8 * min(padding(o) for o in random_order)

    flag = ["--train_sampling_strategy", "group_by_length"] if new_name else ["--group_by_length"]
    summary = _train(tiny_model_dir, tmp_path / "run", *flag)
    assert summary["global_step"] > 0
    choices = TrainingArguments.__dataclass_fields__.get("train_sampling_strategy")
    if choices is not None and "batch_rebalance" in str(choices.metadata.get("choices", "")):
        argv = ["train", "--model", tiny_model_dir, "--data", DATA, "--output_dir", str(tmp_path)]
        assert main([*argv, "--train_sampling_strategy", "batch_rebalance"]) == 2
        assert "use group_by_length" in capsys.readouterr().err


def test_packed_prompt_and_activation_checkpointing_train_like_the_cached_path(
    tiny_model_dir, tmp_path
):
    """The three ways to run a training step (KV cache, packed, packed under activation
    checkpointing) end in the same weights (auto picks one of the first two: test_scorer_choice)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}  # renamed in transformers 5.x
    flag = (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else "gradient_checkpointing"
    )
    args = ("--max_steps", "3", "--seed", "1")
    _train(tiny_model_dir, tmp_path / "cached", *args, "--packed_prompt", "false")
    _train(tiny_model_dir, tmp_path / "packed", *args, "--packed_prompt", "true")
    _train(tiny_model_dir, tmp_path / "ckpt", *args, f"--{flag}", "true")
    a = load_file(str(tmp_path / "cached" / "model.safetensors"))
    init = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    assert any(not torch.equal(a[k], init[k]) for k in a)
    for run in ("packed", "ckpt"):
        b = load_file(str(tmp_path / run / "model.safetensors"))
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)


def test_listwise_frontier_and_released_convention_options():
    """Each new option reaches its loss's keyword (the same name since the loss specs), and only
    that loss takes it."""
    from rankalign.errors import UserError

    def kwargs(*flags):
        cfg, _ = parse_args(["--data", DATA, *flags])
        return cfg.loss_kwargs()

    assert kwargs("--loss", "lipo", "--lipo_labels", "raw", "--beta", "0.2") == {
        "lipo_labels": "raw",
        "beta": 0.2,
    }
    assert kwargs("--loss", "nca", "--nca_alpha", "0.5") == {"nca_alpha": 0.5}
    assert kwargs("--loss", "infonca", "--nca_alpha", "0.5") == {"nca_alpha": 0.5}
    assert kwargs("--loss", "ipo", "--ipo_log_ratio", "token") == {"ipo_log_ratio": "token"}
    assert kwargs("--loss", "pro", "--pro_sft_scale", "n-1-squared", "--sft_reduction", "sum") == {
        "pro_sft_scale": "n-1-squared",
        "sft_reduction": "sum",
    }
    for flags, name in (
        (["--loss", "rrhf", "--lipo_labels", "raw"], "lipo_labels"),
        (["--loss", "dpo", "--nca_alpha", "1"], "nca_alpha"),
        (["--loss", "dpo", "--ipo_log_ratio", "token"], "ipo_log_ratio"),
        (["--loss", "rrhf", "--pro_sft_scale", "n-1-squared"], "pro_sft_scale"),
    ):
        with pytest.raises(UserError, match=f"'{name}' does not apply"):
            kwargs(*flags)
    with pytest.raises(UserError, match="nca_alpha"):
        kwargs("--loss", "nca", "--nca_alpha", "0")
    _, args = parse_args(["--data", DATA, "--loss", "lipo"])
    assert args.learning_rate == 1e-6  # the DPO family's default


def test_non_empty_output_dir_needs_overwrite_or_resume(tiny_model_dir, tmp_path, capsys):
    """As `sample` and `score` refuse an existing output: nothing written, one line."""
    out = tmp_path / "out"
    (out / "checkpoint-9").mkdir(parents=True)
    (out / "train_summary.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    argv = ["train", "--model", tiny_model_dir, "--data", DATA, "--output_dir", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "output folder is not empty (pass --overwrite true" in err and "--resume" in err
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint-9",
        "notes.txt",
        "train_summary.json",
    ]
    # --overwrite: the earlier run's checkpoints and summary go; files not ours stay
    _train(tiny_model_dir, out, "--max_steps", "1", "--overwrite", "true")
    assert not (out / "checkpoint-9").exists() and (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "train_summary.json").read_text())["global_step"] == 1


def test_train_writes_a_loss_plot_and_a_model_card(tiny_model_dir, tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("HF_TOKEN", "")  # --hub_token moves there (training.setup); restored after
    secret = "hf_" + "a" * 30
    out = tmp_path / "run"
    summary = _train(
        tiny_model_dir, out, "--max_steps", "3", "--logging_steps", "1", "--hub_token", secret
    )
    # the plot is drawn from the Trainer's log rows: one loss per step, with its parts
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [row for row in state["log_history"] if "loss" in row]
    assert [row["step"] for row in losses] == [1, 2, 3]
    assert all("loss_rank" in row and "loss_sft" in row for row in losses)
    plot = Image.open(out / "training_loss.png")
    assert "loss_rank" in plot.info["Description"] and "loss_sft" in plot.info["Description"]
    card = (out / "README.md").read_text()
    assert f"from the local model `{tiny_model_dir}`" in card and "base_model:" not in card
    assert DATA in card and "read 24 rows" in card
    assert "## Loss: `rrhf`" in card and "| `rank_weight` | 1 |" in card
    assert "| `learning_rate` | 0.001 |" in card and "| `max_steps` | 3 |" in card
    assert f"| `train_loss` | {summary['train_loss']:.6g} |" in card
    assert "![training loss](training_loss.png)" in card
    assert "rankalign train --config" in card and "--hub_token <redacted>" in card
    assert secret not in card
    # the resolved configuration records the loss defaults used, not `null`
    used = yaml.safe_load((out / "rankalign_config.yaml").read_text())["rankalign"]
    assert used["rank_weight"] == 1.0 and used["sft_reduction"] == "sum" and used["beta"] is None


def test_model_card_names_the_embedded_model_by_its_hub_id():
    from rankalign.training.card import _base_model

    hub, text = _base_model("smollm2")
    assert hub == "HuggingFaceTB/SmolLM2-135M-Instruct" and "de-quantized" in text
    assert _base_model("org/model") == ("org/model", "`org/model`")
    assert _base_model("./runs/x")[0] is None


def test_scorer_choice(tiny_model_dir, capsys):
    """packed_prompt unset: decided once from the model and the data and says so; a given value,
    the naive scorer and activation checkpointing (always packed in steps) are left alone."""
    from rankalign.training.policy import choose_packed

    cfg, _ = parse_args(["--data", DATA, "--model", tiny_model_dir])
    assert cfg.packed_prompt is None
    short = [{"prompt_ids": [5] * 8, "response_ids": [[6] * 10, [7] * 12]}] * 4
    long = [{"prompt_ids": [5] * 64, "response_ids": [[6] * 256] * 8}] * 4
    assert choose_packed(cfg, tiny_model_dir, short, checkpointed=False) is True
    assert "each prompt shared packed into one sequence per list" in capsys.readouterr().err
    assert choose_packed(cfg, tiny_model_dir, long, checkpointed=False) is False
    assert "through the KV cache (packed_prompt unset" in capsys.readouterr().err
    assert choose_packed(cfg, tiny_model_dir, short, checkpointed=True) is False
    for given in (True, False):
        cfg, _ = parse_args(["--data", DATA, "--packed_prompt", str(given).lower()])
        assert (
            choose_packed(cfg, tiny_model_dir, long if given else short, checkpointed=False)
            is given
        )
    cfg, _ = parse_args(["--data", DATA, "--shared_prompt", "false", "--packed_prompt", "false"])
    assert choose_packed(cfg, tiny_model_dir, short, checkpointed=False) is False
    assert capsys.readouterr().err == ""
