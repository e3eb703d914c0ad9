import dagster as dg
import pytest
from pydantic import ValidationError

from autoif_dagster.config import AutoIFConfig, CrossValConfig, DPOConfig, QueryConfig, VerifierConfig
from autoif_dagster.resources.llm import LLMResource


def test_demo_default_and_paper_profile():
    demo, paper = AutoIFConfig(), AutoIFConfig.paper()
    assert demo.responses.samples_per_prompt < paper.responses.samples_per_prompt == 8
    assert paper.queries.per_instruction == 16 and paper.augment.rounds == 100
    assert paper.crossval.min_functions == 3 and paper.crossval.min_cases == 10


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: CrossValConfig(function_min_accuracy=1.5), "function_min_accuracy"),
        (lambda: QueryConfig(min_chars=400, max_chars=300), "min_chars"),
        (lambda: VerifierConfig(samples_per_instruction=2, samples_per_wave=4), "samples_per_wave"),
        (lambda: VerifierConfig(samples_budget=0), "samples_budget"),
        (lambda: DPOConfig(chosen_min_pass_rate=0.2, rejected_max_pass_rate=0.5), "rejected_max_pass_rate"),
        (lambda: LLMResource(gpu_memory_utilization=0), "gpu_memory_utilization"),
        (lambda: LLMResource(backend="tgi"), "backend"),
    ],
)
def test_bad_values_name_the_field(build, field):
    with pytest.raises((ValidationError, dg.DagsterInvalidConfigError)) as exc:
        build()
    assert field in str(exc.value)


def test_bad_run_config_fails_before_anything_runs():
    from autoif_dagster.definitions import defs

    job = defs.resolve_job_def("autoif")
    bad = {"resources": {"autoif": {"config": {"responses": {"samples_per_prompt": "eight"}}}}}
    with pytest.raises(dg.DagsterInvalidConfigError, match="samples_per_prompt"):
        job.execute_in_process(run_config=bad)
