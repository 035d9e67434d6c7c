"""Keep the frameworks' start-up messages out of the suite's output.

TensorFlow writes notices to the process's stderr from C++ while it loads
(oneDNN, CPU features, absl's "before InitializeLog" warning) whatever
TF_CPP_MIN_LOG_LEVEL says, and other native libraries do the same. While a
framework loads, file descriptor 2 goes to a temporary file; if loading fails,
what was written is replayed to stderr with the error. `--framework-logs`
turns this off.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr(silenced: bool = True, expected: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Silence fd 2 in the block; replay it if the block raises (except the
    `expected` errors, which say everything themselves, e.g. a usage error)."""
    if not silenced:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except expected:
            raise
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
