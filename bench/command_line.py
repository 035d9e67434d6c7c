"""The parser of the suite's command lines (`python -m reports`, `bench.targets`,
`bench.calibrate`, ...): argparse, with a usage error in one line."""

from __future__ import annotations

import argparse
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors (a value of the wrong type, an
    unknown choice, a missing argument, the commands' own `parser.error`) are
    one line on stderr, naming the command and ending in what it received,
    with exit code 2, as every other error of the suite; `--help` still prints
    the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")
