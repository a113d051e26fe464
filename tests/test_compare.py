"""`rankalign compare` without training: the methods' schema, refused configs (one line, exit 2,
nothing written), the table's pooling on hand-computed numbers and the plot data."""

from __future__ import annotations

import json

import pytest

from rankalign.cli import main
from rankalign.errors import UserError
from rankalign.report import compare_reward_points, write_compare_report
from rankalign.report_blocks import render_markdown
from rankalign.report_compare import compare_blocks, frontier_points, paired_matrix
from rankalign.workflows.compare import build_table, compare_config, parse_methods, summary_table
from rankalign.workflows.compare_table import QUICK_VERDICT, versus


def _prompts(tmp_path):
    rows = [{"id": f"t{i}", "prompt": f"train {i}", "split": "train"} for i in range(4)]
    rows += [{"id": f"h{i}", "prompt": f"held {i}", "split": "heldout"} for i in range(2)]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ----------------------------------------------------------------------------- methods


def test_methods_from_a_comma_list_put_base_first():
    methods = parse_methods("rrhf, listwise_dpo,sft-best,base")
    assert [(m.name, m.kind, m.loss) for m in methods] == [
        ("base", "base", None),
        ("rrhf", "train", "rrhf"),
        ("listwise_dpo", "train", "listwise-dpo"),
        ("sft-best", "train", "rrhf"),
    ]
    assert methods[3].overrides == {"rank_weight": 0.0}  # RRHF without the ranking loss


def test_methods_from_yaml_entries_with_overrides_and_loops():
    methods = parse_methods(
        [
            "dpo",
            {"dpo-strong": {"loss": "dpo", "beta": 0.5}},
            {"loop-rrhf": {"loop": True, "iterations": 2}},
            {"online": {"loop": True, "loss": "dpo"}},
        ]
    )
    assert methods[0].name == "base"  # always evaluated, even when not listed
    by_name = {m.name: m for m in methods}
    assert by_name["dpo-strong"].loss == "dpo" and by_name["dpo-strong"].overrides == {"beta": 0.5}
    assert (by_name["loop-rrhf"].kind, by_name["loop-rrhf"].loss) == ("loop", "rrhf")
    assert by_name["loop-rrhf"].overrides == {"iterations": 2}
    assert (by_name["online"].kind, by_name["online"].loss) == ("loop", "dpo")


@pytest.mark.parametrize(
    "methods, fragment",
    [
        ("rrhf,magic", "unknown method 'magic'"),
        ([{"fast": {"loss": "nope"}}], "unknown loss 'nope'"),
        ([{"rrhf": {"max_steps": 100}}], "max_steps is set by compare"),
        (["rrhf", "rrhf"], "listed twice"),
        ([{"base": {"beta": 1}}], "'base' takes no options"),
        ([{"a": {}, "b": {}}], "one-key mapping"),
        ([{"rrhf": {"loop": "yes"}}], "loop must be true or false"),
        ([], "non-empty list"),
    ],
)
def test_bad_methods_are_one_line_errors(methods, fragment):
    with pytest.raises(UserError, match=fragment) as e:
        compare_config(methods=methods)
    assert "\n" not in str(e.value)


def test_unknown_method_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["compare", "--methods", "rrhf,pairwise-magic", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("rankalign compare: error:")
    assert "unknown method 'pairwise-magic'" in err[0] and "Traceback" not in err[0]
    assert not out.exists()


def test_a_method_option_the_train_parser_refuses_writes_nothing(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "run"
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(
        f"model: {tiny_model_dir}\nprompts: {_prompts(tmp_path)}\nout: {out}\n"
        "methods: [rrhf, {dpo: {beta: -1.0}}]\n"
    )
    assert main(["compare", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "method 'dpo'" in err[0] and "beta" in err[0]
    assert not out.exists()


def test_a_loop_whose_steps_do_not_split_is_refused(tmp_path, tiny_model_dir):
    with pytest.raises(UserError, match="must split evenly over 2 iterations"):
        from rankalign.workflows.compare import validate

        validate(
            compare_config(
                model=tiny_model_dir,
                prompts=str(_prompts(tmp_path)),
                out=str(tmp_path / "run"),
                max_steps=3,
                methods=[{"loop-rrhf": {"loop": True, "iterations": 2}}],
            )
        )
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- the table


def _eval(rewards, ids=("a", "b"), **extra):
    return {"rewards": list(rewards), "ids": list(ids), **extra}


def _results():
    base = _eval([0.0, 1.0], perplexity=10.0, mean_length=20.0)
    return {
        "base": [
            {
                "method": "base",
                "kind": "base",
                "loss": None,
                "seed": None,
                "final": base,
                "curve": [{"step": 0, **base}],
            }  # fmt: skip
        ],
        "rrhf": [
            {
                "method": "rrhf",
                "kind": "train",
                "loss": "rrhf",
                "seed": s,
                "train_seconds": t,
                "peak_rss_mb": mem,
                "peak_gpu_mb": None,
                "final": final,
                "curve": [{"step": 2, **mid}, {"step": 4, **final}],
            }
            for s, t, mem, final, mid in (
                (
                    1,
                    10.0,
                    500.0,
                    _eval([1.0, 1.0], perplexity=12.0, mean_length=10.0),
                    _eval([0.5, 0.5]),
                ),
                (
                    2,
                    20.0,
                    700.0,
                    _eval([0.0, 2.0], perplexity=14.0, mean_length=30.0),
                    _eval([0.5, None]),
                ),
            )  # fmt: skip
        ],
    }


def test_seeds_pool_into_one_mean_and_win_rate():
    table = build_table(_results(), resamples=200, seed=0)
    rrhf = table["methods"]["rrhf"]
    # rewards of both seeds pooled: (1 + 1 + 0 + 2) / 4
    assert rrhf["mean_reward"] == pytest.approx(1.0) and rrhf["n"] == 4
    assert rrhf["ci_low"] <= 1.0 <= rrhf["ci_high"]
    # against base (0, 1) per prompt: seed 1 -> win, tie; seed 2 -> tie, win
    assert (rrhf["win_rate"], rrhf["tie_rate"], rrhf["loss_rate"]) == (0.5, 0.5, 0.0)
    assert rrhf["perplexity"] == pytest.approx(13.0) and rrhf["mean_length"] == pytest.approx(20.0)
    assert rrhf["train_seconds"] == pytest.approx(15.0)  # mean over seeds
    assert rrhf["peak_rss_mb"] == 700.0  # the highest peak
    assert rrhf["peak_gpu_mb"] is None and rrhf["seeds"] == [1, 2]
    base = table["methods"]["base"]
    assert base["mean_reward"] == pytest.approx(0.5) and base["win_rate"] is None
    assert "reference" in base["notes"]["win_rate"]


def test_reward_vs_step_curve_starts_at_base_and_skips_unscored():
    curve = build_table(_results(), resamples=50)["curves"]["rrhf"]
    assert [p["step"] for p in curve] == [0, 2, 4]
    assert curve[0]["mean_reward"] == pytest.approx(0.5)  # base
    assert curve[1]["n"] == 3 and curve[1]["mean_reward"] == pytest.approx(0.5)  # None left out
    assert curve[2]["mean_reward"] == pytest.approx(1.0)


def test_undefined_numbers_are_null_with_a_note(tmp_path):
    results = _results()
    for r in results["rrhf"]:
        r["final"]["rewards"] = [None, None]
        r["train_seconds"] = None
        r["notes"] = {"train_seconds": "not measured here"}
    table = build_table(results, resamples=50)
    rrhf = table["methods"]["rrhf"]
    assert rrhf["mean_reward"] is None and rrhf["win_rate"] is None
    assert {"mean_reward", "win_rate", "train_seconds"} <= set(rrhf["notes"])
    assert rrhf["notes"]["train_seconds"] == "not measured here"
    table["settings"] = {"model": "m", "seeds": [1, 2]}
    files = write_compare_report(table, tmp_path)
    data = json.loads((tmp_path / "compare.json").read_text())  # strict JSON: null, not NaN
    assert data["methods"]["rrhf"]["mean_reward"] is None
    assert set(files) >= {"compare.json", "compare.md", "compare.html", "compare_reward.png"}


# ----------------------------------------------------------------------------- paired


def _run(name, seed, rewards, lengths):
    ids = [f"p{i}" for i in range(len(rewards))]
    final = _eval(rewards, ids, lengths=list(lengths))
    kind = "base" if name == "base" else "train"
    return {"method": name, "kind": kind, "loss": None, "seed": seed, "final": final,
            "curve": [{"step": 0, **final}]}  # fmt: skip


def _paired_results():
    """8 held-out prompts. base: reward 0, length 10. good: 2 seeds, each response 2 tokens longer
    per unit of reward (its gain is all length); other: one seed, small mixed differences."""
    s1, s2 = [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 10]
    other = [0.5, -0.5, 1, -1, 0, 0.25, 0, 0]
    return {
        "base": [_run("base", None, [0.0] * 8, [10] * 8)],
        "good": [_run("good", s, r, [10 + 2 * x for x in r]) for s, r in ((1, s1), (2, s2))],
        "other": [_run("other", 1, other, [10] * 8)],
    }


def test_paired_comparisons_on_hand_made_rewards():
    paired = build_table(_paired_results(), resamples=300, seed=0)["paired"]
    got = {(c["method"], c["versus"]): c for c in paired["comparisons"]}
    assert list(got) == [("good", "base"), ("other", "base"), ("other", "good")]
    assert paired["units"] == 8 and paired["alpha"] == 0.05

    good = got["good", "base"]
    # per prompt, good's mean over its seeds: 1..7, 9; minus base's 0: mean 37/8
    assert good["n"] == 8 and good["mean_difference"] == pytest.approx(37 / 8)
    assert good["ci_low"] <= 37 / 8 <= good["ci_high"]
    # all 8 differences positive: sign test 2/2^8; Wilcoxon exact (distinct), W- = 0: 2/2^8
    assert good["sign_test"]["p_value"] == pytest.approx(2 / 256)
    assert good["wilcoxon"]["method"] == "exact"
    assert good["wilcoxon"]["p_value"] == pytest.approx(2 / 256)

    other = got["other", "base"]
    # differences .5 -.5 1 -1 0 .25 0 0: 3 zeros dropped; |d| ranks .25:1, .5:2.5, 1:4.5 (ties)
    # W+ = 2.5 + 4.5 + 1 = 8, mean 5*6/4 = 7.5: |8 - 7.5| - 0.5 = 0 -> z = 0, p = 1 (normal)
    assert other["mean_difference"] == pytest.approx(0.25 / 8)
    assert other["wilcoxon"]["w_plus"] == 8.0 and other["wilcoxon"]["method"] == "normal"
    assert other["wilcoxon"]["p_value"] == pytest.approx(1.0)
    # sign test: 3 up, 2 down (m = 5, k = 2): 2 * (1 + 5 + 10)/32 = 1
    assert other["sign_test"]["p_value"] == pytest.approx(1.0)

    worse = got["other", "good"]
    # other - good: -.5 -2.5 -2 -5 -5 -5.75 -7 -9, all negative, 5 tied twice: normal, W+ = 0,
    # mean 18, variance 8*9*17/24 - (2^3 - 2)/48 = 50.875; z = 17.5/sqrt(50.875): p = 0.0141474
    assert worse["wilcoxon"]["w_plus"] == 0.0
    assert worse["wilcoxon"]["p_value"] == pytest.approx(0.0141474, abs=1e-6)

    # Holm over the 3: 2/256 x 3 = 0.0234375; 0.0141474 x 2 = 0.0282948; 1 x 1 = 1
    assert good["p_holm"] == pytest.approx(0.0234375)
    assert worse["p_holm"] == pytest.approx(0.0282948, abs=1e-6)
    assert other["p_holm"] == pytest.approx(1.0)
    assert [good["significant"], other["significant"], worse["significant"]] == [True, False, True]
    assert [good["verdict"], other["verdict"], worse["verdict"]] == [
        "better",
        "no detectable difference",
        "worse",
    ]


def test_length_controlled_difference_against_base():
    paired = build_table(_paired_results(), resamples=300, seed=0)["paired"]
    good = versus(paired, "good", "base")["length_controlled"]
    # good's length difference is exactly 2 x its reward difference: at equal length, nothing
    assert good["difference"] == pytest.approx(0.0, abs=1e-9)
    assert good["slope"] == pytest.approx(0.5)
    other = versus(paired, "other", "base")["length_controlled"]
    # every length equal: the difference is the raw one, already at equal length
    assert other["difference"] == pytest.approx(0.25 / 8) and other["slope"] is None
    assert "length_controlled" not in versus(paired, "other", "good")  # against base only
    # results written before lengths were recorded: null with a note
    old = build_table(_results(), resamples=50)["paired"]
    lc = versus(old, "rrhf", "base")["length_controlled"]
    assert lc["difference"] is None and "lengths" in lc["notes"]["difference"]


def test_a_comparison_read_in_the_other_order_is_mirrored():
    paired = build_table(_paired_results(), resamples=300, seed=0)["paired"]
    ab, ba = versus(paired, "good", "base"), versus(paired, "base", "good")
    assert ba["mean_difference"] == -ab["mean_difference"]
    assert (ba["ci_low"], ba["ci_high"]) == (-ab["ci_high"], -ab["ci_low"])
    assert ba["verdict"] == "worse" and ba["p_holm"] == ab["p_holm"]
    assert ba["wilcoxon"]["w_minus"] == ab["wilcoxon"]["w_plus"]
    assert versus(paired, "good", "nobody") is None


def test_console_table_shows_the_difference_from_base_and_the_verdict():
    table = build_table(_paired_results(), resamples=300, seed=0)
    text = summary_table(table)
    assert "Δ vs base (95% CI)" in text.splitlines()[0] and "verdict" in text.splitlines()[0]
    good = next(line for line in text.splitlines() if line.startswith("| good |"))
    assert "| +4.625 (" in good and "| better |" in good
    quick = build_table(_paired_results(), resamples=300, seed=0, quick=True)
    assert {c["verdict"] for c in quick["paired"]["comparisons"]} == {QUICK_VERDICT}
    assert "too small to decide" in summary_table(quick) and quick["paired"]["notes"]["verdict"]


def test_undefined_paired_numbers_are_null_with_a_note():
    results = _results()
    for r in results["rrhf"]:
        r["final"]["rewards"] = [None, None]
    c = versus(build_table(results, resamples=50)["paired"], "rrhf", "base")
    assert c["mean_difference"] is None and c["p_holm"] is None and c["significant"] is None
    assert c["verdict"] == "undefined" and c["notes"]["p_holm"]
    results["rrhf"][0]["final"]["rewards"] = [0.0, 1.0]  # base's own rewards: tied everywhere
    c = versus(build_table(results, resamples=50)["paired"], "rrhf", "base")
    assert c["mean_difference"] == 0.0 and c["p_holm"] is None
    assert c["verdict"] == "no difference (every prompt tied)"


def test_quick_caps_the_run_and_sampled_evaluation_is_accepted(tmp_path):
    cfg = compare_config(quick=True, max_steps=8, seeds=3, eval_every=2, heldout_prompts=40)
    assert (cfg.max_steps, cfg.seeds, cfg.eval_every, cfg.heldout_prompts) == (2, 1, None, 12)
    assert compare_config(quick=True, train_prompts=4).train_prompts == 4  # caps, not sets
    assert compare_config(eval_samples=2, eval_temperature=0.7).eval_samples == 2
    with pytest.raises(UserError, match="eval_samples") as e:
        compare_config(eval_samples=-1)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="eval_top_p"):
        compare_config(eval_top_p=1.5)


def test_a_quick_run_folder_is_refused_to_a_full_run(tmp_path):
    from rankalign.config import dump_config
    from rankalign.workflows.compare import validate

    out = tmp_path / "run"
    out.mkdir()
    dump_config(out / "compare_config.yaml", {"compare": compare_config(quick=True)})
    with pytest.raises(UserError, match="holds a --quick run: use another --out"):
        validate(compare_config(out=str(out)))
    with pytest.raises(UserError, match="holds a run without --quick"):
        dump_config(out / "compare_config.yaml", {"compare": compare_config()})
        validate(compare_config(out=str(out), quick=True))


def test_plot_points_are_the_means_and_interval_half_widths():
    methods = {
        "base": {"mean_reward": 0.5, "ci_low": 0.25, "ci_high": 1.0},
        "rrhf": {"mean_reward": 1.0, "ci_low": None, "ci_high": 1.5},
        "broken": {"mean_reward": None},
    }
    assert compare_reward_points(methods) == [("base", 0.5, 0.25, 0.5), ("rrhf", 1.0, 0.0, 0.5)]


def test_compare_page_shows_both_plots_in_headless_chromium(tmp_path):
    import re
    import shutil
    import subprocess

    browser = next(
        (
            shutil.which(b)
            for b in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(b)
        ),
        None,
    )
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    table = build_table(_results(), resamples=50)
    table["settings"] = {"model": "m", "seeds": [1, 2], "max_steps": 4}
    files = write_compare_report(table, tmp_path)
    assert {"compare_reward.png", "compare_steps.png"} <= set(files)
    proc = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            (tmp_path / "compare.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'id="images-loaded">(\d+)/(\d+)<', proc.stdout)
    assert m and m.group(1) == m.group(2) == "2", proc.stdout[-2000:]
    assert "rrhf" in proc.stdout and "win vs base" in proc.stdout


def _with_kl(results: dict) -> dict:
    """`_paired_results` evaluated with samples: per-prompt KL (base 0; good 0.5 per prompt on
    seed 1, 1.5 on seed 2: mean 1.0; other 0.1..0.8)."""
    for name, runs in results.items():
        for i, r in enumerate(runs):
            n = len(r["final"]["ids"])
            kls = {"base": [0.0] * n, "good": [0.5 + i] * n}.get(
                name, [0.1 * (k + 1) for k in range(n)]
            )
            r["final"]["kls"] = kls
            r["curve"] = (
                [{"step": 0, **r["final"]}] if name == "base" else [{"step": 2, **r["final"]}]
            )
    return results


def test_paired_matrix_marks_the_significant_differences():
    table = build_table(_paired_results(), resamples=300, seed=0)
    matrix = paired_matrix(table)
    assert matrix["header"] == ["row − column", "base", "good", "other"]
    rows = {r[0]: r[1:] for r in matrix["rows"]}
    # Holm over 3: good-base p 2/256 x 3 = 0.023 and other-good 0.0141 x 2 = 0.028 are
    # significant; other-base (p 1) is not: no star; the mirror cells carry the same mark
    assert rows["good"] == ["+4.625*", "·", "+4.594*"]
    assert rows["other"] == ["+0.031", "-4.594*", "·"]
    assert rows["base"] == ["·", "-4.625*", "-0.031"]
    md = render_markdown(compare_blocks(table, {}))
    assert "| good | - | 16 | 4.625 |" in md and "| +4.625 | [" in md and "| better |" in md
    assert "Paired differences" in md and "too small to decide" not in md
    quick = build_table(_paired_results(), resamples=300, seed=0, quick=True)
    quick["settings"] = {"quick": True}
    md = render_markdown(compare_blocks(quick, {}))
    assert md.count("too small to decide") >= 2  # the banner, the verdicts and the matrix


def test_kl_is_pooled_by_prompt_and_drawn_against_reward(tmp_path):
    table = build_table(_with_kl(_paired_results()), resamples=300, seed=0, by_prompt=True)
    m = table["methods"]
    assert m["base"]["kl"] == 0.0 and m["good"]["kl"] == pytest.approx(1.0)
    assert m["other"]["kl"] == pytest.approx(0.45)
    assert m["other"]["kl_ci_low"] <= 0.45 <= m["other"]["kl_ci_high"]
    # by prompt: good's two seeds are one unit per prompt, n = 8 prompts (not 16)
    assert m["good"]["n"] == 8 and m["good"]["mean_reward"] == pytest.approx(37 / 8)
    points = frontier_points(table)
    assert [p["step"] for p in points["good"]] == [2] and points["base"][0]["kl"] == 0.0
    assert "KL (95% CI)" in summary_table(table).splitlines()[0]
    table["settings"] = {}
    files = write_compare_report(table, tmp_path)
    assert (tmp_path / "compare_frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "compare_frontier.png" in files
    greedy = build_table(_paired_results(), resamples=50)  # no samples: no KL, a note says why
    assert greedy["methods"]["good"]["kl"] is None
    assert "eval_samples" in greedy["methods"]["good"]["notes"]["kl"]
    write_compare_report({**greedy, "settings": {}}, tmp_path)
    assert not (tmp_path / "compare_frontier.png").exists()


def test_the_shipped_comparison_config_validates(tmp_path, monkeypatch):
    from pathlib import Path

    from rankalign.workflows.compare import validate

    root = Path(__file__).parents[1]
    monkeypatch.chdir(root)  # the config's held-out file is relative to the repository root
    cfg = compare_config(str(root / "examples" / "compare-decide.yaml"), out=str(tmp_path / "run"))
    assert (cfg.seeds, cfg.eval_samples, cfg.eval_temperature) == (3, 2, 1.0)
    methods, (train, _) = validate(cfg)  # every method's options parsed; nothing written
    assert [m.name for m in methods] == ["base", "sft-best", "rrhf", "pro", "loop-rrhf", "dpo"]
    assert not (tmp_path / "run").exists()
    # the held-out prompts: enough for the config, none of them a prompt it trains on
    held = [json.loads(x) for x in Path(cfg.heldout).read_text().splitlines()]
    assert len(held) >= cfg.heldout_prompts and len({r["id"] for r in held}) == len(held)
    assert not {r["prompt"] for r in held} & {r["prompt"] for r in train}
