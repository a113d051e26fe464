"""`rankalign evaluate` on tiny random models and a python-function reward: every metric is
recomputed here independently (numpy, brute force, a manual forward pass, sacrebleu/rouge-score
called directly) and must match."""

from __future__ import annotations

import itertools
import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rankalign import metrics as M
from rankalign.cli import main as cli_main
from rankalign.evaluation import steps as E
from rankalign.evaluation.generate import Generator
from rankalign.models import load_causal_lm, load_tokenizer

STOP = ["\n\nHuman:", "\n\nAssistant:"]
PROMPTS = [
    (
        "Human: what is a good movie?\n\nAssistant:",
        "a great one with a happy ending",
        "this is bad, awful and sad",
        "a great movie with a happy ending",
    ),
    (
        "Human: hello there\n\nAssistant:",
        "hello there, how are you today? fine thanks",
        "the film was terrible and boring",
        "hello, i am fine thanks",
    ),
    (
        "Human: did you like it?\n\nAssistant:",
        "i think this is wonderful, amazing, fantastic work",
        "the movie was boring",
        "yes, it was wonderful work",
    ),
    (
        "Human: tell me about the film\n\nAssistant:",
        "the movie was great and i loved it",
        "bad and sad",
        "the film was great",
    ),
    ("Human: how are you today?\n\nAssistant:", "fine thanks, and you?", "awful", "fine, thanks"),
]
REWARD_PY = """
def reward(prompt, response):
    return (sum(map(ord, response)) % 101) / 100.0 - 0.002 * len(response)
"""


def evaluate_models(models, prompts, reward, out, **options) -> dict:
    """`rankalign.evaluate` with {name: spec} entries (the API takes NAME=SPEC strings)."""
    import rankalign

    def entries(given):
        return [f"{k}={v}" for k, v in given.items()] if isinstance(given, dict) else list(given)

    rewards = [reward] if isinstance(reward, str) else list(reward or [])
    baseline = entries(options.pop("baseline", []))
    return rankalign.evaluate(
        model=entries(models),
        baseline=baseline,
        prompts=prompts,
        reward=rewards,
        out=out,
        **options,
    ).metrics


def reward_fn(prompt: str, response: str) -> float:  # the same function, for the checks here
    return (sum(map(ord, response)) % 101) / 100.0 - 0.002 * len(response)


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval-data")
    (d / "rw.py").write_text(REWARD_PY)
    prompts = _write_jsonl(
        d / "prompts.jsonl",
        [
            {
                "id": f"p{i}",
                "prompt": p,
                "chosen": c,
                "rejected": r,
                "reference": ref,
                "category": "even" if i % 2 == 0 else "odd",
            }
            for i, (p, c, r, ref) in enumerate(PROMPTS)
        ],
    )
    # scored samples: variable k, ties, several sources (best-of-n, reward-length, Table 6)
    rng = np.random.default_rng(7)
    samples = []
    for i in range(12):
        k = int(rng.integers(2, 8))
        scores = [float(v) for v in rng.integers(-3, 4, size=k) / 2]
        responses = ["word " * int(rng.integers(1, 12)) + f"r{i}-{j}" for j in range(k)]
        sources = [["policy:beam", "dataset:chosen", "dataset:rejected"][j % 3] for j in range(k)]
        samples.append(
            {
                "id": f"s{i}",
                "prompt": f"question {i}",
                "responses": responses,
                "scores": scores,
                "sources": sources,
            }
        )
    samples_path = _write_jsonl(d / "samples.jsonl", samples)
    return {
        "dir": d,
        "prompts": prompts,
        "samples": samples_path,
        "samples_rows": samples,
        "reward": f"python:{d / 'rw.py'}:reward",
    }


def _trainer_state(path: Path) -> list[dict]:
    log = [
        {
            "step": s,
            "epoch": s / 4,
            "loss": 2.0 / s,
            "loss_rank": 1.0 / s,
            "loss_sft": 1.0 / s,
            "rank_accuracy": 0.5 + s / 20,
            "reward_margin": 0.1 * s,
            "learning_rate": 1e-5,
        }
        for s in range(1, 9)
    ]
    log.append({"step": 8, "epoch": 2.0, "eval_loss": 0.4, "eval_rank_accuracy": 0.8})
    path.mkdir(parents=True, exist_ok=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": 8, "log_history": log}))
    return log


@pytest.fixture(scope="module")
def evaluated(files, tiny_model_dir, tiny_gpt2_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-out")
    run = out.parent / (out.name + "-run")
    log = _trainer_state(run / "checkpoint-8")
    loop = out.parent / (out.name + "-loop")
    for i, (mean, heldout) in enumerate([(0.1, 0.0), (0.3, 0.2), (0.5, 0.4)]):
        (loop / f"iter-{i}").mkdir(parents=True)
        (loop / f"iter-{i}" / "metrics.json").write_text(
            json.dumps(
                {"mean_reward": mean, "max_reward": mean + 0.5, "heldout": {"mean_reward": heldout}}
            )
        )
    metrics = evaluate_models(
        {"policy": tiny_model_dir},
        files["prompts"],
        files["reward"],
        str(out),
        baseline={"base": tiny_gpt2_dir, "good": "dataset:chosen"},
        pairs=files["prompts"],
        samples=[files["samples"]],
        num_samples=4,
        train_data=[files["samples"]],
        train_runs=[str(run)],
        loop_run=str(loop),
        max_new_tokens=6,
        batch_size=2,
        bootstrap_resamples=500,
        seed=3,
    )
    return {
        "metrics": metrics,
        "out": out,
        "log": log,
        "models": {"policy": tiny_model_dir, "base": tiny_gpt2_dir},
    }


def _per_prompt(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "per_prompt.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- pure metrics


def test_bootstrap_ci_matches_numpy_reimplementation():
    x = np.random.default_rng(0).normal(size=37)
    rng = np.random.default_rng(11)
    means = x[rng.integers(0, x.size, size=(1000, x.size))].mean(axis=1)
    expected = np.percentile(means, [2.5, 97.5])
    assert M.bootstrap_ci(x, resamples=1000, confidence=0.95, seed=11) == pytest.approx(expected)
    low, high = M.bootstrap_ci(x, resamples=1000, seed=11)
    assert low < x.mean() < high


def test_best_of_n_equals_brute_force_over_subsets():
    rng = np.random.default_rng(1)
    for _ in range(20):
        k = int(rng.integers(1, 9))
        r = list(rng.integers(-3, 4, size=k) / 2)  # many ties
        for n in range(1, k + 1):
            brute = np.mean([max(s) for s in itertools.combinations(r, n)])
            assert M.expected_best_of_n(r, n) == pytest.approx(brute)
    with pytest.raises(ValueError):
        M.expected_best_of_n([1.0, 2.0], 3)


def test_best_of_n_grid_is_every_n_up_to_16_then_powers_of_two():
    assert [p["n"] for p in M.best_of_n_curve([[0.0] * 3, [1.0] * 4])] == [1, 2, 3, 4]
    ns = [p["n"] for p in M.best_of_n_curve([[0.0] * 70])]
    assert ns == [*range(1, 17), 32, 64, 70]


def test_best_of_n_curve_counts_prompts_with_enough_samples():
    lists = [[0.0, 1.0, 2.0], [5.0], [1.0, 1.0, 3.0, 0.0, 2.0]]
    curve = M.best_of_n_curve(lists)
    assert [p["n"] for p in curve] == [1, 2, 3, 4, 5]  # every n up to 16
    assert [p["prompts"] for p in curve] == [3, 2, 2, 1, 1]
    n2 = np.mean(
        [
            np.mean([max(s) for s in itertools.combinations(lst, 2)])
            for lst in lists
            if len(lst) >= 2
        ]
    )
    assert curve[1]["expected_max"] == pytest.approx(n2)
    assert curve[0]["expected_max"] == pytest.approx(np.mean([np.mean(lst) for lst in lists]))


def test_pearson_matches_numpy_and_is_none_when_undefined():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=9), rng.normal(size=9)
    assert M.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert M.pearson([1, 2, 3], [5, 5, 5]) is None
    assert M.pearson([1], [2]) is None


def test_win_rate_and_pair_accuracy_by_hand():
    assert M.compare(1.0, 0.5) == 1 and M.compare(0.5, 1.0) == -1 and M.compare(1.0, 1.0) == 0
    assert M.compare(1.0, 0.95, tolerance=0.1) == 0
    w = M.win_rate([1, 1, 0, -1, None])
    assert (w["n"], w["wins"], w["ties"], w["losses"], w["unjudged"]) == (4, 2, 1, 1, 1)
    assert w["win_rate"] == 0.5 and w["win_rate_ties_half"] == pytest.approx(2.5 / 4)
    a = M.pair_accuracy([1.0, 2.0, 0.0, 3.0], [0.0, 2.0, 1.0, 1.0])
    assert (a["correct"], a["ties"], a["wrong"], a["accuracy"]) == (2, 1, 1, 0.5)


def test_win_verdicts_asks_an_llm_judge_both_orders():
    class BiasedJudge:  # always prefers the first response it is shown
        pairwise, two_orders = True, True

        def score(self, rows):
            return [[1.0, 0.0] for _ in rows]

    class FairJudge(BiasedJudge):  # prefers the longer response, whatever its position
        def score(self, rows):
            return [[float(len(r)) for r in row["responses"]] for row in rows]

    rows = [{"id": str(i), "prompt": "q"} for i in range(3)]
    mine, theirs = ["long answer", "x", "same"], ["y", "long answer", "same"]
    assert E.win_verdicts(BiasedJudge(), rows, mine, theirs, None, None, 0.0, False) == [0, 0, 0]
    assert E.win_verdicts(FairJudge(), rows, mine, theirs, None, None, 0.0, False) == [1, -1, 0]


# ----------------------------------------------------------------------------- end to end


def test_mean_reward_and_bootstrap_interval(evaluated, files):
    metrics, out = evaluated["metrics"], evaluated["out"]
    rows = _per_prompt(out)
    assert set(metrics["models"]) == {"policy", "base", "good"}
    for name in ("policy", "base", "good"):
        values = np.array([reward_fn(r["prompt"], r["responses"][name]) for r in rows])
        m = metrics["models"][name]
        assert m["n"] == len(PROMPTS)
        assert m["mean_reward"] == pytest.approx(values.mean())
        assert m["std"] == pytest.approx(values.std())
        rng = np.random.default_rng(3)
        means = values[rng.integers(0, values.size, size=(500, values.size))].mean(1)
        assert [m["ci_low"], m["ci_high"]] == pytest.approx(np.quantile(means, [0.025, 0.975]))
    assert [r["responses"]["good"] for r in rows] == [p[1] for p in PROMPTS]


def test_generations_are_greedy_cut_at_stop_strings_and_cached(evaluated, files):
    out = evaluated["out"]
    model_dir = evaluated["models"]["policy"]
    tok, model = load_tokenizer(model_dir), load_causal_lm(model_dir)
    cached = [
        json.loads(x) for x in (out / "generations" / "policy.jsonl").read_text().splitlines()
    ]
    assert [c["id"] for c in cached] == [f"p{i}" for i in range(len(PROMPTS))]
    for (prompt, *_), c in zip(PROMPTS, cached):
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        text = tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True)
        cut = min([text.find(s) for s in STOP if s in text] + [len(text)])
        assert c["responses"] == [text[:cut].strip()]


def test_rerun_reuses_cached_generations(evaluated, files, monkeypatch, tmp_path):
    import shutil

    out = tmp_path / "again"
    shutil.copytree(evaluated["out"] / "generations", out / "generations")
    shutil.copytree(evaluated["out"] / "samples", out / "samples")

    def boom(*a, **k):
        raise AssertionError("generated again despite the cache")

    monkeypatch.setattr(Generator, "generate", boom)
    monkeypatch.setattr(Generator, "policy", property(boom))  # not even loaded
    metrics = evaluate_models(
        {"policy": evaluated["models"]["policy"]},
        files["prompts"],
        files["reward"],
        str(out),
        num_samples=4,
        max_new_tokens=6,
        batch_size=2,
        bootstrap_resamples=500,
        seed=3,
        report=False,
    )
    assert metrics["models"]["policy"]["mean_reward"] == pytest.approx(
        evaluated["metrics"]["models"]["policy"]["mean_reward"]
    )
    # other settings are not served from the cache
    with pytest.raises(AssertionError, match="generated again"):
        evaluate_models(
            {"policy": evaluated["models"]["policy"]},
            files["prompts"],
            files["reward"],
            str(out),
            max_new_tokens=5,
            report=False,
        )


def _manual_logp(model, tok, prompt: str, response: str, eos: bool) -> tuple[float, int]:
    p = tok(prompt).input_ids
    r = tok(response, add_special_tokens=False).input_ids + ([tok.eos_token_id] if eos else [])
    ids = torch.tensor([p + r])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
    picked = logp[torch.arange(len(p) - 1, len(p) + len(r) - 1), torch.tensor(r)]
    return float(picked.sum()), len(r)


def test_perplexity_matches_a_manual_forward_pass(evaluated):
    metrics, out = evaluated["metrics"], evaluated["out"]
    base_dir = evaluated["models"]["base"]  # the base policy: first model among the baselines
    assert metrics["perplexity_model"] == base_dir
    tok, model = load_tokenizer(base_dir), load_causal_lm(base_dir)
    rows = _per_prompt(out)
    for name in ("policy", "base", "good"):
        total, count = 0.0, 0
        for r in rows:
            if tok(r["responses"][name], add_special_tokens=False).input_ids:
                lp, n = _manual_logp(model, tok, r["prompt"], r["responses"][name], eos=False)
                total, count = total + lp, count + n
        m = metrics["models"][name]
        assert m["ppl_tokens"] == count
        assert m["perplexity"] == pytest.approx(math.exp(-total / count), rel=1e-4)


def test_rm_accuracy_for_the_reward_and_for_policies_via_p_i(evaluated):
    acc = {a["scorer"]: a for a in evaluated["metrics"]["rm_accuracy"]}
    assert set(acc) == {"p_i: policy", "p_i: base", evaluated["metrics"]["config"]["reward"][0]}
    reward = acc[evaluated["metrics"]["config"]["reward"][0]]
    correct = sum(reward_fn(p, c) > reward_fn(p, r) for p, c, r, _ in PROMPTS)
    ties = sum(reward_fn(p, c) == reward_fn(p, r) for p, c, r, _ in PROMPTS)
    assert (reward["n"], reward["correct"], reward["ties"]) == (len(PROMPTS), correct, ties)
    for name in ("policy", "base"):
        tok, model = (
            load_tokenizer(evaluated["models"][name]),
            load_causal_lm(evaluated["models"][name]),
        )
        by_hand = []
        for p, c, r, _ in PROMPTS:
            pc = _manual_logp(model, tok, p, c, eos=True)
            pr = _manual_logp(model, tok, p, r, eos=True)
            by_hand.append(pc[0] / pc[1] > pr[0] / pr[1])
        a = acc[f"p_i: {name}"]
        assert a["correct"] == sum(by_hand) and a["accuracy"] == pytest.approx(np.mean(by_hand))
        even = [ok for i, ok in enumerate(by_hand) if i % 2 == 0]
        assert a["by_category"]["even"]["correct"] == sum(even)


def test_win_rate_by_hand(evaluated):
    rows = _per_prompt(evaluated["out"])
    wins = {(w["model"], w["baseline"]): w for w in evaluated["metrics"]["win_rates"]}
    assert set(wins) == {("policy", "base"), ("policy", "good")}
    for base in ("base", "good"):
        mine = [reward_fn(r["prompt"], r["responses"]["policy"]) for r in rows]
        theirs = [reward_fn(r["prompt"], r["responses"][base]) for r in rows]
        w = wins["policy", base]
        assert w["wins"] == sum(a > b for a, b in zip(mine, theirs))
        assert w["ties"] == sum(a == b for a, b in zip(mine, theirs))
        assert w["losses"] == sum(a < b for a, b in zip(mine, theirs))
        assert w["win_rate"] == pytest.approx(w["wins"] / len(rows))


def test_best_of_n_and_reward_length_from_samples(evaluated, files):
    metrics = evaluated["metrics"]
    rows = files["samples_rows"]
    curve = {p["n"]: p for p in metrics["best_of_n"]["samples"]}
    kmax = max(len(r["scores"]) for r in rows)
    assert set(curve) == set(range(1, kmax + 1))  # every n up to 16
    for n, point in curve.items():
        brute = [
            np.mean([max(s) for s in itertools.combinations(r["scores"], n)])
            for r in rows
            if len(r["scores"]) >= n
        ]
        assert point["expected_max"] == pytest.approx(np.mean(brute))
        assert point["prompts"] == len(brute)
    tok = load_tokenizer(evaluated["models"]["base"])
    rl = metrics["reward_length"]["samples"]
    expected = {}
    for r in rows:
        lengths = [len(tok(x, add_special_tokens=False).input_ids) for x in r["responses"]]
        if np.std(r["scores"]) > 0 and np.std(lengths) > 0:
            expected[r["id"]] = np.corrcoef(r["scores"], lengths)[0, 1]
    got = {p["id"]: p["r"] for p in rl["per_prompt"]}
    assert got == pytest.approx(expected)
    assert rl["skipped"] == len(rows) - len(expected)
    assert rl["mean_r"] == pytest.approx(np.mean(list(expected.values())))


def test_samples_drawn_here_are_scored_for_best_of_n(evaluated, files):
    lists = [
        json.loads(x)
        for x in (evaluated["out"] / "samples" / "policy.jsonl").read_text().splitlines()
    ]
    assert all(len(x["responses"]) == 4 for x in lists)
    scores = [[reward_fn(x["prompt"], r) for r in x["responses"]] for x in lists]
    curve = {p["n"]: p["expected_max"] for p in evaluated["metrics"]["best_of_n"]["policy"]}
    assert curve[1] == pytest.approx(np.mean(scores))
    assert curve[4] == pytest.approx(np.mean([max(s) for s in scores]))


def test_training_file_statistics_by_source(evaluated, files):
    stats = {s["source"]: s for s in evaluated["metrics"]["sample_stats"]["samples"]}
    rows = files["samples_rows"]
    for source in ("policy:beam", "dataset:chosen", "all"):
        per_row = [
            [v for v, s in zip(r["scores"], r["sources"]) if source in ("all", s)] for r in rows
        ]
        values = np.concatenate([v for v in per_row if v])
        st = stats[source]
        assert st["responses"] == values.size and st["prompts"] == sum(1 for v in per_row if v)
        assert st["mean"] == pytest.approx(values.mean()) and st["std"] == pytest.approx(
            values.std()
        )
        assert st["max"] == pytest.approx(np.mean([max(v) for v in per_row if v]))
        assert st["best"] == pytest.approx(values.max())


def test_bleu_and_rouge_match_the_libraries(evaluated):
    sacrebleu = pytest.importorskip("sacrebleu")
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    rows = _per_prompt(evaluated["out"])
    refs = [p[3] for p in PROMPTS]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for name in ("policy", "good"):
        hyps = [r["responses"][name] for r in rows]
        m = evaluated["metrics"]["models"][name]
        assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
        for key in ("rouge1", "rouge2", "rougeL"):
            expected = np.mean([scorer.score(ref, h)[key].fmeasure for ref, h in zip(refs, hyps)])
            assert m[key] == pytest.approx(expected)
    assert evaluated["metrics"]["models"]["good"]["bleu"] > 10  # the chosen responses are close


def test_training_curves_loop_iterations_and_report_files(evaluated):
    metrics, out = evaluated["metrics"], evaluated["out"]
    (run_log,) = metrics["training"].values()
    assert run_log == evaluated["log"]
    its = metrics["loop"]["iterations"]
    assert [it["iteration"] for it in its] == [0, 1, 2]
    assert [it["heldout.mean_reward"] for it in its] == [0.0, 0.2, 0.4]
    for f in (
        "metrics.json",
        "report.md",
        "report.html",
        "per_prompt.jsonl",
        "reward.png",
        "best_of_n.png",
        "reward_length.png",
        "training.png",
        "loop.png",
    ):
        assert (out / f).is_file(), f
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["models"]["policy"]["mean_reward"] == pytest.approx(
        metrics["models"]["policy"]["mean_reward"]
    )
    md = (out / "report.md").read_text()
    assert "| policy |" in md and "| good |" in md and "![" in md and "Best-of-n" in md
    assert [ex["id"] for ex in metrics["examples"]] == ["p0", "p1", "p2"]


# ----------------------------------------------------------------------------- CLI and judge


def test_cli_with_yaml_config(files, tiny_model_dir, tmp_path, capsys):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": f"tiny={tiny_model_dir}",
                "baseline": ["dataset:rejected"],
                "prompts": files["prompts"],
                "reward": files["reward"],
                "max_new_tokens": 4,
                "ppl_model": "none",
                "max_rows": 3,
                "pairs": files["prompts"],
                "rm_scorers": [f"policy:{tiny_model_dir}", "length:lambda=1"],
            }
        )
    )
    out = tmp_path / "cli"
    assert cli_main(["evaluate", "--config", str(cfg), "--out", str(out), "--report", "false"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"tiny", "dataset:rejected"} and metrics["num_prompts"] == 3
    assert "perplexity" not in metrics["models"]["tiny"]
    acc = {a["scorer"]: a for a in metrics["rm_accuracy"]}
    assert set(acc) == {f"p_i: {tiny_model_dir}", "length:lambda=1"}  # no --reward, no "models"
    shorter = sum(len(c) < len(r) for _, c, r, _ in PROMPTS)  # -length prefers the shorter
    assert acc["length:lambda=1"]["correct"] == shorter
    assert (out / "evaluate_config.yaml").is_file() and "tiny:" in capsys.readouterr().out


def test_cli_user_errors_exit_2(files, tmp_path, capsys):
    assert cli_main(["evaluate", "--out", str(tmp_path)]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert (
        cli_main(
            [
                "evaluate",
                "--model",
                "dataset:nope",
                "--prompts",
                files["prompts"],
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "no response 'nope'" in capsys.readouterr().err
    assert cli_main(["evaluate", "--train_runs", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "trainer_state.json" in capsys.readouterr().err


class _JudgeServer:
    """An OpenAI-compatible chat server on 127.0.0.1 that scores Response 1 and 2 with `rule`."""

    def __init__(self, rule):
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = body["messages"][-1]["content"]
                a, b = rule(text)
                answer = "\n".join(
                    f"Response {i}: Relevance {v}, Correctness {v}, Coherence {v}, Safety {v}"
                    for i, v in ((1, a), (2, b))
                )
                data = json.dumps(
                    {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.mark.parametrize("biased", [False, True])
def test_llm_judge_win_rate_asks_both_orders(files, tmp_path, monkeypatch, biased):
    """The chosen responses against the rejected ones, judged through the score stage's judge."""
    chosen = {p[1] for p in PROMPTS}

    def rule(text):
        if biased:
            return 5, 1  # always the first position
        first = text.split("Response 1")[-1].split("Response 2")[0]
        return (5, 2) if any(c in first for c in chosen) else (2, 5)

    server = _JudgeServer(rule)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    try:
        metrics = evaluate_models(
            {"good": "dataset:chosen"},
            files["prompts"],
            files["reward"],
            str(tmp_path),
            baseline=["dataset:rejected"],
            win_judge=[f"judge:model=j,base_url={server.url}"],
            ppl_model="none",
            report=False,
        )
    finally:
        server.close()
    (w,) = metrics["win_rates"]
    assert w["both_orders"] and w["n"] == len(PROMPTS)
    assert (w["wins"], w["ties"]) == ((0, len(PROMPTS)) if biased else (len(PROMPTS), 0))


def test_missing_metric_libraries_and_reward_are_notes_not_errors(files, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sacrebleu", None)  # `import sacrebleu` raises ImportError
    metrics = evaluate_models(
        {"good": "dataset:chosen"},
        files["prompts"],
        None,
        str(tmp_path),
        ppl_model="none",
        report=False,
    )
    notes = " ".join(metrics["notes"])
    assert "sacrebleu" in notes and "no --reward" in notes
    assert (
        "bleu" not in metrics["models"]["good"] and "mean_reward" not in metrics["models"]["good"]
    )


@pytest.mark.slow
def test_example_config_on_the_embedded_model(tmp_path, monkeypatch):
    """examples/evaluate-tiny.yaml end to end on SmolLM2 (the trained run replaced by the base,
    its training log by a stand-in: the example's runs/tiny-offline exists only after training)."""
    root = Path(__file__).parents[1]
    monkeypatch.chdir(root)
    out = tmp_path / "tiny"
    run = tmp_path / "tiny-offline"
    run.mkdir()
    log = [
        {"step": s, "loss": 40.0 - s, "rank_loss": 0.5 / s, "learning_rate": 5e-5}
        for s in range(1, 4)
    ]
    (run / "trainer_state.json").write_text(json.dumps({"log_history": log}))
    argv = (
        "evaluate --config examples/evaluate-tiny.yaml --model tiny=smollm2 --max_rows 3 "
        "--num_samples 2 --max_new_tokens 8"
    ).split() + ["--out", str(out), "--train_runs", str(run)]
    assert cli_main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"tiny", "base"}
    assert all(math.isfinite(m["perplexity"]) for m in metrics["models"].values())
    assert {"reward.png", "best_of_n.png", "training.png"} <= set(metrics["plots"])


def test_empty_responses_are_warned_about_with_the_template_mode(tmp_path, tiny_model_dir, capsys):
    import shutil

    from rankalign.evaluation.config import EvaluateConfig
    from rankalign.evaluation.entries import Entry
    from rankalign.evaluation.stage import print_summary
    from rankalign.evaluation.steps import empty_note
    from rankalign.report import model_table

    trained = tmp_path / "trained"
    shutil.copytree(tiny_model_dir, trained)
    (trained / "rankalign_config.yaml").write_text("rankalign:\n  chat_template: always\n")
    entry = Entry("rrhf", str(trained), "model", str(trained))
    cfg = EvaluateConfig(out=str(tmp_path / "e"), chat_template="never")
    note = empty_note(entry, 1, 6, cfg)
    assert note.startswith("rrhf: 1 of 6 responses are empty")
    assert "chat_template never, but the model was trained with always" in note
    assert "trained with" not in empty_note(entry, 1, 6, EvaluateConfig(out=str(tmp_path / "e")))
    models = {"rrhf": {"mean_reward": 0.0, "empty_responses": 1}}
    print_summary({"models": models, "notes": [note]}, cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: {note}"]
    assert model_table(models)["header"][-1] == "empty responses"
