"""`/v1/files`: OpenAI file uploads onto a Pool account, and the Pool's file metadata.

`POST /v1/files` (multipart `file`, `purpose`) runs the Codex backend's three steps on one
leased account (protocol §1.9): create (`POST /files` → `file_id`, `upload_url`), PUT the
bytes to the upload URL, finalize (`POST /files/{id}/uploaded`). Only a failed create fails
over to another account: after it the file belongs to its account. The file is then pinned
to that account (the hard continuity key relay.py uses), so `/responses` and chat requests
naming it land there, and its metadata (never its bytes) is stored for `GET`.

The bytes are held in memory for the request only (bounded by `max_body_bytes`, and by the
`files` bulkhead in number), never stored or logged. Content download and deletion are not
offered: `GET /v1/files/{id}/content` and `DELETE /v1/files/{id}` answer the `/v1`
unsupported-endpoint 404.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import parse_qs
from uuid import UUID

import orjson
import trio

from pooler.actors import messages as m
from pooler.db import DatabaseError
from pooler.errors import (
    BadRequest,
    NotFound,
    ServiceUnavailable,
    UnsupportedEndpoint,
    UpstreamError,
)
from pooler.protocol.file_ids import check_file_id, is_file_id
from pooler.routing.circuit import CONTROL
from pooler.store import files as store
from pooler.store.common import Conn
from pooler.upstream.http1 import UpstreamPool
from pooler.upstream.upload_url import UnsafeUploadUrl, parse_upload_url, resolve_upload_address
from pooler.web.asgi import Scope, header, send_json
from pooler.web.attempts import Attempt, run_attempts
from pooler.web.continuity import file_key
from pooler.web.leasing import FILE_PIN_TTL_S, LeaseAttempts, account_headers, pin
from pooler.web.openai_v1.auth import authenticate_v1
from pooler.web.openai_v1.backend_call import CallFailed, LeasedCall
from pooler.web.openai_v1.file_form import Upload, check_purpose, upload_of
from pooler.web.openai_v1.multipart import check_form_type, form_parts, parts_by_name
from pooler.web.quart_http import PUSHED, GatewayRequest
from pooler.web.request_body import read_form
from pooler.web.request_record import AnsweredRequest, RequestRecord, start_record

if TYPE_CHECKING:
    from quart.wrappers import Response

    from pooler.web.gateway import Gateway

V1_FILES_PATH: Final = "/v1/files"
V1_FILES_PREFIX: Final = V1_FILES_PATH + "/"
MAX_ANSWER: Final = 64 * 1024  # the backend's small JSON answers
FINALIZE_TRIES: Final = 5
FINALIZE_RETRY_S: Final = 0.5
CLEANUP_S: Final = 2.0
JSON: Final = (b"content-type", b"application/json")
T = TypeVar("T")


def file_object(row: store.FileRecord) -> dict[str, Any]:
    """The OpenAI `FileObject` of a stored file."""
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": int(row.created_at.timestamp()),
        "filename": row.filename,
        "purpose": row.purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


class V1FilesRoute:
    """`POST`/`GET /v1/files`, `GET /v1/files/{id}` (and the unsupported content/delete)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def __call__(self, request: GatewayRequest, file_path: str = "") -> Response:
        """`file_path`: what follows `/v1/files/` (read again from the path as sent)."""
        gw, scope, send = self.gw, request.scope, request.send
        record = start_record(gw, scope, "v1_files", "http", scope["method"])
        extra = [(b"x-request-id", record.request_id.encode())]
        async with AnsweredRequest(record, send, extra, gw.log_request, request.body):
            key, pool = authenticate_v1(gw, scope)
            record.pool_id, record.key_prefix = pool.pool_id, key.prefix
            payload = await self._serve(request, record, pool.pool_id)
            record.finish(200, "completed")
            record.mark_first_byte()
            record.response_bytes += await send_json(send, 200, payload, extra)
        return PUSHED

    async def _serve(
        self, request: GatewayRequest, record: RequestRecord, pool_id: str
    ) -> dict[str, Any]:
        scope = request.scope
        path: str = scope["path"]
        method: str = scope["method"]
        if path == V1_FILES_PATH:
            if method == "POST":
                return await self._create(request, record, pool_id)
            return await self._list(scope, pool_id)
        file_id, _, action = path.removeprefix(V1_FILES_PREFIX).partition("/")
        if action or method != "GET":
            raise UnsupportedEndpoint()  # content, delete, or no file path at all
        check_file_id(file_id)
        row = await self._db(partial(store.get_file, pool_id=UUID(pool_id), file_id=file_id))
        if row is None:
            raise NotFound(f"No such File object: {file_id}", code="not_found", param="id")
        return file_object(row)

    async def _list(self, scope: Scope, pool_id: str) -> dict[str, Any]:
        raw_query: bytes = scope.get("query_string", b"")
        query = {k: v[-1] for k, v in parse_qs(raw_query.decode("utf-8", "replace")).items()}
        try:
            limit = int(query.get("limit", store.MAX_LIST))
        except ValueError:
            limit = 0
        if not 1 <= limit <= store.MAX_LIST:
            raise BadRequest(f"'limit' must be 1 to {store.MAX_LIST}", param="limit")
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise BadRequest("'order' must be asc or desc", param="order")
        purpose, after = query.get("purpose"), query.get("after")
        if purpose is not None:
            check_purpose(purpose)
        if after is not None:
            check_file_id(after, "after")
        rows, more = await self._db(
            partial(
                store.list_files,
                pool_id=UUID(pool_id),
                limit=limit,
                newest_first=order == "desc",
                purpose=purpose,
                after=after,
            )
        )
        data = [file_object(row) for row in rows]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": more,
        }

    async def _create(
        self, request: GatewayRequest, record: RequestRecord, pool_id: str
    ) -> dict[str, Any]:
        gw = self.gw
        check_form_type(header(request.scope, b"content-type"))
        created: list[tuple[str, str]] = []  # (file id, account id)
        async with gw.admission.admit("files"):  # bounds the bodies held in memory
            upload = upload_of(parts_by_name(form_parts(*await read_form(gw, request))))
            attempts = LeaseAttempts(pool_id, (), None, route_class=CONTROL)
            exchange = partial(self._exchange, upload, created)
            budget = gw.pool_policy(pool_id).retry_budget
            await run_attempts(gw, attempts, record, exchange, budget=budget)
        [(file_id, account_id)] = created
        pin(
            gw.pool_mailbox,
            pool_id,
            (file_key(file_id),),
            account_id,
            hard=True,
            ttl=FILE_PIN_TTL_S,
        )
        row = await self._db(
            partial(
                store.insert_file,
                file_id=file_id,
                pool_id=UUID(pool_id),
                account_id=UUID(account_id),
                filename=upload.filename,
                size=len(upload.data),
                purpose=upload.purpose,
            )
        )
        return file_object(row)

    async def _exchange(
        self, upload: Upload, created: list[tuple[str, str]], attempt: Attempt
    ) -> None:
        """Create, upload, finalize on the attempt's lease: a failed create fails over,
        anything after it is the client's error (the file belongs to that account)."""
        gw = self.gw
        lease = attempt.lease
        call = LeasedCall(gw, attempt)
        asked = {"file_name": upload.filename, "file_size": len(upload.data)}
        try:
            answer = await call.exchange(
                gw.backend_upstream,
                "POST",
                "/files",
                account_headers(lease, (JSON,)),
                orjson.dumps({**asked, "use_case": "codex"}),
                max_answer=MAX_ANSWER,
            )
        except CallFailed as failure:
            if failure.failover:
                return attempt.failed(failure.outcome, failure.code)
            raise failure.client_error() from None
        file_id, upload_url = self._created(call, answer.body)
        try:
            await self._put(call, upload_url, upload)
            await self._finalize(call, lease, file_id)
        except CallFailed as failure:
            raise failure.client_error() from None
        call.succeeded(200)
        created.append((file_id, lease.account_id))

    def _created(self, call: LeasedCall, body: bytes) -> tuple[str, str]:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        file_id = parsed.get("file_id") if isinstance(parsed, dict) else None
        url = parsed.get("upload_url") if isinstance(parsed, dict) else None
        if not is_file_id(file_id):
            raise call.fail(m.SERVER_ERROR, "invalid_upstream_response").client_error()
        if not isinstance(url, str):
            raise call.fail(m.SERVER_ERROR, "invalid_upstream_response").client_error()
        return file_id, url

    async def _put(self, call: LeasedCall, url: str, upload: Upload) -> None:
        """The bytes to the backend's upload URL (a signed storage URL: no credentials),
        sent only to a public address or the upstream's own origin (upload_url.py)."""
        settings = self.gw.settings
        try:
            checked = parse_upload_url(url, self.gw.config.upstream_base_url)
            with trio.fail_after(settings.upstream_connect_timeout_s):
                address = await resolve_upload_address(checked)
        except (UnsafeUploadUrl, trio.TooSlowError) as exc:
            call.fail(m.SERVER_ERROR, "invalid_upload_url")
            raise UpstreamError(
                "the upstream gave an unusable upload URL", code="invalid_upload_url"
            ) from exc
        blob = UpstreamPool(checked.origin, max_connections=1, max_idle=0, connect_to=address)
        target = checked.target
        content_type = upload.content_type.encode("latin-1", "replace")
        headers = [(b"x-ms-blob-type", b"BlockBlob"), (b"content-type", content_type)]
        try:
            await call.exchange(
                blob,
                "PUT",
                target,
                headers,
                upload.data,
                max_answer=MAX_ANSWER,
            )
        finally:
            with trio.move_on_after(CLEANUP_S, shield=True):
                await blob.aclose()

    async def _finalize(self, call: LeasedCall, lease: m.Lease, file_id: str) -> None:
        """`POST /files/{id}/uploaded` until it says `success` (or `error`)."""
        for _ in range(FINALIZE_TRIES):
            answer = await call.exchange(
                self.gw.backend_upstream,
                "POST",
                f"/files/{file_id}/uploaded",
                account_headers(lease, (JSON,)),
                b"{}",
                max_answer=MAX_ANSWER,
            )
            try:
                status = orjson.loads(answer.body).get("status")
            except (orjson.JSONDecodeError, AttributeError):
                status = None
            if status == "success":
                return
            if status != "retry":
                break
            await trio.sleep(FINALIZE_RETRY_S)
        raise UpstreamError(
            "the upstream could not process the file", code="file_processing_failed"
        )

    async def _db(self, fn: Callable[[Conn], T]) -> T:
        try:
            return await self.gw.db.run(fn)
        except DatabaseError as exc:
            raise ServiceUnavailable("the file records are not reachable; retry") from exc
