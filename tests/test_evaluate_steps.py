"""The evaluation steps' parts add up as the steps once wrote them in place: notes extend,
per-entry values merge (their `notes` from both sides kept), other keys are set."""

from __future__ import annotations

from rankalign.evaluation.steps import STEPS, add_part


def test_add_part_merges_entries_and_notes_by_hand():
    metrics = {"config": {}, "notes": ["first"], "num_prompts": 2}
    add_part(metrics, {"models": {}})  # no entries: no models key
    assert "models" not in metrics
    add_part(metrics, {"models": {"a": {"spec": "x", "kind": "file"}, "b": {"spec": "y"}}})
    add_part(
        metrics,
        {
            "models": {"a": {"mean_reward": None, "notes": {"mean_reward": "none scored"}}},
            "notes": ["second"],
        },
    )
    add_part(
        metrics,
        {"perplexity_model": "m", "models": {"a": {"perplexity": 3.0, "notes": {"ppl": "why"}}}},
    )
    add_part(metrics, {"win_rates": [1], "notes": []})
    assert metrics == {
        "config": {},
        "notes": ["first", "second"],
        "num_prompts": 2,
        "models": {
            "a": {
                "spec": "x",
                "kind": "file",
                "mean_reward": None,
                "notes": {"mean_reward": "none scored", "ppl": "why"},
                "perplexity": 3.0,
            },
            "b": {"spec": "y"},
        },
        "perplexity_model": "m",
        "win_rates": [1],
    }
    # key order is metrics.json's order: notes stay where they first appeared
    assert list(metrics["models"]["a"]) == ["spec", "kind", "mean_reward", "notes", "perplexity"]


def test_steps_run_in_the_order_metrics_json_is_written():
    assert [s.__name__ for s in STEPS] == [
        "collect_responses",
        "score_entries",
        "perplexities",
        "drift",
        "reference_scores",
        "win_rates",
        "paired_baselines",
        "rm_accuracies",
        "sample_metrics",
        "training_logs",
        "per_prompt_outputs",
    ]
