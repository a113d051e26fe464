"""Two training processes on CPU (gloo) through `accelerate launch`, as DDP and as FSDP2 full
shard, equal one process with the same global batch (issue 9): the reference precompute and the
shared-prompt scorer included."""

from __future__ import annotations

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


def _args(model_dir, out, batch):
    return [
        "train",
        "--model",
        model_dir,
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
    ]


@pytest.mark.skipif(
    shutil.which("accelerate") is None
    and not Path(sys.executable).with_name("accelerate").exists(),
    reason="accelerate CLI not installed",
)
@pytest.mark.parametrize("config", ["cpu-2proc.yaml", "fsdp-cpu-2proc.yaml"], ids=["ddp", "fsdp"])
def test_two_cpu_processes_equal_one(tiny_model_dir, tmp_path, config):
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
            *_args(tiny_model_dir, tmp_path / "two", 2),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, "-m", "rankalign.cli", *_args(tiny_model_dir, tmp_path / "one", 4)],
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
