"""The `transformers.Trainer` subclasses: `RankTrainer` (policy losses over (B, K) log-probs,
losses.py), `BTRewardTrainer` and `PreferenceTrainer`; each logs its loss parts and ranking
metrics every step (`MetricsTrainer`).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from rankalign import losses as L
from rankalign.logprobs import list_length, response_logps
from rankalign.losses import bradley_terry_loss


def log_numbers(logs: dict) -> dict:
    """A Trainer log line for the console: floats rounded to 4 significant digits but still
    numbers (transformers' own callbacks print them as strings: {'loss': '1.234'})."""
    return {
        k: float(f"{v:.4g}") if isinstance(v, float) else v
        for k, v in logs.items()
        if k != "total_flos"
    }


class NumberPrinterCallback(PrinterCallback):
    """PrinterCallback (disable_tqdm) printing numbers as numbers."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_local_process_zero and logs is not None:
            print(log_numbers(logs))


class NumberProgressCallback(ProgressCallback):
    """ProgressCallback printing numbers as numbers, and without a nested evaluation bar when
    the output is not a terminal (a log file would get its cursor-up codes, `[A`)."""

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if self.training_bar is not None and not sys.stderr.isatty():
            return
        super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs is not None:
            self.training_bar.write(str(log_numbers(logs)))


class MetricsTrainer(Trainer):
    """A Trainer that collects per-batch statistics (`_record`) and adds their means to every
    log line, so `logging_steps: 1` logs each loss part, ranking accuracy and reward margin.

    Counts are summed over the logging window; pair (or example) statistics are means over all
    pairs in it, whatever the batches' sizes; other parts are means over batches. Under several
    processes the window holds every process's batches.
    """

    SUMMED = ("num_pairs", "num_examples")
    PER_ITEM = ("rank_accuracy", "reward_margin", "p_preferred")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # our losses are per-batch means: let Trainer divide by the accumulation steps
        self.model_accepts_loss_kwargs = False
        # split -> key -> [weighted sum, total weight]
        self._metrics = {"train": {}, "eval": {}}
        for theirs, ours in (
            (ProgressCallback, NumberProgressCallback),
            (PrinterCallback, NumberPrinterCallback),
        ):
            if any(type(c) is theirs for c in self.callback_handler.callbacks):
                self.remove_callback(theirs)
                self.add_callback(ours)

    def _issue_warnings_after_load(self, load_result) -> None:
        """Resuming a model with tied input/output embeddings: the checkpoint holds the shared
        weight once, so its tied copy (lm_head.weight) is "missing" by design. Tie it and say
        nothing; any other missing key is still reported."""
        tied = set(getattr(self.model, "all_tied_weights_keys", None) or {})
        missing = set(load_result.missing_keys)
        if missing and missing <= tied:
            self.model.tie_weights()
            if load_result.unexpected_keys:
                super()._issue_warnings_after_load(
                    type(load_result)([], load_result.unexpected_keys)
                )
            return
        super()._issue_warnings_after_load(load_result)

    def _record(self, model, stats: dict) -> None:
        metrics = self._metrics["train" if model.training else "eval"]
        items = float(stats.get("num_pairs", stats.get("num_examples", 1.0)))
        for k, v in stats.items():
            weight = items if k in self.PER_ITEM else 1.0
            total = metrics.setdefault(k, [0.0, 0.0])
            total[0] += float(v) * weight
            total[1] += weight

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict, *args, **kwargs):
        split = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        prefix = "eval_" if split == "eval" else ""
        totals = self._metrics[split]
        if self.args.world_size > 1:  # every process logs at the same steps: pool their windows
            from accelerate.utils import gather_object

            totals = {}
            for part in gather_object([self._metrics[split]]):
                for k, (value, weight) in part.items():
                    total = totals.setdefault(k, [0.0, 0.0])
                    total[0] += value
                    total[1] += weight
        for k, (value, weight) in totals.items():
            if k in self.SUMMED:
                logs[prefix + k] = value
            elif weight:
                logs[prefix + k] = value / weight
        self._metrics[split] = {}
        super().log(logs, *args, **kwargs)


class RankTrainer(MetricsTrainer):
    """transformers.Trainer whose loss is a ranking loss over (B, K) response log-probs."""

    def __init__(
        self,
        *args,
        loss_name: str,
        loss_kwargs: dict,
        shared_prompt: bool = True,
        packed_prompt: bool = False,
        reference: str = "precompute",
        logps_chunk: int | None = 0,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.loss_name, self.loss_fn, self.loss_kwargs = loss_name, L.LOSSES[loss_name], loss_kwargs
        self.shared_prompt, self.packed_prompt = shared_prompt, packed_prompt
        self.reference, self.logps_chunk = reference, logps_chunk
        self.pair_mode = loss_kwargs.get("pair_mode", "all")

    def _get_train_sampler(self, train_dataset=None):
        """`train_sampling_strategy: group_by_length` for ranked lists: batches of lists of
        similar cost (`list_length`), so little of a batch is padding."""
        if sampling_strategy(self.args) != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        from transformers.trainer_pt_utils import LengthGroupedSampler

        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return LengthGroupedSampler(
            self.args.train_batch_size * self.args.gradient_accumulation_steps,
            # training passes under activation checkpointing run the shared prompt packed
            lengths=[list_length(item, self._scorer()) for item in dataset],
        )

    def _scorer(self) -> str:
        """Which path `response_logps` takes in training steps (logprobs.py)."""
        if not self.shared_prompt:
            return "naive"
        return "packed" if self.packed_prompt or checkpointing(self.args) else "cached"

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        paths = (self.shared_prompt, self.packed_prompt, self.logps_chunk)
        logp, lengths, mask = response_logps(model, inputs, *paths)
        ref = inputs.get("ref_logp")
        if self.reference == "adapters-off" and self.loss_name in L.NEEDS_REFERENCE:
            with torch.no_grad(), self.accelerator.unwrap_model(model).disable_adapter():
                ref = response_logps(model, inputs, *paths)[0]
        batch = L.LossInputs(
            logp=logp, lengths=lengths, scores=inputs["scores"], mask=mask, ref_logp=ref
        )
        loss, parts = self.loss_fn(batch, **self.loss_kwargs)
        stats = {f"loss_{k}": v for k, v in parts.items()}
        stats.update(L.ranking_metrics(batch, pair_mode=self.pair_mode))
        self._record(model, stats)
        return (loss, {"logp": logp}) if return_outputs else loss


def checkpointing(args: TrainingArguments) -> bool:
    """Activation checkpointing on? (transformers 5.x renamed `gradient_checkpointing`.)"""
    return bool(getattr(args, "activation_checkpointing", None) or args.gradient_checkpointing)


def sampling_strategy(args: TrainingArguments) -> str:
    """`train_sampling_strategy`, or what the older `group_by_length` flag meant."""
    if hasattr(args, "train_sampling_strategy"):
        return args.train_sampling_strategy
    return "group_by_length" if getattr(args, "group_by_length", False) else "random"


class BTRewardTrainer(MetricsTrainer):
    """Bradley-Terry reward model: r = the model's single pooled logit per response."""

    def __init__(self, *args, loss_kwargs: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_kwargs = loss_kwargs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        keep = ("input_ids", "attention_mask", "token_type_ids")
        flat = model(**{k: v for k, v in inputs.items() if k in keep}).logits[:, 0]
        mask = inputs["mask"]
        # responses were flattened list by list, so they fill the (B, K) mask in row-major order
        rewards = torch.zeros(mask.shape, dtype=flat.dtype, device=flat.device)
        rewards = rewards.masked_scatter(mask, flat)
        loss, parts = bradley_terry_loss(rewards, inputs["scores"], mask, **self.loss_kwargs)
        stats = {f"loss_{k}" if k in ("bt", "center") else k: v for k, v in parts.items()}
        if not self.loss_kwargs.get("center_coefficient"):
            stats.pop("loss_center")
        self._record(model, stats)
        return (loss, {"rewards": rewards}) if return_outputs else loss


class PreferenceTrainer(MetricsTrainer):
    """Pairwise preference LM: cross-entropy of the answer token after the prompt."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits = (
            model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                position_ids=inputs["position_ids"],
                logits_to_keep=1,  # only the answer position: no (B, T, V) logits in memory
            )
            .logits[:, -1]
            .float()
        )
        target, other = inputs["target"], inputs["other"]
        loss = F.cross_entropy(logits, target)
        with torch.no_grad():
            lt, lo = logits.gather(1, target[:, None])[:, 0], logits.gather(1, other[:, None])[:, 0]
            stats = {
                "rank_accuracy": (lt > lo).float().mean(),  # P(preferred) > P(other), as read
                "p_preferred": torch.sigmoid(lt - lo).mean(),  # P over {A, B} only
                "num_examples": float(len(target)),
            }
        self._record(model, stats)
        return (loss, {"logits": logits}) if return_outputs else loss
