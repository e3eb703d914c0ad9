"""The AutoIF method as pure functions: prompts, parsing, cross-validation, selection.

No Dagster, no I/O: every function here is testable on plain Python values.
"""
