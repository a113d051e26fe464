"""Two training processes on CPU (gloo) through `accelerate launch`, as DDP, FSDP2 full shard,
DeepSpeed ZeRO-2 and ZeRO-3, equal one process with the same global batch (issue 9): the sharded
reference precompute, the shared-prompt scorer and the logged per-step metrics included."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).parents[1]
DATA = str(ROOT / "examples" / "data" / "tiny_lists.jsonl")


NEEDS_DEEPSPEED = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="deepspeed not installed"
)


LORA = ["--use_lora", "true", "--lora_dropout", "0", "--learning_rate", "1e-2"]


@pytest.fixture(scope="module")
def ref_model_dir(tmp_path_factory, tokenizer):
    """A reference other than the initial policy. With the policy as its own reference every
    implicit reward starts at exactly 0, so the first step's rank accuracy compares float noise
    (p_w > p_l at ties) and differs between machines and process counts."""
    from conftest import build_llama

    path = tmp_path_factory.mktemp("tiny-ref")
    build_llama(len(tokenizer), seed=1).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _min_pair_margin(model_dir, ref_dir, tokenizer) -> float:
    """The smallest |implicit-reward difference| over every preference pair of the data at the
    initial weights: the first logged step's rank accuracy is well defined when it is clear of
    float noise."""
    from rankalign import losses as L
    from rankalign.logprobs import compute_logps
    from rankalign.models import load_causal_lm
    from rankalign.training.config import TrainConfig
    from rankalign.training.datasets import tokenize_lists

    data, _ = tokenize_lists(DATA, tokenizer, TrainConfig(data=DATA, loss="dpo"), min_responses=2)
    policy, ref = (
        compute_logps(load_causal_lm(m), data, tokenizer.pad_token_id, 8, True)
        for m in (model_dir, ref_dir)
    )
    margin = float("inf")
    for item, lp, rp in zip(data.items, policy, ref):
        r = torch.tensor(lp, dtype=torch.float64) - torch.tensor(rp, dtype=torch.float64)
        s = torch.tensor(item["scores"])
        pairs = L.preference_pairs(s[None], torch.ones_like(s, dtype=torch.bool)[None], "all")[0]
        margin = min(margin, float((r[:, None] - r[None, :])[pairs].abs().min()))
    return margin


def _args(model_dir, out, batch, extra, ref_dir):
    return [
        "train",
        "--model",
        model_dir,
        "--ref_model",
        ref_dir,
        "--data",
        DATA,
        "--loss",
        "dpo",
        "--output_dir",
        str(out),
        "--max_steps",
        "3",
        "--per_device_train_batch_size",
        str(batch),
        "--learning_rate",
        "1e-3",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "true",
        "--seed",
        "1",
        # 24 lists in 5 batches: the two processes' reference shares are uneven (3 and 2)
        "--per_device_eval_batch_size",
        "5",
        *extra,
    ]


@pytest.mark.skipif(
    shutil.which("accelerate") is None
    and not Path(sys.executable).with_name("accelerate").exists(),
    reason="accelerate CLI not installed",
)
@pytest.mark.parametrize(
    "config, extra",
    [
        ("cpu-2proc.yaml", []),
        ("cpu-2proc.yaml", ["--packed_prompt", "true"]),
        ("fsdp-cpu-2proc.yaml", []),
        pytest.param("deepspeed-zero2-cpu-2proc.yaml", [], marks=NEEDS_DEEPSPEED),
        pytest.param("deepspeed-zero3-cpu-2proc.yaml", [], marks=NEEDS_DEEPSPEED),
        # LoRA's adapters are sharded too; the saved model is merged from the gathered adapter
        pytest.param("deepspeed-zero3-cpu-2proc.yaml", LORA, marks=NEEDS_DEEPSPEED),
    ],
    ids=["ddp", "ddp-packed", "fsdp", "zero2", "zero3", "zero3-lora"],
)
def test_two_cpu_processes_equal_one(tiny_model_dir, ref_model_dir, tmp_path, config, extra):
    # one thread per process: two processes on 2 cores must not oversubscribe them
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    two = subprocess.run(
        [
            accelerate,
            "launch",
            "--config_file",
            str(ROOT / "configs" / "accelerate" / config),
            "-m",
            "rankalign.cli",
            *_args(tiny_model_dir, tmp_path / "two", 2, extra, ref_model_dir),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "rankalign.cli",
            *_args(tiny_model_dir, tmp_path / "one", 4, extra, ref_model_dir),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    init = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    assert any(not torch.equal(a[k], init[k]) for k in a)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)
    print(config, "max |two - one| =", max(float((b[k] - a[k]).abs().max()) for k in a))
    # the logged per-step metrics pool both processes' batches: the same as one process's
    logs = [
        json.loads((tmp_path / r / "trainer_state.json").read_text())["log_history"]
        for r in ("one", "two")
    ]
    steps = [[e for e in log if "loss_rank" in e] for log in logs]
    assert len(steps[0]) == len(steps[1]) == 3
    for e1, e2 in zip(*steps):
        assert e2["num_pairs"] == e1["num_pairs"]
        for key in ("loss_rank", "reward_margin", "loss"):
            assert e2[key] == pytest.approx(e1[key], abs=1e-5), key
    # rank accuracy is a count of p_w > p_l: compared only where no pair is near a tie, the
    # first step (the initial weights, whose margins are measured here); later steps' weights
    # are compared above to 1e-6
    assert _min_pair_margin(tiny_model_dir, ref_model_dir, _tokenizer(tiny_model_dir)) > 1e-4
    assert steps[1][0]["rank_accuracy"] == pytest.approx(steps[0][0]["rank_accuracy"], abs=1e-6)


def _tokenizer(model_dir):
    from rankalign.models import load_tokenizer

    return load_tokenizer(model_dir)
