"""Fixtures that tests of more than one package use."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest


def pytest_configure(config):
    if config.option.help:
        return
    from bench import keras_backend

    message = keras_backend.problem()  # one line instead of a traceback from deep inside `import keras`
    if message:
        raise pytest.UsageError(message)


@pytest.fixture
def set_switch(monkeypatch) -> Iterator[Callable[[str, str | None], None]]:
    """set_switch(variable, value) sets a kernel switch (INVOLUTION_UNROLL_WINDOW,
    INVOLUTION_TILE_WIDTH) for one test, None unsets it. The kernels read each
    once per process (`_common.switch`): its cache is cleared at each change
    and after the test, once the environment is restored."""
    from layers.aggregation._common import switch

    def set_(variable: str, value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, value)
        switch.cache_clear()

    yield set_
    monkeypatch.undo()
    switch.cache_clear()
