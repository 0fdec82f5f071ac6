"""The JSON API under ``/api/v1/``: the queue, actions on it, and the explain reference.

Every answer is JSON, errors too (``{"error": "..."}``): 400 for a query value that
cannot be used (saying which and why), 404 for a message that is not in the
queue (a malformed id included: no id of that shape can be there), 401 from
server.py's token check.  Acting on a message logs one line naming the client.
"""

from __future__ import annotations

import contextlib
import logging
import re

from aiohttp import web

from mailwright.codes import CodeError, lookup, to_dict
from mailwright.codes.language import LANGUAGES
from mailwright.errors import StorageError
from mailwright.http.observed import ReplyHistory
from mailwright.http.shapes import page_shape, read_detail
from mailwright.logfmt import kv
from mailwright.queue.base import QueueStore, RecipientState
from mailwright.syntax import is_domain_name

log = logging.getLogger("mailwright.http")

#: A queue id (queue/sqlite/ids.py): 16 characters of Crockford's base32, lower case.
QUEUE_ID = re.compile(r"[0-9a-hjkmnp-tv-z]{16}")
DEFAULT_PAGE = 100
MAX_PAGE = 1000
STATES = tuple(state.value for state in RecipientState)


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class BadQuery(Exception):
    """A query value the API cannot use; its text is the 400's message."""


class QueueApi:
    def __init__(self, store: QueueStore, replies: ReplyHistory) -> None:
        self._store = store
        self._replies = replies

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/api/v1/queue", self._list)
        router.add_post("/api/v1/queue/retry", self._retry_domain)
        router.add_get("/api/v1/queue/{id}", self._show)
        router.add_delete("/api/v1/queue/{id}", self._delete)
        router.add_post("/api/v1/queue/{id}/{action:retry|hold|release}", self._act)
        router.add_get("/api/v1/explain/{code}", self._explain)
        router.add_get("/api/v1/replies", self._replies_last_hour)

    # ------------------------------------------------------------ reading

    async def _list(self, request: web.Request) -> web.Response:
        try:
            state = _choice(request, "state", STATES)
            domain = _domain(request)
            limit = _limit(request)
            cursor = request.query.get("cursor") or None
            if cursor is not None and not QUEUE_ID.fullmatch(cursor):
                raise BadQuery("cursor: not a cursor this API gave")
        except BadQuery as exc:
            return json_error(400, str(exc))
        # One more than asked: whether there is a next page, without a second query.
        page = await self._store.page(state=state, domain=domain, limit=limit + 1, after=cursor)
        more = len(page) > limit
        page = page[:limit]
        return web.json_response(page_shape(page, page[-1].queue_id if more else None))

    async def _show(self, request: web.Request) -> web.Response:
        queue_id = request.match_info["id"]
        with_body = request.query.get("body", "0")
        if with_body not in ("0", "1"):
            return json_error(400, "body: 0 or 1")
        found = None
        if QUEUE_ID.fullmatch(queue_id):
            with contextlib.suppress(StorageError):  # removed between get and read: gone
                found = await read_detail(self._store, queue_id, body=with_body == "1")
        if found is None:
            return _not_found(queue_id)
        return web.json_response(found)

    async def _explain(self, request: web.Request) -> web.Response:
        lang = request.query.get("lang", "en")
        if lang not in LANGUAGES:
            return json_error(400, f"lang: one of {', '.join(LANGUAGES)}")
        try:
            explanation = lookup(request.match_info["code"])
        except CodeError as exc:
            return json_error(404, exc.message(lang))
        return web.json_response(to_dict(explanation, lang))

    async def _replies_last_hour(self, request: web.Request) -> web.Response:
        seconds, by_code = self._replies.last_hour()
        return web.json_response({"seconds": int(seconds), "replies": by_code})

    # ------------------------------------------------------------ acting

    async def _act(self, request: web.Request) -> web.Response:
        queue_id, action = request.match_info["id"], request.match_info["action"]
        if not QUEUE_ID.fullmatch(queue_id):
            return _not_found(queue_id)
        count: int | None
        if action == "retry":
            count = await self._store.retry_now(queue_id)
            if count == 0 and await self._store.get(queue_id) is None:
                count = None
        elif action == "hold":
            count = await self._store.hold(queue_id)
        else:
            count = await self._store.release(queue_id)
        if count is None:
            return _not_found(queue_id)
        log.info(kv(event=f"queue-{action}", id=queue_id, recipients=count, by=_who(request)))
        return web.json_response({"id": queue_id, "action": action, "recipients": count})

    async def _delete(self, request: web.Request) -> web.Response:
        queue_id = request.match_info["id"]
        if not QUEUE_ID.fullmatch(queue_id) or not await self._store.remove(queue_id):
            return _not_found(queue_id)
        # No bounce: the operator removed it on purpose.  The log says who.
        log.info(kv(event="queue-delete", id=queue_id, by=_who(request)))
        return web.json_response({"id": queue_id, "action": "delete"})

    async def _retry_domain(self, request: web.Request) -> web.Response:
        try:
            domain = _domain(request)
        except BadQuery as exc:
            return json_error(400, str(exc))
        if domain is None:
            return json_error(400, "domain: required (retry of all deferred mail to it)")
        count = await self._store.retry_domain(domain)
        log.info(kv(event="queue-retry", domain=domain, recipients=count, by=_who(request)))
        return web.json_response({"domain": domain, "action": "retry", "recipients": count})


def _who(request: web.Request) -> str:
    return f"http:{request.remote or '?'}"


def _not_found(queue_id: str) -> web.Response:
    return json_error(404, f"no message {queue_id[:40]!r} in the queue")


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query.get(name) or None
    if value is not None and value not in allowed:
        raise BadQuery(f"{name}: one of {', '.join(allowed)}")
    return value


def _domain(request: web.Request) -> str | None:
    value = request.query.get("domain") or None
    if value is not None and not is_domain_name(value.lower().rstrip(".")):
        raise BadQuery("domain: not a domain name")
    return value.lower().rstrip(".") if value is not None else None


def _limit(request: web.Request) -> int:
    text = request.query.get("limit")
    if text is None:
        return DEFAULT_PAGE
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise BadQuery(f"limit: a whole number from 1 to {MAX_PAGE}")
    return int(text)
