from __future__ import annotations

from pathlib import Path

import pytest
from keras import backend

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


# The reports do not depend on the Keras backend: the TensorFlow process of
# `tox -e tests` checks them, and the JAX and PyTorch processes leave them out.
collect_ignore_glob = [] if backend.backend() == "tensorflow" else ["test_*.py"]
