"""fal's storage flow: token, upload, initiate + PUT, and serving files.

Under `REST_PREFIX`: `POST /storage/auth/token` and `POST /storage/upload/initiate`.
Under `CDN_PREFIX`: `POST /files/upload` (raw bytes; `Content-Type` and
`X-Fal-File-Name` headers), `PUT /uploads/{id}` (the one-time URL from initiate)
and `GET /files/{id}` (what `access_url` / `file_url` point at).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from llava_bridge.backends.fal.protocol import (
    CDN_PREFIX,
    FILES_PATH,
    FILES_UPLOAD_PATH,
    REST_PREFIX,
    STORAGE_TOKEN_PATH,
    UPLOAD_INITIATE_PATH,
)
from llava_bridge.server.context import Context, base_url

__all__ = ["router"]

router = APIRouter(tags=["storage"])

_RAW_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
_MAX_NAME = 255


class TokenAnswer(BaseModel):
    token: str
    token_type: str
    base_url: str
    expires_at: str


class InitiateRequest(BaseModel):
    file_name: str | None = Field(default=None, max_length=_MAX_NAME)
    content_type: str | None = Field(default=None, max_length=_MAX_NAME)


class InitiateAnswer(BaseModel):
    upload_url: str
    file_url: str


class UploadAnswer(BaseModel):
    access_url: str


def _file_url(request: Request, file_id: str) -> str:
    return f"{base_url(request)}{CDN_PREFIX}{FILES_PATH}/{file_id}"


def _content_type(value: str | None) -> str:
    text = (value or "").split(";", 1)[0].strip().lower()
    return text[:_MAX_NAME] if text and "/" in text else "application/octet-stream"


@router.post(REST_PREFIX + STORAGE_TOKEN_PATH, response_model=TokenAnswer, summary="A token for CDN uploads")
async def auth_token(request: Request, context: Context, storage_type: str | None = None) -> TokenAnswer:
    token, expires = context.authenticator.issue_token()
    return TokenAnswer(
        token=token,
        token_type="Bearer",
        base_url=f"{base_url(request)}{CDN_PREFIX}",
        expires_at=datetime.fromtimestamp(expires, UTC).isoformat(),
    )


@router.post(
    REST_PREFIX + UPLOAD_INITIATE_PATH,
    response_model=InitiateAnswer,
    summary="Reserve a one-time upload URL",
)
async def upload_initiate(
    request: Request,
    context: Context,
    details: Annotated[InitiateRequest | None, Body()] = None,
    storage_type: str | None = None,
) -> InitiateAnswer:
    details = details or InitiateRequest()
    now = time.time()
    expires = now + context.settings.file_retention_s
    file_id = await context.store.create_pending(
        content_type=_content_type(details.content_type),
        file_name=details.file_name,
        now=now,
        expires_at=expires,
    )
    return InitiateAnswer(
        upload_url=f"{base_url(request)}{CDN_PREFIX}/uploads/{file_id}", file_url=_file_url(request, file_id)
    )


@router.put(
    f"{CDN_PREFIX}/uploads/{{file_id}}",
    openapi_extra=_RAW_BODY,
    responses={404: {"description": "No such pending upload."}},
    summary="Upload the bytes to a URL from /storage/upload/initiate",
)
async def upload_put(
    file_id: str, request: Request, context: Context, content_type: Annotated[str | None, Header()] = None
) -> JSONResponse:
    data = await request.body()
    ctype = _content_type(content_type) if content_type else None
    filled = await context.store.fill_pending(file_id, data, ctype)
    if not filled:
        raise HTTPException(
            404, detail="No pending upload with this id (already uploaded, or never initiated)."
        )
    return JSONResponse({})


@router.post(
    CDN_PREFIX + FILES_UPLOAD_PATH,
    response_model=UploadAnswer,
    openapi_extra=_RAW_BODY,
    responses={422: {"description": "Empty upload."}},
    summary="Upload bytes; the answer's access_url serves them",
)
async def upload(
    request: Request,
    context: Context,
    content_type: Annotated[str | None, Header()] = None,
    x_fal_file_name: Annotated[str | None, Header()] = None,
) -> UploadAnswer:
    data = await request.body()
    if not data:
        raise HTTPException(422, detail="The upload is empty; send the file's bytes as the request body.")
    now = time.time()
    expires = now + context.settings.file_retention_s
    name = x_fal_file_name[:_MAX_NAME] if x_fal_file_name else None
    file_id = await context.store.put_file(
        data, content_type=_content_type(content_type), file_name=name, now=now, expires_at=expires
    )
    return UploadAnswer(access_url=_file_url(request, file_id))


@router.get(
    f"{CDN_PREFIX}{FILES_PATH}/{{file_id}}",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        404: {"description": "Unknown or expired file."},
    },
    summary="A stored file",
)
async def get_file(file_id: str, context: Context) -> Response:
    stored = await context.store.get_file(file_id, now=time.time())
    if stored is None:
        raise HTTPException(404, detail="No such file (unknown id, or it expired).")
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"}
    if not stored.content_type.startswith("image/"):
        headers["Content-Disposition"] = "attachment"
    return Response(stored.data, media_type=stored.content_type, headers=headers)
