"""A code location for the run-queue test: one asset in the project's GPU pool that records
when it ran, so the test can see whether two runs overlapped."""

import json
import os
import time

import dagster as dg

from autoif_dagster import pools


@dg.asset(pool=pools.GPU)
def holds_the_gpu(context: dg.AssetExecutionContext) -> None:
    start = time.time()
    time.sleep(float(os.environ.get("POOL_TEST_SECONDS", "4")))
    with open(os.environ["POOL_TEST_LOG"], "a") as log:
        log.write(json.dumps({"run": context.run_id, "start": start, "end": time.time()}) + "\n")


gpu_job = dg.define_asset_job("gpu_job", [holds_the_gpu])
defs = dg.Definitions(assets=[holds_the_gpu], jobs=[gpu_job], executor=dg.in_process_executor)
