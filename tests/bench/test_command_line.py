"""The suite's command-line parser (`bench.command_line`): a usage error is
one line, exit code 2; help is argparse's."""

from __future__ import annotations

import pytest

from bench.command_line import Parser


def _parser() -> Parser:
    parser = Parser(prog="python -m tool")
    parser.add_argument("--time", type=float)
    parser.add_argument("--l2", choices=("cold", "warm"))
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("build").add_argument("run_dir")
    return parser


@pytest.mark.parametrize("args, message", [
    (["--time", "fast"], "argument --time: invalid float value: 'fast'"),
    (["--l2", "hot"], "argument --l2: invalid choice: 'hot'"),
    (["--nope"], "unrecognized arguments: --nope"),
    (["build"], "the following arguments are required: run_dir"),  # a subcommand's parser is one too
])
def test_a_usage_error_is_one_line_naming_the_command(capsys, args, message):
    with pytest.raises(SystemExit) as end:
        _parser().parse_args(args)
    assert end.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m tool") and message in err, err


def test_help_is_still_the_usage(capsys):
    with pytest.raises(SystemExit) as end:
        _parser().parse_args(["--help"])
    assert end.value.code == 0 and "usage: python -m tool" in capsys.readouterr().out
