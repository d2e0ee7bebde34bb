"""A scriptable HTTP server on 127.0.0.1 for the download tests (no network).

``FakeServer.files`` maps a request path (with its query string) to bytes, or to a
callable returning bytes. ``FakeServer.script`` maps a path to a list of behaviours used by
successive GETs of that path (then plain serving):

- ``("cut", n)``: announce the full length, send ``n`` bytes, drop the connection;
- ``("status", code, retry_after)``: answer with an error status;
- ``("hang", seconds)``: wait before answering (client timeouts);
- ``"corrupt"``: serve the file with one byte flipped;
- ``"norange"``: ignore a Range header (send 200 and the whole file).

Every request is logged as ``(method, path, range header or None)``.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeServer:
    def __init__(self) -> None:
        self.files: dict[str, Any] = {}
        self.script: dict[str, list[Any]] = {}
        self.log: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                server._handle(self, head=True)

            def do_GET(self) -> None:
                server._handle(self, head=False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def gets(self, path: str | None = None) -> list[tuple[str, str, str | None]]:
        with self._lock:
            return [r for r in self.log if r[0] == "GET" and (path is None or r[1] == path)]

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        rng = h.headers.get("Range")
        with self._lock:
            self.log.append(("HEAD" if head else "GET", h.path, rng))
            steps = self.script.get(h.path)
            step = steps.pop(0) if (steps and not head) else "ok"
        body = self.files.get(h.path)
        if callable(body):
            body = body()
        try:
            if body is None:
                self._send(h, 404, b"not found")
                return
            kind = step[0] if isinstance(step, tuple) else step
            if kind == "status":
                extra = {"Retry-After": str(step[2])} if step[2] is not None else {}
                self._send(h, step[1], b"server error", extra)
                return
            if kind == "hang":
                time.sleep(step[1])
            if kind == "corrupt":
                body = bytes([body[0] ^ 0xFF]) + body[1:]
            start = 0
            etag = '"' + hashlib.md5(body).hexdigest() + '"'
            if_range = h.headers.get("If-Range")
            if if_range is not None and if_range != etag:
                rng = None  # the file changed since the partial download: send it whole
            if rng and kind != "norange" and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
                if start >= len(body):
                    self._send(h, 416, b"", {"Content-Range": f"bytes */{len(body)}"})
                    return
            payload = body[start:]
            h.send_response(206 if start else 200)
            h.send_header("Content-Length", str(len(payload)))
            h.send_header("Accept-Ranges", "bytes")
            h.send_header("ETag", etag)
            if start:
                h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            h.end_headers()
            if head:
                return
            if kind == "cut":
                h.wfile.write(payload[: step[1]])
                h.wfile.flush()
                h.close_connection = True
                h.connection.shutdown(socket.SHUT_RDWR)
                return
            h.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError, OSError):
            h.close_connection = True

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, body: bytes, headers=None) -> None:
        h.send_response(code)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
