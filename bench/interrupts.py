"""A Ctrl-C in the sweep's process is never lost.

After a SIGINT, Python raises KeyboardInterrupt at the next instruction its
main thread runs. When that instruction belongs to a finalizer or to a
callback run from native code (a framework object freed in the middle of a
step, a weakref callback), Python prints "Exception ignored in ..." and drops
the exception: the sweep would carry on to its end, as if no Ctrl-C had come
(a CI run of the Ctrl-C test once timed all five cases after the signal).

`Interrupts` raises KeyboardInterrupt as Python's own handler does, so a case
in flight still stops at once, and also counts the signal; `check()`, called
before each case, raises it again. A Ctrl-C thus ends the sweep at the latest
after the case in flight, with every finished case kept and the report
written (pytest's "interrupted", exit code 2).
"""

from __future__ import annotations

import signal
from types import FrameType


class Interrupts:
    """SIGINT handler of the sweep's process (the supervisor's child)."""

    def __init__(self) -> None:
        self.received = 0
        self._previous = None

    def install(self) -> None:
        self._previous = signal.signal(signal.SIGINT, self._handle)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise KeyboardInterrupt if a Ctrl-C came, wherever it was raised
        (and perhaps dropped) first."""
        if self.received:
            raise KeyboardInterrupt(f"{self.received} Ctrl-C received; the sweep stops before its next case")
