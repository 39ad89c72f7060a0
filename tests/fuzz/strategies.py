"""Hypothesis strategies for everything the plugins and the daemon read from outside.

Each input starts from a valid document and has some of its fields replaced by plausible
neighbours (other CIDRs, ports, names) or by hostile values (odd characters, path traversal,
option-looking strings, huge numbers, wrong JSON types), so the cases reach past the first
type check into the code that uses the values.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List

from hypothesis import strategies as st

# --- building blocks -------------------------------------------------------------------------

HOSTILE_TEXT = [
    "", " ", "..", "../../etc/passwd", "/etc/passwd", "a/b", "a\x00b", "x\ny", "-j ACCEPT", "--flush",
    "; rm -rf /", "$(reboot)", "`id`", "é", "\u202e", "A" * 300, "*", "%s%n", "-", "0x10",
    "1e400", "NaN", "null", "true", "{}", "[]", "\\", "'", '"', "eth0 ", "lo", "all", "default",
]


def ipv4() -> st.SearchStrategy[str]:
    return st.tuples(*[st.integers(0, 300)] * 4).map(lambda t: ".".join(map(str, t)))


def ipv6() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(["fd00::", "fd00:10:244::", "::", "::1", "fe80::1", "ff02::1",
                                      "fd00::1:2:3:4:5", "fd00:::1", "2001:db8::/64"]),
                     st.ip_addresses(v=6).map(str))


def cidr() -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(ipv4(), st.integers(-1, 40)).map(lambda t: f"{t[0]}/{t[1]}"),
        st.tuples(ipv6(), st.integers(0, 140)).map(lambda t: f"{t[0].split('/')[0]}/{t[1]}"),
        st.sampled_from(["10.244.0.0/16", "10.244.1.0/24", "0.0.0.0/0", "fd00::/64", "10.0.0.0/8",
                         "10.244.1.0/33", "10.244.1.0", "::/0"]),
    )


def text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=40),
                     st.from_regex(r"[a-zA-Z0-9_.\-]{1,70}", fullmatch=True))


def scalar() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2, 70000),
                     st.floats(allow_nan=False), text(), ipv4(), cidr())


def json_value(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    return st.recursive(scalar(), lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(text(), inner, max_size=4)), max_leaves=max_leaves)


def _paths(doc: Any, prefix: tuple = ()) -> List[tuple]:
    """Every place in a JSON document (nested keys and list indexes), the root excluded."""
    out = [prefix] if prefix else []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    for key, value in items:
        out += _paths(value, prefix + (key,))
    return out


def mutated(base: Dict[str, Any], fields: Dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Dict[str, Any]]:
    """base with one to three places, at any depth, removed or replaced (by a plausible value for
    that field name when `fields` has one, else by any JSON), and now and then a top-level field
    from `fields` that base lacks."""
    places = [p for p in _paths(base) for _ in range(len(p))]  # deeper places weigh more: they are fewer
    extra = sorted(set(fields) - set(base))

    @st.composite
    def build(draw) -> Dict[str, Any]:
        doc = json.loads(json.dumps(base))
        for path in draw(st.lists(st.sampled_from(places), min_size=1, max_size=3, unique=True)):
            parent = doc
            try:
                for key in path[:-1]:
                    parent = parent[key]
                parent[path[-1]]  # still there (an earlier change may have replaced an ancestor)
            except (KeyError, IndexError, TypeError):
                continue
            if not isinstance(parent, (dict, list)):
                continue
            choice = draw(st.integers(0, 9))
            name = path[-1]
            if choice == 0 and isinstance(parent, dict):
                del parent[name]
            elif choice <= 6 and name in fields:
                parent[name] = draw(fields[name])
            elif choice <= 6:
                parent[name] = draw(scalar())
            else:
                parent[name] = draw(json_value())
        if extra and draw(st.integers(0, 2)) == 0:
            name = draw(st.sampled_from(extra))
            doc[name] = draw(fields[name])
        return doc
    return build()


def document(base: Dict[str, Any], fields: Dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes]:
    """stdin / a file: mostly a mutated JSON document, sometimes raw bytes or other JSON."""
    doc = mutated(base, fields).map(lambda d: json.dumps(d).encode())
    return st.one_of(
        doc, doc, doc, doc, doc, doc, doc, doc, doc, doc,
        json_value().map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=200),
        st.sampled_from([b"", b"{", b"\xff\xfe", b"[]", b"null", b'{"cniVersion": 1.0}', b"{}" * 3]),
    )


# --- the plugins ---------------------------------------------------------------------------

VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "9.9.9", "1.0", "", "v1"]
IPAM = {"type": "host-local", "ranges": [[{"subnet": "10.250.0.0/24"}]]}
MAPPINGS = [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]
PREV = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "<netns>"}],
        "ips": [{"address": "10.250.0.7/24", "interface": 0}]}

PLUGIN_BASES: Dict[str, Dict[str, Any]] = {
    "flannel": {"cniVersion": "1.0.0", "name": "cbr0", "type": "flannel",
                "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
    "bridge": {"cniVersion": "1.0.0", "name": "fz", "type": "bridge", "bridge": "cnifz0", "isGateway": True,
               "ipMasq": True, "ipam": IPAM},
    "host-local": {"cniVersion": "1.0.0", "name": "fz", "type": "host-local", "ipam": IPAM},
    "portmap": {"cniVersion": "1.0.0", "name": "fz", "type": "portmap", "capabilities": {"portMappings": True},
                "runtimeConfig": {"portMappings": MAPPINGS}, "prevResult": PREV},
    "loopback": {"cniVersion": "1.0.0", "name": "fz", "type": "loopback"},
}


def mapping() -> st.SearchStrategy[Any]:
    port = st.one_of(st.integers(-5, 70000), text(), st.none())
    return st.one_of(st.fixed_dictionaries({
        "hostPort": port, "containerPort": port, "protocol": st.sampled_from(["tcp", "udp", "sctp", "TCP", "icmp", "-j"]) | text(),
        "hostIP": st.one_of(ipv4(), ipv6(), text())}), json_value())


def ipam_section() -> st.SearchStrategy[Any]:
    rng = st.fixed_dictionaries({"subnet": cidr()}, optional={"rangeStart": ipv4(), "rangeEnd": ipv4(),
                                                               "gateway": st.one_of(ipv4(), ipv6())})
    return st.one_of(mutated(IPAM, {"ranges": st.lists(st.lists(rng, max_size=2), max_size=2),
                                    "dataDir": st.one_of(text(), st.sampled_from(["/tmp/../etc", "relative", "/proc/1"])),
                                    "routes": st.lists(st.fixed_dictionaries({"dst": cidr()}, optional={"gw": ipv4()}), max_size=2),
                                    "type": st.sampled_from(["host-local", "dhcp", "../bin/sh"]) | text()}),
                     json_value())


PLUGIN_FIELDS: Dict[str, st.SearchStrategy[Any]] = {
    "subnet": cidr(), "rangeStart": ipv4() | ipv6(), "rangeEnd": ipv4() | ipv6(), "gateway": ipv4() | ipv6(),
    "ranges": st.lists(st.lists(st.fixed_dictionaries({"subnet": cidr()}), max_size=2), max_size=2),
    "hostPort": st.integers(-5, 70000) | text(), "containerPort": st.integers(-5, 70000) | text(),
    "protocol": st.sampled_from(["tcp", "udp", "sctp", "TCP", "icmp", "-j"]) | text(),
    "address": cidr(), "interface": st.integers(-2, 5) | json_value(), "sandbox": text(),
    "hairpinMode": json_value(), "isDefaultGateway": json_value(), "isGateway": json_value(),
    "cniVersion": st.sampled_from(VERSIONS) | json_value(),
    "name": text(),
    "type": text(),
    "ipam": ipam_section(),
    "delegate": mutated({"hairpinMode": True, "isDefaultGateway": True},
                        {"type": st.sampled_from(["bridge", "ptp", "../host-local", "flannel"]) | text(),
                         "bridge": text(), "mtu": st.integers(-10, 70000), "ipMasq": json_value()}),
    "subnetFile": st.sampled_from(["/run/flannel/subnet.env", "/run/flannel/../../etc/shadow", "/dev/zero",
                                   "/proc/self/environ", "/nonexistent"]) | text(),
    "dataDir": st.sampled_from(["/var/lib/cni/flannel", "/var/lib/cni/../../etc", "/dev/null"]) | text(),
    "bridge": st.sampled_from(["cnifz0", "lo", "eth0", "a" * 16, "br idge", "../x"]) | text(),
    "mtu": st.integers(-10, 70000) | json_value(),
    "vlan": st.integers(-2, 5000) | json_value(),
    "ipMasqBackend": st.sampled_from(["iptables", "nftables", "bpf"]) | text(),
    "runtimeConfig": st.fixed_dictionaries({}, optional={"portMappings": st.lists(mapping(), max_size=3),
                                                         "mac": text(), "ips": st.lists(cidr(), max_size=2)}) | json_value(),
    "prevResult": mutated(PREV, {"ips": st.lists(st.fixed_dictionaries({"address": cidr()}), max_size=3),
                                 "interfaces": json_value()}),
    "conditionsV4": st.lists(st.sampled_from(["-s", "10.0.0.0/8", "-j", "ACCEPT", "--flush", "-m", "comment",
                                              "--comment", ";", "\n-A X"]) | text(), max_size=5),
    "backend": st.sampled_from(["iptables", "nftables", "ebpf"]) | text(),
    "snat": json_value(), "masqAll": json_value(), "markMasqBit": st.integers(-2, 40) | json_value(),
    "cni.dev/valid-attachments": st.lists(st.fixed_dictionaries({"containerID": text(), "ifname": text()}), max_size=3) | json_value(),
}


def plugin_stdin(plugin: str) -> st.SearchStrategy[bytes]:
    return document(PLUGIN_BASES[plugin], PLUGIN_FIELDS)


def cni_env(netns: str) -> st.SearchStrategy[Dict[str, str]]:
    """CNI_* variables: a plausible set with none (60 %), one or two of them hostile (deep cases
    need the others to pass)."""
    valid = {"CNI_COMMAND": st.sampled_from(["ADD", "ADD", "ADD", "DEL", "DEL", "CHECK"]),
             "CNI_CONTAINERID": st.from_regex(r"[a-z0-9][a-z0-9_.\-]{0,20}", fullmatch=True),
             "CNI_IFNAME": st.sampled_from(["eth0", "net1"]),
             "CNI_ARGS": st.sampled_from(["", "IgnoreUnknown=1;K8S_POD_NAME=p"]),
             "CNI_NETNS": st.just(netns), "CNI_PATH": st.just("/opt/cni/bin")}
    hostile = {"CNI_COMMAND": st.sampled_from(["STATUS", "GC", "VERSION", "add", "", "ADD "]) | text(),
               "CNI_CONTAINERID": text(),
               "CNI_IFNAME": st.sampled_from(["lo", "a" * 16, "../x", "e th", ".", "..", "eth0/1"]) | text(),
               "CNI_ARGS": st.one_of(st.lists(st.tuples(text(), text()), max_size=3).map(
                   lambda kv: ";".join(f"{k}={v}" for k, v in kv)),
                   st.builds(lambda ip: f"IgnoreUnknown=1;IP={ip}", ipv4()), text()),
               "CNI_NETNS": st.sampled_from(["", "/proc/self/ns/net", "/nonexistent", "/etc/hostname",
                                             "/run/netns/../../etc/passwd"]) | text(),
               "CNI_PATH": st.sampled_from(["", "/nonexistent:/opt/cni/bin", "relative"])}

    @st.composite
    def build(draw) -> Dict[str, str]:
        hostile_count = [0, 0, 0, 0, 0, 0, 1, 1, 1, 2][draw(st.integers(0, 9))]
        bad = draw(st.lists(st.sampled_from(sorted(valid)), min_size=hostile_count, max_size=hostile_count,
                            unique=True))
        return {k: draw(hostile[k] if k in bad else valid[k]) for k in valid}
    return build()


# --- the daemon ----------------------------------------------------------------------------

NETCONF_BASE = {"Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan"}}
NETCONF_FIELDS: Dict[str, st.SearchStrategy[Any]] = {
    "Network": cidr(), "IPv6Network": cidr(), "SubnetLen": st.integers(-1, 140), "IPv6SubnetLen": st.integers(-1, 140),
    "SubnetMin": ipv4(), "SubnetMax": ipv4(), "IPv6SubnetMin": ipv6(), "IPv6SubnetMax": ipv6(),
    "EnableIPv4": st.booleans() | json_value(), "EnableIPv6": st.booleans() | json_value(),
    "EnableNFTables": st.booleans() | json_value(),
    "Backend": st.one_of(mutated({"Type": "vxlan"}, {
        "Type": st.sampled_from(["vxlan", "host-gw", "udp", "VXLAN", "wireguard", ""]) | text(),
        "VNI": st.integers(-1, 1 << 25) | json_value(), "Port": st.integers(-1, 70000) | json_value(),
        "MTU": st.integers(-1, 70000) | json_value(), "DirectRouting": json_value(), "GBP": json_value()}),
        json_value()),
}


def netconf_text() -> st.SearchStrategy[str]:
    plausible = st.builds(lambda net, length, kind: json.dumps({"Network": net, "SubnetLen": length,
                                                                "Backend": {"Type": kind}}),
                          st.sampled_from(["10.244.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "10.244.0.0/20"]),
                          st.integers(16, 30), st.sampled_from(["vxlan", "host-gw", "udp"]))
    return st.one_of(plausible, document(NETCONF_BASE, NETCONF_FIELDS).map(lambda b: b.decode("utf-8", "replace")))


def lease_key() -> st.SearchStrategy[str]:
    v4 = st.tuples(ipv4(), st.integers(-1, 40)).map(lambda t: f"{t[0]}-{t[1]}")
    v6 = st.tuples(st.sampled_from(["fd00::", "fc00:1::", "::", "fd00:::", "abc"]), st.integers(0, 200)).map(
        lambda t: f"{t[0]}-{t[1]}")
    keys = st.one_of(v4, st.tuples(v4, v6).map(lambda t: f"{t[0]}&{t[1]}"), text())
    return st.tuples(st.sampled_from(["", "/coreos.com/network/subnets/", "/x/../"]), keys).map("".join)


LEASE_BASE = {"PublicIP": "198.18.0.2", "PublicIPv6": None, "BackendType": "vxlan",
              "BackendData": {"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"}}
LEASE_FIELDS: Dict[str, st.SearchStrategy[Any]] = {
    "PublicIP": ipv4() | ipv6() | json_value(), "PublicIPv6": ipv6() | ipv4() | json_value(),
    "BackendType": st.sampled_from(["vxlan", "host-gw", "udp", ""]) | json_value(),
    "BackendData": mutated({"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"}, {
        "VNI": st.integers(-1, 1 << 25) | json_value(),
        "VtepMAC": st.sampled_from(["AA-BB-CC-DD-EE-FF", "aa:bb:cc:dd:ee", "zz:bb:cc:dd:ee:ff"]) | text()}),
    "BackendV6Data": json_value(), "publicip": ipv4(),
}


def lease_value() -> st.SearchStrategy[str]:
    plausible = st.builds(lambda ip, mac, vni: json.dumps({"PublicIP": ip, "BackendType": "vxlan",
                                                          "BackendData": {"VNI": vni, "VtepMAC": mac}}),
                          st.ip_addresses(v=4).map(str), st.sampled_from(["aa:bb:cc:dd:ee:ff", "02:42:ac:11:00:02"]),
                          st.integers(0, 4096))
    return st.one_of(plausible,document(LEASE_BASE, LEASE_FIELDS).map(lambda b: b.decode("utf-8", "replace")),
                     st.text(max_size=10_000).map(lambda t: t * 3))


def lease_dict() -> st.SearchStrategy[Dict[str, Any]]:
    return mutated({**LEASE_BASE, "Subnet": "10.244.2.0/24"},
                   {**LEASE_FIELDS, "Subnet": cidr(), "IPv6Subnet": cidr()})


ANN = "flannel.alpha.coreos.com/"


def node_annotations() -> st.SearchStrategy[Dict[str, Any]]:
    base = {ANN + "kube-subnet-manager": "true", ANN + "backend-type": "vxlan", ANN + "public-ip": "198.18.0.3",
            ANN + "backend-data": '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}'}
    as_text = st.one_of(text(), ipv4(), ipv6(), json_value().map(json.dumps))
    fields = {ANN + k: as_text for k in ("public-ip", "public-ipv6", "backend-data", "backend-v6-data",
                                        "backend-type", "public-ip-overwrite", "kube-subnet-manager")}
    return st.fixed_dictionaries({
        "annotations": mutated(base, fields).map(lambda d: {k: v if isinstance(v, str) else json.dumps(v)
                                                            for k, v in d.items()}),
        "pod_cidrs": st.one_of(st.just(["10.244.3.0/24"]), st.just(["10.244.3.0/24", "fd00:3::/64"]),
                               st.lists(cidr() | text(), max_size=3)),
        "pod_cidr": st.one_of(st.just(""), cidr()),
        "enable_ipv4": st.booleans(), "enable_ipv6": st.booleans(),
    })


SUBNET_ENV_KEYS = ["FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET",
                   "FLANNEL_MTU", "FLANNEL_IPMASQ"]


def subnet_env_text() -> st.SearchStrategy[str]:
    value = st.one_of(cidr(), st.lists(cidr(), min_size=1, max_size=3).map(",".join), st.integers(-5, 70000).map(str),
                      st.sampled_from(["true", "false", "TRUE", "1", ""]), text())
    line = st.one_of(st.tuples(st.sampled_from(SUBNET_ENV_KEYS), value).map(lambda kv: f"{kv[0]}={kv[1]}"),
                     st.sampled_from(["", "# comment", "export FLANNEL_MTU=1450", "FLANNEL_MTU", "=x", "  "]), text())
    valid = ["FLANNEL_NETWORK=10.244.0.0/16", "FLANNEL_SUBNET=10.244.1.1/24", "FLANNEL_MTU=1450",
             "FLANNEL_IPMASQ=true"]
    plausible = st.builds(lambda n, mtu, masq: f"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.{n}.1/24\n"
                                                f"FLANNEL_MTU={mtu}\nFLANNEL_IPMASQ={masq}\n",
                          st.integers(0, 255), st.integers(68, 9000), st.sampled_from(["true", "false"]))
    return st.one_of(plausible, st.tuples(st.lists(line, max_size=8), st.sets(st.sampled_from(valid))).map(
        lambda t: "\n".join(sorted(t[1]) + t[0])))
