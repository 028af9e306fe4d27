"""Input limits of the service and the ASGI middleware that caps request bodies.

The body cap is enforced on the byte stream itself: a request whose ``Content-Length`` is too
large is refused before anything is read, and one that sends more than the cap (chunked, or a
lying ``Content-Length``) is cut off when the cap is crossed; both get 413.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True)
class Limits:
    """What one request may ask for or send."""

    max_body_bytes: int = 10 * 1024 * 1024  # whole request body
    max_atoms: int = 500  # sites in one structure
    max_records_per_post: int = 1000  # structures in one POST or uploaded file
    max_limit: int = 500  # page size of GET /structures
    default_limit: int = 50

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_atoms",
            "max_records_per_post",
            "max_limit",
            "default_limit",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Limits.{name} must be at least 1, got {getattr(self, name)}")
        if self.default_limit > self.max_limit:
            raise ValueError(
                f"Limits.default_limit ({self.default_limit}) exceeds max_limit ({self.max_limit})"
            )


def _too_large(cap: int) -> str:
    return f"request body exceeds the limit of {cap} bytes"


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413 ``{"detail": ...}``."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.max_bytes
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_error(send, 400, "Content-Length is not an integer")
                    return
                if declared > cap:
                    await _send_error(send, 413, _too_large(cap))
                    return
        state = {"seen": 0, "over": False, "started": False}

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > cap:
                    state["over"] = True
                    raise HTTPException(413, _too_large(cap))
            return message

        async def guarded_send(message: Message) -> None:
            # whatever the app made of the exception (a handler may have caught it), the
            # client gets 413 when the body crossed the cap
            if state["over"]:
                if message["type"] == "http.response.start" and not state["started"]:
                    state["started"] = True
                    await _send_error(send, 413, _too_large(cap))
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


async def _send_error(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
