"""The strict multipart/form-data reader and writer of the `/v1` upload routes."""

from __future__ import annotations

import httpx
import pytest

from pooler.errors import BadRequest, UnsupportedMediaType
from pooler.web.openai_v1.multipart import Part, boundary_of, encode_form, parse_form


def httpx_form() -> tuple[bytes, bytes]:
    request = httpx.Request(
        "POST",
        "http://x/",
        data={"purpose": "user_data"},
        files={"file": ('we"ird.txt', b"a\r\n--not-a-boundary\r\nb", "text/plain")},
    )
    return request.read(), request.headers["content-type"].encode()


def test_reads_what_httpx_writes() -> None:
    body, content_type = httpx_form()
    form = parse_form(body, boundary_of(content_type))
    assert form["purpose"].text() == "user_data" and form["purpose"].filename is None
    assert form["file"].data == b"a\r\n--not-a-boundary\r\nb"
    assert form["file"].content_type == "text/plain"
    assert form["file"].filename in ('we"ird.txt', "we%22ird.txt")


def test_round_trip() -> None:
    parts = [Part("file", b"\x00bytes\r\n", 'a "b".wav', "audio/wav"), Part("prompt", b"p")]
    body, content_type = encode_form(parts)
    form = parse_form(body, boundary_of(content_type))
    assert form["file"].data == b"\x00bytes\r\n" and form["prompt"].data == b"p"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nno end',
        b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--",
        b"--b\r\nbroken header\r\n\r\nx\r\n--b--",
        b"--bgarbage",
    ],
)
def test_malformed_bodies_are_400_naming_the_file_field(body: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_form(body, b"b")
    assert caught.value.param == "file" and caught.value.status == 400


def test_duplicate_fields_and_bad_content_types() -> None:
    twice = b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n' * 2 + b"--b--"
    with pytest.raises(BadRequest) as caught:
        parse_form(twice, b"b")
    assert caught.value.param == "x"
    with pytest.raises(UnsupportedMediaType):
        boundary_of(b"application/json")
    with pytest.raises(BadRequest):
        boundary_of(b"multipart/form-data")
