"""The lease watch: a Snapshot, then batches of Events, surviving disconnects and compaction.

flannel's watchSubnets, for one thread:

1. list <prefix>/subnets/ -> Snapshot, remember the revision it was read at;
2. watch from that revision + 1; messages that arrive together (already queued, or within
   ``BATCH_WINDOW``) become one batch of Events;
3. the stream ends or breaks (etcd restarted, network) -> wait (doubling, capped), watch again
   from one past the last revision seen: nothing is missed and nothing replayed;
4. etcd says that revision was compacted -> back to 1 (a new Snapshot).

A reader thread per stream turns lines into a queue, so this thread can notice ``stop`` and
gather batches; ``stop`` shuts the stream's socket, which ends the reader at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, List, Optional, Tuple

from ..errors import DaemonError, StoreError
from ..manager import Sink, Snapshot
from .client import EtcdClient, IdleTimeout, WatchStream
from .records import GatewayFormatError, KeyValue, TtlLookup, WatchMessage, backoff, build_batch, \
    leases_from_kvs, parse_watch_line

log = logging.getLogger("cni_flannel.daemon.etcd")

BATCH_WINDOW = 0.05  # seconds a batch stays open for messages right behind the first
BATCH_MAX_MESSAGES = 1000
POLL = 0.25  # how often a waiting watcher looks at ``stop``


class _SinkFailed(Exception):
    """The sink (the main loop) raised: its exception leaves watch_leases as it is."""


class LeaseWatcher:
    def __init__(self, client: EtcdClient, prefix: str, sink: Sink, stop: threading.Event,
                 expiry: Optional[TtlLookup] = None) -> None:
        self.client = client
        self.prefix = prefix.rstrip("/") + "/"
        self.sink = sink
        self.stop = stop
        self.expiry = expiry
        self.resume = 0  # next revision to watch from; 0: list first
        self.failures = 0  # consecutive failed attempts (for the backoff)
        self.snapshots = 0  # Snapshots delivered (first list + re-lists)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                if self.resume == 0:
                    self._list()
                self._watch_once()
            except IdleTimeout:
                log.debug("etcd watch of %s idle: re-opening it from revision %d", self.prefix, self.resume)
            except _SinkFailed as exc:
                raise exc.args[0]  # the main loop's own failure: not ours to retry
            except DaemonError as exc:
                self._wait_after(exc)
            except Exception as exc:  # a bug or a library surprise: the watch must go on, not die silently
                self._wait_after(StoreError(f"unexpected {exc!r}"))

    def _deliver(self, batch: Any) -> None:
        try:
            self.sink(batch)
        except Exception as exc:
            raise _SinkFailed(exc) from exc

    def _wait_after(self, exc: BaseException) -> None:
        delay = backoff(self.failures, 0.1, self.client.options.backoff_cap)
        self.failures += 1
        log.warning("etcd watch of %s failed (attempt %d): %s; retrying in %.1fs from revision %s", self.prefix,
                    self.failures, exc, delay, self.resume or "(new list)")
        self.client.clock.sleep(delay, self.stop)

    def _list(self) -> None:
        kvs, revision = self.client.range(self.prefix, prefix=True, attempts=1)
        self._deliver(Snapshot(leases_from_kvs(kvs, self.expiry)))
        self.snapshots += 1
        self.resume = revision + 1
        self.failures = 0

    def _watch_once(self) -> None:
        """One stream, until it ends; returns normally only on stop or compaction."""
        stream = self.client.watch(self.prefix, self.resume)
        lines: "queue.Queue[Tuple[str, Any]]" = queue.Queue()
        reader = threading.Thread(target=_read, args=(stream, lines), name="etcd-watch-reader", daemon=True)
        reader.start()
        try:
            while not self.stop.is_set():
                items = _gather(lines, self.stop)
                if items and self._handle(items):
                    return
        finally:
            stream.close()
            reader.join(5)

    def _handle(self, items: List[Tuple[str, Any]]) -> bool:
        """Deliver one gathered batch; True when the stream is finished (compaction)."""
        messages: List[WatchMessage] = []
        end: Optional[BaseException] = None
        for kind, payload in items:
            if kind != "line":
                end = payload
                break
            try:
                messages.append(parse_watch_line(payload))
            except GatewayFormatError as exc:
                end = StoreError(str(exc))
                break
        batch = build_batch(messages, self.resume, self.expiry)
        if batch.events:
            self._deliver(batch.events)
        self.resume = batch.resume  # only once delivered
        if messages and not (batch.canceled or batch.ended):
            self.failures = 0  # the stream works
        if batch.compacted:
            log.warning("etcd watch of %s: revision %d was compacted (history kept from %d): listing again",
                        self.prefix, self.resume, batch.compacted)
            self.resume = 0
            return True
        if batch.canceled:
            if "auth" in batch.canceled.lower():
                self.client.forget_token()
            end = StoreError(f"etcd cancelled the watch: {batch.canceled}")
        elif batch.ended:
            end = StoreError(f"etcd ended the watch stream: {batch.ended}")
        if end is not None:
            if not isinstance(end, IdleTimeout):  # (failed opens and lists are counted by the client)
                self.client.record_failure("watch")
            raise end
        return False


def _read(stream: WatchStream, out: "queue.Queue[Tuple[str, Any]]") -> None:
    try:
        for line in stream.lines():
            out.put(("line", line))
        if not stream.closed:
            out.put(("end", StoreError(f"etcd at {stream.endpoint} closed the watch stream")))
    except DaemonError as exc:
        out.put(("end", exc))
    except Exception as exc:  # a library surprise must not kill the watch silently
        out.put(("end", StoreError(f"watch stream from etcd at {stream.endpoint}: {exc!r}")))


def _gather(lines: "queue.Queue[Tuple[str, Any]]", stop: threading.Event,
            now: Callable[[], float] = time.monotonic) -> List[Tuple[str, Any]]:
    """The next item and whatever follows within BATCH_WINDOW; [] after POLL with nothing."""
    try:
        items = [lines.get(timeout=POLL)]
    except queue.Empty:
        return []
    deadline = now() + BATCH_WINDOW
    while items[-1][0] == "line" and len(items) < BATCH_MAX_MESSAGES and not stop.is_set():
        left = deadline - now()
        try:
            items.append(lines.get_nowait() if left <= 0 else lines.get(timeout=left))
        except queue.Empty:
            break
    return items


def own_expiry(client: EtcdClient, own_keys: Callable[[], Any]) -> TtlLookup:
    """Expiration for our own lease key only (one lookup per change of it); peers' leases carry
    None: nothing in the daemon needs a peer's expiry, and upstream's per-key lookups would
    cost one request per lease (2,000 for a large cluster's first list)."""
    def expiry(kv: KeyValue) -> Optional[float]:
        if kv.lease == 0 or kv.key not in own_keys():
            return None
        try:
            ttl = client.time_to_live(kv.lease, attempts=1)
        except DaemonError as exc:
            log.warning("could not read the TTL of our lease %s: %s", kv.key, exc)
            return None
        return client.clock.time() + ttl if ttl >= 0 else None
    return expiry
