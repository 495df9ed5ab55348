"""Every error as JSON; the upload size limit (413) enforced on the bytes as they arrive; the cap on
requests in progress and their time budget (503 + Retry-After)."""

from __future__ import annotations

import asyncio
import json

from ..errors import VLFuseError

UNCOUNTED = ("/health",)  # answered from memory: a busy server still says what it serves


def error_body(message: str, kind: str) -> dict:
    return {"error": message, "kind": kind}


class NotServed(VLFuseError):
    """The request needs a model (or an index) this server was not started with."""


class NotFound(VLFuseError):
    """No such thing to serve (an indexed image out of range, gone, outside the indexed folders, not an image)."""


def status_of(exc: VLFuseError) -> int:
    return 404 if isinstance(exc, (NotServed, NotFound)) else 400


async def send_json(send, status: int, body: dict, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """A whole JSON response from ASGI middleware, before (or instead of) the app."""
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413, whether it declares its length or not.

    A declared Content-Length over the limit is refused before anything is read. A chunked body is
    counted as it streams in; once past the limit the app's own answer (it sees a cut-off body) is
    replaced by the 413.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _message(self, size: str) -> dict:
        return error_body(f"upload too large: {size} bytes exceeds the limit of {self.max_bytes} bytes",
                          "UploadTooLarge")

    async def _send_413(self, send, body: dict) -> None:
        await send_json(send, 413, body, ((b"connection", b"close"),))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._send_413(send, self._message(declared.decode()))
        state = {"received": 0, "over": False, "answered": False}

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.request" and not state["over"]:
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    state["over"] = True
                    # end the body here: the app stops reading and answers; that answer is replaced below
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message):
            if state["over"]:
                if not state["answered"]:
                    state["answered"] = True
                    await self._send_413(send, self._message(f"more than {self.max_bytes}"))
                return
            await send(message)

        await self.app(scope, counted_receive, guarded_send)


class InProgress:
    """How many requests are in progress, against the cap; shared by WorkLimit and /health."""

    def __init__(self, limit: int):
        self.limit, self.count = limit, 0


class WorkLimit:
    """ASGI middleware: at most `in_progress.limit` requests in progress (reading, decoding, queued or
    running) and `timeout_s` for each; past either, 503 with Retry-After.

    A request over the cap is refused before its body is read, so a burst costs the server nothing
    but the refusals. A request over its time budget is cancelled: its queued work is dropped (a
    micro-batch skips cancelled requests, a decoding lane cancelled jobs), and the client hears 503
    instead of waiting on.
    """

    def __init__(self, app, in_progress: InProgress, timeout_s: float, retry_after_s: int = 1):
        self.app, self.in_progress, self.timeout_s = app, in_progress, timeout_s
        self.retry_after = (b"retry-after", str(retry_after_s).encode())

    async def _busy(self, send, message: str) -> None:
        await send_json(send, 503, error_body(message, "Busy"), (self.retry_after,))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in UNCOUNTED:
            return await self.app(scope, receive, send)
        load = self.in_progress
        if load.count >= load.limit:
            return await self._busy(send, f"the server is busy ({load.count} requests in progress, its limit): "
                                          "retry shortly")
        load.count += 1
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, tracked_send), self.timeout_s)
        except TimeoutError:
            if not started:  # else the answer was already on its way: nothing more can be said
                await self._busy(send, f"not answered within the server's time budget of {self.timeout_s:g} s: "
                                       "retry shortly")
        finally:
            load.count -= 1
