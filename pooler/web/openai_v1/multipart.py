"""A small, strict `multipart/form-data` reader and writer for the `/v1` upload routes.
Pure: bytes in, parts out (the body is already bounded and in memory).

Strict on purpose: one boundary from the Content-Type, CRLF line ends, every part named by
a `Content-Disposition: form-data; name=...` header, a closing delimiter, no two parts with
the same name, a bounded number of parts. Anything else is a 400 naming what is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from pooler.errors import BadRequest, UnsupportedMediaType

MAX_PARTS = 32
MAX_PART_HEAD = 8 * 1024
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


def boundary_of(content_type: bytes | None) -> bytes:
    """The boundary of a `multipart/form-data` Content-Type (415 for another type)."""
    kind, params = _split_header(content_type or b"")
    if kind.lower() != FORM_DATA:
        raise UnsupportedMediaType("the request body must be multipart/form-data")
    boundary = params.get("boundary", "").encode("latin-1")
    if not 0 < len(boundary) <= MAX_BOUNDARY or any(c in boundary for c in b"\r\n"):
        raise BadRequest("the multipart/form-data boundary is missing or invalid")
    return boundary


def parse_parts(body: bytes, boundary: bytes, expected: str = "file") -> list[Part]:
    """The parts in order (a name may repeat, as `image[]` does). `expected` is the field
    a malformed body is reported against."""
    delimiter = b"--" + boundary
    start = body.find(delimiter)  # a preamble before the first delimiter is allowed
    if start < 0:
        raise invalid(expected, f"malformed multipart/form-data body (no '{expected}' part)")
    position = start + len(delimiter)
    parts: list[Part] = []
    while True:
        if body.startswith(b"--", position):
            return parts
        if not body.startswith(b"\r\n", position) or len(parts) >= MAX_PARTS:
            raise invalid(expected, "malformed multipart/form-data body")
        head_end = body.find(b"\r\n\r\n", position + 2, position + 2 + MAX_PART_HEAD)
        if head_end < 0:
            raise invalid(expected, "malformed multipart/form-data part headers")
        end = body.find(b"\r\n" + delimiter, head_end + 4)
        if end < 0:
            raise invalid(expected, "truncated multipart/form-data body (no closing boundary)")
        parts.append(_part(body[position + 2 : head_end], body[head_end + 4 : end], expected))
        position = end + 2 + len(delimiter)


def parse_form(body: bytes, boundary: bytes, expected: str = "file") -> dict[str, Part]:
    """The parts by name, each name at most once. `expected` is the field a malformed body
    is reported against."""
    form: dict[str, Part] = {}
    for part in parse_parts(body, boundary, expected):
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


def _part(head: bytes, data: bytes, expected: str) -> Part:
    headers: dict[bytes, bytes] = {}
    for line in head.split(b"\r\n"):
        key, colon, value = line.partition(b":")
        if not colon:
            raise invalid(expected, "malformed multipart/form-data part header")
        headers[key.strip().lower()] = value.strip()
    kind, params = _split_header(headers.get(b"content-disposition", b""))
    name = params.get("name")
    if kind.lower() != b"form-data" or not name:
        raise invalid(expected, "a multipart part has no 'Content-Disposition: form-data' name")
    content_type = headers.get(b"content-type")
    return Part(
        name,
        data,
        params.get("filename"),
        content_type.decode("latin-1") if content_type is not None else None,
    )


def _split_header(value: bytes) -> tuple[bytes, dict[str, str]]:
    """`type; key=value; key="quoted value"` → (type, params); keys lowercased."""
    kind, _, rest = value.partition(b";")
    params: dict[str, str] = {}
    text = rest.decode("utf-8", errors="replace")
    i = 0
    while i < len(text):
        eq = text.find("=", i)
        if eq < 0:
            break
        key = text[i:eq].strip(" \t;").lower()
        i = eq + 1
        if text[i : i + 1] == '"':
            value_chars: list[str] = []
            i += 1
            while i < len(text) and text[i] != '"':
                if text[i] == "\\" and i + 1 < len(text):
                    i += 1
                value_chars.append(text[i])
                i += 1
            params[key] = "".join(value_chars)
            i += 1
        else:
            semi = text.find(";", i)
            semi = len(text) if semi < 0 else semi
            params[key] = text[i:semi].strip()
            i = semi
        i = text.find(";", i)
        if i < 0:
            break
        i += 1
    return kind.strip(), params


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "").replace("\n", "")
