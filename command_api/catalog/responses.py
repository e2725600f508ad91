"""OpenAPI descriptions of the problem responses catalog endpoints give."""

from __future__ import annotations

from typing import Any

from command_api.problems import PROBLEM_JSON

Responses = dict[int | str, dict[str, Any]]


def problem_response(status: int, code: str, detail: str) -> dict[str, Any]:
    return {
        "description": detail,
        "content": {
            PROBLEM_JSON: {
                "example": {
                    "type": "about:blank",
                    "title": {
                        400: "Bad Request",
                        401: "Unauthorized",
                        403: "Forbidden",
                        404: "Not Found",
                        409: "Conflict",
                        413: "Content Too Large",
                        415: "Unsupported Media Type",
                        422: "Unprocessable Content",
                        429: "Too Many Requests",
                        503: "Service Unavailable",
                    }[status],
                    "status": status,
                    "detail": detail,
                    "code": code,
                }
            }
        },
    }


UNAUTHORIZED: Responses = {401: problem_response(401, "unauthorized", "an access token is required")}
NOT_FOUND: Responses = {404: problem_response(404, "not_found", "not found, or not visible to the caller")}
READ_ONLY: Responses = {
    403: problem_response(403, "forbidden", "the project is shared with you for reading only")
}
INVALID: Responses = {422: problem_response(422, "validation_error", "the request is not valid")}
CURSOR: Responses = {400: problem_response(400, "invalid_cursor", "the cursor is not one this API returned")}
TOO_LARGE: Responses = {413: problem_response(413, "payload_too_large", "the request body is too large")}
UPLOAD: Responses = {
    **TOO_LARGE,
    415: problem_response(415, "unsupported_media_type", "upload a PNG, JPEG or WebP image"),
    422: problem_response(422, "invalid_image", "the file is not a decodable PNG image"),
    429: {
        **problem_response(
            429, "too_many_uploads", "the account already has as many uploads in progress as it may"
        ),
        "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    },
    503: problem_response(503, "uploads_busy", "every image worker stayed busy; retry after Retry-After"),
}


def problems(*groups: Responses) -> Responses:
    merged: Responses = {}
    for group in (UNAUTHORIZED, *groups):
        merged.update(group)
    return merged
