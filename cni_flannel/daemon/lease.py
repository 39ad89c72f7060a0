"""Subnet leases and their on-the-wire formats, the way flanneld writes and reads them.

etcd (pkg/subnet/subnet.go, pkg/subnet/etcd/registry.go, pkg/lease/lease.go):

    /coreos.com/network/config                       net-conf.json
    /coreos.com/network/subnets/10.244.1.0-24        {"PublicIP":"192.0.2.11","PublicIPv6":null,
                                                      "BackendType":"vxlan",
                                                      "BackendData":{"VNI":1,"VtepMAC":"5a:67:18:61:6a:5d"}}
    /coreos.com/network/subnets/10.244.1.0-24&fc00::-64   (dual stack; value adds PublicIPv6, BackendV6Data)

  Each lease key carries an etcd lease of SUBNET_TTL (24 h); flanneld renews RENEW_MARGIN
  (--subnet-lease-renew-margin, 60 min) before it expires.

Kubernetes (pkg/subnet/kube): the node's spec.podCIDR(s) is the lease; flanneld records its
attributes as node annotations under ``flannel.alpha.coreos.com/``:

    backend-data: '{"VNI":1,"VtepMAC":"16:ff:13:00:fc:f2"}'   backend-type: vxlan
    kube-subnet-manager: "true"                              public-ip: 192.32.16.6
    (+ backend-v6-data, public-ipv6 for IPv6)

Pure functions only: strings and dicts in, strings and dicts out.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

IPv4Network = ipaddress.IPv4Network
IPv6Network = ipaddress.IPv6Network
IPNetwork = Union[IPv4Network, IPv6Network]

DEFAULT_ETCD_PREFIX = "/coreos.com/network"
SUBNET_TTL = 24 * 3600  # seconds; pkg/subnet/etcd/local_manager.go subnetTTL
RENEW_MARGIN = 60 * 60  # seconds; flanneld --subnet-lease-renew-margin default (minutes: 60)
ANNOTATION_PREFIX = "flannel.alpha.coreos.com"

_ZERO4 = ipaddress.IPv4Address(0)
# ParseSubnetKey's pattern (unanchored at the start, so a full key path matches too).
_KEY = re.compile(r"(\d+\.\d+\.\d+\.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$")


class LeaseFormatError(ValueError):
    """A lease key, value or node annotation that cannot be read (flannel logs and skips these)."""


@dataclass(frozen=True)
class LeaseAttrs:
    public_ip: Optional[ipaddress.IPv4Address] = None
    public_ipv6: Optional[ipaddress.IPv6Address] = None
    backend_type: str = ""
    backend_data: Any = field(default=None, hash=False)  # decoded JSON; None = absent
    backend_v6_data: Any = field(default=None, hash=False)


@dataclass(frozen=True)
class Lease:
    subnet: Optional[IPv4Network]
    ipv6_subnet: Optional[IPv6Network] = None
    attrs: LeaseAttrs = field(default_factory=LeaseAttrs)
    # unix time; None: no TTL (a reservation, kube), or a peer's etcd lease not looked up (the etcd
    # manager fills it for our own lease only: nothing needs a peer's expiry)
    expiration: Optional[float] = None

    @property
    def key(self) -> str:
        return subnet_key(self.subnet, self.ipv6_subnet)

    def renew_at(self, margin: float = RENEW_MARGIN) -> Optional[float]:
        """When to renew: ``margin`` seconds before expiry (None: never expires)."""
        return None if self.expiration is None else self.expiration - margin

    # --- what a backend programs (derived; IPv4 and IPv6 through one path) -------------
    @property
    def backend_type(self) -> str:
        return self.attrs.backend_type

    @functools.cached_property
    def _sides(self) -> Tuple[Side, ...]:
        return tuple(self._make_sides())  # derived once per lease: backends ask per batch

    def sides(self) -> List[Side]:
        """One :class:`Side` per family the lease has, IPv4 first."""
        return list(self._sides)

    def _make_sides(self) -> List[Side]:
        out = []
        if self.subnet is not None:
            out.append(Side(4, self.subnet, _text(self.attrs.public_ip), vtep_mac(self.attrs.backend_data)))
        if self.ipv6_subnet is not None:
            out.append(Side(6, self.ipv6_subnet, _text(self.attrs.public_ipv6),
                            vtep_mac(self.attrs.backend_v6_data)))
        return out

    def side(self, family: int) -> Optional[Side]:
        return next((s for s in self.sides() if s.family == family), None)

    @functools.cached_property
    def name(self) -> str:
        """How logs and errors name a lease: '10.244.2.0/24 (198.18.0.2)'."""
        return " & ".join(f"{s.subnet} ({s.public_ip or 'no public IP'})" for s in self.sides()) or self.key

    # --- the flat JSON form (the backend driver, tests, tools) --------------------------
    @classmethod
    def from_dict(cls, d: Any) -> Lease:
        """{"Subnet", "PublicIP", "IPv6Subnet", "PublicIPv6", "BackendType" (default vxlan),
        "BackendData", "BackendV6Data"}; LeaseFormatError names the bad field."""
        if not isinstance(d, dict):
            raise LeaseFormatError(f"a lease must be a JSON object, not {_dump(d)}")
        nets = [_net(d.get(k), v, k) for k, v in (("Subnet", 4), ("IPv6Subnet", 6))]
        if nets == [None, None]:
            raise LeaseFormatError("a lease needs a Subnet or an IPv6Subnet")
        kind = d.get("BackendType", "vxlan")
        if not isinstance(kind, str):
            raise LeaseFormatError(f"BackendType={_dump(kind)} is not a string")
        attrs = LeaseAttrs(public_ip=_ip(d.get("PublicIP"), 4, "PublicIP"),
                           public_ipv6=_ip(d.get("PublicIPv6"), 6, "PublicIPv6"), backend_type=kind,
                           backend_data=d.get("BackendData"), backend_v6_data=d.get("BackendV6Data"))
        return cls(subnet=nets[0], ipv6_subnet=nets[1], attrs=attrs)

    def to_dict(self) -> Dict[str, Any]:
        a = self.attrs
        out: Dict[str, Any] = {"BackendType": a.backend_type}
        for key, value in (("Subnet", self.subnet), ("PublicIP", a.public_ip),
                           ("IPv6Subnet", self.ipv6_subnet), ("PublicIPv6", a.public_ipv6),
                           ("BackendData", a.backend_data), ("BackendV6Data", a.backend_v6_data)):
            if value is not None:
                out[key] = value if key.startswith("Backend") else str(value)
        return out

    def with_backend(self, backend_type: str, data: Any = None, v6_data: Any = None) -> Lease:
        """This lease carrying another backend's attributes (what setup() reports)."""
        attrs = LeaseAttrs(public_ip=self.attrs.public_ip, public_ipv6=self.attrs.public_ipv6,
                           backend_type=backend_type, backend_data=data, backend_v6_data=v6_data)
        return Lease(self.subnet, self.ipv6_subnet, attrs, self.expiration)


@dataclass(frozen=True)
class Side:
    """One address family of a lease: what a backend programs for it."""

    family: int                 # 4 or 6
    subnet: IPNetwork
    public_ip: Optional[str]
    vtep_mac: Optional[str]     # from BackendData / BackendV6Data; None when absent or unreadable


def vtep_mac(data: Any) -> Optional[str]:
    """The VtepMAC in vxlan backend data (any key case, as Go reads it); None if none."""
    if not isinstance(data, dict):
        return None
    raw = next((v for k, v in data.items() if k.lower() == "vtepmac"), None)
    try:
        return normalize_mac(raw) if raw is not None else None
    except LeaseFormatError:
        return None


@dataclass(frozen=True)
class VxlanData:
    """The vxlan backend's BackendData: {"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}."""

    vni: int
    vtep_mac: str

    def to_json(self) -> Dict[str, Any]:
        return {"VNI": self.vni, "VtepMAC": self.vtep_mac}

    @classmethod
    def from_json(cls, data: Any) -> VxlanData:
        if not isinstance(data, dict):
            raise LeaseFormatError(f"vxlan backend data {_dump(data)} is not an object")
        f = {k.lower(): v for k, v in data.items()}
        vni = f.get("vni", 0)  # hand-made nodes (e.g. F5 BIG-IP's) carry only VtepMAC
        if isinstance(vni, bool) or not isinstance(vni, int) or vni < 0:
            raise LeaseFormatError(f"vxlan backend data: VNI={_dump(vni)} is not a number")
        return cls(vni=vni, vtep_mac=normalize_mac(f.get("vtepmac")))


def normalize_mac(value: Any) -> str:
    """aa:bb:cc:dd:ee:ff (lower case, colons), as Go's net.HardwareAddr prints it."""
    text = value if isinstance(value, str) else ""
    parts = re.split(r"[:-]", text)
    if len(parts) != 6 or not all(re.fullmatch(r"[0-9A-Fa-f]{2}", p) for p in parts):
        raise LeaseFormatError(f"VtepMAC={_dump(value)} is not a MAC address")
    return ":".join(p.lower() for p in parts)


# --- etcd ---------------------------------------------------------------------------------

def config_key(prefix: str = DEFAULT_ETCD_PREFIX) -> str:
    return posixpath.join(prefix, "config")


def subnets_prefix(prefix: str = DEFAULT_ETCD_PREFIX) -> str:
    return posixpath.join(prefix, "subnets")


def subnet_key(subnet: Optional[IPv4Network], ipv6_subnet: Optional[IPv6Network] = None) -> str:
    """10.244.1.0-24, or 10.244.1.0-24&fc00::-64 for a dual-stack lease."""
    v4 = subnet if subnet is not None else IPv4Network("0.0.0.0/0")  # flannel's empty IP4Net
    key = f"{v4.network_address}-{v4.prefixlen}"
    if ipv6_subnet is not None:
        key += f"&{ipv6_subnet.network_address}-{ipv6_subnet.prefixlen}"
    return key


def subnet_path(subnet: Optional[IPv4Network], ipv6_subnet: Optional[IPv6Network] = None,
                prefix: str = DEFAULT_ETCD_PREFIX) -> str:
    return posixpath.join(subnets_prefix(prefix), subnet_key(subnet, ipv6_subnet))


def parse_subnet_key(key: str) -> Tuple[Optional[IPv4Network], Optional[IPv6Network]]:
    """The subnets in a lease key (or a full key path); LeaseFormatError if it is not one."""
    m = _KEY.search(key)
    if not m:
        raise LeaseFormatError(f"{key!r} is not a subnet lease key (expected e.g. 10.244.1.0-24)")
    try:
        v4 = ipaddress.IPv4Network(f"{m.group(1)}/{m.group(2)}", strict=False)
        v6 = ipaddress.IPv6Network(f"{m.group(3)}/{m.group(4)}", strict=False) if m.group(3) else None
    except ValueError:
        raise LeaseFormatError(f"{key!r} is not a subnet lease key: bad address or prefix") from None
    return (None if v4.prefixlen == 0 and v4.network_address == _ZERO4 else v4), v6


def render_attrs(attrs: LeaseAttrs) -> str:
    """The etcd value, byte for byte as Go's json.Marshal(LeaseAttrs) writes it."""
    parts = [f'"PublicIP":"{attrs.public_ip or _ZERO4}"',
             f'"PublicIPv6":{_dump(str(attrs.public_ipv6)) if attrs.public_ipv6 else "null"}']
    if attrs.backend_type:
        parts.append(f'"BackendType":{_dump(attrs.backend_type)}')
    if attrs.backend_data is not None:
        parts.append(f'"BackendData":{_dump(attrs.backend_data)}')
    if attrs.backend_v6_data is not None:
        parts.append(f'"BackendV6Data":{_dump(attrs.backend_v6_data)}')
    return "{" + ",".join(parts) + "}"


def parse_attrs(value: str) -> LeaseAttrs:
    try:
        obj = json.loads(value)
    except ValueError as exc:
        raise LeaseFormatError(f"lease value is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise LeaseFormatError(f"lease value {value!r} is not a JSON object")
    f = {k.lower(): v for k, v in obj.items()}  # Go matches field names case-insensitively
    backend_type = f.get("backendtype") or ""
    if not isinstance(backend_type, str):
        raise LeaseFormatError(f"lease value: BackendType={_dump(backend_type)} is not a string")
    return LeaseAttrs(public_ip=_ip(f.get("publicip"), 4, "PublicIP"),
                      public_ipv6=_ip(f.get("publicipv6"), 6, "PublicIPv6"),
                      backend_type=backend_type, backend_data=f.get("backenddata"),
                      backend_v6_data=f.get("backendv6data"))


def lease_from_kv(key: str, value: str, ttl: Optional[float] = None, now: float = 0.0) -> Lease:
    """A lease read from etcd; ``ttl`` is the etcd lease's remaining time to live, if any."""
    v4, v6 = parse_subnet_key(key)
    return Lease(subnet=v4, ipv6_subnet=v6, attrs=parse_attrs(value),
                 expiration=None if ttl is None else now + ttl)


# --- Kubernetes ---------------------------------------------------------------------------

@dataclass(frozen=True)
class AnnotationNames:
    kube_subnet_manager: str
    backend_data: str
    backend_v6_data: str
    backend_type: str
    public_ip: str
    public_ipv6: str
    public_ip_overwrite: str  # set by an operator to force the node's public IP
    public_ipv6_overwrite: str


def annotation_names(prefix: str = ANNOTATION_PREFIX) -> AnnotationNames:
    """The annotation keys for a --kube-annotation-prefix (flannel's newAnnotations rules)."""
    if prefix.count("/") > 1:
        raise LeaseFormatError(f"annotation prefix {prefix!r} has more than one '/'")
    if "/" not in prefix:
        prefix += "/"
    if not prefix.endswith(("/", "-")):
        prefix += "-"
    if not re.fullmatch(r"(?:[a-z0-9_-]+\.)+[a-z0-9_-]+/(?:[a-z0-9_-]+-)?", prefix):
        raise LeaseFormatError(f"annotation prefix {prefix!r} must look like fqdn/[0-9a-z-_]*")
    return AnnotationNames(*(prefix + n for n in (
        "kube-subnet-manager", "backend-data", "backend-v6-data", "backend-type", "public-ip",
        "public-ipv6", "public-ip-overwrite", "public-ipv6-overwrite")))


def render_annotations(attrs: LeaseAttrs, existing: Optional[Mapping[str, str]] = None,
                       prefix: str = ANNOTATION_PREFIX) -> Dict[str, str]:
    """The annotations flanneld sets on its own node for these attributes (kube AcquireLease).

    ``existing`` is the node's current annotations: an operator's public-ip(v6)-overwrite there
    wins over the detected address.
    """
    n = annotation_names(prefix)
    old = existing or {}
    kind = attrs.backend_type
    data = "null" if attrs.backend_data is None else _dump(attrs.backend_data)
    data6 = "null" if attrs.backend_v6_data is None else _dump(attrs.backend_v6_data)
    out = {n.backend_type: kind}
    # vxlan without IPv4 data (IPv6 only) leaves the IPv4 keys alone; other backends always write them.
    if kind != "vxlan" or data != "null":
        out[n.backend_data] = data
        out[n.public_ip] = old.get(n.public_ip_overwrite) or str(attrs.public_ip or _ZERO4)
    if (kind == "vxlan" and data6 != "null") or (kind == "host-gw" and attrs.public_ipv6 is not None):
        out[n.backend_v6_data] = data6
        out[n.public_ipv6] = old.get(n.public_ipv6_overwrite) or str(attrs.public_ipv6 or "")
    out[n.kube_subnet_manager] = "true"
    return out


def annotations_patch(existing: Mapping[str, str], attrs: LeaseAttrs,
                      prefix: str = ANNOTATION_PREFIX) -> Dict[str, str]:
    """Only the annotations that differ from the node's; empty means no patch is needed."""
    wanted = render_annotations(attrs, existing, prefix)
    return {k: v for k, v in wanted.items() if existing.get(k) != v}


def is_managed(annotations: Mapping[str, str], prefix: str = ANNOTATION_PREFIX) -> bool:
    """flannel ignores nodes whose kube-subnet-manager annotation is not "true"."""
    return annotations.get(annotation_names(prefix).kube_subnet_manager) == "true"


def pod_subnets(pod_cidrs: Sequence[str], pod_cidr: str = "",
                node: str = "") -> Tuple[Optional[IPv4Network], Optional[IPv6Network]]:
    """A node's spec.podCIDRs (or the older single spec.podCIDR), split by family."""
    cidrs = list(pod_cidrs) or ([pod_cidr] if pod_cidr else [])
    where = f"node {node!r}" if node else "node"
    if len(cidrs) > 2:
        raise LeaseFormatError(f"{where} has {len(cidrs)} podCIDRs {cidrs}: expected one per family at most")
    found: Dict[int, Any] = {}
    for text in cidrs:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise LeaseFormatError(f"{where}: podCIDR {text!r} is not a CIDR") from None
        if net.version in found:
            raise LeaseFormatError(f"{where} has two IPv{net.version} podCIDRs {cidrs}")
        found[net.version] = net
    return found.get(4), found.get(6)


def lease_from_node(annotations: Mapping[str, str], pod_cidrs: Sequence[str], pod_cidr: str = "",
                    enable_ipv4: bool = True, enable_ipv6: bool = False, node: str = "",
                    prefix: str = ANNOTATION_PREFIX) -> Lease:
    """A peer's lease from its Node object (kube nodeToLease). Check is_managed() first."""
    n = annotation_names(prefix)
    v4, v6 = pod_subnets(pod_cidrs, pod_cidr, node)
    where = f"node {node!r}" if node else "node"
    ip4 = ip6 = data = data6 = None
    if enable_ipv4:
        if v4 is None:
            raise LeaseFormatError(f"{where} has no IPv4 podCIDR")
        ip4 = _ip(annotations.get(n.public_ip, ""), 4, n.public_ip, where, required=True)
        data = _annotation_json(annotations.get(n.backend_data), n.backend_data, where)
    if enable_ipv6:
        if v6 is None:
            raise LeaseFormatError(f"{where} has no IPv6 podCIDR")
        ip6 = _ip(annotations.get(n.public_ipv6, ""), 6, n.public_ipv6, where, required=True)
        data6 = _annotation_json(annotations.get(n.backend_v6_data), n.backend_v6_data, where)
    attrs = LeaseAttrs(public_ip=ip4, public_ipv6=ip6, backend_type=annotations.get(n.backend_type, ""),
                       backend_data=data, backend_v6_data=data6)
    return Lease(subnet=v4 if enable_ipv4 else None, ipv6_subnet=v6 if enable_ipv6 else None, attrs=attrs)


# --- helpers ------------------------------------------------------------------------------

def _dump(value: Any) -> str:
    # Go's encoder: compact, UTF-8 kept, and <, >, &, U+2028/9 escaped.
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _ip(value: Any, version: int, key: str, where: str = "lease value", required: bool = False) -> Any:
    if value is None or (value == "" and not required):
        return None
    try:
        addr = ipaddress.ip_address(value) if isinstance(value, str) else None
    except ValueError:
        addr = None
    if addr is None or addr.version != version:
        raise LeaseFormatError(f"{where}: {key}={_dump(value)} is not an IPv{version} address")
    return None if addr == _ZERO4 else addr


def _text(value: Any) -> Optional[str]:
    return None if value is None else str(value)


def _net(value: Any, version: int, key: str) -> Any:
    if value is None or value == "":
        return None
    try:
        net = ipaddress.ip_network(value) if isinstance(value, str) else None
    except ValueError as exc:
        raise LeaseFormatError(f"lease {key} {_dump(value)} is not a network: {exc}") from None
    if net is None or net.version != version:
        raise LeaseFormatError(f"lease {key} {_dump(value)} is not an IPv{version} network")
    return net


def _annotation_json(text: Optional[str], key: str, where: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise LeaseFormatError(f"{where}: {key}={text!r} is not JSON") from None
