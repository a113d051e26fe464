"""`rankalign sample` and its decoders, on tiny random models and real local HTTP servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml
from conftest import build_gpt2, build_llama

from rankalign import cli
from rankalign.decoding import (
    derive_seed,
    diverse_beam_search,
    filter_logits,
    left_pad,
    sample,
    truncate_at_stop,
)
from rankalign.remote import as_messages
from rankalign.sampling.config import SampleConfig
from rankalign.sampling.stage import build_row

PROMPTS = [
    "the movie was",
    "hello there, how are you",
    "Human: what is a good movie? Assistant:",
    "this is bad",
    "i",
    "the film was terrible and boring and",
]
EOS, PAD = 2, 0


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: threads only add overhead (and stall badly on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ids_of(tokenizer, texts=PROMPTS):
    return [tokenizer(t).input_ids for t in texts]


def eos_prone(model, factor: float):
    """Scale the EOS row of the LM head so that EOS is likely in some contexts (exercises EOS)."""
    with torch.no_grad():
        model.lm_head.weight[EOS] *= factor
    return model


def distinct_n(seqs: list[list[int]], n: int = 2) -> float:
    grams = [tuple(s[i : i + n]) for s in seqs for i in range(len(s) - n + 1)]
    return len(set(grams)) / max(len(grams), 1)


# ----------------------------------------------------------------------------- decoders


@pytest.mark.parametrize("build", [build_llama, build_gpt2])
def test_one_group_equals_transformers_beam_search(tokenizer, build):
    ids = ids_of(tokenizer)
    x, mask = left_pad(ids, PAD, "cpu")
    for seed, eos_factor in ((0, 1.0), (1, 7.0), (2, 9.0)):
        model = eos_prone(build(len(tokenizer), seed=seed), eos_factor)
        for beams, steps, lp in ((4, 12, 1.0), (3, 18, 0.5), (5, 10, 2.0)):
            ref = model.generate(
                input_ids=x,
                attention_mask=mask,
                num_beams=beams,
                do_sample=False,
                num_return_sequences=beams,
                max_new_tokens=steps,
                length_penalty=lp,
                eos_token_id=EOS,
                pad_token_id=PAD,
            )[:, x.shape[1] :].tolist()
            seqs, scores = diverse_beam_search(
                model,
                ids,
                num_beams=beams,
                max_new_tokens=steps,
                length_penalty=lp,
                eos_token_ids=[EOS],
                pad_token_id=PAD,
            )
            mine = [h for per_prompt in seqs for h in per_prompt]
            assert len(mine) == len(ref)
            for r, h in zip(ref, mine):  # same tokens; then EOS (unless at the limit) and padding
                assert r[: len(h)] == h
                assert len(h) == steps or r[len(h)] == EOS
                assert set(r[len(h) :]) <= {EOS, PAD}
            assert all(s == sorted(s, reverse=True) for s in scores)


def test_groups_are_more_diverse_than_plain_beam(tokenizer):
    ids = ids_of(tokenizer)
    model = build_llama(len(tokenizer), seed=0)
    common = {"num_beams": 4, "max_new_tokens": 16, "eos_token_ids": [EOS], "pad_token_id": PAD}
    plain, _ = diverse_beam_search(model, ids, **common)
    diverse, _ = diverse_beam_search(
        model, ids, num_beam_groups=4, diversity_penalty=1.0, temperature=0.8, **common
    )
    d_plain = sum(distinct_n(s) for s in plain) / len(ids)
    d_diverse = sum(distinct_n(s) for s in diverse) / len(ids)
    assert d_diverse > d_plain + 0.1, (d_plain, d_diverse)
    for hyps in diverse:  # the groups differ: different first tokens (Hamming penalty at step 1)
        assert len(hyps) == 4 and len({h[0] for h in hyps}) == 4
    one_step, _ = diverse_beam_search(
        model, ids, **{**common, "max_new_tokens": 1}, num_beam_groups=4, diversity_penalty=1.0
    )
    assert all(len({tuple(h) for h in hyps}) == 4 for hyps in one_step)  # also at the length limit
    # without a penalty, groups of one beam all follow the same greedy path
    same, _ = diverse_beam_search(model, ids, num_beam_groups=4, diversity_penalty=0.0, **common)
    assert all(len({tuple(h) for h in hyps}) == 1 for hyps in same)


def test_greedy_equals_transformers_greedy(tokenizer):
    model = eos_prone(build_llama(len(tokenizer), seed=3), 6.0)
    ids = ids_of(tokenizer)
    mine = sample(
        model,
        ids,
        num_return_sequences=1,
        max_new_tokens=12,
        seeds=[0] * len(ids),
        temperature=0,
        eos_token_ids=[EOS],
        pad_token_id=PAD,
    )
    for p, (got,) in zip(ids, mine):
        ref = model.generate(
            input_ids=torch.tensor([p]),
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=EOS,
            pad_token_id=PAD,
        )[0, len(p) :].tolist()
        assert got == [t for t in ref if t != EOS]


def test_sampling_follows_the_filtered_distribution(tokenizer):
    model = build_llama(len(tokenizer), seed=1)
    p = ids_of(tokenizer, ["the movie was"])[0]
    logits = model(torch.tensor([p])).logits[0, -1]
    n = 3000
    for top_k, top_p, temperature in ((5, 1.0, 0.7), (0, 0.5, 1.0)):
        probs = filter_logits(logits[None] / temperature, top_k, top_p).softmax(-1)[0]
        (draws,) = sample(
            model,
            [p],
            num_return_sequences=n,
            max_new_tokens=1,
            seeds=list(range(n)),
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
        )
        counts = torch.bincount(
            torch.tensor([d[0] if d else EOS for d in draws]), minlength=len(probs)
        )
        assert set(counts.nonzero()[:, 0].tolist()) <= set(probs.nonzero()[:, 0].tolist())
        # every token's frequency within 5 standard errors of its probability
        sigma = (probs * (1 - probs) / n).sqrt()
        assert ((counts / n - probs).abs() <= 5 * sigma + 1e-9).all(), (top_k, top_p)
        assert counts.count_nonzero() > 1


def test_sampling_seed_is_per_row_not_per_batch(tokenizer):
    model = build_llama(len(tokenizer), seed=0)
    ids = ids_of(tokenizer)
    seeds = list(range(100, 100 + 3 * len(ids)))
    kw = {
        "num_return_sequences": 3,
        "max_new_tokens": 16,
        "temperature": 1.0,
        "eos_token_ids": [EOS],
    }
    together = sample(model, ids, seeds=seeds, **kw)
    alone = [sample(model, [p], seeds=seeds[3 * i : 3 * i + 3], **kw)[0] for i, p in enumerate(ids)]
    reversed_batch = sample(
        model,
        ids[::-1],
        seeds=[s for i in reversed(range(len(ids))) for s in seeds[3 * i : 3 * i + 3]],
        **kw,
    )[::-1]
    assert together == alone == reversed_batch
    assert len({tuple(s) for row in together for s in row}) > 3 * len(ids) - 2  # seeds differ


# ----------------------------------------------------------------------------- helpers of the stage


def test_stop_truncation_and_duplicates_are_counted():
    assert (
        truncate_at_stop(" sure!\n\nHuman: and now?", ["\n\nHuman:", "\n\nAssistant:"]) == "sure!"
    )
    assert (
        truncate_at_stop("a\n\nAssistant: b\n\nHuman: c", ["\n\nHuman:", "\n\nAssistant:"]) == "a"
    )
    produced = [
        (
            "policy:x",
            [
                ("policy:x", "yes"),
                ("policy:x", " yes \n\nHuman: more"),
                ("policy:x", "\n\nHuman: hi"),
                ("policy:x", "no"),
            ],
        ),
        ("dataset", [("dataset:chosen", "no"), ("dataset:rejected", "maybe")]),
        ("openai:m(temp=1.0)", RuntimeError("down")),
    ]
    row = build_row(
        {"id": "a", "prompt": "q", "responses": ["no", "maybe"], "scores": [1.0, 0.0], "meta": 7},
        produced,
        ["\n\nHuman:"],
        truncated=False,
    )
    assert row["responses"] == ["yes", "no", "maybe"]
    assert row["sources"] == ["policy:x", "policy:x", "dataset:rejected"]
    assert "scores" not in row and row["meta"] == 7
    assert row["_stats"]["policy:x"] == {"generated": 4, "kept": 2, "duplicates": 1, "empty": 1}
    assert row["_stats"]["dataset:chosen"] == {"generated": 1, "duplicates": 1}
    assert row["_stats"]["openai:m(temp=1.0)"] == {"failed": 1}


def test_hh_prompt_becomes_chat_turns():
    hh = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: a movie?\n\nAssistant:"
    assert as_messages(hh) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "a movie?"},
    ]
    assert as_messages("plain") == [{"role": "user", "content": "plain"}]


@pytest.mark.parametrize(
    "preset, expected",
    [
        (
            "BP",
            [{"kind": "policy", "strategy": "beam", "num": 4, "num_beams": 4}, {"kind": "dataset"}],
        ),
        (
            "SP",
            [
                {
                    "kind": "policy",
                    "strategy": "sample",
                    "num": 4,
                    "top_p": 1.0,
                    "temperature": 0.8,
                },
                {"kind": "dataset"},
            ],
        ),
        (
            "DP",
            [
                {
                    "kind": "policy",
                    "strategy": "diverse-beam",
                    "num": 4,
                    "num_beams": 4,
                    "num_beam_groups": 4,
                    "diversity_penalty": 1.0,
                    "temperature": 0.8,
                },
                {"kind": "dataset"},
            ],
        ),
        (
            "D",
            [
                {
                    "kind": "policy",
                    "strategy": "diverse-beam",
                    "num": 4,
                    "num_beams": 4,
                    "num_beam_groups": 4,
                    "diversity_penalty": 1.0,
                    "temperature": 0.8,
                }
            ],
        ),
        ("P", [{"kind": "dataset"}]),
    ],
)
def test_presets_are_the_papers_settings(preset, expected):
    cfg = SampleConfig(prompts="p", out="o", preset=preset)
    assert cfg.max_new_tokens == 128 and cfg.stop == ["\n\nHuman:", "\n\nAssistant:"]
    got = [s.as_dict() for s in cfg.sources]
    assert [{k: d[k] for k in e} for d, e in zip(got, expected)] == expected and len(got) == len(
        expected
    )


def test_a_single_stop_string_is_a_list_of_one():
    assert SampleConfig(prompts="p", out="o", preset="P", stop="###").stop == ["###"]
    with pytest.raises(ValueError, match="list of strings"):
        SampleConfig(prompts="p", out="o", preset="P", stop=[1])


# ----------------------------------------------------------------------------- the command


@pytest.fixture
def hh_prompts(tmp_path):
    """HH-style pairwise rows: prompts plus the dataset's chosen / rejected ("P")."""
    path = tmp_path / "hh.jsonl"
    with open(path, "w") as f:
        for i in range(7):
            prompt = f"\n\nHuman: is the movie {i} good?" + " really" * (i % 3) + "\n\nAssistant:"
            f.write(
                json.dumps(
                    {
                        "id": f"hh-{i}",
                        "chosen": prompt + " yes, great",
                        "rejected": prompt + " no",
                        "split": "test",
                    }
                )
                + "\n"
            )
    return path


def run_cli(*args) -> int:
    return cli.main(["sample", *map(str, args)])


def read_rows(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_table1_settings_from_config_alone(tmp_path, hh_prompts, tiny_model_dir):
    for preset in ("BP", "SP", "DP", "D", "P"):
        out = tmp_path / preset / "cand.jsonl"
        config = tmp_path / f"{preset}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "prompts": str(hh_prompts),
                    "out": str(out),
                    "model": tiny_model_dir,
                    "preset": preset,
                    "max_new_tokens": 8,
                    "batch_size": 4,
                }
            )
        )
        assert run_cli("--config", config) == 0
        rows = read_rows(out)
        summary = json.loads((tmp_path / preset / "cand.summary.json").read_text())
        assert [r["id"] for r in rows] == [f"hh-{i}" for i in range(7)]
        assert all("scores" not in r and r["split"] == "test" for r in rows)
        policy = {k: v for k, v in summary["per_source"].items() if k.startswith("policy:")}
        if preset == "P":
            assert not policy
        else:
            ((label, counts),) = policy.items()
            assert label.startswith(
                {
                    "BP": "policy:beam(beams=4",
                    "SP": "policy:sample(top_p=1.0",
                    "DP": "policy:diverse-beam(beams=4,groups=4,penalty=1.0,temp=0.8",
                    "D": "policy:diverse-beam(",
                }[preset]
            )
            assert counts["generated"] == 4 * 7
            assert counts["kept"] + counts["duplicates_removed"] + counts["empty_removed"] == 28
        has_dataset = preset != "D"
        assert ("dataset:chosen" in summary["per_source"]) == has_dataset
        if has_dataset:
            assert all(
                r["responses"][-2:] == ["yes, great", "no"] or "no" in r["responses"] for r in rows
            )
        resolved = yaml.safe_load((tmp_path / preset / "cand.config.yaml").read_text())["sample"]
        assert resolved["preset"] is None and resolved["sources"][0]["kind"] in (
            "policy",
            "dataset",
        )


def test_overrides_and_extra_sources_from_flags(tmp_path, hh_prompts, tiny_model_dir):
    out = tmp_path / "c.jsonl"
    extra = json.dumps([{"kind": "policy", "strategy": "greedy", "num": 1, "name": "greedy"}])
    assert (
        run_cli(
            "--prompts",
            hh_prompts,
            "--out",
            out,
            "--model",
            tiny_model_dir,
            "--preset",
            "SP",
            "--num",
            2,
            "--sources",
            extra,
            "--max_new_tokens",
            6,
            "--stop",
            "e",
        )
        == 0
    )
    rows = read_rows(out)
    assert all(not any("e" in r for r in row["responses"]) for row in rows)  # stop string "e"
    summary = json.loads((tmp_path / "c.summary.json").read_text())
    assert summary["per_source"]["policy:sample(top_p=1.0,temp=0.8)"]["generated"] == 14
    assert summary["per_source"]["greedy"]["generated"] == 7


def test_seeded_sampling_does_not_depend_on_batching(tmp_path, hh_prompts, tiny_model_dir):
    outs = []
    for bs in (1, 3):
        out = tmp_path / f"bs{bs}.jsonl"
        assert (
            run_cli(
                "--prompts",
                hh_prompts,
                "--out",
                out,
                "--model",
                tiny_model_dir,
                "--preset",
                "SP",
                "--max_new_tokens",
                8,
                "--batch_size",
                bs,
                "--seed",
                7,
            )
            == 0
        )
        outs.append(read_rows(out))
    assert outs[0] == outs[1]
    out = tmp_path / "other-seed.jsonl"
    run_cli(
        "--prompts",
        hh_prompts,
        "--out",
        out,
        "--model",
        tiny_model_dir,
        "--preset",
        "SP",
        "--max_new_tokens",
        8,
        "--seed",
        8,
    )
    assert read_rows(out) != outs[0]


class ChatServer:
    """Local chat-completions server: answers with `reply(text, i)` for i < n."""

    def __init__(self, reply, fail_for: str | None = None):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = body["messages"][-1]["content"]
                if fail_for and fail_for in text:
                    self.send_response(500)
                    self.end_headers()
                    return
                data = json.dumps(
                    {
                        "choices": [
                            {"index": i, "message": {"content": reply(text, i)}}
                            for i in range(body.get("n", 1))
                        ]
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        outer.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        outer.url = f"http://127.0.0.1:{outer.httpd.server_address[1]}/v1"
        threading.Thread(target=outer.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_remote_source_stop_strings_duplicates_and_failures(tmp_path, hh_prompts):
    # replies: a cheat continuation to cut, a duplicate pair, an empty one
    replies = [
        "ok \n\nHuman: Is this helpful? \n\nAssistant: yes",
        "ok",
        "\n\nAssistant: x",
        "fine",
    ]
    server = ChatServer(lambda text, i: replies[i], fail_for="movie 3")
    try:
        src = {
            "kind": "openai",
            "model": "gpt-test",
            "base_url": server.url,
            "num": 4,
            "max_retries": 1,
            "backoff": 0.01,
            "timeout": 5.0,
        }
        common = ["--prompts", hh_prompts, "--preset", "P", "--sources", json.dumps([src])]
        out = tmp_path / "fail.jsonl"
        src["max_retries"] = 0
        assert run_cli(*common, "--out", out) == 2  # a failed prompt stops the run (resumable)
        assert not out.exists()
        out = tmp_path / "skip.jsonl"
        assert run_cli(*common, "--out", out, "--on_remote_error", "skip") == 0
    finally:
        server.close()
    rows = read_rows(out)
    label = "openai:gpt-test(temp=1.0)"
    assert rows[0]["responses"] == ["yes, great", "no", "ok", "fine"]
    assert rows[0]["sources"] == ["dataset:chosen", "dataset:rejected", label, label]
    assert rows[3]["responses"] == ["yes, great", "no"]  # its request failed: counted, not silent
    counts = json.loads((tmp_path / "skip.summary.json").read_text())["per_source"][label]
    assert counts == {
        "generated": 24,
        "kept": 12,
        "duplicates_removed": 6,
        "empty_removed": 6,
        "failed_prompts": 1,
    }


def subprocess_env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_kill_and_resume_gives_every_prompt_once(tmp_path, tiny_model_dir):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": f"q{i:03d}", "prompt": f"the movie {i} was"}) + "\n"
            for i in range(80)
        )
    )
    args = [
        "--prompts",
        prompts,
        "--model",
        tiny_model_dir,
        "--max_new_tokens",
        16,
        "--batch_size",
        1,
        "--shard_size",
        4,
        "--seed",
        3,
        "--stop",
        "\n\nHuman:",
        "--sources",
        "[{kind: policy, strategy: sample, num: 2, temperature: 1.0}]",
    ]
    out = tmp_path / "killed" / "c.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rankalign.cli", "sample", *map(str, args), "--out", str(out)],
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first_shard = out.with_name("c.jsonl.parts") / "shard-000000.jsonl"
    deadline = time.time() + 60
    while not first_shard.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first_shard.exists() and not out.exists(), "the run ended before it could be killed"
    assert run_cli(*args, "--out", out) == 0  # same command: resumes
    rows = read_rows(out)
    assert len(rows) == 80 and len({r["id"] for r in rows}) == 80
    assert [r["id"] for r in rows] == [f"q{i:03d}" for i in range(80)]
    assert not list(out.parent.glob("*.parts"))
    fresh = tmp_path / "fresh" / "c.jsonl"
    assert run_cli(*args, "--out", fresh) == 0
    assert read_rows(fresh) == rows
    summary = json.loads(out.with_name("c.summary.json").read_text())
    assert (
        sum(c["generated"] for c in summary["per_source"].values()) == 160
    )  # counts survive the kill


def test_two_processes_split_and_merge_in_order(tmp_path, tiny_model_dir):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "prompt": f"the film {i} was"}) + "\n" for i in range(20)
        )
    )
    args = [
        "--prompts",
        prompts,
        "--model",
        tiny_model_dir,
        "--max_new_tokens",
        8,
        "--batch_size",
        3,
        "--sources",
        "[{kind: policy, strategy: sample, num: 2}]",
    ]
    out = tmp_path / "dp" / "c.jsonl"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "rankalign.cli",
            "sample",
            *map(str, args),
            "--out",
            str(out),
        ],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    single = tmp_path / "single" / "c.jsonl"
    assert run_cli(*args, "--out", single) == 0
    assert read_rows(out) == read_rows(single)
    assert json.loads(out.with_name("c.summary.json").read_text())["processes"] == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "XP"], "unknown preset 'XP'"),
        (["--sources", "[{kind: policy, strategy: beam-ish}]"], "unknown strategy 'beam-ish'"),
        (
            ["--sources", "[{kind: policy, strategy: greedy, num: 4}]"],
            "greedy decoding gives one response",
        ),
        (
            [
                "--sources",
                "[{kind: policy, strategy: diverse-beam, num_beams: 4, num_beam_groups: 3}]",
            ],
            "must be divisible",
        ),
        (["--sources", "[{kind: policy, colour: red}]"], "sources[0]: unknown key 'colour'"),
        (["--sources", "[{kind: openai, model: m}]"], "needs `model` and `base_url`"),
        (["--sources", "{not yaml"], "sources, line 1: invalid YAML"),
        (["--sources", "[{kind: policy, top_p: 0}]"], "field 'top_p': must be in (0, 1], got 0"),
        (["--preset", "D", "--gpu_memory_utilization", "0"], "must be in (0, 1], got 0.0"),
        ([], "nothing to sample"),
        (["--preset", "P", "--prompts", "missing.jsonl"], "file not found"),
        (["--preset", "D", "--backend", "vllm"], "needs the vllm package"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(
    tmp_path, hh_prompts, tiny_model_dir, capsys, monkeypatch, args, message
):
    base = ["--prompts", hh_prompts, "--out", tmp_path / "o.jsonl", "--model", tiny_model_dir]
    if "--prompts" in args:
        base = base[2:]
    # vllm absent whether or not it is installed (a skip would hide the refusal's regression)
    monkeypatch.setitem(sys.modules, "vllm", None)
    assert run_cli(*base, *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_existing_output_and_changed_settings_are_refused(tmp_path, hh_prompts, capsys):
    out = tmp_path / "o.jsonl"
    assert run_cli("--prompts", hh_prompts, "--out", out, "--preset", "P") == 0
    assert run_cli("--prompts", hh_prompts, "--out", out, "--preset", "P") == 2
    assert "output exists" in capsys.readouterr().err
    assert (
        run_cli("--prompts", hh_prompts, "--out", out, "--preset", "P", "--overwrite", "true") == 0
    )
    # a partial run (shards left by a kill) resumes only with the same settings
    parts = tmp_path / "p.jsonl.parts"
    parts.mkdir()
    (parts / "shard-000000.jsonl").write_text(json.dumps(read_rows(out)[0] | {"_stats": {}}) + "\n")
    (parts / "run.json").write_text('{"hash": "something-else"}\n')
    assert run_cli("--prompts", hh_prompts, "--out", tmp_path / "p.jsonl", "--preset", "P") == 2
    assert "partial run with other settings" in capsys.readouterr().err


def test_vllm_backend_requests_and_answers(tmp_path, monkeypatch, tiny_model_dir):
    """`backend: vllm` against a stand-in vLLM (tests/fake_vllm: vLLM needs a GPU): engine
    settings passed through, one seeded request per sample, answers back to their prompts."""
    for name in ("vllm", "vllm.sampling_params"):  # forgotten after the test
        monkeypatch.setitem(sys.modules, name, None)
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "fake_vllm"))
    import vllm

    vllm.CREATED.clear()
    prompts = tmp_path / "p.jsonl"
    ids = ["a", "b", "c"]
    prompts.write_text("".join(json.dumps({"id": i, "prompt": f"tell me {i}"}) + "\n" for i in ids))
    out = tmp_path / "c.jsonl"
    sources = "[{kind: policy, strategy: sample, num: 3, temperature: 0.7}, {kind: policy, strategy: beam, num: 2, num_beams: 4}]"
    assert (
        run_cli(
            "--prompts",
            prompts,
            "--model",
            tiny_model_dir,
            "--out",
            out,
            "--sources",
            sources,
            "--backend",
            "vllm",
            "--tensor_parallel_size",
            2,
            "--seed",
            5,
        )
        == 0
    )
    [engine] = vllm.CREATED  # one engine for both sources of the same model
    assert engine["tensor_parallel_size"] == 2 and engine["gpu_memory_utilization"] == 0.9
    assert engine["seed"] == 5 and engine["trust_remote_code"] is False
    rows = read_rows(out)
    assert [r["id"] for r in rows] == ids
    for row in rows:
        sampled = [r for r, s in zip(row["responses"], row["sources"]) if "sample" in s]
        beams = [r for r, s in zip(row["responses"], row["sources"]) if "beam" in s]
        seeds = [derive_seed(5, 0, row["id"], j) for j in range(3)]
        assert [r.split()[1] for r in sampled] == [f"seed{s}" for s in seeds]
        assert all(r.endswith("t0.7") for r in sampled)
        assert beams == ["beam0", "beam1"]  # the prompt's tokens cut off, the best `num` kept
    with pytest.raises(ValueError, match="tensor_parallel_size > 1 needs backend: vllm"):
        SampleConfig(prompts=str(prompts), out=str(out), preset="SP", tensor_parallel_size=2)


def test_prompts_are_encoded_as_the_model_was_trained(tmp_path, tiny_model_dir, tokenizer):
    """A model trained by rankalign records its chat_template mode; sample (and evaluate, which
    generates through the same policy class) use it unless --chat_template is given."""
    import shutil

    from rankalign.sampling.backends import load_policy

    trained = tmp_path / "trained"
    shutil.copytree(tiny_model_dir, trained)
    (trained / "rankalign_config.yaml").write_text("rankalign:\n  chat_template: never\n")
    greedy = [{"kind": "policy", "strategy": "greedy", "num": 1}]

    def policy(model, **kw):
        cfg = SampleConfig(
            prompts="p.jsonl", out=str(tmp_path / "o.jsonl"), model=model, sources=greedy, **kw
        )
        return load_policy(model, cfg, "cpu")

    prompt = "hello there"
    raw = tokenizer(prompt).input_ids
    assert policy(str(trained)).chat_template == "never"
    assert policy(str(trained)).encode(prompt)[0] == raw
    assert policy(str(trained), chat_template="always").chat_template == "always"
    base = policy(tiny_model_dir)  # not trained here: auto, and its template applies
    assert base.chat_template == "auto"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    assert base.encode(prompt)[0] == tokenizer(text, add_special_tokens=False).input_ids
