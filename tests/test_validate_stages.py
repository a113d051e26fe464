"""Validate, then write: `rankalign sample | score | loop | demo` refuse bad options, bad input
rows, bad model folders and unwritable outputs before they write anything.

Each refusal goes through the real `rankalign.cli.main`: exit code 2, exactly one stderr line
`rankalign CMD: error: ...` naming the file / field, no traceback, and no file or folder created
anywhere under the test's tmp dir (the outputs would all land there).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from rankalign.cli import main

CANDIDATES = [
    {"id": "c1", "prompt": "the movie was", "responses": [" great", " bad and boring"]},
    {"id": "c2", "prompt": "hello there", "responses": [" fine thanks", " go away"]},
]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def files(tmp_path):
    """Inputs (good and bad) under tmp_path; every output of the cases lands under tmp_path."""
    f = {}
    f["prompts"] = write_jsonl(
        tmp_path / "prompts.jsonl",
        [{"id": f"p{i}", "prompt": p} for i, p in enumerate(["the movie was", "i think", "hi"])],
    )
    f["bad_prompts"] = write_jsonl(
        tmp_path / "bad_prompts.jsonl",
        [{"id": "p0", "prompt": "the movie was"}, {"id": "p1", "prompt": 5}],
    )
    f["broken_prompts"] = write_jsonl(
        tmp_path / "broken_prompts.jsonl",
        [{"id": "p0", "prompt": "ok"}, {"id": "p1", "prompt": "fine"}, '{"id": "p2", "prompt": '],
    )
    f["candidates"] = write_jsonl(tmp_path / "candidates.jsonl", CANDIDATES)
    f["bad_candidates"] = write_jsonl(
        tmp_path / "bad_candidates.jsonl",
        [CANDIDATES[0], {"id": "c2", "prompt": "hello", "responses": "not a list"}],
    )
    f["demo_prompts"] = write_jsonl(
        tmp_path / "demo_prompts.jsonl",
        [
            {"id": "t0", "prompt": "a movie", "split": "train"},
            {"id": "h0", "prompt": "a film", "split": "heldout"},
        ],
    )
    f["bad_demo_prompts"] = write_jsonl(
        tmp_path / "bad_demo_prompts.jsonl",
        [
            {"id": "t0", "prompt": "a movie", "split": "train"},
            {"id": "t1", "prompt": [{"role": "usr", "content": "x"}], "split": "train"},
        ],
    )
    f["no_config_model"] = tmp_path / "empty_model"
    f["no_config_model"].mkdir()
    broken = tmp_path / "broken_model"  # a config, and weights whose header lies
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    (broken / "model.safetensors").write_bytes((10**9).to_bytes(8, "little") + b"{}")
    f["broken_model"] = broken
    f["a_file"] = tmp_path / "a_file"
    f["a_file"].write_text("not a folder\n")
    f["a_dir"] = tmp_path / "a_dir"
    f["a_dir"].mkdir()
    return f


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def refused(tmp_path, capfd, cmd: str, argv: list, *expect: str) -> str:
    capfd.readouterr()
    before = listing(tmp_path)
    rc = main([cmd, *map(str, argv)])
    out, err = capfd.readouterr()
    assert rc == 2, f"exit {rc}; stderr:\n{err[-3000:]}"
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{err[-3000:]}"
    line = lines[0]
    assert line.startswith(f"rankalign {cmd}: error:"), line
    for fragment in expect:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert listing(tmp_path) == before, "a refused run wrote something"
    return line


def config_file(tmp_path: Path, name: str, values: dict) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


# ----------------------------------------------------------------------------- sample

SOURCES = "[{kind: policy, strategy: sample, num: 2}]"


def sample_args(files, tmp_path, tiny_model_dir, **over) -> list:
    opts = {
        "prompts": files["prompts"],
        "out": tmp_path / "run" / "sub" / "cands.jsonl",
        "model": tiny_model_dir,
        "sources": SOURCES,
        "max_new_tokens": 4,
    } | over
    return [a for k, v in opts.items() if v is not None for a in (f"--{k}", v)]


@pytest.mark.parametrize(
    "over, expect",
    [
        ({"batch_size": 0}, ["field 'batch_size'", ">= 1"]),
        ({"max_new_tokens": -3}, ["field 'max_new_tokens'"]),
        ({"shard_size": 2.5}, ["--shard_size", "2.5"]),
        ({"gpu_memory_utilization": "nan"}, ["field 'gpu_memory_utilization'", "finite"]),
        ({"max_rows": 0}, ["field 'max_rows'"]),
        ({"chat_template": "sometimes"}, ["chat_template"]),
        ({"device": "gpu7"}, ["field 'device'", "gpu7"]),
        ({"sources": "[{kind: policy, num: 0}]"}, ["sources[0]", "'num'", ">= 1"]),
        ({"sources": "[{kind: policy, num: 2.5}]"}, ["sources[0]", "'num'", "integer"]),
        ({"sources": "[{kind: policy, temperature: .nan}]"}, ["sources[0]", "finite"]),
        ({"sources": "[{kind: policy, top_p: 1.5}]"}, ["sources[0]", "'top_p'"]),
        ({"sources": "[{kind: policy, top_k: -1}]"}, ["sources[0]", "'top_k'"]),
        ({"sources": "[{kind: policy, num: [1, 2]}]"}, ["sources[0]", "'num'"]),
        (
            {"sources": "[{kind: openai, model: m, base_url: ftp://x, num: 1}]"},
            ["sources[0]", "base_url"],
        ),
        (
            {"sources": "[{kind: openai, model: m, base_url: 'http://x', concurrency: 0}]"},
            ["sources[0]", "'concurrency'"],
        ),
        (  # read like a config file: no aliases (a few lines expand to billions of nodes)
            {"sources": "[&a [1, 2, 3], &b [*a, *a, *a], &c [*b, *b, *b], *c]"},
            ["sources, line 1", "aliases"],
        ),
        ({"sources": "[{kind: policy, kind: dataset}]"}, ["sources", "duplicate key 'kind'"]),
        (
            {"sources": "[{kind: policy, top_p: 0}]"},
            ["sources[0]", "field 'top_p': must be in (0, 1]"],
        ),
        ({"gpu_memory_utilization": 0}, ["field 'gpu_memory_utilization'", "(0, 1]"]),
    ],
)
def test_sample_refuses_bad_options(files, tmp_path, tiny_model_dir, capfd, over, expect):
    refused(
        tmp_path, capfd, "sample", sample_args(files, tmp_path, tiny_model_dir, **over), *expect
    )


@pytest.mark.parametrize(
    "values, expect",
    [
        ({"batch_size": 2.5}, ["field 'batch_size'", "integer"]),
        ({"shard_size": 0}, ["field 'shard_size'", ">= 1"]),
        ({"max_prompt_length": -1}, ["field 'max_prompt_length'"]),
        ({"gpu_memory_utilization": float("inf")}, ["field 'gpu_memory_utilization'"]),
        ({"seed": "abc"}, ["seed"]),
        ({"sources": [{"kind": "policy", "num": 2.5}]}, ["sources[0]", "'num'"]),
        ({"sources": [{"kind": "policy", "diversity_penalty": -1.0}]}, ["sources[0]"]),
        ({"sources": [{"kind": "policy", "max_new_tokens": 0}]}, ["'max_new_tokens'"]),
        ({"sources": [{"kind": "dataset", "columns": [["a"]]}]}, ["sources[0]", "columns"]),
    ],
)
def test_sample_refuses_bad_yaml_options(files, tmp_path, tiny_model_dir, capfd, values, expect):
    base = {
        "prompts": str(files["prompts"]),
        "out": str(tmp_path / "run" / "cands.jsonl"),
        "model": tiny_model_dir,
        "sources": [{"kind": "policy", "strategy": "sample", "num": 2}],
    }
    config = config_file(tmp_path, "sample.yaml", base | values)
    refused(tmp_path, capfd, "sample", ["--config", config], *expect)


def test_sample_refuses_bad_rows_models_and_outputs(files, tmp_path, tiny_model_dir, capfd):
    def args(**over):
        return sample_args(files, tmp_path, tiny_model_dir, **over)

    # (b) a bad row anywhere in the prompts (checked before the model is loaded)
    refused(
        tmp_path, capfd, "sample", args(prompts=files["bad_prompts"]),
        "bad_prompts.jsonl", "line 2", "field 'prompt'",
    )  # fmt: skip
    refused(
        tmp_path, capfd, "sample", args(prompts=files["broken_prompts"]),
        "broken_prompts.jsonl", "line 3",
    )  # fmt: skip
    # (c) the policy's folder, and another source's model
    refused(
        tmp_path, capfd, "sample", args(model=files["no_config_model"]),
        "empty_model", "config.json",
    )  # fmt: skip
    other = f"[{{kind: policy, num: 1, strategy: greedy, model: {files['broken_model']}}}]"
    refused(tmp_path, capfd, "sample", args(sources=other), "broken_model", "safetensors")
    # (d) outputs that cannot be written
    refused(
        tmp_path, capfd, "sample", args(out=files["a_file"] / "sub" / "c.jsonl"),
        "a_file", "is a file",
    )  # fmt: skip
    refused(tmp_path, capfd, "sample", args(out=files["a_dir"]), "a_dir", "is a folder")
    side = tmp_path / "cands.config.yaml"
    side.mkdir()
    refused(tmp_path, capfd, "sample", args(out=tmp_path / "cands.jsonl"), "cands.config.yaml")


def test_sample_dataset_only_refuses_bad_output_without_a_model(files, tmp_path, capfd):
    refused(
        tmp_path, capfd, "sample",
        ["--prompts", files["candidates"], "--preset", "P", "--out", files["a_file"] / "c.jsonl"],
        "is a file",
    )  # fmt: skip


# ----------------------------------------------------------------------------- score


def score_args(files, tmp_path, *rewards, **over) -> list:
    opts = {"in": files["candidates"], "out": tmp_path / "run" / "scored.jsonl"} | over
    argv = [a for k, v in opts.items() for a in (f"--{k}", v)]
    for r in rewards or ("length:lambda=0.1",):
        argv += ["--reward", r]
    return argv


@pytest.mark.parametrize(
    "over, rewards, expect",
    [
        ({"batch_size": 0}, (), ["field 'batch_size'"]),
        ({"shard_size": -1}, (), ["field 'shard_size'"]),
        ({"max_length": 1}, (), ["field 'max_length'", ">= 2"]),
        ({"max_rows": 0}, (), ["field 'max_rows'"]),
        ({"batch_size": 2.5}, (), ["--batch_size", "2.5"]),
        ({"device": "tpu9"}, (), ["field 'device'"]),
        ({"empty_responses": "keep"}, (), ["empty_responses"]),
        ({}, ("length:lambda=-1",), ["'lambda' must be >= 0", "field 'reward'"]),
        ({}, ("length:lambda=nan",), ["'lambda'", "finite"]),
        ({}, ("length:lambda=1,unit=words",), ["'unit'", "chars"]),
        ({}, ("sentiment", "rm:./x,batch_size=0"), ["'batch_size' must be >= 1", "reward[1]"]),
        ({}, ("rm:./x,batch_size=2.5",), ["'batch_size'", "integer"]),
        ({}, ("judge:model=m,base_url=http://x,concurrency=0",), ["'concurrency'"]),
        ({}, ("judge:model=m,base_url=http://x,min=5,max=1",), ["'min' must be below 'max'"]),
        ({}, ("judge:model=m,mode=several",), ["'mode'"]),
        ({}, ("sentiment", "sentiment"), ["two rewards are named 'sentiment'"]),
    ],
)
def test_score_refuses_bad_options(files, tmp_path, capfd, over, rewards, expect):
    refused(tmp_path, capfd, "score", score_args(files, tmp_path, *rewards, **over), *expect)


@pytest.mark.parametrize(
    "values, expect",
    [
        ({"batch_size": 2.5}, ["score.yaml", "field 'batch_size'", "integer"]),
        ({"shard_size": 0}, ["field 'shard_size'"]),
        ({"max_length": float("nan")}, ["field 'max_length'"]),
        ({"reward": [{"kind": "length", "lambda": [1, 2]}]}, ["'lambda'", "single value"]),
        ({"reward": [{"kind": "length", "lambda": {"a": 1}}]}, ["'lambda'", "single value"]),
        ({"reward": [["length:lambda=1"]]}, ["field 'reward'", "got list"]),
        ({"reward": [{"kind": "rm", "path": "./x", "batch_size": 2.5}]}, ["'batch_size'"]),
        ({"reward": [{"kind": "length", "lambda": 1, 7: "x"}]}, ["keys are option names"]),
        ({"reward": [{"kind": ["length"]}]}, ["field 'reward'"]),
        ({"reward": [5]}, ["field 'reward'", "int"]),
    ],
)
def test_score_refuses_bad_yaml_options(files, tmp_path, capfd, values, expect):
    base = {"input": str(files["candidates"]), "out": str(tmp_path / "run" / "scored.jsonl")}
    config = config_file(tmp_path, "score.yaml", base | {"reward": ["length:lambda=0.1"]} | values)
    refused(tmp_path, capfd, "score", ["--config", config], *expect)


def test_score_reward_mapping_alias_bomb_is_refused_quickly(files, tmp_path, capfd):
    """A YAML alias bomb in a reward mapping: refused (by the YAML reader or by the spec check),
    never expanded by str()."""
    config = tmp_path / "bomb.yaml"
    # 9 ** 9 leaves once expanded: every level an alias of the one before
    body = ["reward:", "  - kind: length", "    lambda: 1", "    nested:"]
    body.append("      - &l0 [x, x, x, x, x, x, x, x, x]")
    for i in range(1, 9):
        body.append(f"      - &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    config.write_text(
        f"input: {files['candidates']}\nout: {tmp_path / 'run' / 's.jsonl'}\n" + "\n".join(body)
    )
    line = refused(tmp_path, capfd, "score", ["--config", config])
    assert "reward" in line or "bomb.yaml" in line, line


def test_score_refuses_bad_rows_models_and_outputs(files, tmp_path, capfd):
    def args(*rewards, **over):
        return score_args(files, tmp_path, *rewards, **over)

    # (b) a bad row
    refused(
        tmp_path, capfd, "score", args(**{"in": files["bad_candidates"]}),
        "bad_candidates.jsonl", "line 2", "field 'responses'",
    )  # fmt: skip
    # (c) reward models: no config.json, corrupt weights, a tokenizer folder
    refused(
        tmp_path, capfd, "score", args(f"rm:{files['no_config_model']}"),
        "empty_model", "config.json",
    )  # fmt: skip
    refused(
        tmp_path, capfd, "score", args("sentiment", f"policy-logprob:{files['broken_model']}"),
        "broken_model", "safetensors",
    )  # fmt: skip
    refused(
        tmp_path, capfd, "score",
        args(f"length:lambda=1,unit=tokens,tokenizer={files['no_config_model']}"),
        "empty_model",
    )  # fmt: skip
    refused(
        tmp_path, capfd, "score", args(f"python:{tmp_path / 'no_such.py'}:f"), "no_such.py",
    )  # fmt: skip
    # (d) outputs
    refused(
        tmp_path, capfd, "score", args(out=files["a_file"] / "scored.jsonl"), "a_file", "is a file"
    )
    refused(tmp_path, capfd, "score", args(out=files["a_dir"]), "a_dir", "is a folder")


# ----------------------------------------------------------------------------- loop


def loop_config(files, tmp_path, tiny_model_dir, **over) -> Path:
    cfg = {
        "prompts": str(files["prompts"]),
        "out": str(tmp_path / "run" / "loop"),
        "model": tiny_model_dir,
        "iterations": 1,
        "num_samples": 2,
        "max_new_tokens": 4,
        "reward": ["length:lambda=0.01"],
        "batch_size": 2,
        "max_length": 64,
    } | over
    return config_file(tmp_path, "loop.yaml", {k: v for k, v in cfg.items() if v is not None})


@pytest.mark.parametrize(
    "flags, expect",
    [
        (["--iterations", "0"], ["field 'iterations'", ">= 1"]),
        (["--temperature", "0"], ["field 'temperature'", "> 0"]),
        (["--top_p", "1.5"], ["field 'top_p'"]),
        (["--top_p", "0"], ["field 'top_p'", "must be in (0, 1], got 0.0"]),
        (["--num_samples", "2.5"], ["--num_samples", "2.5"]),
        (["--kl_coef", "nan"], ["field 'kl_coef'", "finite"]),
        (["--learning_rate", "-1"], ["field 'learning_rate'"]),
        (["--builder", "best-worst", "--num_samples", "1"], ["num_samples >= 2"]),
        (["--strategy", "greedy"], ["sample stage", "greedy"]),
        (["--loss", "rhff"], ["train stage", "rhff"]),
        (["--train_args=--no_such_flag"], ["train stage", "--no_such_flag"]),
        (["--reward", "length:lambda=-2"], ["'lambda' must be >= 0"]),
        (["--reward", "bogus"], ["unknown reward kind"]),
    ],
)
def test_loop_refuses_bad_options(files, tmp_path, tiny_model_dir, capfd, flags, expect):
    config = loop_config(files, tmp_path, tiny_model_dir)
    refused(tmp_path, capfd, "loop", ["--config", config, *flags], *expect)


@pytest.mark.parametrize(
    "values, expect",
    [
        ({"iterations": 2.5}, ["loop.yaml", "field 'iterations'", "integer"]),
        ({"num_samples": 0, "builder": "raft"}, ["field 'num_samples'"]),
        ({"max_new_tokens": -1}, ["field 'max_new_tokens'"]),
        ({"epochs": float("inf")}, ["field 'epochs'"]),
        ({"rso_beta": 0}, ["field 'rso_beta'"]),
        ({"prompts_per_iteration": 0}, ["field 'prompts_per_iteration'"]),
        ({"reward": [{"kind": "length", "lambda": 1}]}, ["field 'reward[0]'", "spec strings"]),
        ({"train_args": ["--max_grad_norm", "-1"]}, ["train stage", "max_grad_norm"]),
        ({"train_args": ["--lr_scheduler_type", "zigzag"]}, ["train stage", "zigzag"]),
    ],
)
def test_loop_refuses_bad_yaml_options(files, tmp_path, tiny_model_dir, capfd, values, expect):
    config = loop_config(files, tmp_path, tiny_model_dir, **values)
    refused(tmp_path, capfd, "loop", ["--config", config], *expect)


def test_loop_refuses_bad_rows_models_and_outputs(files, tmp_path, tiny_model_dir, capfd):
    def run(*expect, **over):
        config = loop_config(files, tmp_path, tiny_model_dir, **over)
        refused(tmp_path, capfd, "loop", ["--config", config], *expect)
        config.unlink()

    # (b) prompts, held-out prompts, offline data
    run("bad_prompts.jsonl", "line 2", "field 'prompt'", prompts=str(files["bad_prompts"]))
    run("broken_prompts.jsonl", "line 3", heldout=str(files["broken_prompts"]))
    run("candidates.jsonl", "line 1", "field 'scores'", offline_data=str(files["candidates"]))
    # (c) the initial policy, a reward model
    run("empty_model", "config.json", model=str(files["no_config_model"]))
    run("broken_model", "safetensors", model=str(files["broken_model"]))
    run("empty_model", reward=[f"rm:{files['no_config_model']}"])
    # (d) the run folder
    run("a_file", "is a file", out=str(files["a_file"] / "loop"))
    run("a_file", "not a folder", out=str(files["a_file"]))


# ----------------------------------------------------------------------------- demo


def demo_args(files, tmp_path, tiny_model_dir, *flags) -> list:
    base = ["--out", tmp_path / "run" / "demo", "--model", tiny_model_dir, "--quick", "true"]
    return [*base, "--prompts", files["demo_prompts"], *flags]


@pytest.mark.parametrize(
    "flags, expect",
    [
        (["--train_prompts", "0"], ["field 'train_prompts'"]),
        (["--epochs", "nan"], ["field 'epochs'", "finite"]),
        (["--learning_rate", "0"], ["field 'learning_rate'"]),
        (["--batch_size", "-2"], ["field 'batch_size'"]),
        (["--max_new_tokens", "1.5"], ["--max_new_tokens", "1.5"]),
        (["--sft_reduction", "median"], ["sft_reduction"]),
        (["--reward", "bogus"], ["unknown reward kind"]),
        (["--reward", "length:lambda=-1"], ["'lambda'"]),
    ],
)
def test_demo_refuses_bad_options(files, tmp_path, tiny_model_dir, capfd, flags, expect):
    refused(tmp_path, capfd, "demo", demo_args(files, tmp_path, tiny_model_dir, *flags), *expect)


def test_demo_refuses_bad_yaml_rows_models_and_outputs(files, tmp_path, tiny_model_dir, capfd):
    args = demo_args(files, tmp_path, tiny_model_dir)
    # (a) through a config file
    config = config_file(tmp_path, "demo.yaml", {"batch_size": 2.5, "heldout_prompts": 0})
    refused(tmp_path, capfd, "demo", [*args, "--config", config], "demo.yaml", "field '")
    # (b) a bad row
    refused(
        tmp_path, capfd, "demo", [*args, "--prompts", files["bad_demo_prompts"]],
        "bad_demo_prompts.jsonl", "line 2", "field 'prompt'",
    )  # fmt: skip
    # (c) the model
    refused(
        tmp_path, capfd, "demo", [*args, "--model", files["no_config_model"]],
        "empty_model", "config.json",
    )  # fmt: skip
    # (d) the output folder
    refused(
        tmp_path, capfd, "demo", [*args, "--out", files["a_file"] / "demo"], "a_file", "is a file"
    )
