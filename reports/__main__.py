"""Command line: `python -m reports build RUN_DIR [RUN_DIR ...] [-o FILE]`,
`python -m reports compare BASE_RUN NEW_RUN [--threshold 5%] [--plot FILE]` and
`python -m reports screenshot REPORT [--selector CSS] -o FILE.png`.

User errors (a missing directory, a file that is not a run) print one line
naming the file and exit with code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench import command_line
from bench.rundir import RunDirError, writable_file
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
    frame, context = compare.compare(args.base, args.new, threshold, history=args.history or [])
    shown = frame.assign(
        change=(100 * frame["change"]).map(lambda v: f"{v:+.1f}%" if v == v else "–"),
        rounds=[f"{100 * (lo - 1):+.0f}%..{100 * (hi - 1):+.0f}%" if lo == lo else "–"
                for lo, hi in zip(frame["ratio_low"], frame["ratio_high"], strict=True)],
        processes=[f"{100 * (lo - 1):+.0f}%..{100 * (hi - 1):+.0f}%" if lo == lo else "–"
                   for lo, hi in zip(frame["between_low"], frame["between_high"], strict=True)],
        p=frame["p_value"].map(lambda v: f"{v:.2g}" if v == v else "–"),
    )
    columns = ["case_id", "backend", "median_ms_base", "median_ms_new", "change", "rounds", "p", "processes",
               "verdict"]
    sigma = context["noise_sigma"]
    print(f"base {args.base} (commit {context['base_commit']}) against new {args.new} (commit "
          f"{context['new_commit']}); between processes: "
          + (f"noise sigma {100 * sigma:.1f}% over all cases (from the runs' passes"
             + (f" and {context['history_runs']} --history run(s)" if context["history_runs"] else "") + ")"
             if sigma is not None else "not measured (no run has two passes and no --history): changes beyond "
                                       "the threshold are 'uncertain'"))
    print("columns: rounds = within-run 95% interval of the change, p = Brunner-Munzel on the rounds, "
          "processes = between-process 99% interval")
    for warning in context["warnings"]:
        print(f"warning: {warning}")
    print(shown[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    plot_path = Path(args.plot) if args.plot else Path(args.new) / "compare.png"
    compare.plot(frame, plot_path, threshold)
    counts = frame["verdict"].value_counts()
    print("\n" + ", ".join(f"{counts.get(v, 0)} {v}" for v in compare.VERDICTS if counts.get(v, 0))
          + f"; plot: {plot_path}")
    return 1 if counts.get("slower", 0) or counts.get("now fails", 0) else 0


def _screenshot(args) -> int:
    from reports import browser

    try:
        print(browser.screenshot(args.report, args.selector, args.output, width=args.width))
    except (browser.BrowserError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = command_line.Parser(prog="python -m reports", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build_p = sub.add_parser("build", help="write report.html and results.csv from run directories")
    build_p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    build_p.add_argument("-o", "--output", metavar="FILE", help="report path (default: RUN_DIR/report.html)")
    build_p.set_defaults(run=_build)
    cmp_p = sub.add_parser("compare", help="per-case changes between two runs; exit 1 on a regression")
    cmp_p.add_argument("base", metavar="BASE_RUN")
    cmp_p.add_argument("new", metavar="NEW_RUN")
    cmp_p.add_argument("--threshold", default="5%",
                       help="the smallest change that matters (default 5%%); the margin is the larger of it and the "
                            "case's noise floor")
    cmp_p.add_argument("--history", nargs="+", metavar="RUN",
                       help="earlier runs of the base code on the same machine: the noise floor of each case is "
                            "learned from how its median moved between them and BASE_RUN")
    cmp_p.add_argument("--plot", metavar="FILE", help="plot path (default: NEW_RUN/compare.png)")
    cmp_p.set_defaults(run=_compare)
    shot_p = sub.add_parser("screenshot", help="save part of a report as a PNG, rendered by headless Chromium")
    shot_p.add_argument("report", metavar="REPORT")
    shot_p.add_argument("--selector", default="#summary",
                        help="CSS selector of the element (default: #summary; e.g. 'img[alt^=\"heat map\"]')")
    shot_p.add_argument("-o", "--output", required=True, metavar="FILE.png")
    shot_p.add_argument("--width", type=int, default=1300, help="window width in pixels")
    shot_p.set_defaults(run=_screenshot)
    args = parser.parse_args(argv)
    try:
        for option, value in (("-o", getattr(args, "output", None)), ("--plot", getattr(args, "plot", None))):
            if value:  # before the work: an output that cannot be written is one line, not a traceback
                writable_file(value, option)
        return args.run(args)
    except RunDirError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except load.ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
