"""Speech over music: tell whether a music bed lies under the audio, transcribe such audio with
the better model, say how sure Whisper was, and (for measurement) lift the voice out of the beat
with CPU-only DSP front ends.

Drill and rap videos put the words over a looped beat: an 808 bass and kick under ~120 Hz, hats
and snares, a sustained chord pad or bell melody. `detect_music` finds such a bed from two
measures: the audio never falls quiet (speech alone pauses between phrases; a beat does not) and
a large share of its energy lies in the bass band (a voice has almost none there).
`MusicAwareTranscriber` routes audio under music to the music model (whisper-base, also when the
scan uses tiny.en) and records the music seconds and the mean word probability for the report.

The front ends are kept for the bench (bench/bench_music.py), not used by default: "bandpass"
(the voice band only), "repet" (the median of the spectrogram taken one loop period apart models
the repeating beat and not the words, which do not repeat: REPET, Rafii & Pardo 2013) and
"repet-soft". Each raised the signal-to-distortion ratio by several dB and still made Whisper's
words worse; so did a neural speech enhancer (DeepFilterNet3). docs/speech-music.md has the
numbers."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from scipy import signal

from .types import Transcript

if TYPE_CHECKING:
    from .speech import Transcriber

RATE = 16000
N_FFT = 1024
HOP = 256
HIGHPASS_HZ = 120.0
LOWPASS_HZ = 6000.0
# Loop periods searched (seconds): one beat at 180 BPM up to two bars at 70 BPM.
MIN_PERIOD_S, MAX_PERIOD_S = 0.33, 7.0
MASK_POWER = 2.0  # Wiener-like soft mask exponent

# detect_music: a recording counts as "speech under music" when its quietest tenth of frames
# stays within MUSIC_FLOOR_DB_MIN of its loudest tenth (speech alone falls quiet between words
# and phrases; a beat never does) and MUSIC_BASS_SHARE_MIN of its energy lies under BASS_HZ
# (808 and kick; a voice has almost none there). Measured (docs/speech-music.md): clean speech
# floor <= -17 dB, bass share <= 0.16; speech over the beat at +5 dB or louder, floor >= -11 dB,
# bass share >= 0.29. A bed ~15 dB under the voice (the older music samples) stays undetected.
MUSIC_FLOOR_DB_MIN = -13.0
MUSIC_BASS_SHARE_MIN = 0.2
BASS_HZ = 120.0


@dataclass(frozen=True, slots=True)
class MusicEstimate:
    """What `detect_music` found: whether a music bed is present, its loop period and the two
    measures that decided it (for the report and for tuning)."""

    music: bool
    floor_db: float  # 10th-percentile frame energy relative to the 90th percentile, dB
    bass_share: float  # share of the energy under BASS_HZ, 0..1


def _spectrogram(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _, _, spec = signal.stft(audio.astype(np.float32), fs=RATE, nperseg=N_FFT,
                             noverlap=N_FFT - HOP, boundary="even", padded=True)
    return spec, np.abs(spec)


def _beat_spectrum(magnitude: np.ndarray) -> np.ndarray:
    """Autocorrelation over time of the power spectrogram (mean over frequency), normalised to
    1 at lag 0, with the overlap-count bias removed: high at lags where the audio repeats."""
    power = magnitude.astype(np.float64) ** 2
    power -= power.mean(axis=1, keepdims=True)
    frames = power.shape[1]
    spectrum = np.fft.rfft(power, n=2 * frames, axis=1)
    auto = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :frames].mean(axis=0)
    auto /= np.arange(frames, 0, -1)
    return auto / auto[0] if auto[0] > 0 else np.zeros_like(auto)


def _loop_period(beat: np.ndarray, frames: int) -> tuple[int, float]:
    """(period in frames, repetition strength) of the strongest loop within the searched range
    that fits at least twice in the audio."""
    low = max(1, round(MIN_PERIOD_S * RATE / HOP))
    high = min(round(MAX_PERIOD_S * RATE / HOP), frames // 2)
    if high <= low:
        return 0, 0.0
    window = beat[low:high + 1]
    peaks, _ = signal.find_peaks(window)
    if not len(peaks):
        return 0, 0.0
    # The longest period whose peak is nearly the strongest: a two-bar loop repeats at one bar
    # too, but only the full loop lines up every part of it.
    best = float(window[peaks].max())
    chosen = max(p for p in peaks if window[p] >= best - 0.1 * abs(best))
    return int(low + chosen), float(window[chosen])


def detect_music(audio: np.ndarray) -> MusicEstimate:
    """Whether `audio` (16 kHz mono float32) has a looped music bed under it."""
    if audio.size < RATE:
        return MusicEstimate(music=False, floor_db=-120.0, bass_share=0.0)
    _, magnitude = _spectrogram(audio)
    power = magnitude.astype(np.float64) ** 2
    energy = power.sum(axis=0) + 1e-12
    floor_db = float(10 * np.log10(np.percentile(energy, 10) / np.percentile(energy, 90)))
    freqs = np.fft.rfftfreq(N_FFT, 1 / RATE)
    bass_share = float(power[freqs < BASS_HZ].sum() / energy.sum())
    music = floor_db >= MUSIC_FLOOR_DB_MIN and bass_share >= MUSIC_BASS_SHARE_MIN
    return MusicEstimate(music=music, floor_db=round(floor_db, 2), bass_share=round(bass_share, 4))


def _repeating_model(magnitude: np.ndarray, period: int) -> np.ndarray:
    """REPET's repeating background: at every frame, the median (per frequency) of the frames a
    whole number of loop periods away; the non-repeating voice drops out of the median."""
    frames = magnitude.shape[1]
    model = np.empty_like(magnitude)
    for offset in range(min(period, frames)):
        columns = magnitude[:, offset::period]
        model[:, offset::period] = np.median(columns, axis=1, keepdims=True)
    return np.minimum(model, magnitude)


FRONT_ENDS = ("bandpass", "repet", "repet-soft")
SOFT_MASK_FLOOR = 0.3  # "repet-soft" keeps this much of what the mask removes: fewer artefacts


def isolate_voice(audio: np.ndarray, period_s: float | None = None,
                  method: str = "repet") -> np.ndarray:
    """`audio` (16 kHz mono float32) with the music bed attenuated, same length, peak 0.9.
    `period_s` is the beat's loop period in seconds (searched for here when None).
    `method`: "bandpass" (the voice band only), "repet" (band plus the repeating-background
    mask), "repet-soft" (the same mask with a floor of SOFT_MASK_FLOOR)."""
    if method not in FRONT_ENDS:
        raise ValueError(f"unknown front end {method!r}; known: {', '.join(FRONT_ENDS)}")
    if audio.size < N_FFT:
        return audio
    spec, magnitude = _spectrogram(audio)
    frames = magnitude.shape[1]
    mask = np.ones_like(magnitude)
    if method != "bandpass":
        period = round(period_s * RATE / HOP) if period_s else 0
        if not period:
            period, _ = _loop_period(_beat_spectrum(magnitude), frames)
        if period and frames >= 2 * period:
            background = _repeating_model(magnitude, period)
            voice = magnitude - background
            mask = voice ** MASK_POWER / (voice ** MASK_POWER + background ** MASK_POWER + 1e-8)
            if method == "repet-soft":
                mask = SOFT_MASK_FLOOR + (1 - SOFT_MASK_FLOOR) * mask
    freqs = np.fft.rfftfreq(N_FFT, 1 / RATE)
    band = ((freqs >= HIGHPASS_HZ) & (freqs <= LOWPASS_HZ)).astype(np.float32)
    _, out = signal.istft(spec * mask * band[:, None], fs=RATE, nperseg=N_FFT,
                          noverlap=N_FFT - HOP, boundary=True)
    out = out[:audio.size].astype(np.float32)
    if out.size < audio.size:
        out = np.pad(out, (0, audio.size - out.size))
    peak = float(np.abs(out).max())
    return out * (0.9 / peak) if peak > 0 else out


def mix_at_snr(speech: np.ndarray, music: np.ndarray, snr_db: float) -> np.ndarray:
    """`speech` with `music` (looped to its length) underneath at a speech-to-music ratio of
    `snr_db`, powers measured over the voiced part of the speech; peak-normalised to 0.9."""
    bed = np.resize(music.astype(np.float64), speech.size)
    voiced = np.abs(speech) > 0.02 * np.abs(speech).max()
    speech_power = float(np.mean(speech[voiced].astype(np.float64) ** 2))
    music_power = float(np.mean(bed[voiced] ** 2)) or 1e-12
    gain = np.sqrt(speech_power / music_power / 10 ** (snr_db / 10))
    mix = speech + gain * bed
    return (mix * (0.9 / np.abs(mix).max())).astype(np.float32)


# ------------------------------------------------------------------ music-aware transcription

# Mean word probability of a transcript -> how far a reviewer can trust its words.
RELIABILITY_LEVELS = ((0.8, "high"), (0.6, "medium"), (0.0, "low"))


def mean_word_probability(transcript: Transcript) -> float | None:
    """Mean probability of the kept words (None when there are none)."""
    words = [w.probability for s in transcript.segments for w in s.words]
    return round(float(np.mean(words)), 4) if words else None


def reliability(probability: float | None) -> str:
    """"high", "medium" or "low" for a mean word probability; "unknown" without words."""
    if probability is None:
        return "unknown"
    return next(level for floor, level in RELIABILITY_LEVELS if probability >= floor)


class MusicAwareTranscriber:
    """A `Transcriber` that checks each piece of audio for a music bed first. Clean audio goes
    to `plain` untouched; audio under music goes through the `front_end` ("" none, or an
    `isolate_voice` method) and to `music` (a bigger model, or `plain` again). The transcript
    records the seconds under music, the front end used and the mean word probability."""

    def __init__(self, plain: Transcriber, music: Transcriber | None = None, *,
                 front_end: str = "") -> None:
        if front_end and front_end not in FRONT_ENDS:
            raise ValueError(f"unknown front end {front_end!r}; known: {', '.join(FRONT_ENDS)}")
        self.plain = plain
        self.music = music or plain
        self.front_end = front_end
        self.name = plain.name

    def transcribe(self, audio: np.ndarray) -> Transcript:
        found = detect_music(audio)
        if not found.music:
            transcript = self.plain.transcribe(audio)
            return replace(transcript, mean_word_probability=mean_word_probability(transcript))
        if self.front_end:
            audio = isolate_voice(audio, method=self.front_end)
        transcript = self.music.transcribe(audio)
        return replace(transcript, music_seconds=round(audio.size / RATE, 3),
                       front_end=self.front_end,
                       mean_word_probability=mean_word_probability(transcript))
