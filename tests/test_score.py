"""`rankalign score`: reward specs, every offline reward kind, weights, summary, resume, errors."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import build_llama

from rankalign import cli
from rankalign.cli import main as cli_main
from rankalign.cli import run_command
from rankalign.errors import UserError
from rankalign.reward_inputs import preference_prompt, rm_text
from rankalign.scoring.rewards.registry import build_rewards, parse_reward_spec

ROWS = [
    {
        "id": "r1",
        "prompt": "the movie was",
        "responses": [" great and i loved it", " terrible", " boring and sad, awful work"],
        "sources": ["policy:beam", "dataset:chosen", "policy:top-p"],
    },
    {
        "id": "r2",
        "prompt": [{"role": "user", "content": "hello there, how are you?"}],
        "responses": ["fine thanks", "i think this is wonderful, amazing, fantastic work"],
        "sources": ["policy:beam", "dataset:chosen"],
    },
    {
        "id": "r3",
        "prompt": "Human: what is a good movie?\n\nAssistant:",
        "responses": [" a great one with a happy ending", " bad"],
    },
]


def score_main(argv: list[str]) -> int:
    """`rankalign score ARGV` in this process, errors raised (not turned into exit codes)."""
    run_command("score", argv)
    return 0


def write_rows(path: Path, rows=ROWS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_score(tmp_path: Path, *rewards: str, rows=ROWS, extra=()) -> list[dict]:
    src = write_rows(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    args = ["--in", str(src), "--out", str(out), *[a for r in rewards for a in ("--reward", r)]]
    assert score_main([*args, "--overwrite", "true", *extra]) == 0
    return read_rows(out)


# ----------------------------------------------------------------------------- spec grammar


def test_reward_spec_grammar():
    s = parse_reward_spec("length:lambda=0.01,unit=chars,weight=2")
    assert (s.kind, s.options, s.weight, s.name) == (
        "length",
        {"lambda": 0.01, "unit": "chars"},
        2.0,
        "length",
    )
    assert parse_reward_spec("rm:path/to/model,batch_size=4").options == {
        "path": "path/to/model",
        "batch_size": 4,
    }
    assert parse_reward_spec("python:my_module:fn").options == {"function": "my_module:fn"}
    judge = parse_reward_spec("judge:model=gpt-4o-mini,base_url=http://127.0.0.1:8000/v1,retries=1")
    assert judge.options == {
        "model": "gpt-4o-mini",
        "base_url": "http://127.0.0.1:8000/v1",
        "retries": 1,
    }
    assert parse_reward_spec("sentiment:weight=2").weight == 2.0
    assert (
        parse_reward_spec({"kind": "rm", "path": "./x", "weight": 0.5, "name": "helpful"}).name
        == "helpful"
    )
    assert parse_reward_spec("causal-rm:./x,append_eos=false").options["append_eos"] is False
    for bad, words in [
        ("bogus", "unknown reward kind"),
        ("rm", "needs 'path'"),
        ("length:unit=chars", "needs 'lambda'"),
        ("length:lambda=abc", "finite number"),
        ("sentiment:foo=1", "unknown option"),
        ("sentiment:x", "no positional"),
        ("rm:a,b", "unexpected 'b'"),
        ("length:lambda=nan", "finite"),
        ({"path": "x"}, "needs 'kind'"),
    ]:
        with pytest.raises(UserError, match=words):
            parse_reward_spec(bad)


# ----------------------------------------------------------------------------- rule rewards


def test_vader_sentiment_and_weights_and_length(tmp_path):
    rows = run_score(tmp_path, "sentiment:weight=2", "length:lambda=0.1,weight=0.5")
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    vader = SentimentIntensityAnalyzer()
    for row in rows:
        for i, resp in enumerate(row["responses"]):
            s = vader.polarity_scores(resp)["compound"]
            assert row["score_parts"]["sentiment"][i] == pytest.approx(s)
            assert row["score_parts"]["length"][i] == pytest.approx(-0.1 * len(resp))  # chars
            assert row["scores"][i] == pytest.approx(2 * s + 0.5 * -0.1 * len(resp))
    parts = rows[0]["score_parts"]["sentiment"]
    assert parts[0] > 0.5 and parts[2] < -0.5  # " great and i loved it" vs " boring and sad, awful"


def test_length_in_tokens(tmp_path, tiny_model_dir, tokenizer):
    rows = run_score(tmp_path, f"length:lambda=0.5,unit=tokens,tokenizer={tiny_model_dir}")
    for row in rows:
        want = [
            -0.5 * len(tokenizer(r, add_special_tokens=False).input_ids) for r in row["responses"]
        ]
        assert row["scores"] == pytest.approx(want)
    with pytest.raises(UserError, match="tokenizer=PATH"):
        run_score(tmp_path, "length:lambda=1,unit=tokens")


def test_python_function_file_and_module(tmp_path, monkeypatch):
    (tmp_path / "myreward.py").write_text(
        "def words(prompt, response):\n    return float(len(response.split()))\n"
    )
    rows = run_score(tmp_path, f"python:{tmp_path / 'myreward.py'}:words")
    assert rows[0]["scores"] == [5.0, 1.0, 5.0]
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = run_score(tmp_path, "python:myreward:words,name=w")
    assert rows[1]["score_parts"]["w"] == [2.0, 8.0]


def test_reward_errors_name_the_option_and_the_spec_once(tmp_path):
    """A spec's problem reads `field 'OPTION': reward 'SPEC': problem`, with no doubled prefix."""
    from rankalign.scoring.rewards.registry import check_reward_models, parse_reward_specs

    (tmp_path / "f.py").write_text("def f(prompt, response):\n    return 1.0\n")
    spec = f"python:{tmp_path / 'f.py'}:nope"
    with pytest.raises(UserError) as e:
        build_rewards(parse_reward_specs([spec], field="win_judge"), field="win_judge")
    assert str(e.value) == (
        f"field 'win_judge': reward '{spec}': '{tmp_path / 'f.py'}' has no function 'nope'"
    )
    with pytest.raises(UserError) as e:
        build_rewards([parse_reward_spec("length:lambda=1,unit=tokens")])
    assert str(e.value) == (
        "field 'reward': reward 'length:lambda=1,unit=tokens': unit=tokens needs tokenizer=PATH"
    )
    # the judge names the field 'reward' itself: the caller's option replaces it
    judge = "judge:model=m,base_url=ftp://x"
    with pytest.raises(UserError, match=r"^field 'rm_scorers': reward 'judge:[^']*': judge: "):
        build_rewards([parse_reward_spec(judge)], field="rm_scorers")
    missing = f"python:{tmp_path / 'none.py'}:f"
    with pytest.raises(UserError) as e:
        check_reward_models(parse_reward_specs([missing]), field="win_judge")
    assert (
        str(e.value)
        == f"field 'win_judge': reward '{missing}': {tmp_path / 'none.py'}: file not found"
    )
    with pytest.raises(UserError, match=r"^field 'x\[1\]': reward 'rm:\./y,batch_size=0'"):
        parse_reward_specs(["sentiment", "rm:./y,batch_size=0"], field="x")
    with pytest.raises(UserError, match=r"^field 'x': two rewards are named 'sentiment'"):
        parse_reward_specs(["sentiment", "sentiment"], field="x")


def test_check_reward_models_refuses_pickle_only_weights(tmp_path):
    from rankalign.scoring.rewards.registry import check_reward_models

    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"never loaded")
    for kind in ("rm", "causal-rm", "preference", "policy-logprob"):
        specs = [parse_reward_spec(f"{kind}:{folder}")]
        with pytest.raises(UserError, match=rf"^field 'w': reward '{kind}:.*pickle"):
            check_reward_models(specs, field="w", defaults={})
        check_reward_models(specs, defaults={"allow_pickle": True})
        check_reward_models(specs)  # the command's default unknown: left to build_rewards
        with pytest.raises(UserError, match="pickle"):  # the spec's own option wins
            check_reward_models(
                [parse_reward_spec(f"{kind}:{folder},allow_pickle=false")],
                defaults={"allow_pickle": True},
            )
        check_reward_models([parse_reward_spec(f"{kind}:{folder},allow_pickle=true")], defaults={})


def test_trained_with_refuses_a_broken_metadata_file(tmp_path):
    from rankalign.reward_inputs import trained_with

    assert trained_with(str(tmp_path)) == {}
    meta = tmp_path / "rankalign_reward_model.json"
    meta.write_text('{"format": "chat"}')
    assert trained_with(str(tmp_path)) == {"format": "chat"}
    meta.write_text('{"format": "chat"')
    with pytest.raises(UserError, match=r"rankalign_reward_model\.json.*invalid JSON"):
        trained_with(str(tmp_path))
    meta.write_text('["chat"]')
    with pytest.raises(UserError, match=r"rankalign_reward_model\.json: expected a JSON object"):
        trained_with(str(tmp_path))


def test_input_scores_kept_as_a_part(tmp_path):
    pairs = [{"prompt": "p", "chosen": "good", "rejected": "bad"}]
    rows = run_score(tmp_path, "input:weight=10", "length:lambda=1", rows=pairs)
    assert rows[0]["scores"] == [10.0 - 4, 0.0 - 3]


# ----------------------------------------------------------------------------- reward models


@pytest.fixture(scope="module")
def seq_rm_dir(tmp_path_factory, tokenizer):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(1)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        num_labels=1,
    )
    model = LlamaForSequenceClassification(cfg).eval()
    path = tmp_path_factory.mktemp("seq-rm")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model


def test_sequence_classifier_matches_direct_forward(tmp_path, seq_rm_dir, tokenizer):
    path, model = seq_rm_dir
    rows = run_score(tmp_path, f"rm:{path}", extra=["--batch_size", "3"])
    for row in rows:
        for resp, got in zip(row["responses"], row["scores"]):
            if isinstance(row["prompt"], list):  # chat template: it writes its own special tokens
                messages = [*row["prompt"], {"role": "assistant", "content": resp}]
                ids = tokenizer(
                    tokenizer.apply_chat_template(messages, tokenize=False),
                    add_special_tokens=False,
                    return_tensors="pt",
                )
            else:  # HH-style string prompt: prompt text + response, like an HF pipeline
                ids = tokenizer(row["prompt"] + resp, return_tensors="pt")
            with torch.no_grad():
                want = model(**ids).logits[0, 0].item()
            assert got == pytest.approx(want, abs=1e-5)
    assert rm_text(tokenizer, "q", "a", "pair") == ("q", "a")
    bf16 = run_score(tmp_path, f"rm:{path},dtype=bfloat16")
    assert [s for r in bf16 for s in r["scores"]] == pytest.approx(
        [s for r in rows for s in r["scores"]], abs=0.1
    )


def test_multi_label_classifier_needs_a_label(tmp_path, tokenizer):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        pad_token_id=0,
        num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
    )
    path = tmp_path / "clf"
    LlamaForSequenceClassification(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    with pytest.raises(UserError, match="label=NAME"):
        run_score(tmp_path, f"rm:{path}")
    rows = run_score(tmp_path, f"rm:{path},label=POSITIVE,output=prob")
    assert all(0 < s < 1 for r in rows for s in r["scores"])


def test_causal_lm_with_value_head(tmp_path, tokenizer):
    """The RRHF reward-model layout: a causal LM body under `transformer.` plus `v_head`."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(2)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        eos_token_id=2,
    )
    body = LlamaModel(cfg).eval()
    head = torch.randn(1, 32)
    path = tmp_path / "gptj-rm-like"
    path.mkdir()
    cfg.save_pretrained(path)
    tokenizer.save_pretrained(path)
    state = {f"transformer.{k}": v.contiguous() for k, v in body.state_dict().items()}
    save_file({**state, "v_head.weight": head}, str(path / "model.safetensors"))
    rows = run_score(tmp_path, f"causal-rm:{path}", extra=["--batch_size", "2"])
    for row in rows:
        for resp, got in zip(row["responses"], row["scores"]):
            text = rm_text(tokenizer, row["prompt"], resp)
            chat = isinstance(row["prompt"], list)
            ids = tokenizer(text, add_special_tokens=not chat).input_ids
            ids += (
                [tokenizer.eos_token_id] if ids[-1] != tokenizer.eos_token_id else []
            )  # read at EOS
            with torch.no_grad():
                h = body(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
            assert got == pytest.approx((h @ head[0]).item(), abs=1e-5)


@pytest.fixture(scope="module")
def preference_reward(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("pref")
    build_llama(len(tokenizer), seed=3).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return build_rewards([parse_reward_spec(f"preference:{path},batch_size=3")])[0]


def test_preference_model_both_orders(preference_reward, tokenizer):
    pref = preference_reward
    row = ROWS[0]
    a, b = row["responses"][0], row["responses"][2]
    p_ab, p_ba = pref.prob_first(
        [
            preference_prompt(tokenizer, row["prompt"], a, b),
            preference_prompt(tokenizer, row["prompt"], b, a),
        ]
    )
    # a random model has a position bias; averaging both orders makes the pair complementary
    assert p_ab + p_ba != pytest.approx(1.0, abs=1e-4)
    win_a, win_b = pref.score([{**row, "responses": [a, b]}])[0]
    assert win_a == pytest.approx((p_ab + 1 - p_ba) / 2, abs=1e-6)
    assert win_a + win_b == pytest.approx(1.0, abs=1e-6)
    swapped = pref.score([{**row, "responses": [b, a]}])[0]
    assert swapped == pytest.approx([win_b, win_a], abs=1e-6)
    # k = 3: mean wins against the others; they sum to k / 2; a single response gets 0.5
    scores = pref.score([row, {**row, "responses": [a]}])
    assert sum(scores[0]) == pytest.approx(1.5, abs=1e-6)
    assert scores[1] == [0.5]


def test_preference_batching_matches_single_forward(preference_reward, tokenizer):
    """Left padding with explicit positions gives each row's own next-token logits."""
    pref = preference_reward
    texts = [
        preference_prompt(tokenizer, r["prompt"], r["responses"][0], r["responses"][1])
        for r in ROWS
    ]
    batched = pref.prob_first(texts)
    for text, got in zip(texts, batched):
        ids = torch.tensor([tokenizer(text, add_special_tokens=False).input_ids])
        with torch.no_grad():
            logits = pref.model(input_ids=ids).logits[0, -1]
        want = logits[[pref.token_a, pref.token_b]].softmax(-1)[0].item()
        assert got == pytest.approx(want, abs=1e-5)


def test_our_trained_models_are_read_as_trained(tmp_path, seq_rm_dir, tiny_model_dir):
    """`rankalign train --loss bt-reward | preference` saves its input format beside the model."""
    import shutil

    rm = tmp_path / "bt"
    shutil.copytree(seq_rm_dir[0], rm)
    (rm / "rankalign_reward_model.json").write_text('{"loss": "bt-reward", "format": "concat"}')
    assert build_rewards([parse_reward_spec(f"rm:{rm}")])[0].format == "concat"
    assert build_rewards([parse_reward_spec(f"rm:{rm},format=chat")])[0].format == "chat"
    pref = tmp_path / "pref"
    shutil.copytree(tiny_model_dir, pref)
    (pref / "preference_template.txt").write_text("{context} A) {response_a} B) {response_b}")
    (pref / "rankalign_reward_model.json").write_text(
        '{"loss": "preference", "template": "preference_template.txt", "chat_template": "never"}'
    )
    reward = build_rewards([parse_reward_spec(f"preference:{pref}")])[0]
    assert (reward.template, reward.chat) == ("{context} A) {response_a} B) {response_b}", "never")


def test_policy_logprob_is_length_normalized(tmp_path, tiny_model_dir, tokenizer):
    """RRHF §3.2: the policy as reward model, p_i = sum of token log-probs / token count."""
    from transformers import AutoModelForCausalLM

    from rankalign.tokenization import encode_list

    rows = run_score(tmp_path, f"policy-logprob:{tiny_model_dir}", extra=["--batch_size", "2"])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    for row in rows:
        enc = encode_list(tokenizer, row["prompt"], row["responses"])
        for resp_ids, got in zip(enc.response_ids, row["scores"]):
            ids = torch.tensor([enc.prompt_ids + resp_ids])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
            tok = logits[-len(resp_ids) :].gather(1, ids[0, -len(resp_ids) :, None])
            assert got == pytest.approx(tok.sum().item() / len(resp_ids), abs=1e-5)


# ----------------------------------------------------------------------------- summary, config


def test_summary_table6_columns_and_ties(tmp_path, capsys):
    rows = [
        {
            "id": "a",
            "prompt": "p",
            "responses": ["x", "y", "z"],
            "scores": [1, 3, 3],
            "sources": ["s1", "s2", "s2"],
        },
        {
            "id": "b",
            "prompt": "p",
            "responses": ["x", "y"],
            "scores": [2, 2],
            "sources": ["s1", "s2"],
        },
    ]
    run_score(tmp_path, "input", rows=rows)
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["all"] == {
        "prompts": 2,
        "responses": 5,
        "mean": 2.2,
        "std": pytest.approx(math.sqrt(0.56)),
        "max": 2.5,
        "best": 3.0,
    }
    assert summary["per_source"]["s1"]["max"] == 1.5  # mean over lists of the list's best
    assert summary["per_source"]["s2"] == {
        "prompts": 2,
        "responses": 3,
        "mean": pytest.approx(8 / 3),
        "std": pytest.approx(math.sqrt(2 / 9)),
        "max": 2.5,
        "best": 3.0,
    }
    assert (summary["lists_with_ties"], summary["lists_all_tied"]) == (2, 1)
    assert "lists with ties: 2" in capsys.readouterr().out
    assert (tmp_path / "out.config.yaml").is_file()


def test_yaml_reward_list_mixes_mappings_and_strings(tmp_path):
    src = write_rows(tmp_path / "in.jsonl")
    config = tmp_path / "score.yaml"
    config.write_text(
        f"input: {src}\nout: {tmp_path / 'out.jsonl'}\nreward:\n"
        "  - {kind: length, lambda: 1.0, weight: 2}\n  - sentiment\n"
    )
    assert score_main(["--config", str(config)]) == 0
    row = read_rows(tmp_path / "out.jsonl")[0]
    assert set(row["score_parts"]) == {"length", "sentiment"}
    parts = row["score_parts"]
    assert row["scores"] == pytest.approx(
        [2 * a + b for a, b in zip(parts["length"], parts["sentiment"])]
    )


def test_repeated_reward_flags_replace_the_yaml_list(tmp_path):
    src = write_rows(tmp_path / "in.jsonl")
    config = tmp_path / "score.yaml"
    config.write_text("reward: [sentiment]\n")
    out = tmp_path / "out.jsonl"
    assert (
        cli_main(
            [
                "score",
                "--config",
                str(config),
                "--in",
                str(src),
                "--out",
                str(out),
                "--reward",
                "length:lambda=1",
                "--reward",
                "length:lambda=2,name=l2",
            ]
        )
        == 0
    )
    assert set(read_rows(out)[0]["score_parts"]) == {"length", "l2"}


# ----------------------------------------------------------------------------- errors


def cli_error(tmp_path, capsys, *args) -> str:
    src = write_rows(tmp_path / "in.jsonl")
    out = tmp_path / "bad.jsonl"
    assert cli.main(["score", "--in", str(src), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("rankalign")]  # not tqdm's
    assert (
        len(lines) == 1
        and lines[0].startswith("rankalign score: error:")
        and "Traceback" not in err
    )
    assert not out.exists() and not (tmp_path / "bad.jsonl.parts").exists()
    assert not (tmp_path / "bad.config.yaml").exists()
    return lines[0]


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    (tmp_path / "nanreward.py").write_text(
        "def f(prompt, response):\n    return float('nan') if 'sad' in response else 1.0\n"
    )
    msg = cli_error(tmp_path, capsys, "--reward", f"python:{tmp_path / 'nanreward.py'}:f")
    assert "nan" in msg and "row 'r1'" in msg and "line 1" in msg and "responses[2]" in msg
    msg = cli_error(tmp_path, capsys, "--reward", f"rm:{tmp_path / 'no-such-model'}")
    assert "no-such-model" in msg and "does not exist" in msg
    assert "unknown reward kind 'bogus'" in cli_error(tmp_path, capsys, "--reward", "bogus")
    assert "no reward given" in cli_error(tmp_path, capsys)
    assert "on_failure" in cli_error(tmp_path, capsys, "--reward", "sentiment", "--on_failure", "x")
    (tmp_path / "raising.py").write_text("def f(p, r):\n    return 1 / 0\n")
    msg = cli_error(tmp_path, capsys, "--reward", f"python:{tmp_path / 'raising.py'}:f")
    assert "ZeroDivisionError" in msg


def test_existing_output_needs_overwrite(tmp_path):
    run_score(tmp_path, "sentiment")
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    with pytest.raises(UserError, match="overwrite"):
        score_main(["--in", str(src), "--out", str(out), "--reward", "sentiment"])


def test_resume_after_an_error_only_with_the_same_rewards(tmp_path):
    rows = [{"id": f"x{i}", "prompt": "p", "responses": [f"r{i}", "s"]} for i in range(5)]
    src = write_rows(tmp_path / "in.jsonl", rows)
    fn = tmp_path / "flaky.py"
    fn.write_text(
        "def f(p, r):\n    if r == 'r3':\n        raise RuntimeError('boom')\n"
        "    return float(len(r))\n"
    )
    out = tmp_path / "out.jsonl"
    args = ["--in", str(src), "--out", str(out), "--shard_size", "1"]
    with pytest.raises(UserError, match="boom"):
        score_main([*args, "--reward", f"python:{fn}:f"])
    assert len(list((tmp_path / "out.jsonl.parts").glob("shard-*.jsonl"))) == 3  # x0..x2 kept
    with pytest.raises(UserError, match="partial run with other settings"):
        score_main([*args, "--reward", "sentiment"])
    fn.write_text("def f(p, r):\n    return float(len(r))\n")
    assert score_main([*args, "--reward", f"python:{fn}:f"]) == 0
    assert [r["id"] for r in read_rows(out)] == [r["id"] for r in rows]
    assert not (tmp_path / "out.jsonl.parts").exists()


# ----------------------------------------------------------------------------- kill and resume


SLOW_REWARD = """
import time
def f(prompt, response):
    with open({log!r}, "a") as log:
        log.write(prompt + "\\n")
    time.sleep(0.05)
    return len(response) * 0.5 - prompt.count("1")
"""


def test_kill_and_resume_gives_every_row_once(tmp_path):
    rows = [
        {
            "id": f"p{i:02d}",
            "prompt": f"prompt {i}",
            "responses": ["a" * (i + 1), "bb", "c" * (i % 3 + 1)],
            "sources": ["policy:sp", "dataset:chosen", "policy:sp"],
        }
        for i in range(16)
    ]
    src = write_rows(tmp_path / "in.jsonl", rows)
    log = tmp_path / "calls.log"
    (tmp_path / "slow.py").write_text(SLOW_REWARD.format(log=str(log)))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(Path(__file__).parent.parent / "src"),
    }

    def command(out):
        return [
            sys.executable,
            "-m",
            "rankalign.cli",
            "score",
            "--in",
            str(src),
            "--out",
            str(out),
            "--reward",
            f"python:{tmp_path / 'slow.py'}:f",
            "--shard_size",
            "2",
        ]

    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    first = tmp_path / "out.jsonl.parts" / "shard-000000.jsonl"
    deadline = time.time() + 60
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists() and not out.exists(), proc.stderr.read().decode()[-2000:]
    done_before = {
        r["id"] for shard in first.parent.glob("shard-*.jsonl") for r in read_rows(shard)
    }
    log.unlink()

    resumed = subprocess.run(command(out), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout
    rescored = {line.split()[1] for line in log.read_text().splitlines()}
    assert not rescored & {r.removeprefix("p").lstrip("0") or "0" for r in done_before}

    clean = subprocess.run(
        command(tmp_path / "clean.jsonl"), env=env, capture_output=True, text=True
    )
    assert clean.returncode == 0, clean.stderr[-2000:]
    got, want = read_rows(out), read_rows(tmp_path / "clean.jsonl")
    assert got == want and [r["id"] for r in got] == [r["id"] for r in rows]
    assert not (tmp_path / "out.jsonl.parts").exists()


def test_shipped_score_examples(tmp_path, monkeypatch):
    root = Path(__file__).parents[1]
    examples = sorted((root / "examples").glob("score-*.yaml"))
    assert len(examples) >= 3
    from rankalign.config import parse_config
    from rankalign.scoring.config import ScoreConfig

    for path in examples:  # every config parses, every reward spec is valid
        cfg, _ = parse_config(["--config", str(path)], (ScoreConfig,), prog="rankalign score")
        assert [parse_reward_spec(s) for s in cfg.reward]
    monkeypatch.chdir(root)  # the offline one runs as shipped
    out = tmp_path / "scored.jsonl"
    assert score_main(["--config", "examples/score-sentiment.yaml", "--out", str(out)]) == 0
    rows = read_rows(out)
    for row in rows:  # the shipped lists mix positive, negative and neutral responses
        by_source = dict(zip(row["sources"], row["scores"]))
        if {"example:positive", "example:negative"} <= set(by_source):
            assert by_source["example:positive"] > by_source["example:negative"]


def test_two_processes_split_and_merge_in_order(tmp_path, tiny_model_dir):
    """Data-parallel scoring (torchrun, 2 CPU processes): the same rows, in input order, as one
    process; 11 rows in shards of 2, so the processes' shares are uneven."""
    rows = [
        {"id": f"p{i:02d}", "prompt": f"the film {i} was", "responses": [" good", " bad" * (i + 1)]}
        for i in range(11)
    ]
    src = write_rows(tmp_path / "in.jsonl", rows)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).parent.parent / "src"),
    }
    args = [
        "score",
        "--in",
        str(src),
        "--reward",
        f"policy-logprob:{tiny_model_dir}",
        "--reward",
        "length:lambda=0.1",
        "--shard_size",
        "2",
    ]
    two = tmp_path / "two.jsonl"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    res = subprocess.run(
        [*launch, "2", "-m", "rankalign.cli", *args, "--out", str(two)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert cli.main([*args, "--out", str(tmp_path / "one.jsonl")]) == 0
    got, want = read_rows(two), read_rows(tmp_path / "one.jsonl")
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    for a, b in zip(got, want):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)
    assert not (tmp_path / "two.jsonl.parts").exists()
    assert json.loads((tmp_path / "two.summary.json").read_text())["rows"] == len(rows)


def test_summary_names_the_mean_best_column_and_keeps_long_sources(tmp_path):
    from rankalign.scoring.stage import summarize, summary_lines

    long_source = "policy:diverse-beam(beams=4,groups=4,penalty=1.0,temperature=0.8)"
    rows = [
        {
            "id": "a",
            "prompt": "p",
            "responses": ["x", "y"],
            "scores": [0.2, 0.8],
            "sources": [long_source, "dataset:chosen"],
        },
        {
            "id": "b",
            "prompt": "p",
            "responses": ["x", "y"],
            "scores": [0.6, 0.4],
            "sources": [long_source, "dataset:chosen"],
        },
    ]
    lines = summary_lines(summarize(rows, []), tmp_path / "o.jsonl", tmp_path / "f.jsonl")
    assert "mean best" in lines[1] and lines[1].split()[-1] == "best"
    row = next(line for line in lines if long_source in line)  # the whole name, not cut
    assert row.split()[-2:] == ["0.4000", "0.6000"]  # mean best (one list each), best
    every = next(line for line in lines if line.split()[0] == "all")
    assert every.split()[-2:] == ["0.7000", "0.8000"]  # (0.8 + 0.6) / 2, max
    assert any("mean over lists of each list's best score" in line for line in lines)
