"""``bigain-export check REPORT --baseline BASELINE``: the CI gate over validation reports.

Exit status: 0 with one ``PASS`` line; 1 with one ``FAIL`` line per violated tolerance (or per
baseline method missing from the report, or engine without measured drift); 2 when a file is
unreadable, not a consistent report, or the two reports were measured on different models, data,
settings, configs or engine builds (one line naming the differences; see ``validate/gate.py``).
"""

from __future__ import annotations

import argparse
import sys

from .args import add_drift_limit_args, nonnegative_float


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "check",
        help="fail (exit 1) when a validation report regressed against a baseline report",
        description="Compare REPORT with BASELINE (report.json files or the folders holding them). "
        "Exit 0: within tolerance; 1: a tolerance is violated (one FAIL line each); 2: bad input.",
    )
    parser.add_argument("report", metavar="REPORT", help="report.json (or its folder) to judge")
    parser.add_argument("--baseline", required=True, metavar="BASELINE", help="trusted report.json (or folder)")
    parser.add_argument(
        "--max-acc-drop", type=nonnegative_float, default=0.5, metavar="PP",
        help="allowed accuracy drop in percentage points (default 0.5)",
    )
    parser.add_argument(
        "--max-fid-rise", default="1%", metavar="X[%]",
        help="allowed FID rise: absolute (0.5) or relative to the baseline (1%%, the default)",
    )
    add_drift_limit_args(parser, recorded=False)
    parser.add_argument("--method", action="append", default=None, metavar="NAME",
                        help="report method to check (repeatable; default: all)")
    parser.add_argument("--baseline-method", default=None, metavar="NAME",
                        help="compare with this baseline method (default: the method of the same name)")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..validate.gate import Tolerances, check_against_baseline
    from ..validate.report import load_report

    fid_rise, relative = Tolerances.parse_fid_rise(args.max_fid_rise)
    tolerances = Tolerances(
        max_acc_drop_pp=args.max_acc_drop,
        max_fid_rise=fid_rise,
        fid_relative=relative,
        drift_max_abs=args.drift_max_abs,
        drift_rel_l2=args.drift_rel_l2,
        drift_mean_abs=args.drift_mean_abs,
    )
    report = load_report(args.report)
    baseline = load_report(args.baseline)
    result = check_against_baseline(
        report, baseline, tolerances, methods=args.method, baseline_method=args.baseline_method,
        sources=(args.report, args.baseline),
    )
    for note in result.notes:
        print(f"note: differs from the baseline (not compared): {note}", file=sys.stderr)
    for line in result.lines():
        print(line)
    return 0 if result.passed else 1
