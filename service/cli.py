"""The `incitescan` command. Each subcommand is a thin shell over the library: it parses
arguments, shows progress, prints results and maps failures to exit codes (0 done, 1 internal
error, 2 invalid or unsupported input, 3 weights missing or corrupt, 4 not finished yet)."""

from __future__ import annotations

import argparse
import ctypes
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from pipelines.errors import ScanError

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_WEIGHTS, EXIT_NOT_READY = 0, 1, 2, 3, 4
err = Console(stderr=True, soft_wrap=True)
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
        language = None if args.language == "auto" else args.language
        changes["speech"] = replace(options.speech, language=language)
    if args.require:
        changes["require"] = args.require
    return replace(options, **changes)


def _require(text: str) -> tuple[str, ...]:
    """`--require` (and INCITESCAN_REQUIRE): the optional parts that must run."""
    from pipelines.optional import parse_require

    try:
        return parse_require(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_require(command: argparse.ArgumentParser) -> None:
    import os

    command.add_argument("--require", type=_require, metavar="PART,...",
                         # a string default goes through `type` too (checked the same way)
                         default=os.environ.get("INCITESCAN_REQUIRE", ""),
                         help="optional parts that must run (fingerprint, speech, detectors, "
                              "all): missing, they fail the scan instead of being skipped "
                              "(env INCITESCAN_REQUIRE)")


def _bars(quiet: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                    console=err, transient=True, disable=quiet)


def _stage_progress(bars: Progress, label: str) -> Callable[[str, float, float], None]:
    """A scan progress callback drawing one bar per stage."""
    tasks: dict[str, TaskID] = {}

    def progress(stage: str, done: float, total: float) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(f"{label} {stage}", total=total or None)
        bars.update(tasks[stage], completed=done, total=total or None)

    return progress


def _early_answer(name: str):  # type: ignore[no-untyped-def]
    """The fast path of `scan --bank`: say at once that a video matches the bank."""
    def say(match) -> None:  # type: ignore[no-untyped-def]
        err.print(f"{name}: {match.reason} (early answer; the scan goes on)", markup=False,
                  highlight=False)

    return say


def _printable(value: Any) -> Any:
    """`value` (text, or JSON-like data holding it) with undecodable bytes of file names
    (surrogate escapes) shown as U+FFFD, so printing and writing UTF-8 never fail."""
    if isinstance(value, str):
        try:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:  # a surrogate that stands for no byte
            return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable(v) for v in value]
    return value


def cmd_scan(args: argparse.Namespace) -> int:
    """Scan each file in-process; print a summary per file and optionally write JSON reports."""
    from pipelines.optional import usable_options, warning_line
    from pipelines.report import summary, to_dict, write_json
    from pipelines.scan import load_models, needs_speech, scan

    options = _scan_options(args)
    skipped = usable_options(options)[1]  # each report lists them too
    if skipped:
        err.print(f"incitescan: {warning_line(skipped)}", markup=False, highlight=False)
    bank = None
    if args.bank:
        from pipelines.matching import HashBank

        bank = HashBank.from_path(Path(args.bank))
    with err.status("loading models…"):
        # Whisper and the text model only when some file has audio to transcribe.
        # The text model finishes loading while the first scan runs.
        models = load_models(options, speech=needs_speech(args.paths, options), text_later=True)
    reports, worst = [], EXIT_OK
    for index, name in enumerate(args.paths):
        path = Path(name)
        evidence = Path(args.evidence_dir) / f"{index:03d}_{_printable(path.stem)[:60]}" \
            if args.evidence_dir else None
        try:
            with _bars(args.quiet) as bars:
                result = scan(path, options, models=models, evidence_dir=evidence,
                              progress=_stage_progress(bars, path.name[:30]), bank=bank,
                              on_known_match=_early_answer(path.name))
        except ScanError as exc:
            err.print(f"incitescan: {_printable(exc.message)}", markup=False, highlight=False)
            worst = max(worst, exc.exit_code)
            continue
        report = _printable(to_dict(result))  # a non-UTF-8 file name is shown with U+FFFD
        reports.append(report)
        out.print(summary(report), markup=False, highlight=False)
    if args.json:
        target = Path(args.json)
        if worst != EXIT_OK:  # never replace a good report with a partial or empty one
            failed = len(args.paths) - len(reports)
            err.print(f"incitescan: no report written to {_printable(str(target))}: {failed} "
                      f"of {len(args.paths)} file(s) could not be scanned", markup=False,
                      highlight=False)
            return worst
        # One path: its report. Several: a list of their reports. Written whole or not at all.
        try:
            write_json(reports[0] if len(args.paths) == 1 and reports else reports, target)
        except OSError as exc:  # disk full, read-only, no permission
            err.print(f"incitescan: could not write the report to {target}: "
                      f"{exc.strerror or exc}", markup=False, highlight=False)
            return max(worst, EXIT_INTERNAL)
        err.print(f"report written to {target}", markup=False, highlight=False)
    return worst


def cmd_bank_add(args: argparse.Namespace) -> int:
    """Add videos to a bank file: from scan reports (`--json` output) or by hashing videos."""
    import json

    from pipelines.matching import BankVideo, HashBank, fingerprint_file, fingerprint_from_report

    if args.video_id and len(args.paths) > 1:
        err.print("incitescan: --video-id names one video; give one path with it", markup=False,
                  highlight=False)
        return EXIT_BAD_INPUT
    target = Path(args.bank)
    bank = HashBank.from_path(target) if target.exists() else HashBank()
    for name in args.paths:
        path = Path(name)
        if path.suffix.lower() == ".json":
            try:
                report = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                err.print(f"incitescan: {path}: not a JSON report ({exc})", markup=False,
                          highlight=False)
                return EXIT_BAD_INPUT
            frames, audio = fingerprint_from_report(report)
            if not frames:
                err.print(f"incitescan: {path}: the report has no frame hashes (scanned "
                          "with fingerprints off, or by an older version)", markup=False,
                          highlight=False)
                return EXIT_BAD_INPUT
            video = BankVideo(video_id=args.video_id or report["video"]["sha256"],
                              label=args.label or report["video"]["path"], frames=frames,
                              audio=audio)
        else:
            hashed = fingerprint_file(path)
            video = BankVideo(video_id=args.video_id or hashed.video_id,
                              label=args.label or hashed.label, frames=hashed.frames,
                              audio=hashed.audio)
        bank.add(video)
        out.print(f"banked {video.video_id}: {len(video.frames)} frames, "
                  f"{len(video.audio)} audio fingerprint(s)", markup=False, highlight=False)
    partial = target.with_name(target.name + ".partial")
    with partial.open("w", encoding="utf-8", newline="") as handle:
        bank.write_csv(handle)
    partial.replace(target)
    return EXIT_OK


def _bank_database():  # type: ignore[no-untyped-def]
    from service.db import make_engine, migrate, session_factory
    from service.settings import ServiceSettings

    engine = make_engine(ServiceSettings().database_url)
    migrate(engine)
    return engine, session_factory(engine)


def cmd_bank_import(args: argparse.Namespace) -> int:
    """Import a bank file into the service's bank (the configured database)."""
    from service.bank import import_csv

    engine, sessions = _bank_database()
    try:
        with Path(args.file).open(encoding="utf-8", newline="") as handle, \
                sessions.begin() as session:
            videos, hashes = import_csv(session, handle, Path(args.file).name)
    finally:
        engine.dispose()
    out.print(f"imported {videos} video(s), {hashes} hashes", markup=False, highlight=False)
    return EXIT_OK


def cmd_bank_export(args: argparse.Namespace) -> int:
    """Export the service's bank (the configured database) as a bank file."""
    from service.bank import export_csv

    engine, sessions = _bank_database()
    target = Path(args.file)
    partial = target.with_name(target.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as handle, sessions() as session:
            rows = export_csv(session, handle)
    finally:
        engine.dispose()
    partial.replace(target)
    out.print(f"exported {rows} rows to {target}", markup=False, highlight=False)
    return EXIT_OK


def cmd_bank_remove(args: argparse.Namespace) -> int:
    """Take videos out of the service's bank."""
    from service.bank import remove_video

    engine, sessions = _bank_database()
    worst = EXIT_OK
    try:
        with sessions.begin() as session:
            for video_id in args.ids:
                if not remove_video(session, video_id):
                    err.print(f"incitescan: {video_id} is not in the bank", markup=False,
                              highlight=False)
                    worst = EXIT_BAD_INPUT
    finally:
        engine.dispose()
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


def cmd_weights_train(args: argparse.Namespace) -> int:
    """Train the project's own weapon detector with the recorded recipe (pipelines/train.py)."""
    from pipelines.train import config_for, train

    config = config_for(epochs=args.epochs, imgsz=args.imgsz, out=args.out, seed=args.seed,
                        data=args.data, fraction=args.fraction, export=args.export,
                        minutes=args.minutes, init=args.init)
    err.print(f"training into {config.out}", markup=False, highlight=False)
    try:
        result = train(config, progress=lambda line: err.print(line, markup=False,
                                                                highlight=False))
    except FileNotFoundError as exc:
        err.print(f"incitescan weights train: {exc}", markup=False, highlight=False)
        return EXIT_BAD_INPUT
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items())
    out.print(f"{metrics}\nweights: {result.export_dir or result.best_pt}\n"
              f"record: {result.record}", markup=False, highlight=False)
    return EXIT_OK


def cmd_weights_train_text(args: argparse.Namespace) -> int:
    """Fine-tune the project's text classifier (the recipe in pipelines/train_text.py)."""
    from pipelines.train_text import config_for, train_text

    config = config_for(epochs=args.epochs, seed=args.seed, out=args.out,
                        shared_dir=args.shared_dir, limit=args.limit)
    try:
        record = train_text(config, progress=lambda line: err.print(line, markup=False,
                                                                     highlight=False))
    except FileNotFoundError as exc:
        err.print(f"incitescan weights train-text: {exc}", markup=False, highlight=False)
        return EXIT_BAD_INPUT
    out.print(f"adapter sha256 {record['adapter_sha256']}\nrecord: {config.out}/"
              "train_record.json (put the sha256 in weights/manifest.toml to ship it)",
              markup=False, highlight=False)
    return EXIT_OK


def _run_eval(args: argparse.Namespace, total_label: str):  # type: ignore[no-untyped-def]
    """Run the evaluation of `args.eval_kind` with a progress bar; returns its result dict."""
    from pipelines import evaluate
    from pipelines.scan import ScanOptions, load_models

    evaluate.check_requirements(args.eval_kind)  # a missing extra stops it now, in one line
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total}"), TimeElapsedColumn(), console=err, transient=True) as bars:
        task = bars.add_task(f"eval {args.eval_kind}: {total_label}", total=None)

        def progress(done: int, total: int) -> None:
            bars.update(task, completed=done, total=total)

        if args.eval_kind == "weapons":
            images = evaluate.load_detection_dataset(Path(args.dir), args.limit, args.seed)
            detectors = evaluate.load_detectors(args.detector)
            return evaluate.evaluate_weapons(images, detectors, progress=progress,
                                             operating_threshold=args.conf)
        if args.eval_kind == "speech":
            transcriber = evaluate.load_transcriber(args.speech_model)
            return evaluate.evaluate_speech(Path(args.dir), transcriber, progress=progress)
        if args.eval_kind == "text":
            return evaluate.evaluate_text(Path(args.csv), args.threshold, args.held_out)
        options = ScanOptions()
        if args.speech_model:
            options = replace(options, speech_model=args.speech_model)
        result, _ = evaluate.evaluate_videos(Path(args.dir), options, load_models(options),
                                             progress=progress)
        return result


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate one stage on labelled data: print its tables and optionally write JSON."""
    import json

    from rich.table import Table

    from pipelines.evaluate import summary_tables

    source = getattr(args, "dir", None) or args.csv
    try:
        result = _run_eval(args, Path(source).name)
    except (OSError, KeyError, ValueError) as exc:  # missing files, columns, unknown models
        err.print(f"incitescan eval {args.eval_kind}: {exc}", markup=False, highlight=False)
        return EXIT_BAD_INPUT
    result = {"dataset": str(source), **result}
    for title, columns, rows in summary_tables(args.eval_kind, result):
        table = Table(*columns, title=title, title_justify="left")
        for row in rows:
            table.add_row(*row)
        out.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n",
                                   encoding="utf-8")
        err.print(f"results written to {args.json}", markup=False, highlight=False)
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check everything a scan and the service need; exit 1 when something required is missing."""
    from service.doctor import print_report, run_checks

    return print_report(run_checks(args.require), out, as_json=args.json)


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a Celery worker of the distributed scanner in this process until stopped."""
    import os
    import socket

    from worker.app import app

    queues = args.queues or os.environ.get("INCITESCAN_WORKER_QUEUES") or "scan,detect,speech"
    concurrency = args.concurrency or int(os.environ.get("INCITESCAN_WORKER_CONCURRENCY") or 1)
    loglevel = args.loglevel or os.environ.get("INCITESCAN_WORKER_LOGLEVEL") or "info"
    name = args.name or f"incitescan-{os.getpid()}@{socket.gethostname()}"
    if args.preload:
        os.environ["INCITESCAN_PRELOAD"] = "1"  # read by each pool process as it starts
    if args.shutdown_grace is not None:
        os.environ["INCITESCAN_SHUTDOWN_GRACE"] = str(args.shutdown_grace)  # read at ready
    app.worker_main(["worker", "--concurrency", str(concurrency), "--queues", queues,
                     "--loglevel", loglevel, "--hostname", name])
    return EXIT_OK


def cmd_workers(args: argparse.Namespace) -> int:
    """Print the live workers, the tasks they hold with their lease ages, the queue depths and
    the re-enqueue counts (or the deployment's Prometheus metrics)."""
    import json
    from dataclasses import asdict

    from worker.leases import cluster_state
    from worker.metrics import render

    config = settings_of_workers()
    if args.prometheus:
        try:
            sys.stdout.write(render(config))
        except ModuleNotFoundError as exc:
            err.print(f"incitescan: {exc.name} is not installed; pip install prometheus-client",
                      markup=False, highlight=False)
            return EXIT_BAD_INPUT
        return EXIT_OK
    state = cluster_state(config)
    if args.json:
        sys.stdout.write(json.dumps(asdict(state), indent=2) + "\n")
        return EXIT_OK
    lines = [f"{len(state.workers)} live worker(s)"]
    for worker in state.workers:
        lines.append(f"{worker.hostname} pid {worker.pid} up since {worker.started_at} "
                     f"(heartbeat {worker.heartbeat_age:.0f} s ago)")
        for task in worker.tasks:
            running = (f"running {task.running_for:.0f} s" if task.running_for is not None
                       else "reserved")
            chunk = f" chunk {task.index}" if task.index is not None else ""
            lines.append(f"  {task.task} scan {task.scan_id}{chunk} {running}, "
                         f"lease renewed {task.lease_age:.0f} s ago")
    for task in state.orphaned:
        lines.append(f"orphaned (its worker is gone; the watchdog hands it back): {task.task} "
                     f"scan {task.scan_id}, lease renewed {task.lease_age:.0f} s ago")
    for queue, steps in state.queues.items():
        waiting = ", ".join(f"priority {step}: {count}" for step, count in steps.items())
        lines.append(f"queue {queue}: {sum(steps.values())} waiting ({waiting})")
    lines.append(f"unacknowledged: {state.unacknowledged}; re-enqueued: "
                 + (", ".join(f"{k} {v}" for k, v in sorted(state.requeues.items())) or "none"))
    out.print("\n".join(lines), markup=False, highlight=False)
    return EXIT_OK


def cmd_metrics(args: argparse.Namespace) -> int:
    """Serve the deployment's Prometheus metrics over HTTP until interrupted."""
    import time

    from worker.metrics import serve

    try:
        serve(args.port, args.host, settings_of_workers())
    except ModuleNotFoundError as exc:
        err.print(f"incitescan: {exc.name} is not installed; pip install prometheus-client",
                  markup=False, highlight=False)
        return EXIT_BAD_INPUT
    err.print(f"metrics on http://{args.host}:{args.port}/metrics", markup=False,
              highlight=False)
    while True:
        time.sleep(3600)


def settings_of_workers():  # type: ignore[no-untyped-def]
    """The distributed scanner's settings (INCITESCAN_BROKER_URL, ...); a bad value ends the
    command with its one-line message."""
    from worker.config import settings

    try:
        return settings()
    except ValueError as exc:
        err.print(f"incitescan: {exc}", markup=False, highlight=False)
        raise SystemExit(EXIT_BAD_INPUT) from None


def cmd_submit(args: argparse.Namespace) -> int:
    """Queue a distributed scan of each file; print one scan id per line."""
    from worker import client

    options = _scan_options(args)
    if args.chunk_s is not None:
        options = replace(options, chunk_s=args.chunk_s)
    worst = EXIT_OK
    for name in args.paths:
        try:
            scan_id = client.submit(name, options, fast_track=args.fast_track)
        except OSError as exc:
            err.print(f"incitescan: {name}: {exc.strerror or exc}", markup=False, highlight=False)
            worst = EXIT_BAD_INPUT
            continue
        out.print(scan_id, markup=False, highlight=False)
    return worst


def cmd_status(args: argparse.Namespace) -> int:
    """Print the state and progress of each scan id."""
    from worker import client

    worst = EXIT_OK
    for scan_id in args.ids:
        try:
            status = client.status(scan_id)
        except client.ScanNotFound as exc:
            err.print(f"incitescan: {exc}", markup=False, highlight=False)
            worst = EXIT_BAD_INPUT
            continue
        line = f"{scan_id} {status.state} {status.progress:.0f}% {status.name}"
        if status.state == "failed":
            line += f" [{status.error_code}] {status.error_message}"
        out.print(line, markup=False, highlight=False)
    return worst


def cmd_result(args: argparse.Namespace) -> int:
    """Print the JSON report of a finished scan (exit 4 while it runs, 2 when it failed)."""
    import json

    from worker import client

    try:
        report = client.result(args.id)
    except client.ScanNotFinished as exc:
        err.print(f"incitescan: {exc}", markup=False, highlight=False)
        return EXIT_NOT_READY
    except client.ScanFailed as exc:
        err.print(f"incitescan: {exc.status.name}: {exc.message} [{exc.code}]",
                  markup=False, highlight=False)
        return EXIT_BAD_INPUT
    except client.ScanNotFound as exc:
        err.print(f"incitescan: {exc}", markup=False, highlight=False)
        return EXIT_BAD_INPUT
    sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP API (migrating the database first) until interrupted."""
    from service.server import serve

    serve(args.host, args.port)
    return EXIT_OK


def cmd_keys_create(args: argparse.Namespace) -> int:
    """Create an API key in the configured database and print it (shown only this once)."""
    from service.server import new_key

    key_id, key = new_key(args.role, args.name)
    err.print(f"created {args.role} key {key_id}; it is shown only now:", markup=False,
              highlight=False)
    out.print(key, markup=False, highlight=False)
    return EXIT_OK


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
    scan.add_argument("--language", help="spoken language code (default en; 'auto' detects it)")
    scan.add_argument("--threshold", type=float, help="risk score that flags a video (0.5)")
    scan.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    scan.add_argument("--bank", metavar="FILE", help="match against this bank of removed "
                      "videos (CSV, docs/matching.md); a match raises the risk")
    _add_require(scan)
    scan.set_defaults(run=cmd_scan)

    banks = sub.add_parser("bank", help="the bank of removed videos for re-upload matching")
    bsub = banks.add_subparsers(dest="bank_command", required=True)
    bank_add = bsub.add_parser("add", help="add videos to a bank file, from scan reports "
                               "(REPORT.json) or by hashing the videos themselves")
    bank_add.add_argument("paths", nargs="+", metavar="REPORT_OR_VIDEO")
    bank_add.add_argument("--bank", required=True, metavar="FILE",
                          help="the bank file (created if missing)")
    bank_add.add_argument("--label", help="why these videos are banked (default: file name)")
    bank_add.add_argument("--video-id", help="id to report on a match (default: the video's "
                          "sha256 for a report, its file name for a video)")
    bank_add.set_defaults(run=cmd_bank_add)
    bank_import = bsub.add_parser("import", help="import a bank file into the service's bank "
                                  "(INCITESCAN_DATABASE_URL)")
    bank_import.add_argument("file", metavar="FILE")
    bank_import.set_defaults(run=cmd_bank_import)
    bank_export = bsub.add_parser("export", help="export the service's bank as a bank file")
    bank_export.add_argument("file", metavar="FILE")
    bank_export.set_defaults(run=cmd_bank_export)
    bank_remove = bsub.add_parser("remove", help="take videos out of the service's bank")
    bank_remove.add_argument("ids", nargs="+", metavar="VIDEO_ID")
    bank_remove.set_defaults(run=cmd_bank_remove)

    weights = sub.add_parser("weights", help="model files: fetch, verify, list")
    wsub = weights.add_subparsers(dest="weights_command", required=True)
    fetch = wsub.add_parser("fetch", help="download and verify model files")
    fetch.add_argument("names", nargs="*", help="models to fetch (default: the default ones)")
    fetch.add_argument("--force", action="store_true", help="fetch again even if valid")
    fetch.set_defaults(run=cmd_weights_fetch)
    listing = wsub.add_parser("list", help="show which model files are present and valid")
    listing.set_defaults(run=cmd_weights_list)
    training = wsub.add_parser("train", help="train the project's own weapon detector (CPU, "
                               "~60 min; see weights/incitescan-weapons/MODEL_CARD.md)")
    training.add_argument("--epochs", type=int, help="epochs (default: the recipe's 6)")
    training.add_argument("--imgsz", type=int, help="training and export image size (default 320)")
    training.add_argument("--out", metavar="DIR",
                          help="run folder (default ~/.cache/incitescan/train/...)")
    training.add_argument("--seed", type=int, help="seed of split, synthetic images, training (0)")
    training.add_argument("--data", metavar="DIR", action="append",
                          help="a training set; repeat for several (default ../shared/data/"
                               "weapons-train and ../shared/data/weapons-scenes)")
    training.add_argument("--minutes", type=float,
                          help="stop training after this many minutes (epochs re-planned to fit)")
    training.add_argument("--init", metavar="MODEL",
                          help="start from: auto (the committed checkpoint, else basegun), a "
                               "manifest model name, or '' for scratch (default auto)")
    training.add_argument("--fraction", type=float, help="share of training images used (1.0)")
    training.add_argument("--export", choices=["openvino-fp16", "openvino-int8", "none"],
                          help="export format (default openvino-fp16)")
    training.set_defaults(run=cmd_weights_train)
    text_training = wsub.add_parser(
        "train-text", help="fine-tune the project's threat-language classifier (CPU, ~10 min; "
        "see weights/incitescan-text/MODEL_CARD.md)")
    text_training.add_argument("--epochs", type=int, help="epochs (default 5)")
    text_training.add_argument("--seed", type=int, help="seed of shuffling and adapters (0)")
    text_training.add_argument("--out", metavar="DIR",
                               help="where the adapter file and record go (default "
                                    "weights/incitescan-text/)")
    text_training.add_argument("--shared-dir", metavar="DIR",
                               help="the shared text sets (default ../shared/data/text)")
    text_training.add_argument("--limit", type=int, help="use N training lines (smoke runs)")
    text_training.set_defaults(run=cmd_weights_train_text)

    evaluation = sub.add_parser("eval", help="measure accuracy on labelled data (docs/accuracy.md)")
    esub = evaluation.add_subparsers(dest="eval_kind", required=True)
    weapons = esub.add_parser("weapons", help="weapon detection on images with boxes")
    weapons.add_argument("dir", metavar="DIR", help="images/, labels/ (YOLO txt or VOC xml) and "
                         "classes.txt or data.yaml (here or in the parent); or folders of those")
    weapons.add_argument("--detector", action="append", metavar="NAME",
                         help="manifest model; repeat to run several together "
                              "(default: the scan's detectors)")
    weapons.add_argument("--conf", type=float, metavar="T",
                         help="operating threshold for precision/recall/FPR (default: the scan's)")
    weapons.add_argument("--limit", type=int, metavar="N", help="evaluate N images drawn by --seed")
    weapons.add_argument("--seed", type=int, default=0, help="seed of the --limit subset (0)")
    speech = esub.add_parser("speech", help="transcription word error rate")
    speech.add_argument("dir", metavar="DIR",
                        help="folder with manifest.csv (file,transcript_file)")
    text = esub.add_parser("text", help="threat analysis of labelled lines")
    text.add_argument("csv", metavar="CSV", help="CSV with columns text,label (1 = threat)")
    text.add_argument("--threshold", type=float, help="line score that counts as a threat")
    text.add_argument("--held-out", action="store_true",
                      help="score only the lines the classifier never trained on (its test split)")
    videos = esub.add_parser("videos", help="whole-video scans against labelled intervals")
    videos.add_argument("dir", metavar="DIR", help="clips plus labels.json")
    for command in (speech, videos):
        command.add_argument("--speech-model", choices=["tiny.en", "base"],
                             help="Whisper model (default: the scan's)")
    for command in (weapons, speech, text, videos):
        command.add_argument("--json", metavar="FILE", help="write the results as JSON here")
        command.set_defaults(run=cmd_eval)

    doctor = sub.add_parser("doctor", help="check that everything a scan and the service need is "
                            "installed and reachable; prints the fix for each problem")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    _add_require(doctor)
    doctor.set_defaults(run=cmd_doctor)

    work = sub.add_parser("worker", help="run a distributed scan worker (Celery on Redis)")
    work.add_argument("--concurrency", type=int, metavar="N",
                      help="worker processes (env INCITESCAN_WORKER_CONCURRENCY, default 1)")
    work.add_argument("--queues", metavar="Q1,Q2", help="queues to consume: scan, detect, speech "
                      "(env INCITESCAN_WORKER_QUEUES, default all)")
    work.add_argument("--loglevel", metavar="LEVEL",
                      help="debug, info, warning, error (env INCITESCAN_WORKER_LOGLEVEL, info)")
    work.add_argument("--name", help="worker node name (default incitescan-PID@HOST)")
    work.add_argument("--preload", action="store_true",
                      help="load the default models when a process starts, not at its first task")
    work.add_argument("--shutdown-grace", type=float, metavar="S",
                      help="on SIGTERM, seconds the running task may take before it is handed "
                      "back to the queue (env INCITESCAN_SHUTDOWN_GRACE, default 60)")
    work.set_defaults(run=cmd_worker)

    workers = sub.add_parser("workers", help="live workers, their tasks and lease ages, queue "
                             "depths, re-enqueues")
    workers.add_argument("--json", action="store_true", help="print JSON")
    workers.add_argument("--prometheus", action="store_true",
                         help="print the Prometheus metrics of the deployment")
    workers.set_defaults(run=cmd_workers)

    metrics = sub.add_parser("metrics", help="serve the deployment's Prometheus metrics")
    metrics.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    metrics.add_argument("--port", type=int, default=9808, help="port to listen on (9808)")
    metrics.set_defaults(run=cmd_metrics)

    submit = sub.add_parser("submit", help="queue distributed scans; prints one scan id per line")
    submit.add_argument("paths", nargs="+", metavar="VIDEO")
    submit.add_argument("--fast-track", action="store_true",
                        help="serve before every normal scan already queued")
    submit.add_argument("--fps", type=float, help="frames sampled per second (default 1)")
    submit.add_argument("--speech-model", choices=["tiny.en", "base", "none"],
                        help="Whisper model (default base)")
    submit.add_argument("--language", help="spoken language code (default en; 'auto' detects it)")
    submit.add_argument("--threshold", type=float, help="risk score that flags a video (0.5)")
    submit.add_argument("--chunk-s", type=float, metavar="S",
                        help="seconds per parallel chunk (default 120)")
    _add_require(submit)
    submit.set_defaults(run=cmd_submit)

    state = sub.add_parser("status", help="state and progress of distributed scans")
    state.add_argument("ids", nargs="+", metavar="ID")
    state.set_defaults(run=cmd_status)

    report = sub.add_parser("result", help="print the JSON report of a distributed scan")
    report.add_argument("id", metavar="ID")
    report.set_defaults(run=cmd_result)

    serve = sub.add_parser("serve", help="run the HTTP API (scans in a local process pool "
                           "unless INCITESCAN_BROKER_URL is set)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    serve.set_defaults(run=cmd_serve)

    keys = sub.add_parser("keys", help="API keys of the HTTP API")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    key_create = ksub.add_parser("create", help="create an API key and print it once")
    key_create.add_argument("--role", required=True, choices=["uploader", "reviewer", "admin"])
    key_create.add_argument("--name", default="", help="who or what the key is for")
    key_create.set_defaults(run=cmd_keys_create)
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
    except Exception as exc:
        if isinstance(exc, _loaded_classes(("pydantic", "ValidationError"))):
            # INCITESCAN_* settings of the service
            errors = exc.errors()  # type: ignore[attr-defined]
            first = errors[0] if errors else {"loc": (), "msg": str(exc)}
            name = "_".join(str(part) for part in first["loc"]).upper()
            err.print(f"incitescan: invalid setting INCITESCAN_{name}: {first['msg']}",
                      markup=False, highlight=False)
            return EXIT_BAD_INPUT
        unreachable = _loaded_classes(("redis.exceptions", "ConnectionError"),
                                      ("kombu.exceptions", "OperationalError"))
        if isinstance(exc, (OSError, *unreachable)):
            # Broker, database or disk unreachable: say which, without a traceback.
            err.print(f"incitescan: {type(exc).__name__}: {exc}", markup=False, highlight=False)
            return EXIT_INTERNAL
        raise


def _loaded_classes(*names: tuple[str, str]) -> tuple[type[BaseException], ...]:
    """The exception classes `(module, name)` of modules already imported. The service's
    libraries (pydantic, redis, kombu) take about a second to import; a command that never
    imported one cannot have raised its errors, so `scan` does not import them at all."""
    found = []
    for module, name in names:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


M_ARENA_MAX = -8  # glibc mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (as MALLOC_ARENA_MAX does): the scan's threads (ffmpeg reader,
    detectors, Whisper) otherwise each grow an arena, and a 10-minute 1080p scan peaks at 2.06
    GiB instead of 1.83 GiB, no faster (docs/performance.md). No effect off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_ARENA_MAX, arenas)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    limit_malloc_arenas()
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
