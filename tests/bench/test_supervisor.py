"""The supervisor's command for its next child: the run directory and the
pass travel as arguments, replacing whatever the previous command said."""

from __future__ import annotations

from bench import supervisor


def test_the_next_child_gets_one_run_dir_and_one_pass():
    first = ["--sweep", "quick", "--run-dir", "runs/a", "-k", "conv2d", "--passes", "3"]
    assert supervisor.without_run_dir(first) == ["--sweep", "quick", "-k", "conv2d", "--passes", "3"]
    resumed = [*first, "--resume", "runs/a", supervisor.PASS_FLAG, "2", "--resume=runs/b", f"{supervisor.PASS_FLAG}=3"]
    assert supervisor.without_run_dir(resumed) == ["--sweep", "quick", "-k", "conv2d", "--passes", "3"]
