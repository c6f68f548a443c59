"""Who is asking: the caller of a request, from an API key, a token, or nobody (the public).

Every route that reads or does something takes ``caller: CallerDep`` (``Depends(caller)``) and hands
``caller.user`` and ``caller.origin`` to :mod:`twin.trust`, which decides what they may see
and audits it; the routes never decide access themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from twin.api.problems import Problem, language
from twin.trust.apikeys import ApiKey, key_user, token_user
from twin.trust.permissions import ANONYMOUS, User

#: Where a key may be given: a header (preferred) or the query (for clients that cannot set
#: headers, such as a GDAL connection string).
KEY_HEADER = "X-API-Key"
KEY_QUERY = "api_key"


@dataclass(frozen=True)
class Caller:
    """The user a request acts as (ANONYMOUS: the public), by which means, from where."""

    user: User
    key: ApiKey | None
    via: str  # "key", "token" or "anonymous"
    origin: str  # for the audit log: api:<client address>
    lang: str  # zh-CN or en, from Accept-Language

    @property
    def owner(self) -> str:
        """The name the access log and the audit log give the caller (``public`` if nobody)."""
        return self.user.username if not self.user.is_anonymous else "public"


def store(request: Request):
    """Return the app's store (opened once by :func:`twin.api.app.create_app`)."""
    return request.app.state.store


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def caller(request: Request) -> Caller:
    """Resolve the caller of *request* and take one request from their rate allowance.

    A key in ``X-API-Key`` (or ``?api_key=``) or a token in ``Authorization: Bearer`` acts as
    its user; no credentials act as the public. Raises :class:`Problem` ``key-refused`` for a
    credential that opens nothing (it never falls back to the public), and ``rate-limited``
    (429, with ``Retry-After``) past the allowance.
    """
    cached = request.scope.get("twin.caller")
    if cached is not None:  # several dependencies of one request ask
        return cached
    the_store = store(request)
    settings = request.app.state.settings
    key_text = (request.headers.get(KEY_HEADER) or request.query_params.get(KEY_QUERY)
                or request.scope.get("twin.body_key"))  # Open311 posts it in the form body
    bearer = request.headers.get("authorization", "")
    origin = f"api:{_client(request)}"
    lang = language(request.headers.get("accept-language"))
    if key_text:
        user, key = key_user(the_store, key_text)
        via = "key"
    elif bearer:
        scheme, _, token = bearer.partition(" ")
        if scheme.lower() != "bearer":
            raise Problem("key-refused", headers={"WWW-Authenticate": 'Bearer realm="gridtwin"'})
        user, key = token_user(the_store, token.strip())
        via = "token"
    else:
        user, key, via = ANONYMOUS, None, "anonymous"
    who = Caller(user, key, via, origin, lang)
    request.scope["twin.owner"] = who.owner
    if key is not None:
        bucket, rate = f"key:{key.key_id}", key.rate_per_min
    elif via == "token":
        bucket, rate = f"user:{user.username}", settings.rate_per_min
    else:
        bucket, rate = f"ip:{_client(request)}", settings.anonymous_rate_per_min
    wait = request.app.state.limiter.take(bucket, rate)
    if wait > 0:
        retry = max(1, math.ceil(wait))
        raise Problem("rate-limited", headers={"Retry-After": str(retry)}, rate=rate,
                      retry_after=retry)
    request.scope["twin.caller"] = who
    return who


#: A route's parameter ``caller: CallerDep``: the resolved, rate-limited :class:`Caller`.
CallerDep = Annotated[Caller, Depends(caller)]
