"""`rankalign score`: fill in `scores` of ranked lists from one or more rewards (paper §3.1).

    rankalign score --in candidates.jsonl --out scored.jsonl \\
        --reward rm:./my-rm --reward length:lambda=0.001,unit=chars

Reward specs are parsed by scoring/rewards/registry.py against each kind's schema (kinds:
`rankalign score --help`). Each row gets `score_parts` ({reward name: one value per response})
and `scores` = sum of weight * part. Beside the output:
`<stem>.config.yaml` (resolved config), `<stem>.summary.json` (also printed) and, when rows fail,
`<stem>.failed.jsonl`.

Validate, then write: the options, every reward spec (types, ranges, choices; a YAML mapping must
be flat), the output location, every input row and every reward's model files are checked before
anything is written; the reward models are loaded before the first write too.

Resume: rows are committed in atomic shards (`<out>.parts/`); a killed run, rerun with the same
command, scores only the rows not done yet and merges everything in input order, so every row
appears exactly once. A run with other rewards over an unfinished one is refused (use
`--overwrite true` to start afresh).

Scale: launched as several processes (`torchrun --nproc_per_node N -m rankalign.cli score ...` or
`accelerate launch`), each process loads the rewards on its own device and scores every N-th
remaining row into its own shards; process 0 merges them in input order.

Failure policy (`--on_failure`), for responses a reward cannot score (a judge answer that stays
unparseable after retries, or a request that fails for good). Never a silent 0, never NaN, never
a crash; the row always records `score_failed: {reward: [{"response": i, "reason": ...}]}`:
- `skip` (default, as the paper: Wombat kept the 46k of 52k lists whose judgment parsed): the row
  goes to `<stem>.failed.jsonl` with its partial `score_parts` and no `scores`; it is left out of
  the training file and counted in the summary. Rerun on that file to try again.
- `min`: a failed response gets the lowest value that reward gave to the rest of its list (it
  can only tie the worst response, never outrank a judged one); the row stays in the output.
  A list where nothing was scored is skipped as above.
A reward value that is NaN or infinite is an error naming the row (exit 2).

Summary (paper Table 6 columns): per response source and overall, n, mean and std of the score
over responses, and max = the mean over lists of the list's best score; per reward the mean and
std of its part; lists with ties; failures.
"""

from __future__ import annotations

import shutil
import statistics
from collections import defaultdict
from pathlib import Path

from rankalign.config import dump_config
from rankalign.data import (
    ShardedWriter,
    check_output_location,
    check_resume,
    load_lists,
    parts_folder,
    side_path,
    start_run,
    write_json,
    write_jsonl,
)
from rankalign.errors import UserError
from rankalign.metrics import reward_table
from rankalign.models import check_device, process_state
from rankalign.scoring.config import ScoreConfig
from rankalign.scoring.rewards.base import Reward, weighted_sum
from rankalign.scoring.rewards.registry import (
    build_rewards,
    check_reward_models,
    parse_reward_specs,
)


def combine(row: dict, loc: dict, rewards: list[Reward], values: list[list], policy: str) -> dict:
    """Set score_parts / scores / score_failed of one row from each reward's values for it.

    Non-finite values follow `weighted_sum`'s policy; score never writes one: a NaN or infinite
    part, or a weighted sum that overflows, is a UserError naming the row and the response. A
    part that is None (the reward failed) gets the `--on_failure` policy (module docstring)."""
    k = len(row["responses"])
    for reward, vals in zip(rewards, values):
        if len(vals) != k:
            raise RuntimeError(f"reward '{reward.name}' gave {len(vals)} values for {k} responses")

    def refuse(i: int, reason: str) -> UserError:
        return UserError(
            f"{reason} for response {i} of row '{row['id']}'",
            file=loc.get("file"),
            line=loc.get("line"),
            row=loc.get("row"),
            field=f"responses[{i}]",
        )

    for i in range(k):  # before the min policy copies a value: name the response that gave it
        total = weighted_sum(rewards, [vals[i] for vals in values])
        if total.invalid:
            raise refuse(i, total.reason)
    parts, failed = {}, {}
    for reward, vals in zip(rewards, values):
        bad = [i for i, v in enumerate(vals) if v is None]
        if bad:
            why = reward.failures.get(row["id"], {})
            failed[reward.name] = [{"response": i, "reason": why.get(i, "no value")} for i in bad]
            scored = [v for v in vals if v is not None]
            if policy == "min" and scored:
                vals = [min(scored) if v is None else v for v in vals]
        parts[reward.name] = list(vals)
    row["score_parts"] = parts
    if failed:
        row["score_failed"] = failed
    totals = [weighted_sum(rewards, [parts[r.name][i] for r in rewards]) for i in range(k)]
    for i, total in enumerate(totals):  # finite parts, overflowing weights (the min fill too)
        if total.invalid:
            raise refuse(i, total.reason)
    if all(t.total is not None for t in totals):
        row["scores"] = [t.total for t in totals]
    else:
        row.pop("scores", None)  # goes to the failed file: nothing invented
    return row


def summarize(rows: list[dict], failed_rows: list[dict]) -> dict:
    every, by_source, parts = [], defaultdict(list), defaultdict(list)
    ties = all_tied = 0
    for r, row in enumerate(rows):
        scores = row["scores"]
        sources = row.get("sources") or ["unknown"] * len(scores)
        for s, v in zip(sources, scores):
            every.append((r, v))
            by_source[s].append((r, v))
        for name, vals in row.get("score_parts", {}).items():
            parts[name] += vals
        if len(set(scores)) < len(scores):
            ties += 1
            all_tied += len(set(scores)) == 1
    failures: dict[str, dict] = defaultdict(lambda: {"responses": 0, "rows": 0})
    for row in [*rows, *failed_rows]:
        for name, items in row.get("score_failed", {}).items():
            failures[name]["responses"] += len(items)
            failures[name]["rows"] += 1
    return {
        "rows": len(rows),
        "responses": len(every),
        "rows_skipped": len(failed_rows),
        "all": reward_table(every),
        "per_source": {s: reward_table(p) for s, p in sorted(by_source.items())},
        "per_reward": {
            n: {"mean": statistics.fmean(v), "std": statistics.pstdev(v)}
            for n, v in parts.items()
            if v
        },
        "lists_with_ties": ties,
        "lists_all_tied": all_tied,
        "failures": dict(failures),
        "note": "mean/std over responses; max = mean over lists of the list's best score "
        "(RRHF Table 6; 'mean best' in the console); best = the highest score",
    }


def summary_lines(s: dict, out: Path, failed_path: Path) -> list[str]:
    """The console summary. `mean best` (JSON key `max`) is RRHF Table 6's max column: the mean
    over lists of each list's best score, so it may be below a source's mean over responses;
    `best` is the single highest score. Source names are shown whole (the column fits them)."""
    rows = [("all", s["all"]), *s["per_source"].items()]
    rows = [(name, st) for name, st in rows if st["responses"]]
    width = max([len("source"), *(len(name) for name, _ in rows)])
    lines = [
        f"rankalign score: {s['rows']} rows, {s['responses']} responses -> {out}",
        f"  {'source':<{width}} {'n':>7} {'mean':>9} {'std':>9} {'mean best':>9} {'best':>9}",
    ]
    for name, st in rows:
        lines.append(
            f"  {name:<{width}} {st['responses']:>7} {st['mean']:>9.4f} {st['std']:>9.4f} "
            f"{st['max']:>9.4f} {st['best']:>9.4f}"
        )
    lines.append(
        "  mean/std: over responses; mean best: mean over lists of each list's best score "
        "(RRHF Table 6 'max'); best: the highest score"
    )
    lines.append(f"  lists with ties: {s['lists_with_ties']} (all tied: {s['lists_all_tied']})")
    for name, f in s["failures"].items():
        lines.append(f"  {name} failures: {f['responses']} responses in {f['rows']} rows")
    if s["rows_skipped"]:
        lines.append(f"  {s['rows_skipped']} rows skipped (unscored) -> {failed_path}")
    return lines


def print_summary(s: dict, out: Path, failed_path: Path) -> None:
    for line in summary_lines(s, out, failed_path):
        print(line)


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders this run created (deepest first) if they are still empty."""
    for folder in folders:  # check_output_location lists them deepest first
        try:
            folder.rmdir()
        except OSError:
            return


def run(cfg: ScoreConfig) -> dict | None:
    """Score `cfg.input` into `cfg.out` (resumable); returns the summary (None on processes
    other than the first)."""
    # ---- validation: every check passes before anything is written
    specs = parse_reward_specs(cfg.reward)
    if not specs:
        raise UserError(
            "no reward given: pass --reward SPEC (e.g. sentiment, rm:PATH, "
            "judge:model=NAME,base_url=URL)",
            field="reward",
        )
    check_device(cfg.device)
    out = Path(cfg.out)
    config_path, summary_path = side_path(out, ".config.yaml"), side_path(out, ".summary.json")
    failed_path = side_path(out, ".failed.jsonl")
    parts = parts_folder(out)
    created = check_output_location(
        out, files=[config_path, summary_path, failed_path], folders=[parts]
    )
    run = {"input": str(cfg.input), "rewards": [s.as_dict() for s in specs]}
    done = check_resume(out, run, overwrite=cfg.overwrite)  # a partial run of the same command
    data = load_lists(
        cfg.input, min_responses=1, empty_responses=cfg.empty_responses, limit=cfg.max_rows
    )
    # every model path of every reward, before any is loaded
    check_reward_models(specs, defaults={"allow_pickle": cfg.allow_pickle})

    # Several processes (torchrun / accelerate launch): each scores every world-th remaining row
    # into its own shards; process 0 merges them in input order.
    state = process_state(cfg.device)
    rank, world = state.process_index, state.num_processes
    todo = [(row, loc) for row, loc in zip(data.rows, data.locations) if row["id"] not in done]
    todo = todo[rank::world]
    shared = ("batch_size", "max_length", "dtype", "trust_remote_code", "allow_pickle")
    defaults = {key: getattr(cfg, key) for key in (*shared, "chat_template")}  # specs may override
    defaults["device"] = str(state.device) if world > 1 and cfg.device == "auto" else cfg.device
    rewards = build_rewards(specs, defaults) if todo else []  # loads models: errors first

    # ---- writing
    # every process has read `done` before process 0 clears (--overwrite) or records the run;
    # each writer touches only its own shards, so none waits for the others' writers
    state.wait_for_everyone()
    if state.is_main_process:
        start_run(out, run, overwrite=cfg.overwrite)
    state.wait_for_everyone()
    writer = ShardedWriter(out, cfg.shard_size, tag=f"rank{rank}-" if world > 1 else "")
    if done and state.is_main_process:
        print(f"rankalign score: resuming, {len(done)} of {len(data.rows)} rows already scored")

    from tqdm.auto import tqdm

    try:
        if state.is_main_process:
            dump_config(config_path, {"score": cfg, "run": run})
        with tqdm(
            total=len(todo) + (len(done) if world == 1 else 0),
            initial=len(done) if world == 1 else 0,
            desc="score" if world == 1 else f"score (process 0 of {world})",
            unit="row",
            dynamic_ncols=True,
            disable=not state.is_main_process,
        ) as bar:
            for start in range(0, len(todo), cfg.shard_size):
                chunk = todo[start : start + cfg.shard_size]
                rows = [
                    {k: v for k, v in row.items() if k not in ("score_parts", "score_failed")}
                    for row, _ in chunk
                ]
                values = [reward.score(rows) for reward in rewards]
                scored = [
                    combine(row, loc, rewards, [v[r] for v in values], cfg.on_failure)
                    for r, (row, (_, loc)) in enumerate(zip(rows, chunk))
                ]
                for row in scored:  # all checked before any is committed
                    writer.add(row)
                writer.flush()
                bar.update(len(chunk))
    except BaseException:
        # a failure before the first shard (e.g. an unreachable judge): leave nothing behind
        if world == 1 and not any(writer.parts.glob("shard-*.jsonl")):
            shutil.rmtree(writer.parts, ignore_errors=True)
            config_path.unlink(missing_ok=True)
            _remove_empty(created)
        raise
    state.wait_for_everyone()
    if not state.is_main_process:
        return None

    order = [row["id"] for row in data.rows]
    by_id = {r["id"]: r for r in writer.done_rows()}
    failed = [by_id[i] for i in order if i in by_id and "scores" not in by_id[i]]
    if failed:
        write_jsonl(failed_path, failed)
    else:
        failed_path.unlink(missing_ok=True)
    skipped = {r["id"] for r in failed}
    kept = writer.finish([i for i in order if i not in skipped])
    summary = summarize(kept, failed)
    write_json(summary_path, summary)
    print_summary(summary, out, failed_path)
    return summary
