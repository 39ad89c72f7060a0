"""Lease wire formats: etcd keys/values and Kubernetes node annotations, against literal examples."""

from __future__ import annotations

import ipaddress
from typing import Dict

import pytest

from cni_flannel.daemon import lease as L
from cni_flannel.daemon.lease import Lease, LeaseAttrs, LeaseFormatError, VxlanData

V4 = ipaddress.IPv4Network
V6 = ipaddress.IPv6Network
P = "flannel.alpha.coreos.com/"


# --- etcd keys ----------------------------------------------------------------------------

def test_key_paths() -> None:
    assert L.config_key() == "/coreos.com/network/config"
    assert L.subnets_prefix() == "/coreos.com/network/subnets"
    assert L.subnet_path(V4("10.244.1.0/24")) == "/coreos.com/network/subnets/10.244.1.0-24"
    assert L.subnet_path(V4("10.244.1.0/24"), V6("fc00::/64")) == "/coreos.com/network/subnets/10.244.1.0-24&fc00::-64"
    assert L.config_key("/kube-centos/network") == "/kube-centos/network/config"
    assert L.subnet_path(V4("10.1.2.0/24"), prefix="/x/") == "/x/subnets/10.1.2.0-24"


@pytest.mark.parametrize("key, v4, v6", [
    # pkg/subnet/subnet_test.go TestSubnetNodev4 / TestSubnetNodev6
    ("10.12.13.0-24", "10.12.13.0/24", None),
    ("10.12.13.0-24&fd00:12:13::-56", "10.12.13.0/24", "fd00:12:13::/56"),
    ("/coreos.com/network/subnets/10.244.1.0-24&fc00:0:0:1::-64", "10.244.1.0/24", "fc00:0:0:1::/64"),
])
def test_subnet_key_round_trip(key: str, v4: str, v6: str) -> None:
    sn, sn6 = L.parse_subnet_key(key)
    assert str(sn) == v4 and (str(sn6) if sn6 else None) == v6
    assert key.endswith(L.subnet_key(sn, sn6))


@pytest.mark.parametrize("key", [
    # pkg/subnet/subnet_test.go TestSubnetNodeInvalid, every one
    "10", "10.12.13.0", "10.12.13-24", "10.12.13.300-24", "10.12.13.0-24hi", "&2001::-56",
    "10.12.13.0-24&:12:13:-56", "10.12.13.0-24&20011::-56", "10.12.13.0-24&2001-56",
    "10.12.13.0-24&2001::", "10.12.13.0-24&2001::-56hi",
    "10.12.13.0-33", "/coreos.com/network/config",
])
def test_subnet_key_invalid(key: str) -> None:
    with pytest.raises(LeaseFormatError):
        L.parse_subnet_key(key)


def test_ipv6_only_key_uses_flannels_empty_ipv4() -> None:
    key = L.subnet_key(None, V6("fd00:0:0:5::/64"))
    assert key == "0.0.0.0-0&fd00:0:0:5::-64"
    assert L.parse_subnet_key(key) == (None, V6("fd00:0:0:5::/64"))


# --- etcd values --------------------------------------------------------------------------

# etcdctl output of a flannel >= 0.14 vxlan lease, quoted in public write-ups (PublicIPv6 is
# always written, null when absent; BackendType/BackendData are omitempty).
CURRENT = '{"PublicIP":"192.168.8.188","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"5a:67:18:61:6a:5d"}}'


def test_current_value_round_trips_byte_for_byte() -> None:
    attrs = L.parse_attrs(CURRENT)
    assert attrs.public_ip == ipaddress.IPv4Address("192.168.8.188")
    assert attrs.public_ipv6 is None and attrs.backend_type == "vxlan"
    assert VxlanData.from_json(attrs.backend_data) == VxlanData(1, "5a:67:18:61:6a:5d")
    assert L.render_attrs(attrs) == CURRENT


@pytest.mark.parametrize("old, rendered", [
    # flannel < 0.14 vxlan (no PublicIPv6, no VNI in BackendData), as etcdctl printed it
    ('{"PublicIP":"10.64.3.7","BackendType":"vxlan","BackendData":{"VtepMAC":"d6:51:2e:80:5c:69"}}',
     '{"PublicIP":"10.64.3.7","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VtepMAC":"d6:51:2e:80:5c:69"}}'),
    # the udp era: nothing but the public IP
    ('{"PublicIP":"10.168.0.3"}', '{"PublicIP":"10.168.0.3","PublicIPv6":null}'),
    # host-gw: no backend data
    ('{"PublicIP":"172.17.50.1","BackendType":"host-gw"}',
     '{"PublicIP":"172.17.50.1","PublicIPv6":null,"BackendType":"host-gw"}'),
    # Go matches field names case-insensitively
    ('{"publicip":"10.0.0.1","backendtype":"host-gw"}', '{"PublicIP":"10.0.0.1","PublicIPv6":null,"BackendType":"host-gw"}'),
])
def test_older_values_parse_and_render_as_flannel_does_now(old: str, rendered: str) -> None:
    assert L.render_attrs(L.parse_attrs(old)) == rendered


def test_dual_stack_value_round_trip() -> None:
    attrs = LeaseAttrs(public_ip=ipaddress.IPv4Address("192.0.2.11"), public_ipv6=ipaddress.IPv6Address("2001:db8::11"),
                       backend_type="vxlan", backend_data=VxlanData(1, "aa:bb:cc:00:00:01").to_json(),
                       backend_v6_data=VxlanData(1, "aa:bb:cc:00:00:02").to_json())
    text = L.render_attrs(attrs)
    assert text == ('{"PublicIP":"192.0.2.11","PublicIPv6":"2001:db8::11","BackendType":"vxlan",'
                    '"BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:00:00:01"},'
                    '"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:00:00:02"}}')
    assert L.parse_attrs(text) == attrs


def test_ipv6_only_value_writes_zero_public_ip() -> None:
    attrs = LeaseAttrs(public_ipv6=ipaddress.IPv6Address("2001:db8::1"), backend_type="host-gw")
    text = L.render_attrs(attrs)
    assert text == '{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::1","BackendType":"host-gw"}'
    assert L.parse_attrs(text) == attrs


def test_render_escapes_like_go() -> None:
    attrs = LeaseAttrs(public_ip=ipaddress.IPv4Address("192.0.2.1"), backend_type="x", backend_data={"a": "<&>é"})
    assert '"BackendData":{"a":"\\u003c\\u0026\\u003eé"}' in L.render_attrs(attrs)


@pytest.mark.parametrize("value", [
    "", "[1]", '{"PublicIP":"banana"}', '{"PublicIP":"2001:db8::1"}', '{"PublicIPv6":"10.0.0.1"}',
    '{"PublicIP":7}', '{"PublicIP":"10.0.0.1","BackendType":5}',
])
def test_bad_values(value: str) -> None:
    with pytest.raises(LeaseFormatError):
        L.parse_attrs(value)


def test_lease_from_kv_and_renewal() -> None:
    lease = L.lease_from_kv("/coreos.com/network/subnets/10.244.3.0-24", CURRENT, ttl=L.SUBNET_TTL, now=1000.0)
    assert lease.subnet == V4("10.244.3.0/24") and lease.ipv6_subnet is None
    assert lease.expiration == 1000.0 + 86400
    assert lease.renew_at() == 1000.0 + 86400 - 3600  # renewed an hour before expiry
    assert lease.key == "10.244.3.0-24"
    assert L.lease_from_kv("10.244.3.0-24", CURRENT).renew_at() is None  # no TTL: a reservation


def test_ttl_constants() -> None:
    assert L.SUBNET_TTL == 24 * 60 * 60 and L.RENEW_MARGIN == 60 * 60


# --- vxlan backend data -------------------------------------------------------------------

def test_vxlan_data() -> None:
    assert VxlanData.from_json({"VNI": 1, "VtepMAC": "5A-67-18-61-6A-5D"}) == VxlanData(1, "5a:67:18:61:6a:5d")
    assert VxlanData.from_json({"vtepmac": "2c:c2:60:23:0c:58"}).vni == 0  # F5 BIG-IP nodes omit VNI
    for bad in ({"VNI": 1}, {"VNI": "1", "VtepMAC": "aa:bb:cc:dd:ee:ff"}, {"VtepMAC": "aa:bb:cc:dd:ee"}, "x", None):
        with pytest.raises(LeaseFormatError):
            VxlanData.from_json(bad)


# --- Kubernetes annotations ---------------------------------------------------------------

# `kubectl get node node01 -o yaml` on a kube-flannel vxlan cluster (public tutorial output)
NODE01 = {
    P + "backend-data": '{"VNI":1,"VtepMAC":"16:ff:13:00:fc:f2"}',
    P + "backend-type": "vxlan",
    P + "kube-subnet-manager": "true",
    P + "public-ip": "192.32.16.6",
    "node.alpha.kubernetes.io/ttl": "0",
}


def test_node_annotations_parse_and_render_back() -> None:
    assert L.is_managed(NODE01)
    lease = L.lease_from_node(NODE01, ["10.244.1.0/24"], node="node01")
    assert lease.subnet == V4("10.244.1.0/24") and lease.ipv6_subnet is None and lease.expiration is None
    assert lease.attrs.public_ip == ipaddress.IPv4Address("192.32.16.6")
    assert VxlanData.from_json(lease.attrs.backend_data) == VxlanData(1, "16:ff:13:00:fc:f2")
    rendered = L.render_annotations(lease.attrs)
    assert rendered == {k: v for k, v in NODE01.items() if k.startswith(P)}
    assert L.annotations_patch(NODE01, lease.attrs) == {}  # nothing to patch on a restart


def test_hand_made_f5_node() -> None:
    # F5 BIG-IP docs: a dummy Node with backend-data lacking VNI and only the old podCIDR field
    node = {P + "public-ip": "10.1.1.4", P + "backend-data": '{"VtepMAC":"2c:c2:60:23:0c:58"}',
            P + "backend-type": "vxlan", P + "kube-subnet-manager": "true"}
    lease = L.lease_from_node(node, [], pod_cidr="10.244.20.0/24")
    assert lease.subnet == V4("10.244.20.0/24")
    assert VxlanData.from_json(lease.attrs.backend_data).vtep_mac == "2c:c2:60:23:0c:58"


def test_unmanaged_node() -> None:
    assert not L.is_managed({})
    assert not L.is_managed({P + "kube-subnet-manager": "false"})


def test_dual_stack_annotations() -> None:
    attrs = LeaseAttrs(public_ip=ipaddress.IPv4Address("192.0.2.11"), public_ipv6=ipaddress.IPv6Address("2001:db8::11"),
                       backend_type="vxlan", backend_data={"VNI": 1, "VtepMAC": "aa:bb:cc:00:00:01"},
                       backend_v6_data={"VNI": 1, "VtepMAC": "aa:bb:cc:00:00:02"})
    ann = L.render_annotations(attrs)
    assert ann == {
        P + "backend-type": "vxlan",
        P + "backend-data": '{"VNI":1,"VtepMAC":"aa:bb:cc:00:00:01"}',
        P + "public-ip": "192.0.2.11",
        P + "backend-v6-data": '{"VNI":1,"VtepMAC":"aa:bb:cc:00:00:02"}',
        P + "public-ipv6": "2001:db8::11",
        P + "kube-subnet-manager": "true",
    }
    lease = L.lease_from_node(ann, ["10.244.1.0/24", "fd00:10:244:1::/64"], enable_ipv6=True)
    assert lease.attrs == attrs
    assert (lease.subnet, lease.ipv6_subnet) == (V4("10.244.1.0/24"), V6("fd00:10:244:1::/64"))
    only6 = L.lease_from_node(ann, ["fd00:10:244:1::/64"], enable_ipv4=False, enable_ipv6=True)
    assert only6.subnet is None and only6.attrs.public_ip is None


def test_host_gw_writes_null_backend_data() -> None:
    # host-gw has no backend data; flannel still writes backend-data "null" (and v6 "null" with IPv6)
    attrs = LeaseAttrs(public_ip=ipaddress.IPv4Address("192.0.2.12"), public_ipv6=ipaddress.IPv6Address("2001:db8::12"),
                       backend_type="host-gw")
    ann = L.render_annotations(attrs)
    assert ann[P + "backend-data"] == "null" and ann[P + "backend-v6-data"] == "null"
    assert ann[P + "public-ipv6"] == "2001:db8::12"
    back = L.lease_from_node(ann, ["10.244.2.0/24", "fd00::/64"], enable_ipv6=True)
    assert back.attrs == attrs


def test_vxlan_ipv6_only_leaves_ipv4_keys_alone() -> None:
    attrs = LeaseAttrs(public_ipv6=ipaddress.IPv6Address("2001:db8::13"), backend_type="vxlan",
                       backend_v6_data={"VNI": 1, "VtepMAC": "aa:bb:cc:00:00:03"})
    ann = L.render_annotations(attrs)
    assert P + "backend-data" not in ann and P + "public-ip" not in ann
    assert ann[P + "public-ipv6"] == "2001:db8::13"


def test_public_ip_overwrite_wins() -> None:
    attrs = L.lease_from_node(NODE01, ["10.244.1.0/24"]).attrs
    existing: Dict[str, str] = dict(NODE01, **{P + "public-ip-overwrite": "198.51.100.7"})
    assert L.render_annotations(attrs, existing)[P + "public-ip"] == "198.51.100.7"
    assert L.annotations_patch(existing, attrs) == {P + "public-ip": "198.51.100.7"}


def test_patch_only_what_changed() -> None:
    attrs = L.lease_from_node(NODE01, ["10.244.1.0/24"]).attrs
    new = LeaseAttrs(public_ip=attrs.public_ip, backend_type="vxlan", backend_data={"VNI": 1, "VtepMAC": "16:ff:13:00:fc:f3"})
    assert L.annotations_patch(NODE01, new) == {P + "backend-data": '{"VNI":1,"VtepMAC":"16:ff:13:00:fc:f3"}'}
    assert L.annotations_patch({}, new)[P + "kube-subnet-manager"] == "true"


def test_custom_annotation_prefix() -> None:
    assert L.annotation_names("example.com").public_ip == "example.com/public-ip"
    assert L.annotation_names("example.com/net").public_ip == "example.com/net-public-ip"
    assert L.annotation_names("example.com/net-").backend_type == "example.com/net-backend-type"
    for bad in ("a/b/c", "Example.com", "nodots"):
        with pytest.raises(LeaseFormatError):
            L.annotation_names(bad)


@pytest.mark.parametrize("annotations, cidrs, kwargs, words", [
    ({P + "backend-type": "vxlan"}, ["10.244.1.0/24"], {}, ["public-ip"]),
    (dict(NODE01, **{P + "public-ip": "2001:db8::1"}), ["10.244.1.0/24"], {}, ["IPv4 address"]),
    (dict(NODE01, **{P + "backend-data": "{"}), ["10.244.1.0/24"], {}, ["not JSON"]),
    (NODE01, ["fd00::/64"], {}, ["no IPv4 podCIDR"]),
    (NODE01, ["10.244.1.0/24"], {"enable_ipv6": True}, ["no IPv6 podCIDR"]),
    (NODE01, ["10.244.1.0/24", "10.244.2.0/24"], {}, ["two IPv4"]),
    (NODE01, ["10.244.1.0/24", "fd00::/64", "fd01::/64"], {}, ["3 podCIDRs"]),
    (NODE01, ["banana"], {}, ["not a CIDR"]),
    (NODE01, [], {}, ["no IPv4 podCIDR"]),
])
def test_bad_nodes(annotations: Dict[str, str], cidrs: list, kwargs: dict, words: list) -> None:
    with pytest.raises(LeaseFormatError) as info:
        L.lease_from_node(annotations, cidrs, node="n1", **kwargs)
    for word in words:
        assert word in str(info.value)


def test_lease_is_frozen() -> None:
    lease = Lease(subnet=V4("10.244.1.0/24"))
    with pytest.raises(AttributeError):
        lease.subnet = None  # type: ignore[misc]
