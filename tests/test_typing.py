"""The public API's types: mypy checks a workflow call's arguments and its result's type.

tests/typing_sample.py holds right calls and wrong ones, each wrong one marked with the error
it must raise. Run with ``--warn-unused-ignores``, a wrong call that mypy stops refusing (an
unused ignore) or a right call it starts refusing is an error, and this test fails with mypy's
report.
"""

from __future__ import annotations

from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "typing_sample.py"


def test_mypy_checks_workflow_calls_and_results() -> None:
    out, err, status = api.run(
        [
            "--strict",
            "--warn-unused-ignores",
            "--no-error-summary",
            "--show-error-codes",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            str(SAMPLE),
        ]
    )
    assert status == 0, f"mypy on {SAMPLE.name}:\n{out}{err}"
