"""What etcd's JSON gateway sends, turned into leases and events.  Pure: no I/O here.

The gateway (etcd >= 3.4 at /v3/) speaks the gRPC messages as JSON: keys and values are
base64, 64-bit numbers are strings, zero values are left out (a PUT event has no "type", a key
without an etcd lease no "lease").  A watch stream is one JSON object per line:

    {"result":{"header":{"revision":"7"},"created":true}}
    {"result":{"header":{"revision":"9"},"events":[{"kv":{...}},{"type":"DELETE","kv":{...}}]}}
    {"result":{"header":{...},"canceled":true,"compact_revision":"4"}}     history compacted
    {"result":{...,"canceled":true,"cancel_reason":"... invalid auth token"}}
    {"error":{"grpc_code":1,"http_code":408,"message":"..."}}              server going away

Also here: the reconnect backoff schedule and how responses that arrive together become one
batch for the main loop.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..lease import Lease, LeaseFormatError, lease_from_kv, parse_subnet_key
from ..manager import ADDED, REMOVED, Event

log = logging.getLogger("cni_flannel.daemon.etcd")


class GatewayFormatError(ValueError):
    """A gateway response that is not what etcd sends (a bug or a proxy in between)."""


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str = ""
    lease: int = 0  # etcd lease ID; 0: the key has none (a reservation, for subnet keys)
    mod_revision: int = 0
    create_revision: int = 0


@dataclass(frozen=True)
class WatchEvent:
    deleted: bool
    kv: KeyValue


@dataclass(frozen=True)
class WatchMessage:
    """One line of a watch stream."""

    revision: int = 0  # the header's store revision (0 when absent)
    events: Tuple[WatchEvent, ...] = ()
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0  # > 0: the start revision was compacted away; re-list
    reason: str = ""  # cancel_reason, or the error message of an {"error":...} line
    error: bool = False  # the server ended the stream ({"error":...}): reconnect

    @property
    def progress(self) -> bool:
        """A progress notification: no events, the watcher has seen everything up to revision."""
        return not (self.events or self.created or self.canceled or self.error)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: Any, what: str = "key") -> str:
    try:
        return base64.b64decode(str(text), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise GatewayFormatError(f"etcd sent a {what} that is not base64 UTF-8: {str(text)[:80]!r}") from None


def prefix_range_end(prefix: str) -> str:
    """The range end that selects every key starting with ``prefix`` (its last byte + 1)."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return raw.decode()


def _int(value: Any, what: str) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        raise GatewayFormatError(f"etcd sent {what}={value!r}, not a number") from None


def parse_kv(obj: Any) -> KeyValue:
    if not isinstance(obj, dict) or "key" not in obj:
        raise GatewayFormatError(f"etcd sent a key-value without a key: {str(obj)[:120]}")
    return KeyValue(key=unb64(obj["key"]), value=unb64(obj.get("value", ""), "value"),
                    lease=_int(obj.get("lease"), "lease"),
                    mod_revision=_int(obj.get("mod_revision"), "mod_revision"),
                    create_revision=_int(obj.get("create_revision"), "create_revision"))


def parse_range(resp: Dict[str, Any]) -> Tuple[List[KeyValue], int]:
    """A /kv/range answer: its key-values and the store revision it was read at."""
    header = resp.get("header") or {}
    return [parse_kv(kv) for kv in resp.get("kvs", [])], _int(header.get("revision"), "revision")


def parse_watch_line(line: bytes) -> WatchMessage:
    try:
        obj = json.loads(line)
    except ValueError:
        raise GatewayFormatError(f"etcd's watch stream sent a line that is not JSON: {line[:120]!r}") from None
    if not isinstance(obj, dict):
        raise GatewayFormatError(f"etcd's watch stream sent {line[:120]!r}")
    if "error" in obj:
        err = obj["error"]
        msg = err.get("message", "") if isinstance(err, dict) else str(err)
        return WatchMessage(error=True, reason=msg or "stream error")
    res = obj.get("result")
    if not isinstance(res, dict):
        raise GatewayFormatError(f"etcd's watch stream sent {line[:120]!r} (no result)")
    events = tuple(WatchEvent(deleted=ev.get("type") == "DELETE", kv=parse_kv(ev.get("kv")))
                   for ev in res.get("events", []))
    return WatchMessage(revision=_int((res.get("header") or {}).get("revision"), "revision"),
                        events=events, created=bool(res.get("created")), canceled=bool(res.get("canceled")),
                        compact_revision=_int(res.get("compact_revision"), "compact_revision"),
                        reason=str(res.get("cancel_reason", "")))


def resume_revision(current: int, msg: WatchMessage) -> int:
    """Where a new watch must start so that nothing after ``msg`` is missed.

    Events: one past the last event's revision.  The header revision is *not* used there: a
    watcher catching up on old history gets its events in chunks, each stamped with the current
    store revision, so header + 1 could skip the chunks still to come.  A progress notification
    is only sent to a watcher that has seen everything, so its header revision is safe.
    """
    if msg.events:
        return max(current, max(ev.kv.mod_revision for ev in msg.events) + 1)
    if msg.progress and msg.revision:
        return max(current, msg.revision + 1)
    return current


TtlLookup = Callable[[KeyValue], Optional[float]]


def kv_to_lease(kv: KeyValue, expiration: Optional[float] = None) -> Lease:
    """A subnet key-value as a Lease (LeaseFormatError when it is not one)."""
    lease = lease_from_kv(kv.key, kv.value)
    return lease if expiration is None else Lease(lease.subnet, lease.ipv6_subnet, lease.attrs, expiration)


def leases_from_kvs(kvs: Iterable[KeyValue], expiry: Optional[TtlLookup] = None) -> List[Lease]:
    """The readable leases among ``kvs``; unreadable ones are logged and skipped (as flannel)."""
    out = []
    for kv in kvs:
        try:
            out.append(kv_to_lease(kv, expiry(kv) if expiry else None))
        except LeaseFormatError as exc:
            log.warning("ignoring subnet key %s: %s", kv.key, exc)
    return out


def to_event(ev: WatchEvent, expiry: Optional[TtlLookup] = None) -> Optional[Event]:
    """A watch event as a lease Event; None (logged) for a key or value that is not a lease.

    A delete carries no value: the removed lease is rebuilt from its key alone.
    """
    try:
        if ev.deleted:
            v4, v6 = parse_subnet_key(ev.kv.key)
            return Event(REMOVED, Lease(subnet=v4, ipv6_subnet=v6))
        return Event(ADDED, kv_to_lease(ev.kv, expiry(ev.kv) if expiry else None))
    except LeaseFormatError as exc:
        log.warning("ignoring %s of %s: %s", "delete" if ev.deleted else "put", ev.kv.key, exc)
        return None


@dataclass
class Batch:
    """Watch messages that arrived together, reduced to what the main loop needs."""

    events: List[Event] = field(default_factory=list)
    resume: int = 0  # the revision to watch from after this batch
    compacted: int = 0  # > 0: the watch was cancelled by compaction: re-list
    canceled: str = ""  # the watch was cancelled for another reason (auth, ...): reconnect
    ended: str = ""  # the server ended the stream: reconnect from ``resume``


def build_batch(messages: Sequence[WatchMessage], resume: int, expiry: Optional[TtlLookup] = None) -> Batch:
    """One batch from consecutive watch messages; stops at the first that ends the watch."""
    batch = Batch(resume=resume)
    for msg in messages:
        if msg.compact_revision:
            batch.compacted = msg.compact_revision
            break
        if msg.error:
            batch.ended = msg.reason
            break
        if msg.canceled:
            batch.canceled = msg.reason or "cancelled by etcd"
            break
        for ev in msg.events:
            event = to_event(ev, expiry)
            if event is not None:
                batch.events.append(event)
        batch.resume = resume_revision(batch.resume, msg)
    return batch


def backoff(attempt: int, base: float = 0.2, cap: float = 5.0) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): doubling from base, capped."""
    return min(cap, base * (2 ** min(attempt, 30)))
