"""The training recipe of the project's own weapon detector (`incitescan-weapons`): a fixed,
seeded validation split held out by near-duplicate group, an offline copy-paste and phone-video
degradation step that puts small, blurred, dark and JPEG-damaged weapons into scenes, a YOLOv8n
initialised from basegun's firearm backbone and fine-tuned with ultralytics on CPU, an OpenVINO
export, and a `train_record.json` (data digest, config, package versions, metrics) beside the
weights so a run can be checked and repeated. Everything is written under the run folder: never
into the repo, never into the shared data."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import random
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .errors import WeightsMissing
from .weights import REPO_ROOT, model_path

CLASSES = ("firearm", "knife")
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "weapons-train"
SCENES_DATA = REPO_ROOT.parent / "shared" / "data" / "weapons-scenes"
SOURCES = (  # folder -> file-name prefix (weapons-train: one folder per source)
    ("ahmed-new-dataset-weapon", "ahmed_"),
    ("new-knife-v3", "nk_"),
    ("wallet-phone-airpod", "wpa_"),
    ("handgestures-rf100", "handgestures_"),
)
# weapons-scenes is one flat folder; a file is `<source>_<NNNN>_<source image name>.jpg`.
_SCENES_NAME = re.compile(r"^(oi-gun|knife-v11|capston-neg|cctv-room-neg)_\d{4}_(.*)$")
_ROBOFLOW_SUFFIX = re.compile(r"rf[0-9a-f]{20,}$")  # `knife-612rf4585...`: an augmented copy
CHECKPOINT = REPO_ROOT / "weights" / "incitescan-weapons" / "incitescan-weapons.pt"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
FRAME_BUCKET = 25  # consecutive frame numbers within this many share a group (video frames)
_ROBOFLOW = re.compile(r"_(jpe?g|png|JPE?G|PNG)\.rf\.[0-9a-f]+$")
_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)(\D*)$")


def default_run_dir(seed: int = 0) -> Path:
    """Where `incitescan weights train` writes unless told: the user cache, never the repo."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "incitescan" / "train" / f"incitescan-weapons-seed{seed}"


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Every knob of a run; recorded verbatim in train_record.json."""

    data: tuple[str, ...] = (str(DEFAULT_DATA), str(SCENES_DATA))  # training sets, merged
    out: str = str(default_run_dir())
    seed: int = 0
    val_fraction: float = 0.15  # share of near-duplicate groups held out
    epochs: int = 6  # upper bound; `minutes` usually ends the run first
    minutes: float = 0.0  # wall-clock cap of the training (0 = none); ultralytics re-plans epochs
    imgsz: int = 320  # training size; small weapons come from crops, scale aug and pastes
    export_imgsz: int = 320  # the export's input size; 416 scored lower on validation
    batch: int = 16
    fraction: float = 1.0  # share of the training list used (smoke runs)
    freeze: int = 0  # first layers frozen (0.1.0 froze 5); 0.2 trains the whole backbone
    # "auto": continue from the committed checkpoint (weights/incitescan-weapons/*.pt) when there
    # is one, else start from basegun-firearm; or a manifest model name; "" = from scratch.
    init: str = "auto"
    synthetic: int = 800  # copy-paste images added to the training list
    crops: int = 800  # zoomed weapon / person crops added to the training list
    degraded_share: float = 0.7  # of synthetic images: motion blur / low light / JPEG / downscale
    workers: int = 2
    lr0: float = 0.005
    optimizer: str = "AdamW"
    cos_lr: bool = True
    close_mosaic: int = 2
    mosaic: float = 1.0
    scale: float = 0.6  # random zoom +-60 %: small and large weapons
    hsv_v: float = 0.5  # brightness jitter: low light
    degrees: float = 0.0
    fliplr: float = 0.5
    patience: int = 100
    warmup_epochs: float = 1.0
    val_each_epoch: bool = False  # ~1.5 min each on CPU; the last epoch is always validated
    export: str = "openvino-fp16"  # "openvino-fp16" | "openvino-int8" | "none"
    name: str = "incitescan-weapons"
    extra: dict[str, Any] = field(default_factory=dict)  # further ultralytics train arguments


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What a run produced."""

    run_dir: str
    best_pt: str
    export_dir: str  # the OpenVINO folder ("" when not exported)
    record: str  # path of train_record.json
    metrics: dict[str, float]
    seconds: float


# ------------------------------------------------------------------------------------ split


def group_key(image: Path | str) -> str:
    """Near-duplicate group of a training image: its source folder plus the Roboflow base name
    (the part before `_jpg.rf.`), with a trailing frame number bucketed by FRAME_BUCKET so that
    neighbouring video frames (`opencv_frame_100`, `_101`, ...) fall in the same group."""
    path = Path(image)
    source = path.parent.parent.name
    base = _ROBOFLOW.sub("", path.stem)
    for folder, prefix in SOURCES:
        if folder == source and base.startswith(prefix):
            base = base[len(prefix):]
    scenes = _SCENES_NAME.match(base)
    if scenes:  # weapons-scenes: group by the source and its image (or video frame) name
        source = f"{source}/{scenes.group(1)}"
        base = _ROBOFLOW_SUFFIX.sub("", scenes.group(2))
    match = _TRAILING_NUMBER.match(base)
    if match:
        head, number, tail = match.groups()
        base = f"{head}#{int(number) // FRAME_BUCKET}#{tail}"
    return f"{source}/{base}"


def in_validation(group: str, seed: int, val_fraction: float) -> bool:
    """The seeded split rule: a group is held out when sha256(seed:group) falls in the lowest
    `val_fraction` of the hash range. Independent of file order and of the other files."""
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def list_images(data: Path) -> list[Path]:
    """All images of one training set, sorted: either one folder per source, each with images/
    and labels/ (weapons-train), or images/ and labels/ directly (weapons-scenes)."""
    folders = [data / "images"] if (data / "images").is_dir() else [
        data / folder / "images" for folder, _ in SOURCES]
    found = [
        path
        for folder in folders
        if folder.is_dir()
        for path in folder.iterdir()
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not found:
        raise FileNotFoundError(f"no training images under {data}")
    return sorted(found)


def list_all_images(data: Sequence[str | Path]) -> list[Path]:
    """The images of every training set in `data`, sorted."""
    return sorted(path for root in data for path in list_images(Path(root)))


def label_of(image: Path) -> Path:
    """The YOLO label file of an image (an empty or absent file means no weapon)."""
    return image.parent.parent / "labels" / f"{image.stem}.txt"


def split(images: Iterable[Path], seed: int = 0, val_fraction: float = 0.15
          ) -> tuple[list[Path], list[Path]]:
    """(train, val) by the seeded group rule; both sorted, disjoint, groups kept whole."""
    train: list[Path] = []
    val: list[Path] = []
    for image in sorted(images):
        (val if in_validation(group_key(image), seed, val_fraction) else train).append(image)
    return train, val


def data_digest(files: Iterable[Path], root: Path) -> str:
    """One sha256 over the sorted relative paths and contents of `files` (images and labels):
    changes when any file is added, removed, renamed or edited."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        content = path.read_bytes() if path.exists() else b""
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(content).digest())
    return digest.hexdigest()


# ------------------------------------------------------------------------ synthetic images


def read_boxes(label: Path) -> list[tuple[int, float, float, float, float]]:
    """YOLO boxes (class, cx, cy, w, h normalised) of a label file; [] for none."""
    if not label.exists():
        return []
    boxes = []
    for line in label.read_text().split("\n"):
        parts = line.split()
        if len(parts) >= 5:
            cls, cx, cy, w, h = parts[:5]
            boxes.append((int(cls), float(cx), float(cy), float(w), float(h)))
    return boxes


def degrade(image: np.ndarray, rng: random.Random) -> Any:
    """Phone-video damage, each with its own chance: motion blur, low light, down-and-up
    scaling, JPEG artefacts."""
    out: Any = image
    if rng.random() < 0.5:  # motion blur along a random direction
        length = rng.randint(5, 15)
        kernel: np.ndarray = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0
        rotation = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5),
                                           rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, rotation, (length, length))
        out = cv2.filter2D(out, -1, kernel / max(kernel.sum(), 1e-6))
    if rng.random() < 0.5:  # low light: darker, gamma up, a little sensor noise
        gain, gamma = rng.uniform(0.25, 0.7), rng.uniform(1.0, 1.6)
        table = np.array([min(255, 255 * gain * (i / 255) ** gamma) for i in range(256)], np.uint8)
        out = cv2.LUT(out, table)
        noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 4, out.shape)
        out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:  # low resolution upload
        h, w = out.shape[:2]
        factor = rng.uniform(0.3, 0.6)
        small = cv2.resize(out, (max(8, int(w * factor)), max(8, int(h * factor))),
                           interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    quality = rng.randint(15, 45) if rng.random() < 0.7 else 90  # recompression
    ok, encoded = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR) if ok else out


Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


def _hand_spot(person: Box, pw: int, ph: int, rng: random.Random) -> tuple[int, int]:
    """Where a pasted weapon of size pw x ph goes for a person box: beside a hand or the waist
    (left or right edge, 35-70 % down the body)."""
    x1, y1, x2, y2 = person
    side_x = x1 if rng.random() < 0.5 else x2
    cx = side_x + rng.uniform(-0.15, 0.15) * (x2 - x1)
    cy = y1 + rng.uniform(0.35, 0.7) * (y2 - y1)
    return int(cx - pw / 2), int(cy - ph / 2)


def make_synthetic(train: Sequence[Path], count: int, seed: int, images_dir: Path,
                   labels_dir: Path, degraded_share: float = 0.7,
                   persons: dict[Path, list[Box]] | None = None,
                   size_range: tuple[float, float] = (0.03, 0.25)) -> list[Path]:
    """Copy-paste augmentation: cut weapons out of training images by their boxes and paste
    1-3 of them, small (`size_range` of the long side: far weapons), slightly blurred to the
    scene's sharpness, into other training images, then apply `degrade` to `degraded_share` of
    the results. Backgrounds with people (`persons`: image -> person boxes, from the COCO model)
    get half their weapons next to a person's hand or waist, at a size set by the person's
    height. Only training images are used, so nothing of the validation split leaks in. Returns
    the written images."""
    rng = random.Random(seed)
    persons = persons or {}
    donors = [(img, box) for img in train for box in read_boxes(label_of(img))
              if box[3] * box[4] > 0.005]
    if not donors or count <= 0:
        return []
    images_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(count):
        background = rng.choice(train)
        canvas = cv2.imread(str(background), cv2.IMREAD_COLOR)
        if canvas is None:
            continue
        height, width = canvas.shape[:2]
        boxes = list(read_boxes(label_of(background)))
        taken: list[tuple[int, int, int, int]] = [
            (int((cx - w / 2) * width), int((cy - h / 2) * height),
             int((cx + w / 2) * width), int((cy + h / 2) * height))
            for _, cx, cy, w, h in boxes
        ]
        for _ in range(rng.randint(1, 3)):
            donor, (cls, cx, cy, w, h) = rng.choice(donors)
            source = cv2.imread(str(donor), cv2.IMREAD_COLOR)
            if source is None:
                continue
            sh, sw = source.shape[:2]
            x1, y1 = max(0, int((cx - w / 2) * sw)), max(0, int((cy - h / 2) * sh))
            x2, y2 = min(sw, int((cx + w / 2) * sw)), min(sh, int((cy + h / 2) * sh))
            if x2 - x1 < 8 or y2 - y1 < 8:
                continue
            crop = source[y1:y2, x1:x2]
            if rng.random() < 0.5:
                crop = cv2.flip(crop, 1)
            people = persons.get(background, [])
            person = rng.choice(people) if people and rng.random() < 0.5 else None
            if person is not None:  # a weapon in a hand: sized by the person's height
                long_side = rng.uniform(0.12, 0.35) * (person[3] - person[1])
            else:
                long_side = rng.uniform(*size_range) * max(width, height)
            factor = long_side / max(crop.shape[:2])
            pw, ph = max(4, int(crop.shape[1] * factor)), max(4, int(crop.shape[0] * factor))
            if pw >= width or ph >= height:
                continue
            crop = cv2.resize(crop, (pw, ph), interpolation=cv2.INTER_AREA)
            if rng.random() < 0.5:  # far objects are soft: blur the paste a little
                crop = cv2.GaussianBlur(crop, (0, 0), rng.uniform(0.4, 1.2))
            for _attempt in range(10):  # avoid covering boxes already there
                if person is not None:
                    px, py = _hand_spot(person, pw, ph, rng)
                    px, py = min(max(px, 0), width - pw), min(max(py, 0), height - ph)
                else:
                    px, py = rng.randint(0, width - pw), rng.randint(0, height - ph)
                if all(px + pw <= a or px >= c or py + ph <= b or py >= d
                       for a, b, c, d in taken):
                    break
            else:
                continue
            # Feathered edges so the paste is not a hard rectangle the model could learn.
            mask: np.ndarray = np.zeros((ph, pw), np.float32)
            border = max(1, min(pw, ph) // 8)
            mask[border:-border or None, border:-border or None] = 1.0
            mask = cv2.GaussianBlur(mask, (0, 0), max(0.5, border / 2))[..., None]
            region = canvas[py:py + ph, px:px + pw].astype(np.float32)
            canvas[py:py + ph, px:px + pw] = (mask * crop + (1 - mask) * region).astype(np.uint8)
            taken.append((px, py, px + pw, py + ph))
            boxes.append((cls, (px + pw / 2) / width, (py + ph / 2) / height,
                          pw / width, ph / height))
        if rng.random() < degraded_share:
            canvas = degrade(canvas, rng)
        target = images_dir / f"synthetic_{index:05d}.jpg"
        cv2.imwrite(str(target), canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
        (labels_dir / f"{target.stem}.txt").write_text(
            "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in boxes)
        )
        written.append(target)
    return written


def make_crops(train: Sequence[Path], count: int, seed: int, images_dir: Path,
               labels_dir: Path, persons: dict[Path, list[Box]] | None = None) -> list[Path]:
    """Zoomed crops like the scanner's person-guided crops: a window 2-5 times a weapon's size
    around it (or around a person, 1.2-1.6 times the person box, when the image has people but
    no weapon), so the model sees weapons as it will in a crop at inference and each CPU epoch
    costs less than a whole image would. Boxes keep their part inside the window when at least
    60 % of them is inside. Returns the written images."""
    rng = random.Random(seed + 7919)
    persons = persons or {}
    images_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    choices = [img for img in train if read_boxes(label_of(img)) or persons.get(img)]
    written: list[Path] = []
    for index in range(count if choices else 0):
        image_path = rng.choice(choices)
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if image is None:
            continue
        height, width = image.shape[:2]
        boxes = [(c, (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                  (cy + h / 2) * height) for c, cx, cy, w, h in read_boxes(label_of(image_path))]
        if boxes:
            _, x1, y1, x2, y2 = rng.choice(boxes)
            zoom = rng.uniform(2.0, 5.0)
        else:
            x1, y1, x2, y2 = rng.choice(persons[image_path])
            zoom = rng.uniform(1.2, 1.6)
        side = max(64.0, zoom * max(x2 - x1, y2 - y1))
        cw = min(width, side * rng.uniform(0.8, 1.25))
        ch = min(height, side * rng.uniform(0.8, 1.25))
        lo_x, hi_x = max(0.0, x2 - cw), min(x1, width - cw)
        lo_y, hi_y = max(0.0, y2 - ch), min(y1, height - ch)
        left = rng.uniform(lo_x, hi_x) if hi_x > lo_x else max(0.0, min(x1, width - cw))
        top = rng.uniform(lo_y, hi_y) if hi_y > lo_y else max(0.0, min(y1, height - ch))
        window = image[int(top):int(top + ch), int(left):int(left + cw)]
        if window.shape[0] < 16 or window.shape[1] < 16:
            continue
        wh, ww = window.shape[:2]
        kept = []
        for cls, bx1, by1, bx2, by2 in boxes:
            ix1, iy1 = max(bx1 - left, 0.0), max(by1 - top, 0.0)
            ix2, iy2 = min(bx2 - left, float(ww)), min(by2 - top, float(wh))
            if ix2 <= ix1 or iy2 <= iy1:
                continue
            if (ix2 - ix1) * (iy2 - iy1) >= 0.6 * (bx2 - bx1) * (by2 - by1):
                kept.append((cls, (ix1 + ix2) / 2 / ww, (iy1 + iy2) / 2 / wh,
                             (ix2 - ix1) / ww, (iy2 - iy1) / wh))
        target = images_dir / f"crop_{index:05d}.jpg"
        cv2.imwrite(str(target), window, [cv2.IMWRITE_JPEG_QUALITY, 92])
        (labels_dir / f"{target.stem}.txt").write_text(
            "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in kept))
        written.append(target)
    return written


def find_persons(images: Sequence[Path], model: str = "yolo11n-coco-int8",
                 min_confidence: float = 0.4) -> dict[Path, list[Box]]:
    """Person boxes (pixels) of each image from the COCO detector the scanner already uses;
    used to paste weapons into hands and to crop around people. {} when the model is absent."""
    try:
        folder = model_path(model)
    except WeightsMissing:
        return {}
    from ultralytics import YOLO

    detector = YOLO(str(folder), task="detect")
    found: dict[Path, list[Box]] = {}
    for image in images:
        result = detector.predict(str(image), classes=[0], conf=min_confidence, verbose=False,
                                  device="cpu")[0]
        boxes = [tuple(float(v) for v in box) for box in result.boxes.xyxy.tolist()]
        found[image] = [b for b in boxes if (b[3] - b[1]) >= 24]  # type: ignore[misc]
    return found


# ------------------------------------------------------------------------------- dataset


def prepare_dataset(config: TrainConfig, work: Path) -> dict[str, Any]:
    """Copy the split into `work/dataset/{train,val}/{images,labels}` (ultralytics writes label
    caches beside the labels, so the shared data is never touched), add the synthetic images to
    train, and write `work/dataset/data.yaml`. Returns facts for the record."""
    roots = [Path(d) for d in config.data]
    images = list_all_images(roots)
    train, val = split(images, config.seed, config.val_fraction)
    root = work / "dataset"
    if root.exists():
        shutil.rmtree(root)
    for part, members in (("train", train), ("val", val)):
        (root / part / "images").mkdir(parents=True)
        (root / part / "labels").mkdir(parents=True)
        for image in members:
            shutil.copyfile(image, root / part / "images" / image.name)
            label = label_of(image)
            target = root / part / "labels" / f"{image.stem}.txt"
            if label.exists():
                shutil.copyfile(label, target)
            else:
                target.write_text("")
    negatives = [i for i in train if not read_boxes(label_of(i))]
    persons = find_persons(negatives) if config.synthetic or config.crops else {}
    synthetic = make_synthetic(train, config.synthetic, config.seed,
                               root / "train" / "images", root / "train" / "labels",
                               config.degraded_share, persons=persons)
    crops = make_crops(train, config.crops, config.seed, root / "train" / "images",
                       root / "train" / "labels", persons=persons)
    (root / "data.yaml").write_text(
        f"path: {root}\ntrain: train/images\nval: val/images\n"
        f"nc: {len(CLASSES)}\nnames: {list(CLASSES)}\n"
    )
    digests = {}
    for data in roots:
        mine = [i for i in images if i.is_relative_to(data)]
        files = [*mine, *(label_of(i) for i in mine)]
        digests[data.name] = data_digest([f for f in files if f.exists()], data)
    return {
        "data_dirs": [str(d) for d in roots],
        "data_digests": digests,
        "images": len(images),
        "train_images": len(train),
        "val_images": len(val),
        "synthetic_images": len(synthetic),
        "crop_images": len(crops),
        "people_found_in_negatives": sum(len(v) for v in persons.values()),
        "val_groups": sorted({group_key(i) for i in val}),
        "val_files": [i.name for i in val],
        "split_rule": (
            f"group = source + Roboflow base name (before _jpg.rf.), trailing frame number // "
            f"{FRAME_BUCKET}; val iff sha256('{config.seed}:'+group)[:8] / 2**64 < "
            f"{config.val_fraction}"
        ),
        "yaml": str(root / "data.yaml"),
    }


# ------------------------------------------------------------------------------- training


def _offline_ultralytics(config_dir: Path) -> None:
    """Keep ultralytics off the network and out of the repo: a private settings folder (the
    shared one points runs/ and weights/ into the repo and has telemetry on), offline mode."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_VERBOSE", "False")
    if "ultralytics" in sys.modules:
        return  # too late to move its settings; every path we pass it is explicit anyway
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    from ultralytics import settings

    settings.update({"sync": False, "runs_dir": str(config_dir / "runs"),
                     "weights_dir": str(config_dir / "weights"),
                     "datasets_dir": str(config_dir / "datasets"), "clearml": False,
                     "comet": False, "dvc": False, "mlflow": False, "raytune": False,
                     "tensorboard": False, "wandb": False})


DETECTOR_PACKAGES = ("ultralytics", "torch", "torchvision", "numpy", "opencv-python-headless",
                     "openvino", "nncf")


def versions(packages: Sequence[str] = DETECTOR_PACKAGES) -> dict[str, str]:
    """Versions of Python, the platform and the packages that shape a run."""
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for package in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def train(config: TrainConfig, progress: Callable[[str], None] | None = None) -> TrainResult:
    """Run the whole recipe into `config.out`: dataset, training, validation, export, record.

    Deterministic for a given config, data and package versions up to floating-point
    non-determinism of multi-threaded CPU kernels."""
    say = progress or (lambda line: None)
    started = time.time()
    out = Path(config.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    _offline_ultralytics(out / "ultralytics-config")
    say("building the dataset and synthetic images")
    dataset = prepare_dataset(config, out)

    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml", task="detect")
    init_path, epochs_before = resolve_init(config.init)
    init_sha = ""
    if init_path is not None:
        model.load(str(init_path))  # transfers every layer whose name and shape match
        init_sha = _sha256(init_path)
    cap = f", capped at {config.minutes:g} min" if config.minutes else ""
    say(f"training up to {config.epochs} epoch(s) at {config.imgsz} px{cap} from "
        f"{init_path or 'scratch'} ({epochs_before:g} epoch(s) before)")
    train_args = dict(
        data=dataset["yaml"], epochs=config.epochs, imgsz=config.imgsz, batch=config.batch,
        fraction=config.fraction, freeze=config.freeze or None, seed=config.seed,
        deterministic=True, workers=config.workers, device="cpu", amp=False, plots=False,
        val=config.val_each_epoch, project=str(out), name="train", exist_ok=True, lr0=config.lr0,
        optimizer=config.optimizer, cos_lr=config.cos_lr, close_mosaic=config.close_mosaic,
        mosaic=config.mosaic, scale=config.scale, hsv_v=config.hsv_v, degrees=config.degrees,
        fliplr=config.fliplr, patience=config.patience, warmup_epochs=config.warmup_epochs,
        cache=False, verbose=False,
    )
    if config.minutes:
        train_args["time"] = config.minutes / 60  # hours; ultralytics fits the epochs to it
    train_args.update(config.extra)
    model.train(**train_args)
    run_dir = out / "train"
    best = run_dir / "weights" / "best.pt"
    if not best.exists():
        best = run_dir / "weights" / "last.pt"

    results_csv = run_dir / "results.csv"
    epochs_trained = max(0, len(results_csv.read_text().splitlines()) - 1) \
        if results_csv.exists() else 0
    say(f"validating the best weights ({epochs_trained} epoch(s) trained)")
    trained = YOLO(str(best), task="detect")
    val = trained.val(data=dataset["yaml"], imgsz=config.export_imgsz, batch=config.batch,
                      device="cpu", plots=False, verbose=False, project=str(out),
                      name="val", exist_ok=True, workers=config.workers)
    # At the export's input size, the one the scanner uses.
    metrics = {"val_map50": float(val.box.map50), "val_map50_95": float(val.box.map)}
    for index, name in enumerate(CLASSES):
        if index < len(val.box.ap50):
            metrics[f"val_ap50_{name}"] = float(val.box.ap50[index])

    checkpoint = strip_checkpoint(best, out / CHECKPOINT.name)
    export_dir = ""
    if config.export != "none":
        say(f"exporting ({config.export})")
        export_dir = str(export_openvino(best, out / f"{config.name}_openvino_model",
                                         config.export_imgsz,
                                         int8=config.export == "openvino-int8",
                                         data_yaml=dataset["yaml"]))

    seconds = round(time.time() - started, 1)
    record = {
        "model": config.name,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "config": asdict(config),
        "dataset": {k: v for k, v in dataset.items() if k != "yaml"},
        "init": {"model": config.init, "path": str(init_path or ""), "sha256": init_sha},
        "versions": versions(),
        "epochs_trained": epochs_trained,  # this run; fewer than config.epochs under a time cap
        "epochs_total": epochs_before + epochs_trained,  # across the runs this one continues
        "checkpoint": {"file": CHECKPOINT.name, "sha256": _sha256(checkpoint)},
        "metrics": metrics,
        "seconds": seconds,
        "best_pt_sha256": _sha256(best),
        "export": {
            "format": config.export, "imgsz": config.export_imgsz, "from": best.name,
            "files": {f.name: _sha256(f) for f in sorted(Path(export_dir).iterdir())},
        } if export_dir else {},
    }
    record_path = out / "train_record.json"
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    say(f"done in {seconds:.0f} s; record in {record_path}")
    return TrainResult(str(run_dir), str(best), export_dir, str(record_path), metrics, seconds)


def resolve_init(init: str) -> tuple[Path | None, float]:
    """The weights a run starts from and how many epochs they had already trained: "auto" is
    the committed checkpoint when there is one (training accumulates across sessions), else
    basegun's firearm model; a manifest name is that model's .pt; "" is from scratch."""
    if init == "auto":
        if CHECKPOINT.is_file():
            record = CHECKPOINT.parent / "train_record.json"
            before = 0.0
            if record.is_file():
                saved = json.loads(record.read_text())
                before = float(saved.get("epochs_total", saved.get("epochs_trained", 0)))
            return CHECKPOINT, before
        init = "basegun-firearm"
    if not init:
        return None, 0.0
    folder = model_path(init)
    found = sorted(folder.glob("*.pt"))
    if not found:
        raise FileNotFoundError(f"model {init} has no .pt file to start training from")
    return found[0], 0.0


def strip_checkpoint(best: Path, target: Path) -> Path:
    """A small copy of a training checkpoint to commit: the model in FP16, without optimizer
    state or EMA (what the next run continues from)."""
    import torch

    saved = torch.load(str(best), map_location="cpu", weights_only=False)
    model = saved.get("ema") or saved["model"]
    torch.save({"model": model.half(), "train_args": saved.get("train_args", {}),
                "epoch": -1, "date": saved.get("date", "")}, str(target))
    return target


def export_openvino(weights: Path, target: Path, imgsz: int, *, int8: bool = False,
                    data_yaml: str | None = None) -> Path:
    """Export `weights` (a .pt) to an OpenVINO folder `target` (its name must end in
    `_openvino_model` for ultralytics to load it) holding `<model>.xml`, `<model>.bin` and
    `metadata.yaml`; FP16, or INT8 calibrated on `data_yaml` (needs the nncf package)."""
    from ultralytics import YOLO

    _offline_ultralytics(target.parent / "ultralytics-config")
    exported = Path(YOLO(str(weights), task="detect").export(
        format="openvino", imgsz=imgsz, half=not int8, int8=int8,
        data=data_yaml if int8 else None, fraction=0.25 if int8 else 1.0, device="cpu",
        verbose=False,
    ))
    name = target.name.removesuffix("_openvino_model")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for file in exported.iterdir():  # stable file names, not best.xml
        stem = name if file.suffix in (".xml", ".bin") else file.stem
        shutil.copyfile(file, target / f"{stem}{file.suffix}")
    shutil.rmtree(exported)
    return target


def config_for(epochs: int | None = None, imgsz: int | None = None, out: str | None = None,
               seed: int | None = None, **changes: Any) -> TrainConfig:
    """The default config with the CLI's overrides (None = keep the default)."""
    config = TrainConfig()
    if isinstance(changes.get("data"), str | Path):
        changes["data"] = (str(changes["data"]),)
    elif changes.get("data") is not None:
        changes["data"] = tuple(str(d) for d in changes["data"])
    given = dict(epochs=epochs, imgsz=imgsz, out=out, seed=seed, **changes)
    config = replace(config, **{k: v for k, v in given.items() if v is not None})
    if imgsz is not None and "export_imgsz" not in changes:
        config = replace(config, export_imgsz=imgsz)
    if out is None:
        config = replace(config, out=str(default_run_dir(config.seed)))
    return config
