"""Receiving an upload without ever holding it in memory: the multipart body is parsed as it
streams in, the file part is written in chunks to a staging file inside the storage folder and
hashed on the way, and the size limit is enforced while reading (413 as soon as it is passed).
The client's file name is kept only as a display name; the stored object's key is the sha256."""

from __future__ import annotations

import contextlib
import hashlib
import re
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from .errors import ApiError

MAX_FIELD_BYTES = 64 * 1024
FORM_OVERHEAD = 256 * 1024  # headers and text fields a multipart body may add to the file
FILE_FIELD = "file"


@dataclass(slots=True)
class StagedUpload:
    """A received upload waiting in the staging folder (delete it with `discard`)."""

    path: Path
    sha256: str
    size: int
    filename: str
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        """Delete the staging file (and its private folder)."""
        self.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()


def display_name(raw: str) -> str:
    """A client-sent file name made safe to show: last path component, no control characters,
    at most 255 characters. Never used as a path."""
    name = re.split(r"[\\/]", raw)[-1]
    name = "".join(c for c in unicodedata.normalize("NFC", name)
                   if unicodedata.category(c)[0] != "C")
    return name.strip()[:255]


def too_large(max_bytes: int) -> ApiError:
    """The 413 error of an upload over `max_bytes`."""
    return ApiError(413, "upload_too_large",
                    f"the upload is over the {max_bytes / 1e6:.0f} MB limit "
                    f"(INCITESCAN_MAX_UPLOAD_BYTES)")


class _FormReceiver:
    """python-multipart callbacks: text fields into memory (bounded), the file to disk."""

    def __init__(self, staging: Path, max_bytes: int) -> None:
        self.staging, self.max_bytes = staging, max_bytes
        self.fields: dict[str, str] = {}
        self.upload: StagedUpload | None = None
        self._digest = hashlib.sha256()
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._text: bytearray | None = None
        self._file: Any = None

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.part_begin, "on_header_field": self.header_field,
            "on_header_value": self.header_value, "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
            "on_part_end": self.part_end,
        }

    def part_begin(self) -> None:
        self._headers, self._header_field, self._header_value = {}, b"", b""

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        if self._name == FILE_FIELD:
            if self.upload is not None:
                raise ApiError(422, "invalid_request", "send exactly one `file` part")
            folder = Path(tempfile.mkdtemp(prefix=".upload-", dir=self.staging))
            path = folder / "upload"  # the name ffprobe's messages show; never the client's
            self._file = path.open("wb")
            raw = params.get(b"filename", b"").decode("utf-8", "replace")
            self.upload = StagedUpload(path=path, sha256="", size=0, filename=display_name(raw))
        else:
            if self._name in self.fields:
                raise ApiError(422, "invalid_request", f"form field {self._name!r} sent twice")
            self._text = bytearray()

    def part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._file is not None:
            assert self.upload is not None
            self.upload.size += len(chunk)
            if self.upload.size > self.max_bytes:
                raise too_large(self.max_bytes)
            self._digest.update(chunk)
            self._file.write(chunk)
        elif self._text is not None:
            self._text += chunk
            if len(self._text) > MAX_FIELD_BYTES:
                raise ApiError(413, "field_too_large",
                               f"form field {self._name!r} is over {MAX_FIELD_BYTES} bytes")

    def part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self._text is not None:
            try:
                self.fields[self._name] = self._text.decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(422, "invalid_request",
                               f"form field {self._name!r} is not UTF-8 text") from None
            self._text = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def finish(self) -> StagedUpload:
        if self.upload is None:
            raise ApiError(422, "invalid_request", "the form has no `file` part with the video")
        self.upload.sha256 = self._digest.hexdigest()
        self.upload.fields = self.fields
        return self.upload


async def receive_multipart(request: Request, staging: Path, max_bytes: int) -> StagedUpload:
    """Stream the multipart/form-data body of `request` into a staging file under `staging`,
    hashing it and enforcing `max_bytes` as it arrives."""
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise ApiError(422, "invalid_request", "multipart body without a valid boundary")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + FORM_OVERHEAD:
        raise too_large(max_bytes)  # refused before reading a byte
    staging.mkdir(parents=True, exist_ok=True)
    receiver = _FormReceiver(staging, max_bytes)
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes + FORM_OVERHEAD:
                raise too_large(max_bytes)
            parser.write(chunk)
        parser.finalize()
        return receiver.finish()
    except BaseException as exc:  # cancelled or disconnected too: nothing stays staged
        receiver.close()
        if receiver.upload is not None:
            receiver.upload.discard()
        if not isinstance(exc, ApiError) and type(exc).__module__.startswith("python_multipart"):
            raise ApiError(422, "invalid_request", f"malformed multipart body: {exc}") from None
        raise

