"""How to reach etcd: flanneld's --etcd-* flags as one checked value, and the clock.

    --etcd-endpoints   http://127.0.0.1:4001,http://127.0.0.1:2379   (comma separated)
    --etcd-prefix      /coreos.com/network
    --etcd-keyfile / --etcd-certfile / --etcd-cafile                 (TLS; https endpoints)
    --etcd-username / --etcd-password                                (etcd auth)
    --subnet-lease-renew-margin 60 (minutes; here in seconds)

``ttl`` (the etcd lease on our subnet key, 24 h upstream) is not an upstream flag; tests set it
short.  ``check()`` turns every unusable value into a ConfigError or StoreError naming the
flag or file, before anything talks to etcd.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import List, Optional, Sequence

from ..errors import ConfigError, StoreError
from ..lease import DEFAULT_ETCD_PREFIX, RENEW_MARGIN, SUBNET_TTL

DEFAULT_ENDPOINTS = ("http://127.0.0.1:4001", "http://127.0.0.1:2379")


class Clock:
    """Wall time for lease expirations and interruptible sleeps; tests pass their own."""

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float, stop: Optional[threading.Event] = None) -> bool:
        """Wait ``seconds``; True when ``stop`` was set meanwhile."""
        if stop is not None:
            return stop.wait(seconds)
        time.sleep(seconds)
        return False


@dataclass(frozen=True)
class Endpoint:
    scheme: str  # http or https
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class EtcdOptions:
    endpoints: Sequence[str] = DEFAULT_ENDPOINTS
    prefix: str = DEFAULT_ETCD_PREFIX
    keyfile: str = ""
    certfile: str = ""
    cafile: str = ""
    username: str = ""
    password: str = ""
    ttl: int = SUBNET_TTL  # seconds on the etcd lease bound to our subnet key
    renew_margin: int = RENEW_MARGIN  # seconds before expiry the main loop renews
    request_timeout: float = 5.0  # one HTTP request
    attempts: int = 5  # tries of one store operation before StoreUnavailable
    backoff_base: float = 0.2  # first wait between tries, doubled each time
    backoff_cap: float = 5.0
    config_attempts: int = 5  # tries of reading <prefix>/config while the key is missing
    watch_timeout: float = 300.0  # a silent watch stream is re-opened after this long

    def endpoint_list(self) -> List[Endpoint]:
        eps = [e.strip() for e in self.endpoints if e.strip()] if not isinstance(self.endpoints, str) \
            else [e.strip() for e in self.endpoints.split(",") if e.strip()]
        if not eps:
            raise ConfigError("--etcd-endpoints is empty: give at least one URL, e.g. http://127.0.0.1:2379")
        return [parse_endpoint(e) for e in eps]

    def check(self) -> List[Endpoint]:
        """Every value usable?  Returns the parsed endpoints."""
        eps = self.endpoint_list()
        if not self.prefix.startswith("/") or self.prefix.rstrip("/") == "":
            raise ConfigError(f"--etcd-prefix={self.prefix!r} must be an absolute key path, e.g. "
                              f"{DEFAULT_ETCD_PREFIX}")
        if self.ttl < 2:  # etcd's own floor is about a second; tests use a few seconds
            raise ConfigError(f"subnet lease TTL {self.ttl}s is too short (2 s at least)")
        if not 0 < self.renew_margin < self.ttl:
            raise ConfigError(f"--subnet-lease-renew-margin={self.renew_margin // 60} minutes is out of range: "
                              f"it must be more than 0 and less than the lease TTL ({self.ttl // 60} minutes)")
        if self.attempts < 1 or self.config_attempts < 1:
            raise ConfigError("etcd retry counts must be at least 1")
        if bool(self.username) != bool(self.password):
            raise ConfigError("--etcd-username and --etcd-password go together: give both or neither")
        if bool(self.keyfile) != bool(self.certfile):
            raise ConfigError("--etcd-certfile and --etcd-keyfile go together: give both or neither")
        tls = any(e.scheme == "https" for e in eps)
        if (self.keyfile or self.cafile) and not tls:
            raise ConfigError(f"--etcd-certfile/--etcd-keyfile/--etcd-cafile are set but no --etcd-endpoints "
                              f"URL is https ({', '.join(map(str, eps))}): use https:// endpoints")
        if tls:
            self.tls_context()  # loads the files now, so a bad one is reported before any request
        return eps

    def tls_context(self) -> ssl.SSLContext:
        """The TLS settings as an SSLContext; StoreError naming the file that cannot be used."""
        for flag, path in (("--etcd-cafile", self.cafile), ("--etcd-certfile", self.certfile),
                           ("--etcd-keyfile", self.keyfile)):
            if path and not os.access(path, os.R_OK):
                why = "does not exist" if not os.path.exists(path) else "is not readable"
                raise StoreError(f"{flag}={path} {why}")
        try:
            ctx = ssl.create_default_context(cafile=self.cafile or None)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise StoreError(f"--etcd-cafile={self.cafile} holds no usable CA certificate: "
                             f"{_ssl_reason(exc)}") from None
        if self.certfile:
            try:
                ctx.load_cert_chain(self.certfile, self.keyfile)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise StoreError(f"--etcd-certfile={self.certfile} / --etcd-keyfile={self.keyfile} cannot be "
                                 f"used as a client certificate: {_ssl_reason(exc)}") from None
        return ctx


def parse_endpoint(text: str) -> Endpoint:
    try:
        url = urllib.parse.urlsplit(text)
        port = url.port
    except ValueError:
        url, port = None, None
    if url is None or url.scheme not in ("http", "https") or not url.hostname or url.path not in ("", "/"):
        raise ConfigError(f"--etcd-endpoints: {text!r} is not an etcd URL like http://127.0.0.1:2379")
    return Endpoint(url.scheme, url.hostname, port or 2379)


def _ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    text = str(exc)
    return f"{reason} ({text})" if reason and reason not in text else text
