"""/v1/images ↔ a Responses turn with the image_generation tool (pooler/translate/images)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types import ImagesResponse

from pooler.errors import BadRequest, ImageGenerationFailed, UnsupportedParameter
from pooler.translate import (
    ImageInput,
    collect_images_response,
    images_edit_request,
    images_generation_request,
    images_response,
)

HOST = "gpt-5.5"
PNG = b"\x89PNG\r\n\x1a\nfake"


def generation(**fields: Any) -> dict[str, Any]:
    return {"prompt": "a red fox", **fields}


def image_call(result: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "ig_1",
        "type": "image_generation_call",
        "status": "completed",
        "result": result,
        **extra,
    }


def final_response(output: list[dict[str, Any]], status: str = "completed") -> dict[str, Any]:
    usage = {"input_tokens": 30, "output_tokens": 200, "total_tokens": 230}
    return {
        "id": "resp_i",
        "created_at": 1_700_000_000,
        "status": status,
        "output": output,
        "usage": usage,
    }


def test_generation_request_uses_the_image_generation_tool() -> None:
    request = images_generation_request(
        generation(
            model="gpt-image-1.5",
            size="1024x1536",
            quality="high",
            background="transparent",
            output_format="webp",
            output_compression=80,
            moderation="low",
            n=1,
            response_format="b64_json",
            user="end-user",
        ),
        host_model=HOST,
    )
    assert request.model == "gpt-image-1.5" and not request.client_stream
    assert request.dropped == ("user",)
    assert request.body == {
        "model": HOST,
        "input": [
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "a red fox"}],
            }
        ],
        "tools": [
            {
                "type": "image_generation",
                "model": "gpt-image-1.5",
                "size": "1024x1536",
                "quality": "high",
                "background": "transparent",
                "output_format": "webp",
                "moderation": "low",
                "output_compression": 80,
            }
        ],
        "tool_choice": {"type": "image_generation"},
        "parallel_tool_calls": False,
        "store": False,
        "stream": True,
    }


def test_default_model() -> None:
    tool = images_generation_request(generation(), host_model=HOST).body["tools"][0]
    assert tool == {"type": "image_generation", "model": "gpt-image-1"}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"response_format": "url"}, "response_format"),
        ({"stream": True}, "stream"),
        ({"partial_images": 2}, "partial_images"),
        ({"style": "vivid"}, "style"),
    ],
)
def test_unsupported_image_parameters(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedParameter) as caught:
        images_generation_request(generation(**fields), host_model=HOST)
    assert (caught.value.code, caught.value.param) == ("unsupported_parameter", param)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"prompt": ""}, "prompt"),
        ({"model": "dall-e-3"}, "model"),
        ({"size": "512x512"}, "size"),
        ({"quality": "hd"}, "quality"),
        ({"background": "green"}, "background"),
        ({"output_format": "gif"}, "output_format"),
        ({"output_compression": 101}, "output_compression"),
        ({"n": 0}, "n"),
        ({"n": 11}, "n"),
        ({"background": "transparent", "output_format": "jpeg"}, "background"),
    ],
)
def test_invalid_image_parameters(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        images_generation_request(generation(**fields), host_model=HOST)
    assert not isinstance(caught.value, UnsupportedParameter)
    assert (caught.value.status, caught.value.param) == (400, param)


def test_edit_with_multipart_uploads_and_mask() -> None:
    fields = {"prompt": "add a hat", "n": "1", "output_compression": "50", "input_fidelity": "high"}
    request = images_edit_request(
        fields,
        host_model=HOST,
        images=[ImageInput(PNG, "image/png", "fox.png")],
        mask=ImageInput(PNG, "image/png"),
    )
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    content = request.body["input"][0]["content"]
    assert content == [
        {"type": "input_text", "text": "add a hat"},
        {"type": "input_image", "image_url": data_url},
    ]
    tool = request.body["tools"][0]
    assert tool["input_image_mask"] == {"image_url": data_url}
    assert (tool["output_compression"], tool["input_fidelity"]) == (50, "high")


def test_edit_with_json_references() -> None:
    body = {
        "prompt": "p",
        "images": [{"image_url": "https://x/a.png"}, {"file_id": "file_1"}],
        "mask": {"file_id": "file_m"},
    }
    request = images_edit_request(body, host_model=HOST)
    assert request.body["input"][0]["content"][1:] == [
        {"type": "input_image", "image_url": "https://x/a.png"},
        {"type": "input_image", "file_id": "file_1"},
    ]
    assert request.body["tools"][0]["input_image_mask"] == {"file_id": "file_m"}


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({}, "image"),
        ({"images": [ImageInput(b"GIF89a", "image/gif")]}, "image"),
        ({"images": [ImageInput(PNG, "image/png")], "mask": ImageInput(b"", "image/png")}, "mask"),
    ],
)
def test_edit_needs_valid_images(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        images_edit_request({"prompt": "p"}, host_model=HOST, **kwargs)
    assert caught.value.param == param


def test_result_becomes_b64_json_and_validates() -> None:
    response = final_response(
        [
            {"id": "rs_1", "type": "reasoning", "summary": []},
            image_call(
                "QUJD", revised_prompt="a red fox, detailed", size="1024x1024", output_format="png"
            ),
        ]
    )
    answer = images_response(response)
    assert answer == {
        "created": 1_700_000_000,
        "data": [{"b64_json": "QUJD", "revised_prompt": "a red fox, detailed"}],
        "output_format": "png",
        "size": "1024x1024",
    }
    ImagesResponse.model_validate(answer)


@given(st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=4))
def test_every_image_is_returned_in_order(images: list[bytes]) -> None:
    encoded = [base64.b64encode(image).decode() for image in images]
    answer = images_response(final_response([image_call(b64) for b64 in encoded]))
    assert [base64.b64decode(d["b64_json"]) for d in answer["data"]] == images


def test_no_image_or_failure_is_image_generation_failed() -> None:
    text = {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "no"}],
    }
    for response in (
        final_response([text]),
        final_response([image_call("")]),
        {"status": "failed", "error": {"code": "server_error", "message": "x"}},
    ):
        with pytest.raises(ImageGenerationFailed) as caught:
            images_response(response)
        assert (caught.value.status, caught.value.code) == (502, "image_generation_failed")


def test_collect_from_events_with_codex_empty_output() -> None:
    item = image_call("QUJD")
    events = [
        {"type": "response.created", "response": {"id": "resp_i", "status": "in_progress"}},
        {"type": "response.output_item.added", "output_index": 0, "item": {**item, "result": None}},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": {**final_response([]), "output": []}},
    ]
    assert collect_images_response(events)["data"] == [{"b64_json": "QUJD"}]
    with pytest.raises(ImageGenerationFailed):
        collect_images_response(events[:3])
