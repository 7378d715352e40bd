"""What a `POST /v1/files` form must hold, checked before any upstream call.

The body itself was already bounded by `max_body_bytes` as it was read. Everything here
ends up upstream (the file name in the create call, the content type as a header of the
blob upload) and in the Pool's file record, so it is refused here, as a 400 naming the
field, rather than after the upstream has created a file that could then not be recorded
(each retry of such a request would leave another file behind upstream).
Pure: a parsed form in, an `Upload` out.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final

from pooler.errors import BadRequest, BodyTooLarge, UnsupportedParameter
from pooler.web.openai_v1.multipart import Part

PURPOSES: Final = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
MAX_FILENAME: Final = 255
MAX_CONTENT_TYPE: Final = 200
MAX_FILE_BYTES: Final = 512 * 1024 * 1024  # the backend's own limit (protocol §1.9)
# Bidirectional overrides and isolates: they make a name display as another one.
_BIDI_CONTROLS: Final = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@dataclass(frozen=True, slots=True)
class Upload:
    filename: str
    content_type: str
    data: bytes
    purpose: str


def upload_of(form: dict[str, Part]) -> Upload:
    """The `file` and `purpose` fields, checked; any other field is refused."""
    for name in form:
        if name not in ("file", "purpose"):
            raise UnsupportedParameter(f"'{name}' is not supported here", param=name)
    part = form.get("file")
    if part is None or part.filename is None:
        raise BadRequest("'file' is required (a file part with a filename)", param="file")
    filename = check_filename(part.filename)
    if len(part.data) > MAX_FILE_BYTES:  # only when max_body_bytes is set above it
        raise BodyTooLarge(f"a file may hold at most {MAX_FILE_BYTES} bytes", param="file")
    if "purpose" not in form:
        raise BadRequest("'purpose' is required", param="purpose")
    purpose = check_purpose(form["purpose"].text())
    content_type = part.content_type or ""
    if not (
        0 < len(content_type) <= MAX_CONTENT_TYPE
        and content_type.isascii()
        and content_type.isprintable()
    ):
        content_type = "application/octet-stream"  # it becomes a header of the upload
    return Upload(filename, content_type, part.data, purpose)


def check_filename(sent: str) -> str:
    """The file name without any directory part; 1 to 255 characters, none of them a
    control character (NUL, C0, DEL, C1), a surrogate or a bidirectional override."""
    filename = re.split(r"[/\\]", sent)[-1].strip()
    if not 0 < len(filename) <= MAX_FILENAME:
        raise BadRequest(f"the file name must be 1 to {MAX_FILENAME} characters", param="file")
    if not filename.isprintable() and any(_refused(c) for c in filename):
        raise BadRequest("the file name may not contain control characters", param="file")
    return filename


def check_purpose(purpose: str) -> str:
    if purpose not in PURPOSES:
        raise BadRequest(f"'purpose' must be one of {', '.join(sorted(PURPOSES))}", param="purpose")
    return purpose


def _refused(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs") or char in _BIDI_CONTROLS
