"""The Kubernetes subnet manager's pure part (cni_flannel/daemon/kube/nodes.py): node -> lease,
which updates matter, the tracker's events, our annotation patch, the condition patch, and what a
restart reads back from our node."""
from __future__ import annotations

import datetime
import ipaddress
import json
import logging

import pytest

from cni_flannel.daemon.kube.nodes import (NodeTracker, network_available_patch, node_lease,
                                           own_annotations_patch, relevant, stored)
from cni_flannel.daemon.lease import LeaseAttrs, LeaseFormatError
from cni_flannel.daemon.manager import ADDED, REMOVED

P = "flannel.alpha.coreos.com/"
MAC = "0a:58:0a:f4:01:01"


def node(name="n1", cidrs=("10.244.1.0/24",), ip="192.0.2.11", mac=MAC, managed=True, **extra):
    ann = {P + "backend-type": "vxlan", P + "public-ip": ip, P + "backend-data": json.dumps({"VNI": 1, "VtepMAC": mac}, separators=(",", ":"))}
    if managed:
        ann[P + "kube-subnet-manager"] = "true"
    ann.update(extra)
    spec = {"podCIDR": cidrs[0], "podCIDRs": list(cidrs)} if cidrs else {}
    return {"metadata": {"name": name, "annotations": ann, "resourceVersion": "7"}, "spec": spec,
            "status": {"conditions": []}}


def test_node_lease_v4_and_dual_stack():
    lease = node_lease(node())
    assert (str(lease.subnet), str(lease.attrs.public_ip), lease.side(4).vtep_mac) == ("10.244.1.0/24", "192.0.2.11", MAC)
    dual = node(cidrs=("10.244.1.0/24", "fc00:0:0:1::/64"), **{
        P + "public-ipv6": "2001:db8::1", P + "backend-v6-data": json.dumps({"VNI": 1, "VtepMAC": MAC})})
    lease = node_lease(dual, enable_ipv4=True, enable_ipv6=True)
    assert str(lease.ipv6_subnet) == "fc00:0:0:1::/64" and str(lease.attrs.public_ipv6) == "2001:db8::1"
    with pytest.raises(LeaseFormatError, match="no IPv6 podCIDR"):
        node_lease(node(), enable_ipv6=True)
    with pytest.raises(LeaseFormatError, match="public-ip"):
        node_lease(node(ip="nope"))


def test_relevant_ignores_unrelated_changes():
    a, b = node(), node()
    b["metadata"]["labels"] = {"x": "y"}
    b["status"]["conditions"] = [{"type": "Ready"}]
    b["metadata"]["annotations"]["other/thing"] = "1"
    assert relevant(a, True, False) == relevant(b, True, False)
    assert relevant(a, True, False) != relevant(node(mac="0a:58:0a:f4:01:02"), True, False)
    assert relevant(a, True, False) != relevant(node(ip="192.0.2.12"), True, False)
    assert relevant(a, True, False) != relevant(node(cidrs=("10.244.2.0/24",)), True, False)
    # IPv6 annotations matter only with IPv6 on
    c = node(**{P + "public-ipv6": "2001:db8::1"})
    assert relevant(a, True, False) == relevant(c, True, False)
    assert relevant(a, True, True) != relevant(c, True, True)


def test_tracker_events(caplog):
    t = NodeTracker()
    leases = t.reset([node("n1"), node("n2", cidrs=("10.244.2.0/24",), ip="192.0.2.12"), node("x", managed=False)])
    assert sorted(str(l.subnet) for l in leases) == ["10.244.1.0/24", "10.244.2.0/24"]
    assert t.apply("MODIFIED", node("n1")) is None  # nothing relevant changed
    ev = t.apply("MODIFIED", node("n1", mac="0a:58:0a:f4:01:09"))
    assert ev.type == ADDED and ev.lease.side(4).vtep_mac == "0a:58:0a:f4:01:09"
    assert t.apply("ADDED", node("x", managed=False)) is None
    ev = t.apply("MODIFIED", node("n2", managed=False))  # no longer flannel's: gone for the peers
    assert ev.type == REMOVED and str(ev.lease.subnet) == "10.244.2.0/24"
    assert t.apply("DELETED", node("n2", managed=False)) is None
    ev = t.apply("DELETED", node("n1"))
    assert ev.type == REMOVED and str(ev.lease.subnet) == "10.244.1.0/24"
    assert len(t) == 0
    with caplog.at_level(logging.WARNING, logger="cni_flannel.daemon.kube"):
        assert t.apply("ADDED", node("bad", ip="x")) is None
        assert t.apply("MODIFIED", node("bad", ip="x")) is None  # same bad value: no second line
        assert t.apply("MODIFIED", node("bad", ip="y")) is None
    assert len([r for r in caplog.records if "'bad'" in r.getMessage()]) == 2
    # a good lease that turns bad is removed
    t.apply("ADDED", node("n5"))
    ev = t.apply("MODIFIED", node("n5", **{P + "backend-data": "{"}))
    assert ev.type == REMOVED


def attrs(ip="192.0.2.11", mac=MAC):
    return LeaseAttrs(public_ip=ipaddress.IPv4Address(ip), backend_type="vxlan", backend_data={"VNI": 1, "VtepMAC": mac})


def test_own_annotations_patch_holds_only_differences():
    bare = {"metadata": {"name": "n1"}}
    patch = own_annotations_patch(bare, attrs())
    assert patch == {"metadata": {"annotations": {
        P + "backend-data": '{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:01"}', P + "backend-type": "vxlan",
        P + "kube-subnet-manager": "true", P + "public-ip": "192.0.2.11"}}}
    assert own_annotations_patch(node(), attrs()) is None
    assert own_annotations_patch(node(), attrs(ip="192.0.2.99")) == {"metadata": {"annotations": {P + "public-ip": "192.0.2.99"}}}
    over = node(**{P + "public-ip-overwrite": "198.51.100.1"})
    assert own_annotations_patch(over, attrs()) == {"metadata": {"annotations": {P + "public-ip": "198.51.100.1"}}}
    custom = own_annotations_patch(bare, attrs(), prefix="example.com/net")
    assert sorted(custom["metadata"]["annotations"])[0] == "example.com/net-backend-data"


def test_network_available_patch_shape():
    t = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    assert network_available_patch(t) == {"status": {"conditions": [{
        "type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp",
        "message": "Flannel is running on this node", "lastTransitionTime": "2026-01-02T03:04:05Z",
        "lastHeartbeatTime": "2026-01-02T03:04:05Z"}]}}


def test_stored_reads_previous_run_and_operator_ips(caplog):
    s = stored(node(**{P + "node-public-ip": "198.51.100.5", P + "node-public-ipv6": "2001:db8::5"}))
    assert s.attrs.backend_type == "vxlan" and s.attrs.backend_data == {"VNI": 1, "VtepMAC": MAC}
    assert (str(s.node_public_ip), str(s.node_public_ipv6)) == ("198.51.100.5", "2001:db8::5")
    assert stored({"metadata": {"name": "n"}}).attrs is None
    with caplog.at_level(logging.WARNING, logger="cni_flannel.daemon.kube"):
        s = stored(node(**{P + "backend-data": "{", P + "node-public-ip": "2001:db8::1"}))
    assert s.attrs.backend_data is None and s.node_public_ip is None
    assert len(caplog.records) == 2
