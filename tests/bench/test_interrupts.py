"""A Ctrl-C that Python drops (raised inside a finalizer) still stops the
sweep before its next case."""

from __future__ import annotations

import gc
import os
import signal
import sys

import pytest

from bench.interrupts import Interrupts


class _SignalledWhenFreed:
    """Sends SIGINT to this process from its finalizer: the handler runs
    inside __del__, where Python prints the KeyboardInterrupt and drops it."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # instructions at which the handler runs, still inside __del__
            pass


def test_a_swallowed_ctrl_c_is_raised_again_before_the_next_case(monkeypatch):
    dropped = []  # what Python reports as "Exception ignored in ..."
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: dropped.append(unraisable.exc_type))
    interrupts = Interrupts()
    interrupts.install()
    try:
        interrupts.check()  # nothing received: nothing raised
        victim = _SignalledWhenFreed()
        del victim  # the interrupt is raised in __del__ and dropped there
        gc.collect()
        assert interrupts.received == 1
        assert dropped == [KeyboardInterrupt]
        with pytest.raises(KeyboardInterrupt, match="1 Ctrl-C received"):
            interrupts.check()
    finally:
        interrupts.uninstall()
    assert signal.getsignal(signal.SIGINT) is not interrupts._handle


def test_a_ctrl_c_during_a_case_stops_it_at_once():
    interrupts = Interrupts()
    interrupts.install()
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
        assert interrupts.received == 1
    finally:
        interrupts.uninstall()
