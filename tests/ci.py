"""The CI variable: AUTOIF_CI=1 (set by `make test`) means every real component a test needs
is there. A test that cannot run says why, and under AUTOIF_CI that is a failure, never a skip
(conftest also turns any other skip into a failure there)."""

import os

import pytest

CI = os.environ.get("AUTOIF_CI") == "1"


def unavailable(problem: str) -> None:
    """Skip naming `problem`; under AUTOIF_CI, fail naming it."""
    if CI:
        pytest.fail(f"AUTOIF_CI=1 but {problem}")
    pytest.skip(problem)
