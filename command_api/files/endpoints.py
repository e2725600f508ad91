"""GET /files/{key}?expires=&signature=: the objects of the local storage, for the signed
links the API hands out. The signature is the credential (no token): it binds the key and the
expiry. Only the local storage has this route; S3 links go to S3 itself."""

from __future__ import annotations

import re
import time
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from command_api.catalog.responses import NOT_FOUND, problem_response
from command_api.deps import StorageDep
from command_api.inputs import check_text
from command_api.problems import Forbidden, NotFound
from infra.storage import LocalStorage, check_key

router = APIRouter(prefix="/files", tags=["files"])

_EXPIRES = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


class InvalidSignature(Forbidden):
    code = "invalid_signature"

    def __init__(self) -> None:
        super().__init__("the link is invalid or has expired")


@router.get(
    "/{key:path}",
    summary="An object of the local storage, by signed link",
    response_class=FileResponse,
    responses={
        200: {"description": "the object's bytes, with its stored content type"},
        403: problem_response(403, "invalid_signature", "the link is invalid or has expired"),
        **NOT_FOUND,
    },
)
def get_file(
    key: str,
    storage: StorageDep,
    expires: Annotated[str | None, Query(max_length=20, description="Unix time the link expires")] = None,
    signature: Annotated[
        str | None, Query(max_length=128, description="HMAC-SHA256 of key and expiry")
    ] = None,
) -> FileResponse:
    if not isinstance(storage, LocalStorage):
        raise NotFound("file")
    try:
        key = check_key(check_text(key))
    except ValueError:
        raise NotFound("file") from None
    # Only the shapes the API hands out reach the HMAC check (ASCII digits, 64 hex digits): any
    # other text is simply a link this API did not sign.
    if (
        expires is None
        or signature is None
        or not (_EXPIRES.fullmatch(expires) and _SIGNATURE.fullmatch(signature))
    ):
        raise InvalidSignature()
    expiry = int(expires)
    if not storage.verify(key, expiry, signature):
        raise InvalidSignature()
    path = storage.root / key
    if not path.is_file():
        raise NotFound("file")
    remaining = max(0, expiry - int(time.time()))
    return FileResponse(
        path,
        media_type=storage.content_type(key),
        headers={"Cache-Control": f"private, max-age={remaining}", "X-Content-Type-Options": "nosniff"},
    )
