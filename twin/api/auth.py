"""``POST /auth/token``: a short-lived bearer token for an API key or a username and password."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from twin.api import deps
from twin.trust.apikeys import issue_token

router = APIRouter(prefix="/auth", tags=["auth"])


class TokenRequest(BaseModel):
    """A key (or give it in ``X-API-Key``), or a username and a password."""

    api_key: str | None = Field(default=None, max_length=200)
    username: str | None = Field(default=None, max_length=64)
    password: str | None = Field(default=None, max_length=1024)


class TokenAnswer(BaseModel):
    """The token to send as ``Authorization: Bearer <access_token>`` until ``expires_at``."""

    access_token: str
    token_type: str = "bearer"
    expires_at: str
    expires_in: int


@router.post("/token", response_model=TokenAnswer, summary="Exchange a key or a password for a "
             "short-lived token")
def token(body: TokenRequest, request: Request) -> TokenAnswer:
    key = body.api_key or request.headers.get(deps.KEY_HEADER)
    origin = f"api:{request.client.host if request.client else 'unknown'}"
    text, until = issue_token(deps.store(request), key=key, username=body.username,
                              password=body.password, origin=origin)
    seconds = max(0, int(until.timestamp() - time.time()))
    return TokenAnswer(access_token=text, expires_at=until.isoformat(), expires_in=seconds)


@router.get("/whoami", summary="Who the credentials sent act as")
def whoami(caller: deps.CallerDep) -> dict:
    return {"username": caller.owner, "role": caller.user.role, "via": caller.via,
            "key_id": caller.key.key_id if caller.key else None}
