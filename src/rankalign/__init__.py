"""rankalign: align language models with preferences by ranking responses, without RL.

The Python API (the same code path as the `rankalign` command; see `rankalign.api`):

    rankalign.sample(...), rankalign.score(...), rankalign.train(...), rankalign.evaluate(...),
    rankalign.loop(...), rankalign.demo(...), rankalign.compare(...),
    rankalign.annotate(...)                   -> rankalign.Result
    rankalign.sample_config(...), ...         -> the checked config, nothing runs

Names are resolved on first use, so `import rankalign` stays light (no torch import).
"""

__version__ = "0.1.0"

_API = {
    **{
        name: "rankalign.api"
        for name in (
            "Result",
            "sample",
            "score",
            "train",
            "evaluate",
            "sample_config",
            "score_config",
            "train_config",
            "evaluate_config",
            "annotate",
            "annotate_config",
        )
    },
    "loop": "rankalign.workflows.loop",
    "loop_config": "rankalign.workflows.loop",
    "demo": "rankalign.workflows.demo",
    "demo_config": "rankalign.workflows.demo",
    "compare": "rankalign.workflows.compare",
    "compare_config": "rankalign.workflows.compare",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'rankalign' has no attribute '{name}'")
