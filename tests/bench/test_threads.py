"""One thread policy for every backend (`bench.threads`): the process pinned
to N cores and the thread-count variables set, or a one-line refusal. The
pinning is recorded, not done, so the test process keeps its cores."""

from __future__ import annotations

import os

import pytest

from bench import threads
from bench.options import UsageError
from tests import backend as tb

pytestmark = tb.BACKEND_INDEPENDENT


@pytest.fixture
def pinned(monkeypatch) -> list:
    calls: list = []
    monkeypatch.setattr(threads.os, "sched_setaffinity", lambda pid, cores: calls.append(sorted(cores)),
                        raising=False)
    for name in threads.ENV:
        monkeypatch.delenv(name, raising=False)  # restored after the test
    return calls


def test_default_is_every_usable_core_without_pinning(pinned):
    policy = threads.apply(None)
    count = len(threads.cores())
    assert policy["threads"] == count and "all the machine's cores" in policy["thread_policy"]
    assert pinned == []
    assert all(os.environ[name] == str(count) for name in threads.ENV)


def test_fewer_threads_pin_the_process_to_that_many_cores(pinned, monkeypatch):
    monkeypatch.setattr(threads, "cores", lambda: [0, 1, 2, 3])
    policy = threads.apply(2)
    assert pinned == [[0, 1]]
    assert policy["threads"] == 2 and "--threads" in policy["thread_policy"]
    assert all(os.environ[name] == "2" for name in threads.ENV)


@pytest.mark.parametrize("requested", [0, -1, 5])
def test_a_count_the_machine_cannot_give_is_refused_in_one_line(pinned, monkeypatch, requested):
    monkeypatch.setattr(threads, "cores", lambda: [0, 1, 2, 3])
    with pytest.raises(UsageError) as error:
        threads.apply(requested)
    message = str(error.value)
    assert "\n" not in message and "1 to 4" in message and message.endswith(f"Received: --threads={requested}")
    assert pinned == []
