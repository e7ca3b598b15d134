"""A small forwarding HTTP proxy on 127.0.0.1 that records what it was asked for.

Enough for apt (GET with absolute URLs, keep-alive, pipelining, conditional and
range requests): it proves that the bootstrap and the chroot honour APT_PROXY.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import BaseRequestHandler
from typing import Self

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade"}
CHUNK = 1 << 16


class LocalServer(ThreadingHTTPServer):
    """An HTTP server on a free port of 127.0.0.1, serving in a thread while `with`-ed."""

    daemon_threads = True

    def __init__(self, handler: Callable[..., BaseRequestHandler]) -> None:
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class RecordingProxy(LocalServer):
    def __init__(self) -> None:
        super().__init__(_Handler)
        self.requests: list[tuple[float, str]] = []

    def record(self, url: str) -> None:
        with self._lock:
            self.requests.append((time.time(), url))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RecordingProxy

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.scheme != "http" or not url.hostname:
            self.send_error(400, "absolute http URL expected")
            return
        self.server.record(self.path)
        upstream = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            target = url.path + (f"?{url.query}" if url.query else "")
            upstream.request("GET", target, headers=headers)
            reply = upstream.getresponse()
            body = reply.read()
            self.send_response(reply.status, reply.reason)
            for k, v in reply.getheaders():
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            if reply.status not in (204, 304):  # those have no body
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for start in range(0, len(body), CHUNK):
                self.wfile.write(body[start:start + CHUNK])
        except OSError as exc:
            self.send_error(502, str(exc))
        finally:
            upstream.close()
