"""A real etcd (Debian's etcd-server, /usr/bin/etcd) for tests, on 127.0.0.1 or in a test netns.

:class:`EtcdServer` runs one single-member cluster on free loopback ports with a temporary data
directory; ``stop()``/``start()`` restart it keeping the data, ``close()`` stops it and removes
everything.  Optional TLS (a throwaway CA made with the openssl tool, client certificates
required) and optional auth (a root user plus one ordinary user with read/write on the keys).

The helpers talk to etcd's JSON gateway with the standard library only, so tests check the
store independently of the client library the daemon uses.  Every wait has a deadline and
raises when it passes.
"""
from __future__ import annotations

import base64
import contextlib
import ctypes
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple


ETCD = "/usr/bin/etcd"
HOST = "127.0.0.1"
ROOT_PASSWORD = "root-secret"
USER, PASSWORD = "flannel", "flannel-secret"


class EtcdError(RuntimeError):
    pass


_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def in_netns(name: Optional[str]) -> Iterator[None]:
    """Run the block with *this thread* in network namespace ``name`` (sockets made there stay
    there); the thread's own namespace is restored afterwards.  None: no change."""
    if not name:
        yield
        return
    with open("/proc/thread-self/ns/net") as own, open(f"/run/netns/{name}") as target:
        if _libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name} failed")
        try:
            yield
        finally:
            if _libc.setns(own.fileno(), _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back failed")


class _HTTPInNetns(http.client.HTTPConnection):
    netns: Optional[str] = None

    def connect(self) -> None:
        with in_netns(self.netns):
            super().connect()


class _HTTPSInNetns(http.client.HTTPSConnection):
    netns: Optional[str] = None

    def connect(self) -> None:
        with in_netns(self.netns):
            super().connect()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def prefix_end(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class CertSet:
    """A throwaway CA with a server certificate for ``host`` and a client certificate.

    The server certificate also allows clientAuth: etcd 3.4's JSON gateway dials its own gRPC
    port with it, and --client-cert-auth checks that connection too."""

    def __init__(self, directory: Path, host: str = HOST, name: str = "ca") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self.dir / f"{name}.crt"
        self.ca_key = self.dir / f"{name}.key"
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-days", "2", "-subj", f"/CN=cni-flannel test {name}",
                 "-keyout", self.ca_key, "-out", self.ca)
        self.server_cert, self.server_key = self._issue(f"{name}-server", f"IP:{host}", "serverAuth,clientAuth")
        # No CommonName: with auth on, etcd 3.4's gateway refuses requests from a client
        # certificate that has one (its CN cannot be passed on as the user name).
        self.client_cert, self.client_key = self._issue(f"{name}-client", "DNS:flanneld", "clientAuth",
                                                        subject="/O=cni-flannel test client")

    def _issue(self, stem: str, san: str, usage: str, subject: str = "") -> Tuple[Path, Path]:
        key, csr, crt = (self.dir / f"{stem}.{ext}" for ext in ("key", "csr", "crt"))
        ext = self.dir / f"{stem}.ext"
        ext.write_text(f"subjectAltName={san}\nextendedKeyUsage={usage}\n")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-subj", subject or f"/CN={stem}", "-keyout", key, "-out", csr)
        _openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-CAcreateserial",
                 "-days", "2", "-extfile", ext, "-out", crt)
        return crt, key


def _openssl(*args: Any) -> None:
    proc = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise EtcdError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


class EtcdServer:
    """One etcd member on 127.0.0.1; use as a context manager or call close()."""

    def __init__(self, tls: bool = False, auth: bool = False, workdir: Optional[Path] = None,
                 netns: Optional[str] = None, host: str = HOST) -> None:
        """``netns``/``host``: run inside that test namespace, listening on ``host`` (an address
        the namespace has, e.g. a lab node's underlay_ip) on etcd's usual ports."""
        self.netns, self.host = netns, host
        self.base = Path(tempfile.mkdtemp(prefix="cnif-etcd-", dir=workdir))
        self.data_dir = self.base / "data"
        self.log_path = self.base / "etcd.log"
        self.client_port, self.peer_port = (2379, 2380) if netns else (free_port(), free_port())
        self.certs = CertSet(self.base / "pki", host) if tls else None
        self.scheme = "https" if tls else "http"
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0
        self._token: Optional[str] = None
        self.auth = False  # on once enable_auth() ran: the helpers then log in as root
        try:
            self.start()
            if auth:
                self.enable_auth()
        except BaseException:
            self.close()
            raise

    # --- life cycle ---------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return self._url(self.scheme, self.client_port)

    def _url(self, scheme: str, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{port}"

    def start(self, timeout: float = 20.0) -> None:
        if self.proc is not None:
            raise EtcdError("etcd is already running")
        peer = self._url("http", self.peer_port)
        argv = [ETCD, "--name", "test", "--data-dir", str(self.data_dir),
                "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"test={peer}", "--initial-cluster-state", "new",
                "--heartbeat-interval", "20", "--election-timeout", "200"]
        if self.certs:
            argv += ["--cert-file", str(self.certs.server_cert), "--key-file", str(self.certs.server_key),
                     "--trusted-ca-file", str(self.certs.ca), "--client-cert-auth"]
        log = open(self.log_path, "ab")
        try:
            if self.netns:
                argv = ["nsenter", f"--net=/run/netns/{self.netns}", "--", *argv]
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         cwd=str(self.base), start_new_session=True)
        finally:
            log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                code, self.proc = self.proc.returncode, None
                raise EtcdError(f"etcd exited {code} at start:\n{self.log_tail()}")
            try:
                if self._raw("GET", "/health", timeout=1.0).get("health") == "true":
                    return
            except (OSError, EtcdError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise EtcdError(f"etcd not healthy within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop etcd (data kept); SIGKILL when it does not exit in time."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.send_signal(sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        self._token = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> EtcdServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no etcd log)"

    # --- options for the code under test --------------------------------------------------

    def options(self, **extra: Any) -> Dict[str, Any]:
        """Keyword arguments for cni_flannel.daemon.etcd.EtcdOptions matching this server."""
        opts: Dict[str, Any] = {"endpoints": [self.endpoint]}
        if self.certs:
            opts.update(cafile=str(self.certs.ca), certfile=str(self.certs.client_cert),
                        keyfile=str(self.certs.client_key))
        if self.auth:
            opts.update(username=USER, password=PASSWORD)
        opts.update(extra)
        return opts

    # --- the gateway, with the standard library ---------------------------------------------

    def _context(self) -> Optional[ssl.SSLContext]:
        if not self.certs:
            return None
        ctx = ssl.create_default_context(cafile=str(self.certs.ca))
        ctx.load_cert_chain(str(self.certs.client_cert), str(self.certs.client_key))
        return ctx

    def _raw(self, method: str, path: str, body: Optional[Dict[str, Any]] = None,
             timeout: float = 10.0, token: Optional[str] = None) -> Dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = token
        if self.certs:
            conn: http.client.HTTPConnection = _HTTPSInNetns(self.host, self.client_port, timeout=timeout,
                                                             context=self._context())
        else:
            conn = _HTTPInNetns(self.host, self.client_port, timeout=timeout)
        conn.netns = self.netns
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            text = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise EtcdError(f"{path}: HTTP {resp.status}: {text.decode(errors='replace')}")
        return json.loads(text or b"{}")

    def call(self, path: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """POST /v3<path> as root (when auth is on)."""
        if self.auth and self._token is None:
            self._token = self._raw("POST", "/v3/auth/authenticate",
                                    {"name": "root", "password": ROOT_PASSWORD})["token"]
        return self._raw("POST", "/v3" + path, body, token=self._token)

    def enable_auth(self) -> None:
        for path, body in (("/auth/user/add", {"name": "root", "password": ROOT_PASSWORD}),
                           ("/auth/user/grant", {"user": "root", "role": "root"}),
                           ("/auth/role/add", {"name": "flannel"}),
                           ("/auth/role/grant", {"name": "flannel", "perm": {
                               "permType": "READWRITE", "key": _b64("/"), "range_end": _b64("\0")}}),
                           ("/auth/user/add", {"name": USER, "password": PASSWORD}),
                           ("/auth/user/grant", {"user": USER, "role": "flannel"}),
                           ("/auth/enable", {})):
            self.call(path, body)
        self.auth = True

    def put(self, key: str, value: str, lease: int = 0) -> int:
        """Put key=value (optionally on an etcd lease); returns the store revision after it."""
        body: Dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = lease
        return int(self.call("/kv/put", body)["header"]["revision"])

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        """The key's kv (key/value decoded, lease as int), or None."""
        kvs = self.call("/kv/range", {"key": _b64(key)}).get("kvs", [])
        return _kv(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str) -> List[Dict[str, Any]]:
        resp = self.call("/kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))})
        return [_kv(kv) for kv in resp.get("kvs", [])]

    def delete(self, key: str) -> int:
        return int(self.call("/kv/deleterange", {"key": _b64(key)}).get("deleted", 0))

    def grant(self, ttl: int) -> int:
        return int(self.call("/lease/grant", {"TTL": ttl})["ID"])

    def revoke(self, lease: int) -> None:
        self.call("/kv/lease/revoke", {"ID": lease})

    def ttl(self, lease: int) -> int:
        """Seconds the etcd lease has left (-1: gone)."""
        return int(self.call("/kv/lease/timetolive", {"ID": lease}).get("TTL", -1))

    def revision(self) -> int:
        return int(self.call("/kv/range", {"key": _b64("\0"), "limit": 1})["header"]["revision"])

    def compact(self) -> int:
        """Compact the history up to the current revision; returns that revision."""
        rev = self.revision()
        self.call("/kv/compaction", {"revision": rev, "physical": True})
        return rev


def _kv(kv: Dict[str, Any]) -> Dict[str, Any]:
    return {"key": _unb64(kv["key"]), "value": _unb64(kv.get("value", "")),
            "lease": int(kv.get("lease", 0)), "mod_revision": int(kv.get("mod_revision", 0))}


def etcd_available() -> Optional[str]:
    """Why the etcd tests cannot run here, or None."""
    if not os.access(ETCD, os.X_OK):
        return f"{ETCD} is missing: apt-get install etcd-server"
    return None


# --- pytest fixtures: import them into a test module (``from tests.harness.etcd import etcd``) ---

try:
    import pytest
except ImportError:  # the harness is also used outside pytest (demo, benches)
    pytest = None  # type: ignore[assignment]

if pytest is not None:
    @pytest.fixture
    def etcd_factory():
        """make(tls=False, auth=False, netns=None, host="127.0.0.1") -> a started EtcdServer; all
        closed after the test (before the lab's namespaces go, if the lab fixture came first)."""
        servers: List[EtcdServer] = []

        def make(tls: bool = False, auth: bool = False, netns: Optional[str] = None,
                 host: str = HOST) -> EtcdServer:
            reason = etcd_available()
            if reason:
                pytest.fail(reason, pytrace=False)  # a missing etcd is a failure, never a quiet skip
            servers.append(EtcdServer(tls=tls, auth=auth, netns=netns, host=host))
            return servers[-1]
        yield make
        for server in servers:
            server.close()

    @pytest.fixture
    def etcd(etcd_factory) -> EtcdServer:
        """A plain etcd on 127.0.0.1 (http, no auth), removed after the test."""
        return etcd_factory()
