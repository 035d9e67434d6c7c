"""The option checks that need no framework (`bench.options`)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench.options import CHOICES, COUNTS, SECONDS, UsageError, parse_shard, same_allocator, same_kernels, typed

FLAT = {"INVOLUTION_UNROLL_WINDOW": 0, "INVOLUTION_TILE_WIDTH": 0}


def test_a_run_resumes_only_with_the_kernels_it_started_with():
    same_kernels({"kernel_switches": FLAT}, FLAT, "runs/a")
    same_kernels({}, FLAT, "runs/a")  # a run from before the switches were recorded
    same_kernels({"kernel_switches": {}}, {}, "runs/a")  # TensorFlow: no fused kernel, no switch
    tiles = FLAT | {"INVOLUTION_TILE_WIDTH": 8}
    with pytest.raises(UsageError) as error:
        same_kernels({"kernel_switches": tiles}, FLAT, "runs/a")
    message = str(error.value)
    assert "\n" not in message and message.endswith("Received: --resume=runs/a")
    assert "started with INVOLUTION_UNROLL_WINDOW=0 INVOLUTION_TILE_WIDTH=8, this process has " \
           "INVOLUTION_UNROLL_WINDOW=0 INVOLUTION_TILE_WIDTH=0;" in message
    assert "set INVOLUTION_UNROLL_WINDOW=0 INVOLUTION_TILE_WIDTH=8, or start a new run" in message


class _Config:
    """What `typed` uses of pytest's Config: getoption by flag, and the namespace it reads."""

    def __init__(self, **given):
        self.option = SimpleNamespace(**{flag.lstrip("-").replace("-", "_"): None
                                         for flag in (*SECONDS, *COUNTS, *CHOICES)})
        for dest, value in given.items():
            setattr(self.option, dest, value)

    def getoption(self, flag):
        return getattr(self.option, flag.lstrip("-").replace("-", "_"))


def test_numbers_and_choices_are_converted_in_place():
    config = _Config(bench_time="2.5", passes="3", max_restarts=5, precompile="0", l2="warm")
    typed(config)
    assert config.option.bench_time == 2.5 and config.option.passes == 3 and config.option.precompile == 0
    assert config.option.max_restarts == 5 and config.option.l2 == "warm" and config.option.threads is None
    assert isinstance(config.option.passes, int)
    typed(config)  # again (the supervisor's check, then the session's): nothing changes
    assert config.option.bench_time == 2.5


@pytest.mark.parametrize("dest, value, message", [
    ("bench_time", "fast", "--bench-time takes a positive number of seconds. Received: --bench-time=fast"),
    ("bench_time", "-1", "--bench-time takes a positive number of seconds. Received: --bench-time=-1"),
    ("case_timeout", "nan", "--case-timeout takes a positive number of seconds. Received: --case-timeout=nan"),
    ("precompile_time", "inf", "--precompile-time takes a positive number of seconds. "
                               "Received: --precompile-time=inf"),
    ("passes", "2.5", "--passes takes a whole number of 1 or more. Received: --passes=2.5"),
    ("passes", "0", "--passes takes a whole number of 1 or more. Received: --passes=0"),
    ("threads", "two", "--threads takes a whole number of 1 or more. Received: --threads=two"),
    ("precompile", "-1", "--precompile takes a whole number of 0 or more. Received: --precompile=-1"),
    ("max_restarts", 2.5, "--max-restarts takes a whole number of 0 or more. Received: --max-restarts=2.5"),
    ("l2", "hot", "--l2 takes cold or warm. Received: --l2=hot"),
    ("c_allocator", "mimalloc", "--c-allocator takes system or keep or tcmalloc or jemalloc. "
                                "Received: --c-allocator=mimalloc"),
])
def test_a_mistyped_or_out_of_range_number_or_choice_is_one_line(dest, value, message):
    with pytest.raises(UsageError) as error:
        typed(_Config(**{dest: value}))
    assert str(error.value) == message


def test_resume_refuses_another_c_allocator():
    glibc = "glibc 2.36 (libc.so.6), its defaults"
    same_allocator({"c_allocator": glibc}, glibc, "runs/a")
    same_allocator({}, glibc, "runs/a")  # a run from before the allocator was recorded
    with pytest.raises(UsageError) as error:
        same_allocator({"c_allocator": glibc}, "libjemalloc.so.2 (/usr/lib/libjemalloc.so.2), its defaults", "runs/a")
    assert str(error.value) == (
        "--resume: runs/a was started with the C allocator glibc 2.36 (libc.so.6), its defaults, this process has "
        "libjemalloc.so.2 (/usr/lib/libjemalloc.so.2), its defaults; resuming would mix two allocators' times in one "
        "run: start it as the run was started (--c-allocator, LD_PRELOAD, MALLOC_*), or start a new run. "
        "Received: --resume=runs/a")


@pytest.mark.parametrize("text", ["2/2", "a/b", "1/0", "-1/3", "3"])
def test_bad_shard(text):
    with pytest.raises(UsageError, match=f"Received: --shard={text}"):
        parse_shard(text)
