"""The main loop without root: an in-memory subnet manager, the in-memory kernel, recorded
firewall calls.  Start-up order, subnet.env, peers from the snapshot and events, revocation,
stop without removing anything, resync repairs, bounded retries, renewal timing."""
from __future__ import annotations

import ipaddress
import threading
import time

import pytest

from cni_flannel.daemon import iface
from cni_flannel.daemon.errors import LeaseRevoked, PreflightError, StoreUnavailable
from cni_flannel.daemon.lease import Lease
from cni_flannel.daemon.manager import ADDED, REMOVED, Event
from cni_flannel.daemon.metrics import Metrics
from cni_flannel.daemon.run import Daemon, Options
from tests.harness.wait import wait_until
from tests.unit.daemon_doubles import MemoryManager, RecordingMasq, probe
from tests.unit.test_daemon_backends_fake import FakeKernel

MAC = {2: "0a:58:0a:f4:02:00", 3: "0a:58:0a:f4:03:00"}


def peer(n: int) -> Lease:
    return Lease.from_dict({"Subnet": f"10.244.{n}.0/24", "PublicIP": f"198.18.0.{n}", "BackendType": "vxlan",
                            "BackendData": {"VNI": 1, "VtepMAC": MAC.get(n, "0a:58:0a:f4:09:00")}})


def host(k: FakeKernel) -> iface.Host:
    eth0 = iface.Iface(k.eth0.index, "eth0", 1500, (ipaddress.ip_address("198.18.0.1"),))
    return iface.Host((eth0,), (iface.RouteInfo(ipaddress.ip_network("0.0.0.0/0"), k.eth0.index),))


class Rig:
    def __init__(self, tmp_path, manager=None, **opts) -> None:
        self.k = FakeKernel()
        self.manager = manager or MemoryManager(peers=[peer(2)])
        self.masqs = []
        self.path = str(tmp_path / "run" / "flannel" / "subnet.env")

        def masq(cfg):
            m = RecordingMasq(cfg)
            self.masqs.append(m)
            return m

        o = Options(subnet_file=self.path, ip_masq=True, resync=opts.pop("resync", 0.2), **opts)
        self.daemon = Daemon(o, self.manager, handle=self.k, probe=probe(), masq_factory=masq,
                             metrics=Metrics(), read_host=host)
        self.result = None
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.daemon.run()
        except Exception as exc:  # noqa: BLE001
            self.error = exc

    def start(self) -> "Rig":
        self.thread.start()
        wait_for(lambda: self.daemon.status.ready or self.error, "ready")
        return self

    def routes(self):
        return sorted(r.dst for r in self.k.routes() if r.dst.startswith("10.244."))

    def finish(self, timeout: float = 5.0):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "daemon did not stop"
        return self.result, self.error


def wait_for(cond, what: str, timeout: float = 5.0) -> None:
    wait_until(cond, timeout, what, interval=0.01)  # the harness's wait: fails the test at the deadline


def test_start_leases_writes_subnet_env_and_programs_the_snapshot(tmp_path):
    rig = Rig(tmp_path).start()
    with open(rig.path) as f:
        assert f.read() == ("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\n"
                            "FLANNEL_IPMASQ=true\n")
    assert rig.masqs[0].calls[0] == "reconcile" and rig.masqs[0].cfg.subnets == ("10.244.1.0/24",)
    own = rig.manager.leases["10.244.1.0-24"]
    assert own.attrs.backend_data["VtepMAC"] == rig.k.link("flannel.1").mac  # leased the device's MAC
    wait_for(lambda: rig.routes() == ["10.244.2.0/24"], "peer 2's route")
    rig.manager.push([Event(ADDED, peer(3))])
    wait_for(lambda: rig.routes() == ["10.244.2.0/24", "10.244.3.0/24"], "peer 3's route")
    rig.manager.push([Event(REMOVED, peer(2))])
    wait_for(lambda: rig.routes() == ["10.244.3.0/24"], "peer 2 removed")
    rig.daemon.request_stop()
    assert rig.finish() == (0, None)
    assert rig.routes() == ["10.244.3.0/24"] and rig.k.find_link("flannel.1")  # nothing removed on stop
    assert "10.244.1.0-24" in rig.manager.leases and rig.manager.closed


def test_stale_entries_are_removed_at_start(tmp_path):
    rig = Rig(tmp_path)
    from cni_flannel.daemon.backends.vxlan import VxlanBackend
    be = VxlanBackend({}, networks=["10.244.0.0/16"], handle=rig.k)
    be.setup(peer(1))
    be.reconcile([peer(2), peer(9)])  # 9 vanished while the daemon was down
    assert rig.routes() == ["10.244.2.0/24", "10.244.9.0/24"]
    rig.start()
    wait_for(lambda: rig.routes() == ["10.244.2.0/24"], "stale route gone")
    rig.daemon.request_stop()
    rig.finish()


def test_own_lease_removed_is_revoked(tmp_path):
    rig = Rig(tmp_path).start()
    own = rig.manager.leases["10.244.1.0-24"]
    rig.manager.push([Event(REMOVED, own)])
    result, error = rig.finish()
    assert isinstance(error, LeaseRevoked) and "revoked" in str(error)


def test_snapshot_without_our_lease_is_revoked(tmp_path):
    rig = Rig(tmp_path).start()
    from cni_flannel.daemon.manager import Snapshot
    rig.manager.push(Snapshot([peer(2)]))
    assert isinstance(rig.finish()[1], LeaseRevoked)


def test_unreachable_store_is_retried_with_backoff_then_gives_up_without_subnet_env(tmp_path):
    m = MemoryManager(unavailable=100)
    rig = Rig(tmp_path, manager=m, startup_timeout=2.5)
    started = time.monotonic()
    rig.thread.start()
    result, error = rig.finish(timeout=10)
    assert isinstance(error, StoreUnavailable) and "gave up after" in str(error)
    assert m.calls == 2 and time.monotonic() - started >= 1.0  # 1 s, then 2 s would exceed 2.5 s
    assert not (tmp_path / "run").exists()


def test_store_that_comes_back_is_used(tmp_path):
    rig = Rig(tmp_path, manager=MemoryManager(unavailable=1), startup_timeout=10).start()
    assert rig.daemon.status.ready
    rig.daemon.request_stop()
    assert rig.finish() == (0, None)


def test_stop_during_startup_retries_exits_zero(tmp_path):
    rig = Rig(tmp_path, manager=MemoryManager(unavailable=100), startup_timeout=60)
    rig.thread.start()
    wait_for(lambda: rig.manager.calls >= 2, "a start-up retry")  # stopped while retrying, not before
    rig.daemon.request_stop()
    assert rig.finish() == (0, None) and not rig.daemon.status.ready


def test_preflight_failure_changes_nothing(tmp_path):
    rig = Rig(tmp_path)
    rig.daemon.probe = probe(bridge_nf=False)
    rig.thread.start()
    _, error = rig.finish()
    assert isinstance(error, PreflightError) and "modprobe br_netfilter" in str(error)
    assert rig.k.find_link("flannel.1") is None and not rig.masqs and list(rig.manager.leases) == ["10.244.2.0-24"]


def test_resync_reapplies_drifted_rules_and_recreates_a_deleted_vtep(tmp_path):
    rig = Rig(tmp_path).start()
    wait_for(lambda: rig.routes() == ["10.244.2.0/24"], "peer route")
    mac = rig.k.link("flannel.1").mac
    rig.masqs[0].drift = ["FLANNEL-POSTRTG: rule missing"]
    rig.k.delete_link("flannel.1")
    wait_for(lambda: "apply" in rig.masqs[0].calls, "rules re-applied")
    wait_for(lambda: rig.k.find_link("flannel.1") is not None and rig.routes() == ["10.244.2.0/24"],
             "flannel.1 recreated with its peer")
    assert rig.k.link("flannel.1").mac == mac
    rig.daemon.request_stop()
    rig.finish()


def test_short_ttl_renews_before_expiry_without_a_busy_loop(tmp_path):
    m = MemoryManager(ttl=1.2)
    rig = Rig(tmp_path, manager=m, renew_margin=3600).start()
    time.sleep(1.5)
    assert 1 <= m.renewals <= 6, m.renewals  # about every half of the remaining time
    rig.daemon.request_stop()
    rig.finish()


def test_failed_renewal_is_retried_later(tmp_path):
    m = MemoryManager(ttl=0.6)
    m.fail_renew = True
    rig = Rig(tmp_path, manager=m, renew_retry=0.5).start()
    time.sleep(1.2)
    assert 1 <= m.renewals <= 3, m.renewals
    rig.daemon.request_stop()
    assert rig.finish() == (0, None)
