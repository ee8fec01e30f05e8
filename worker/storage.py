"""Shared media storage: clients put a video in, workers read it back by key. A key is the
sha256 of the content, never anything from the upload's name, so keys cannot collide, cannot
escape the store, and the same video stored twice is one object. `Storage` is the interface (an
S3-compatible store needs only these methods); `LocalStorage` keeps objects in a folder that every
worker mounts (a local disk for one machine, NFS or similar for several)."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Protocol

_KEY = re.compile(r"[0-9a-f]{64}\Z")


class Storage(Protocol):
    """Content-addressed storage of media files."""

    name: str

    def put(self, source: Path) -> str:
        """Store the file at `source` and return its key (the sha256 of its content)."""
        ...

    def open(self, key: str) -> BinaryIO:
        """The stored object `key`, opened for binary reading."""
        ...

    def local_path(self, key: str) -> Path:
        """A local file holding object `key` (a remote store downloads it to a cache)."""
        ...

    def exists(self, key: str) -> bool:
        """Whether object `key` is stored."""
        ...


def check_key(key: str) -> str:
    """`key` if it is a well-formed content key (64 lowercase hex digits), else ValueError."""
    if not _KEY.match(key):
        raise ValueError(f"not a storage key: {key!r}")
    return key


class LocalStorage:
    """Objects as files `<root>/<k[:2]>/<key>`, written whole and renamed into place."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    def _path(self, key: str) -> Path:
        check_key(key)
        return self.root / key[:2] / key

    def put(self, source: Path) -> str:
        digest = hashlib.sha256()
        self.root.mkdir(parents=True, exist_ok=True)
        # Copy and hash in one pass into a temporary file inside the store, then rename: a
        # reader never sees half a file and a crash leaves only a stray temporary file.
        handle, partial = tempfile.mkstemp(prefix=".put-", dir=self.root)
        try:
            with os.fdopen(handle, "wb") as out, Path(source).open("rb") as src:
                for block in iter(lambda: src.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
            key = digest.hexdigest()
            target = self._path(key)
            if target.is_file() and target.stat().st_size == Path(partial).stat().st_size:
                return key
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, target)
            return key
        finally:
            Path(partial).unlink(missing_ok=True)

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def local_path(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"object {key} is not in the storage at {self.root}")
        return path

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()


def open_storage(location: Path | str) -> Storage:
    """The storage at `location`: a folder path (or file:// URL) gives `LocalStorage`."""
    text = str(location)
    if "://" in text and not text.startswith("file://"):
        raise ValueError(f"unsupported storage {text!r}: only local folders so far")
    return LocalStorage(Path(text.removeprefix("file://")))
