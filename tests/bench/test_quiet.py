"""The frameworks' native start-up messages kept out of the output
(`bench.quiet`), and given back when loading fails."""

from __future__ import annotations

import os

import pytest

from bench import quiet
from tests import backend as tb

pytestmark = tb.BACKEND_INDEPENDENT


def test_native_writes_are_silenced(capfd):
    with quiet.native_stderr():
        os.write(2, b"oneDNN custom operations are on\n")
    assert "oneDNN" not in capfd.readouterr().err


def test_they_are_replayed_when_the_block_fails(capfd):
    with pytest.raises(RuntimeError, match="no CUDA"), quiet.native_stderr():
        os.write(2, b"Could not load dynamic library libcudart\n")
        raise RuntimeError("no CUDA")
    assert "Could not load dynamic library libcudart" in capfd.readouterr().err


def test_an_expected_error_speaks_for_itself(capfd):
    with pytest.raises(ValueError), quiet.native_stderr(expected=(ValueError,)):
        os.write(2, b"noise\n")
        raise ValueError("--sweep: no such sweep")
    assert "noise" not in capfd.readouterr().err


def test_not_silenced_when_asked(capfd):
    with quiet.native_stderr(silenced=False):
        os.write(2, b"framework log line\n")
    assert "framework log line" in capfd.readouterr().err


def test_stderr_is_restored_after_the_block(capfd):
    with quiet.native_stderr():
        pass
    os.write(2, b"after\n")
    assert "after" in capfd.readouterr().err
