"""EtcdSubnetManager's watch, TLS, auth and failure paths against a real etcd on 127.0.0.1."""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any, List

import pytest

from cni_flannel.daemon.errors import ConfigError, StoreError, StoreUnavailable
from cni_flannel.daemon.etcd import Clock, EtcdOptions, EtcdSubnetManager
from cni_flannel.daemon.manager import ADDED, REMOVED
from tests.harness.etcd import CertSet, EtcdError, EtcdServer, etcd, etcd_factory, free_port  # noqa: F401
from tests.harness.wait import wait_until
from tests.integration.etcd_manager import CONFIG, NET, SUBNETS, attrs, close_managers, manager, \
    subnet_keys, watches  # noqa: F401 (fixtures)

# flannel's Documentation/reservations.md, as etcdctl shows a lease upstream flanneld wrote.
UPSTREAM_KEY = "10.5.52.0-24"
UPSTREAM_VALUE = ('{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",'
                  '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}')
PEER = '{"PublicIP":"192.0.2.%d","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:00:00:%02x"}}'


class GateClock(Clock):
    """Real time, but a test can hold every retry wait until it says go."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.go = threading.Event()
        self.held = threading.Event()
        self.sleeps: List[float] = []

    def sleep(self, seconds: float, stop: Any = None) -> bool:
        self.sleeps.append(seconds)
        if self.hold.is_set():
            self.held.set()
            assert self.go.wait(30), "test never released the held wait"
        return super().sleep(seconds, stop)


class CountingClock(Clock):
    """Records the waits and does not sleep (a busy loop would show as zero or missing waits)."""

    def __init__(self) -> None:
        self.sleeps: List[float] = []

    def sleep(self, seconds: float, stop: Any = None) -> bool:
        self.sleeps.append(seconds)
        return False


# --- watch --------------------------------------------------------------------------------

def test_watch_snapshot_then_put_and_delete_events_and_bad_values_skipped(etcd, watches, caplog):
    etcd.put(CONFIG, NET)
    etcd.put(SUBNETS + "10.244.1.0-24", PEER % (1, 1))
    w = watches(manager(etcd))
    wait_until(lambda: w.snapshots(), 10, "the first snapshot")
    assert [str(x.subnet) for x in w.snapshots()[0].leases] == ["10.244.1.0/24"]
    caplog.set_level(logging.WARNING, logger="cni_flannel.daemon.etcd")
    etcd.put(SUBNETS + "10.244.2.0-24", "{not json")  # a broken peer: logged, skipped
    etcd.put(SUBNETS + "not-a-subnet", PEER % (3, 3))
    etcd.put(SUBNETS + "10.244.3.0-24", PEER % (3, 3))
    etcd.delete(SUBNETS + "10.244.1.0-24")
    wait_until(lambda: w.saw(REMOVED, "10.244.1.0/24"), 10, "REMOVED of 10.244.1.0/24")
    added = [e.lease for e in w.events() if e.type == ADDED]
    assert [str(x.subnet) for x in added] == ["10.244.3.0/24"]
    assert str(added[0].attrs.public_ip) == "192.0.2.3"
    assert "10.244.2.0-24" in caplog.text and "not-a-subnet" in caplog.text
    assert w.thread.is_alive() and len(w.snapshots()) == 1


def test_watch_resumes_after_etcd_restart_and_sees_a_lease_created_meanwhile(etcd, watches):
    etcd.put(CONFIG, NET)
    clock = GateClock()
    m = EtcdSubnetManager(EtcdOptions(**etcd.options()), clock=clock)
    failed: List[str] = []
    m.client.on_error = failed.append
    w = watches(m)
    wait_until(lambda: w.snapshots(), 10, "the first snapshot")
    clock.hold.set()
    etcd.stop()
    wait_until(clock.held.is_set, 10, "the watcher to notice the outage and wait")
    etcd.start()
    etcd.put(SUBNETS + "10.244.7.0-24", PEER % (7, 7))  # while the watcher is disconnected
    etcd.delete(SUBNETS + "10.244.7.0-24")
    etcd.put(SUBNETS + "10.244.8.0-24", PEER % (8, 8))
    clock.hold.clear()
    clock.go.set()
    wait_until(lambda: w.saw(ADDED, "10.244.8.0/24"), 15, "the lease created during the outage")
    assert [(e.type, str(e.lease.subnet)) for e in w.events()] == [
        (ADDED, "10.244.7.0/24"), (REMOVED, "10.244.7.0/24"), (ADDED, "10.244.8.0/24")]
    assert len(w.snapshots()) == 1  # resumed from the revision, not re-listed
    assert all(0 < s <= 5.0 for s in clock.sleeps)
    assert failed and set(failed) == {"watch"}
    m.close()


def test_compacted_history_gives_a_new_snapshot(etcd, watches):
    etcd.put(CONFIG, NET)
    etcd.put(SUBNETS + "10.244.1.0-24", PEER % (1, 1))
    gate = threading.Event()
    w = watches(manager(etcd), gate)  # the sink holds the first snapshot: the watch is not open yet
    wait_until(lambda: w.snapshots(), 10, "the first snapshot")
    etcd.put(SUBNETS + "10.244.2.0-24", PEER % (2, 2))
    etcd.delete(SUBNETS + "10.244.1.0-24")
    etcd.compact()  # the revisions after the snapshot are gone
    w.gate = None
    gate.set()
    wait_until(lambda: len(w.snapshots()) == 2, 15, "a second snapshot after compaction")
    assert [str(x.subnet) for x in w.snapshots()[1].leases] == ["10.244.2.0/24"]
    etcd.put(SUBNETS + "10.244.3.0-24", PEER % (3, 3))  # and watching goes on from there
    wait_until(lambda: w.saw(ADDED, "10.244.3.0/24"), 10, "an event after the re-list")


def test_own_lease_in_the_watch_has_its_expiry_peers_none(etcd, watches):
    etcd.put(CONFIG, NET)
    m = manager(etcd, ttl=60, renew_margin=10)
    lease = m.acquire_lease(attrs(1))
    etcd.put(SUBNETS + "10.244.200.0-24", PEER % (2, 2))
    w = watches(m)
    wait_until(lambda: w.snapshots(), 10, "the first snapshot")
    by_subnet = {str(x.subnet): x for x in w.snapshots()[0].leases}
    assert by_subnet["10.244.200.0/24"].expiration is None
    assert abs(by_subnet[str(lease.subnet)].expiration - lease.expiration) < 3
    m.renew_lease(lease)
    wait_until(lambda: w.saw(ADDED, str(lease.subnet)), 10, "our renewed lease as an event")


# --- interop ------------------------------------------------------------------------------

def test_upstream_written_values_are_read_and_ours_are_byte_compatible(etcd, watches):
    etcd.put(CONFIG, '{"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}')
    etcd.put(SUBNETS + UPSTREAM_KEY, UPSTREAM_VALUE)
    etcd.put(SUBNETS + "10.5.60.0-24", '{"PublicIP":"192.168.64.4","BackendType":"vxlan",'
                                       '"BackendData":{"VtepMAC":"3e:27:de:39:f1:1a"}}')  # pre-VNI flannel
    m = manager(etcd)
    w = watches(m)
    wait_until(lambda: w.snapshots(), 10, "the first snapshot")
    leases = {str(x.subnet): x for x in w.snapshots()[0].leases}
    assert str(leases["10.5.52.0/24"].attrs.public_ip) == "192.168.64.3"
    assert leases["10.5.52.0/24"].attrs.backend_data == {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"}
    assert leases["10.5.60.0/24"].attrs.backend_data == {"VtepMAC": "3e:27:de:39:f1:1a"}
    # the upstream node restarting with our flanneld finds its lease and writes it back identically
    again = m.acquire_lease(leases["10.5.52.0/24"].attrs)
    assert str(again.subnet) == "10.5.52.0/24"
    assert etcd.get(SUBNETS + UPSTREAM_KEY)["value"] == UPSTREAM_VALUE
    assert sorted(subnet_keys(etcd)) == ["10.5.52.0-24", "10.5.60.0-24"]


# --- TLS, auth, failures ------------------------------------------------------------------

def test_tls_with_client_certificates(etcd_factory, tmp_path):
    server = etcd_factory(tls=True)
    server.put(CONFIG, NET)
    lease = manager(server).acquire_lease(attrs(1))
    assert subnet_keys(server) == [lease.key]

    other_ca = CertSet(tmp_path / "other", name="other")
    with pytest.raises(StoreError, match=r"TLS with etcd at https://127\.0\.0\.1:\d+ failed: certificate verify "
                                         r"failed.*--etcd-cafile") as info:
        manager(server, cafile=str(other_ca.ca)).network_config()
    assert not isinstance(info.value, StoreUnavailable)  # not retried: it cannot get better
    with pytest.raises(StoreError, match="TLS with etcd"):  # a client certificate etcd does not trust
        manager(server, certfile=str(other_ca.client_cert), keyfile=str(other_ca.client_key)).network_config()
    with pytest.raises(StoreError, match=r"--etcd-cafile=/nonexistent/ca.pem does not exist"):
        manager(server, cafile="/nonexistent/ca.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(StoreError, match=r"--etcd-cafile=.*garbage.pem holds no usable CA certificate"):
        manager(server, cafile=str(garbage))
    with pytest.raises(StoreError, match="cannot be used as a client certificate"):
        manager(server, certfile=str(server.certs.client_cert), keyfile=str(other_ca.client_key))
    with pytest.raises(ConfigError, match="go together"):
        manager(server, certfile=str(server.certs.client_cert), keyfile="")


def test_http_and_https_mixed_up_say_so(etcd_factory):
    tls, plain = etcd_factory(tls=True), etcd_factory()
    with pytest.raises(StoreUnavailable, match=r"an https etcd asked over http\?"):
        manager(tls, endpoints=[tls.endpoint.replace("https:", "http:")], cafile="", certfile="", keyfile="",
                attempts=2).network_config()
    with pytest.raises(StoreError, match=r"does this endpoint speak https\?"):
        manager(plain, endpoints=[plain.endpoint.replace("http:", "https:")], attempts=2).network_config()


def test_auth_user_password_and_a_wrong_one(etcd_factory):
    server = etcd_factory(auth=True)
    server.put(CONFIG, NET)
    lease = manager(server).acquire_lease(attrs(1))
    assert subnet_keys(server) == [lease.key]
    with pytest.raises(StoreError, match=r"rejected user 'flannel'.*--etcd-password"):
        manager(server, password="wrong").network_config()
    with pytest.raises(StoreError, match="authentication enabled: set --etcd-username and --etcd-password"):
        manager(server, username="", password="").network_config()


def test_auth_token_renewed_after_etcd_restart(etcd_factory, watches):
    server = etcd_factory(auth=True)
    server.put(CONFIG, NET)
    m = manager(server, ttl=60, renew_margin=10)
    lease = m.acquire_lease(attrs(1))
    w = watches(m)
    wait_until(lambda: w.snapshots(), 10, "the first snapshot")
    server.restart()  # simple tokens die with the member
    assert m.renew_lease(lease).subnet == lease.subnet
    server.put(SUBNETS + "10.244.9.0-24", PEER % (9, 9))
    wait_until(lambda: w.saw(ADDED, "10.244.9.0/24"), 15, "an event after re-login")


def test_unreachable_etcd_is_store_unavailable_after_bounded_waited_attempts():
    port = free_port()  # nothing listens there
    clock = CountingClock()
    m = EtcdSubnetManager(EtcdOptions(endpoints=[f"http://127.0.0.1:{port}"], attempts=4), clock=clock)
    failed: List[str] = []
    m.client.on_error = failed.append  # the daemon's store-error metric hook
    with pytest.raises(StoreUnavailable, match=rf"failed 4 times: cannot reach etcd at http://127.0.0.1:{port}: "
                                               r"Connection refused"):
        m.network_config()
    assert m.client.attempts == 4 and failed == ["read"] * 4
    assert clock.sleeps == [0.2, 0.4, 0.8]  # a wait between attempts, doubling
    m.close()


def test_second_endpoint_used_when_the_first_is_down(etcd):
    etcd.put(CONFIG, NET)
    down = f"http://127.0.0.1:{free_port()}"
    clock = CountingClock()
    m = EtcdSubnetManager(EtcdOptions(**etcd.options(endpoints=[down, etcd.endpoint])), clock=clock)
    assert m.network_config().ipv4 is not None
    assert m.client.attempts == 2 and clock.sleeps == []  # the next endpoint at once
    m.close()
    both_down = EtcdSubnetManager(EtcdOptions(endpoints=[down, f"http://127.0.0.1:{free_port()}"], attempts=6),
                                  clock=clock)
    with pytest.raises(StoreUnavailable, match="failed 6 times"):
        both_down.network_config()
    assert clock.sleeps == [0.2, 0.4]  # a wait after each round over all endpoints
    both_down.close()


def test_missing_config_key_is_a_config_error_naming_the_key_after_retries(etcd):
    clock = CountingClock()
    m = EtcdSubnetManager(EtcdOptions(**etcd.options(config_attempts=3)), clock=clock)
    with pytest.raises(ConfigError, match=r"key /coreos.com/network/config does not exist.*etcdctl put"):
        m.network_config()
    assert len(clock.sleeps) == 2
    etcd.put(CONFIG, '{"Network": "10.244.0.0/30"}')
    with pytest.raises(ConfigError, match="etcd key /coreos.com/network/config"):
        m.network_config()
    m.close()


# --- the harness itself -------------------------------------------------------------------

def test_harness_etcd_start_failure_raises_and_close_removes_everything():
    server = EtcdServer()
    try:
        base, pid = server.base, server.proc.pid
        server.stop()
        with socket.socket() as taken:  # its port is busy now: the restart must fail loudly
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            taken.bind(("127.0.0.1", server.client_port))
            taken.listen()
            with pytest.raises(EtcdError, match="exited"):
                server.start(timeout=10)
        server.start()
        assert server.get(CONFIG) is None
    finally:
        server.close()
    assert not base.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(AssertionError, match="timed out after 0.1s waiting for nothing"):
        wait_until(lambda: False, 0.1, "nothing")
