"""KubeSubnetManager against the test API server (tests/harness/kubeapi.py), through the real
client library: lease from podCIDRs, annotations and the condition on the Node, waiting for a
podCIDR, the peer watch (events, resume, 410 re-list, restarts), and every bad input.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import queue
import threading
import time

import pytest

from cni_flannel.daemon.errors import ConfigError, StoreError, StoreUnavailable
from cni_flannel.daemon.kube import Connection, KubeOptions, KubeSubnetManager
from cni_flannel.daemon.lease import LeaseAttrs
from cni_flannel.daemon.manager import ADDED, REMOVED, Snapshot
from tests.harness.kubeapi import KubeAPI

pytestmark = pytest.mark.integration

P = "flannel.alpha.coreos.com/"
MAC1, MAC2 = "0a:58:0a:f4:01:01", "0a:58:0a:f4:01:02"
NET_CONF = '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'
DUAL_CONF = ('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fc00::/48", '
             '"Backend": {"Type": "vxlan"}}')


def vxlan_attrs(ip: str = "192.0.2.11", mac: str = MAC1, ip6: str = "", mac6: str = "") -> LeaseAttrs:
    return LeaseAttrs(public_ip=ipaddress.IPv4Address(ip), backend_type="vxlan",
                      backend_data={"VNI": 1, "VtepMAC": mac},
                      public_ipv6=ipaddress.IPv6Address(ip6) if ip6 else None,
                      backend_v6_data={"VNI": 1, "VtepMAC": mac6} if mac6 else None)


def peer_annotations(ip: str, mac: str) -> dict:
    return {P + "kube-subnet-manager": "true", P + "backend-type": "vxlan", P + "public-ip": ip,
            P + "backend-data": json.dumps({"VNI": 1, "VtepMAC": mac})}


@pytest.fixture
def api():
    with KubeAPI(bookmark_interval=0.3) as server:
        yield server


@pytest.fixture
def conf_file(tmp_path):
    path = tmp_path / "net-conf.json"
    path.write_text(NET_CONF)
    return path


def manager(api: KubeAPI, conf_file, node: str = "n1", **kw) -> KubeSubnetManager:
    opts = KubeOptions(connection=Connection(api_url=api.url, request_timeout=3), node_name=node,
                       net_config_path=str(conf_file), watch_timeout=kw.pop("watch_timeout", 5),
                       poll_interval=0.1, backoff_cap=0.5, **kw)
    return KubeSubnetManager(opts)


def patches(api: KubeAPI):
    return [p.split("?")[0] for m, p in api.requests if m == "PATCH"]


# --- our lease ---------------------------------------------------------------------------------

def test_acquire_records_annotations_once(api, conf_file):
    api.add_node("n1", pod_cidrs=["10.244.0.0/24"])
    m = manager(api, conf_file)
    lease = m.acquire_lease(vxlan_attrs())
    assert str(lease.subnet) == "10.244.0.0/24" and lease.ipv6_subnet is None and lease.expiration is None
    ann = api.get("n1")["metadata"]["annotations"]
    assert ann == {P + "backend-data": '{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:01"}', P + "backend-type": "vxlan",
                   P + "kube-subnet-manager": "true", P + "public-ip": "192.0.2.11"}
    assert patches(api) == ["/api/v1/nodes/n1/status"]
    m.acquire_lease(vxlan_attrs())  # nothing differs: no second patch
    assert len(patches(api)) == 1
    assert m.renew_lease(lease) is lease
    # a restart finds its VtepMAC on the node
    again = manager(api, conf_file)
    assert again.previous_attrs().backend_data == {"VNI": 1, "VtepMAC": MAC1}


def test_public_ip_overwrite_and_node_public_ip(api, conf_file):
    api.add_node("n1", pod_cidrs=["10.244.3.0/24"],
                 annotations={P + "public-ip-overwrite": "198.51.100.7", P + "node-public-ip": "198.51.100.8"})
    m = manager(api, conf_file)
    assert m.stored_public_ips() == (ipaddress.IPv4Address("198.51.100.8"), None)
    m.acquire_lease(vxlan_attrs())
    assert api.get("n1")["metadata"]["annotations"][P + "public-ip"] == "198.51.100.7"


def test_network_available_condition(api, conf_file):
    api.add_node("n1", pod_cidrs=["10.244.0.0/24"])
    manager(api, conf_file).mark_network_available()
    conds = {c["type"]: c for c in api.get("n1")["status"]["conditions"]}
    assert conds["Ready"]["status"] == "True"
    c = conds["NetworkUnavailable"]
    assert (c["status"], c["reason"], c["message"]) == ("False", "FlannelIsUp", "Flannel is running on this node")
    api.add_node("n2", pod_cidrs=["10.244.1.0/24"])
    manager(api, conf_file, "n2", set_node_network_unavailable=False).mark_network_available()
    assert [c["type"] for c in api.get("n2")["status"]["conditions"]] == ["Ready"]


def test_dual_stack_lease(api, tmp_path):
    conf = tmp_path / "dual.json"
    conf.write_text(DUAL_CONF)
    api.add_node("n1", pod_cidrs=["10.244.2.0/24", "fc00:0:0:2::/64"])
    m = manager(api, conf)
    lease = m.acquire_lease(vxlan_attrs(ip6="2001:db8::11", mac6=MAC2))
    assert (str(lease.subnet), str(lease.ipv6_subnet)) == ("10.244.2.0/24", "fc00:0:0:2::/64")
    ann = api.get("n1")["metadata"]["annotations"]
    assert ann[P + "public-ipv6"] == "2001:db8::11" and json.loads(ann[P + "backend-v6-data"])["VtepMAC"] == MAC2


def test_waits_for_pod_cidr_then_comes_up(api, conf_file, caplog):
    api.add_node("n1")
    m = manager(api, conf_file, wait_log_interval=0.5)
    got = queue.Queue()
    with caplog.at_level(logging.INFO, logger="cni_flannel.daemon.kube"):
        t = threading.Thread(target=lambda: got.put(m.acquire_lease(vxlan_attrs())))
        t.start()
        time.sleep(1.3)
        assert got.empty(), "acquired a lease without a podCIDR"
        api.patch("n1", {"spec": {"podCIDR": "10.244.9.0/24", "podCIDRs": ["10.244.9.0/24"]}}, "merge")
        lease = got.get(timeout=5)
        t.join(5)
    assert str(lease.subnet) == "10.244.9.0/24"
    waits = [r.getMessage() for r in caplog.records if "has no podCIDR yet" in r.getMessage()]
    assert 2 <= len(waits) <= 4, waits  # repeated, not once per poll (13 polls happened)


def test_wait_for_pod_cidr_ends_on_close(api, conf_file):
    api.add_node("n1")
    m = manager(api, conf_file)
    threading.Timer(0.5, m.close).start()
    with pytest.raises(StoreUnavailable, match="stopped while node 'n1' had no podCIDR"):
        m.acquire_lease(vxlan_attrs())


# --- bad input -----------------------------------------------------------------------------------

def test_forbidden_patch_is_a_clear_error(api, conf_file):
    api.add_node("n1", pod_cidrs=["10.244.0.0/24"])
    api.forbid("patch", "nodes/status")
    with pytest.raises(StoreError) as err:
        manager(api, conf_file).acquire_lease(vxlan_attrs())
    assert not isinstance(err.value, StoreUnavailable)
    assert "403 Forbidden" in str(err.value) and "nodes/status" in str(err.value) and "ClusterRole" in str(err.value)
    assert api.get("n1")["metadata"]["annotations"] == {}


def test_unreachable_api_is_retryable(conf_file):
    with KubeAPI() as gone:
        url = gone.url
    m = KubeSubnetManager(KubeOptions(connection=Connection(api_url=url, request_timeout=2), node_name="n1",
                                      net_config_path=str(conf_file)))
    with pytest.raises(StoreUnavailable, match="unreachable"):
        m.acquire_lease(vxlan_attrs())


@pytest.mark.parametrize("cidrs, match", [
    (["10.99.0.0/24"], "outside net-conf.json Network=10.244.0.0/16"),
    (["10.244.0.0/24", "10.244.1.0/24"], "two IPv4 podCIDRs"),
    (["bogus"], "is not a CIDR"),
])
def test_bad_pod_cidr(api, conf_file, cidrs, match):
    api.add_node("n1", pod_cidrs=cidrs)
    with pytest.raises(ConfigError, match=match):
        manager(api, conf_file).acquire_lease(vxlan_attrs())
    assert api.get("n1")["metadata"]["annotations"] == {}


def test_missing_node_and_node_name(api, conf_file):
    with pytest.raises(StoreError, match="node 'ghost' does not exist"):
        manager(api, conf_file, "ghost").acquire_lease(vxlan_attrs())
    with pytest.raises(ConfigError, match="NODE_NAME is not set"):
        manager(api, conf_file, "").acquire_lease(vxlan_attrs())


@pytest.mark.parametrize("text, match", [
    ("{", "net-conf.json"), ('{"Network": "10.244.0.0/33"}', "Network"),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "nope"}}', "nope"),
])
def test_bad_net_conf(api, tmp_path, text, match):
    conf = tmp_path / "net-conf.json"
    conf.write_text(text)
    with pytest.raises(ConfigError, match=match):
        manager(api, conf).network_config()


def test_kubeconfig_and_in_cluster_config(api, conf_file, tmp_path, monkeypatch):
    api.token = "s3cret"
    api.add_node("n1", pod_cidrs=["10.244.0.0/24"])
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": api.url}}],
        "users": [{"name": "u", "user": {"token": "s3cret"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    opts = KubeOptions(connection=Connection(kubeconfig=str(kubeconfig)), node_name="n1",
                       net_config_path=str(conf_file))
    assert str(KubeSubnetManager(opts).acquire_lease(vxlan_attrs()).subnet) == "10.244.0.0/24"
    bad = tmp_path / "bad"
    bad.write_text("clusters: [")
    with pytest.raises(ConfigError, match="--kubeconfig-file .*bad: cannot use it"):
        KubeSubnetManager(KubeOptions(connection=Connection(kubeconfig=str(bad)), node_name="n1"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST/PORT unset"):
        KubeSubnetManager(KubeOptions(node_name="n1"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
    with pytest.raises(ConfigError, match="service account in .*nosa"):
        KubeSubnetManager(KubeOptions(node_name="n1", connection=Connection(service_account_dir=str(tmp_path / "nosa"))))


# --- the peer watch --------------------------------------------------------------------------------

class Watch:
    def __init__(self, m: KubeSubnetManager):
        self.batches: "queue.Queue" = queue.Queue()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=m.watch_leases, args=(self.batches.put, self.stop), daemon=True)
        self.thread.start()

    def next(self, timeout: float = 10.0):
        try:
            return self.batches.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no batch within {timeout}s")

    def quiet(self, seconds: float = 1.0) -> None:
        try:
            extra = self.batches.get(timeout=seconds)
        except queue.Empty:
            return
        pytest.fail(f"unexpected batch {extra}")

    def close(self) -> None:
        self.stop.set()


def keys(leases):
    return sorted((str(l.subnet), str(l.attrs.public_ip)) for l in leases)


def test_watch_snapshot_events_and_filtering(api, conf_file, caplog):
    api.add_node("n1", pod_cidrs=["10.244.0.0/24"], annotations=peer_annotations("192.0.2.11", MAC1))
    api.add_node("n2", pod_cidrs=["10.244.1.0/24"], annotations=peer_annotations("192.0.2.12", MAC1))
    api.add_node("foreign", pod_cidrs=["10.244.7.0/24"])  # not flannel's
    w = Watch(manager(api, conf_file))
    try:
        snap = w.next()
        assert isinstance(snap, Snapshot)
        assert keys(snap.leases) == [("10.244.0.0/24", "192.0.2.11"), ("10.244.1.0/24", "192.0.2.12")]
        api.add_node("n3", pod_cidrs=["10.244.2.0/24"], annotations=peer_annotations("192.0.2.13", MAC1))
        [ev] = w.next()
        assert (ev.type, str(ev.lease.subnet), ev.lease.side(4).vtep_mac) == (ADDED, "10.244.2.0/24", MAC1)
        api.patch("n3", {"metadata": {"labels": {"unrelated": "1"}}, "status": {"images": []}}, "merge")
        w.quiet(0.8)  # nothing the peers care about
        api.patch("n3", {"metadata": {"annotations": {P + "backend-data": json.dumps({"VNI": 1, "VtepMAC": MAC2})}}}, "merge")
        [ev] = w.next()
        assert (ev.type, ev.lease.side(4).vtep_mac) == (ADDED, MAC2)
        api.patch("n3", {"metadata": {"annotations": {P + "public-ip": "192.0.2.99"}}}, "merge")
        [ev] = w.next()
        assert str(ev.lease.attrs.public_ip) == "192.0.2.99"
        with caplog.at_level(logging.WARNING, logger="cni_flannel.daemon.kube"):
            api.add_node("bad", pod_cidrs=["10.244.5.0/24"],
                         annotations={**peer_annotations("192.0.2.15", MAC1), P + "public-ip": "not-an-ip"})
            api.patch("bad", {"metadata": {"labels": {"x": "1"}}}, "merge")
            w.quiet(0.8)
        bad = [r.getMessage() for r in caplog.records if "'bad'" in r.getMessage()]
        assert len(bad) == 1 and "public-ip" in bad[0], bad
        api.delete("n3")
        [ev] = w.next()
        assert (ev.type, str(ev.lease.subnet)) == (REMOVED, "10.244.2.0/24")
        api.delete("foreign")
        w.quiet(0.5)
    finally:
        w.close()


def test_watch_resumes_after_restart_without_missing_anything(api, conf_file):
    api.add_node("n1", pod_cidrs=["10.244.0.0/24"], annotations=peer_annotations("192.0.2.11", MAC1))
    w = Watch(manager(api, conf_file))
    try:
        assert isinstance(w.next(), Snapshot)
        api.stop()  # watches dropped
        api.add_node("n2", pod_cidrs=["10.244.1.0/24"], annotations=peer_annotations("192.0.2.12", MAC1))
        api.jump(1000)
        api.start()  # history kept: the watch resumes from its resourceVersion
        [ev] = w.next()
        assert (ev.type, str(ev.lease.subnet)) == (ADDED, "10.244.1.0/24")
        # restarted with its history gone: 410 -> a fresh list (Snapshot) with what changed meanwhile
        api.stop()
        api.delete("n1")
        api.add_node("n4", pod_cidrs=["10.244.4.0/24"], annotations=peer_annotations("192.0.2.14", MAC1))
        api.jump(5000)
        api.compact()
        api.start()
        snap = w.next()
        assert isinstance(snap, Snapshot)
        assert keys(snap.leases) == [("10.244.1.0/24", "192.0.2.12"), ("10.244.4.0/24", "192.0.2.14")]
        api.delete("n2")
        [ev] = w.next()
        assert (ev.type, str(ev.lease.subnet)) == (REMOVED, "10.244.1.0/24")
    finally:
        w.close()


def test_bookmarks_keep_the_resume_point_fresh(api, conf_file):
    """Bookmarks move the watch's resourceVersion on; after a compaction the watch resumes from
    the bookmark's version (no 410, no second Snapshot)."""
    api.add_node("n1", pod_cidrs=["10.244.0.0/24"], annotations=peer_annotations("192.0.2.11", MAC1))
    w = Watch(manager(api, conf_file))
    try:
        assert isinstance(w.next(), Snapshot)
        api.jump(100)
        time.sleep(1.0)  # bookmarks every 0.3 s carry the new version
        api.stop()
        api.compact()
        api.start()
        api.add_node("n2", pod_cidrs=["10.244.1.0/24"], annotations=peer_annotations("192.0.2.12", MAC1))
        batch = w.next()
        assert not isinstance(batch, Snapshot), "re-listed although a bookmark had the current version"
        assert str(batch[0].lease.subnet) == "10.244.1.0/24"
    finally:
        w.close()


def test_in_cluster_service_account_over_tls(tmp_path, conf_file, monkeypatch):
    """The DaemonSet's way in: KUBERNETES_SERVICE_HOST/PORT and the mounted service account
    (token, ca.crt, namespace) -> https with the cluster CA and the bearer token."""
    from tests.harness.kubeapi import self_signed
    cert, key = self_signed(str(tmp_path))
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("sa-token")
    (sa / "namespace").write_text("kube-flannel")
    (sa / "ca.crt").write_bytes(open(cert, "rb").read())
    with KubeAPI(token="sa-token", tls=(cert, key)) as api:
        api.add_node("n1", pod_cidrs=["10.244.0.0/24"])
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
        opts = KubeOptions(node_name="n1", net_config_path=str(conf_file),
                           connection=Connection(service_account_dir=str(sa)))
        m = KubeSubnetManager(opts)
        assert m.client.server.startswith("https://127.0.0.1:")
        assert str(m.acquire_lease(vxlan_attrs()).subnet) == "10.244.0.0/24"
        m.mark_network_available()
        assert api.get("n1")["metadata"]["annotations"][P + "public-ip"] == "192.0.2.11"
        (sa / "token").write_text("revoked")
        with pytest.raises(StoreError, match="401 Unauthorized"):
            KubeSubnetManager(opts).acquire_lease(vxlan_attrs())
        (tmp_path / "other").mkdir()
        other_cert, _ = self_signed(str(tmp_path / "other"))  # a CA that did not sign the server
        (sa / "ca.crt").write_bytes(open(other_cert, "rb").read())
        (sa / "token").write_text("sa-token")
        with pytest.raises(StoreError, match="TLS certificate is not trusted") as err:
            KubeSubnetManager(opts).acquire_lease(vxlan_attrs())
        assert not isinstance(err.value, StoreUnavailable)  # not retried for minutes


def test_a_burst_of_changes_reaches_the_main_loop_in_few_batches(api, conf_file):
    """Events queued together are handed over together: 300 deletions replayed after a restart
    arrive as a handful of batches, in order, none lost."""
    for i in range(300):
        api.add_node(f"p{i:03d}", pod_cidrs=[f"10.244.{i // 2}.{128 * (i % 2)}/25"],
                     annotations=peer_annotations(f"192.0.2.{1 + i % 250}", MAC1))
    w = Watch(manager(api, conf_file))
    try:
        assert len(w.next().leases) == 300
        api.stop()
        for i in range(300):
            api.delete(f"p{i:03d}")
        api.start()
        removed, batches = [], 0
        while len(removed) < 300:
            batch = w.next()
            batches += 1
            removed += [str(ev.lease.subnet) for ev in batch if ev.type == REMOVED]
        assert removed == [f"10.244.{i // 2}.{128 * (i % 2)}/25" for i in range(300)]
        # 300 deletions: broken batching gives ~300 batches; 31 were seen on a loaded machine.
        assert batches <= 60, batches
    finally:
        w.close()
