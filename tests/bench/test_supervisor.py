"""The supervisor's command for its next child: the run directory and the
pass travel as arguments, replacing whatever the previous command said."""

from __future__ import annotations

from bench import supervisor


def test_the_next_child_gets_one_run_dir_and_one_pass():
    first = ["--sweep", "quick", "--run-dir", "runs/a", "-k", "conv2d", "--passes", "3"]
    second = supervisor.resume_args(first, "runs/a", 2)
    assert second == ["--sweep", "quick", "-k", "conv2d", "--passes", "3", "--resume", "runs/a",
                      supervisor.PASS_FLAG, "2"]
    # From a command that already names them (a user's --resume, in either spelling): replaced, not added.
    third = supervisor.resume_args([*second, "--resume=runs/b", f"{supervisor.PASS_FLAG}=9"], "runs/a", 3)
    assert third == [*second[:-1], "3"]
