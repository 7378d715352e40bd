"""/v1/images/generations and /v1/images/edits ↔ a Responses turn with the
`image_generation` tool (inventory §8). Pure.

Request: one user message (the prompt, plus the edit's input images as `input_image`
parts), `tools: [{type: "image_generation", model, size, quality, ...}]` and
`tool_choice: {type: "image_generation"}`; the top-level `model` is the Codex model that
hosts the tool (`host_model`, the gateway's choice), the image model goes in the tool.

Validation: models `gpt-image-1`, `gpt-image-1.5`, `gpt-image-1-mini`, `gpt-image-2`
(default `gpt-image-1`); sizes `auto 1024x1024 1024x1536 1536x1024`; quality
`auto low medium high`; background `auto transparent opaque` (transparent needs png or
webp); output_format `png jpeg webp`; output_compression 0-100; moderation `auto low`;
input_fidelity `low high` (edits). Unsupported, 400 `unsupported_parameter`: `n` > 1 (one
tool call makes one image), `response_format: "url"` (the gateway hosts no files),
`stream`/`partial_images`, `style`. `user` is accepted and not forwarded.

Response: every `image_generation_call` output item's base64 `result` → `data[].b64_json`;
a failed response or one without an image is 502 `image_generation_failed`. No `usage`:
the upstream counts the host model's tokens, not the image model's, and the public shape
needs an image/text split the upstream does not give.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pooler.errors import ImageGenerationFailed, UpstreamError
from pooler.translate.common import (
    NormalizedRequest,
    check_choice,
    check_int,
    check_object,
    check_string,
    invalid,
    present,
    reject_unknown,
    unsupported,
)
from pooler.translate.responses_response import collect_response, response_failure

__all__ = [
    "IMAGE_MODELS",
    "ImageInput",
    "collect_images_response",
    "images_edit_request",
    "images_generation_request",
    "images_response",
]

IMAGE_MODELS = ("gpt-image-1", "gpt-image-1.5", "gpt-image-1-mini", "gpt-image-2")
DEFAULT_IMAGE_MODEL = "gpt-image-1"
SIZES = ("auto", "1024x1024", "1024x1536", "1536x1024")
QUALITIES = ("auto", "low", "medium", "high")
BACKGROUNDS = ("auto", "transparent", "opaque")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
MODERATIONS = ("auto", "low")
FIDELITIES = ("low", "high")
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
MAX_PROMPT_CHARS = 32_000

_CHOICES: dict[str, tuple[str, ...]] = {
    "size": SIZES,
    "quality": QUALITIES,
    "background": BACKGROUNDS,
    "output_format": OUTPUT_FORMATS,
    "moderation": MODERATIONS,
}
_GENERATION_FIELDS = frozenset({"prompt", "model", "n", "output_compression", "user", *_CHOICES})
_EDIT_FIELDS = _GENERATION_FIELDS | {"images", "mask", "input_fidelity"}
_NEUTRAL: dict[str, Callable[[Any], bool]] = {
    "response_format": lambda v: v == "b64_json",
    "stream": lambda v: v is False or v == "false",
    "partial_images": lambda v: v in (0, "0"),
}


@dataclass(frozen=True, slots=True)
class ImageInput:
    """An uploaded image (a multipart file part of /v1/images/edits)."""

    data: bytes
    content_type: str
    filename: str | None = None

    def data_url(self) -> str:
        return f"data:{self.content_type};base64,{base64.b64encode(self.data).decode()}"


def images_generation_request(body: dict[str, Any], *, host_model: str) -> NormalizedRequest:
    """Validate an images/generations body (JSON) and build the upstream Responses body."""
    reject_unknown(body, _GENERATION_FIELDS, _NEUTRAL)
    model, tool, prompt = _common(body)
    return _request(host_model, model, prompt, [], tool, body)


def images_edit_request(
    body: dict[str, Any],
    *,
    host_model: str,
    images: Sequence[ImageInput] = (),
    mask: ImageInput | None = None,
) -> NormalizedRequest:
    """An images/edits request: `body` holds the JSON body or the multipart text fields
    (numbers may be digit strings), `images` / `mask` the multipart file parts. A JSON
    body names its images as `images: [{"image_url"} | {"file_id"}]`, its mask as
    `mask: {"image_url"} | {"file_id"}`."""
    reject_unknown(body, _EDIT_FIELDS, _NEUTRAL)
    model, tool, prompt = _common(body)
    parts = [_uploaded(image, "image") for image in images]
    if present(body, "images"):
        listed = body["images"]
        if not isinstance(listed, list):
            raise invalid("images", "'images' must be an array of image references.")
        parts += [_reference(raw, f"images[{index}]") for index, raw in enumerate(listed)]
    if not parts:
        raise invalid("image", "An edit needs at least one input image.")
    if mask is not None:
        tool["input_image_mask"] = {"image_url": _uploaded(mask, "mask")["image_url"]}
    elif present(body, "mask"):
        reference = _reference(body["mask"], "mask")
        tool["input_image_mask"] = {k: v for k, v in reference.items() if k != "type"}
    if present(body, "input_fidelity"):
        tool["input_fidelity"] = check_choice(body["input_fidelity"], "input_fidelity", FIDELITIES)
    return _request(host_model, model, prompt, parts, tool, body)


def _common(body: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """(image model, the tool definition so far, prompt) from the shared fields."""
    prompt = check_string(body.get("prompt"), "prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise invalid("prompt", f"'prompt' is longer than {MAX_PROMPT_CHARS} characters.")
    model = body.get("model")
    model = DEFAULT_IMAGE_MODEL if model is None else check_choice(model, "model", IMAGE_MODELS)
    if present(body, "n") and check_int(body["n"], "n", 1, 10) > 1:
        raise unsupported("n", "Only n=1 is supported: one request makes one image.")
    tool: dict[str, Any] = {"type": "image_generation", "model": model}
    for key, choices in _CHOICES.items():
        if present(body, key):
            tool[key] = check_choice(body[key], key, choices)
    if present(body, "output_compression"):
        tool["output_compression"] = check_int(
            body["output_compression"], "output_compression", 0, 100
        )
    if tool.get("background") == "transparent" and tool.get("output_format") == "jpeg":
        raise invalid("background", "A transparent background needs output_format png or webp.")
    if present(body, "user"):
        check_string(body["user"], "user")
    return model, tool, prompt


def _request(
    host_model: str,
    model: str,
    prompt: str,
    images: list[dict[str, Any]],
    tool: dict[str, Any],
    body: dict[str, Any],
) -> NormalizedRequest:
    content = [{"type": "input_text", "text": prompt}, *images]
    upstream = {
        "model": host_model,
        "input": [{"type": "message", "role": "user", "content": content}],
        "tools": [tool],
        "tool_choice": {"type": "image_generation"},
        "parallel_tool_calls": False,
        "store": False,
        "stream": True,
    }
    dropped = ("user",) if present(body, "user") else ()
    return NormalizedRequest(body=upstream, model=model, client_stream=False, dropped=dropped)


def _uploaded(image: ImageInput, param: str) -> dict[str, Any]:
    if image.content_type not in IMAGE_TYPES:
        raise invalid(param, f"'{param}' must be a PNG, JPEG or WebP image.")
    if not image.data:
        raise invalid(param, f"'{param}' is empty.")
    return {"type": "input_image", "image_url": image.data_url()}


def _reference(raw: Any, param: str) -> dict[str, Any]:
    ref = check_object(raw, param)
    if present(ref, "image_url"):
        return {
            "type": "input_image",
            "image_url": check_string(ref["image_url"], f"{param}.image_url"),
        }
    if present(ref, "file_id"):
        return {"type": "input_image", "file_id": check_string(ref["file_id"], f"{param}.file_id")}
    raise invalid(param, f"'{param}' needs an 'image_url' or a 'file_id'.")


def images_response(response: Mapping[str, Any], *, created: int | None = None) -> dict[str, Any]:
    """The OpenAI images answer for a final Responses object; raises
    `ImageGenerationFailed` (502) when it failed or holds no image."""
    failure = response_failure(response)
    if failure is not None:
        raise failure.to_error(images=True)
    output = response.get("output")
    calls = [
        item
        for item in (output if isinstance(output, list) else [])
        if isinstance(item, Mapping)
        and item.get("type") == "image_generation_call"
        and isinstance(item.get("result"), str)
        and item["result"]
    ]
    if not calls:
        raise ImageGenerationFailed("the upstream produced no image")
    data = [_datum(call) for call in calls]
    at = response.get("created_at")
    out: dict[str, Any] = {
        "created": at if isinstance(at, int) else (created or int(time.time())),
        "data": data,
    }
    for key in ("background", "output_format", "quality", "size"):
        if isinstance(calls[0].get(key), str):
            out[key] = calls[0][key]
    return out


def _datum(call: Mapping[str, Any]) -> dict[str, Any]:
    datum = {"b64_json": call["result"]}
    if isinstance(call.get("revised_prompt"), str):
        datum["revised_prompt"] = call["revised_prompt"]
    return datum


def collect_images_response(
    events: Iterable[Mapping[str, Any]], *, created: int | None = None
) -> dict[str, Any]:
    """A whole upstream stream → the images answer (raises as `images_response`)."""
    try:
        response = collect_response(events)
    except UpstreamError as exc:
        raise ImageGenerationFailed(exc.message) from exc
    return images_response(response, created=created)
