"""Options of `rankalign evaluate` (policies, samples, pairs, training logs; and `--rm` for a
reward / preference model): one class, every option listed by `--help`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rankalign.generation import DecodeRequest, check_backend, check_backend_name
from rankalign.tokenization import CHAT_TEMPLATE_HELP, CHAT_TEMPLATE_MODES, HH_STOP

LENGTH_UNITS = ("tokens", "chars", "words")


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
        default=None, metadata={"help": "held-out prompts (any layout rankalign.data reads)"}
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
        default="greedy",
        metadata={"help": "greedy | sample (top-p/temperature)", "choices": ("greedy", "sample")},
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
    backend: str = field(
        default="hf",
        metadata={"help": "generation backend of the models: hf (transformers) | vllm (GPU)"},
    )
    stop: list[str] = field(
        default_factory=lambda: list(HH_STOP),
        metadata={
            "help": "responses are cut at the first stop string (RRHF §4.1: a new Human:/Assistant: turn)"
        },
    )
    max_rows: int | None = field(
        default=None,
        metadata={
            "aliases": ["--max_prompts"],
            "help": "only the first N rows of each input file (prompts; with --rm: pairs, samples)",
            "check": ">= 1",
        },
    )
    max_prompt_length: int = field(
        default=1024, metadata={"help": "prompt tokens kept (cut from the left)", "check": ">= 1"}
    )
    batch_size: int = field(
        default=8, metadata={"help": "prompts per generation / scoring batch", "check": ">= 1"}
    )
    chat_template: str | None = field(
        default=None,
        metadata={"help": CHAT_TEMPLATE_HELP, "choices": CHAT_TEMPLATE_MODES},
    )
    seed: int = field(default=0, metadata={"help": "sampling and bootstrap seed", "check": ">= 0"})
    regenerate: bool = field(default=False, metadata={"help": "ignore cached generations"})
    dtype: str = field(default="float32", metadata={"help": "float32 | bfloat16 | float16"})
    device: str | None = field(
        default=None, metadata={"help": "cpu, cuda, cuda:1 (default: cuda if available)"}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "run the model repository's own Python code"}
    )
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
    length_unit: str = field(
        default="tokens", metadata={"help": "tokens | chars | words", "choices": LENGTH_UNITS}
    )
    # sampled evaluation: the per-prompt mean reward of n samples instead of one greedy response
    eval_samples: int = field(
        default=0,
        metadata={
            "help": "responses sampled (temperature/top_p) per prompt from every model; each "
            "prompt's reward is their mean (the unit of the statistics); 0: one response "
            "(--strategy)",
            "check": ">= 0",
        },
    )
    kl_reference: str | None = field(
        default=None,
        metadata={
            "help": "with --eval_samples: KL(model || this reference model) of every model, "
            "estimated from its own eval samples (exact at temperature 1, top_p 1)"
        },
    )
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

    # reward-model evaluation: `--rm PATH --pairs FILE [--samples FILE]`
    rm: str | None = field(
        default=None,
        metadata={
            "help": "evaluate a reward / preference model (or a policy as one) on --pairs "
            "instead of policies: pair accuracy by category, RewardBench sections, "
            "reward-length correlation on --samples",
            "conflicts": ("model", "baseline"),  # --rm evaluates no policy
        },
    )
    kind: str = field(
        default="auto",
        metadata={
            "help": "with --rm: auto | rm | preference | policy",
            "choices": ("auto", "rm", "preference", "policy"),
        },
    )
    format: str | None = field(
        default=None, metadata={"help": "with --rm: rm input format (default: as trained)"}
    )
    template: str | None = field(
        default=None, metadata={"help": "with --rm: preference template file (default: as trained)"}
    )

    def __post_init__(self):
        if self.kind not in ("auto", "rm", "preference", "policy"):
            raise ValueError(f"kind must be one of auto, rm, preference, policy, got '{self.kind}'")
        if not self.rm and (self.kind != "auto" or self.format or self.template):
            raise ValueError("kind, format and template are --rm options (pass --rm PATH)")
        if self.rm and len(self.samples) > 1:
            raise ValueError("with --rm, --samples takes one file")
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
        if self.chat_template is not None and self.chat_template not in CHAT_TEMPLATE_MODES:
            raise ValueError(
                f"chat_template must be one of {', '.join(CHAT_TEMPLATE_MODES)}, "
                f"got '{self.chat_template}'"
            )
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError("stop strings must be non-empty strings")
        if self.kl_reference and not self.eval_samples:
            raise ValueError("kl_reference needs eval_samples > 0 (the policy's own samples)")
        check_backend_name(self.backend)
        # what the backend needs and cannot decode (vllm: the package), before anything loads
        check_backend(self.backend, {"strategy": self.request(max(1, self.num_samples))})

    def eval_request(self) -> DecodeRequest:
        """How a model draws its `eval_samples` per prompt: temperature / top-p sampling, even
        for one sample."""
        return DecodeRequest(
            "sample",
            self.eval_samples,
            self.temperature,
            self.top_p,
            max_new_tokens=self.max_new_tokens,
            stop=self.stop,
        )

    def request(self, num: int) -> DecodeRequest:
        """How a model generates `num` responses per prompt: greedy (one response, strategy
        greedy) or temperature / top-p sampling."""
        if num == 1 and self.strategy == "greedy":
            return DecodeRequest(
                "greedy", 1, 0.0, max_new_tokens=self.max_new_tokens, stop=self.stop
            )
        return DecodeRequest(
            "sample",
            num,
            self.temperature,
            self.top_p,
            max_new_tokens=self.max_new_tokens,
            stop=self.stop,
        )
