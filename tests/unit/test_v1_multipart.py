"""The `/v1` upload forms: what Quart's parser (fed by the gateway's pulled body) makes of
what clients and the gateway itself write, and the checks the routes hold parts to."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from pooler.errors import BadRequest, UnsupportedMediaType
from pooler.web.openai_v1.multipart import (
    Part,
    check_form_type,
    encode_form,
    form_parts,
    parts_by_name,
)
from pooler.web.quart_http import GatewayRequest, in_memory_stream


def httpx_form() -> tuple[bytes, bytes]:
    request = httpx.Request(
        "POST",
        "http://x/",
        data={"purpose": "user_data"},
        files={"file": ('we"ird.txt', b"a\r\n--not-a-boundary\r\nb", "text/plain")},
    )
    return request.read(), request.headers["content-type"].encode()


async def parsed(
    body: bytes, content_type: bytes, piece: int = 7, whole: bool = True
) -> dict[str, Part]:
    """`body` parsed as the gateway parses a request's form (read whole first), arriving
    in `piece`-byte chunks; `whole=False`: parsed chunk by chunk, as Quart would."""
    from quart.formparser import FormDataParser
    from werkzeug.http import parse_options_header

    chunks = [body[i : i + piece] for i in range(0, len(body), piece)] or [b""]
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    body_reader = GatewayRequest.body_class(None, None)
    body_reader.receive = receive
    if whole:
        await body_reader.read()
    mimetype, options = parse_options_header(content_type.decode())
    parser = FormDataParser(max_form_parts=32, stream_factory=in_memory_stream)
    fields, files = await parser.parse(body_reader, mimetype, len(body), options)
    return parts_by_name(form_parts(fields, files))


async def test_reads_what_httpx_writes() -> None:
    body, content_type = httpx_form()
    check_form_type(content_type)
    form = await parsed(body, content_type)
    assert form["purpose"].text() == "user_data" and form["purpose"].filename is None
    assert form["file"].data == b"a\r\n--not-a-boundary\r\nb"
    assert form["file"].content_type == "text/plain"
    assert form["file"].filename in ('we"ird.txt', "we%22ird.txt")


async def test_what_the_gateway_writes_reads_back() -> None:
    parts = [Part("file", b"\x00bytes\r\n", 'a "b".wav', "audio/wav"), Part("prompt", b"p")]
    body, content_type = encode_form(parts)
    form = await parsed(body, content_type, piece=3)
    assert form["file"].data == b"\x00bytes\r\n" and form["prompt"].data == b"p"
    assert form["file"].filename in ('a "b".wav', "a %22b%22.wav")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nno end',
        b"--b\r\nbroken header\r\n\r\nx\r\n--b--",
        b"--bgarbage",
    ],
)
async def test_a_malformed_body_has_no_parts(body: bytes) -> None:
    """The route then names the part it misses (tests/integration: 400 naming `file`)."""
    assert "file" not in await parsed(body, b"multipart/form-data; boundary=b")


async def test_duplicate_fields_and_bad_content_types() -> None:
    twice = b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n' * 2 + b"--b--\r\n"
    with pytest.raises(BadRequest) as caught:
        await parsed(twice, b"multipart/form-data; boundary=b")
    assert caught.value.param == "x"
    with pytest.raises(UnsupportedMediaType):
        check_form_type(b"application/json")
    with pytest.raises(UnsupportedMediaType):
        check_form_type(None)
    with pytest.raises(BadRequest):
        check_form_type(b"multipart/form-data")
    with pytest.raises(BadRequest):
        check_form_type(b"multipart/form-data; boundary=" + b"x" * 71)
    check_form_type(b'Multipart/Form-Data; boundary="quoted"')


async def test_parts_survive_every_chunking_of_the_body() -> None:
    """Where the body's chunks end does not change a part (Quart's chunk-by-chunk parse
    gave the last part a stray CR when a chunk ended inside the closing delimiter)."""
    data = bytes(range(256)) * 4
    body, content_type = encode_form([Part("purpose", b"user_data"), Part("file", data, "a")])
    chunked = [await parsed(body, content_type, piece, whole=False) for piece in range(1, 80)]
    broken = [form for form in chunked if form["file"].data != data]
    assert broken, "werkzeug's decoder was fixed: PulledBody.read's note can go"
    for piece in range(1, 80):
        form = await parsed(body, content_type, piece)
        assert form["file"].data == data and form["purpose"].data == b"user_data", piece
