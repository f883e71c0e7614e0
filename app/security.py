"""Server-side guards of the app, as ASGI middleware around gradio's FastAPI app.

`LocalFilesOnly`: the app serves its own files and never fetches from the internet on a
client's behalf. Gradio would do both on request: `GET /gradio_api/file=<http(s) URL>`
streams a public URL through the server, and a file input whose `path` is an http(s) URL
is downloaded before the handler runs. Both are refused with 403 here. (Local paths are
already confined by gradio to files the app created or the client uploaded.)
"""

from __future__ import annotations

import json
import re

REMOTE_FILE_ROUTE = re.compile(r"/file=\s*https?:", re.IGNORECASE)


def _is_url(value) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith(("http://", "https://"))


def _names_a_url(node) -> bool:
    """True when a JSON request body holds a file payload whose `path` is a URL."""
    if isinstance(node, dict):
        return _is_url(node.get("path")) or any(_names_a_url(v) for v in node.values())
    if isinstance(node, list):
        return any(_names_a_url(v) for v in node)
    return False


class LocalFilesOnly:
    """ASGI middleware refusing remote-file requests (see the module docstring)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if REMOTE_FILE_ROUTE.search(scope.get("path", "")):
            return await _refuse(send, "this app serves its own files only, never a URL")
        headers = dict(scope.get("headers") or [])
        if scope.get("method") != "POST" or b"json" not in headers.get(b"content-type", b""):
            return await self.app(scope, receive, send)
        messages, body, more = [], b"", True
        while more:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            more = message.get("more_body", False) and message["type"] == "http.request"
        try:
            remote = _names_a_url(json.loads(body)) if body else False
        except (ValueError, RecursionError):
            remote = False  # not JSON: gradio answers it as it would
        if remote:
            return await _refuse(send, "file inputs must be uploaded to this app; it does not download URLs")

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)


async def _refuse(send, reason: str) -> None:
    body = f"403 Forbidden: {reason}\n".encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": body})
