"""Peak memory of one step on a CPU, measured in the process by memray.

memray intercepts every allocation of the process (Python and native: the
frameworks' CPU allocators go through malloc, posix_memalign or mmap) while
tracking is on, from every thread. Its peak is the largest amount allocated
during the step and not yet freed: the step's own working memory, inputs and
weights excluded because they were allocated before.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

SOURCE = "memray (allocations during one step, whole process, CPU)"


def peak_bytes(fn: Callable[[], object]) -> int:
    import memray

    with tempfile.TemporaryDirectory(prefix="involution-bench-memray-") as tmp:
        path = os.path.join(tmp, "step.bin")
        with memray.Tracker(path, native_traces=False, follow_fork=False):
            fn()
        return int(memray.FileReader(path).metadata.peak_memory)
