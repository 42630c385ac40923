"""fal's protocol as data: hosts, URL layout, header names, statuses.

Both sides read it: FalBackend's flows build requests from it, and `llava-bridge
serve` declares its routes with it. Nothing here does IO or knows the client.

fal has four hosts: queue (submit, status, result, cancel), run (synchronous run
and `/stream`), rest (storage token, upload initiation) and cdn (uploads, files).
Under one `base_url` (`LLAVA_FAL_BASE_URL`, `llava-bridge serve`) they live at:

- queue: ``{base}`` -- ``POST /{app}``; ``GET /{app}/requests/{id}`` (result),
  ``.../status``, ``.../status/stream``; ``PUT .../cancel``
- run: ``{base}/run`` -- ``POST /{app}``, ``POST /{app}/stream``
- rest: ``{base}/rest`` -- ``POST /storage/auth/token``, ``POST /storage/upload/initiate``
- cdn: ``{base}/cdn`` -- ``POST /files/upload``, ``GET /files/{id}``
"""

from __future__ import annotations

import re
from typing import Final, Literal

__all__ = [
    "ALREADY_COMPLETED",
    "APP_TEMPLATE",
    "CANCELLATION_REQUESTED",
    "CANCEL_OK",
    "CDN_PREFIX",
    "COMPLETED",
    "DEFAULT_CDN_URL",
    "DEFAULT_QUEUE_URL",
    "DEFAULT_REST_URL",
    "DEFAULT_RUN_URL",
    "ERROR_TYPE_HEADER",
    "FILES_PATH",
    "FILES_UPLOAD_PATH",
    "FILE_NAME_HEADER",
    "IN_PROGRESS",
    "IN_QUEUE",
    "NOT_FOUND",
    "PROPOSED_ID_HEADER",
    "QUEUE_PRIORITY_HEADER",
    "REQUEST_ID_HEADER",
    "REQUEST_TIMEOUT_HEADER",
    "REST_PREFIX",
    "RUNNER_HINT_HEADER",
    "RUN_PREFIX",
    "STORAGE_TOKEN_PATH",
    "STREAM_SUFFIX",
    "UPLOAD_INITIATE_PATH",
    "CancelOutcome",
    "JobState",
    "cancel_path",
    "endpoint_id_problem",
    "request_id_problem",
    "response_path",
    "status_path",
    "status_stream_path",
]

# -- hosts -------------------------------------------------------------------------------

DEFAULT_QUEUE_URL: Final = "https://queue.fal.run"
DEFAULT_RUN_URL: Final = "https://fal.run"
DEFAULT_REST_URL: Final = "https://rest.fal.ai"
DEFAULT_CDN_URL: Final = "https://v3.fal.media"

RUN_PREFIX: Final = "/run"
"""Under one `base_url`: the synchronous run and `/stream` (fal's `fal.run` host)."""
REST_PREFIX: Final = "/rest"
"""Under one `base_url`: storage token and upload initiation (fal's `rest.fal.ai` host)."""
CDN_PREFIX: Final = "/cdn"
"""Under one `base_url`: uploads and stored files (fal's `v3.fal.media` host)."""

# -- paths (relative to their host) --------------------------------------------------------

APP_TEMPLATE: Final = "{owner}/{alias}"
"""The `app` of the path builders as a route template (the server's path parameters)."""
STREAM_SUFFIX: Final = "/stream"
"""Run host: `POST {run}/{app}/stream` answers with server-sent events."""
STORAGE_TOKEN_PATH: Final = "/storage/auth/token"
UPLOAD_INITIATE_PATH: Final = "/storage/upload/initiate"
FILES_PATH: Final = "/files"
"""CDN host: `GET {cdn}/files/{id}` serves an upload."""
FILES_UPLOAD_PATH: Final = FILES_PATH + "/upload"


def response_path(app: str, request_id: str) -> str:
    """Queue host: `GET` the result of `request_id` (`app` is `owner/alias`)."""
    return f"/{app}/requests/{request_id}"


def status_path(app: str, request_id: str) -> str:
    """Queue host: `GET` the status (`?logs=1` for the cumulative log lines)."""
    return response_path(app, request_id) + "/status"


def status_stream_path(app: str, request_id: str) -> str:
    """Queue host: `GET` status events (server-sent; logs are new lines only)."""
    return status_path(app, request_id) + "/stream"


def cancel_path(app: str, request_id: str) -> str:
    """Queue host: `PUT` to cancel."""
    return response_path(app, request_id) + "/cancel"


# -- headers -----------------------------------------------------------------------------

REQUEST_ID_HEADER: Final = "X-Fal-Request-Id"
"""On answers about a job: its request id (also on errors after the job exists)."""
REQUEST_TIMEOUT_HEADER: Final = "X-Fal-Request-Timeout"
"""On submit: seconds the request may wait to start."""
QUEUE_PRIORITY_HEADER: Final = "X-Fal-Queue-Priority"
RUNNER_HINT_HEADER: Final = "X-Fal-Runner-Hint"
ERROR_TYPE_HEADER: Final = "X-Fal-Error-Type"
"""On error answers: the error's type (`request_timeout`, `client_cancelled`...)."""
FILE_NAME_HEADER: Final = "X-Fal-File-Name"
"""On CDN uploads: the file's name."""
PROPOSED_ID_HEADER: Final = "X-Llava-Request-Id"
"""Ours, not fal's: a request id the client proposes. `llava-bridge serve` adopts it and
dedups re-sent submits; once a queue host has adopted one, FalBackend retries that host's
submits like reads. fal ignores it."""

# -- statuses ----------------------------------------------------------------------------

JobState = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
IN_QUEUE: Final = "IN_QUEUE"
IN_PROGRESS: Final = "IN_PROGRESS"
COMPLETED: Final = "COMPLETED"

CancelOutcome = Literal["OK", "CANCELLATION_REQUESTED", "ALREADY_COMPLETED", "NOT_FOUND"]
CANCEL_OK: Final = "OK"
"""The job was still queued and will not run."""
CANCELLATION_REQUESTED: Final = "CANCELLATION_REQUESTED"
ALREADY_COMPLETED: Final = "ALREADY_COMPLETED"
NOT_FOUND: Final = "NOT_FOUND"


# -- ids -------------------------------------------------------------------------------

MAX_REQUEST_ID: Final = 200
_ID_PART = re.compile(r"[A-Za-z0-9_.-]+")
ID_CHARACTERS: Final = "ASCII letters, digits, '-', '_' and '.'"


def endpoint_id_problem(endpoint: str) -> str | None:
    """Why `endpoint` is not a usable endpoint id (`owner/alias[/path]`), or None when it is.

    Every `/`-separated part is made of `ID_CHARACTERS` and is not `.` or `..`, and the
    owner starts with a letter or digit: an id never leaves its place in a URL path, and
    carries no control character (a trailing newline included).
    """
    parts = endpoint.split("/")
    if len(parts) < 2:
        return "it needs an owner and an alias, 'owner/alias'"
    for part in parts:
        if not _ID_PART.fullmatch(part):
            return f"each part between '/' must be {ID_CHARACTERS}, not {part!r}"
        if part in (".", ".."):
            return f"a part cannot be {part!r}"
    if not parts[0][0].isalnum():
        return "the owner must start with a letter or digit"
    return None


def request_id_problem(request_id: str) -> str | None:
    """Why `request_id` is not a usable request id, or None when it is.

    1 to `MAX_REQUEST_ID` of `ID_CHARACTERS`, and not `.` or `..` (so it is one path
    segment that no URL normalisation removes); no `/`, no control characters.
    """
    if not 1 <= len(request_id) <= MAX_REQUEST_ID or not _ID_PART.fullmatch(request_id):
        return f"it must be 1 to {MAX_REQUEST_ID} of {ID_CHARACTERS}"
    if request_id in (".", ".."):
        return f"it cannot be {request_id!r}"
    return None
