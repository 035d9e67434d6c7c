"""Command line: `python -m reports build RUN_DIR [RUN_DIR ...] [-o FILE]`,
`python -m reports compare BASE_RUN NEW_RUN [--threshold 5%] [--plot FILE]` and
`python -m reports screenshot REPORT [--selector CSS] -o FILE.png`.

User errors (a missing directory, a file that is not a run) print one line
naming the file and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reports import load


def _build(args) -> int:
    from reports import build

    loaded_paths = [Path(p) for p in args.run_dirs]
    path = build.build_report(loaded_paths, output=args.output)
    skipped = load.load_runs(loaded_paths).skipped
    for line in skipped[:20]:
        print(f"skipped: {line}", file=sys.stderr)
    if len(skipped) > 20:
        print(f"skipped: ... and {len(skipped) - 20} more", file=sys.stderr)
    print(path)
    return 0


def _compare(args) -> int:
    from reports import compare

    threshold = compare.parse_threshold(args.threshold)
    frame = compare.compare(args.base, args.new, threshold)
    shown = frame.assign(change=(100 * frame["change"]).round(1).astype(str) + "%")
    columns = ["case_id", "backend", "median_s_base", "median_s_new", "change", "verdict"]
    print(shown[columns].to_string(index=False, float_format=lambda v: f"{v * 1e3:.4g} ms"))
    plot_path = Path(args.plot) if args.plot else Path(args.new) / "compare.png"
    compare.plot(frame, plot_path, threshold)
    slower = frame[frame["verdict"].isin(["slower", "now fails"])]
    print(f"\n{len(slower)} of {int(frame['change'].notna().sum())} matched case(s) slower than "
          f"+{100 * threshold:g}% (or newly failing); plot: {plot_path}")
    return 1 if len(slower) else 0


def _screenshot(args) -> int:
    from reports import browser

    try:
        print(browser.screenshot(args.report, args.selector, args.output, width=args.width))
    except (browser.BrowserError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build_p = sub.add_parser("build", help="write report.html and results.csv from run directories")
    build_p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    build_p.add_argument("-o", "--output", metavar="FILE", help="report path (default: RUN_DIR/report.html)")
    build_p.set_defaults(run=_build)
    cmp_p = sub.add_parser("compare", help="per-case changes between two runs; exit 1 on a regression")
    cmp_p.add_argument("base", metavar="BASE_RUN")
    cmp_p.add_argument("new", metavar="NEW_RUN")
    cmp_p.add_argument("--threshold", default="5%", help="slowdown that counts as a regression (default 5%%)")
    cmp_p.add_argument("--plot", metavar="FILE", help="plot path (default: NEW_RUN/compare.png)")
    cmp_p.set_defaults(run=_compare)
    shot_p = sub.add_parser("screenshot", help="save part of a report as a PNG, rendered by headless Chromium")
    shot_p.add_argument("report", metavar="REPORT")
    shot_p.add_argument("--selector", default="#summary",
                        help="CSS selector of the element (default: #summary; e.g. 'img[alt^=\"speed-up\"]')")
    shot_p.add_argument("-o", "--output", required=True, metavar="FILE.png")
    shot_p.add_argument("--width", type=int, default=1300, help="window width in pixels")
    shot_p.set_defaults(run=_screenshot)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except load.ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
