"""``OPTIONS`` and ``405 Allow`` that name every method of a path.

Starlette matches routes one by one, so ``OPTIONS /api/v1/structures`` (GET and POST routes)
answers 405 naming only GET.  This middleware answers ``OPTIONS`` itself, 204 with ``Allow``
listing every method of the path in the OpenAPI document, and puts the same list into a 405's
``Allow``.  Other paths (the page, static files, unknown paths) pass through.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def method_table(app) -> list[tuple[re.Pattern, list[str]]]:
    """(path pattern, methods with OPTIONS added) of every path of ``app``'s OpenAPI
    document (the API's paths, whatever router holds them)."""
    table = []
    for path, ops in app.openapi().get("paths", {}).items():
        parts = re.split(r"(\{[^}/]+\})", path)
        regex = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        methods = {m.upper() for m in ops if m in _METHODS} | {"OPTIONS"}
        table.append((re.compile(f"^{regex}$"), sorted(methods)))
    return table


class AllowedMethods:
    """ASGI middleware: see the module doc."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self.table: list[tuple[re.Pattern, list[str]]] | None = None

    def allowed(self, scope: Scope) -> list[str]:
        """Methods of ``scope``'s path, [] when the API has no such path."""
        if self.table is None:
            self.table = method_table(scope["app"])
        path = scope.get("path", "")
        return next((methods for regex, methods in self.table if regex.match(path)), [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        methods = self.allowed(scope)
        if not methods:
            await self.app(scope, receive, send)
            return
        allow = ", ".join(methods).encode()
        if scope["method"] == "OPTIONS":
            headers = [(b"allow", allow), (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_allow(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message = dict(message, headers=[*headers, (b"allow", allow)])
            await send(message)

        await self.app(scope, receive, send_allow)
