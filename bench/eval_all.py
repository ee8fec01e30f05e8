"""The full accuracy run behind docs/accuracy.md: every eval of `incitescan eval` on the whole
development data (../shared/data: weapons, seeded subsets of each weapons-train source, speech,
threat_text.csv) and on the labelled sample videos, then the fusion calibration study (trade-off
tables from re-fusing the sample scans and from the text and detection data) and the Whisper
hallucination-guard figures. Results go to out/eval/*.json (one file per eval, reused with
--reuse) and the generated section of docs/accuracy.md, between its `eval_all` markers.

    .venv/bin/python bench/eval_all.py [--reuse] [--skip-videos]

Takes 15-25 minutes on 2 shared CPU cores (the text classifier and the video scans dominate)."""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipelines import evaluate  # noqa: E402
from pipelines.fusion import FusionOptions, fuse  # noqa: E402
from pipelines.types import Detection, FusionResult, ThreatHit  # noqa: E402

DATA = REPO.parent / "shared" / "data"
OUT = REPO / "out" / "eval"
DOC = REPO / "docs" / "accuracy.md"
BEGIN, END = "<!-- eval_all:begin -->", "<!-- eval_all:end -->"
SEED = 0
# (name, folder, seeded subset size or None for all). The CCTV knife set is never trained on;
# weapons-train sources are what a new detector is trained on (issue 5), so for it they are
# training data: compare detectors on its own held-out split.
WEAPON_SETS = [
    ("weapons", DATA / "weapons", None),
    ("wt-ahmed", DATA / "weapons-train" / "ahmed-new-dataset-weapon", 300),
    ("wt-new-knife", DATA / "weapons-train" / "new-knife-v3", 200),
    ("wt-wallet-phone", DATA / "weapons-train" / "wallet-phone-airpod", None),
    ("wt-handgestures", DATA / "weapons-train" / "handgestures-rf100", None),
]
CONFIDENCES = (0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
RULE_MARGIN = 0.02  # rules must hold this far from the threshold, not by rounding luck
MIN_F1_GAIN = 0.005  # a smaller window-F1 gain does not move a default


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def digest(paths: list[Path]) -> str:
    """First 12 hex digits of the sha256 of the files' names and bytes: the dataset version."""
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def cached(name: str, reuse: bool, compute: Any) -> Any:
    target = OUT / f"{name}.json"
    if reuse and target.is_file():
        return json.loads(target.read_text())
    started = time.perf_counter()
    result = compute()
    say(f"{name}: {time.perf_counter() - started:.0f} s")
    target.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    return result


# ------------------------------------------------------------------------------- the evals


def run_weapons(reuse: bool) -> dict[str, Any]:
    results, detectors = {}, None
    for name, folder, limit in WEAPON_SETS:
        images = evaluate.load_detection_dataset(folder, limit, SEED)

        def compute(images=images, folder=folder, limit=limit) -> dict[str, Any]:
            nonlocal detectors
            detectors = detectors or evaluate.load_detectors()
            result = evaluate.evaluate_weapons(images, detectors)
            files = [i.image for i in images] + [i.label for i in images if i.label]
            subset = f", seeded subset of {limit} (seed {SEED})" if limit else ""
            return {"dataset": f"{folder.relative_to(DATA.parent)}{subset}",
                    "version": digest(files), **result}

        results[name] = cached(f"weapons-{name}", reuse, compute)
    return results


def run_speech(reuse: bool) -> dict[str, Any]:
    results = {}
    for model in ("base", "tiny.en"):
        def compute(model=model) -> dict[str, Any]:
            result = evaluate.evaluate_speech(DATA / "speech",
                                              evaluate.load_transcriber(model))
            return {"dataset": "shared/data/speech",
                    "version": digest(list((DATA / "speech").iterdir())), **result}

        results[model] = cached(f"speech-{model}", reuse, compute)
    return results


def run_text(reuse: bool) -> dict[str, Any]:
    path = DATA / "text" / "threat_text.csv"
    return cached("text", reuse, lambda: {"dataset": "shared/data/text/threat_text.csv",
                                          "version": digest([path]),
                                          **evaluate.evaluate_text(path)})


def run_videos(reuse: bool) -> dict[str, Any]:
    def compute() -> dict[str, Any]:
        from pipelines.report import to_dict
        from pipelines.scan import ScanOptions, load_models

        options = ScanOptions()
        report, results = evaluate.evaluate_videos(REPO / "samples", options,
                                                   load_models(options))
        clips = [REPO / "samples" / v["file"] for v in report["videos"]]
        return {"dataset": "samples/", "version": digest([*clips, REPO / "samples/labels.json"]),
                **report, "reports": [to_dict(r) for r in results]}

    return cached("videos", reuse, compute)


# ----------------------------------------------------------------------- fusion calibration


def refuse(report: dict[str, Any], options: FusionOptions) -> FusionResult:
    """Fuse one saved scan report again with other fusion options (fusion is pure)."""
    video = report["video"]
    detections = [Detection(**{**d, "box": tuple(d["box"])}) for d in report["weapon_detections"]]
    hits = [ThreatHit(**h) for h in report["threat_hits"]]
    return fuse(video["duration"], (video["width"], video["height"]),
                1.0 / report["settings"]["fps"], detections, hits, options)


def video_sweep(videos: dict[str, Any], options: FusionOptions) -> dict[str, Any]:
    """Video metrics of the sample scans re-fused with `options`."""
    labels = evaluate.load_video_labels(REPO / "samples")
    by_file = {r["video"]["path"]: r for r in videos["reports"]}
    return evaluate.video_metrics(labels, [refuse(by_file[v.file], options) for v in labels])


def detection_tradeoff(weapons: dict[str, Any]) -> list[tuple[str, ...]]:
    """Precision / recall per class and false-positive rate on negatives at each confidence,
    pooled over every weapon set (both default detectors together, as the scan runs them)."""
    rows: list[tuple[str, ...]] = []
    for conf in CONFIDENCES:
        cells = [f"{conf:.2f}"]
        for category in evaluate.EVAL_CLASSES:
            matches = [m for r in weapons.values() for m in r["classes"][category]["matches"]]
            truths = sum(r["classes"][category]["truths"] for r in weapons.values())
            kept = [t for c, t in matches if c >= conf]
            precision = evaluate.safe_ratio(sum(kept), len(kept))
            cells += [f"{precision:.2f} ({len(kept)})" if kept else "– (0)",
                      f"{sum(kept) / truths:.2f}"]
        negatives = [max(row[1:]) for r in weapons.values()
                     for row in r["image_max_confidence"]["rows"] if not row[0]]
        flagged = sum(1 for s in negatives if s >= conf)
        cells.append(f"{flagged / len(negatives):.3f} ({flagged}/{len(negatives)})")
        rows.append(tuple(cells))
    return rows


def text_tradeoff(text: dict[str, Any], speech_weight: float,
                  threshold: float) -> list[tuple[str, ...]]:
    """The text sweep, with the line score each fusion threshold needs at `speech_weight`."""
    rows: list[tuple[str, ...]] = []
    for row in text["sweep"]:
        if row["threshold"] < 0.3 or row["threshold"] > 0.9:
            continue
        rows.append((f"{row['threshold']:.2f}", f"{row['precision'] or 0:.3f}",
                     f"{row['recall']:.3f}", f"{row['f1'] or 0:.3f}",
                     str(row["tp"] + row["fp"])))
    line_needed = threshold / speech_weight
    rows.append((f"fusion needs {line_needed:.2f}", *(
        f"{v:.3f}" if isinstance(v, float) else str(v) for v in _at(text, line_needed))))
    return rows


def _at(text: dict[str, Any], threshold: float) -> tuple[Any, ...]:
    m = evaluate.binary_metrics(text["labels"], [s >= threshold for s in text["scores"]])
    return m["precision"] or 0.0, m["recall"], m["f1"] or 0.0, m["tp"] + m["fp"]


def fusion_rows(videos: dict[str, Any], variants: dict[str, FusionOptions]
                ) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for name, options in variants.items():
        m = video_sweep(videos, options)
        rows.append((name, f"{m['roc_auc']:.3f}", f"{m['ap']:.3f}",
                     f"{m['video']['precision'] or 0:.2f} / {m['video']['recall']:.2f}",
                     f"{m['interval_hit_rate']:.3f}", f"{m['flagged_precision'] or 0:.3f}",
                     " ".join(f"{v['file'].split('.')[0]}={v['risk_score']:.2f}"
                              for v in m["videos"])))
    return rows


# Product rules of tests/pipelines/test_fusion.py's flagging table, as (detections, hits, flag).
def _rule_cases() -> list[tuple[list[Detection], list[ThreatHit], bool]]:
    def gun(t: float, conf: float) -> Detection:
        return Detection(t=t, label="firearm", confidence=conf, box=(100, 100, 300, 250),
                         model="rule", frame_index=int(t))

    def hit(start: float, weight: float) -> ThreatHit:
        return ThreatHit(start, start + 2, "x", "pattern:rule", "threat", "rule", weight)

    return [([gun(5, 0.7), gun(6, 0.7)], [], True), ([gun(5, 0.3)], [], False),
            ([], [hit(10, 0.9)], True), ([], [hit(10, 0.3)], False),
            ([gun(5, 0.3), gun(6, 0.3)], [hit(6, 0.45)], True)]


def keeps_rules(options: FusionOptions, margin: float = RULE_MARGIN) -> bool:
    """True when every rule flags (or not) with `margin` to spare around the threshold."""
    for detections, hits, flag in _rule_cases():
        risk = fuse(30.0, (1280, 720), 1.0, detections, hits, options).risk_score
        if (risk < options.threshold + margin) if flag else (risk >= options.threshold - margin):
            return False
    return True


def confident_knee(weapons: dict[str, Any]) -> float:
    """The lowest confidence at which under 0.5 % of weapon-free images get a detection."""
    negatives = [max(row[1:]) for r in weapons.values()
                 for row in r["image_max_confidence"]["rows"] if not row[0]]
    return next(c for c in CONFIDENCES
                if sum(s >= c for s in negatives) / len(negatives) < 0.005)


def window_metrics(weapons: dict[str, Any], text: dict[str, Any], options: FusionOptions
                   ) -> dict[str, float]:
    """Flagging of synthetic windows: every image of the weapon sets as a static shot (its
    detections seen in every frame), plus a shot with no detection, paired with every line of
    threat_text.csv and with silence. A window's label is its line's: labels.json counts a
    weapon alone, or a weapon with benign speech, as no incitement. Random pairing carries no
    weapon-threat correlation, so this measures what the weapon terms cost, not what they add."""
    import numpy as np

    from pipelines.fusion import WEAPON_SEVERITY
    from pipelines.scan import ScanOptions

    floor = ScanOptions().detector.min_confidence  # the scan drops weaker detections
    weapon, has_weapon = [0.0], [False]
    for result in weapons.values():
        columns = result["image_max_confidence"]["columns"]
        for row in result["image_max_confidence"]["rows"]:
            weapon.append(max((WEAPON_SEVERITY.get(label, 0.0) * conf
                               for label, conf in zip(columns[1:], row[1:], strict=True)
                               if conf >= floor), default=0.0))
            has_weapon.append(bool(row[0]))
    w = np.array(weapon)[:, None]
    s = np.array([*text["scores"], 0.0])[None, :]
    truth = np.broadcast_to(np.array([*text["labels"], False], bool)[None, :],
                            (w.shape[0], s.shape[1]))
    miss = ((1 - options.weapon_weight * w) * (1 - options.speech_weight * s)
            * (1 - options.co_occurrence_weight * np.minimum(w, s)))
    flagged = 1 - miss >= options.threshold
    m = evaluate.binary_metrics(truth.ravel().tolist(), flagged.ravel().tolist())
    no_weapon = ~np.array(has_weapon)
    return {"precision": m["precision"] or 0.0, "recall": m["recall"] or 0.0,
            "f1": m["f1"] or 0.0,
            "benign": float(flagged[no_weapon][:, ~truth[0]].mean()),
            "weapon_only": float(flagged[~no_weapon][:, -1].mean())}


def fusion_grid(weapons: dict[str, Any], text: dict[str, Any]
                ) -> tuple[FusionOptions, list[tuple[str, ...]]]:
    """Search the weights at threshold 0.5 and the data's single-sighting confidence: the best
    window F1 among settings that keep test_fusion's rules with a margin and give co-occurrence
    a real weight (>= 0.3). The current defaults stay unless the best beats them by
    `MIN_F1_GAIN`: a smaller gain is noise on 281 lines. Returns the choice and table rows."""
    import itertools

    current = FusionOptions()
    knee = confident_knee(weapons)
    grid = []
    for ww, sw, cw in itertools.product((0.6, 0.7, 0.75, 0.8, 0.9, 1.0),
                                        (0.6, 0.7, 0.75, 0.85, 0.95, 1.0),
                                        (0.0, 0.3, 0.5, 0.7, 0.9)):
        options = replace(current, weapon_weight=ww, speech_weight=sw,
                          co_occurrence_weight=cw, confident_detection=knee)
        grid.append((options, keeps_rules(options), window_metrics(weapons, text, options)))
    allowed = sorted((g for g in grid if g[1] and g[0].co_occurrence_weight >= 0.3),
                     key=lambda g: -g[2]["f1"])
    now = (current, keeps_rules(current), window_metrics(weapons, text, current))
    best = allowed[0] if allowed[0][2]["f1"] - now[2]["f1"] >= MIN_F1_GAIN else now
    free = max(grid, key=lambda g: g[2]["f1"])
    loose = max((replace(g[0], threshold=t) for g in grid for t in (0.4, 0.6)),
                key=lambda o: window_metrics(weapons, text, o)["f1"])
    shown = [(*g, "") for g in allowed[:5]]
    shown += [(*now, "current defaults"), (*best, "chosen"), (*free, "best ignoring the rules"),
              (loose, keeps_rules(loose), window_metrics(weapons, text, loose),
               "best ignoring the rules, threshold 0.4 or 0.6")]
    rows: list[tuple[str, ...]] = [
        (f"{o.weapon_weight} / {o.speech_weight} / {o.co_occurrence_weight} / "
         f"{o.confident_detection} / {o.threshold}", note, "yes" if rules else "no",
         f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.4f}",
         f"{m['benign']:.4f}", f"{m['weapon_only']:.3f}")
        for o, rules, m, note in shown
    ]
    return best[0], rows


def guard_figures(videos: dict[str, Any]) -> list[tuple[str, ...]]:
    """What the hallucination guards did on each clip with audio in the real scan, and what
    Whisper invents on the music-only clip with the voice-activity filter switched off."""
    rows: list[tuple[str, ...]] = []
    for report in videos["reports"]:
        transcript = report["transcript"]
        if transcript is None:
            continue
        duration = report["video"]["duration"]
        rows.append((report["video"]["path"], "VAD on", f"{transcript['speech_seconds']:.1f}"
                     f" / {duration:.0f}", str(len(transcript["segments"])),
                     str(len(transcript["rejected"])), str(len(report["threat_hits"])),
                     " ".join(s["text"] for s in transcript["segments"])[:60] or "(none)"))
    from pipelines.language import analyse_transcript
    from pipelines.media import extract_audio, probe
    from pipelines.scan import ScanOptions, load_models
    from pipelines.speech import is_hallucination

    options = ScanOptions()
    # Decode with every guard off (no VAD, thresholds out of reach), then apply the real ones.
    unguarded = replace(options.speech, vad_filter=False, no_speech_threshold=1.0,
                        log_prob_threshold=-99.0, compression_ratio_threshold=99.0)
    transcriber = load_models(replace(options, detectors=(), speech=unguarded)).transcriber
    assert transcriber is not None
    for name in ("music_only.mp4", "benign_slang.mp4"):
        info = probe(REPO / "samples" / name)
        transcript = transcriber.transcribe(extract_audio(info))
        segments = transcript.segments + transcript.rejected
        guarded = [s for s in segments if not is_hallucination(s, options.speech)]
        hits_raw = analyse_transcript(segments)
        hits_guarded = analyse_transcript(guarded)
        figures = "; ".join(f"nsp {s.no_speech_prob:.2f} lp {s.avg_logprob:.2f} "
                            f"cr {s.compression_ratio:.1f}" for s in segments)[:80]
        rows.append((name, "VAD off, raw", f"{info.duration:.0f} / {info.duration:.0f}",
                     str(len(guarded)), str(len(segments) - len(guarded)),
                     f"{len(hits_raw)} raw, {len(hits_guarded)} guarded",
                     (" ".join(s.text for s in segments)[:60] or "(none)") + f" [{figures}]"))
    return rows


# ------------------------------------------------------------------------------- the doc


def provenance(results: dict[str, Any]) -> list[str]:
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"],
                           capture_output=True, text=True, check=False).stdout.strip()
    videos = results.get("videos")
    models = videos["models"] if videos else {}
    lines = [
        f"- Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `bench/eval_all.py`, repository "
        f"{commit}{' + uncommitted changes' if dirty else ''}, 2 shared CPU cores "
        "(timings are under load from other work and only comparable within one run).",
        "- Models: " + ", ".join(f"`{v}`" for v in dict.fromkeys(
            [*results["weapons"]["weapons"]["detectors"],
             *(r["model"] for r in results["speech"].values()),
             f"language rules + classifier {results['text']['analyser']}"])) + "; the video "
        "scans used " + ", ".join(f"{role} `{ref}`" for role, ref in models.items()),
        "- Data (sha256 prefix of the files): " + ", ".join(
            f"{r['dataset']} `{r['version']}`" for r in [
                *results["weapons"].values(), results["speech"]["base"], results["text"],
                *([videos] if videos else [])]),
    ]
    return lines


def render(results: dict[str, Any]) -> str:
    md = evaluate.markdown_table
    parts = [BEGIN, "", "## Results (generated)", "", *provenance(results), "",
             "### Weapon detection", ""]
    for name, result in results["weapons"].items():
        title, columns, rows = evaluate.summary_tables("weapons", result)[1]
        parts += [md((f"{name}: {result['dataset']} — {result['images']} images, "
                      f"{sum(c['truths'] for c in result['classes'].values())} weapon boxes, "
                      f"{result['negatives']} negatives; operating threshold "
                      f"{result['operating_threshold']}", columns, rows)), ""]
    parts += ["### Transcription (word error rate)", ""]
    for result in results["speech"].values():
        parts += [md(evaluate.summary_tables("speech", result)[0]), "",
                  f"Real-time factor {result['realtime_factor']:.2f} (transcribe time / audio "
                  "time).", ""]
    parts += ["### Threat analysis of text", ""]
    for table in evaluate.summary_tables("text", results["text"], errors_shown=5):
        parts += [md(table), ""]
    if "videos" in results:
        parts += ["### Whole videos (samples/)", ""]
        for table in evaluate.summary_tables("videos", results["videos"]):
            parts += [md(table), ""]
    calibration = results.get("calibration")
    if calibration:
        parts += ["## Calibration tables (generated)", "", calibration, ""]
    parts += [END]
    return "\n".join(parts)


def calibrate(results: dict[str, Any]) -> str:
    """The calibration tables: detection confidence, text line score, fusion variants, guard."""
    md = evaluate.markdown_table
    current = FusionOptions()
    parts = [md(("Detection confidence vs precision (pooled over all weapon sets above; "
                 "detections at or over it, with their count)",
                 ("confidence", "firearm precision", "firearm recall", "knife precision",
                  "knife recall", "negative FPR"), detection_tradeoff(results["weapons"])))]
    parts += ["", md((f"Text line score vs precision/recall (threat_text.csv); last row: the "
                      f"line score that flags a speech-only window (threshold {current.threshold}"
                      f" / speech_weight {current.speech_weight})",
                      ("line score >=", "precision", "recall", "F1", "lines flagged"),
                      text_tradeoff(results["text"], current.speech_weight, current.threshold)))]
    best, grid_rows = fusion_grid(results["weapons"], results["text"])
    parts += ["", md((f"Fusion weights on synthetic windows (every weapon-set image as a static "
                      "shot, or none, × every text line or silence; label = the line's); rules "
                      f"= test_fusion's flagging table with a {RULE_MARGIN} margin; top 5 "
                      "rule-keeping settings, then reference rows",
                      ("weapon / speech / co-occurrence weight / confident detection / "
                       "threshold", "", "keeps rules", "window precision", "window recall",
                       "window F1", "benign-scene flag rate", "weapon-only flag rate"),
                      grid_rows))]
    if "videos" in results:
        variants = {"grid choice": best}
        variants |= {f"threshold {t}": replace(current, threshold=t) for t in THRESHOLDS}
        variants |= {f"co_occurrence_s {s}": replace(current, co_occurrence_s=s)
                     for s in (2.0, 10.0)}
        variants |= {f"window_s {s}": replace(current, window_s=s) for s in (1.0, 4.0)}
        parts += ["", md(("Fusion variants re-run on the sample scans (current defaults: "
                          + ", ".join(f"{k}={getattr(current, k)}" for k in (
                              "threshold", "weapon_weight", "speech_weight",
                              "co_occurrence_weight", "window_s", "co_occurrence_s")) + ")",
                          ("variant", "ROC AUC", "AP", "video P / R", "interval hit rate",
                           "flagged precision", "risk scores"),
                          fusion_rows(results["videos"], variants)))]
        parts += ["", md(("Whisper hallucination guard (samples with audio)",
                          ("clip", "decoding", "speech s / total s", "segments kept",
                           "rejected", "threat hits", "transcript [guard figures]"),
                          guard_figures(results["videos"])))]
    return "\n".join(parts)


def write_doc(section: str) -> None:
    text = DOC.read_text(encoding="utf-8") if DOC.is_file() else "# Measured accuracy\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reuse", action="store_true", help="reuse out/eval/*.json results")
    parser.add_argument("--skip-videos", action="store_true", help="no whole-video scans")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"weapons": run_weapons(args.reuse),
                               "speech": run_speech(args.reuse), "text": run_text(args.reuse)}
    if not args.skip_videos:
        results["videos"] = run_videos(args.reuse)
    results["calibration"] = calibrate(results)
    write_doc(render(results))
    say(f"wrote {DOC}")


if __name__ == "__main__":
    main()
