"""Optional parts of a scan and what happens when one is not installed. The risk scan needs
ffmpeg and at least one model; each other part (the audio fingerprint for re-upload matching,
each weapon detector's weights, the speech model) is left out when its program or model file is
missing: `usable_options` turns the options asked for into the options that can run, plus a
`Skipped` record per part left out, which the report carries. A part named in
`ScanOptions.require` (`--require fingerprint,speech`, `INCITESCAN_REQUIRE`) is never left out:
its own error (`fpcalc_missing`, `weights_missing`, ...) fails the scan instead.

Python packages that only some commands import (jiwer for `eval speech`, scikit-learn for the
ranking metrics and training) are imported through `need_module`, which names the extra that
installs them instead of failing with an ImportError traceback."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import replace
from types import ModuleType
from typing import TYPE_CHECKING

from .errors import ScanError, WeightsCorrupt, WeightsMissing
from .matching import FingerprintUnavailable, fpcalc_binary
from .types import Skipped
from .weights import load_manifest, model_path

if TYPE_CHECKING:
    from .scan import ScanOptions

# Parts that `require` may name, and what each is.
PARTS = {
    "fingerprint": "audio fingerprints for re-upload matching (Chromaprint's fpcalc)",
    "speech": "the speech model (Whisper weights)",
    "detectors": "every configured weapon detector (model weights)",
}
ALL = "all"


class ExtraMissing(ScanError):
    """A command needs a Python package that the base install does not bring."""

    code = "extra_missing"
    exit_code = 2


def parse_require(text: str) -> tuple[str, ...]:
    """The parts named in `text` ("fingerprint,speech", "all", ""), or ValueError naming an
    unknown one."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PARTS and name != ALL]
    if unknown:
        raise ValueError(f"cannot require {unknown[0]!r}: the optional parts are "
                         f"{', '.join(PARTS)} (or {ALL})")
    return tuple(PARTS) if ALL in names else tuple(dict.fromkeys(names))


def usable_options(options: ScanOptions) -> tuple[ScanOptions, tuple[Skipped, ...]]:
    """`options` less the optional parts whose program or weights are missing (not installed;
    corrupt weights still fail), and why each was
    left out. Raises the part's own error (WeightsMissing, FingerprintUnavailable) when it is in
    `options.require`, and the first weights error when no model at all is left to score with.
    Cheap: weights are checked against their stamps, not hashed again."""
    required = set(options.require)
    manifest = load_manifest()
    skipped: list[Skipped] = []
    errors: list[ScanError] = []
    detectors = []
    for name in options.detectors:
        try:
            if name in manifest:  # an unknown name is load_models' error to raise
                model_path(name)
        except WeightsMissing as exc:
            # Damaged weights (a sha256 mismatch) are never skipped: they fail the scan, naming
            # the file and the fix; only weights that are not installed degrade.
            if "detectors" in required or isinstance(exc, WeightsCorrupt):
                raise
            errors.append(exc)
            skipped.append(Skipped(f"detector:{name}", exc.code,
                                   f"weapon detector {name} left out: {exc.message}"))
            continue
        detectors.append(name)
    speech_model = options.speech_model
    if speech_model and options.speech_model_name in manifest:
        try:
            model_path(options.speech_model_name)
        except WeightsMissing as exc:
            if "speech" in required or isinstance(exc, WeightsCorrupt):
                raise
            errors.append(exc)
            skipped.append(Skipped("speech", exc.code, "speech was not transcribed (no threat "
                                   f"speech signal): {exc.message}"))
            speech_model = ""
    audio_fingerprint = options.audio_fingerprint
    if options.fingerprint and audio_fingerprint:
        try:
            fpcalc_binary()
        except FingerprintUnavailable as exc:
            if "fingerprint" in required:
                raise
            skipped.append(Skipped("fingerprint", exc.code, "re-upload matching used frame "
                                   f"hashes only: {exc.message}"))
            audio_fingerprint = False
    if errors and not detectors and not speech_model:
        raise errors[0]  # nothing would score the video: that is no scan
    if not skipped:
        return options, ()
    return replace(options, detectors=tuple(detectors), speech_model=speech_model,
                   audio_fingerprint=audio_fingerprint), tuple(skipped)


def warning_line(skipped: Sequence[Skipped]) -> str:
    """One line for a terminal: which parts a scan runs without, and where to read more."""
    parts = ", ".join(f"{s.part} ({s.code})" for s in skipped)
    return (f"warning: scanning without {parts}; `incitescan doctor` says how to install "
            "them, `--require PART` makes a missing part an error")


def need_module(module: str, *, extra: str, purpose: str, package: str = "") -> ModuleType:
    """Import `module`, or ExtraMissing saying which extra of incitescan installs it (`package`:
    its distribution's name, when not the module's)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExtraMissing(f"{purpose} needs the Python package "
                           f"{package or module.split('.')[0]}, which the base install leaves "
                           f"out: pip install 'incitescan[{extra}]'") from None
