"""The etcd subnet manager's pure parts: gateway JSON, events, batches, backoff, error
translation, options, and the acquire/renew decisions over an in-memory store (no etcd)."""
from __future__ import annotations

import base64
import http.server
import ipaddress
import json
import queue
import re
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

from cni_flannel.daemon.errors import (ConfigError, LeaseError, LeaseRevoked, OutOfSubnets, StoreError,
                                       StoreUnavailable)
from cni_flannel.daemon.etcd import EtcdOptions, EtcdSubnetManager
from cni_flannel.daemon.etcd.client import AuthExpired, Compacted, LeaseNotFound, connection_reason, tls_reason, \
    translate
from cni_flannel.daemon.etcd.options import Endpoint, parse_endpoint
from cni_flannel.daemon.etcd.records import GatewayFormatError, KeyValue, WatchEvent, WatchMessage, backoff, \
    build_batch, parse_range, parse_watch_line, prefix_range_end, resume_revision, to_event
from cni_flannel.daemon.etcd.watch import _gather
from cni_flannel.daemon.lease import LeaseAttrs, render_attrs
from cni_flannel.daemon.manager import ADDED, REMOVED

SUBNETS = "/coreos.com/network/subnets/"
VALUE = '{"PublicIP":"192.0.2.5","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:05"}}'


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def line(result: Dict[str, Any]) -> bytes:
    return json.dumps({"result": result}).encode()


def put_event(key: str, value: str, rev: int, lease: int = 0) -> Dict[str, Any]:
    kv = {"key": b64(key), "value": b64(value), "mod_revision": str(rev), "create_revision": str(rev)}
    if lease:
        kv["lease"] = str(lease)
    return {"kv": kv}


def delete_event(key: str, rev: int) -> Dict[str, Any]:
    return {"type": "DELETE", "kv": {"key": b64(key), "mod_revision": str(rev)}}


# --- gateway JSON -------------------------------------------------------------------------

def test_watch_lines_as_etcd_34_sends_them():
    created = parse_watch_line(line({"header": {"revision": "4"}, "created": True}))
    assert created.created and not created.events and created.revision == 4 and not created.progress
    ev = parse_watch_line(line({"header": {"revision": "9"},
                                "events": [put_event(SUBNETS + "10.244.1.0-24", VALUE, 8, lease=77),
                                           delete_event(SUBNETS + "10.244.2.0-24", 9)]}))
    assert [e.deleted for e in ev.events] == [False, True]
    assert ev.events[0].kv == KeyValue(SUBNETS + "10.244.1.0-24", VALUE, 77, 8, 8)
    assert ev.events[1].kv.value == "" and ev.events[1].kv.lease == 0
    compacted = parse_watch_line(line({"header": {}, "canceled": True, "compact_revision": "4"}))
    assert compacted.canceled and compacted.compact_revision == 4
    cancelled = parse_watch_line(line({"created": True, "canceled": True,
                                       "cancel_reason": "rpc error: etcdserver: invalid auth token"}))
    assert cancelled.canceled and "invalid auth token" in cancelled.reason
    ended = parse_watch_line(b'{"error":{"grpc_code":1,"http_code":408,"message":"transport is closing"}}')
    assert ended.error and ended.reason == "transport is closing"
    progress = parse_watch_line(line({"header": {"revision": "12"}}))
    assert progress.progress and progress.revision == 12


@pytest.mark.parametrize("bad", [b"not json", b"[1]", b'{"result": 3}',
                                 line({"events": [{"kv": {"key": "%%%notbase64"}}]}),
                                 line({"events": [{"kv": {"value": b64("x")}}]}),
                                 line({"header": {"revision": "x"}})])
def test_watch_lines_that_etcd_never_sends_are_a_format_error(bad):
    with pytest.raises(GatewayFormatError):
        parse_watch_line(bad)


def test_range_answer_and_prefix_end():
    kvs, rev = parse_range({"header": {"revision": "21"}, "kvs": [
        {"key": b64(SUBNETS + "10.244.1.0-24"), "value": b64(VALUE), "lease": "5", "mod_revision": "3"}]})
    assert rev == 21 and kvs[0].lease == 5 and kvs[0].mod_revision == 3 and kvs[0].value == VALUE
    assert parse_range({"header": {"revision": "2"}}) == ([], 2)  # etcd leaves an empty kvs out
    assert prefix_range_end(SUBNETS) == "/coreos.com/network/subnets0"


# --- events and batches -------------------------------------------------------------------

def test_delete_event_builds_the_lease_from_the_key_alone():
    removed = to_event(WatchEvent(True, KeyValue(SUBNETS + "10.244.3.0-24&fc00:0:0:3::-64")))
    assert removed.type == REMOVED
    assert str(removed.lease.subnet) == "10.244.3.0/24" and str(removed.lease.ipv6_subnet) == "fc00:0:0:3::/64"
    v6only = to_event(WatchEvent(True, KeyValue(SUBNETS + "0.0.0.0-0&fc00::-64")))
    assert v6only.lease.subnet is None and str(v6only.lease.ipv6_subnet) == "fc00::/64"


def test_put_event_is_added_with_attrs_and_expiry_from_the_lookup():
    added = to_event(WatchEvent(False, KeyValue(SUBNETS + "10.244.5.0-24", VALUE, lease=9)), lambda kv: 123.0)
    assert added.type == ADDED and str(added.lease.attrs.public_ip) == "192.0.2.5"
    assert added.lease.expiration == 123.0


@pytest.mark.parametrize("kv", [KeyValue(SUBNETS + "10.244.5.0-24", "{broken"),
                                KeyValue(SUBNETS + "10.244.5.0-24", '{"PublicIP":"not-an-ip"}'),
                                KeyValue(SUBNETS + "garbage", VALUE),
                                KeyValue(SUBNETS + "10.244.5.0-24", '["a list"]')])
def test_malformed_peer_values_are_skipped_with_a_log_line(kv, caplog):
    assert to_event(WatchEvent(False, kv)) is None
    assert kv.key in caplog.text


def test_batch_keeps_order_and_resumes_after_the_last_event_revision():
    msgs = [parse_watch_line(line({"header": {"revision": "30"}, "events": [
                put_event(SUBNETS + "10.244.1.0-24", VALUE, 11), put_event(SUBNETS + "bad", VALUE, 12)]})),
            parse_watch_line(line({"header": {"revision": "30"},
                                   "events": [delete_event(SUBNETS + "10.244.1.0-24", 13)]}))]
    batch = build_batch(msgs, resume=5)
    assert [(e.type, str(e.lease.subnet)) for e in batch.events] == [(ADDED, "10.244.1.0/24"),
                                                                     (REMOVED, "10.244.1.0/24")]
    # 14, not the header's 31: a catching-up watcher gets its history in chunks stamped with
    # the current revision, so header + 1 could skip events still to come.
    assert batch.resume == 14 and not (batch.compacted or batch.canceled or batch.ended)


def test_batch_stops_at_compaction_cancel_or_end_and_keeps_what_came_before():
    ev = parse_watch_line(line({"events": [put_event(SUBNETS + "10.244.1.0-24", VALUE, 7)]}))
    comp = WatchMessage(canceled=True, compact_revision=6)
    later = parse_watch_line(line({"events": [put_event(SUBNETS + "10.244.2.0-24", VALUE, 9)]}))
    batch = build_batch([ev, comp, later], resume=3)
    assert batch.compacted == 6 and len(batch.events) == 1 and batch.resume == 8
    assert build_batch([WatchMessage(canceled=True, reason="auth")], 3).canceled == "auth"
    assert build_batch([WatchMessage(error=True, reason="bye")], 3).ended == "bye"


def test_resume_revision_rules():
    assert resume_revision(5, WatchMessage(revision=40, created=True)) == 5  # created: maybe not synced yet
    assert resume_revision(5, WatchMessage(revision=40)) == 41  # progress notification: synced
    assert resume_revision(50, WatchMessage(revision=40)) == 50  # never backwards


def test_gather_joins_what_is_queued_together_and_stops_at_an_end():
    q: "queue.Queue[Tuple[str, Any]]" = queue.Queue()
    for i in range(3):
        q.put(("line", b"%d" % i))
    q.put(("end", StoreError("gone")))
    q.put(("line", b"after"))
    items = _gather(q, threading.Event())
    assert [k for k, _ in items] == ["line", "line", "line", "end"]
    assert _gather(q, threading.Event()) == [("line", b"after")]
    assert _gather(q, threading.Event()) == []  # nothing within POLL


def test_backoff_doubles_and_is_capped():
    assert [backoff(i) for i in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert backoff(1000) == 5.0 and backoff(0, 0.1, 5.0) == 0.1


# --- error translation --------------------------------------------------------------------

EP = Endpoint("https", "127.0.0.1", 2379)


def body(msg: str, code: int) -> str:
    return json.dumps({"error": msg, "message": msg, "code": code})


@pytest.mark.parametrize("status,text,cls,words", [
    (401, body("etcdserver: invalid auth token", 16), AuthExpired, "invalid auth token"),
    (400, body("etcdserver: authentication failed, invalid user ID or password", 3), StoreError,
     "rejected user 'flannel'"),
    (400, body("etcdserver: user name is empty", 3), StoreError, "set --etcd-username"),
    (403, body("etcdserver: permission denied", 7), StoreError, "may not do this"),
    (400, body("etcdserver: mvcc: required revision has been compacted", 11), Compacted, "compacted"),
    (404, body("etcdserver: requested lease not found", 5), LeaseNotFound, "lease not found"),
    (503, body("etcdserver: no leader", 14), StoreUnavailable, "unavailable"),
    (504, body("context deadline exceeded", 4), StoreUnavailable, "unavailable"),
    (502, "<html>bad gateway</html>", StoreUnavailable, "unavailable"),
    (404, "404 page not found", StoreError, "etcd 3.4 or later"),
])
def test_gateway_errors_become_daemon_errors(status, text, cls, words):
    err = translate(status, text, EP, "flannel")
    assert type(err) is cls and words in str(err) and "https://127.0.0.1:2379" in str(err)


def test_retryable_and_final_errors_are_distinguished():
    assert isinstance(translate(503, body("x", 14), EP), StoreUnavailable)
    for final in (translate(400, body("etcdserver: authentication failed", 3), EP),
                  translate(404, "nope", EP)):
        assert not isinstance(final, StoreUnavailable)


def test_requests_error_chains_are_shortened():
    refused = ("HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: /version (Caused by "
               "NewConnectionError('<urllib3.connection.HTTPConnection object at 0x7f>: Failed to establish a new "
               "connection: [Errno 111] Connection refused'))")
    assert connection_reason(Exception(refused)) == "Connection refused"
    ssl_text = ("HTTPSConnectionPool(host='127.0.0.1', port=2): Max retries exceeded with url: /version (Caused by "
                "SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                "unable to get local issuer certificate (_ssl.c:992)')))")
    assert tls_reason(Exception(ssl_text)) == "certificate verify failed: unable to get local issuer certificate"
    eof = ("Max retries exceeded (Caused by SSLError(SSLZeroReturnError(6, 'TLS/SSL connection has been closed "
           "(EOF) (_ssl.c:992)')))")
    assert tls_reason(Exception(eof)) == "TLS/SSL connection has been closed (EOF) (does this endpoint speak https?)"
    reset = "('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))"
    assert connection_reason(Exception(reset)) == "Connection reset by peer"
    assert "https etcd asked over http" in connection_reason(
        Exception("('Connection aborted.', RemoteDisconnected('Remote end closed connection without response'))"))


# --- options ------------------------------------------------------------------------------

@pytest.mark.parametrize("opts,words", [
    ({"endpoints": []}, "--etcd-endpoints is empty"),
    ({"endpoints": ["127.0.0.1:2379"]}, "is not an etcd URL"),
    ({"endpoints": ["ftp://x:1"]}, "is not an etcd URL"),
    ({"endpoints": ["http://x:99999"]}, "is not an etcd URL"),
    ({"endpoints": ["http://x:2379/v3"]}, "is not an etcd URL"),
    ({"prefix": "coreos.com/network"}, "--etcd-prefix"),
    ({"prefix": "/"}, "--etcd-prefix"),
    ({"renew_margin": 0}, "--subnet-lease-renew-margin"),
    ({"renew_margin": 24 * 3600}, "--subnet-lease-renew-margin"),
    ({"ttl": 1, "renew_margin": 0}, "too short"),
    ({"username": "u"}, "--etcd-username and --etcd-password go together"),
    ({"certfile": "/c.pem"}, "--etcd-certfile and --etcd-keyfile go together"),
    ({"cafile": "/ca.pem"}, "no --etcd-endpoints URL is https"),
    ({"attempts": 0}, "at least 1"),
])
def test_unusable_options_are_config_errors_naming_the_flag(opts, words):
    with pytest.raises(ConfigError, match=words):
        EtcdOptions(**opts).check()


def test_endpoints_parse_like_flanneld_flags():
    assert [str(e) for e in EtcdOptions(endpoints="http://a:1, https://[fd00::1]:2379,").check()] == \
        ["http://a:1", "https://[fd00::1]:2379"]
    assert parse_endpoint("http://etcd") == Endpoint("http", "etcd", 2379)
    assert [str(e) for e in EtcdOptions().check()] == ["http://127.0.0.1:4001", "http://127.0.0.1:2379"]


def test_tls_files_are_checked_before_any_request(tmp_path):
    with pytest.raises(StoreError, match=r"--etcd-cafile=/no/ca.pem does not exist"):
        EtcdOptions(endpoints=["https://127.0.0.1:2379"], cafile="/no/ca.pem").check()
    bad = tmp_path / "ca.pem"
    bad.write_text("junk")
    with pytest.raises(StoreError, match="holds no usable CA certificate"):
        EtcdOptions(endpoints=["https://127.0.0.1:2379"], cafile=str(bad)).check()


# --- acquire / renew over an in-memory store ------------------------------------------------

class MemoryStore:
    """The few etcd calls the manager makes, on a dict; ``lose_creates`` makes that many creating
    transactions fail as if another node had written the key first."""

    def __init__(self, options: EtcdOptions, clock: Any) -> None:
        self.options, self.clock = options, clock
        self.kv: Dict[str, KeyValue] = {}
        self.leases: Dict[int, int] = {}
        self.rev = 1
        self.lose_creates = 0
        self.txns: List[str] = []

    def range(self, key: str, prefix: bool = False, attempts: Optional[int] = None) -> Tuple[List[KeyValue], int]:
        hits = [kv for k, kv in sorted(self.kv.items()) if (k.startswith(key) if prefix else k == key)]
        return hits, self.rev

    def grant(self, ttl: int) -> int:
        lid = len(self.leases) + 100
        self.leases[lid] = ttl
        return lid

    def time_to_live(self, lid: int, attempts: Optional[int] = None) -> int:
        return self.leases.get(lid, -1)

    def revoke(self, lid: int) -> None:
        self.leases.pop(lid, None)
        self.kv = {k: kv for k, kv in self.kv.items() if kv.lease != lid}

    def put(self, key: str, value: str, lease: int = 0) -> None:
        self.rev += 1
        old = self.kv.get(key)
        self.kv[key] = KeyValue(key, value, lease, self.rev, old.create_revision if old else self.rev)

    def txn(self, what: str, compare: Sequence[Dict[str, Any]], success: Sequence[Dict[str, Any]]) -> bool:
        self.txns.append(what)
        for c in compare:
            kv = self.kv.get(base64.b64decode(c["key"]).decode())
            if c["target"] == "CREATE":
                have = kv.create_revision if kv else 0
                ok = have == 0 if c["result"] == "EQUAL" else have > 0
                if c["result"] == "EQUAL" and self.lose_creates:
                    self.lose_creates -= 1
                    ok = False
            else:
                ok = kv is not None and kv.mod_revision == c["mod_revision"]
            if not ok:
                return False
        for op in success:
            if "request_put" in op:
                p = op["request_put"]
                self.put(base64.b64decode(p["key"]).decode(), base64.b64decode(p["value"]).decode(),
                         p.get("lease", 0))
            else:
                self.kv.pop(base64.b64decode(op["request_delete_range"]["key"]).decode(), None)
        return True

    def close(self) -> None:
        pass


class FixedClock:
    def time(self) -> float:
        return 1000.0

    def sleep(self, seconds: float, stop: Any = None) -> bool:
        return False


CONF = '{"Network": "10.244.0.0/16", "SubnetMin": "10.244.1.0", "SubnetMax": "10.244.3.0"}'


def memory_manager(conf: str = CONF) -> Tuple[EtcdSubnetManager, MemoryStore]:
    m = EtcdSubnetManager(EtcdOptions(ttl=600, renew_margin=60), clock=FixedClock(), choose=lambda free: free[0])
    store = MemoryStore(m.options, m.clock)
    store.put("/coreos.com/network/config", conf)
    m.client = store  # type: ignore[assignment]
    return m, store


def node(n: int) -> LeaseAttrs:
    return LeaseAttrs(public_ip=ipaddress.IPv4Address(f"192.0.2.{n}"), backend_type="vxlan",
                      backend_data={"VNI": 1, "VtepMAC": f"aa:bb:cc:dd:ee:{n:02x}"})


def test_lost_create_races_list_again_and_take_the_next_free_subnet():
    m, store = memory_manager()
    store.lose_creates = 2
    lease = m.acquire_lease(node(1))
    assert str(lease.subnet) == "10.244.1.0/24" and lease.expiration == 1600.0
    assert store.txns.count("create of /coreos.com/network/subnets/10.244.1.0-24") == 3
    assert len(store.leases) == 1  # the etcd leases granted for lost attempts were revoked


def test_ten_lost_races_give_up_with_a_lease_error():
    m, store = memory_manager()
    store.lose_creates = 10
    with pytest.raises(LeaseError, match="max retries reached"):
        m.acquire_lease(node(1))
    assert store.kv.keys() == {"/coreos.com/network/config"} and not store.leases


def test_full_range_is_out_of_subnets_and_reservations_count_as_taken():
    m, store = memory_manager()
    store.put(SUBNETS + "10.244.1.0-24", render_attrs(node(7)))  # a reservation: no lease
    store.put(SUBNETS + "10.244.2.0-24", render_attrs(node(8)), lease=store.grant(600))
    assert str(m.acquire_lease(node(1)).subnet) == "10.244.3.0/24"
    with pytest.raises(OutOfSubnets, match="out of subnets"):
        m.acquire_lease(node(2))


def test_own_reservation_is_used_without_a_ttl_and_own_lease_reused_on_a_new_etcd_lease():
    m, store = memory_manager()
    store.put(SUBNETS + "10.244.2.0-24", '{"PublicIP":"192.0.2.1"}')
    mine = m.acquire_lease(node(1))
    assert str(mine.subnet) == "10.244.2.0/24" and mine.expiration is None
    assert store.kv[SUBNETS + "10.244.2.0-24"].lease == 0
    assert m.renew_lease(mine).expiration is None

    old = store.grant(600)
    store.put(SUBNETS + "10.244.3.0-24", render_attrs(node(2)), lease=old)
    again = m.acquire_lease(node(2))
    assert str(again.subnet) == "10.244.3.0/24" and again.expiration == 1600.0
    assert store.kv[SUBNETS + "10.244.3.0-24"].lease != old and old not in store.leases


def test_own_lease_changed_meanwhile_is_not_overwritten():
    m, store = memory_manager()
    store.put(SUBNETS + "10.244.3.0-24", render_attrs(node(2)), lease=store.grant(600))
    real_range = store.range
    lists = []

    def racing_range(key: str, prefix: bool = False, attempts: Optional[int] = None):
        out = real_range(key, prefix, attempts)
        lists.append(key)
        if prefix and len(lists) == 2:  # someone rewrites the key right after our first list
            store.put(SUBNETS + "10.244.3.0-24", render_attrs(node(2)), lease=store.grant(600))
        return out

    store.range = racing_range  # type: ignore[assignment]
    lease = m.acquire_lease(node(2))
    assert str(lease.subnet) == "10.244.3.0/24"
    assert store.txns.count("update of /coreos.com/network/subnets/10.244.3.0-24") == 2  # lost once, then won


def test_incompatible_own_lease_is_deleted_before_a_new_one():
    m, store = memory_manager()
    store.put(SUBNETS + "10.244.200.0-24", render_attrs(node(1)), lease=store.grant(600))  # outside Min..Max
    lease = m.acquire_lease(node(1))
    assert str(lease.subnet) == "10.244.1.0/24"
    assert sorted(k for k in store.kv if k.startswith(SUBNETS)) == [SUBNETS + "10.244.1.0-24"]


def test_renew_of_a_vanished_key_is_revoked():
    m, store = memory_manager()
    lease = m.acquire_lease(node(1))
    del store.kv[SUBNETS + "10.244.1.0-24"]
    assert not m.lease_exists(lease)
    with pytest.raises(LeaseRevoked, match="has been revoked"):
        m.renew_lease(lease)
    assert not any(k.startswith(SUBNETS) for k in store.kv)  # not recreated


def test_missing_config_retries_then_names_the_key():
    m, store = memory_manager()
    del store.kv["/coreos.com/network/config"]
    with pytest.raises(ConfigError, match="/coreos.com/network/config does not exist"):
        m.network_config()


def test_renew_never_recreates_a_key_deleted_between_its_read_and_its_write():
    m, store = memory_manager()
    lease = m.acquire_lease(node(1))
    real_range = store.range

    def read_then_deleted(key: str, prefix: bool = False, attempts: Optional[int] = None):
        out = real_range(key, prefix, attempts)
        store.kv.pop(SUBNETS + "10.244.1.0-24", None)  # an operator's etcdctl del, just after our read
        return out

    store.range = read_then_deleted  # type: ignore[assignment]
    with pytest.raises(LeaseRevoked, match="disappeared from etcd while renewing"):
        m.renew_lease(lease)
    assert not any(k.startswith(SUBNETS) for k in store.kv)


# --- answers that are not etcd's (a proxy, a wrong port) -------------------------------------

class NotEtcd(http.server.BaseHTTPRequestHandler):
    answers: Dict[str, Tuple[int, bytes]] = {}

    def do_GET(self) -> None:
        self.do_POST()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body = self.answers.get(self.path, (404, b"404 page not found"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def not_etcd():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotEtcd)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    NotEtcd.answers = {}


@pytest.mark.parametrize("answers,words", [
    ({}, "answered HTTP 404 ('404 page not found'): is this etcd's v3 API"),
    ({"/version": (200, b'{"etcdserver":"3.4.23"}'), "/v3/kv/range": (200, b"<html>hello</html>")},
     "something that is not JSON"),
    ({"/version": (200, b'{"etcdserver":"3.4.23"}'), "/v3/kv/range": (200, b'{"header":{"revision":"x"}}')},
     "unexpected answer"),
    ({"/version": (200, b'{"etcdserver":"3.4.23"}'), "/v3/kv/range": (200, b'[1, 2]')}, "unexpected answer"),
    ({"/version": (200, b'{"nope":1}')}, "Malformed response from version API"),
])
def test_answers_that_are_not_etcds_are_one_store_error(not_etcd, answers, words):
    NotEtcd.answers = answers
    m = EtcdSubnetManager(EtcdOptions(endpoints=[f"http://127.0.0.1:{not_etcd.server_port}"]), clock=FixedClock())
    with pytest.raises(StoreError, match=re.escape(words)) as info:
        m.network_config()
    assert not isinstance(info.value, StoreUnavailable)


# --- the watcher's loop, over a scripted client ----------------------------------------------

class ScriptedStream:
    def __init__(self, lines: List[bytes]) -> None:
        self._lines, self.closed, self.endpoint = lines, False, "http://scripted:2379"
        self._done = threading.Event()

    def lines(self):
        yield from self._lines
        self._done.wait(10)  # then silent until closed

    def close(self) -> None:
        self.closed = True
        self._done.set()


class ScriptedClient:
    """range() and watch() answer from scripts; an Exception in a script is raised."""

    def __init__(self, ranges: List[Any], streams: List[Any]) -> None:
        self.ranges, self.streams = ranges, streams
        self.options, self.clock = EtcdOptions(), FixedClock()
        self.watched_from: List[int] = []
        self.failed: List[str] = []

    def range(self, key: str, prefix: bool = False, attempts: Optional[int] = None):
        step = self.ranges.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    def watch(self, prefix: str, start_revision: int):
        self.watched_from.append(start_revision)
        step = self.streams.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    def record_failure(self, what: str) -> None:
        self.failed.append(what)

    def forget_token(self) -> None:
        pass


def test_watcher_survives_a_library_surprise_and_resumes_after_the_last_event(caplog):
    from cni_flannel.daemon.etcd.watch import LeaseWatcher

    stop = threading.Event()
    got: List[Any] = []
    first = ScriptedStream([line({"header": {"revision": "7"}, "created": True}),
                            line({"header": {"revision": "9"},
                                  "events": [put_event(SUBNETS + "10.244.4.0-24", VALUE, 9)]}),
                            b'{"error":{"message":"transport is closing"}}'])
    second = ScriptedStream([line({"events": [delete_event(SUBNETS + "10.244.4.0-24", 10)]})])
    client = ScriptedClient([RuntimeError("boom"), ([], 6)], [first, StoreUnavailable("refused"), second])

    def sink(batch: Any) -> None:
        got.append(batch)
        if len(got) == 3:
            stop.set()

    watcher = LeaseWatcher(client, SUBNETS, sink, stop)  # type: ignore[arg-type]
    thread = threading.Thread(target=watcher.run)
    thread.start()
    thread.join(20)
    assert not thread.is_alive()
    assert got[0].leases == [] and [e.type for e in got[1]] == [ADDED] and [e.type for e in got[2]] == [REMOVED]
    assert client.watched_from == [7, 10, 10]  # after the list at 6; then one past the last event
    assert "unexpected RuntimeError('boom')" in caplog.text and "transport is closing" in caplog.text
    assert client.failed == ["watch"]  # the stream's end (failed opens/lists are the client's to count)


def test_a_failing_sink_leaves_watch_leases_with_its_own_error():
    from cni_flannel.daemon.etcd.watch import LeaseWatcher

    def sink(batch: Any) -> None:
        raise KeyError("main loop bug")

    client = ScriptedClient([([], 3)], [])
    with pytest.raises(KeyError, match="main loop bug"):
        LeaseWatcher(client, SUBNETS, sink, threading.Event()).run()  # type: ignore[arg-type]
