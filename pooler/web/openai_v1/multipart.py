"""The `/v1` upload routes' forms: what Quart parsed, as checked `Part`s, and the
multipart body the gateway writes for the upstream.

Quart reads and parses the form (pooler/web/request_body.py `read_form`, files kept in
memory); here it is held to what the routes accept: a `multipart/form-data` Content-Type
with a boundary (415 / 400 otherwise), no name given twice (400 naming it). A body Quart
could not parse has no parts, so the route's "'file' is required" names what is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pooler.errors import BadRequest, UnsupportedMediaType

if TYPE_CHECKING:
    from quart.datastructures import FileStorage
    from werkzeug.datastructures import MultiDict

MAX_BOUNDARY = 70  # RFC 2046
FORM_DATA = b"multipart/form-data"


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    def text(self) -> str:
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise invalid(self.name, f"'{self.name}' must be UTF-8 text") from exc


def invalid(field: str, message: str) -> BadRequest:
    return BadRequest(message, code="invalid_multipart", param=field)


def check_form_type(content_type: bytes | None) -> None:
    """A `multipart/form-data` Content-Type with a boundary (415 for another type)."""
    kind, _, params = (content_type or b"").partition(b";")
    if kind.strip().lower() != FORM_DATA:
        raise UnsupportedMediaType("the request body must be multipart/form-data")
    boundary = b""
    for param in params.split(b";"):
        key, _, value = param.strip().partition(b"=")
        if key.lower() == b"boundary":
            boundary = value.strip(b'"')
    if not 0 < len(boundary) <= MAX_BOUNDARY:
        raise BadRequest("the multipart/form-data boundary is missing or invalid")


def form_parts(fields: MultiDict[str, str], files: MultiDict[str, FileStorage]) -> list[Part]:
    """Every part of a parsed form: the text fields, then the files, each in order."""
    parts = [Part(name, value.encode()) for name, value in fields.items(multi=True)]
    for name, upload in files.items(multi=True):
        data = upload.stream.read()
        parts.append(Part(name, data, upload.filename or "", upload.content_type or None))
    return parts


def parts_by_name(parts: Iterable[Part]) -> dict[str, Part]:
    """The parts by name, each name at most once (400 naming a repeated one)."""
    form: dict[str, Part] = {}
    for part in parts:
        if part.name in form:
            raise invalid(part.name, f"the field '{part.name}' is given twice")
        form[part.name] = part
    return form


def encode_form(parts: Iterable[Part]) -> tuple[bytes, bytes]:
    """A multipart body for the upstream and its Content-Type."""
    boundary = b"pooler-" + os.urandom(16).hex().encode()
    chunks: list[bytes] = []
    for part in parts:
        disposition = f'form-data; name="{_quoted(part.name)}"'
        if part.filename is not None:
            disposition += f'; filename="{_quoted(part.filename)}"'
        chunks += [b"--", boundary, b"\r\nContent-Disposition: ", disposition.encode()]
        if part.content_type is not None:
            chunks += [b"\r\nContent-Type: ", part.content_type.encode("latin-1")]
        chunks += [b"\r\n\r\n", part.data, b"\r\n"]
    chunks += [b"--", boundary, b"--\r\n"]
    return b"".join(chunks), FORM_DATA + b"; boundary=" + boundary


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "").replace("\n", "")
