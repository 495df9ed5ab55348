"""Every error as JSON, and the upload size limit (413) enforced on the bytes as they arrive."""

from __future__ import annotations

import json

from ..errors import VLFuseError


def error_body(message: str, kind: str) -> dict:
    return {"error": message, "kind": kind}


def status_of(exc: VLFuseError) -> int:
    from .service import NotServed

    return 404 if isinstance(exc, NotServed) else 400


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
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": data})

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
