"""app.py makes torch's OpenMP threads sleep while they wait (OMP_WAIT_POLICY=PASSIVE) before anything loads torch,
unless the user chose a policy: libgomp reads the variable once, when torch loads, so setting it later does nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Runs app.py (bare mode, no server), then imports torch; prints the policy seen when torch was first imported.
PROBE = """
import os, runpy, sys
seen = []
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY"))
        return None
sys.meta_path.insert(0, Watch())
runpy.run_path("app.py", run_name="__main__")
import torch  # noqa: F401
print("POLICY", seen[0])
"""


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_app_sets_the_wait_policy_before_torch_loads(given: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"POLICY {expected}" in out.stdout.splitlines(), out.stdout[-2000:]
