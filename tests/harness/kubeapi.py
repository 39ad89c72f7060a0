"""A small, honest Kubernetes API server for the tests: Node objects only.

What it serves, in the real server's JSON shapes (checked against kubectl and lightkube by
tests/integration/test_kubeapi.py):

- discovery: /version, /api, /api/v1, /apis (legacy discovery; kubectl falls back to it);
- /api/v1/nodes: list (limit/continue, fieldSelector metadata.name=), watch (resourceVersion,
  allowWatchBookmarks, timeoutSeconds), create;
- /api/v1/nodes/NAME and NAME/status: get, put (409 on a stale resourceVersion), patch (strategic
  merge, JSON merge, JSON patch; the status subresource keeps the spec, the main resource keeps
  the status, as for every resource with a status subresource), delete;
- Status error objects: 404 NotFound, 403 Forbidden (``forbid(verb, resource)``), 409 Conflict /
  AlreadyExists, 410 Expired (a watch from a compacted resourceVersion: an ERROR event), 415,
  422 Invalid, 401 when a bearer token is required and missing.

The objects live in a generic store with resourceVersions and watch history (kubestore.py): no
Kubernetes controller and no flannel logic.  ``stop()``/``start()`` restart it on the same address (watches dropped),
``jump()`` advances the resourceVersion (writes to other objects), ``compact()`` forgets the history
(a restarted apiserver's watch cache: older versions answer 410).

The listening socket can be made inside a network namespace (``netns=``) so that nodes in test
namespaces reach it; it serves from this process.

    with KubeAPI() as api: api.add_node("n1", pod_cidrs=["10.244.1.0/24"]); api.url

Run standalone: python -m tests.harness.kubeapi --listen 127.0.0.1:8080
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Set, Tuple
from urllib.parse import parse_qs, urlsplit

from .kubestore import ApiStatus, NodeStore

VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0", "gitCommit": "0" * 40,
           "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22.0",
           "compiler": "gc", "platform": "linux/amd64"}
NODE_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
PATCH_TYPES = {"application/strategic-merge-patch+json": "strategic",
               "application/merge-patch+json": "merge", "application/json-patch+json": "json"}


class KubeAPI(NodeStore):
    """The store (tests/harness/kubestore.py: add_node, get, patch, delete, jump, compact ...)
    served over HTTP(S)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, netns: Optional[str] = None,
                 bookmark_interval: float = 1.0, token: Optional[str] = None,
                 tls: Optional[Tuple[str, str]] = None) -> None:
        super().__init__(bookmark_interval)
        self.host, self.port, self.netns = host, port, netns
        self.tls = tls  # (certificate, key) files: serve https
        self.token = token  # when set, requests need "Authorization: Bearer <token>"
        self.forbidden: Set[Tuple[str, str]] = set()  # (verb, "nodes" | "nodes/status")
        self.requests: List[Tuple[str, str]] = []  # (method, path?query) of every request
        self._server: Optional[ThreadingHTTPServer] = None
        self._conns: Set[socket.socket] = set()

    # --- lifecycle ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self) -> "KubeAPI":
        sock = self._listen()
        self.port = sock.getsockname()[1]
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        server = ThreadingHTTPServer((self.host, self.port), _make_handler(self), bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, name="kubeapi", daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the listener and every open connection (watches end mid-stream)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        self.end_watches()
        with self._cond:
            for conn in list(self._conns):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def restart(self, jump: int = 0, compact: bool = False) -> None:
        self.stop()
        if jump:
            self.jump(jump)
        if compact:
            self.compact()
        self.start()

    def __enter__(self) -> "KubeAPI":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _listen(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        box: Dict[str, Any] = {}

        def make() -> None:
            try:
                if self.netns:
                    _setns(self.netns)
                s = socket.socket(family, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((self.host, self.port))
                s.listen(128)
                box["sock"] = s
            except Exception as exc:  # re-raised in the caller's thread
                box["error"] = exc

        t = threading.Thread(target=make)  # setns changes only this short-lived thread
        t.start()
        t.join()
        if "error" in box:
            raise box["error"]
        return box["sock"]

    def forbid(self, verb: str, resource: str) -> None:
        self.forbidden.add((verb, resource))

def self_signed(directory: str, ip: str = "127.0.0.1") -> Tuple[str, str]:
    """A self-signed CA certificate for ``ip`` (what a cluster's ca.crt would be), and its key."""
    cert, key = os.path.join(directory, "apiserver.crt"), os.path.join(directory, "apiserver.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=kubernetes",
                    "-addext", f"subjectAltName=IP:{ip}", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def _setns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), f"setns into netns {name}")
    finally:
        os.close(fd)


def _make_handler(api: KubeAPI):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet
            pass

        def setup(self) -> None:
            if isinstance(self.request, ssl.SSLSocket):
                self.request.do_handshake()  # here, in the connection's thread, not in accept()
            super().setup()
            with api._cond:
                api._conns.add(self.connection)

        def finish(self) -> None:
            with api._cond:
                api._conns.discard(self.connection)
            try:
                super().finish()
            except OSError:
                pass

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def do_PATCH(self) -> None:
            self._dispatch("PATCH")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> Any:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n and not self._consumed else b""
            self._consumed = True
            try:
                return json.loads(raw or b"null")
            except ValueError:
                raise ApiStatus(400, "BadRequest", "the request body is not JSON") from None

        def _dispatch(self, method: str) -> None:
            api.requests.append((method, self.path))
            self._consumed = False
            try:
                self._route(method)
            except ApiStatus as st:
                if not self._consumed:  # the connection is kept: read the body we did not use
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._send(st.code, st.body())
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _check(self, verb: str, resource: str, name: str = "") -> None:
            if api.token is not None and self.headers.get("Authorization") != f"Bearer {api.token}":
                raise ApiStatus(401, "Unauthorized", "Unauthorized")
            if (verb, resource) in api.forbidden:
                who = f'nodes "{name}" is forbidden' if name else "nodes is forbidden"
                raise ApiStatus(403, "Forbidden", f'{who}: User "system:serviceaccount:kube-flannel:flannel" '
                                f'cannot {verb} resource "{resource}" in API group "" at the cluster scope', name)

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            q = {k: v[-1] for k, v in parse_qs(url.query).items()}
            parts = [p for p in url.path.split("/") if p]
            if method == "GET" and parts == ["version"]:
                return self._send(200, VERSION)
            if method == "GET" and parts == ["api"]:
                return self._send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{api.host}:{api.port}"}]})
            if method == "GET" and parts == ["apis"]:
                return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
            if method == "GET" and parts == ["api", "v1"]:
                return self._send(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
                                        "resources": [
                                            {"name": "nodes", "singularName": "node", "namespaced": False,
                                             "kind": "Node", "verbs": NODE_VERBS, "shortNames": ["no"]},
                                            {"name": "nodes/status", "singularName": "", "namespaced": False,
                                             "kind": "Node", "verbs": ["get", "patch", "update"]}]})
            if parts[:3] != ["api", "v1", "nodes"] or len(parts) > 5 or (len(parts) == 5 and parts[4] != "status"):
                raise ApiStatus(404, "NotFound", "the server could not find the requested resource")
            name = parts[3] if len(parts) > 3 else ""
            sub = "status" if len(parts) == 5 else ""
            resource = "nodes/status" if sub else "nodes"
            if not name:
                if method == "GET" and q.get("watch") in ("1", "true"):
                    self._check("watch", resource)
                    return self._watch(q)
                if method == "GET":
                    self._check("list", resource)
                    return self._send(200, api.list(int(q.get("limit") or 0), q.get("continue", ""),
                                                    _field_name(q.get("fieldSelector", ""))))
                if method == "POST":
                    self._check("create", resource)
                    return self._send(201, api.create(self._body()))
                raise ApiStatus(405, "MethodNotAllowed", f"{method} is not supported on nodes")
            if method == "GET":
                self._check("get", resource, name)
                return self._send(200, api.get(name))
            if method == "PUT":
                self._check("update", resource, name)
                return self._send(200, api.update(name, self._body(), sub))
            if method == "PATCH":
                self._check("patch", resource, name)
                ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                if ctype not in PATCH_TYPES:
                    body = self._body()
                    raise ApiStatus(415, "UnsupportedMediaType", f"the body of the request was in an unknown "
                                    f"format - accepted media types include: {', '.join(PATCH_TYPES)}")
                body = self._body()
                return self._send(200, api.patch(name, body, PATCH_TYPES[ctype], sub))
            if method == "DELETE" and not sub:
                self._check("delete", resource, name)
                self._body()
                return self._send(200, api.delete(name))
            raise ApiStatus(405, "MethodNotAllowed", f"{method} is not supported on {resource}")

        def _watch(self, q: Dict[str, str]) -> None:
            rv = q.get("resourceVersion", "")
            since = None if rv in ("", "0") else _int_rv(rv)
            timeout = float(q.get("timeoutSeconds") or 1800)
            epoch = api.epoch
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            events = api.watch_events(since, epoch, q.get("allowWatchBookmarks") in ("1", "true"),
                                      time.monotonic() + timeout, _field_name(q.get("fieldSelector", "")))
            try:
                for event in events:
                    data = json.dumps(event).encode() + b"\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                pass
            self.close_connection = True

    return Handler


def _int_rv(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ApiStatus(400, "BadRequest", f"invalid resource version {text!r}") from None


def _field_name(selector: str) -> str:
    if not selector:
        return ""
    key, _, value = selector.partition("=")
    if key != "metadata.name":
        raise ApiStatus(400, "BadRequest", f'"{key}" is not a known field selector: only "metadata.name"')
    return value[1:] if value.startswith("=") else value


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:8080")
    p.add_argument("--nodes", type=int, default=0, help="make this many nodes n0000.. with podCIDRs")
    args = p.parse_args()
    host, _, port = args.listen.rpartition(":")
    api = KubeAPI(host.strip("[]"), int(port))
    for i in range(args.nodes):
        api.add_node(f"n{i:04d}", pod_cidrs=[f"10.{i // 256}.{i % 256}.0/24"])
    api.start()
    print(api.url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
