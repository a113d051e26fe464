"""The page and its JSON API (Starlette, served by uvicorn): one annotator per server.

    GET  /             the page (static/annotate.html; its JS and CSS under /static/)
    GET  /api/state    progress and the prompt to rank now (null when none is left)
    POST /api/answer   {id, shown_order, order, ties, all_bad}: positions on the page, best first
    POST /api/skip     {id}: not now (it comes back after a restart, or with /api/revisit)
    POST /api/revisit  {}: show the skipped prompts again

Every answer is checked here, whatever the page sent (`Store.answer`): a stale page or a
repeated submit for a prompt already answered is refused (409) and writes nothing. Bodies are
JSON only (so a cross-site form cannot post: a JSON body needs a CORS preflight this server
never grants) and at most MAX_BODY bytes. On loopback the Host header must be a loopback name,
which stops DNS rebinding. Responses are untrusted text: the page renders them with
`textContent` only, and the Content-Security-Policy allows no inline script at all.
"""

from __future__ import annotations

import json
import time
from importlib import resources

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rankalign.annotation.store import Store

MAX_BODY = 64 * 1024  # an answer is a few hundred bytes; anything larger is refused unread
STATIC = {
    "annotate.html": "text/html; charset=utf-8",
    "annotate.js": "text/javascript; charset=utf-8",
    "annotate.css": "text/css; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


class TooLarge(Exception):
    pass


async def read_json(request: Request):
    """The request's JSON body; ValueError when it is not JSON, TooLarge past MAX_BODY (read
    in chunks, so an oversized body is never held whole)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ValueError("the body must be application/json")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise TooLarge
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"the body is not JSON: {e}") from None


class Annotation:
    """One annotator's session over a Store: what is shown, skipped and when it was shown."""

    def __init__(self, store: Store):
        self.store = store
        self.skipped: set[str] = set()
        self.shown_at: dict[str, float] = {}  # id -> when this process first showed it

    def state(self, **extra) -> dict:
        store = self.store
        row_id = store.next_id(self.skipped)
        item = None
        if row_id is not None:
            row = store.rows[row_id]
            shown = store.shown(row_id)
            self.shown_at.setdefault(row_id, time.monotonic())
            item = {
                "id": row_id,
                "prompt": row["prompt"],
                "responses": [row["responses"][i] for i in shown],
                "shown_order": shown,
            }
        return {
            "annotator": store.annotator,
            "progress": store.progress(self.skipped),
            "item": item,
            **extra,
        }

    async def page(self, request: Request) -> Response:
        return self._static("annotate.html")

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC or name.endswith(".html"):
            return Response("not found", status_code=404, headers=HEADERS)
        return self._static(name)

    def _static(self, name: str) -> Response:
        text = (resources.files("rankalign.annotation") / "static" / name).read_text("utf-8")
        return Response(text, media_type=STATIC[name], headers=HEADERS)

    async def get_state(self, request: Request) -> Response:
        return self._json(self.state())

    async def answer(self, request: Request) -> Response:
        try:
            payload = await read_json(request)
            row_id = payload.get("id") if isinstance(payload, dict) else None
            started = self.shown_at.get(row_id if isinstance(row_id, str) else None)
            started = time.monotonic() if started is None else started
            recorded = self.store.answer(payload, time.monotonic() - started)
        except TooLarge:
            return self._json({"error": f"body over {MAX_BODY} bytes"}, 413)
        except ValueError as e:
            return self._json({"error": str(e)}, 400)
        if not recorded:  # a repeated or stale submit: refused, nothing written
            return self._json(self.state(error="already answered"), 409)
        self.skipped.discard(row_id)
        return self._json(self.state(recorded=row_id))

    async def skip(self, request: Request) -> Response:
        try:
            payload = await read_json(request)
            if not isinstance(payload, dict) or set(payload) != {"id"}:
                raise ValueError("a skip is {id}")
            if not isinstance(payload["id"], str) or payload["id"] not in self.store.rows:
                raise ValueError("id must name a prompt of the input")
        except TooLarge:
            return self._json({"error": f"body over {MAX_BODY} bytes"}, 413)
        except ValueError as e:
            return self._json({"error": str(e)}, 400)
        self.skipped.add(payload["id"])
        return self._json(self.state())

    async def revisit(self, request: Request) -> Response:
        try:
            if await read_json(request) != {}:
                raise ValueError("a revisit is {}")
        except TooLarge:
            return self._json({"error": f"body over {MAX_BODY} bytes"}, 413)
        except ValueError as e:
            return self._json({"error": str(e)}, 400)
        self.skipped.clear()
        return self._json(self.state())

    @staticmethod
    def _json(obj: dict, status: int = 200) -> Response:
        return JSONResponse(obj, status_code=status, headers=HEADERS)


def make_app(store: Store, *, loopback: bool = True) -> Starlette:
    """The Starlette app of one annotator's session over `store`."""
    session = Annotation(store)
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_NAMES)]
    return Starlette(
        routes=[
            Route("/", session.page),
            Route("/static/{name}", session.asset),
            Route("/api/state", session.get_state),
            Route("/api/answer", session.answer, methods=["POST"]),
            Route("/api/skip", session.skip, methods=["POST"]),
            Route("/api/revisit", session.revisit, methods=["POST"]),
        ],
        middleware=middleware if loopback else [],
    )
