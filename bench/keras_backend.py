"""The Keras backend a process will load, checked before Keras is imported.

Keras picks its backend once, when it is first imported: `KERAS_BACKEND` when
set, else the "backend" entry of `keras.json` in `KERAS_HOME` (default
`~/.keras`, or `/tmp/.keras` when the home directory is not writable), else
TensorFlow. A name Keras does not know, or a backend whose framework is not
installed (TensorFlow on a machine set up for JAX and PyTorch only, such as
the GPU machine of docs/gpu/), makes `import keras` fail deep inside Keras.
`problem()` says it in one line first; every entry point of the suite asks it.
"""

from __future__ import annotations

import importlib.util
import json
import os

# The Keras backends the suite runs on, and the module each one needs (one home for this list:
# `bench.backends` maps them to their runners).
SUPPORTED = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
INSTALL = "pip install -e '.[{extra}]'"


def _keras_dir() -> str:
    """Where Keras looks for keras.json (keras/src/backend/config.py's rule)."""
    if "KERAS_HOME" in os.environ:
        return os.environ["KERAS_HOME"]
    home = os.path.expanduser("~")
    return os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")


def chosen() -> tuple[str, str]:
    """The backend Keras will load, and where that choice comes from."""
    name = os.environ.get("KERAS_BACKEND")
    if name:
        return name, "KERAS_BACKEND"
    path = os.path.join(_keras_dir(), "keras.json")
    try:
        with open(path) as file:
            name = json.load(file).get("backend")
    except (OSError, ValueError, AttributeError):
        name = None
    if name:
        return name, f"the backend of {path} (KERAS_BACKEND is not set)"
    return "tensorflow", "Keras' default (KERAS_BACKEND is not set)"


def installed() -> list[str]:
    """The supported backends whose framework this Python can import."""
    return [name for name, module in SUPPORTED.items() if importlib.util.find_spec(module) is not None]


def problem() -> str | None:
    """One line saying why Keras cannot load the chosen backend here, or None."""
    name, source = chosen()
    received = f"KERAS_BACKEND={name}" if source == "KERAS_BACKEND" else f"KERAS_BACKEND=(not set), backend={name}"
    present = ", ".join(installed()) or "none of them"
    if name not in SUPPORTED:
        *others, last = SUPPORTED
        return (f"KERAS_BACKEND: involution-bench runs on Keras' {', '.join(others)} and {last} backends, and "
                f"{source} names {name!r}; set KERAS_BACKEND to one installed here ({present}). Received: {received}")
    if importlib.util.find_spec(SUPPORTED[name]) is None:
        return (f"KERAS_BACKEND: {source} gives {name}, which is not installed in this Python; set KERAS_BACKEND "
                f"to one that is ({present}) or install it ({INSTALL.format(extra=name)}). Received: {received}")
    return None
