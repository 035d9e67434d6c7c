"""Would pairing by process tighten the involution/Conv2D ratio intervals?
(docs/PERF.md, section 36.)

Each process of a run times every case in turn. If a whole process ran slow,
an involution case and its Conv2D would be slowed alike, and the log ratio
taken within each process (paired) would spread less between processes than
the two cases' own spreads together (unpaired, what the report's Welch
intervals use). For each involution series of each `results.csv` given,
pooled over its cases that have a Conv2D of the same work and the same
processes: the standard deviation of the log ratio between processes, paired
and unpaired.

    python docs/results/cpu-pass-pairing.py docs/results/cpu-stages-32-*.csv
"""

from __future__ import annotations

import ast
import math
import sys

import numpy as np
import pandas as pd

# What an involution case and its Conv2D share (the layers' axes but groups and reduction ratio).
SAME_WORK = ["backend", "mode", "dtype", "resolution", "channels", "batch", "kernel_size", "stride", "jit"]


def log_medians(cell) -> np.ndarray:
    """A row's medians, one per process (`pass_medians_s`), as logs."""
    values = ast.literal_eval(cell) if isinstance(cell, str) else list(cell) if isinstance(cell, list) else []
    return np.log(np.asarray(values, dtype=float))


def spreads(table: pd.DataFrame) -> pd.DataFrame:
    """Per involution series: pairs, processes, degrees of freedom and the two standard deviations."""
    table = table[table["status"] == "ok"]
    conv = {tuple(row[c] for c in SAME_WORK): log_medians(row["pass_medians_s"])
            for _, row in table[table["layer"] == "conv2d"].iterrows()}
    out = []
    for series, group in table[table["layer"] == "involution"].groupby("series"):
        paired = unpaired = 0.0
        pairs = freedom = 0
        for _, row in group.iterrows():
            a, b = log_medians(row["pass_medians_s"]), conv.get(tuple(row[c] for c in SAME_WORK))
            if b is None or len(a) != len(b) or len(a) < 2:
                continue
            d = a - b
            paired += float(((d - d.mean()) ** 2).sum())
            unpaired += float(((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum())
            pairs, freedom = pairs + 1, freedom + len(a) - 1
        if pairs:
            out.append({"series": series, "pairs": pairs, "degrees_of_freedom": freedom,
                        "sd_log_ratio_paired": round(math.sqrt(paired / freedom), 3),
                        "sd_log_ratio_unpaired": round(math.sqrt(unpaired / freedom), 3)})
    return pd.DataFrame(out)


def main(paths: list[str]) -> None:
    for path in paths:
        print(path)
        print(spreads(pd.read_csv(path)).to_string(index=False))


if __name__ == "__main__":
    main(sys.argv[1:])
