"""The interpreter settings `billfold serve` runs under (DECISIONS 31 and 106)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("url", "turn"),
    [("postgresql+psycopg://db/billfold", "0.0005"), ("sqlite:////tmp/billfold.db", "0.005")],
)
def test_serve_freezes_start_up_collects_less_and_on_postgres_shortens_the_gil_turn(
    url: str, turn: str
) -> None:
    # In a process of its own: the settings are process-wide.
    code = (
        "import gc, sys; from billfold.api.app import tune_interpreter; "
        f"tune_interpreter({url!r}); "
        "print(gc.get_threshold(), sys.getswitchinterval(), gc.get_freeze_count() > 0)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["(50000,", "50,", "100)", turn, "True"]
