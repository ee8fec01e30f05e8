"""Build IncitementScan's small labelled sample videos and their ground truth.

Each clip is a slideshow of real, permissively licensed still images (knife CCTV frames, firearm and
kitchen-knife photos from ``../shared/data`` next to the repository, and the two street/person
photos that ship inside the ``ultralytics`` package), shown for fixed spans, with espeak-ng speech
placed at fixed times, sometimes over a synthetic drill-style beat. Because every piece is placed
by this script, the ground truth in ``samples/labels.json`` is exact: a ``weapon`` interval is the
time an image whose YOLO label file has a weapon box is on screen, and a ``threat_speech`` interval
is the voiced extent of a threatening line. Output is deterministic for a given ffmpeg/espeak-ng
build. Run ``python samples/make_samples.py`` from the repository root (or anywhere); see
``samples/README.md`` for what each clip holds and where every source comes from.
"""

from __future__ import annotations

import argparse
import array
import importlib.util
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = REPO_ROOT / "samples"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

WIDTH, HEIGHT = 854, 480
FPS = 12
AUDIO_RATE = 22050  # espeak-ng's native rate; the AAC track is resampled to 44.1 kHz
AAC_RATE = 44100
SPEECH_PEAK = 0.85
MUSIC_UNDER_SPEECH_PEAK = 0.15  # ~15 dB under the speech peaks: audible, never masking
MUSIC_ALONE_PEAK = 0.6
SILENCE_THRESHOLD = 300  # int16 amplitude below which espeak-ng's lead-in/tail counts as silence

# YOLO class ids that are weapons, per dataset, mapped onto the scanner's two weapon labels.
WEAPON_CLASSES: dict[str, dict[int, str]] = {
    "weapons": {0: "firearm", 1: "knife", 2: "firearm"},  # 0 handgun, 1 knife, 2 long_gun
    "weapons-train": {0: "firearm", 1: "knife"},
}


class SampleBuildError(RuntimeError):
    """A tool or source file the sample build needs is missing or misbehaved."""


@dataclass(frozen=True, slots=True)
class SourceImage:
    """One still image: a file under ``../shared/data`` (with a YOLO label file) or an
    ultralytics asset (no labels, no weapons)."""

    dataset: str  # "weapons", "weapons-train/<slug>" or "ultralytics"
    stem: str

    @property
    def path(self) -> Path:
        if self.dataset == "ultralytics":
            return ultralytics_assets() / f"{self.stem}.jpg"
        return SHARED_DATA / self.dataset / "images" / f"{self.stem}.jpg"

    @property
    def source_name(self) -> str:
        """Where the image comes from, as listed in samples/README.md."""
        if self.dataset == "ultralytics":
            return f"ultralytics/assets/{self.stem}.jpg"
        return f"{self.dataset}/images/{self.stem}.jpg"

    def weapons(self) -> tuple[str, ...]:
        """Weapon labels ("firearm", "knife") boxed in this image's YOLO label file."""
        if self.dataset == "ultralytics":
            return ()
        label_file = SHARED_DATA / self.dataset / "labels" / f"{self.stem}.txt"
        if not label_file.is_file():
            raise SampleBuildError(f"label file missing: {label_file}")
        class_map = WEAPON_CLASSES[self.dataset.split("/")[0]]
        found = set()
        for line in label_file.read_text().splitlines():
            if line.strip():
                class_id = int(line.split()[0])
                if class_id in class_map:
                    found.add(class_map[class_id])
        return tuple(sorted(found))


@dataclass(frozen=True, slots=True)
class Shot:
    """An image held on screen for a whole number of frames."""

    image: SourceImage
    seconds: float


@dataclass(frozen=True, slots=True)
class Line:
    """A spoken line: start time in the clip, text, ground-truth threat flag, espeak-ng voice."""

    start: float
    text: str
    threat: bool
    voice: str = "en-gb"
    speed: int = 150


@dataclass(frozen=True, slots=True)
class Clip:
    """One sample video: shots played back to back, lines placed over them, its labels."""

    name: str
    description: str
    incitement: bool
    shots: tuple[Shot, ...]
    lines: tuple[Line, ...] = ()
    music: bool = False
    has_audio: bool = True
    # With music: None keeps the beat ~15 dB under the speech peaks (MUSIC_UNDER_SPEECH_PEAK);
    # a number mixes the beat plus the chord pad at that speech-to-music power ratio in dB,
    # measured over the voiced samples (a rap vocal as loud as its beat: 0).
    music_snr_db: float | None = None

    @property
    def duration(self) -> float:
        return sum(shot.seconds for shot in self.shots)


def ultralytics_assets() -> Path:
    """The ``assets/`` folder inside the installed ultralytics package (found without importing
    it, which is slow and writes a settings file)."""
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or spec.origin is None:
        raise SampleBuildError(
            "ultralytics is not installed; run this script with the project's venv python"
        )
    return Path(spec.origin).parent / "assets"


# --- sources --------------------------------------------------------------------------------

BUS = SourceImage("ultralytics", "bus")
ZIDANE = SourceImage("ultralytics", "zidane")

# Roboflow "cctvfootage" knife frames (weapons/); all 30 there carry a knife box.
KNIFE_MASKED_MAN = SourceImage(
    "weapons", "knife_test_knife_241_jpg.rf.3f0131bda87a95a06a744baefade8024"
)
KNIFE_HELD_UP_CCTV = SourceImage(
    "weapons", "knife_valid_165_jpg.rf.1d4749269b5db6aec925794f8107d549"
)
KNIFE_IN_HAND_CCTV = SourceImage(
    "weapons", "knife_test_322_jpg.rf.a3c03825a44ad5e64a8efb500aef03df"
)
KNIFE_CLOSE_CCTV = SourceImage("weapons", "knife_valid_29_jpg.rf.ee60fe762921945d6adff00c4cc4d9cb")

_AHMED = "weapons-train/ahmed-new-dataset-weapon"
PISTOL_AIMED_AT_CAMERA = SourceImage(
    _AHMED, "ahmed_armas--620-_jpg.rf.8c6a4aa7b65beb4d6c29c1b482d938fe"
)
RIFLE_HELD_BY_MAN = SourceImage(_AHMED, "ahmed_2--168-_jpg.rf.3210609b8f3b8c61d1a33890f599a68b")
PISTOL_IN_HAND = SourceImage(_AHMED, "ahmed_armas--682-_jpg.rf.1308550025c177dce707324680548a63")
RIFLE_PRODUCT = SourceImage(_AHMED, "ahmed_2--187-_jpg.rf.eefe7c0d7777e46d46e964a1b79fd216")
PISTOL_GLOVED_HAND = SourceImage(
    _AHMED, "ahmed_armas--1400-_jpg.rf.2c0b3cec7666372f914d3c4e29506f1f"
)
PISTOL_ON_TABLE = SourceImage(_AHMED, "ahmed_armas--1403-_jpg.rf.7223e0784636ce0011310cde43c6fecb")
RIFLE_ON_FLOOR = SourceImage(_AHMED, "ahmed_2--211-_jpg.rf.47c27f3e3e736ea6640a981750262e79")

_KITCHEN = "weapons-train/new-knife-v3"
KITCHEN_CHOPPING = SourceImage(
    _KITCHEN, "nk_pexels-iupilon-3979421_jpg.rf.8daacd2f0e8a67a82c2a75465d5380e4"
)
KITCHEN_PEPPER = SourceImage(
    _KITCHEN, "nk_pregnant-woman-cutting-yellow-pepper_jpg.rf.8b1fd2d72f0dec016731526c72a9ceca"
)
KITCHEN_TOMATOES = SourceImage(
    _KITCHEN, "nk_pexels-karolina-grabowska-4038844_jpg.rf.f6ea22cdf637926d01c184e50e2c896d"
)
KITCHEN_LIME = SourceImage(
    _KITCHEN, "nk_lemon-6063930_1280_jpg.rf.4006c12e56716f8b65e34c3261f91810"
)

_HELD = "weapons-train/wallet-phone-airpod"
PHONE_HELD = SourceImage(_HELD, "wpa_opencv_frame_154_png.rf.6602e9db1305380d913eb156ebda29a2")
PHONE_RAISED = SourceImage(_HELD, "wpa_opencv_frame_191_png.rf.b240226be27d21ad7def08936b62dba4")
WALLET_RAISED = SourceImage(_HELD, "wpa_opencv_frame_167_png.rf.aa434a5d9b1585ebc62f86224a94a37d")
POINTING_GESTURE = SourceImage(
    "weapons-train/handgestures-rf100",
    "handgestures_a_1049_jpg.rf.5b4d0cffea4d94485def00d3433cc237",
)

# espeak-ng British voices. Each line's voice and speed were picked so that whisper-base hears the
# plain-English words (espeak-ng is robotic; "stab" in the default voice comes out as "stop");
# slang such as "skeng" or "mandem" is still misheard, as it would be from a real MC.
RP = "en-gb-x-rp"  # Received Pronunciation
WEST_MIDLANDS = "en-gb-x-gbcwmd"
LANCASTER = "en-gb-x-gbclan"
FEMALE = "en-gb+f3"  # default British voice with a female variant

CLIPS: tuple[Clip, ...] = (
    Clip(
        name="threat_knife.mp4",
        description="Knife CCTV/stock frames (4-16 s) between two benign street shots; explicit "
        "stabbing threats spoken while the knives are on screen. No music.",
        incitement=True,
        shots=(
            Shot(ZIDANE, 4),
            Shot(KNIFE_MASKED_MAN, 4),
            Shot(KNIFE_HELD_UP_CCTV, 4),
            Shot(KNIFE_IN_HAND_CCTV, 4),
            Shot(BUS, 4),
        ),
        lines=(
            Line(1.0, "You know who this message is for.", threat=False),
            Line(5.0, "I'm going to stab you when I catch you.", True, WEST_MIDLANDS, 140),
            Line(9.0, "I'll cut you up, you're dead.", threat=True),
            Line(13.0, "This knife is coming for you next.", True, LANCASTER, 160),
        ),
    ),
    Clip(
        name="threat_gun_drill.mp4",
        description="Pistol and rifle photos (0-8 s, 12-24 s) around a man holding up a phone "
        "(8-12 s); UK drill-slang threats and an explicit shooting threat in three British "
        "voices over a drill-style beat; ends on a non-threatening 'free the mandem'.",
        incitement=True,
        shots=(
            Shot(PISTOL_AIMED_AT_CAMERA, 4),
            Shot(RIFLE_HELD_BY_MAN, 4),
            Shot(PHONE_HELD, 4),
            Shot(PISTOL_IN_HAND, 4),
            Shot(RIFLE_PRODUCT, 4),
            Shot(PISTOL_GLOVED_HAND, 4),
        ),
        lines=(
            Line(1.0, "Grab the skeng, we're riding on the opps.", True, RP, 140),
            Line(5.5, "We're gonna wet him up.", True, speed=140),
            Line(9.5, "We're gonna spin the block tonight.", True, WEST_MIDLANDS, 140),
            Line(13.5, "We will shoot him, he's dead.", True, speed=140),
            Line(18.0, "Free the mandem.", False, RP, 140),
        ),
        music=True,
    ),
    Clip(
        name="threat_speech_only.mp4",
        description="Benign street/person/phone shots, no weapon anywhere; explicit threats to "
        "kill, shoot and burn spoken in a Received Pronunciation voice. No music.",
        incitement=True,
        shots=(Shot(BUS, 6), Shot(ZIDANE, 6), Shot(PHONE_RAISED, 6)),
        lines=(
            Line(1.0, "Morning everyone, quick message.", False, RP, 140),
            Line(4.0, "I know where you live and I'm going to kill you.", True, RP, 140),
            Line(9.0, "We will shoot him, he's dead.", True, RP, 140),
            Line(13.0, "Bring your boys, we'll burn your house down.", True, RP, 140),
        ),
    ),
    Clip(
        name="benign_street.mp4",
        description="Bus/street and two men talking; everyday benign speech. No weapon, no music.",
        incitement=False,
        shots=(Shot(BUS, 8), Shot(ZIDANE, 8)),
        lines=(
            Line(1.0, "The weather is lovely today.", False, RP, 140),
            Line(5.0, "We are going to the park after school.", threat=False),
            Line(10.0, "The bus into town is running late again.", threat=False),
        ),
    ),
    Clip(
        name="benign_slang.mp4",
        description="A man holding up a phone / wallet and a street shot; friendly UK slang "
        "('that ting was peng, bless up mandem') over the drill-style beat. Must not flag.",
        incitement=False,
        shots=(Shot(PHONE_HELD, 6), Shot(ZIDANE, 6), Shot(WALLET_RAISED, 6)),
        lines=(
            Line(1.0, "That ting was peng, bless up mandem.", False, speed=160),
            Line(5.5, "Wagwan bruv, you good?", False, LANCASTER, 155),
            Line(9.5, "We're linking up at the chicken shop later, innit.", False, RP, 140),
            Line(14.0, "That beat is hard, it's a banger.", False, speed=140),
        ),
        music=True,
    ),
    Clip(
        name="threat_rap_over_beat.mp4",
        description="Street, two men and a man holding up a phone, no weapon on screen; threats "
        "to set fire to a rival area and to shoot, rapped over the drill-style beat with a chord "
        "pad at 0 dB (voice as loud as the beat); ends on a benign line with 'gang'.",
        incitement=True,
        shots=(Shot(BUS, 5), Shot(ZIDANE, 5), Shot(PHONE_HELD, 5)),
        lines=(
            Line(1.0, "We're going to set fire to their area.", True, WEST_MIDLANDS, 125),
            Line(4.5, "Pass me the strap, I'm going to shoot him.", True, LANCASTER, 125),
            Line(9.0, "The gang are going to the studio tonight.", False, WEST_MIDLANDS, 125),
        ),
        music=True,
        music_snr_db=0.0,
    ),
    Clip(
        name="music_only.mp4",
        description="Street, a pointing hand gesture and two men, over the drill-style beat with "
        "no speech at all (a transcription hallucination trap).",
        incitement=False,
        shots=(Shot(BUS, 5), Shot(POINTING_GESTURE, 5), Shot(ZIDANE, 5)),
        music=True,
    ),
    Clip(
        name="weapon_silent.mp4",
        description="Pistol on a table, a knife held up to a CCTV camera, a rifle on the floor; "
        "no audio track at all. A weapon is on screen throughout, but nothing threatens or "
        "calls for violence, so incitement is false (the weapon evidence is still reported).",
        incitement=False,
        shots=(Shot(PISTOL_ON_TABLE, 5), Shot(KNIFE_CLOSE_CCTV, 5), Shot(RIFLE_ON_FLOOR, 5)),
        has_audio=False,
    ),
    Clip(
        name="kitchen_benign.mp4",
        description="Kitchen knives in use on food photos throughout; a recipe read in a "
        "female voice ('chop', 'cut', 'slice'). Hard negative: weapon boxes true, incitement "
        "false.",
        incitement=False,
        shots=(
            Shot(KITCHEN_CHOPPING, 5),
            Shot(KITCHEN_PEPPER, 5),
            Shot(KITCHEN_TOMATOES, 5),
            Shot(KITCHEN_LIME, 5),
        ),
        lines=(
            Line(1.0, "This recipe needs two onions.", False, FEMALE),
            Line(5.5, "Chop the peppers into thin slices.", False, FEMALE),
            Line(10.5, "Now cut the tomatoes and crush the garlic.", False, FEMALE),
            Line(15.5, "Squeeze the lime over it and serve.", False, FEMALE),
        ),
    ),
)


# --- audio ----------------------------------------------------------------------------------


def run_tool(args: list[str]) -> None:
    """Run an external tool (argument list, never a shell) and fail loudly with its stderr."""
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SampleBuildError(f"{args[0]} failed ({result.returncode}): {result.stderr.strip()}")


def synthesise_speech(line: Line, workdir: Path) -> array.array[float]:
    """Speak a line with espeak-ng; return it trimmed of leading/trailing silence and
    normalised to SPEECH_PEAK, as floats at AUDIO_RATE."""
    wav_path = workdir / "line.wav"
    run_tool(["espeak-ng", "-v", line.voice, "-s", str(line.speed), "-w", str(wav_path), line.text])
    with wave.open(str(wav_path), "rb") as wav:
        if (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) != (1, 2, AUDIO_RATE):
            raise SampleBuildError(f"unexpected espeak-ng wav format: {wav.getparams()}")
        pcm = array.array("h", wav.readframes(wav.getnframes()))
    voiced = [i for i, sample in enumerate(pcm) if abs(sample) > SILENCE_THRESHOLD]
    if not voiced:
        raise SampleBuildError(f"espeak-ng produced silence for {line.text!r}")
    pcm = pcm[voiced[0] : voiced[-1] + 1]
    gain = SPEECH_PEAK / max(abs(sample) for sample in pcm)
    return array.array("d", (sample * gain for sample in pcm))


def drill_beat_loop() -> array.array[float]:
    """Two bars of a drill-ish beat at 142 BPM: half-time snare on beat 3, gliding 808 bass,
    8th-note hats with a triplet roll, a sparse minor bell melody. Peak-normalised to 1.0."""
    rng = random.Random(142)  # fixed seed: the noise in snares/hats is part of the sample
    step = 60 / 142 / 4  # one 16th note
    steps = 32
    loop = array.array("d", bytes(8 * round(steps * step * AUDIO_RATE)))

    def add(start: float, samples: list[float]) -> None:
        offset = round(start * AUDIO_RATE)
        for i, value in enumerate(samples):
            loop[(offset + i) % len(loop)] += value  # wrap so tails continue into the next loop

    def kick() -> list[float]:
        out, phase = [], 0.0
        for i in range(round(0.25 * AUDIO_RATE)):
            t = i / AUDIO_RATE
            phase += 2 * math.pi * (45 + 95 * math.exp(-t / 0.03)) / AUDIO_RATE
            out.append(0.9 * math.sin(phase) * math.exp(-t / 0.09))
        return out

    def bass_808(freq: float, glide_from: float | None, length: float) -> list[float]:
        out, phase = [], 0.0
        for i in range(round(length * AUDIO_RATE)):
            t = i / AUDIO_RATE
            f = freq if glide_from is None else freq + (glide_from - freq) * math.exp(-t / 0.06)
            phase += 2 * math.pi * f / AUDIO_RATE
            out.append(0.7 * math.tanh(1.8 * math.sin(phase)) * math.exp(-t / 0.7))
        return out

    def snare() -> list[float]:
        out = []
        for i in range(round(0.2 * AUDIO_RATE)):
            t = i / AUDIO_RATE
            noise = rng.uniform(-1, 1) * math.exp(-t / 0.05)
            tone = math.sin(2 * math.pi * 190 * t) * math.exp(-t / 0.03)
            out.append(0.45 * noise + 0.3 * tone)
        return out

    def hat(level: float) -> list[float]:
        out, previous = [], 0.0
        for i in range(round(0.05 * AUDIO_RATE)):
            current = rng.uniform(-1, 1)
            out.append(level * (current - previous) * math.exp(-i / AUDIO_RATE / 0.012))
            previous = current
        return out

    def bell(freq: float) -> list[float]:
        return [
            0.12 * math.sin(2 * math.pi * freq * i / AUDIO_RATE) * math.exp(-i / AUDIO_RATE / 0.35)
            for i in range(round(0.8 * AUDIO_RATE))
        ]

    for position in (0, 10, 16, 19, 26):
        add(position * step, kick())
    for position in (8, 24):
        add(position * step, snare())
    for position in range(0, 28, 2):
        add(position * step, hat(0.18))
    for k in range(6):  # triplet hat roll over the last beat
        add((28 + k * 4 / 6) * step, hat(0.14))
    bass_notes = (
        (0, 46.25, None, 6),
        (6, 46.25, None, 4),
        (10, 55.0, 46.25, 6),
        (16, 41.2, None, 6),
        (22, 69.3, 41.2, 6),
        (28, 46.25, 69.3, 4),
    )
    for position, freq, glide_from, length in bass_notes:
        add(position * step, bass_808(freq, glide_from, length * step))
    for position, freq in (
        (0, 370.0),
        (3, 440.0),
        (6, 554.4),
        (12, 493.9),
        (16, 370.0),
        (19, 440.0),
        (22, 587.3),
        (28, 554.4),
    ):
        add(position * step, bell(freq))

    peak = max(abs(value) for value in loop)
    return array.array("d", (value / peak for value in loop))


def chord_pad_loop(length: int) -> array.array[float]:
    """A sustained minor chord pad (F#m then Dm, one chord a bar, detuned saw-ish partials,
    slow attack) of `length` samples at AUDIO_RATE, to loop with `drill_beat_loop`: the
    harmonic bed of a drill beat that a band-pass or a percussive filter cannot remove.
    Peak-normalised to 1.0."""
    bar = length // 2
    chords = ((185.0, 220.0, 277.2), (146.8, 174.6, 220.0))  # F#3 A3 C#4, D3 F3 A3
    pad = array.array("d", bytes(8 * length))
    for index, chord in enumerate(chords):
        for i in range(bar):
            t = i / AUDIO_RATE
            envelope = min(1.0, t / 0.15, (bar - i) / AUDIO_RATE / 0.05)
            value = 0.0
            for freq in chord:
                for detune in (0.997, 1.003):
                    for harmonic in (1, 2, 3, 4):
                        value += math.sin(2 * math.pi * freq * detune * harmonic * t) / harmonic
            pad[index * bar + i] = envelope * value
    peak = max(abs(value) for value in pad) or 1.0
    return array.array("d", (value / peak for value in pad))


PAD_LEVEL = 0.35  # chord pad under the beat (relative peaks) when a clip sets music_snr_db


def _under_music(speech: array.array[float], beat: array.array[float], snr_db: float
                 ) -> array.array[float]:
    """`speech` with `beat` looped under it at `snr_db` (speech power over the voiced samples
    against the beat's power over the same samples), faded in and out, peak 0.9."""
    total = len(speech)
    voiced = [i for i, value in enumerate(speech) if abs(value) > 0.02]
    speech_power = sum(speech[i] ** 2 for i in voiced) / len(voiced)
    beat_power = sum(beat[i % len(beat)] ** 2 for i in voiced) / len(voiced)
    gain = math.sqrt(speech_power / beat_power / 10 ** (snr_db / 10))
    fade = round(0.05 * AUDIO_RATE)
    mix = array.array("d", (speech[i] + gain * min(1.0, i / fade, (total - 1 - i) / fade)
                            * beat[i % len(beat)] for i in range(total)))
    peak = max(abs(value) for value in mix)
    return array.array("d", (0.9 * value / peak for value in mix))


def render_audio(clip: Clip, beat: array.array[float], workdir: Path) -> tuple[Path, list[dict]]:
    """Mix the clip's speech (and beat) into a mono wav; return it and the measured lines."""
    total = round(clip.duration * AUDIO_RATE)
    mix = array.array("d", bytes(8 * total))
    if clip.music and clip.music_snr_db is not None:
        pad = chord_pad_loop(len(beat))
        bed = [value + PAD_LEVEL * pad[i] for i, value in enumerate(beat)]
        peak = max(abs(value) for value in bed)
        beat = array.array("d", (value / peak for value in bed))
    if clip.music and clip.music_snr_db is None:
        gain = MUSIC_UNDER_SPEECH_PEAK if clip.lines else MUSIC_ALONE_PEAK
        fade = round(0.05 * AUDIO_RATE)
        for i in range(total):
            envelope = min(1.0, i / fade, (total - 1 - i) / fade)
            mix[i] = gain * envelope * beat[i % len(beat)]
    speech = []
    previous_end = 0.0
    for line in clip.lines:
        samples = synthesise_speech(line, workdir)
        offset = round(line.start * AUDIO_RATE)
        end = (offset + len(samples)) / AUDIO_RATE
        if line.start < previous_end or end > clip.duration:
            raise SampleBuildError(f"{clip.name}: line {line.text!r} overlaps or overruns the clip")
        for i, value in enumerate(samples):
            mix[offset + i] += value
        previous_end = end
        speech.append(
            {
                "start": round(line.start, 3),
                "end": round(end, 3),
                "text": line.text,
                "threat": line.threat,
                "voice": line.voice,
                "speed": line.speed,
            }
        )
    if clip.music and clip.music_snr_db is not None:
        mix = _under_music(mix, beat, clip.music_snr_db)
    pcm = array.array("h", (max(-32767, min(32767, round(v * 32767))) for v in mix))
    wav_path = workdir / "mix.wav"
    with wave.open(str(wav_path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(AUDIO_RATE)
        wav.writeframes(pcm.tobytes())
    return wav_path, speech


# --- video ----------------------------------------------------------------------------------


def encode_clip(clip: Clip, audio: Path | None, out_path: Path) -> None:
    """Concatenate the still images (letterboxed to WIDTH x HEIGHT) and mux the audio."""
    args = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
    filters = []
    for index, shot in enumerate(clip.shots):
        if round(shot.seconds * FPS) != shot.seconds * FPS:
            raise SampleBuildError(f"{clip.name}: shot length {shot.seconds} s is not whole frames")
        args += [
            "-loop",
            "1",
            "-framerate",
            str(FPS),
            "-t",
            str(shot.seconds),
            "-i",
            str(shot.image.path),
        ]
        filters.append(
            f"[{index}:v]scale={WIDTH}:{HEIGHT}:force_original_aspect_ratio=decrease,"
            f"pad={WIDTH}:{HEIGHT}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1,format=yuv420p[v{index}]"
        )
    joined = "".join(f"[v{index}]" for index in range(len(clip.shots)))
    filters.append(f"{joined}concat=n={len(clip.shots)}:v=1:a=0[video]")
    if audio is not None:
        args += ["-i", str(audio)]
    args += ["-filter_complex", ";".join(filters), "-map", "[video]"]
    if audio is not None:
        args += [
            "-map",
            f"{len(clip.shots)}:a",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            "-ar",
            str(AAC_RATE),
            "-ac",
            "1",
        ]
    args += [
        "-c:v",
        "libx264",
        "-preset",
        "medium",
        "-crf",
        "27",
        "-pix_fmt",
        "yuv420p",
        "-r",
        str(FPS),
        "-g",
        str(4 * FPS),
        "-t",
        str(clip.duration),
        "-map_metadata",
        "-1",
        "-fflags",
        "+bitexact",
        "-flags:v",
        "+bitexact",
        "-flags:a",
        "+bitexact",
        "-movflags",
        "+faststart",
        str(out_path),
    ]
    run_tool(args)


# --- labels ---------------------------------------------------------------------------------


def shot_table(clip: Clip) -> list[dict]:
    """Start/end, source and weapon labels of every shot."""
    table, start = [], 0.0
    for shot in clip.shots:
        table.append(
            {
                "start": round(start, 3),
                "end": round(start + shot.seconds, 3),
                "image": shot.image.source_name,
                "weapons": list(shot.image.weapons()),
            }
        )
        start += shot.seconds
    return table


def merge_intervals(intervals: list[tuple[float, float]]) -> list[list[float]]:
    """Merge touching or overlapping [start, end] intervals (input sorted by start)."""
    merged: list[list[float]] = []
    for start, end in intervals:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def build(out_dir: Path) -> dict[str, dict]:
    """Render every clip into out_dir and return the labels keyed by file name."""
    for tool in ("ffmpeg", "espeak-ng"):
        if shutil.which(tool) is None:
            raise SampleBuildError(f"{tool} not found on PATH; install it (apt-get install {tool})")
    if not SHARED_DATA.is_dir():
        raise SampleBuildError(f"shared data not found at {SHARED_DATA}")
    beat = drill_beat_loop()
    labels: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="incitescan-samples-") as tmp:
        workdir = Path(tmp)
        for clip in CLIPS:
            for shot in clip.shots:
                if not shot.image.path.is_file():
                    raise SampleBuildError(f"{clip.name}: image missing: {shot.image.path}")
            audio, speech = render_audio(clip, beat, workdir) if clip.has_audio else (None, [])
            encode_clip(clip, audio, out_dir / clip.name)
            shots = shot_table(clip)
            labels[clip.name] = {
                "weapon": merge_intervals([(s["start"], s["end"]) for s in shots if s["weapons"]]),
                "threat_speech": [
                    [line["start"], line["end"]] for line in speech if line["threat"]
                ],
                "incitement": clip.incitement,
                "description": clip.description,
                "speech": speech,
                "duration": round(clip.duration, 3),
                "has_audio": clip.has_audio,
                "music": clip.music,
                **({"music_snr_db": clip.music_snr_db} if clip.music_snr_db is not None else {}),
                "shots": shots,
            }
            print(f"{clip.name}: {clip.duration:g} s, {(out_dir / clip.name).stat().st_size} bytes")
    return labels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=SAMPLES_DIR,
        help="folder for the clips and labels.json (default: samples/)",
    )
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    try:
        labels = build(options.out)
    except SampleBuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    (options.out / "labels.json").write_text(json.dumps(labels, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
