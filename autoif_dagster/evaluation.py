"""IFEval and IFBench: their prompts, a seeded subset, the official checkers' verdicts, the scores.

The checkers are `if-verifiable`'s copies of Google's IFEval and AllenAI's IFBench
registries; verdicts follow the official rule (strict: the response as it is; loose: any of
eight variants with the first and/or last line or markdown asterisks removed). Scores are the
four everyone reports: prompt-level (every instruction of a prompt followed) and
instruction-level (share of instructions followed), strict and loose.
"""

import contextlib
import functools
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .method.selection import sample_for

BENCHMARKS = {"ifeval": "google/IFEval", "ifbench": "allenai/IFBench_test"}  # their Hugging Face datasets
METRICS = ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose")


class EvaluationError(ValueError):
    """A benchmark's prompts cannot be read, or name an instruction its checkers do not know."""


@functools.cache  # once per process: judge() asks for it per answer
def _registry(benchmark: str) -> dict[str, Any]:
    from . import nltk_data

    nltk_data.ensure()  # before the import: IFBench's checkers download what they cannot find
    import langdetect

    # The language checker's detector is random unless seeded: 1-2 of 71 verdicts changed
    # from one judgement of the same answers to the next.
    langdetect.DetectorFactory.seed = 0
    if benchmark == "ifeval":
        from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT
    elif benchmark == "ifbench":
        from if_verifiable.ifbench.instructions_registry import INSTRUCTION_DICT
    else:
        raise EvaluationError(f"unknown benchmark {benchmark!r}: one of {', '.join(BENCHMARKS)}")
    return INSTRUCTION_DICT


def _row(benchmark: str, raw: dict, where: str, known: dict) -> dict:
    missing = [f for f in ("key", "prompt", "instruction_id_list", "kwargs") if f not in raw]
    if missing:
        raise EvaluationError(f"{where}: no {', '.join(missing)} (a {benchmark} prompt has key, prompt, "
                              "instruction_id_list and kwargs)")
    ids, kwargs = list(raw["instruction_id_list"]), list(raw["kwargs"])
    if len(ids) != len(kwargs):
        raise EvaluationError(f"{where}: {len(ids)} instructions but {len(kwargs)} kwargs")
    unknown = [i for i in ids if i not in known]
    if unknown:  # the checkers would skip it silently, and the prompt would score as if it had none
        raise EvaluationError(f"{where}: instruction {unknown[0]!r} is not in the {benchmark} checkers")
    return {"benchmark": benchmark, "key": str(raw["key"]), "prompt": raw["prompt"], "instruction_id_list": ids,
            "kwargs": json.dumps(kwargs, sort_keys=True)}


def load_prompts(benchmark: str, path: str | None = None) -> list[dict]:
    """Every prompt of a benchmark, from a JSONL file (the official format) or, without one,
    from its Hugging Face dataset. kwargs are kept as JSON: each instruction has its own."""
    known = _registry(benchmark)
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise EvaluationError(f"{benchmark} prompts: no file {path}")
        rows = []
        with file.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise EvaluationError(f"{path}:{n}: not JSON ({exc.msg})") from None
                rows.append(_row(benchmark, raw, f"{path}:{n}", known))
    else:
        try:
            import datasets

            split = next(iter(datasets.load_dataset(BENCHMARKS[benchmark]).values()))
        except Exception as exc:  # offline, or the Hub refused: say what to do instead
            raise EvaluationError(
                f"{benchmark} prompts: could not load {BENCHMARKS[benchmark]} from the Hugging Face Hub "
                f"({type(exc).__name__}: {str(exc)[:200]}); give a local JSONL file ({benchmark}_path)"
            ) from exc
        rows = [_row(benchmark, raw, f"{BENCHMARKS[benchmark]} row {n}", known) for n, raw in enumerate(split)]
    if not rows:
        raise EvaluationError(f"{benchmark} prompts: none in {path or BENCHMARKS[benchmark]}")
    keys = [r["key"] for r in rows]
    if len(set(keys)) != len(keys):
        raise EvaluationError(f"{benchmark} prompts: duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return rows


def subset(rows: Sequence[dict], n: int | None, seed: int) -> list[dict]:
    """n prompts chosen by a seeded hash of their keys (None: all), in key order."""
    if n is None or n >= len(rows):
        return list(rows)
    by_key = {r["key"]: r for r in rows}
    chosen = set(sample_for(rows[0]["benchmark"], list(by_key), n, seed))
    return [r for r in rows if r["key"] in chosen]


def judge(row: dict, response: str) -> dict:
    """The checkers' verdicts on one response: per instruction and for the prompt, strict and
    loose. The same answer always gets the same verdicts (see _seeded)."""
    from if_verifiable.common import evaluate_instructions

    registry = _registry(row["benchmark"])
    with _seeded(f"{row['benchmark']}/{row['key']}/{response}"):
        results, _ = evaluate_instructions(response, row["instruction_id_list"], json.loads(row["kwargs"]),
                                           row["prompt"], registry)
    if not results:  # an empty response: the library returns no verdicts, the official rule fails each
        strict = loose = [False] * len(row["instruction_id_list"])
    else:
        strict, loose = [r.strict_pass for r in results], [r.loose_pass for r in results]
    return {"instruction_strict": strict, "instruction_loose": loose,
            "prompt_strict": all(strict), "prompt_loose": all(loose)}


def reference_verdict(reference: dict, text: str) -> bool:
    """One checker's strict verdict on `text` (a seed's reference: benchmark, checker id and
    kwargs). Raises what the checker raises, arguments that do not fit it included."""
    if reference["checker"] not in _registry(reference["benchmark"]):  # judge() would pass over it silently
        raise EvaluationError(f"{reference['checker']!r} is not one of {reference['benchmark']}'s checkers")
    row = {"benchmark": reference["benchmark"], "key": f"reference/{reference['checker']}", "prompt": "",
           "instruction_id_list": [reference["checker"]], "kwargs": json.dumps([reference["kwargs"]])}
    return judge(row, text)["instruction_strict"][0]


@contextlib.contextmanager
def _seeded(seed: str):
    """`random` seeded for the block, its state put back after. IFEval's checkers draw an
    argument they cannot use (a "letter" '#' in prompts 1122 and 1129) from `random`, as the
    official code does; seeded by the answer, a score does not change from one judgement to
    the next. (str seeds are hashed with SHA-512: the same in every process.)"""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def scores(verdicts: Sequence[dict]) -> dict[str, float]:
    """The four scores over a benchmark's judged responses (0-1)."""
    if not verdicts:
        return dict.fromkeys(METRICS, 0.0)
    instructions = sum(len(v["instruction_strict"]) for v in verdicts)
    return {
        "prompt_strict": sum(v["prompt_strict"] for v in verdicts) / len(verdicts),
        "prompt_loose": sum(v["prompt_loose"] for v in verdicts) / len(verdicts),
        "instruction_strict": sum(sum(v["instruction_strict"]) for v in verdicts) / max(instructions, 1),
        "instruction_loose": sum(sum(v["instruction_loose"]) for v in verdicts) / max(instructions, 1),
    }


def per_benchmark(verdicts: Sequence[dict]) -> dict[str, dict[str, float]]:
    """benchmark -> its four scores, over judged responses that carry their `benchmark`."""
    grouped: dict[str, list[dict]] = {}
    for v in verdicts:
        grouped.setdefault(v["benchmark"], []).append(v)
    return {benchmark: scores(rows) for benchmark, rows in grouped.items()}


def against_base(base_verdicts: Sequence[dict], model_verdicts: Sequence[dict]) -> list[dict]:
    """One row per benchmark and metric of two models' judged responses: the base's score, the
    model's and the difference."""
    base, model = per_benchmark(base_verdicts), per_benchmark(model_verdicts)
    return [{"benchmark": b, "metric": m, "base": base[b][m], "model": model[b][m], "delta": model[b][m] - base[b][m]}
            for b in model if b in base for m in METRICS]
