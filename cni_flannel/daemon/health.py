"""--healthz-ip/--healthz-port: /healthz, /readyz (as upstream) and /metrics (Prometheus text).

    /healthz   200 "ok" while the process runs its loop
    /readyz    200 once masquerade/forward rules and subnet.env are in place, else 503
    /metrics   prometheus_client's text format of daemon.metrics.METRICS.registry

A ThreadingHTTPServer in a daemon thread: it only reads two flags and renders the registry,
so it never touches node state (the main loop owns that).
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

from .errors import ConfigError

log = logging.getLogger("flanneld")


class Status:
    def __init__(self) -> None:
        self.alive = True
        self.ready = False


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        status: Status = self.server.status
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200 if status.alive else 503, b"ok\n" if status.alive else b"stopping\n")
        elif path == "/readyz":
            self._send(200 if status.ready else 503, b"ok\n" if status.ready else b"not ready\n")
        elif path == "/metrics":
            from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        else:
            self._send(404, b"not found\n")

    def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("healthz: " + fmt, *args)


def serve(ip: str, port: int, status: Status, registry: Any) -> Optional[ThreadingHTTPServer]:
    """Start the endpoint (port 0: off, as upstream); ConfigError when it cannot bind."""
    if not port:
        return None
    host = ip.strip("[]")
    cls = type("Server", (ThreadingHTTPServer,), {"daemon_threads": True,
                                                   "address_family": 10 if ":" in host else 2})
    try:
        server = cls((host, port), _Handler)
    except OSError as exc:
        raise ConfigError(f"cannot serve health checks on {ip}:{port}: {exc.strerror}") from None
    server.status = status  # type: ignore[attr-defined]
    server.registry = registry  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, name="healthz", daemon=True).start()
    log.info("serving /healthz, /readyz and /metrics on %s:%d", ip, port)
    return server
