"""A training run's outputs, for policies and reward models alike: the output folder checked
before any write, the first write (`start_outputs`), training with resume from the last complete
checkpoint and the final `save_pretrained` folder (`train_and_save`, `save_final`).
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

from transformers import Trainer

from rankalign.config import dump_config
from rankalign.data import check_output_location, write_json
from rankalign.errors import UserError
from rankalign.training.setup import quiet_peft


def check_output_dir(out: Path, model_path: str, *, checkpoints: bool, cfg) -> None:
    """Fail before any work (and without creating anything) when the output folder cannot be
    written, holds something already (unless `cfg.overwrite` replaces its run or `cfg.resume`
    continues it: as `sample` and `score` refuse an existing output), or the disk is too
    small."""
    missing = check_output_location(out, folder=True, field="output_dir")
    if not (cfg.overwrite or cfg.resume) and out.is_dir() and any(out.iterdir()):
        raise UserError(
            "output folder is not empty (pass --overwrite true to replace its run, or "
            "--resume true to continue it)",
            file=out,
            field="output_dir",
        )
    base = missing[-1].parent if missing else out  # the folder that exists (for the disk check)
    folder = Path(model_path)
    weights = sum(f.stat().st_size for f in folder.glob("*.safetensors")) if folder.is_dir() else 0
    # a checkpoint holds the weights plus AdamW's two moments; the final save, the weights
    need = weights * (3 if checkpoints else 1)
    free = shutil.disk_usage(base).free
    if need > free:
        raise UserError(
            f"not enough disk space: about {need / 2**30:.1f} GiB needed for a checkpoint, "
            f"{free / 2**30:.1f} GiB free",
            file=out,
        )


def last_complete_checkpoint(out: Path) -> str | None:
    """The newest checkpoint whose save finished (a kill can leave a partial one behind)."""
    done = [
        c
        for c in out.glob("checkpoint-*")
        if (c / "trainer_state.json").is_file() and c.name.split("-")[-1].isdigit()
    ]
    return str(max(done, key=lambda c: int(c.name.split("-")[-1]))) if done else None


def save_final(trainer: Trainer, cfg, tokenizer, out: Path, load_base) -> None:
    """Save a plain `save_pretrained` model + tokenizer in output_dir (LoRA merged by default).

    `trainer.save_model` is collective under FSDP/DeepSpeed (every process calls it, rank 0
    writes). A LoRA merge starts from the saved adapter and the base weights on disk, so it works
    however the adapter was sharded in training (ZeRO-3 included); `load_base()` loads the base
    model as training started from it.
    """
    if trainer.is_world_process_zero():  # the per-step log beside the model, for reports
        write_json(out / "trainer_state.json", dataclasses.asdict(trainer.state))
    lora_merge = cfg.use_lora and cfg.merge_lora
    trainer.save_model(str(out / "adapter" if lora_merge else out))
    if not trainer.is_world_process_zero():
        return
    if lora_merge:
        from peft import PeftModel
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        # only this process loads the base: ZeRO-3's collective partitioning at load must be off
        # (training is over; nothing else loads under this run's DeepSpeed config)
        unset_hf_deepspeed_config()
        with quiet_peft():
            merged = PeftModel.from_pretrained(load_base(), str(out / "adapter"))
        merged = merged.merge_and_unload()
        merged.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))


# what an earlier run in the folder leaves that would mislead after `--overwrite`: checkpoints
# a later `--resume` would continue, the LoRA adapter, the summary that marks a finished run
STALE_RUN_FILES = ("checkpoint-*", "adapter", "train_summary.json")


def clear_run(out: Path) -> None:
    """Remove an earlier run's checkpoints, adapter and summary from `out` (`--overwrite`);
    other files are replaced as the new run writes them, and files not ours are left alone."""
    for pattern in STALE_RUN_FILES:
        for path in out.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def start_outputs(out: Path, cfg, args, data_report: dict) -> None:
    """After validation, the first write of a training run: the output folder, its data report
    and the resolved configuration (policy and reward-model training alike), by the main
    process once every process has checked the folder (`check_output_dir`: a process that
    saw another's first files would refuse a non-empty folder)."""
    _ = args.device  # sets up the processes' state (as the Trainer would)
    state = args.distributed_state
    if state is not None:
        state.wait_for_everyone()
    if state is None or state.is_main_process:
        if cfg.overwrite and not cfg.resume:
            clear_run(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "data_report.json", data_report)
        # the values used: a loss option left unset is recorded as the loss's default
        used = dataclasses.asdict(cfg) | cfg.effective_loss_options()
        sections = {"rankalign": used, "training_args": args.to_dict()}
        dump_config(out / "rankalign_config.yaml", sections)
    if state is not None:
        state.wait_for_everyone()


def train_and_save(trainer: Trainer, cfg, tokenizer, out: Path, load_base) -> dict:
    """Train (from the last complete checkpoint with `resume`) and save the final model
    (`save_final`); returns the summary's common part."""
    resume = None
    if cfg.resume:
        resume = last_complete_checkpoint(out)
        if resume is None:
            print(f"rankalign: no checkpoint in {out}; starting from scratch", file=sys.stderr)
    result = trainer.train(resume_from_checkpoint=resume)
    save_final(trainer, cfg, tokenizer, out, load_base)
    return {
        "train_loss": result.training_loss,
        "global_step": result.global_step,
        "output_dir": str(out),
    }
