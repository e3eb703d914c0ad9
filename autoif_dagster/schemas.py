"""One schema per artifact, declared once: used by the IO manager, the assets and the tests.

Every row carries a stable content-derived id and the ids of the rows it came from, so any
training sample can be traced back to its seed instruction and ShareGPT query.
"""

import hashlib

import polars as pl

CASE = pl.Struct({"input": pl.String, "output": pl.Boolean})
MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})

# one row per file of an export (resources/exports.py)
EXPORT_MANIFEST = pl.Schema({
    "file": pl.String, "format": pl.String, "set": pl.String, "version": pl.String,
    "rows": pl.Int64, "bytes": pl.Int64, "sha256": pl.String,
})


def by_round(columns: dict) -> pl.Schema:
    """An artifact made round by round (rounds.py): each row carries its round's key (a day)."""
    return pl.Schema({"round": pl.String, **columns})


SCHEMAS: dict[str, pl.Schema] = {
    # origin: "seed" (a seed file line) or "augmented" (written by the supervisor)
    # reference: JSON naming a benchmark checker that checks exactly this seed (sources.load_seed_rows),
    # or null; it measures verifiers (checks.py) and never reaches a prompt
    "seed_instructions": pl.Schema({"instruction_id": pl.String, "instruction": pl.String, "reference": pl.String}),
    "augmented_instructions": by_round(
        {
            "instruction_id": pl.String,
            "instruction": pl.String,
            "origin": pl.String,
            "generation_id": pl.String,  # null for seeds
        }
    ),
    "verifier_candidates": by_round(
        {
            "candidate_id": pl.String,
            "instruction_id": pl.String,
            "sample_index": pl.Int64,
            "generation_id": pl.String,  # the ledger's completion behind the row
            "raw": pl.String,
            "func": pl.String,
            "cases": pl.List(CASE),
        }
    ),
    "verifiers": by_round(
        {
            "verifier_id": pl.String,
            "instruction_id": pl.String,
            "candidate_ids": pl.List(pl.String),
            "func": pl.String,
            "accuracy": pl.Float64,
        }
    ),
    "test_cases": by_round(
        {
            "case_id": pl.String,
            "instruction_id": pl.String,
            "input": pl.String,
            "output": pl.Boolean,
            "agreement": pl.Float64,  # share of compiled functions that agree with the label
        }
    ),
    "back_translations": by_round(
        {
            "back_translation_id": pl.String,
            "instruction_id": pl.String,
            "verifier_id": pl.String,
            "generation_id": pl.String,
            "back_translation": pl.String,
        }
    ),
    "nli_verdicts": by_round(
        {
            "back_translation_id": pl.String,
            "instruction_id": pl.String,
            "label": pl.String,  # entailment | neutral | contradiction
            "score": pl.Float64,  # the judge's: mean P(yes) (llm), cosine similarity (embedding), None
        }
    ),
    "consistent_instructions": by_round(
        {"instruction_id": pl.String, "instruction": pl.String, "n_verifiers": pl.Int64}
    ),
    "queries": pl.Schema({"query_id": pl.String, "query": pl.String, "source": pl.String}),
    "instruction_prompts": by_round(
        {
            "prompt_id": pl.String,
            "instruction_id": pl.String,
            "query_id": pl.String,
            "instruction": pl.String,
            "query": pl.String,
            "prompt": pl.String,
        }
    ),
    "responses": by_round(
        {
            "response_id": pl.String,
            "prompt_id": pl.String,
            "sample_index": pl.Int64,
            # False: sampled for the query alone, without the instruction (a DPO negative)
            "with_instruction": pl.Boolean,
            "model": pl.String,
            "generation_id": pl.String,
            "response": pl.String,
            "finish_reason": pl.String,
        }
    ),
    "response_verdicts": by_round(
        {
            "response_id": pl.String,
            "prompt_id": pl.String,
            "n_verifiers": pl.Int64,
            "n_passed": pl.Int64,
            "n_errors": pl.Int64,
            "pass_rate": pl.Float64,
            # what each of the instruction's verifiers said ("pass", "fail", "timeout"...)
            "verdicts": pl.List(pl.Struct({"verifier_id": pl.String, "kind": pl.String})),
        }
    ),
    "quality_scores": by_round(
        {"response_id": pl.String, "prompt_id": pl.String, "generation_id": pl.String, "score": pl.Int64,
         "expected_score": pl.Float64, "raw": pl.String}
    ),
    "sft_dataset": by_round(
        {
            "sample_id": pl.String,
            "prompt_id": pl.String,
            "response_id": pl.String,
            "instruction_id": pl.String,
            "query_id": pl.String,
            "messages": pl.List(MESSAGE),
            "pass_rate": pl.Float64,
            "score": pl.Float64,  # the quality score it passed: expected under the judge's probabilities
        }
    ),
    "dpo_pairs": by_round(
        {
            "pair_id": pl.String,
            "prompt_id": pl.String,
            "chosen_response_id": pl.String,
            "rejected_response_id": pl.String,
            "prompt": pl.String,
            "chosen": pl.String,
            "rejected": pl.String,
            "chosen_pass_rate": pl.Float64,
            "rejected_pass_rate": pl.Float64,
            # False: the rejected response was sampled for the query without the instruction
            "rejected_with_instruction": pl.Boolean,
        }
    ),
    # an instruction prompt with its instruction's kept verifiers of the same round: a prompt for
    # reinforcement learning with the verifiers as its reward (rewards.py)
    "rl_prompts": by_round(
        {
            "prompt_id": pl.String,
            "instruction_id": pl.String,
            "instruction": pl.String,
            "query": pl.String,
            "prompt": pl.String,
            "verifier_ids": pl.List(pl.String),
            "verifiers": pl.List(pl.String),  # their functions' sources (verifiers.func)
            "verifier_accuracy": pl.List(pl.Float64),  # their cross-validation accuracy
            # a degenerate answer ("", "ok", a word repeated) earns the full reward: the trip-wire prompts
            "probe": pl.Boolean,
        }
    ),
    # one row per file of the newest export (resources/exports.py): what a trainer is given
    "training_exports": EXPORT_MANIFEST,
    "rlvr_exports": EXPORT_MANIFEST,  # the same, for the RL prompts (TRL, verl, open-instruct)
    # IFEval / IFBench prompts as published (evaluation.py); kwargs as JSON, one object per instruction
    "benchmark_prompts": pl.Schema({
        "prompt_id": pl.String,  # benchmark:key (keys of the two benchmarks can meet)
        "benchmark": pl.String, "key": pl.String, "prompt": pl.String,
        "instruction_id_list": pl.List(pl.String), "kwargs": pl.String,
    }),
    # the benchmark instruction types (checker ids) the training data covers: a seed whose
    # reference names the checker has prompts in the data (evaluation.covered_types)
    "covered_instruction_types": pl.Schema({
        "benchmark": pl.String, "checker": pl.String,  # checker ids are unique across the two benchmarks
        "instruction_ids": pl.List(pl.String),  # the seeds behind it
    }),
}
# one model's answer to each benchmark prompt and the official checkers' verdicts on it; an
# asset per model scored: the base and each checkpoint
BENCHMARK_SCORES = pl.Schema({
    "prompt_id": pl.String, "benchmark": pl.String, "model": pl.String, "generation_id": pl.String,
    "response": pl.String, "finish_reason": pl.String, "instruction_id_list": pl.List(pl.String),
    "instruction_strict": pl.List(pl.Boolean), "instruction_loose": pl.List(pl.Boolean),
    "prompt_strict": pl.Boolean, "prompt_loose": pl.Boolean,
})
SCORED_MODELS = ("base", "sft", "dpo", "online_dpo", "grpo")  # the base and each checkpoint (CHECKPOINT_ARTIFACTS)
SCORE_ARTIFACTS = tuple(f"{model}_benchmark_scores" for model in SCORED_MODELS)
SCHEMAS.update(dict.fromkeys(SCORE_ARTIFACTS, BENCHMARK_SCORES))
# the evaluation group's artifacts (the evaluate and train jobs'); every other one is the data (autoif_job's)
MODEL_ARTIFACTS = ("benchmark_prompts", "covered_instruction_types", *SCORE_ARTIFACTS)
# the trained models (train_job's): checkpoint directories, not frames, so no schema
# (resources/checkpoints.py writes them with a manifest)
CHECKPOINT_ARTIFACTS = ("sft_checkpoint", "dpo_checkpoint", "online_dpo_checkpoint", "grpo_checkpoint")

# the training data: every round's rows in one unpartitioned asset (the rest with a `round`
# column are partitioned by it)
COMBINED = ("sft_dataset", "dpo_pairs", "rl_prompts")
ROUND_STAGES = [name for name, schema in SCHEMAS.items() if "round" in schema and name not in COMBINED]


class SchemaError(ValueError):
    """A frame does not match its artifact's declared schema."""


# kind -> the prefix of its ids ("resp-1a2b..."): an id says which table it belongs to
ID_PREFIXES = {
    "instruction": "ins", "candidate": "cand", "verifier": "ver", "case": "case", "back_translation": "bt",
    "query": "qry", "prompt": "prm", "response": "resp", "sft": "sft", "pair": "pair",
}
GENERATION_PREFIX = "gen"  # a completion in the ledger (LLMResource), not a table row

# asset -> the column that identifies its rows
PRIMARY_KEYS = {
    "seed_instructions": "instruction_id", "augmented_instructions": "instruction_id",
    "verifier_candidates": "candidate_id", "verifiers": "verifier_id", "test_cases": "case_id",
    "back_translations": "back_translation_id", "nli_verdicts": "back_translation_id",
    "consistent_instructions": "instruction_id", "queries": "query_id", "instruction_prompts": "prompt_id",
    "responses": "response_id", "response_verdicts": "response_id", "quality_scores": "response_id",
    "sft_dataset": "sample_id", "dpo_pairs": "pair_id", "training_exports": "file",
    "rl_prompts": "prompt_id", "rlvr_exports": "file",  # an RL prompt is its instruction prompt (prm-: traced there)
    "benchmark_prompts": "prompt_id", "covered_instruction_types": "checker",
    **dict.fromkeys(SCORE_ARTIFACTS, "prompt_id"),
}
# id prefix -> the asset whose rows it names
ID_ASSETS = {
    "ins": "augmented_instructions", "cand": "verifier_candidates", "ver": "verifiers", "case": "test_cases",
    "bt": "back_translations", "qry": "queries", "prm": "instruction_prompts", "resp": "responses",
    "sft": "sft_dataset", "pair": "dpo_pairs",
}
# (child asset, column) -> (parent asset, column): every row's parents, the chain `autoif trace`
# walks. (A `generation_id` column names a completion in the ledger.)
REFERENCES = [
    ("verifier_candidates", "instruction_id", "augmented_instructions", "instruction_id"),
    ("verifiers", "instruction_id", "augmented_instructions", "instruction_id"),
    ("test_cases", "instruction_id", "augmented_instructions", "instruction_id"),
    ("back_translations", "verifier_id", "verifiers", "verifier_id"),
    ("nli_verdicts", "back_translation_id", "back_translations", "back_translation_id"),
    ("consistent_instructions", "instruction_id", "verifiers", "instruction_id"),
    ("instruction_prompts", "instruction_id", "consistent_instructions", "instruction_id"),
    ("instruction_prompts", "query_id", "queries", "query_id"),
    ("responses", "prompt_id", "instruction_prompts", "prompt_id"),
    ("response_verdicts", "response_id", "responses", "response_id"),
    ("quality_scores", "response_id", "responses", "response_id"),
    ("sft_dataset", "response_id", "responses", "response_id"),
    ("sft_dataset", "query_id", "queries", "query_id"),
    ("dpo_pairs", "chosen_response_id", "responses", "response_id"),
    ("dpo_pairs", "rejected_response_id", "responses", "response_id"),
    ("rl_prompts", "prompt_id", "instruction_prompts", "prompt_id"),
]


def stable_hash(kind: str, *parts: object) -> str:
    """16 hex chars of SHA-256 over `kind` and the parts (kept apart by a separator)."""
    h = hashlib.sha256(kind.encode())
    for part in parts:
        h.update(b"\x1f")
        h.update(str(part).encode())
    return h.hexdigest()[:16]


def content_id(kind: str, *parts: object) -> str:
    """A stable id from the content that defines a row, named for its kind: "resp-1a2b...".
    Equal text of two kinds (an instruction and a query) gives two ids."""
    return f"{ID_PREFIXES[kind]}-{stable_hash(kind, *parts)}"


def frame(name: str, rows: list[dict]) -> pl.DataFrame:
    """Rows -> a frame with the artifact's declared schema (also when there are no rows)."""
    return pl.DataFrame(rows, schema=SCHEMAS[name])


def conform(name: str, df: pl.DataFrame) -> pl.DataFrame:
    """Return `df` with exactly the declared columns, in order, with the declared types.

    Missing columns or values that cannot be cast raise SchemaError naming the artifact and
    column, rather than writing a Parquet file the next stage cannot read.
    """
    schema = SCHEMAS[name]
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise SchemaError(f"{name}: missing column(s) {missing}; have {df.columns}")
    try:
        return df.select([pl.col(c).cast(t, strict=True) for c, t in schema.items()])
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as exc:
        raise SchemaError(f"{name}: column types do not match {dict(schema)}: {exc}") from exc
