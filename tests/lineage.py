"""What "traces to a seed" means, for every test that follows a training row back with
`autoif trace` (trace.Tracer): the chain resolves, and each instruction in it ends either at a
line of the seed file or at the augmentation generation that wrote it, found in the ledger."""

from autoif_dagster.method.parsing import normalise_instruction
from autoif_dagster.resources.io_manager import read_artifact
from autoif_dagster.trace import Tracer


def chain(node: dict) -> list[dict]:
    """Every node of a trace tree."""
    return [node] + [n for parent in node.get("parents", []) for n in chain(parent)]


def assert_traces_to_a_seed(tracer: Tracer, row_id: str, via: tuple[str, ...] = ("queries",)) -> list[dict]:
    """Fails, naming the row, unless every parent resolves, the chain passes through `via`,
    and each of its instructions is a seed or was written by a ledger completion whose request
    showed the supervisor seed examples and whose text holds that instruction. Returns the chain."""
    nodes = chain(tracer.trace(row_id))
    assert not [n["id"] for n in nodes if n.get("missing")], (row_id, "unresolved parents")
    assert set(via) <= {n["asset"] for n in nodes}, (row_id, via)
    seeds = dict(read_artifact(tracer.home.assets, "seed_instructions").select("instruction_id", "instruction").iter_rows())
    instructions = [n for n in nodes if n["asset"] == "augmented_instructions"]
    assert instructions, (row_id, "no instruction in the chain")
    for node in instructions:
        row = node["row"]
        if row["origin"] == "seed":
            assert seeds.get(row["instruction_id"]) == row["instruction"], (row_id, "seed not in seed_instructions", row)
            continue
        assert row["origin"] == "augmented", row
        generation = node.get("generation") or {"missing": "no generation_id"}
        assert "missing" not in generation, (row_id, row["instruction_id"], generation)
        prompt = "\n".join(m["content"] for m in generation["request"]["messages"])
        assert any(seed in prompt for seed in seeds.values()), (row_id, "the request showed no seed")
        written = {normalise_instruction(line) for line in generation["text"].splitlines()}
        assert row["instruction"] in written, (row_id, "the generation did not write it", row["instruction"])
    return nodes
