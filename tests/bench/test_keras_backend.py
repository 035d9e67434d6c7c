"""The backend Keras will load, checked before it is imported (`bench.keras_backend`)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from bench import keras_backend
from tests import backend as tb
from tests.bench.conftest import ROOT, bench_env


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty KERAS_HOME and no KERAS_BACKEND: Keras' own default applies."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    return tmp_path


def _without(monkeypatch, *modules: str) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(keras_backend.importlib.util, "find_spec",
                        lambda name, *args: None if name in modules else find_spec(name, *args))


def test_the_choice_follows_keras_order(keras_home, monkeypatch):
    assert keras_backend.chosen() == ("tensorflow", "Keras' default (KERAS_BACKEND is not set)")
    (keras_home / "keras.json").write_text(json.dumps({"backend": "jax", "floatx": "float32"}))
    name, source = keras_backend.chosen()
    assert name == "jax" and str(keras_home / "keras.json") in source
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert keras_backend.chosen() == ("torch", "KERAS_BACKEND")
    (keras_home / "keras.json").write_text("{not json")
    monkeypatch.delenv("KERAS_BACKEND")
    assert keras_backend.chosen()[0] == "tensorflow"


def test_an_installed_backend_is_no_problem(keras_home, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", tb.NAME)
    assert keras_backend.problem() is None
    assert tb.NAME in keras_backend.installed()


def test_a_backend_not_installed_is_one_line_naming_the_fix(keras_home, monkeypatch):
    _without(monkeypatch, "tensorflow")
    message = keras_backend.problem()
    assert "\n" not in message and message.startswith("KERAS_BACKEND: ")
    assert "Keras' default (KERAS_BACKEND is not set) gives tensorflow, which is not installed" in message
    assert "pip install -e '.[tensorflow]'" in message
    assert message.endswith("Received: KERAS_BACKEND=(not set), backend=tensorflow")


def test_a_backend_keras_does_not_know_is_one_line(keras_home, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "tensorfow")
    message = keras_backend.problem()
    assert "\n" not in message and message.endswith("Received: KERAS_BACKEND=tensorfow")
    assert f"installed here ({', '.join(keras_backend.installed())})" in message


def test_every_supported_backend_has_a_runner():
    from bench import backends

    assert set(backends._MODULES) == set(keras_backend.SUPPORTED)
    for module in backends._MODULES.values():
        assert importlib.util.find_spec(module) is not None


@tb.BACKEND_INDEPENDENT
@pytest.mark.parametrize("command", [
    ["-m", "pytest", "bench", "--benchmark-only", "-p", "no:cacheprovider", "--collect-only", "-q"],
    ["-m", "pytest", "tests/layers/test_registry.py", "-p", "no:cacheprovider", "-q"],
    ["-m", "bench.targets"],
    ["-m", "bench.calibrate"],
    ["-m", "bench.kernel_resources"],
    ["-m", "bench.seed_models"],
])
def test_every_entry_point_refuses_an_unknown_backend_in_one_line(command, tmp_path):
    """Without the check, each of these fails with Keras' traceback from inside `import keras`."""
    env = bench_env() | {"KERAS_BACKEND": "tensorfow", "KERAS_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    text = result.stdout + result.stderr
    assert result.returncode in (2, 4), text[-2000:]  # argparse's and pytest's usage-error codes
    assert "Traceback" not in text and "INTERNALERROR" not in text
    assert sum("Received: KERAS_BACKEND=tensorfow" in line for line in text.splitlines()) == 1
