"""The edges of the world, each a Dagster ConfigurableResource: LLMs, the verifier sandbox,
the NLI judge and Parquet storage. Heavy libraries are imported lazily inside them."""
