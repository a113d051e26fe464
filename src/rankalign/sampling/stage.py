"""`rankalign sample`: k candidate responses per prompt, from many sources (RRHF paper §4.1).

A run has a list of sources, each with its own strategy and count; every response is recorded
with the source that produced it:

    prompts: prompts.jsonl
    out: candidates.jsonl
    model: path-or-hub-name            # the policy (default for policy sources)
    max_new_tokens: 128
    stop: ["\\n\\nHuman:", "\\n\\nAssistant:"]   # truncate every source's responses (§4.1)
    sources:
      - {kind: policy, strategy: diverse-beam, num: 4, num_beams: 4, num_beam_groups: 4,
         diversity_penalty: 1.0, temperature: 0.8}
      - {kind: policy, strategy: sample, num: 4, top_p: 1.0, temperature: 0.8}
      - {kind: policy, model: other/model, strategy: greedy, num: 1}   # another local model
      - {kind: dataset}                # the responses already in the data ("P" of Table 1)
      - {kind: openai, model: gpt-4o-mini, base_url: http://127.0.0.1:8000/v1, num: 1}

or a preset of the paper's Table 1: `--preset BP|SP|DP|D|P` (explicit `sources` are added after
the preset's). Output rows are ranked lists without scores: {"id", "prompt", "responses",
"sources", ...other input fields}. Exact duplicate and empty responses (after stop-string
truncation and stripping) are removed and counted; a summary is printed and saved beside the output
(`<out stem>.summary.json`), with the resolved config (`<out stem>.config.yaml`).

Reproducibility: each sampled response has its own seed, derived from (seed, source index, prompt
id, sample index), so it does not depend on the batch, the number of processes or a resume (see
`decoding.sample` for the floating-point caveat); beam strategies are deterministic.

Validate, then write: options (with every source's values), the output location, every prompt
row, every model (loaded) and every prompt's chat template are checked before the run record and
config are written.

Scale: prompts are batched by token length; rows are committed in atomic shards (rankalign.data's resume
protocol: OUT.parts/, one shard series per process), so
a killed run resumes where it stopped (same command) and ends with every prompt exactly once.
Data parallel: `accelerate launch --multi_gpu -m rankalign.cli sample ...` (on CPU:
`torchrun --standalone --nproc_per_node N -m rankalign.cli sample ...`); each process takes a
slice of the remaining prompts, writes its own shards, and process 0 merges them in input order.
Policy sources generate through the run's `backend` (`generation.py`: `hf` by default; `vllm`
when it is installed: sampling, greedy, plain beam search, as one process, vLLM spreading a
model over `tensor_parallel_size` GPUs itself; or any registered local backend); `openai`
sources through the `openai` backend.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from rankalign.data import (
    check_output_location,
    check_resume,
    parts_folder,
    side_path,
    start_run,
)
from rankalign.decoding import derive_seed, truncate_at_stop
from rankalign.errors import UserError
from rankalign.models import check_device
from rankalign.sampling.backends import (
    check_backend_sources,
    dataset_responses,
    load_policy,
    load_remote,
)
from rankalign.sampling.config import SampleConfig

# ----------------------------------------------------------------------------- helpers


def _identity(cfg: SampleConfig) -> dict:
    """What decides the outputs: a resumed run must not mix two configurations."""
    keys = (
        "prompts",
        "model",
        "max_new_tokens",
        "stop",
        "seed",
        "max_prompt_length",
        "chat_template",
        "backend",
        "dtype",
        "max_rows",
    )
    return {k: getattr(cfg, k) for k in keys} | {"sources": [s.as_dict() for s in cfg.sources]}


# ----------------------------------------------------------------------------- backends


def build_row(row: dict, produced: list, stop: list[str], truncated: bool) -> dict:
    """Merge the sources' responses: truncate at stop strings, drop empties and exact duplicates.

    produced: per source, a list of (label, text) or (label, Exception) for a failed request.
    Counts go into the row's private `_stats` (summed over shards at the end, so they survive a
    kill / resume and several processes).
    """
    responses, sources, seen = [], [], set()
    stats: dict[str, Counter] = defaultdict(Counter)
    for label, texts in produced:
        if isinstance(texts, Exception):
            stats[label]["failed"] += 1
            continue
        for text_label, text in texts:
            st = stats[text_label]
            st["generated"] += 1
            text = truncate_at_stop(text, stop)
            if not text:
                st["empty"] += 1
            elif text in seen:
                st["duplicates"] += 1
            else:
                seen.add(text)
                responses.append(text)
                sources.append(text_label)
                st["kept"] += 1
    out = {"id": row["id"], "prompt": row["prompt"], "responses": responses, "sources": sources}
    out.update(
        {
            k: v
            for k, v in row.items()
            if k not in ("id", "prompt", "responses", "scores", "sources")
        }
    )
    out["_stats"] = {k: dict(v) for k, v in stats.items()}
    if truncated:
        out["_prompt_truncated"] = True
    return out


# ----------------------------------------------------------------------------- the run


def _side_paths(out: Path) -> dict[str, Path]:
    return {
        "config": side_path(out, ".config.yaml"),
        "summary": side_path(out, ".summary.json"),
    }


def validate(cfg: SampleConfig, state) -> tuple:
    """Every check of a run, cheapest first; writes nothing. Returns (data, policies, the ids
    a partial run of the same settings already finished).

    The options were checked by parse_config; here: the output location and what is already
    there, every input row, the backend, every model (loaded) and every prompt's chat template."""
    from rankalign.data import load_lists

    out = Path(cfg.out)
    world = state.num_processes
    check_device(cfg.device)
    check_output_location(out, files=list(_side_paths(out).values()), folders=[parts_folder(out)])
    done = check_resume(out, _identity(cfg), overwrite=cfg.overwrite)
    data = load_lists(cfg.prompts, empty_responses="drop", limit=cfg.max_rows)
    check_backend_sources(cfg, world)
    policies = _load_policies(cfg, cfg.device or str(state.device))
    _check_prompts(cfg, data, policies)
    return data, policies, done


def _load_policies(cfg: SampleConfig, device: str) -> dict[str, Any]:
    """Each distinct model of the policy sources, loaded once through the run's backend (its
    files checked first)."""
    policies: dict[str, Any] = {}
    for s in cfg.sources:
        if s.kind == "policy" and (s.model or cfg.model) not in policies:
            policies[s.model or cfg.model] = load_policy(s.model or cfg.model, cfg, device)
    return policies


def _check_prompts(cfg: SampleConfig, data, policies: dict[str, Any]) -> None:
    """Every prompt renders with every policy's tokenizer (chat template) before any output."""
    from rankalign.tokenization import prompt_text

    for name, policy in policies.items():
        if policy.tokenizer is None:  # a backend that sends the text elsewhere
            continue
        for row, loc in zip(data.rows, data.locations):
            try:
                prompt_text(policy.tokenizer, row["prompt"], policy.chat_template)
                continue
            except UserError as e:
                problem = f"{e} (model {name})"
            except Exception as e:  # a template that raises (e.g. roles must alternate)
                problem = (
                    f"the chat template of {name} fails on this prompt: "
                    f"{type(e).__name__}: {str(e)[:200]}"
                )
            raise UserError(
                problem,
                file=loc.get("file"),
                line=loc.get("line"),
                row=loc.get("row"),
                field="prompt",
            )


def _prepare_output(cfg: SampleConfig, out: Path) -> None:
    """Process 0, after `validate`: clear what --overwrite replaces, record the run, write the
    config."""
    from rankalign.config import dump_config

    start_run(out, _identity(cfg), overwrite=cfg.overwrite)
    resolved = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    resolved["sources"] = [s.as_dict() for s in cfg.sources]
    dump_config(_side_paths(out)["config"], {"sample": resolved})


def run(cfg: SampleConfig) -> dict | None:
    """Sample every prompt; returns the summary (on process 0; None on the others).

    Validate, then write: options, output location, input rows, models and prompts are all
    checked (by every process) before process 0 records the run and writes the config."""
    from tqdm.auto import tqdm

    from rankalign.data import ShardedWriter
    from rankalign.models import process_state

    started = time.time()
    state = process_state(cfg.device)
    rank, world = state.process_index, state.num_processes
    out = Path(cfg.out)
    data, policies, done = validate(cfg, state)
    state.wait_for_everyone()  # every process has validated (and read `done`) before any write
    if state.is_main_process:
        _prepare_output(cfg, out)
    state.wait_for_everyone()
    todo = [r for r in data.rows if r["id"] not in done][rank::world]
    if done and state.is_main_process:
        print(f"rankalign sample: resuming, {len(done)} of {len(data.rows)} prompts already done")

    writer = ShardedWriter(out, cfg.shard_size, tag=f"rank{rank}-" if world > 1 else "")
    if todo:
        _sample_rows(cfg, todo, writer, state, tqdm, policies)
    writer.flush()
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    return _merge(cfg, writer, data, world, time.time() - started)


def _sample_rows(
    cfg: SampleConfig, todo: list[dict], writer, state, tqdm, policies: dict[str, Any]
) -> None:
    encoded = {name: [p.encode(r["prompt"]) for r in todo] for name, p in policies.items()}
    first = next(iter(encoded.values()), None)
    # batch prompts of similar length (longest first: memory problems show up at once)
    length = [
        len(first[i][0]) if first else len(json.dumps(r["prompt"])) for i, r in enumerate(todo)
    ]
    order = sorted(range(len(todo)), key=lambda i: -length[i])
    with tqdm(
        total=len(todo),
        unit="prompt",
        desc="sample",
        dynamic_ncols=True,
        disable=not state.is_local_main_process,
    ) as bar:
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            rows = [todo[i] for i in batch]
            produced: list[list] = [[] for _ in batch]
            for si, src in enumerate(cfg.sources):
                if src.kind == "dataset":
                    for k, row in enumerate(rows):
                        produced[k].append(("dataset", dataset_responses(row, src)))
                    continue
                label = src.label()
                seeds = [
                    [derive_seed(cfg.seed, si, r["id"], j) for j in range(src.num)] for r in rows
                ]
                request = src.request(cfg.max_new_tokens, cfg.stop)
                if src.kind == "policy":
                    name = src.model or cfg.model
                    prompts = [encoded[name][i][0] for i in batch]
                    texts = policies[name].generate(request, prompts, seeds)
                else:  # openai: one seed per prompt (servers may ignore it)
                    remote = load_remote(src, cfg)
                    prompts = [remote.encode(r["prompt"])[0] for r in rows]
                    texts = remote.generate(request, prompts, seeds)
                for k, t in enumerate(texts):
                    if isinstance(t, Exception) and cfg.on_remote_error == "fail":
                        writer.flush()  # finished batches stay: a rerun resumes after them
                        raise UserError(
                            f"source {label}: prompt '{rows[k]['id']}': {t} "
                            "(rerun to resume, or set on_remote_error: skip)"
                        )
                    produced[k].append(
                        (label, t if isinstance(t, Exception) else [(label, x) for x in t])
                    )
            for i, row, prod in zip(batch, rows, produced):
                truncated = any(enc[i][1] for enc in encoded.values())
                writer.add(build_row(row, prod, cfg.stop, truncated))
            bar.update(len(batch))


def _merge(cfg: SampleConfig, writer, data, world: int, elapsed: float) -> dict:
    """Process 0: all shards -> the output in input order; counts -> the summary."""
    from rankalign.data import write_json

    per_source, truncated = defaultdict(Counter), 0

    def take_counts(row: dict) -> dict:  # the rows' private counters go into the summary
        nonlocal truncated
        row = dict(row)
        for label, counts in row.pop("_stats").items():
            per_source[label].update(counts)
        truncated += bool(row.pop("_prompt_truncated", False))
        return row

    rows = writer.finish([r["id"] for r in data.rows], take_counts)
    out = writer.out
    ks = [len(r["responses"]) for r in rows]
    names = {
        "generated": "generated",
        "kept": "kept",
        "duplicates": "duplicates_removed",
        "empty": "empty_removed",
        "failed": "failed_prompts",
    }
    summary = {
        "out": str(out),
        "prompts": len(rows),
        "responses": sum(ks),
        "k": {"min": min(ks), "mean": round(sum(ks) / len(ks), 3), "max": max(ks)},
        "rows_with_fewer_than_2_responses": sum(k < 2 for k in ks),
        "duplicates_removed": sum(c["duplicates"] for c in per_source.values()),
        "empty_removed": sum(c["empty"] for c in per_source.values()),
        "per_source": {
            label: {v: c[k] for k, v in names.items()} for label, c in per_source.items()
        },
        "prompts_truncated": truncated,
        "input": data.report.as_dict(),
        "processes": world,
        "elapsed_s": round(elapsed, 2),
    }
    write_json(side_path(out, ".summary.json"), summary)
    print(
        f"rankalign sample: {len(rows)} prompts -> {out} ({sum(ks)} responses; k min "
        f"{summary['k']['min']}, mean {summary['k']['mean']}, max {summary['k']['max']})"
    )
    for label, c in summary["per_source"].items():
        print(
            f"  {label}: generated {c['generated']}, kept {c['kept']}, duplicates removed "
            f"{c['duplicates_removed']}, empty removed {c['empty_removed']}"
            + (f", failed prompts {c['failed_prompts']}" if c["failed_prompts"] else "")
        )
    print(
        f"  removed: {summary['duplicates_removed']} exact duplicates, {summary['empty_removed']} empty "
        f"responses; {truncated} prompts cut to {cfg.max_prompt_length} tokens; "
        f"summary: {side_path(out, '.summary.json')}"
    )
    return summary
