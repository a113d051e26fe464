"""What training prints: numbers as numbers, no nested evaluation bar in a log file, and no
"missing keys" warning for the tied copy of tied input/output embeddings on resume."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

from rankalign.training.trainers import (
    MetricsTrainer,
    NumberPrinterCallback,
    NumberProgressCallback,
    log_numbers,
)


def test_log_lines_hold_numbers_not_strings():
    logs = {"loss": 1.23456789, "learning_rate": 2e-05, "epoch": 1, "total_flos": 5.0}
    assert log_numbers(logs) == {"loss": 1.235, "learning_rate": 2e-05, "epoch": 1}
    assert str(log_numbers(logs)) == "{'loss': 1.235, 'learning_rate': 2e-05, 'epoch': 1}"


def _trainer(tmp_path, tie: bool, **args) -> MetricsTrainer:
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            tie_word_embeddings=tie,
        )
    )
    targs = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, **args)
    return MetricsTrainer(model=model, args=targs)


@pytest.mark.parametrize("disable_tqdm", [False, True])
def test_our_callbacks_replace_the_string_printing_ones(tmp_path, disable_tqdm):
    names = {
        type(c)
        for c in _trainer(tmp_path, True, disable_tqdm=disable_tqdm).callback_handler.callbacks
    }
    ours = NumberPrinterCallback if disable_tqdm else NumberProgressCallback
    assert ours in names
    assert not any(c.__name__ in ("ProgressCallback", "PrinterCallback") for c in names)


def test_no_nested_evaluation_bar_when_output_is_not_a_terminal(tmp_path):
    cb = NumberProgressCallback()
    cb.training_bar = object()  # training is under way; pytest's stderr is not a terminal
    cb.on_prediction_step(None, None, None, eval_dataloader=[1, 2])
    assert cb.prediction_bar is None


def test_tied_embeddings_resume_is_quiet_other_missing_keys_are_not(tmp_path, monkeypatch):
    import transformers.trainer as hf_trainer
    from torch.nn.modules.module import _IncompatibleKeys

    warnings = []
    monkeypatch.setattr(hf_trainer.logger, "warning", lambda msg, *a, **k: warnings.append(msg))
    tied = _trainer(tmp_path, True)
    tied._issue_warnings_after_load(_IncompatibleKeys(["lm_head.weight"], []))
    assert warnings == []
    assert tied.model.lm_head.weight is tied.model.model.embed_tokens.weight
    tied._issue_warnings_after_load(_IncompatibleKeys(["model.norm.weight"], []))
    assert len(warnings) == 1 and "model.norm.weight" in warnings[0]
    untied = _trainer(tmp_path / "u", False)
    untied._issue_warnings_after_load(_IncompatibleKeys(["lm_head.weight"], []))
    assert len(warnings) == 2  # a real missing head is still reported
