"""`rankalign evaluate`: reward, perplexity, RM accuracy, best-of-n, win rate, BLEU/ROUGE,
reward-length correlation, and a report with plots (RRHF paper §4, RLHF Workflow Fig. 5).

    rankalign evaluate --model rrhf=runs/rrhf --baseline base=smollm2 dataset:chosen \\
        --prompts heldout.jsonl --reward sentiment --out eval/ \\
        [--pairs test_pairs.jsonl] [--samples scored.jsonl] [--train_data train.jsonl] \\
        [--train_runs runs/rrhf] [--loop_run runs/loop]

Every `--model` / `--baseline` is an *entry*: `NAME=SPEC` or `SPEC`, where SPEC is a model (a
folder, a hub name, `smollm2`), a file of responses (ranked-list rows; the first response of each
row, matched by id), or `dataset:FIELD`, the prompts file's own responses (`dataset:chosen`,
`dataset:rejected` of pairwise rows, `dataset:reference`, or any other field). Models generate on
the prompts with the sample stage's decoder (greedy, 128 new tokens, cut at a new
`Human:`/`Assistant:` turn by default); generations are cached in `OUT/generations/NAME.jsonl`
and reused by a rerun with the same settings.

Metrics (each section only when its inputs are given):
- reward of every entry: mean over prompts, std, and a 95% percentile-bootstrap interval;
- perplexity of every entry's responses given their prompts under `--ppl_model`
  (default: the base policy, i.e. the first model among the baselines, else the first model);
- win rate of every `--model` against every `--baseline`, per prompt, ties counted; with an LLM
  judge both orders are asked and only a consistent verdict counts (else a tie);
- RM accuracy on `--pairs`: for the reward and for every model as a reward model via
  p_i = logp / tokens (RRHF paper Table 5);
- best-of-n curve from scored samples (`--samples`, or `--num_samples K` drawn here);
- reward-length Pearson r per prompt over the same samples (RLHF Workflow Fig. 5);
- sample statistics of scored training files by source (RRHF paper Table 6);
- BLEU / ROUGE against the prompts' `reference` field;
- training curves (`--train_runs`, trainer_state.json) and per-iteration loop metrics.
Outputs: OUT/metrics.json, OUT/report.md, OUT/report.html, PNG plots, OUT/per_prompt.jsonl.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import dump_config, parse_config
from .data import check_output_location, load_lists, read_json_file, write_json, write_jsonl
from .errors import UserError
from .models import default_device, load_tokenizer
from .tokenization import CHAT_TEMPLATE_MODES

HH_STOP = ["\n\nHuman:", "\n\nAssistant:"]
LENGTH_UNITS = ("tokens", "chars", "words")
PAIRWISE_KINDS = ("judge", "preference")  # rewards that look at a row's responses together


@dataclass
class EvaluateConfig:
    """Options of `rankalign evaluate` (YAML keys = flags)."""

    model: list[str] = field(
        default_factory=list,
        metadata={
            "help": "entries to evaluate: NAME=SPEC or SPEC; SPEC = model folder / hub name / smollm2, "
            "a responses file, or dataset:FIELD"
        },
    )
    baseline: list[str] = field(
        default_factory=list,
        metadata={
            "help": "baseline entries (same forms): evaluated too, and each --model's win rate "
            "against each baseline is reported"
        },
    )
    prompts: str | None = field(
        default=None, metadata={"help": "held-out prompts (any layout data.py reads)"}
    )
    reward: list[str] = field(
        default_factory=list,
        metadata={
            "help": "reward spec(s) of the score stage (sentiment, rm:PATH, judge:..., python:M:F, ...); "
            "several are summed with their weights"
        },
    )
    out: str = field(default="eval", metadata={"help": "output folder"})
    # generation
    strategy: str = field(
        default="greedy", metadata={"help": "greedy | sample (top-p/temperature)"}
    )
    temperature: float = field(
        default=0.8,
        metadata={"help": "sampling temperature (strategy sample, --num_samples)", "check": "> 0"},
    )
    top_p: float = field(
        default=1.0,
        metadata={"help": "nucleus mass (strategy sample, --num_samples)", "check": "(0, 1]"},
    )
    max_new_tokens: int = field(default=128, metadata={"help": "new tokens", "check": ">= 1"})
    stop: list[str] = field(
        default_factory=lambda: list(HH_STOP),
        metadata={
            "help": "responses are cut at the first stop string (RRHF §4.1: a new Human:/Assistant: turn)"
        },
    )
    max_prompts: int | None = field(
        default=None, metadata={"help": "only the first N prompts", "check": ">= 1"}
    )
    max_prompt_length: int = field(
        default=1024, metadata={"help": "prompt tokens kept (cut from the left)", "check": ">= 1"}
    )
    batch_size: int = field(
        default=8, metadata={"help": "prompts per generation / scoring batch", "check": ">= 1"}
    )
    chat_template: str = field(default="auto", metadata={"help": "auto | always | never"})
    seed: int = field(default=0, metadata={"help": "sampling and bootstrap seed", "check": ">= 0"})
    regenerate: bool = field(default=False, metadata={"help": "ignore cached generations"})
    dtype: str = field(default="float32", metadata={"help": "float32 | bfloat16 | float16"})
    device: str | None = field(
        default=None, metadata={"help": "cpu, cuda, cuda:1 (default: cuda if available)"}
    )
    trust_remote_code: bool = False
    allow_pickle: bool = field(default=False, metadata={"help": "allow .bin (pickle) weights"})
    # reward statistics
    bootstrap_resamples: int = field(
        default=1000, metadata={"help": "bootstrap resamples of the mean", "check": ">= 1"}
    )
    confidence: float = field(
        default=0.95, metadata={"help": "bootstrap interval level", "check": "(0, 1)"}
    )
    # perplexity
    ppl_model: str = field(
        default="auto",
        metadata={
            "help": "LM that scores perplexity: auto (the base policy: first model baseline, else first "
            "model), a model path, or none"
        },
    )
    max_length: int = field(
        default=1024,
        metadata={"help": "token limit of prompt + response when scoring", "check": ">= 2"},
    )
    # win rate
    win_judge: list[str] = field(
        default_factory=list,
        metadata={
            "help": "reward spec(s) that judge the win rate (default: --reward); LLM judges are asked "
            "in both orders"
        },
    )
    tie_tolerance: float = field(
        default=0.0, metadata={"help": "|r_model - r_baseline| <= this is a tie", "check": ">= 0"}
    )
    # RM accuracy
    pairs: str | None = field(
        default=None, metadata={"help": "pairwise (or scored ranked-list) test file"}
    )
    rm_scorers: list[str] = field(
        default_factory=lambda: ["reward", "models"],
        metadata={
            "help": "what scores the pairs: reward (the --reward), models (each --model/--baseline model "
            "via p_i), policy:PATH (p_i of that model), or another reward spec"
        },
    )
    # samples: best-of-n, reward-length correlation
    samples: list[str] = field(
        default_factory=list,
        metadata={"help": "scored ranked-list files (unscored ones are scored with --reward)"},
    )
    num_samples: int = field(
        default=0,
        metadata={
            "help": "also draw K samples per prompt from every model (temperature/top_p) for best-of-n "
            "and reward-length",
            "check": ">= 0",
        },
    )
    length_unit: str = field(default="tokens", metadata={"help": "tokens | chars | words"})
    # training statistics and logs
    train_data: list[str] = field(
        default_factory=list,
        metadata={"help": "scored training files: mean/std/max reward by source (RRHF Table 6)"},
    )
    train_runs: list[str] = field(
        default_factory=list,
        metadata={"help": "training output folders (trainer_state.json log_history)"},
    )
    loop_run: str | None = field(
        default=None, metadata={"help": "loop run folder (iter-*/metrics.json)"}
    )
    examples: int = field(
        default=3, metadata={"help": "prompts shown with every entry's response", "check": ">= 0"}
    )
    report: bool = field(default=True, metadata={"help": "write report.md / report.html / plots"})

    def __post_init__(self):
        for name in (
            "model",
            "baseline",
            "reward",
            "stop",
            "win_judge",
            "rm_scorers",
            "samples",
            "train_data",
            "train_runs",
        ):
            value = getattr(self, name)
            if value is None:
                setattr(self, name, [])
            elif isinstance(value, str):  # a YAML scalar where a list is expected
                setattr(self, name, [value])
        if self.strategy not in ("greedy", "sample"):
            raise ValueError(f"strategy must be greedy or sample, got '{self.strategy}'")
        if self.length_unit not in LENGTH_UNITS:
            raise ValueError(f"length_unit must be one of {', '.join(LENGTH_UNITS)}")
        if self.chat_template not in CHAT_TEMPLATE_MODES:
            raise ValueError(
                f"chat_template must be one of {', '.join(CHAT_TEMPLATE_MODES)}, "
                f"got '{self.chat_template}'"
            )
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError("stop strings must be non-empty strings")
        # numeric ranges: the fields' `check` metadata (config.check_options, run by
        # parse_config and again by `prepare`, so the API's configurations are checked too);
        # dtype: models.torch_dtype, in `prepare`


# ============================================================================ metrics (pure)


def bootstrap_ci(
    values, *, resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean.

    `resamples` times: draw n indices with replacement (numpy `default_rng(seed).integers(0, n,
    size=(resamples, n))`, drawn in row chunks, which gives the same numbers), take the mean of
    those values. The interval is the (1 - c)/2 and (1 + c)/2 quantiles of the means.
    No values: (None, None), the interval is undefined.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return None, None
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // x.size)  # bound memory: about 2M indices at a time
    means = np.concatenate(
        [
            x[rng.integers(0, x.size, size=(min(chunk, resamples - s), x.size))].mean(1)
            for s in range(0, resamples, chunk)
        ]
    )
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def reward_summary(values, *, resamples: int, confidence: float, seed: int) -> dict:
    """Mean, std and bootstrap interval of the rewards that are not None (None when none is)."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    if not x.size:
        why = "no response could be scored: the mean reward is undefined"
        keys = ("mean_reward", "std", "ci_low", "ci_high")
        return {**dict.fromkeys(keys), "n": 0, "notes": dict.fromkeys(keys, why)}
    low, high = bootstrap_ci(x, resamples=resamples, confidence=confidence, seed=seed)
    return {
        "mean_reward": float(x.mean()),
        "std": float(x.std()),
        "ci_low": low,
        "ci_high": high,
        "n": int(x.size),
    }


def expected_best_of_n(rewards, n: int) -> float:
    """E[max reward of n responses drawn without replacement from a prompt's k], exactly.

    The average of max(S) over all C(k, n) subsets S of size n. Sort ascending r_(1) <= ... <=
    r_(k): r_(i) is the maximum of exactly C(i-1, n-1) subsets (itself plus n-1 of the i-1 below
    it), so E = sum_i C(i-1, n-1) / C(k, n) * r_(i). (Ties do not matter: tied values are equal.)
    This is the unbiased estimator of best-of-n from k >= n samples, with no sampling noise.
    """
    r = sorted(float(v) for v in rewards)
    k = len(r)
    if not 1 <= n <= k:
        raise ValueError(f"best-of-{n} needs at least {n} samples, got {k}")
    total = math.comb(k, n)
    return sum(math.comb(i - 1, n - 1) * r[i - 1] for i in range(n, k + 1)) / total


def best_of_n_curve(score_lists: list[list[float]]) -> list[dict]:
    """Mean over prompts of expected_best_of_n for n = 1, 2, 4, ... and the largest k.

    At each n only prompts with k >= n count (their number is reported)."""
    kmax = max((len(s) for s in score_lists), default=0)
    ns = [2**j for j in range(kmax.bit_length()) if 2**j <= kmax]
    if kmax and kmax not in ns:
        ns.append(kmax)
    curve = []
    for n in ns:
        values = [expected_best_of_n(s, n) for s in score_lists if len(s) >= n]
        curve.append({"n": n, "expected_max": float(np.mean(values)), "prompts": len(values)})
    return curve


def pearson(x, y) -> float | None:
    """Pearson r = sum(dx dy) / sqrt(sum dx^2 sum dy^2); None when undefined (n < 2, constant)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 2:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return float((dx * dy).sum() / denom) if denom > 0 else None


def reward_length_correlation(rows: list[dict], length_fn, unit: str) -> dict:
    """Per prompt, Pearson r between the k responses' rewards and lengths (RLHF Workflow Fig. 5)."""
    per_prompt, skipped = [], 0
    for row in rows:
        lengths = [length_fn(r) for r in row["responses"]]
        r = pearson(row["scores"], lengths)
        if r is None:
            skipped += 1
            continue
        per_prompt.append(
            {"id": row["id"], "r": r, "k": len(lengths), "mean_length": float(np.mean(lengths))}
        )
    rs = np.asarray([p["r"] for p in per_prompt])
    out = {
        "length_unit": unit,
        "prompts": len(per_prompt),
        "skipped": skipped,
        "mean_r": float(rs.mean()) if rs.size else None,
        "median_r": float(np.median(rs)) if rs.size else None,
        "positive_fraction": float((rs > 0).mean()) if rs.size else None,
        "per_prompt": per_prompt,
    }
    if not rs.size:
        why = (
            "no prompt has 2 or more responses with varying rewards and lengths: "
            "the correlation is undefined"
        )
        out["notes"] = dict.fromkeys(("mean_r", "median_r", "positive_fraction"), why)
    return out


def compare(a, b, tolerance: float = 0.0) -> int:
    """+1 when a beats b by more than `tolerance`, -1 when b beats a, 0 for a tie."""
    return 1 if a - b > tolerance else -1 if b - a > tolerance else 0


def win_rate(verdicts: list[int | None]) -> dict:
    """Counts of per-prompt verdicts (+1 win, 0 tie, -1 loss, None = could not be judged)."""
    judged = [v for v in verdicts if v is not None]
    n = len(judged)
    wins, ties, losses = judged.count(1), judged.count(0), judged.count(-1)
    out = {
        "n": n,
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "unjudged": len(verdicts) - n,
        "win_rate": wins / n if n else None,
        "tie_rate": ties / n if n else None,
        "loss_rate": losses / n if n else None,
        "win_rate_ties_half": (wins + ties / 2) / n if n else None,
    }
    if not n:
        why = "no prompt could be judged: the rates are undefined"
        out["notes"] = {k: why for k in out if k.endswith(("_rate", "_half"))}
    return out


NO_PAIR_TIED = "every pair is tied (equal labelled scores): no pair to rank, accuracy undefined"
NO_PAIR_SCORED = "no pair could be scored: accuracy undefined"


def pair_accuracy(preferred: list[float], other: list[float], *, empty_note: str = "") -> dict:
    """Fraction of pairs where the preferred response scores strictly higher; ties apart.

    No pairs: accuracy is None with `notes` saying why (`empty_note`)."""
    correct = sum(p > o for p, o in zip(preferred, other))
    ties = sum(p == o for p, o in zip(preferred, other))
    n = len(preferred)
    out = {
        "n": n,
        "correct": correct,
        "wrong": n - correct - ties,
        "ties": ties,
        "accuracy": correct / n if n else None,
        "accuracy_ties_half": (correct + ties / 2) / n if n else None,
    }
    if not n:
        why = empty_note or "no pair: accuracy undefined"
        out["notes"] = {"accuracy": why, "accuracy_ties_half": why}
    return out


def labelled_pairs(rows: list[dict]) -> list[tuple[int, int, int]]:
    """(row, better, worse) for every pair of responses with different labelled scores."""
    out = []
    for r, row in enumerate(rows):
        s = row["scores"]
        out += [(r, i, j) for i in range(len(s)) for j in range(len(s)) if s[i] > s[j]]
    return out


def sample_stats(rows: list[dict]) -> list[dict]:
    """RRHF paper Table 6 columns by response source, then for all responses.

    mean, std: over all responses of the source (std with ddof 0); max: the mean over prompts of
    the best reward among that prompt's responses of the source; best: the single highest reward.
    """
    groups: dict[str, list[tuple[int, float]]] = {}
    for r, row in enumerate(rows):
        sources = row.get("sources") or ["unknown"] * len(row["scores"])
        for s, v in zip(sources, row["scores"]):
            groups.setdefault(s, []).append((r, v))
    groups["all"] = [(r, v) for r, row in enumerate(rows) for v in row["scores"]]
    out = []
    for source, pairs in groups.items():
        values = np.asarray([v for _, v in pairs], dtype=float)
        if not values.size:
            why = "no scored response: undefined"
            keys = ("mean", "std", "max", "best")
            out.append(
                {"source": source, "prompts": 0, "responses": 0, **dict.fromkeys(keys)}
                | {"notes": dict.fromkeys(keys, why)}
            )
            continue
        best: dict[int, float] = {}
        for r, v in pairs:
            best[r] = max(best.get(r, -math.inf), v)
        out.append(
            {
                "source": source,
                "prompts": len(best),
                "responses": int(values.size),
                "mean": float(values.mean()),
                "std": float(values.std()),
                "max": float(np.mean(list(best.values()))),
                "best": float(values.max()),
            }
        )
    return out


def reference_metrics(hypotheses: list[str], references: list[list[str]]) -> dict:
    """Corpus BLEU (sacrebleu) and mean ROUGE-1/2/L F1 (rouge-score, stemming; the best of the
    references when there are several)."""
    import sacrebleu
    from rouge_score import rouge_scorer

    k = max(len(r) for r in references)
    streams = [[r[j] if j < len(r) else None for r in references] for j in range(k)]
    bleu = sacrebleu.corpus_bleu(hypotheses, streams).score
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    rouge = {key: [] for key in ("rouge1", "rouge2", "rougeL")}
    for hyp, refs in zip(hypotheses, references):
        scores = scorer.score_multi(refs, hyp)
        for key in rouge:
            rouge[key].append(scores[key].fmeasure)
    return {
        "bleu": float(bleu),
        **{key: float(np.mean(v)) for key, v in rouge.items()},
        "references": len(references),
    }


# ============================================================================ entries and rewards


@dataclass
class Entry:
    name: str
    spec: str
    kind: str  # model | file | dataset
    path: str | None = None  # resolved model folder / hub name, or the responses file
    baseline: bool = False


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", name).strip("_") or "entry"


def parse_entries(models: list[str] | dict, baselines: list[str] | dict) -> list[Entry]:
    """`NAME=SPEC` or `SPEC` (dict form: {name: spec}) into entries with unique names."""
    from .models import resolve_model

    entries: list[Entry] = []
    for is_base, items in ((False, models), (True, baselines)):
        pairs = list(items.items()) if isinstance(items, dict) else []
        for item in [] if isinstance(items, dict) else items:
            m = re.match(r"^([\w.\-]+)=(.+)$", item)
            pairs.append((m.group(1), m.group(2)) if m else (None, item))
        for name, spec in pairs:
            if spec.startswith("dataset:"):
                entry = Entry(name or spec, spec, "dataset", baseline=is_base)
            elif Path(spec).is_file():
                entry = Entry(name or Path(spec).stem, spec, "file", spec, baseline=is_base)
            else:
                path = resolve_model(spec)
                entry = Entry(name or Path(spec.rstrip("/")).name, spec, "model", path, is_base)
            base, i = entry.name, 2
            while any(e.name == entry.name for e in entries):
                entry.name, i = f"{base}-{i}", i + 1
            entries.append(entry)
    return entries


def dataset_responses(rows: list[dict], field_name: str, where: str) -> list[str]:
    """The prompts file's own responses: a `dataset:FIELD` source of the row, or the row's FIELD."""
    out = []
    for row in rows:
        sources = row.get("sources") or []
        if f"dataset:{field_name}" in sources:
            out.append(row["responses"][sources.index(f"dataset:{field_name}")])
            continue
        value = row.get(field_name)
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, dict):
            value = value.get("content")
        if not isinstance(value, str):
            raise UserError(
                f"row '{row['id']}' has no response '{field_name}'", file=where, field=field_name
            )
        out.append(value)
    return out


def file_responses(rows: list[dict], path: str) -> list[str]:
    """First response of each row of a responses file, matched to the prompts by id."""
    by_id = {r["id"]: r["responses"] for r in load_lists(path, min_responses=1).rows}
    missing = [row["id"] for row in rows if row["id"] not in by_id]
    if missing:
        raise UserError(
            f"no response for prompt id '{missing[0]}' ({len(missing)} missing)", file=path
        )
    return [by_id[row["id"]][0] for row in rows]


class RewardSet:
    """The score stage's rewards for parsed specs (`rewards.RewardSpec`, checked by `prepare`);
    the value is their weighted sum."""

    def __init__(self, specs: list, defaults: dict):
        from .rewards import build_rewards

        self.specs = list(specs)
        self.rewards = build_rewards(self.specs, defaults)
        self.label = " + ".join(s.text if isinstance(s.text, str) else str(s) for s in self.specs)
        self.pairwise = any(s.kind in PAIRWISE_KINDS for s in self.specs)
        self.two_orders = any(s.kind == "judge" for s in self.specs)

    def score(self, rows: list[dict]) -> list[list[float | None]]:
        """Per row, one value per response (None where a reward could not score it, or gave a
        value that is not a finite number: NaN or infinity have no mean and no ranking)."""
        parts = [r.score(rows) for r in self.rewards]
        out = []
        for i, row in enumerate(rows):
            values = []
            for j in range(len(row["responses"])):
                vs = [p[i][j] for p in parts]
                total = (
                    None
                    if any(v is None for v in vs)
                    else sum(r.weight * v for r, v in zip(self.rewards, vs))
                )
                values.append(total if total is not None and math.isfinite(total) else None)
            out.append(values)
        return out

    def score_responses(
        self, prompts: list[dict], responses: list[str], desc: str, chunk: int = 64
    ) -> list[float | None]:
        """One value per (prompt row, response), in chunks under a progress bar."""
        from tqdm.auto import tqdm

        values: list[float | None] = []
        for s in tqdm(range(0, len(responses), chunk), desc=desc, unit="chunk", leave=False):
            rows = [
                {"id": p["id"], "prompt": p["prompt"], "responses": [r]}
                for p, r in zip(prompts[s : s + chunk], responses[s : s + chunk])
            ]
            values += [v[0] for v in self.score(rows)]
        return values


# ============================================================================ models


class Generator:
    """A model loaded through the sample stage (its decoders, stop strings and prompt encoding).

    The model is loaded on first use: a rerun whose generations are all cached loads nothing."""

    def __init__(self, entry: Entry, cfg: EvaluateConfig):
        self.cfg, self.entry, self._policy = cfg, entry, None

    @property
    def policy(self):
        if self._policy is None:
            from .sample import HFPolicy, SampleConfig

            c = self.cfg
            sample_cfg = SampleConfig(
                prompts=str(c.prompts),
                out=str(Path(c.out) / "generations"),
                model=self.entry.path,
                sources=[{"kind": "policy", "strategy": "greedy", "num": 1}],
                max_new_tokens=c.max_new_tokens,
                stop=list(c.stop),
                seed=c.seed,
                batch_size=c.batch_size,
                max_prompt_length=c.max_prompt_length,
                chat_template=c.chat_template,
                dtype=c.dtype,
                device=c.device,
                trust_remote_code=c.trust_remote_code,
                allow_pickle=c.allow_pickle,
            )
            self._policy = HFPolicy(self.entry.path, sample_cfg, default_device(c.device))
        return self._policy

    @property
    def model(self):
        return self.policy.model

    @property
    def tokenizer(self):
        return self.policy.tokenizer

    def source(self, num: int):
        from .sample import SourceConfig

        c = self.cfg
        if num == 1 and c.strategy == "greedy":
            return SourceConfig(kind="policy", strategy="greedy", num=1)
        return SourceConfig(
            kind="policy", strategy="sample", num=num, temperature=c.temperature, top_p=c.top_p
        )

    def generate(self, rows: list[dict], num: int):
        """Yield (row indices, their `num` responses) batch by batch; prompts of similar length
        share a batch; responses are cut at the first stop string."""
        from .sample import derive_seed, truncate_at_stop

        src = self.source(num)
        ids = [self.policy.encode(row["prompt"])[0] for row in rows]
        order = sorted(range(len(rows)), key=lambda i: -len(ids[i]))
        for s in range(0, len(order), self.cfg.batch_size):
            idx = order[s : s + self.cfg.batch_size]
            seeds = [
                [derive_seed(self.cfg.seed, src.label(), rows[i]["id"], j) for j in range(num)]
                for i in idx
            ]
            texts = self.policy.generate(src, [ids[i] for i in idx], seeds)
            yield idx, [[truncate_at_stop(x, self.cfg.stop) for x in t] for t in texts]

    def settings_key(self, num: int) -> str:
        from .models import model_fingerprint

        c = self.cfg
        data = {
            "model": model_fingerprint(self.entry.path),
            "source": self.source(num).as_dict(),
            "max_new_tokens": c.max_new_tokens,
            "stop": c.stop,
            "seed": c.seed,
            "max_prompt_length": c.max_prompt_length,
            "chat_template": c.chat_template,
            "dtype": c.dtype,
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def close(self):
        self._policy = None
        gc.collect()


def cached_generate(
    gen: Generator, rows: list[dict], num: int, path: Path, cfg: EvaluateConfig, desc: str
) -> list[list[str]]:
    """Generations for `rows`, reusing the rows of `path` made with the same settings.

    Missing rows are generated batch by batch; the file is rewritten atomically every few
    batches, so an interrupted run keeps what it finished and a rerun only generates the rest.
    """
    key = gen.settings_key(num)
    done: dict[str, list[str]] = {}
    if path.is_file() and not cfg.regenerate:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:  # a damaged cache line: generated again
                continue
            if (
                isinstance(rec, dict)
                and rec.get("settings") == key
                and isinstance(rec.get("id"), str)
                and isinstance(rec.get("responses"), list)
            ):
                done[rec["id"]] = rec["responses"]
    todo = [row for row in rows if row["id"] not in done]
    if done:
        print(
            f"rankalign evaluate: {gen.entry.name}: {len(rows) - len(todo)} of {len(rows)} "
            f"prompts from the cache {path}",
            file=sys.stderr,
        )
    from tqdm.auto import tqdm

    def save():
        write_jsonl(
            path,
            [
                {
                    "id": r["id"],
                    "prompt": r["prompt"],
                    "responses": done[r["id"]],
                    "model": gen.entry.spec,
                    "settings": key,
                }
                for r in rows
                if r["id"] in done
            ],
        )

    if not todo:
        return [done[row["id"]] for row in rows]
    with tqdm(total=len(todo), desc=desc, unit="prompt") as bar:
        for b, (idx, responses) in enumerate(gen.generate(todo, num)):
            for i, resp in zip(idx, responses):
                done[todo[i]["id"]] = resp
            bar.update(len(idx))
            if b % 4 == 3:  # commit every few batches: an interrupted run keeps them
                save()
    save()
    return [done[row["id"]] for row in rows]


def _logp_dataset(
    tokenizer, prompts: list, responses: list[list[str]], cfg: EvaluateConfig, eos: bool
):
    """A ListDataset of (prompt, responses) token ids for `rankalign.train.compute_logps`.

    eos=True scores responses as the trainer does (with EOS, for p_i); eos=False scores the
    response text only (perplexity of generated text)."""
    from .tokenization import encode_prompt, encode_response, fit_to_length
    from .train import ListDataset

    items, truncated = [], 0
    for prompt, resps in zip(prompts, responses):
        p_ids = encode_prompt(tokenizer, prompt, cfg.chat_template)
        r_ids = [
            encode_response(tokenizer, r)
            if eos
            else tokenizer(r, add_special_tokens=False).input_ids
            for r in resps
        ]
        enc = fit_to_length(p_ids, r_ids, cfg.max_length, min(512, cfg.max_length // 2))
        truncated += enc.responses_truncated + int(enc.prompt_truncated)
        items.append(
            {
                "prompt_ids": enc.prompt_ids,
                "response_ids": enc.response_ids,
                "scores": [0.0] * len(resps),
            }
        )
    return ListDataset(items), truncated


def perplexity(
    model,
    tokenizer,
    prompts: list,
    responses: list[str],
    cfg: EvaluateConfig,
    desc: str = "perplexity",
) -> dict:
    """exp(-sum log p(response tokens | prompt) / number of response tokens), over all responses.

    Response tokens are the response text's own tokens (no EOS: a generation cut at a stop string
    or at max_new_tokens did not end there). Empty responses have no tokens and are skipped.
    """
    from .train import compute_logps

    keep = [i for i, r in enumerate(responses) if tokenizer(r, add_special_tokens=False).input_ids]
    if not keep:
        why = "every response is empty: no token to score, perplexity undefined"
        return {
            "perplexity": None,
            "ppl_tokens": 0,
            "ppl_skipped_empty": len(responses),
            "notes": {"perplexity": why},
        }
    ds, truncated = _logp_dataset(
        tokenizer, [prompts[i] for i in keep], [[responses[i]] for i in keep], cfg, eos=False
    )
    logps = compute_logps(model, ds, tokenizer.pad_token_id, cfg.batch_size, True, desc=desc)
    total = sum(lp[0] for lp in logps)
    tokens = sum(len(item["response_ids"][0]) for item in ds.items)
    return {
        "perplexity": math.exp(-total / tokens),
        "ppl_tokens": tokens,
        "ppl_skipped_empty": len(responses) - len(keep),
        "ppl_truncated": truncated,
    }


def policy_scores(
    model, tokenizer, rows: list[dict], cfg: EvaluateConfig, desc: str
) -> list[list[float]]:
    """p_i = logp(y_i | x) / |y_i| (tokens incl. EOS, as RRHF ranks), per row and response."""
    from .train import compute_logps

    ds, _ = _logp_dataset(
        tokenizer, [r["prompt"] for r in rows], [r["responses"] for r in rows], cfg, eos=True
    )
    logps = compute_logps(model, ds, tokenizer.pad_token_id, cfg.batch_size, True, desc=desc)
    return [
        [lp / max(len(ids), 1) for lp, ids in zip(row_lp, item["response_ids"])]
        for row_lp, item in zip(logps, ds.items)
    ]


def load_lm(path: str, cfg: EvaluateConfig):
    from .models import load_causal_lm

    tok = load_tokenizer(path, trust_remote_code=cfg.trust_remote_code)
    model = load_causal_lm(
        path,
        dtype=cfg.dtype,
        trust_remote_code=cfg.trust_remote_code,
        allow_pickle=cfg.allow_pickle,
        device=default_device(cfg.device),
    )
    return model.eval(), tok


# ============================================================================ logs


def read_training_log(run: str) -> list[dict]:
    """`log_history` of a training run: DIR/trainer_state.json, else the newest checkpoint's."""
    path = Path(run)
    if path.is_dir():
        candidates = [path / "trainer_state.json"]
        ckpts = sorted(
            path.glob("checkpoint-*/trainer_state.json"),
            key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0),
        )
        candidates += ckpts[::-1]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise UserError(
                "no trainer_state.json here or in a checkpoint-* folder "
                "(Trainer writes it with each checkpoint)",
                file=run,
            )
    if not path.is_file():
        raise UserError("training run not found", file=run)
    state = read_json_file(path)
    if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
        raise UserError("no log_history list", file=path, field="log_history")
    return [e for e in state["log_history"] if isinstance(e, dict)]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def read_loop_metrics(run: str) -> list[dict]:
    """Per-iteration metrics of a loop run: DIR/iter-*/metrics.json (one dict each, in iteration
    order), or one JSON file / DIR/metrics.json holding a list of per-iteration dicts. Nested
    dicts are flattened (`heldout.mean_reward`)."""
    path = Path(run)
    files = (
        sorted(
            path.glob("iter-*/metrics.json"),
            key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0),
        )
        if path.is_dir()
        else []
    )
    its = []
    if files:
        for f in files:
            data = read_json_file(f)
            if not isinstance(data, dict):
                raise UserError("expected a JSON object of metrics", file=f)
            it = _flatten(data)
            it.setdefault("iteration", int(re.sub(r"\D", "", f.parent.name) or len(its)))
            its.append(it)
        return its
    single = path / "metrics.json" if path.is_dir() else path
    if not single.is_file():
        raise UserError("no iter-*/metrics.json or metrics.json", file=run)
    data = read_json_file(single)
    if isinstance(data, dict) and isinstance(data.get("iterations"), list):
        data = data["iterations"]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise UserError("expected a list of per-iteration objects", file=single)
    return [_flatten(d) | {"iteration": d.get("iteration", i)} for i, d in enumerate(data)]


# ============================================================================ the run


def _length_fn(unit: str, tokenizer):
    if unit == "tokens":
        return lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)
    if unit == "words":
        return lambda text: len(text.split())
    return len


def evaluate_models(
    models: dict[str, str] | list[str],
    prompts_path: str | None,
    reward_spec: str | list[str] | None,
    out_dir: str,
    **options,
) -> dict:
    """Evaluate `models` ({name: spec}) on `prompts_path`; write the report into `out_dir`.

    `options` are EvaluateConfig fields (baseline={name: spec} or a list, pairs=..., samples=...,
    train_runs=..., ...). Returns the metrics dict: metrics["models"][name] holds mean_reward,
    ci_low, ci_high, std, n, perplexity, mean_length (and bleu/rouge with references).
    """
    baselines = options.pop("baseline", options.pop("baselines", []))
    specs = [reward_spec] if isinstance(reward_spec, str) else list(reward_spec or [])
    cfg = EvaluateConfig(prompts=prompts_path, reward=specs, out=str(out_dir), **options)
    return run(cfg, parse_entries(models, baselines))


@dataclass
class _Run:
    """What the steps of one evaluation share."""

    cfg: EvaluateConfig
    entries: list[Entry]
    rows: list[dict]  # the prompts
    defaults: dict  # reward options (batch size, dtype, ...)
    metrics: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    responses: dict[str, list[str]] = field(default_factory=dict)  # entry -> one per prompt
    rewards: RewardSet | None = None
    win_judge: list = field(default_factory=list)  # parsed --win_judge specs (built later)
    entry_rewards: dict[str, list[float | None]] = field(default_factory=dict)
    sample_sets: dict[str, list[dict]] = field(default_factory=dict)  # best-of-n inputs
    pair_rows: list[dict] = field(default_factory=list)
    pair_scores: dict[str, list[list[float]]] = field(default_factory=dict)  # p_i of policies
    sample_files: dict[str, list[dict]] = field(default_factory=dict)  # --samples, by name
    train_rows: dict[str, list[dict]] = field(default_factory=dict)  # --train_data, by path
    train_logs: dict[str, list[dict]] = field(default_factory=dict)  # --train_runs, by name
    loop_iterations: list[dict] | None = None  # --loop_run

    @property
    def models(self) -> dict[str, dict]:
        return self.metrics.setdefault("models", {})


def _reward_specs(texts: list, option: str, defaults: dict, *, summed: bool = True) -> list:
    """The reward specs of `option` checked as the score stage checks --reward, loading no model:
    parsed (`rewards.parse_reward_specs`; the names of `summed` specs, one weighted sum, must
    differ) and every model and file they name resolved, pickle-only weights refused unless
    allowed (`rewards.check_reward_models`). Rewards of another option are built later, during
    the run, so the ones without a model are built once now (a python: function is imported).
    Every error names `option`."""
    from .rewards import (
        MODEL_OPTIONS,
        build_rewards,
        check_reward_models,
        parse_reward_spec,
        parse_reward_specs,
    )

    if summed:
        specs = parse_reward_specs(texts, field=option)
    else:
        specs = [parse_reward_spec(t, field=option) for t in texts]
    check_reward_models(specs, field=option, defaults=defaults)
    if option != "reward":  # --reward's rewards are built (loaded) right after this
        for s in specs:
            if s.kind not in MODEL_OPTIONS:
                build_rewards([s], defaults, field=option)
    return specs


def prepare(cfg: EvaluateConfig, entries: list[Entry]) -> _Run:
    """Validate and read everything the evaluation needs, writing nothing: the output folder,
    the prompts, every entry's responses from files or dataset fields, the pairs, samples,
    training files, training logs and loop metrics, every model path (resolved and checked),
    and the rewards (built: their models load here). Any problem is a UserError."""
    from .config import check_options
    from .models import resolve_model, torch_dtype

    check_options(cfg)  # types, finite numbers, ranges (parse_config did it for the CLI)
    torch_dtype(cfg.dtype)  # a known name (the models load later, during the run)
    if entries and not cfg.prompts:
        raise UserError("--model/--baseline need --prompts FILE")
    check_output_location(cfg.out, folder=True)
    defaults = {
        "batch_size": cfg.batch_size,
        "max_length": cfg.max_length,
        "dtype": cfg.dtype,
        "device": cfg.device or "auto",
        "trust_remote_code": cfg.trust_remote_code,
        "allow_pickle": cfg.allow_pickle,
        "chat_template": cfg.chat_template,
    }
    rows = load_lists(cfg.prompts, limit=cfg.max_prompts).rows if cfg.prompts else []
    r = _Run(cfg, entries, rows, defaults)
    for e in entries:  # responses that are read, not generated
        if e.kind == "dataset":
            r.responses[e.name] = dataset_responses(rows, e.spec.split(":", 1)[1], cfg.prompts)
        elif e.kind == "file":
            r.responses[e.name] = file_responses(rows, e.path)
    if cfg.pairs:
        r.pair_rows = load_lists(cfg.pairs, min_responses=2, require_scores=True).rows
    for path in cfg.samples:
        r.sample_files[Path(path).stem] = load_lists(path, min_responses=1).rows
    for path in cfg.train_data:
        train_rows = load_lists(path, min_responses=1).rows
        if not cfg.reward and not all(row.get("scores") is not None for row in train_rows):
            raise UserError("training file has no scores (and no --reward to score it)", file=path)
        r.train_rows[path] = train_rows
    for run_dir in cfg.train_runs:
        name = Path(run_dir.rstrip("/")).name
        while name in r.train_logs:
            name += "'"
        r.train_logs[name] = read_training_log(run_dir)
    if cfg.loop_run:
        r.loop_iterations = read_loop_metrics(cfg.loop_run)
    lm_paths = [e.path for e in entries if e.kind == "model"]  # resolved by parse_entries
    if cfg.ppl_model not in ("auto", "none"):
        lm_paths.append(resolve_model(cfg.ppl_model))
    scorers = [s for s in cfg.rm_scorers if s not in ("reward", "models")]
    for spec in scorers:
        if spec.startswith(("policy:", "policy-logprob:")):
            path = spec.split(":", 1)[1]
            if not path:
                raise UserError(f"rm_scorers '{spec}': needs a model path", field="rm_scorers")
            lm_paths.append(resolve_model(path))
    for path in dict.fromkeys(lm_paths):  # a folder without a usable tokenizer: refused now
        load_tokenizer(path, trust_remote_code=cfg.trust_remote_code)
    scorer_specs = [s for s in scorers if not s.startswith(("policy:", "policy-logprob:"))]
    _reward_specs(scorer_specs, "rm_scorers", defaults, summed=False)  # each scores alone
    r.win_judge = _reward_specs(cfg.win_judge, "win_judge", defaults)
    if cfg.reward:
        specs = _reward_specs(cfg.reward, "reward", defaults)
        r.rewards = RewardSet(specs, defaults)  # last: it may load reward models
    return r


def run(cfg: EvaluateConfig, entries: list[Entry]) -> dict:
    """All metrics the options ask for, then the report; returns the metrics dict.

    Everything is validated (`prepare`) before the first file is written."""
    return execute(prepare(cfg, entries))


def execute(r: _Run) -> dict:
    """The evaluation proper, on validated inputs: writes into OUT."""
    cfg, entries = r.cfg, r.entries
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    r.metrics.update(
        {"config": dataclasses.asdict(cfg), "notes": r.notes, "num_prompts": len(r.rows)}
    )
    if not cfg.reward and entries:
        r.notes.append("no --reward: reward, win rate and best-of-n are not computed")
    _collect_responses(r)
    _score_entries(r)
    _perplexities(r)
    _reference_scores(r)
    _win_rates(r)
    if r.pair_rows:
        r.metrics["rm_accuracy"] = rm_accuracy(
            r.pair_rows, r.pair_scores, cfg, r.rewards, r.defaults
        )
        if not labelled_pairs(r.pair_rows):
            r.notes.append(f"--pairs {cfg.pairs}: {NO_PAIR_TIED}")
    _sample_metrics(r)
    _training_logs(r)
    _per_prompt_outputs(r, out)
    if cfg.report:
        from .report import write_report

        write_report(r.metrics, out)
    else:
        write_json(out / "metrics.json", r.metrics)
    return r.metrics


def _merge(target: dict, values: dict) -> None:
    """target.update(values), keeping both sides' `notes` (why a value is null)."""
    notes = {**(target.get("notes") or {}), **(values.get("notes") or {})}
    target.update(values)
    if notes:
        target["notes"] = notes


def _collect_responses(r: _Run) -> None:
    """Every entry's response per prompt; each model is loaded once (lazily) for its greedy
    generations, its --num_samples samples and its p_i on the pairs, then freed. (Responses
    from files and dataset fields were read by `prepare`.)"""
    cfg = r.cfg
    for e in r.entries:
        r.models[e.name] = {"spec": e.spec, "kind": e.kind}
    out = Path(cfg.out)
    for e in [e for e in r.entries if e.kind == "model"]:
        gen, name = Generator(e, cfg), _safe_name(e.name)
        greedy = cached_generate(
            gen, r.rows, 1, out / "generations" / f"{name}.jsonl", cfg, f"generate {e.name}"
        )
        r.responses[e.name] = [g[0] for g in greedy]
        if cfg.num_samples:
            lists = cached_generate(
                gen,
                r.rows,
                cfg.num_samples,
                out / "samples" / f"{name}.jsonl",
                cfg,
                f"sample {e.name} x{cfg.num_samples}",
            )
            r.sample_sets[e.name] = [
                {
                    "id": row["id"],
                    "prompt": row["prompt"],
                    "responses": ls,
                    "sources": [f"{e.name}:sample"] * len(ls),
                }
                for row, ls in zip(r.rows, lists)
            ]
        if r.pair_rows and "models" in cfg.rm_scorers:
            r.pair_scores[f"p_i: {e.name}"] = policy_scores(
                gen.model, gen.tokenizer, r.pair_rows, cfg, f"p_i {e.name}"
            )
        gen.close()


def _score_entries(r: _Run) -> None:
    """Mean reward, std and bootstrap interval of every entry's responses."""
    for e in r.entries:
        m, texts = r.models[e.name], r.responses[e.name]
        m["mean_length_chars"] = float(np.mean([len(t) for t in texts])) if texts else None
        m["empty_responses"] = sum(not t.strip() for t in texts)
        if r.rewards is None:
            continue
        values = r.rewards.score_responses(r.rows, texts, f"reward {e.name}")
        r.entry_rewards[e.name] = values
        if None in values:
            r.notes.append(
                f"{e.name}: {values.count(None)} responses could not be scored (no value, or "
                "not a finite number) and are left out of its mean reward"
            )
        _merge(
            m,
            reward_summary(
                values,
                resamples=r.cfg.bootstrap_resamples,
                confidence=r.cfg.confidence,
                seed=r.cfg.seed,
            ),
        )


def _perplexities(r: _Run) -> None:
    """Perplexity of every entry's responses under one LM (default: the base policy)."""
    path = _ppl_model(r.cfg, r.entries)
    if not path or not r.entries:
        return
    model, tok = load_lm(path, r.cfg)
    r.metrics["perplexity_model"] = path
    prompts = [row["prompt"] for row in r.rows]
    for e in r.entries:
        texts = r.responses[e.name]
        _merge(
            r.models[e.name],
            perplexity(model, tok, prompts, texts, r.cfg, f"perplexity {e.name}"),
        )
        lengths = [len(tok(t, add_special_tokens=False).input_ids) for t in texts]
        r.models[e.name]["mean_length"] = float(np.mean(lengths)) if lengths else None
    del model
    gc.collect()


def _reference_scores(r: _Run) -> None:
    """BLEU / ROUGE of every entry when every prompt carries a `reference` (string or list)."""
    refs = [row.get("reference") for row in r.rows]
    if not any(refs):
        return
    if not all(isinstance(x, str | list) and x for x in refs):
        r.notes.append(
            f"{sum(1 for x in refs if x)} of {len(refs)} prompts carry a reference: "
            "BLEU/ROUGE need every prompt to have one, skipped"
        )
        return
    refs = [[x] if isinstance(x, str) else [str(y) for y in x] for x in refs]
    try:
        for e in r.entries:
            r.models[e.name].update(reference_metrics(r.responses[e.name], refs))
    except ImportError:
        r.notes.append(
            "prompts carry references, but BLEU/ROUGE need sacrebleu and rouge-score "
            "(pip install 'rankalign[metrics]'): skipped"
        )


def _win_rates(r: _Run) -> None:
    """Win rate of every --model against every --baseline, judged by --win_judge or --reward."""
    from tqdm.auto import tqdm

    judge = RewardSet(r.win_judge, r.defaults) if r.win_judge else r.rewards
    pairs = [(m, b) for m in r.entries if not m.baseline for b in r.entries if b.baseline]
    if judge is None or not pairs:
        return
    r.metrics["win_rates"] = []
    for m, b in tqdm(pairs, desc="win rate", unit="pair"):
        verdicts = win_verdicts(
            judge,
            r.rows,
            r.responses[m.name],
            r.responses[b.name],
            r.entry_rewards.get(m.name),
            r.entry_rewards.get(b.name),
            r.cfg.tie_tolerance,
            reuse=judge is r.rewards,
        )
        r.metrics["win_rates"].append(
            {
                "model": m.name,
                "baseline": b.name,
                "judge": judge.label,
                "both_orders": judge.two_orders,
                **win_rate(verdicts),
            }
        )


def _sample_metrics(r: _Run) -> None:
    """Best-of-n and reward-length correlation of every sample set; Table 6 of training files."""
    cfg = r.cfg
    r.sample_sets.update(r.sample_files)  # read by `prepare`, after the sets drawn here
    if r.sample_sets:
        tok = _any_tokenizer(cfg, r.entries) if cfg.length_unit == "tokens" else None
        unit = "chars" if cfg.length_unit == "tokens" and tok is None else cfg.length_unit
        if unit != cfg.length_unit:
            r.notes.append("no tokenizer at hand (no model given): lengths counted in characters")
        length = _length_fn(unit, tok)
        r.metrics["best_of_n"], r.metrics["reward_length"] = {}, {}
        for label, rows in r.sample_sets.items():
            rows = _ensure_scores(rows, r.rewards, label)
            if rows is None:
                r.notes.append(f"samples '{label}' have no scores and no --reward: skipped")
                continue
            r.metrics["best_of_n"][label] = best_of_n_curve([row["scores"] for row in rows])
            r.metrics["reward_length"][label] = reward_length_correlation(rows, length, unit)
    for path, train_rows in r.train_rows.items():  # scored, or --reward given (`prepare`)
        rows = _ensure_scores(train_rows, r.rewards, path)
        r.metrics.setdefault("sample_stats", {})[Path(path).stem] = sample_stats(rows)


def _training_logs(r: _Run) -> None:
    """Training logs and loop metrics (read by `prepare`) into the metrics."""
    if r.train_logs:
        r.metrics["training"] = dict(r.train_logs)
    if r.loop_iterations is not None:
        r.metrics["loop"] = {"run": r.cfg.loop_run, "iterations": r.loop_iterations}


def _per_prompt_outputs(r: _Run, out: Path) -> None:
    """OUT/per_prompt.jsonl (every response and reward) and the report's example generations."""
    if not (r.rows and r.entries):
        return
    per_prompt = [
        {
            "id": row["id"],
            "prompt": row["prompt"],
            "responses": {e.name: r.responses[e.name][i] for e in r.entries},
            "rewards": {n: v[i] for n, v in r.entry_rewards.items()},
        }
        for i, row in enumerate(r.rows)
    ]
    write_jsonl(out / "per_prompt.jsonl", per_prompt)
    r.metrics["examples"] = [
        {k: p[k] for k in ("id", "prompt", "responses")} for p in per_prompt[: r.cfg.examples]
    ]


def win_verdicts(
    judge: RewardSet,
    rows: list[dict],
    mine: list[str],
    theirs: list[str],
    my_rewards,
    their_rewards,
    tolerance: float,
    reuse: bool,
) -> list[int | None]:
    """Per prompt +1 / 0 / -1 (None: unjudged). Pointwise rewards compare the two rewards (reused
    from the reward step when the judge is the reward); pairwise rewards (judge, preference) see
    both responses in one row; an LLM judge is asked in both orders and a verdict counts only when
    both orders agree (otherwise it is a tie: position bias)."""
    if not judge.pairwise:
        if not reuse:
            my_rewards = judge.score_responses(rows, mine, "judge model")
            their_rewards = judge.score_responses(rows, theirs, "judge baseline")
        return [
            None if a is None or b is None else compare(a, b, tolerance)
            for a, b in zip(my_rewards, their_rewards)
        ]
    ab = judge.score(
        [
            {"id": r["id"], "prompt": r["prompt"], "responses": [m, t]}
            for r, m, t in zip(rows, mine, theirs)
        ]
    )
    first = [None if None in v else compare(v[0], v[1], tolerance) for v in ab]
    if not judge.two_orders:
        return first
    ba = judge.score(
        [
            {"id": r["id"], "prompt": r["prompt"], "responses": [t, m]}
            for r, m, t in zip(rows, mine, theirs)
        ]
    )
    second = [None if None in v else compare(v[1], v[0], tolerance) for v in ba]
    return [None if a is None or b is None else a if a == b else 0 for a, b in zip(first, second)]


def rm_accuracy(
    pair_rows: list[dict],
    policy_results: dict[str, list[list[float]]],
    cfg: EvaluateConfig,
    rewards: RewardSet | None,
    defaults: dict,
) -> list[dict]:
    """Accuracy of every scorer on the labelled pairs (overall and per category/subset column)."""
    from .rewards import parse_reward_spec

    scorers: dict[str, list[list[float | None]]] = dict(policy_results)
    for spec in cfg.rm_scorers:
        if spec == "models":
            continue
        if spec == "reward":
            if rewards is not None:
                scorers[rewards.label] = rewards.score(pair_rows)
        elif spec.startswith(("policy:", "policy-logprob:")):
            path = spec.split(":", 1)[1]
            from .models import resolve_model

            model, tok = load_lm(resolve_model(path), cfg)
            scorers[f"p_i: {path}"] = policy_scores(model, tok, pair_rows, cfg, f"p_i {path}")
            del model
        else:
            rs = RewardSet([parse_reward_spec(spec, field="rm_scorers")], defaults)
            scorers[rs.label] = rs.score(pair_rows)
    pairs = labelled_pairs(pair_rows)
    results = []
    for label, scores in scorers.items():
        ok = [(r, i, j) for r, i, j in pairs if None not in (scores[r][i], scores[r][j])]
        res = {
            "scorer": label,
            **pair_accuracy(
                [scores[r][i] for r, i, _ in ok],
                [scores[r][j] for r, _, j in ok],
                empty_note=NO_PAIR_SCORED if pairs else NO_PAIR_TIED,
            ),
            "unscored": len(pairs) - len(ok),
        }
        cats = {}
        for r, i, j in ok:
            cat = pair_rows[r].get("category", pair_rows[r].get("subset"))
            if cat is not None:
                cats.setdefault(str(cat), ([], []))
                cats[str(cat)][0].append(scores[r][i])
                cats[str(cat)][1].append(scores[r][j])
        if cats:
            res["by_category"] = {c: pair_accuracy(a, b) for c, (a, b) in sorted(cats.items())}
        results.append(res)
    return results


def _ensure_scores(rows: list[dict], rewards: RewardSet | None, label: str) -> list[dict] | None:
    if all(r.get("scores") is not None for r in rows):
        return rows
    if rewards is None:
        return None
    from tqdm.auto import tqdm

    scored = []
    for s in tqdm(range(0, len(rows), 64), desc=f"score {label}", unit="chunk", leave=False):
        chunk = rows[s : s + 64]
        for row, values in zip(chunk, rewards.score(chunk)):
            keep = [j for j, v in enumerate(values) if v is not None]
            scored.append(
                {
                    **row,
                    "responses": [row["responses"][j] for j in keep],
                    "scores": [values[j] for j in keep],
                }
            )
    return scored


def _ppl_model(cfg: EvaluateConfig, entries: list[Entry]) -> str | None:
    from .models import resolve_model

    if cfg.ppl_model == "none":
        return None
    if cfg.ppl_model != "auto":
        return resolve_model(cfg.ppl_model)
    models = [e for e in entries if e.kind == "model"]
    base = [e for e in models if e.baseline] or models
    return base[0].path if base else None


def _any_tokenizer(cfg: EvaluateConfig, entries: list[Entry]):
    """For lengths in tokens: the perplexity model's tokenizer, else the first model's."""
    path = _ppl_model(cfg, entries) or next((e.path for e in entries if e.kind == "model"), None)
    return load_tokenizer(path, trust_remote_code=cfg.trust_remote_code) if path else None


def main(argv: list[str]) -> int:
    from .report import number
    from .reward_model import is_rm_evaluation, main_evaluate

    if is_rm_evaluation(argv):  # `--rm PATH --pairs FILE`: reward-model evaluation
        return main_evaluate(argv)
    (cfg, _config_path) = parse_config(argv, (EvaluateConfig,), prog="rankalign evaluate")
    if not (
        cfg.model
        or cfg.baseline
        or cfg.samples
        or cfg.train_data
        or cfg.train_runs
        or cfg.loop_run
        or cfg.pairs
    ):
        raise UserError(
            "nothing to evaluate: pass --model M --prompts FILE --reward SPEC "
            "(or --samples / --pairs / --train_data / --train_runs / --loop_run)"
        )
    entries = parse_entries(cfg.model, cfg.baseline)
    prepared = prepare(cfg, entries)  # validates everything; nothing is written before this
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    dump_config(Path(cfg.out) / "evaluate_config.yaml", {"evaluate": cfg})
    metrics = execute(prepared)
    for name, m in metrics.get("models", {}).items():
        line = (
            f"{name}: reward {number(m.get('mean_reward'), '.4f')} "
            f"[{number(m.get('ci_low'), '.4f')}, {number(m.get('ci_high'), '.4f')}]"
        )
        if "perplexity" in m:
            line += f", ppl {number(m['perplexity'], '.2f')}"
        print(line)
    print(f"rankalign evaluate: report in {Path(cfg.out) / 'report.html'}")
    return 0


__all__ = ["EvaluateConfig", "evaluate_models", "main", "write_report"]


def write_report(metrics: dict, out_dir) -> dict:
    """Write metrics.json, report.md, report.html and the plots (see rankalign.report)."""
    from .report import write_report as _write

    return _write(metrics, out_dir)
