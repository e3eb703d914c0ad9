"""Running a declared LLM stage (method/stages.py) over an asset's rows: one request per
item, one chat call (ledger-backed), each completion parsed or dropped with its reason."""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import Sampling
from ..method.parsing import ParseError
from ..method.stages import Stage
from ..resources.generation import GenerationStats
from ..resources.llm import Completion, LLMResource


@dataclass(frozen=True)
class Parsed:
    item: Any  # what the asset passed in for this request
    completion: Completion
    value: Any  # the stage parser's result


@dataclass
class StageRun:
    parsed: list[Parsed] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    stats: GenerationStats = field(default_factory=GenerationStats)
    model: str = ""

    @property
    def metadata(self) -> dict[str, Any]:
        """The LLM call's stats, for the asset."""
        return self.stats.as_metadata(self.model)

    def __add__(self, other: "StageRun") -> "StageRun":
        return StageRun(self.parsed + other.parsed, self.dropped + other.dropped, self.stats + other.stats,
                        self.model or other.model)


def run_stage(
    context: Any,
    llm: LLMResource,
    stage: Stage,
    items: Sequence[tuple[Any, tuple, int]],
    sampling: Sampling,
    schema_args: tuple = (),
) -> StageRun:
    """`items`: (item, prompt arguments, seed) per request."""
    schema = stage.schema(*schema_args) if stage.schema else None
    requests = [sampling.request(stage.prompt(*args), seed=seed, json_schema=schema, top_logprobs=stage.top_logprobs)
                for _, args, seed in items]
    result = llm.chat(requests, context=context)
    run = StageRun(stats=result.stats, model=result.model)
    for (item, _, _), completion in zip(items, result.completions):
        if completion.finish_reason == "error":
            run.dropped["llm_error"] += 1
        elif completion.finish_reason == "length" and not stage.keep_truncated:
            run.dropped["truncated"] += 1
        else:
            try:
                run.parsed.append(Parsed(item, completion, stage.parse(completion.text)))
            except ParseError as exc:
                run.dropped[exc.reason] += 1
    return run
