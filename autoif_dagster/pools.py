"""Concurrency pools: the hardware a step holds while it runs.

An engine outlives the step that started it (the run's later LLM steps reuse it), so a pool
slot must be held for the whole run, not per step: the instances we ship (deploy/) set
`concurrency.pools.granularity: run`, and the run queue starts a run only when every pool its
steps name has a free slot. A run queued behind another (a second launch from the UI, a
schedule tick while last night's run is still going) waits in the queue; nothing is dropped
or done twice.
"""

GPU = "gpu"  # steps that load a model: LLM generation, the NLI judge, training
SANDBOX = "sandbox"  # steps that execute verifiers: bounded so that judging never starves the host

POOLS = (GPU, SANDBOX)
