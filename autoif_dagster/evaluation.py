"""IFEval and IFBench: their prompts, a seeded subset, the official checkers' verdicts, the scores.

The checkers are `if-verifiable`'s copies of Google's IFEval and AllenAI's IFBench
registries; verdicts follow the official rule (strict: the response as it is; loose: any of
eight variants with the first and/or last line or markdown asterisks removed). Scores are the
four everyone reports: prompt-level (every instruction of a prompt followed) and
instruction-level (share of instructions followed), strict and loose.

Every score comes with a percentile bootstrap interval over the prompts (a 40-prompt sample
moves 2.5 points per prompt), and a model against its base with a paired one: the same
resampled prompts for both, so what the two share (an easy prompt, a hard one) cancels. The
instruction-level scores resample prompts as clusters, since the instructions of one prompt
are not independent (one rambling answer breaks several). Instruction-level accuracy is also
given per instruction type (the checker's id), and over the types the training data covers
(covered_types) against the rest.
"""

import contextlib
import functools
import json
import random
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .method.selection import sample_for

BENCHMARKS = {"ifeval": "google/IFEval", "ifbench": "allenai/IFBench_test"}  # their Hugging Face datasets
METRICS = ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose")
# A per-type difference gets an interval from this many instructions of the type on: below it
# one instruction moves the type's accuracy by more than 5 points, and the percentile interval
# of a difference of a few 0/1 verdicts is too coarse to trust (it covers less than it says).
TYPE_INTERVAL_MIN = 20


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


class Estimate(NamedTuple):
    """A score, or a difference of two, with the ends of its bootstrap interval."""

    value: float
    low: float
    high: float

    def text(self, signed: bool = False) -> str:
        """`0.189 [0.156, 0.222]`; signed (a difference): `+0.025 [-0.010, +0.060]`."""
        f = "{:+.3f}" if signed else "{:.3f}"
        return f"{f.format(self.value)} [{f.format(self.low)}, {f.format(self.high)}]"


# each metric's numerator per prompt over its denominator per prompt (_tallies)
_DENOMINATOR = {"prompt_strict": "prompts", "prompt_loose": "prompts",
                "instruction_strict": "instructions", "instruction_loose": "instructions"}


def _tallies(verdicts: Sequence[dict], keep: Collection[tuple[str, str]] | None = None,
             inside: bool = True) -> dict[str, np.ndarray]:
    """Per prompt, the numerators and denominators of the four metrics: every metric is a
    ratio of sums over prompts (prompt-level: prompts passed / prompts; instruction-level:
    instructions followed / instructions). With `keep`, a set of (benchmark, type), the
    instruction-level tallies count only the instructions of those types (inside) or of the
    others (not inside); the prompt-level ones are left whole."""
    out = {k: np.zeros(len(verdicts)) for k in (*METRICS, "prompts", "instructions")}
    for i, v in enumerate(verdicts):
        strict, loose = v["instruction_strict"], v["instruction_loose"]
        if keep is not None:
            chosen = [((v["benchmark"], t) in keep) == inside for t in v["instruction_id_list"]]
            strict = [x for x, c in zip(strict, chosen) if c]
            loose = [x for x, c in zip(loose, chosen) if c]
        out["prompt_strict"][i], out["prompt_loose"][i] = bool(v["prompt_strict"]), bool(v["prompt_loose"])
        out["instruction_strict"][i], out["instruction_loose"][i] = sum(strict), sum(loose)
        out["prompts"][i], out["instructions"][i] = 1, len(strict)
    return out


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """`resamples` bootstrap samples of n prompt indices (rows), drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _ratio(num: np.ndarray, den: np.ndarray, idx: np.ndarray, confidence: float) -> Estimate:
    """sum(num) / sum(den) over the prompts, and the percentile interval of the same ratio
    over the resampled prompts (each row of idx one resample). With num a difference of two
    models' numerators on the same prompts, the paired difference."""
    if den.sum() <= 0:
        raise EvaluationError("nothing to score: no prompt has an instruction")
    sums = den[idx].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample of prompts without any instruction
        stats = num[idx].sum(axis=1) / sums
    tail = (1 - confidence) / 2
    low, high = np.nanquantile(stats, [tail, 1 - tail])
    return Estimate(float(num.sum() / den.sum()), float(low), float(high))


def bootstrap(verdicts: Sequence[dict], *, resamples: int = 2000, confidence: float = 0.95,
              seed: int = 0) -> dict[str, Estimate]:
    """The four scores of one benchmark's judged responses, each with its percentile bootstrap
    interval over the prompts: prompt-level by resampling prompts, instruction-level by
    resampling prompts as clusters (followed instructions / instructions in the resample)."""
    if not verdicts:
        raise EvaluationError("no judged responses to score")
    t = _tallies(verdicts)
    idx = _indices(len(verdicts), resamples, seed)
    return {m: _ratio(t[m], t[_DENOMINATOR[m]], idx, confidence) for m in METRICS}


def _many(n: int, noun: str) -> str:
    """A count with its noun and verb: 1 prompt has, 2 prompts have; 1 prompt id is, 2 prompt ids are."""
    verb = ("is", "are") if noun.endswith("id") else ("has", "have")
    return f"{n} {noun} {verb[0]}" if n == 1 else f"{n} {noun}s {verb[1]}"


def paired(base_verdicts: Sequence[dict], model_verdicts: Sequence[dict]) -> list[tuple[dict, dict]]:
    """(base row, model row) per prompt, matched by prompt_id, in the model's order. Two sets
    of prompts that are not the same, or a prompt whose instructions differ between the two,
    is an error: a difference over other prompts means nothing."""
    by_id: list[dict[str, dict]] = []
    for who, rows in (("base", base_verdicts), ("model", model_verdicts)):
        ids: dict[str, dict] = {}
        for row in rows:
            if row["prompt_id"] in ids:
                raise EvaluationError(f"the {who}'s scores hold prompt {row['prompt_id']!r} twice")
            ids[row["prompt_id"]] = row
        by_id.append(ids)
    base, model = by_id
    only_base, only_model = sorted(set(base) - set(model)), sorted(set(model) - set(base))
    if only_base or only_model:
        differ = _many(len(only_base) + len(only_model), "prompt id")
        raise EvaluationError(
            f"the model and the base were scored on different prompts: {differ} not in both ({len(only_base)} "
            f"only the base's, {len(only_model)} only the model's; e.g. {(only_base + only_model)[:3]}): score both "
            "on the same benchmark_prompts")
    changed = [pid for pid, row in model.items()
               if row.get("instruction_id_list") != base[pid].get("instruction_id_list")
               or len(row["instruction_strict"]) != len(base[pid]["instruction_strict"])]
    if changed:
        raise EvaluationError(f"{_many(len(changed), 'prompt')} other instructions in the model's scores than in "
                              f"the base's (e.g. {changed[:3]}): score both on the same benchmark_prompts")
    return [(base[pid], row) for pid, row in model.items()]


def paired_bootstrap(base_verdicts: Sequence[dict], model_verdicts: Sequence[dict], *, resamples: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> dict[str, Estimate]:
    """model - base for each of the four scores over the same prompts (one benchmark's, matched
    by prompt_id: `paired`), with the percentile interval of the difference: each resample
    draws prompt indices once and scores both models on them."""
    pairs = paired(base_verdicts, model_verdicts)
    if not pairs:
        raise EvaluationError("no judged responses to compare")
    b, m = _tallies([p[0] for p in pairs]), _tallies([p[1] for p in pairs])
    idx = _indices(len(pairs), resamples, seed)
    return {k: _ratio(m[k] - b[k], m[_DENOMINATOR[k]], idx, confidence) for k in METRICS}


def by_benchmark(rows: Iterable[Any], benchmark_of=lambda r: r["benchmark"]) -> dict[str, list]:
    """benchmark -> its rows, benchmarks in the order they first appear."""
    grouped: dict[str, list] = {}
    for r in rows:
        grouped.setdefault(benchmark_of(r), []).append(r)
    return grouped


def against_base(base_verdicts: Sequence[dict], model_verdicts: Sequence[dict], *, resamples: int = 2000,
                 confidence: float = 0.95, seed: int = 0) -> list[dict]:
    """One row per benchmark and metric of two models' judged responses on the same prompts
    (else EvaluationError: `paired`): the base's score, the model's, their difference and the
    ends of its paired interval (delta_low, delta_high)."""
    rows = []
    for benchmark, pairs in by_benchmark(paired(base_verdicts, model_verdicts), lambda p: p[1]["benchmark"]).items():
        base, model = [p[0] for p in pairs], [p[1] for p in pairs]
        b, m = scores(base), scores(model)
        deltas = paired_bootstrap(base, model, resamples=resamples, confidence=confidence, seed=seed)
        rows += [{"benchmark": benchmark, "metric": k, "base": b[k], "model": m[k], "delta": m[k] - b[k],
                  "delta_low": deltas[k].low, "delta_high": deltas[k].high} for k in METRICS]
    return rows


def covered_types(seeds: Iterable[dict], trained: Collection[str]) -> list[dict]:
    """The benchmark instruction types the training data covers: the checker of each seed with
    a reference (its JSON: benchmark, checker, kwargs) whose instruction is in `trained` (ids of
    instructions with prompts in the data); one row per (benchmark, checker) with those
    instructions' ids. A type counts whatever its arguments (a seed's "at least 3 bullets"
    covers a prompt's "exactly 5")."""
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for seed in seeds:
        if seed["reference"] and seed["instruction_id"] in trained:
            reference = json.loads(seed["reference"])
            found[(reference["benchmark"], reference["checker"])].add(seed["instruction_id"])
    return [{"benchmark": b, "checker": c, "instruction_ids": sorted(ids)} for (b, c), ids in sorted(found.items())]


def per_type(verdicts: Sequence[dict], base_verdicts: Sequence[dict] | None = None,
             covered: Collection[tuple[str, str]] = (), *, resamples: int = 2000, confidence: float = 0.95,
             seed: int = 0, min_n: int = TYPE_INTERVAL_MIN) -> list[dict]:
    """Instruction-level accuracy per instruction type (the checker's id) of each benchmark:
    n instructions, strict and loose, whether the type is covered ((benchmark, type) in
    `covered`); with the base's judged responses on the same prompts, the base's accuracy and
    the difference, with its paired interval (prompts holding the type resampled as clusters)
    where the type has at least `min_n` instructions (else delta_*_low/high are None)."""
    pairs = paired(base_verdicts, verdicts) if base_verdicts is not None else [(None, v) for v in verdicts]
    # (benchmark, type) -> per prompt holding it: [model strict, loose, base strict, loose, instructions]
    found: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(dict)
    for i, (b, m) in enumerate(pairs):
        for j, kind in enumerate(m["instruction_id_list"]):
            tally = found[(m["benchmark"], kind)].setdefault(i, [0.0] * 5)
            tally[0] += m["instruction_strict"][j]
            tally[1] += m["instruction_loose"][j]
            if b is not None:
                tally[2] += b["instruction_strict"][j]
                tally[3] += b["instruction_loose"][j]
            tally[4] += 1
    rows = []
    for (benchmark, kind), by_prompt in sorted(found.items()):
        t = np.array(list(by_prompt.values()))
        n = int(t[:, 4].sum())
        row = {"benchmark": benchmark, "type": kind, "covered": (benchmark, kind) in covered, "n": n,
               "strict": t[:, 0].sum() / n, "loose": t[:, 1].sum() / n}
        if base_verdicts is not None:
            row.update(base_strict=t[:, 2].sum() / n, base_loose=t[:, 3].sum() / n)
            idx = _indices(len(t), resamples, seed) if n >= min_n else None
            for name, (mc, bc) in (("strict", (0, 2)), ("loose", (1, 3))):
                row[f"delta_{name}"] = (t[:, mc].sum() - t[:, bc].sum()) / n
                est = _ratio(t[:, mc] - t[:, bc], t[:, 4], idx, confidence) if idx is not None else None
                row[f"delta_{name}_low"], row[f"delta_{name}_high"] = (est.low, est.high) if est else (None, None)
        rows.append(row)
    return rows


def covered_summary(verdicts: Sequence[dict], covered: Collection[tuple[str, str]],
                    base_verdicts: Sequence[dict] | None = None, *, resamples: int = 2000,
                    confidence: float = 0.95, seed: int = 0) -> list[dict]:
    """Instruction-level accuracy over the covered types ((benchmark, type) pairs) and over the
    rest, per benchmark and over both ("all"), each with its interval (the prompts holding such
    instructions resampled as clusters); with the base's judged responses on the same prompts,
    the base's and the paired difference. Rows: benchmark, types ("covered" or "rest"),
    n_types, prompts, instructions, strict and loose (Estimates), and with a base base_strict,
    base_loose, delta_strict, delta_loose (Estimates). A scope without such instructions has
    no row."""
    pairs = paired(base_verdicts, verdicts) if base_verdicts is not None else [(None, v) for v in verdicts]
    scopes = {**by_benchmark(pairs, lambda p: p[1]["benchmark"]), "all": pairs}
    rows = []
    for scope, chosen in scopes.items():
        for types, inside in (("covered", True), ("rest", False)):
            m = _tallies([p[1] for p in chosen], covered, inside)
            held = m["instructions"] > 0
            if not held.any():
                continue
            kinds = {(p[1]["benchmark"], t) for p in chosen for t in p[1]["instruction_id_list"]}
            row: dict[str, Any] = {"benchmark": scope, "types": types,
                                   "n_types": sum((k in covered) == inside for k in kinds),
                                   "prompts": int(held.sum()), "instructions": int(m["instructions"].sum())}
            idx = _indices(int(held.sum()), resamples, seed)
            den = m["instructions"][held]
            for name in ("strict", "loose"):
                row[name] = _ratio(m[f"instruction_{name}"][held], den, idx, confidence)
            if base_verdicts is not None:
                b = _tallies([p[0] for p in chosen], covered, inside)
                for name in ("strict", "loose"):
                    key = f"instruction_{name}"
                    row[f"base_{name}"] = _ratio(b[key][held], den, idx, confidence)
                    row[f"delta_{name}"] = _ratio(m[key][held] - b[key][held], den, idx, confidence)
            rows.append(row)
    return rows
