"""Fixtures for the VM lab suite: the lab itself (`tests/vm/vmlab.sh up 3`, once per session).
Helpers live in vmlab_helpers.py.
"""

import os
import time

import pytest

from vmlab_helpers import BIN, STATE, VMLAB, run


@pytest.fixture(scope="session")
def vmlab():
    """The VM lab with three guests (started if needed; left running for the next session:
    tests/vm/run.sh takes it down)."""
    if os.geteuid() != 0:
        pytest.skip("the VM lab needs root")
    if not BIN.exists():
        pytest.skip(f"no gremesh binary at {BIN}")
    t0 = time.monotonic()
    res = run([str(VMLAB), "up", "3"], check=False, timeout=1200)
    if res.returncode != 0:
        raise AssertionError(f"vmlab.sh up 3 failed:\n{res.stdout}\n{res.stderr}")
    print(f"vmlab up: {time.monotonic() - t0:.1f}s")
    return STATE
