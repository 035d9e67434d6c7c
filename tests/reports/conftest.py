from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from keras import backend

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m reports ARGS` in a process of its own, as a user runs it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "reports", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


def copy_run(source: Path, destination: Path, **meta) -> Path:
    """A copy of the run directory `source` at `destination`, its run.json's
    fields updated with `meta` (a field given None is removed)."""
    shutil.copytree(source, destination)
    path = destination / "run.json"
    fields = {**json.loads(path.read_text()), **meta}
    path.write_text(json.dumps({key: value for key, value in fields.items() if value is not None}))
    return destination


# The reports do not depend on the Keras backend: the TensorFlow process of
# `tox -e tests` checks them, and the JAX and PyTorch processes leave them out.
collect_ignore_glob = [] if backend.backend() == "tensorflow" else ["test_*.py"]
