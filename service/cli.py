"""The `incitescan` command. Each subcommand is a thin shell over the library: it parses
arguments, shows progress, prints results and maps failures to exit codes (0 done, 1 internal
error, 2 invalid or unsupported input, 3 weights missing or corrupt, 4 not finished yet)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from pipelines.errors import ScanError

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_WEIGHTS, EXIT_NOT_READY = 0, 1, 2, 3, 4
err = Console(stderr=True)
out = Console(soft_wrap=True)


def _scan_options(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from pipelines.scan import ScanOptions

    options = ScanOptions()
    changes = {}
    if args.fps is not None:
        changes["fps"] = args.fps
    if args.speech_model is not None:
        changes["speech_model"] = "" if args.speech_model == "none" else args.speech_model
    if args.threshold is not None:
        changes["fusion"] = replace(options.fusion, threshold=args.threshold)
    if args.language is not None:
        changes["speech"] = replace(options.speech, language=args.language)
    return replace(options, **changes)


def cmd_scan(args: argparse.Namespace) -> int:
    """Scan each file in-process; print a summary per file and optionally write JSON reports."""
    from pipelines.report import summary, to_dict, write_json
    from pipelines.scan import load_models, scan

    options = _scan_options(args)
    with err.status("loading models…"):
        models = load_models(options)
    reports, worst = [], EXIT_OK
    for index, name in enumerate(args.paths):
        path = Path(name)
        evidence = Path(args.evidence_dir) / f"{index:03d}_{path.stem[:60]}" \
            if args.evidence_dir else None
        try:
            with Progress(TextColumn("{task.description}"), BarColumn(),
                          TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                          console=err, transient=True, disable=args.quiet) as bars:
                tasks: dict[str, int] = {}

                def progress(stage: str, done: float, total: float) -> None:
                    if stage not in tasks:
                        tasks[stage] = bars.add_task(f"{path.name[:30]} {stage}", total=total)
                    bars.update(tasks[stage], completed=done, total=total or None)

                result = scan(path, options, models=models, evidence_dir=evidence,
                              progress=progress)
        except ScanError as exc:
            err.print(f"incitescan: {exc.message}", markup=False, highlight=False)
            worst = max(worst, exc.exit_code)
            continue
        report = to_dict(result)
        reports.append(report)
        out.print(summary(report), markup=False, highlight=False)
    if args.json:
        target = Path(args.json)
        # One path: its report. Several: a list of the reports of those that could be scanned.
        write_json(reports[0] if len(args.paths) == 1 and reports else reports, target)
        err.print(f"report written to {target}", markup=False, highlight=False)
    return worst


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    """Fetch and verify model files into the weights cache."""
    from pipelines.weights import fetch

    fetch(args.names or None, force=args.force,
          progress=lambda line: err.print(line, markup=False, highlight=False))
    return cmd_weights_list(args)


def cmd_weights_list(args: argparse.Namespace) -> int:
    """Show each model of the manifest and whether its files are present and valid."""
    from pipelines.weights import status

    rows = status()
    for row in rows:
        mark = "ok     " if row.state == "ok" else f"{row.state:<7}"
        default = "default" if row.default else "       "
        out.print(f"{mark} {default} {row.ref:<34} {row.role:<9} {row.detail}",
                  markup=False, highlight=False)
    missing = [r for r in rows if r.default and r.state != "ok"]
    return EXIT_WEIGHTS if missing else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="incitescan", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    scan = sub.add_parser("scan", help="scan video files in this process (no services)")
    scan.add_argument("paths", nargs="+", metavar="PATH")
    scan.add_argument("--json", metavar="FILE", help="write the JSON report here")
    scan.add_argument("--evidence-dir", metavar="DIR", help="save evidence thumbnails here")
    scan.add_argument("--fps", type=float, help="frames sampled per second (default 1)")
    scan.add_argument("--speech-model", choices=["tiny.en", "base", "none"],
                      help="Whisper model (default base)")
    scan.add_argument("--language", help="spoken language code; default: detect")
    scan.add_argument("--threshold", type=float, help="risk score that flags a video (0.5)")
    scan.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    scan.set_defaults(run=cmd_scan)

    weights = sub.add_parser("weights", help="model files: fetch, verify, list")
    wsub = weights.add_subparsers(dest="weights_command", required=True)
    fetch = wsub.add_parser("fetch", help="download and verify model files")
    fetch.add_argument("names", nargs="*", help="models to fetch (default: the default ones)")
    fetch.add_argument("--force", action="store_true", help="fetch again even if valid")
    fetch.set_defaults(run=cmd_weights_fetch)
    listing = wsub.add_parser("list", help="show which model files are present and valid")
    listing.set_defaults(run=cmd_weights_list)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the chosen subcommand, mapping failures to exit codes."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ScanError as exc:
        err.print(f"incitescan: {exc.message}", markup=False, highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("incitescan: interrupted", markup=False, highlight=False)
        return 130


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
