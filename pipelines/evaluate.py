"""Measured accuracy of every stage on labelled data: weapon detection on images with boxes
(precision, recall and AP@0.5 per class, false-positive rate on weapon-free images, speed),
transcription on audio with reference transcripts (word error rate after Whisper's English text
normaliser), threat analysis on labelled lines (precision, recall, F1 and the errors), and whole
videos with labelled intervals (ROC AUC and average precision of the risk score, share of true
intervals hit by a flagged segment, share of flagged seconds that are true). The metric functions
at the top are pure and tested with small tables; the `evaluate_*` runners load data, run the real
stages through their public functions and return JSON-ready dicts; `summary_tables` turns a result
into plain rows that the CLI prints and `bench/eval_all.py` writes into docs/accuracy.md."""

from __future__ import annotations

import csv
import math
import random
import re
import time
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from .optional import need_module
from .types import Box, Detection, FusionResult, ScanResult, iou

Interval = tuple[float, float]
Progress = Callable[[int, int], None]  # done, total
Row = tuple[str, ...]
Table = tuple[str, tuple[str, ...], list[Row]]  # title, columns, rows

IOU_THRESHOLD = 0.5
AP_MIN_CONFIDENCE = 0.01  # detections kept for the AP curve; P/R use the operating threshold
EVAL_CLASSES = ("firearm", "knife")
# Dataset class names -> our categories (after lower-casing, spaces/hyphens -> "_").
CLASS_CATEGORIES = {
    **dict.fromkeys(("handgun", "pistol", "gun", "rifle", "long_gun", "shotgun", "firearm"),
                    "firearm"),
    **dict.fromkeys(("knife", "machete", "blade"), "knife"),
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Python packages an evaluation needs beyond the base install (module -> distribution), all in
# the `eval` extra; checked before it starts, so a missing one stops it at once, in one line.
EVAL_NEEDS: dict[str, dict[str, str]] = {
    "weapons": {}, "speech": {"jiwer": "jiwer"}, "text": {"sklearn.metrics": "scikit-learn"},
    "videos": {"sklearn.metrics": "scikit-learn"}}


def check_requirements(kind: str) -> None:
    """ExtraMissing (naming `pip install 'incitescan[eval]'`) if evaluation `kind` needs a
    package that is not installed."""
    for module, package in EVAL_NEEDS.get(kind, {}).items():
        need_module(module, extra="eval", package=package, purpose=f"incitescan eval {kind}")


def _no_progress(done: int, total: int) -> None:
    return None


# ------------------------------------------------------------------------------ pure metrics


def safe_ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None when the denominator is 0 (the metric is undefined)."""
    return numerator / denominator if denominator else None


def binary_metrics(labels: Sequence[bool], predictions: Sequence[bool]) -> dict[str, Any]:
    """Confusion counts with precision, recall and F1 (None where undefined)."""
    pairs = list(zip(labels, predictions, strict=True))
    tp = sum(1 for y, p in pairs if y and p)
    fp = sum(1 for y, p in pairs if not y and p)
    fn = sum(1 for y, p in pairs if y and not p)
    precision, recall = safe_ratio(tp, tp + fp), safe_ratio(tp, tp + fn)
    f1 = safe_ratio(2 * tp, 2 * tp + fp + fn)
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn,
            "tn": len(pairs) - tp - fp - fn}


def threshold_sweep(labels: Sequence[bool], scores: Sequence[float],
                    thresholds: Iterable[float]) -> list[dict[str, Any]]:
    """Precision/recall/F1 of `score >= t` for each threshold t: the trade-off table."""
    return [{"threshold": t, **binary_metrics(labels, [s >= t for s in scores])}
            for t in thresholds]


def ranking_metrics(labels: Sequence[bool], scores: Sequence[float]) -> dict[str, float | None]:
    """ROC AUC and average precision of `scores` against `labels` (None with one class only)."""
    if len(set(labels)) < 2:
        return {"roc_auc": None, "ap": None}
    metrics = need_module("sklearn.metrics", extra="eval", package="scikit-learn",
                          purpose="ROC AUC and average precision")
    return {"roc_auc": float(metrics.roc_auc_score(labels, scores)),
            "ap": float(metrics.average_precision_score(labels, scores))}


@dataclass(frozen=True, slots=True)
class ScoredBox:
    """One detection of one class on one image, for matching."""

    image: Hashable
    confidence: float
    box: Box


def match_detections(
    detections: Sequence[ScoredBox], truths: Mapping[Hashable, Sequence[Box]],
    iou_threshold: float = IOU_THRESHOLD,
) -> list[tuple[float, bool]]:
    """Greedy matching by confidence: each detection, most confident first, takes the unmatched
    true box of its image with the highest IoU >= `iou_threshold` (a true positive) or is a false
    positive (no such box; a second detection of an already matched box is a duplicate). Returns
    (confidence, is_true_positive) sorted by confidence, highest first."""
    taken = {image: [False] * len(boxes) for image, boxes in truths.items()}
    matches = []
    for det in sorted(detections, key=lambda d: -d.confidence):
        boxes, used = truths.get(det.image, ()), taken.get(det.image, [])
        best, best_iou = -1, iou_threshold
        for index, box in enumerate(boxes):
            overlap = iou(det.box, box)
            if not used[index] and overlap >= best_iou:
                best, best_iou = index, overlap
        if best >= 0:
            used[best] = True
        matches.append((det.confidence, best >= 0))
    return matches


def average_precision(matches: Sequence[tuple[float, bool]], n_truths: int) -> float | None:
    """Area under the precision-recall curve with VOC all-point interpolation (precision made
    monotone from the right, summed over every recall step). `matches` as `match_detections`
    returns them; None when there are no true boxes."""
    if n_truths == 0:
        return None
    recalls, precisions, tp = [0.0], [0.0], 0
    for rank, (_, is_tp) in enumerate(sorted(matches, key=lambda m: -m[0]), start=1):
        tp += is_tp
        recalls.append(tp / n_truths)
        precisions.append(tp / rank)
    recalls.append(1.0)
    precisions.append(0.0)
    for i in range(len(precisions) - 2, -1, -1):
        precisions[i] = max(precisions[i], precisions[i + 1])
    return sum((recalls[i + 1] - recalls[i]) * precisions[i + 1]
               for i in range(len(recalls) - 1))


def merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-overlapping union of intervals (empty ones dropped)."""
    merged: list[Interval] = []
    for start, end in sorted((s, e) for s, e in intervals if e > s):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def overlap_seconds(a: Iterable[Interval], b: Iterable[Interval]) -> float:
    """Length of time covered by both interval sets."""
    return sum(max(0.0, min(e1, e2) - max(s1, s2))
               for s1, e1 in merge_intervals(a) for s2, e2 in merge_intervals(b))


def intervals_hit(truths: Sequence[Interval], flagged: Sequence[Interval]) -> int:
    """How many true intervals overlap some flagged interval by more than zero seconds."""
    return sum(1 for s, e in truths if any(min(e, fe) > max(s, fs) for fs, fe in flagged))


@cache
def _normaliser() -> Callable[[str], str]:
    with warnings.catch_warnings():  # whisper leaves its mapping file open
        warnings.simplefilter("ignore", ResourceWarning)
        from whisper.normalizers import EnglishTextNormalizer

        return EnglishTextNormalizer()


def normalise_transcript(text: str) -> str:
    """Whisper's English text normaliser: case, punctuation, spellings, numbers, contractions."""
    return " ".join(_normaliser()(text).split())


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after normalisation."""
    jiwer = need_module("jiwer", extra="eval", purpose="the word error rate")
    ref, hyp = normalise_transcript(reference), normalise_transcript(hypothesis)
    if not ref:
        return len(hyp.split()), 0
    if not hyp:
        return len(ref.split()), len(ref.split())
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, len(ref.split())


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float | None:
    """Corpus-level WER: all errors over all reference words (None with no reference words)."""
    counts = [word_errors(r, h) for r, h in zip(references, hypotheses, strict=True)]
    return safe_ratio(sum(c[0] for c in counts), sum(c[1] for c in counts))


# ------------------------------------------------------------------------- weapon detection


def category_of(class_name: str) -> str | None:
    """Our category for a dataset class name ("Long gun" -> firearm), or None to ignore it."""
    key = re.sub(r"[\s-]+", "_", class_name.strip().lower())
    return CLASS_CATEGORIES.get(key) or CLASS_CATEGORIES.get(key.removesuffix("s"))


def read_class_names(directory: Path) -> list[str]:
    """Class names by id from `classes.txt` ("name" or "id name" per line) or `data.yaml`
    (`names:` list or mapping), looked for in `directory` and then its parent."""
    for folder in (directory, directory.parent):
        if (folder / "classes.txt").is_file():
            names: dict[int, str] = {}
            lines = (folder / "classes.txt").read_text(encoding="utf-8").splitlines()
            for index, line in enumerate(line for line in lines if line.strip()):
                first, _, rest = line.strip().partition(" ")
                if first.isdigit() and rest.strip():
                    names[int(first)] = rest.strip()
                else:
                    names[index] = line.strip()
            return [names.get(i, "") for i in range(max(names) + 1)] if names else []
        if (folder / "data.yaml").is_file():
            import yaml

            data = yaml.safe_load((folder / "data.yaml").read_text(encoding="utf-8")) or {}
            found = data.get("names") or []
            if isinstance(found, dict):
                return [str(found.get(i, "")) for i in range(max(map(int, found)) + 1)]
            return [str(name) for name in found]
    raise FileNotFoundError(f"no classes.txt or data.yaml in {directory} or its parent")


def read_boxes(label_path: Path | None, width: int, height: int,
               class_names: Sequence[str]) -> list[tuple[str, Box]]:
    """(category, box in pixels) of the weapons in one label file: YOLO txt (normalised
    `class cx cy w h`, or a polygon, whose bounding box is used) or Pascal VOC xml. Classes that
    map to no category (person, ...) are left out; no file means no weapon."""
    if label_path is None:
        return []
    found: list[tuple[str, Box]] = []
    if label_path.suffix == ".xml":
        for obj in ElementTree.parse(label_path).getroot().iter("object"):
            category = category_of(obj.findtext("name", ""))
            bndbox = obj.find("bndbox")
            if category and bndbox is not None:
                x1, y1, x2, y2 = (float(bndbox.findtext(k, "0"))
                                  for k in ("xmin", "ymin", "xmax", "ymax"))
                found.append((category, (x1, y1, x2, y2)))
        return found
    for line in label_path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        class_id, values = int(float(fields[0])), [float(v) for v in fields[1:]]
        name = class_names[class_id] if 0 <= class_id < len(class_names) else ""
        category = category_of(name)
        if category is None:
            continue
        if len(values) == 4:
            cx, cy, w, h = values
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        else:  # segmentation polygon x1 y1 x2 y2 ...
            xs, ys = values[0::2], values[1::2]
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        found.append((category, (x1 * width, y1 * height, x2 * width, y2 * height)))
    return found


@dataclass(frozen=True, slots=True)
class LabelledImage:
    """One image of a detection dataset, its label file (None: no objects) and class names."""

    image: Path
    label: Path | None
    class_names: tuple[str, ...]


def _image_folders(directory: Path) -> list[Path]:
    if (directory / "images").is_dir():
        return [directory]
    return sorted(p for p in directory.iterdir() if (p / "images").is_dir())


def load_detection_dataset(directory: Path, limit: int | None = None,
                           seed: int = 0) -> list[LabelledImage]:
    """The images of `directory` (`images/` + `labels/`), or of each subfolder that has them
    (e.g. every source of weapons-train). With `limit`, a subset drawn with `seed`."""
    directory = Path(directory)
    folders = _image_folders(directory)
    if not folders:
        raise FileNotFoundError(f"{directory}: no images/ folder (nor subfolders with one)")
    items = []
    for folder in folders:
        names = tuple(read_class_names(folder))
        for image in sorted((folder / "images").iterdir()):
            if image.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            labels = [folder / "labels" / f"{image.stem}{suffix}" for suffix in (".txt", ".xml")]
            label = next((p for p in labels if p.is_file()), None)
            items.append(LabelledImage(image, label, names))
    if limit is not None and limit < len(items):
        items = sorted(random.Random(seed).sample(items, limit), key=lambda i: i.image)
    return items


# COCO's area bins (pixels of the original image): small < 32^2 <= medium < 96^2 <= large.
SIZE_BINS = {"small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, math.inf)}


def _area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _ap_by_size(scored: Sequence[ScoredBox],
                boxes: Mapping[Hashable, Sequence[Box]]) -> dict[str, dict[str, Any]]:
    """AP@0.5 per COCO size bin, the way COCO scores an area range: truths outside the bin are
    ignored together with the detections that overlap them (IoU >= 0.5), and detections that
    match nothing count only when their own area is in the bin."""
    result = {}
    for name, (low, high) in SIZE_BINS.items():
        inside = {k: [b for b in v if low <= _area(b) < high] for k, v in boxes.items()}
        outside = {k: [b for b in v if not low <= _area(b) < high] for k, v in boxes.items()}
        kept = [d for d in scored
                if not any(iou(d.box, b) >= IOU_THRESHOLD for b in outside.get(d.image, ()))
                and (low <= _area(d.box) < high
                     or any(iou(d.box, b) >= IOU_THRESHOLD for b in inside.get(d.image, ())))]
        n_truths = sum(len(b) for b in inside.values())
        result[name] = {"truths": n_truths,
                        "ap50": average_precision(match_detections(kept, inside), n_truths)
                        if n_truths else None}
    return result


def detection_metrics(
    detections: Mapping[Hashable, Sequence[Detection]],
    truths: Mapping[Hashable, Sequence[tuple[str, Box]]],
    operating_threshold: float,
) -> dict[str, Any]:
    """Per class AP@0.5, and precision/recall of detections at `operating_threshold`; the
    false-positive rate on negatives is the share of images without a true weapon that have a
    weapon detection (any weapon category) at or over the threshold."""
    from .vision import WEAPON_LABELS

    classes = {}
    for category in EVAL_CLASSES:
        boxes = {image: [b for c, b in found if c == category] for image, found in truths.items()}
        scored = [ScoredBox(image, d.confidence, d.box)
                  for image, dets in detections.items() for d in dets if d.label == category]
        matches = match_detections(scored, boxes)
        n_truths = sum(len(b) for b in boxes.values())
        kept = [is_tp for confidence, is_tp in matches if confidence >= operating_threshold]
        classes[category] = {
            "ap50": average_precision(matches, n_truths),
            "precision": safe_ratio(sum(kept), len(kept)),
            "recall": safe_ratio(sum(kept), n_truths),
            "truths": n_truths, "detections": len(kept), "true_positives": sum(kept),
            "matches": [[round(c, 4), int(t)] for c, t in matches],  # to re-threshold later
            "by_size": _ap_by_size(scored, boxes),
        }
    # Per image: has a true weapon, and the most confident detection of each weapon category.
    image_max = [
        [bool(found), *(max((d.confidence for d in detections.get(image, ()) if d.label == c),
                            default=0.0) for c in sorted(WEAPON_LABELS))]
        for image, found in truths.items()
    ]
    negative_scores = [max(row[1:]) for row in image_max if not row[0]]
    false_alarms = sum(1 for score in negative_scores if score >= operating_threshold)
    return {"classes": classes, "negative_fpr": safe_ratio(false_alarms, len(negative_scores)),
            "negatives": len(negative_scores), "negatives_flagged": false_alarms,
            "image_max_confidence": {"columns": ["weapon", *sorted(WEAPON_LABELS)],
                                     "rows": [[r[0], *(round(v, 4) for v in r[1:])]
                                              for r in image_max]}}


def load_detectors(names: Sequence[str] | None = None,
                   min_confidence: float = AP_MIN_CONFIDENCE) -> list[Any]:
    """Detectors named in the weights manifest (default: the scan's own), built exactly as the
    scan builds them but keeping detections down to `min_confidence` for the AP curve."""
    from .scan import ScanOptions, load_models

    options = ScanOptions()
    options = replace(options, detectors=tuple(names or options.detectors), speech_model="",
                      detector=replace(options.detector, min_confidence=min_confidence))
    return list(load_models(options).detectors)


def evaluate_weapons(
    images: Sequence[LabelledImage], detectors: Sequence[Any], *,
    operating_threshold: float | None = None, max_side: int | None = None,
    progress: Progress = _no_progress,
) -> dict[str, Any]:
    """Run `detectors` together (as the scan does: every detection of every model counts) on
    each image, scaled like a scanned frame, and score them against the boxes. Also scores each
    detector alone (`by_detector`) from the same run. `operating_threshold` defaults to the
    scan's minimum confidence, `max_side` to its frame size."""
    import cv2

    from .scan import ScanOptions
    from .types import Frame

    defaults = ScanOptions()
    threshold = defaults.detector.min_confidence if operating_threshold is None \
        else operating_threshold
    side = max_side or defaults.max_side
    truths: dict[Hashable, list[tuple[str, Box]]] = {}
    detections: dict[Hashable, list[Detection]] = {}
    seconds = {d.name: 0.0 for d in detectors}
    for done, item in enumerate(images):
        image = cv2.imread(str(item.image))
        if image is None:
            raise ValueError(f"{item.image}: not a readable image")
        height, width = image.shape[:2]
        scale = min(1.0, side / max(width, height))
        if scale < 1.0:
            image = cv2.resize(image, (round(width * scale), round(height * scale)),
                               interpolation=cv2.INTER_AREA)
        frame = Frame(index=done, t=0.0, image=image)
        key = str(item.image)
        truths[key] = read_boxes(item.label, width, height, item.class_names)
        detections[key] = []
        for detector in detectors:
            if done == 0:
                detector.detect([frame], scale, tuple(detections[key]))  # warm-up: compiles
            started = time.perf_counter()
            detections[key] += detector.detect([frame], scale, tuple(detections[key]))
            seconds[detector.name] += time.perf_counter() - started
        progress(done + 1, len(images))
    count = max(1, len(images))
    result = {
        **detection_metrics(detections, truths, threshold),
        "ms_per_image": round(1000 * sum(seconds.values()) / count, 1),
        "detectors": [d.name for d in detectors],
        "images": len(images),
        "operating_threshold": threshold,
        "iou_threshold": IOU_THRESHOLD,
        "ap_min_confidence": AP_MIN_CONFIDENCE,
    }
    if len(detectors) > 1:
        result["by_detector"] = {}
        for detector in detectors:
            alone = detection_metrics(
                {k: [x for x in v if x.model == detector.name] for k, v in detections.items()},
                truths, threshold)
            covered = _categories(detector.name)
            for category in EVAL_CLASSES:  # a model without the class has no score for it
                if covered is not None and category not in covered:
                    alone["classes"][category] = {"truths": alone["classes"][category]["truths"],
                                                  "ap50": None, "precision": None,
                                                  "recall": None, "detections": 0,
                                                  "not_a_class_of_this_model": True}
            alone["ms_per_image"] = round(1000 * seconds[detector.name] / count, 1)
            result["by_detector"][detector.name] = alone
    return result


def _categories(ref: str) -> set[str] | None:
    """Our categories a manifest model can output (None for a model not in the manifest)."""
    from .weights import load_manifest

    spec = load_manifest().get(ref.split("@")[0])
    return set(spec.label_map.values()) if spec else None


# ---------------------------------------------------------------------------- transcription


def load_transcriber(speech_model: str | None = None) -> Any:
    """The scan's transcriber (default model unless `speech_model`), with the scan's options."""
    from .scan import ScanOptions, load_models

    options = ScanOptions()
    options = replace(options, detectors=(), speech_model=speech_model or options.speech_model)
    return load_models(options).transcriber


def evaluate_speech(directory: Path, transcriber: Any, *,
                    progress: Progress = _no_progress) -> dict[str, Any]:
    """Transcribe every file of `directory/manifest.csv` (`file,transcript_file`) and compare
    with the references: per-file and corpus-level WER after Whisper's English normaliser."""
    from faster_whisper import decode_audio

    from .media import AUDIO_RATE

    directory = Path(directory)
    with open(directory / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    files, references, hypotheses = [], [], []
    for done, row in enumerate(rows):
        audio = decode_audio(str(directory / row["file"]), sampling_rate=AUDIO_RATE)
        started = time.perf_counter()
        transcript = transcriber.transcribe(audio)
        seconds = time.perf_counter() - started
        reference = (directory / row["transcript_file"]).read_text(encoding="utf-8").strip()
        hypothesis = " ".join(s.text for s in transcript.segments)
        errors, words = word_errors(reference, hypothesis)
        references.append(reference)
        hypotheses.append(hypothesis)
        files.append({
            "file": row["file"], "wer": safe_ratio(errors, words), "errors": errors,
            "words": words, "reference": reference, "hypothesis": hypothesis,
            "rejected_segments": len(transcript.rejected),
            "audio_s": round(audio.size / AUDIO_RATE, 2), "transcribe_s": round(seconds, 2),
        })
        progress(done + 1, len(rows))
    audio_s = sum(f["audio_s"] for f in files)
    return {"wer": word_error_rate(references, hypotheses), "files": files,
            "model": transcriber.name, "normaliser": "whisper EnglishTextNormalizer",
            "realtime_factor": safe_ratio(sum(f["transcribe_s"] for f in files), audio_s)}


# ------------------------------------------------------------------------- threat analysis


def evaluate_text(csv_path: Path, threshold: float | None = None,
                  held_out_only: bool = False) -> dict[str, Any]:
    """Score each `text,label` line with `text_threat_score` of its analysis (all lines in one
    batch); a line counts as threatening at `threshold` (default the language analysis' own).
    Lists every error, and reports the lines the classifier never saw (its `test` split, see
    pipelines/train_text.py) apart; `held_out_only` scores only those."""
    from .language import FLAG_THRESHOLD, LEXICON_VERSION, analyse_texts, text_threat_score
    from .train_text import split_of

    threshold = FLAG_THRESHOLD if threshold is None else threshold
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if (r.get("text") or "").strip()]
    if not rows or "label" not in rows[0]:
        raise ValueError(f"{csv_path}: needs columns text,label and at least one line")
    splits = [split_of(r["text"].strip(), csv_path.stem) for r in rows]
    if held_out_only:
        rows = [r for r, s in zip(rows, splits, strict=True) if s == "test"]
        splits = ["test"] * len(rows)
    labels: list[bool] = []
    scores: list[float] = []
    errors_fp: list[dict[str, Any]] = []
    errors_fn: list[dict[str, Any]] = []
    subsets: dict[str, list[tuple[bool, bool]]] = {}
    for row, hits in zip(rows, analyse_texts([r["text"] for r in rows]), strict=True):
        score = text_threat_score(hits)
        label = str(row["label"]).strip() in {"1", "true", "True", "yes"}
        labels.append(label)
        scores.append(score)
        subset = row.get("subset") or row.get("category") or row.get("kind") or "all"
        subsets.setdefault(subset, []).append((label, score >= threshold))
        if label != (score >= threshold):
            entry = {"text": row["text"], "score": score,
                     "rules": sorted({h.rule for h in hits}), "subset": subset}
            (errors_fn if label else errors_fp).append(entry)
    metrics = binary_metrics(labels, [s >= threshold for s in scores])
    by_split = {}
    for name in ("test", "dev", "train"):
        pairs = [(y, s >= threshold) for y, s, sp in zip(labels, scores, splits, strict=True)
                 if sp == name]
        if pairs:
            by_split[name] = binary_metrics([y for y, _ in pairs], [p for _, p in pairs]) | {
                "lines": len(pairs)}
    return {
        **metrics, "threshold": threshold, "lines": len(rows), "positives": sum(labels),
        "ap": ranking_metrics(labels, scores)["ap"],
        "false_positives": errors_fp, "false_negatives": errors_fn,
        "by_split": by_split,
        "by_subset": {name: binary_metrics([y for y, _ in pairs], [p for _, p in pairs])
                      | {"lines": len(pairs)} for name, pairs in sorted(subsets.items())},
        "sweep": threshold_sweep(labels, scores, [round(0.05 * i, 2) for i in range(2, 20)]),
        "analyser": LEXICON_VERSION, "labels": labels, "scores": scores,
    }


# ----------------------------------------------------------------------------- whole videos


@dataclass(frozen=True, slots=True)
class VideoLabel:
    """What one labelled clip contains: true weapon and threat-speech intervals, and whether it
    incites violence as a whole."""

    file: str
    incitement: bool
    weapon: tuple[Interval, ...] = ()
    threat_speech: tuple[Interval, ...] = ()

    @property
    def intervals(self) -> tuple[Interval, ...]:
        """All true intervals, weapon and threat speech."""
        return self.weapon + self.threat_speech


def load_video_labels(directory: Path) -> list[VideoLabel]:
    """The clips of `directory/labels.json` (file -> weapon, threat_speech, incitement)."""
    import json

    data = json.loads((Path(directory) / "labels.json").read_text(encoding="utf-8"))
    return [
        VideoLabel(file=name, incitement=bool(entry["incitement"]),
                   weapon=tuple((float(s), float(e)) for s, e in entry.get("weapon", ())),
                   threat_speech=tuple((float(s), float(e))
                                       for s, e in entry.get("threat_speech", ())))
        for name, entry in sorted(data.items())
    ]


def video_metrics(labels: Sequence[VideoLabel],
                  fusions: Sequence[FusionResult]) -> dict[str, Any]:
    """Video-level ranking and flagging of the risk score against `incitement`, and
    localisation: share of true intervals overlapped by a flagged segment, and share of flagged
    seconds inside some true interval (both pooled over all videos)."""
    videos: list[dict[str, Any]] = []
    for label, fusion in zip(labels, fusions, strict=True):
        flagged = [(s.start, s.end) for s in fusion.flagged_segments]
        videos.append({
            "file": label.file, "incitement": label.incitement,
            "risk_score": fusion.risk_score, "flagged": fusion.flagged,
            "true_intervals": len(label.intervals),
            "intervals_hit": intervals_hit(label.intervals, flagged),
            "flagged_s": round(sum(e - s for s, e in merge_intervals(flagged)), 3),
            "flagged_true_s": round(overlap_seconds(flagged, label.intervals), 3),
            "segments": [[s.start, s.end, s.score, list(s.signals)]
                         for s in fusion.flagged_segments],
        })
    truth = [v["incitement"] for v in videos]
    return {
        **ranking_metrics(truth, [v["risk_score"] for v in videos]),
        "interval_hit_rate": safe_ratio(sum(v["intervals_hit"] for v in videos),
                                        sum(v["true_intervals"] for v in videos)),
        "flagged_precision": safe_ratio(sum(v["flagged_true_s"] for v in videos),
                                        sum(v["flagged_s"] for v in videos)),
        "video": binary_metrics(truth, [v["flagged"] for v in videos]),
        "videos": videos,
    }


def evaluate_videos(directory: Path, options: Any, models: Any, *,
                    progress: Progress = _no_progress
                    ) -> tuple[dict[str, Any], list[ScanResult]]:
    """Scan every clip of `directory/labels.json` with the real scan and score the results
    (`video_metrics`); each video's entry also carries what the transcription guard did. Returns
    the results too, so fusion can be re-run on them without scanning again."""
    from .scan import scan

    labels = load_video_labels(directory)
    results = []
    for done, label in enumerate(labels):
        results.append(scan(Path(directory) / label.file, options, models=models))
        progress(done + 1, len(labels))
    report = video_metrics(labels, [r.fusion for r in results])
    for entry, result in zip(report["videos"], results, strict=True):
        transcript = result.transcript
        entry.update({
            "signal_scores": [result.fusion.signal_scores.weapon,
                              result.fusion.signal_scores.threat_speech,
                              result.fusion.signal_scores.co_occurrence],
            "threat_hits": len(result.threat_hits),
            "speech_s": transcript.speech_seconds if transcript else 0.0,
            "kept_segments": len(transcript.segments) if transcript else 0,
            "rejected_segments": len(transcript.rejected) if transcript else 0,
            "transcript": " ".join(s.text for s in transcript.segments) if transcript else "",
            "scan_s": result.timings.get("total", 0.0),
        })
    report.update({"threshold": options.fusion.threshold, "models": results[0].models
                   if results else {}})
    return report, results


# ---------------------------------------------------------------------------------- tables


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def summary_tables(kind: str, result: Mapping[str, Any], errors_shown: int = 8) -> list[Table]:
    """Plain-text tables (title, columns, rows) of one eval result, for printing or markdown."""
    if kind == "weapons":
        classes: list[Row] = [
            (name, str(c["truths"]), str(c["detections"]), _fmt(c["precision"]),
             _fmt(c["recall"]), _fmt(c["ap50"]))
            for name, c in result["classes"].items()
        ]
        title = (f"weapons: {result['images']} images ({result['negatives']} negative), "
                 f"{' + '.join(result['detectors'])}, operating threshold "
                 f"{result['operating_threshold']}")
        systems = dict(result.get("by_detector", {}))
        systems["together" if systems else result["detectors"][0]] = result

        def p_r(r: Mapping[str, Any], category: str) -> str:
            c = r["classes"][category]
            return f"{_fmt(c['precision'], 2)} / {_fmt(c['recall'], 2)}"

        per_detector: list[Row] = [
            (name, _fmt(r["classes"]["firearm"]["ap50"]), _fmt(r["classes"]["knife"]["ap50"]),
             p_r(r, "firearm"), p_r(r, "knife"),
             f"{_fmt(r['negative_fpr'])} ({r['negatives_flagged']}/{r['negatives']})",
             _fmt(r["ms_per_image"], 1))
            for name, r in systems.items()
        ]
        return [
            (title, ("class", "true boxes", "detections", "precision", "recall", "AP@0.5"),
             classes),
            ("per detector", ("detector", "firearm AP@0.5", "knife AP@0.5", "firearm P / R",
                              "knife P / R", "negative FPR", "ms/image"), per_detector),
            ("AP@0.5 by box size (COCO area bins, original pixels; true boxes)",
             ("detector", *(f"{c} {b}" for c in ("firearm", "knife") for b in SIZE_BINS)),
             [(name, *(f"{_fmt(r['classes'][c].get('by_size', {}).get(b, {}).get('ap50'))} "
                       f"({r['classes'][c].get('by_size', {}).get(b, {}).get('truths', '–')})"
                       for c in ("firearm", "knife") for b in SIZE_BINS))
              for name, r in systems.items()]),
        ]
    if kind == "speech":
        speech_rows: list[Row] = [(f["file"], str(f["words"]), str(f["errors"]), _fmt(f["wer"]),
                 f["hypothesis"][:70]) for f in result["files"]]
        speech_rows.append(("all (corpus)", str(sum(f["words"] for f in result["files"])),
                     str(sum(f["errors"] for f in result["files"])), _fmt(result["wer"]), ""))
        return [(f"speech: {result['model']}, WER after {result['normaliser']}",
                 ("file", "words", "errors", "WER", "hypothesis"), speech_rows)]
    if kind == "text":
        main: list[Row] = [
            (str(result["lines"]), str(result["positives"]), _fmt(result["threshold"], 2),
             _fmt(result["precision"]), _fmt(result["recall"]), _fmt(result["f1"]),
             _fmt(result["ap"]))
        ]
        groups = [*result["by_subset"].items(),
                  *((f"classifier {name}", m) for name, m in result.get("by_split", {}).items())]
        subsets: list[Row] = [
            (name, str(m["lines"]), str(m["tp"] + m["fn"]), str(m["tp"] + m["fp"]),
             _fmt(m["precision"]), _fmt(m["recall"]), str(m["fp"]), str(m["fn"]))
            for name, m in groups
        ]
        errors: list[Row] = [
            (kind_, _fmt(e["score"], 2), e["text"][:90], ", ".join(e["rules"])[:60])
            for kind_, key in (("FP", "false_positives"), ("FN", "false_negatives"))
            for e in result[key][:errors_shown]
        ]
        return [
            (f"text: threat analysis {result['analyser']}",
             ("lines", "positives", "threshold", "precision", "recall", "F1", "AP"), main),
            ("by subset, and the classifier's held-out fifth vs its training lines",
             ("subset", "lines", "positives", "flagged", "precision", "recall", "FP", "FN"),
             subsets),
            (f"errors ({len(result['false_positives'])} FP, {len(result['false_negatives'])} "
             f"FN; first {errors_shown} of each)", ("error", "score", "text", "rules"), errors),
        ]
    if kind == "videos":
        video = result["video"]
        video_main: list[Row] = [
            (str(len(result["videos"])), _fmt(result["roc_auc"]), _fmt(result["ap"]),
             _fmt(result["interval_hit_rate"]), _fmt(result["flagged_precision"]),
             f"{_fmt(video['precision'], 2)} / {_fmt(video['recall'], 2)}")
        ]
        video_rows: list[Row] = [
            (v["file"], "yes" if v["incitement"] else "no", _fmt(v["risk_score"], 2),
             "FLAGGED" if v["flagged"] else "-", f"{v['intervals_hit']}/{v['true_intervals']}",
             f"{v['flagged_true_s']:.1f}/{v['flagged_s']:.1f}",
             " ".join(f"{s[0]:.1f}-{s[1]:.1f}" for s in v["segments"]) or "-")
            for v in result["videos"]
        ]
        return [
            (f"videos: risk score vs incitement (threshold {result.get('threshold', '?')})",
             ("videos", "ROC AUC", "AP", "interval hit rate", "flagged precision",
              "video P / R"), video_main),
            ("per video", ("file", "incitement", "risk", "flagged", "intervals hit",
                           "true/flagged s", "flagged segments"), video_rows),
        ]
    raise ValueError(f"unknown eval kind {kind!r}")


def markdown_table(table: Table) -> str:
    """One table as GitHub markdown, title in bold above it."""
    title, columns, rows = table
    lines = [f"**{title}**", "", "| " + " | ".join(columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)
