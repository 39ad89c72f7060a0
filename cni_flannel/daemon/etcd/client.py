"""The one place that talks to etcd, and where its failures become daemon errors.

Client library: etcd3gw (OpenStack), over etcd's JSON gRPC gateway (/v3/ on etcd 3.4+): pure
Python on requests, so it freezes with PyInstaller and needs no protobuf/grpcio (the gRPC
clients are either unmaintained, ``etcd3``, or asyncio-only, ``aetcd``).  From it we use the
session (TLS), API path discovery and its request helpers (transactions, leases).  What it
lacks is added here rather than patched in: etcd auth (a token from /auth/authenticate in the
Authorization header, renewed when etcd says it is invalid), error translation (its
``_request`` is overridden: TLS failures are not retried, gRPC codes mapped), several
endpoints (the next one after a failure), and a watch stream that reports compaction,
cancellation and disconnects (its own watcher drops them silently).

Every store operation goes through ``call``: bounded attempts with doubling waits, one log
line per failed attempt, then StoreUnavailable.  Errors that retrying cannot fix (TLS, wrong
password, permission) are StoreError at once.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import socket
import ssl
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

from ..errors import DaemonError, StoreError, StoreUnavailable
from .options import Clock, Endpoint, EtcdOptions
from .records import GatewayFormatError, KeyValue, b64, backoff, parse_range, prefix_range_end

log = logging.getLogger("cni_flannel.daemon.etcd")
T = TypeVar("T")


class AuthExpired(StoreUnavailable):
    """etcd no longer accepts our auth token (restarted, or it timed out): log in again."""


class Compacted(StoreError):
    """The revision asked for is older than etcd's compacted history."""


class LeaseNotFound(StoreError):
    """The etcd lease ID does not exist (expired or revoked)."""


_UNAVAILABLE_CODES = {1, 4, 13, 14}  # Canceled, DeadlineExceeded, Internal, Unavailable
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)|[A-Za-z]+Error\(-?\d+, '([^']+)'\)")
_SSL_REASON = re.compile(r"SSL\w*Error\((?:\d+, )?'(?:\[SSL: [A-Z0-9_]+\] )?([^']+?)(?: \(_ssl\.c:\d+\))?'")


def translate(status: int, text: str, endpoint: Endpoint, username: str = "") -> DaemonError:
    """An HTTP error answer from the gateway as the daemon error it means."""
    try:
        body = json.loads(text)
        msg, code = str(body.get("message") or body.get("error") or text), int(body.get("code", -1))
    except (ValueError, AttributeError, TypeError):
        msg, code = text.strip()[:200], -1
    where = f"etcd at {endpoint}"
    low = msg.lower()
    if "invalid auth token" in low or code == 16:
        return AuthExpired(f"{where}: {msg}")
    if "authentication failed" in low:
        return StoreError(f"{where} rejected user {username!r}: {msg} (check --etcd-username/--etcd-password)")
    if "user name is empty" in low:
        return StoreError(f"{where} has authentication enabled: set --etcd-username and --etcd-password")
    if "permission denied" in low or code == 7:
        return StoreError(f"{where}: user {username!r} may not do this ({msg}): grant it read/write on "
                          f"the --etcd-prefix keys")
    if "revision has been compacted" in low:
        return Compacted(f"{where}: {msg}")
    if "lease not found" in low:
        return LeaseNotFound(f"{where}: {msg}")
    if code in _UNAVAILABLE_CODES or status in (408, 500, 502, 503, 504):
        return StoreUnavailable(f"{where} is unavailable: {msg}")
    if code == -1:
        return StoreError(f"{where} answered HTTP {status} ({msg!r}): is this etcd's v3 API (etcd 3.4 or later)?")
    return StoreError(f"{where}: {msg}")


def connection_reason(exc: BaseException) -> str:
    """The useful part of a requests connection error ('Connection refused', not the repr chain)."""
    text = str(exc)
    m = _ERRNO.search(text)
    if m:
        return (m.group(1) or m.group(2)).strip()
    if "RemoteDisconnected" in text:
        return "it closed the connection without answering (an https etcd asked over http?)"
    if "timed out" in text.lower():
        return "timed out"
    return text[:200]


def _library_error() -> Any:
    from etcd3gw.exceptions import Etcd3Exception
    return Etcd3Exception


@functools.lru_cache(maxsize=None)
def _gateway_class() -> Any:
    """etcd3gw's client with our request hook (imported lazily: only flanneld needs it)."""
    import requests
    from etcd3gw.client import Etcd3Client

    class Gateway(Etcd3Client):
        endpoint: Endpoint
        username = ""
        token: Optional[str] = None
        verify: Any = True

        def headers(self) -> Dict[str, str]:
            return {"Authorization": self.token} if self.token else {}

        def _request(self, method: str, *args: Any, **kwargs: Any) -> Any:
            try:
                resp = getattr(self.session, method)(*args, timeout=self.timeout, headers=self.headers(),
                                                     verify=self.verify, **kwargs)
            except requests.exceptions.SSLError as exc:
                raise StoreError(f"TLS with etcd at {self.endpoint} failed: {tls_reason(exc)} (check --etcd-cafile, "
                                 f"--etcd-certfile and --etcd-keyfile)") from None
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                raise StoreUnavailable(f"cannot reach etcd at {self.endpoint}: {connection_reason(exc)}") from None
            except requests.exceptions.RequestException as exc:
                raise StoreError(f"request to etcd at {self.endpoint} failed: {exc}") from None
            if resp.status_code != 200:
                raise translate(resp.status_code, resp.text, self.endpoint, self.username)
            try:
                return resp.json()
            except ValueError:
                raise StoreError(f"etcd at {self.endpoint} answered with something that is not JSON: "
                                 f"{resp.text[:120]!r}") from None

    return Gateway


def tls_reason(exc: BaseException) -> str:
    """'certificate verify failed: unable to get local issuer certificate' out of requests' chain."""
    m = _SSL_REASON.search(str(exc))
    reason = m.group(1).strip() if m else connection_reason(exc)
    if "EOF" in reason or "WRONG_VERSION_NUMBER" in str(exc):
        reason += " (does this endpoint speak https?)"
    return reason


def verify_setting(cafile: str) -> Any:
    """What requests verifies the server with: --etcd-cafile, else the system's CAs (as Go does),
    passed on every request so that REQUESTS_CA_BUNDLE in the environment cannot replace it."""
    if cafile:
        return cafile
    paths = ssl.get_default_verify_paths()
    for path in (paths.cafile, paths.capath):
        if path and os.path.exists(path):
            return path
    return True


class EtcdClient:
    """etcd v3 through its JSON gateway; thread-safe enough for one main loop plus one watcher
    (each gets its own HTTP session)."""

    def __init__(self, options: EtcdOptions, clock: Optional[Clock] = None,
                 stop: Optional[threading.Event] = None) -> None:
        self.options = options
        self.endpoints = options.check()
        self.clock = clock or Clock()
        self.stop = stop  # set: waits between attempts end at once
        self._gateways: Dict[Tuple[int, int], Any] = {}
        self._current = 0
        self._lock = threading.Lock()
        self.attempts = 0  # requests tried through call() (tests count them; metrics)
        self.failures = 0  # of which failed
        # called with the operation ("read", "create", "watch", ...) at every failed request:
        # the daemon counts them in its store-error metric
        self.on_error: Callable[[str], None] = lambda op: None

    def record_failure(self, what: str) -> None:
        self.failures += 1
        try:
            self.on_error(what.split()[0])
        except Exception:  # a metrics hook must never break the store path
            log.exception("store error hook failed")

    # --- plumbing ------------------------------------------------------------------------

    def _gateway(self) -> Any:
        """This thread's client for the current endpoint (requests sessions are not shared)."""
        key = (threading.get_ident(), self._current)
        gw = self._gateways.get(key)
        if gw is None:
            ep = self.endpoints[self._current]
            opts = self.options
            gw = _gateway_class()(host=ep.host, port=ep.port, protocol=ep.scheme, timeout=opts.request_timeout,
                                  ca_cert=opts.cafile or None, cert_cert=opts.certfile or None,
                                  cert_key=opts.keyfile or None)
            gw.endpoint, gw.username, gw.verify = ep, opts.username, verify_setting(opts.cafile)
            with self._lock:
                self._gateways[key] = gw
        return gw

    def _login(self, gw: Any) -> None:
        if not self.options.username or gw.token:
            return
        gw.token = None
        resp = gw.post(gw.get_url("/auth/authenticate"),
                       json={"name": self.options.username, "password": self.options.password})
        gw.token = resp.get("token") or None
        if not gw.token:
            raise StoreError(f"etcd at {gw.endpoint} gave no auth token for user {self.options.username!r}: "
                             f"is authentication enabled there?")

    def _next_endpoint(self) -> None:
        if len(self.endpoints) > 1:
            self._current = (self._current + 1) % len(self.endpoints)

    def call(self, what: str, op: Callable[[Any], T], attempts: Optional[int] = None) -> T:
        """op(gateway) with bounded retries; StoreUnavailable when every attempt failed."""
        tries = attempts or self.options.attempts
        last: Optional[DaemonError] = None
        for attempt in range(tries):
            gw = self._gateway()
            self.attempts += 1
            try:
                self._login(gw)
                return op(gw)
            except AuthExpired as exc:
                gw.token, last = None, exc  # log in again on the next attempt, at once
                self.record_failure(what)
                continue
            except StoreUnavailable as exc:
                self.record_failure(what)
                last = exc
                if attempt + 1 == tries:
                    break
                self._next_endpoint()
                rounds, rest = divmod(attempt + 1, len(self.endpoints))
                if rest:  # another endpoint not tried yet in this round: at once
                    log.warning("etcd %s failed (attempt %d/%d): %s; trying %s", what, attempt + 1, tries, exc,
                                self.endpoints[self._current])
                    continue
                delay = backoff(rounds - 1, self.options.backoff_base, self.options.backoff_cap)
                log.warning("etcd %s failed (attempt %d/%d): %s; retrying in %.1fs", what, attempt + 1, tries,
                            exc, delay)
                if self.clock.sleep(delay, self.stop):
                    raise StoreUnavailable(f"etcd {what}: stopped while retrying ({exc})") from None
            except StoreError:
                self.record_failure(what)
                raise
            except (GatewayFormatError, AttributeError, KeyError, TypeError, ValueError) as exc:
                self.record_failure(what)
                raise StoreError(f"etcd {what}: unexpected answer from {gw.endpoint}: {exc!r}") from None
            except _library_error() as exc:  # etcd3gw's own checks (API version discovery)
                self.record_failure(what)
                detail = getattr(exc, "detail_text", None) or str(exc) or type(exc).__name__
                raise StoreError(f"etcd {what}: {gw.endpoint}: {detail}: is this etcd (3.4 or later)?") from None
        raise StoreUnavailable(f"etcd {what} failed {tries} times: {last}")

    # --- operations ----------------------------------------------------------------------

    def range(self, key: str, prefix: bool = False, attempts: Optional[int] = None) -> Tuple[List[KeyValue], int]:
        """The key (or every key under the prefix) and the revision they were read at."""
        body: Dict[str, Any] = {"key": b64(key)}
        if prefix:
            body["range_end"] = b64(prefix_range_end(key))
        return self.call(f"read of {key}", lambda gw: parse_range(gw.post(gw.get_url("/kv/range"), json=body)),
                         attempts)

    def grant(self, ttl: int) -> int:
        """A new etcd lease of ``ttl`` seconds; its ID."""
        return self.call("lease grant", lambda gw: int(gw.post(gw.get_url("/lease/grant"),
                                                               json={"TTL": ttl, "ID": 0})["ID"]))

    def time_to_live(self, lease_id: int, attempts: Optional[int] = None) -> int:
        """Seconds the etcd lease has left; -1 when it is gone."""
        return self.call("lease lookup", lambda gw: int(gw.post(gw.get_url("/kv/lease/timetolive"),
                                                                json={"ID": lease_id}).get("TTL", -1)), attempts)

    def revoke(self, lease_id: int) -> None:
        try:
            self.call("lease revoke", lambda gw: gw.post(gw.get_url("/kv/lease/revoke"), json={"ID": lease_id}))
        except LeaseNotFound:
            pass

    def txn(self, what: str, compare: Sequence[Dict[str, Any]], success: Sequence[Dict[str, Any]]) -> bool:
        """A transaction: ``success`` applied when every ``compare`` holds; whether it did."""
        body = {"compare": list(compare), "success": list(success), "failure": []}
        return bool(self.call(what, lambda gw: gw.transaction(body)).get("succeeded", False))

    def watch(self, prefix: str, start_revision: int) -> WatchStream:
        """A watch of every key under ``prefix`` from ``start_revision`` (one attempt)."""
        gw = self._gateway()
        self.attempts += 1
        try:
            self._login(gw)
            body = {"create_request": {"key": b64(prefix), "range_end": b64(prefix_range_end(prefix)),
                                       "start_revision": start_revision, "progress_notify": True}}
            return WatchStream(gw, body, self.options)
        except DaemonError as exc:
            self.record_failure("watch")
            if isinstance(exc, AuthExpired):
                gw.token = None
            if isinstance(exc, StoreUnavailable):
                self._next_endpoint()
            raise
        except (GatewayFormatError, AttributeError, KeyError, TypeError, ValueError, _library_error()) as exc:
            self.record_failure("watch")
            raise StoreError(f"etcd watch: unexpected answer from {gw.endpoint}: {exc!r}") from None

    def forget_token(self) -> None:
        """etcd said our token is invalid (on a watch): log in again next time."""
        for gw in list(self._gateways.values()):
            gw.token = None

    def close(self) -> None:
        with self._lock:
            gateways, self._gateways = list(self._gateways.values()), {}
        for gw in gateways:
            gw.session.close()


class WatchStream:
    """One open watch: ``lines()`` yields its JSON lines until the stream ends; ``close()``
    (from any thread) ends a blocked read at once."""

    def __init__(self, gw: Any, body: Dict[str, Any], options: EtcdOptions) -> None:
        import requests

        self._requests = requests
        self.endpoint = gw.endpoint
        try:
            self._resp = gw.session.post(gw.get_url("/watch"), json=body, stream=True, headers=gw.headers(),
                                         verify=gw.verify,
                                         timeout=(options.request_timeout, options.watch_timeout))
        except requests.exceptions.SSLError as exc:
            raise StoreError(f"TLS with etcd at {gw.endpoint} failed: {tls_reason(exc)}") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise StoreUnavailable(f"cannot reach etcd at {gw.endpoint}: {connection_reason(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise StoreError(f"watch request to etcd at {gw.endpoint} failed: {exc}") from None
        if self._resp.status_code != 200:
            text = self._resp.text
            self._resp.close()
            raise translate(self._resp.status_code, text, gw.endpoint, gw.username)
        self.closed = False

    def lines(self) -> Iterator[bytes]:
        """StoreUnavailable when the connection breaks; IdleTimeout after watch_timeout of silence."""
        req = self._requests
        try:
            for line in self._resp.iter_lines(chunk_size=None):
                if line.strip():
                    yield line
        except (req.exceptions.ConnectionError, req.exceptions.ChunkedEncodingError, req.exceptions.Timeout,
                OSError, ValueError, AttributeError) as exc:
            if self.closed:
                return
            if "timed out" in str(exc).lower():
                raise IdleTimeout(f"no word from etcd at {self.endpoint}") from None
            raise StoreUnavailable(f"watch stream from etcd at {self.endpoint} broke: "
                                   f"{connection_reason(exc)}") from None

    def close(self) -> None:
        self.closed = True
        try:  # a read blocked in another thread only returns once the socket is shut down
            fd = self._resp.raw._fp.fileno()
            with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as s:
                s.shutdown(socket.SHUT_RDWR)
        except (AttributeError, OSError, ValueError):
            pass
        try:
            self._resp.close()
        except Exception:  # closing after a broken read may complain; nothing is left to release
            pass


class IdleTimeout(StoreUnavailable):
    """The watch stream was silent for watch_timeout: re-open it (not an error)."""
