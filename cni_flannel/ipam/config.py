"""host-local configuration: parse and validate, pure (no disk).

Mirrors plugins/ipam/host-local/backend/allocator/{config,range,range_set}.go:
the range sets are ``runtimeConfig.ipRanges`` + the legacy top-level range +
``ipam.ranges``, in that order; each range is canonicalized (gateway default
network+1, rangeStart default network+1, rangeEnd default the last address,
minus the broadcast for IPv4); ranges within a set must share a family and not
overlap, and no two sets may overlap.

Every rejection is :class:`InvalidConfig` (code 7; the Go plugin says 999) and
names the offending value.  Stricter than the reference on purpose: a gateway
outside its subnet, an IPv4 range that includes the network or broadcast
address, and rangeStart after rangeEnd are refused instead of silently
producing unusable addresses.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from cni_flannel.cni.errors import InvalidConfig
from cni_flannel.cni.result import Route

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


@dataclass(frozen=True)
class Range:
    """One canonical range: addresses ``start..end`` (inclusive) of ``subnet``."""

    subnet: IPNetwork
    start: int
    end: int
    gateway: IPAddress

    @property
    def version(self) -> int:
        return self.subnet.version

    def addr(self, value: int) -> IPAddress:
        return _make(self.version, value)

    def contains(self, ip: IPAddress) -> bool:
        return ip.version == self.version and self.start <= int(ip) <= self.end

    def overlaps(self, other: "Range") -> bool:
        return self.version == other.version and self.start <= other.end and other.start <= self.end

    def __str__(self) -> str:  # the reference's Range.String(): "start-end"
        return f"{self.addr(self.start)}-{self.addr(self.end)}"


def _make(version: int, value: int) -> IPAddress:
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


@dataclass(frozen=True)
class RangeSet:
    ranges: Tuple[Range, ...]

    @property
    def version(self) -> int:
        return self.ranges[0].version

    def range_for(self, ip: IPAddress) -> Optional[Range]:
        for r in self.ranges:
            if r.contains(ip):
                return r
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.ranges)


@dataclass(frozen=True)
class IPAMConfig:
    """Everything host-local needs for one invocation."""

    network: str
    data_dir: str
    range_sets: Tuple[RangeSet, ...] = ()
    routes: Tuple[Route, ...] = ()
    resolv_conf: str = ""
    requested: Tuple[IPAddress, ...] = field(default=())


# -- scalar parsing ----------------------------------------------------------


def parse_ip(value: Any, what: str) -> IPAddress:
    """An address as Go's net.ParseIP takes it; IPv4-mapped IPv6 becomes IPv4."""
    if not isinstance(value, str) or not value or "%" in value or value.strip() != value:
        raise InvalidConfig(f"{what}: {value!r} is not an IP address")
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise InvalidConfig(f"{what}: {value!r} is not an IP address") from None
    if ip.version == 6 and ip.ipv4_mapped is not None:  # Go's canonicalizeIP: To4() wins
        return ip.ipv4_mapped
    return ip


def parse_cidr(value: Any, what: str) -> Tuple[IPAddress, int]:
    """``a.b.c.d/len`` -> (address as written, prefix length); no netmask forms."""
    if not isinstance(value, str) or value.count("/") != 1:
        raise InvalidConfig(f"{what}: {value!r} is not a CIDR (expected e.g. 10.244.1.0/24)")
    addr, _, plen = value.partition("/")
    if not plen.isdigit() or len(plen) > 3:
        raise InvalidConfig(f"{what}: {value!r} is not a CIDR (expected e.g. 10.244.1.0/24)")
    if ":" in addr and "." in addr and addr.lower().startswith("::ffff:"):
        raise InvalidConfig(f"{what}: {value!r} mixes an IPv4-mapped address with an IPv6 prefix; write the IPv4 subnet")
    try:
        ip = parse_ip(addr, what)
    except InvalidConfig:
        raise InvalidConfig(f"{what}: {value!r} is not a CIDR (expected e.g. 10.244.1.0/24)") from None
    if int(plen) > ip.max_prefixlen:
        raise InvalidConfig(f"{what}: {value!r} has a prefix longer than /{ip.max_prefixlen}")
    return ip, int(plen)


def parse_requested(value: Any, what: str) -> IPAddress:
    """A requested IP: ``10.1.2.7`` or ``10.1.2.7/24`` (pkg/ip.IP accepts both)."""
    if isinstance(value, str) and "/" in value:
        return parse_cidr(value, what)[0]
    return parse_ip(value, what)


# -- ranges ------------------------------------------------------------------


def parse_range(raw: Any, where: str) -> Range:
    """Range.Canonicalize(): fill defaults and check the range is usable."""
    if not isinstance(raw, dict):
        raise InvalidConfig(f"{where}: expected an object like {{\"subnet\": \"10.244.1.0/24\"}}, got {raw!r}")
    if "subnet" not in raw:
        raise InvalidConfig(f"{where}: missing \"subnet\"")
    ip, plen = parse_cidr(raw["subnet"], f"{where}.subnet")
    subnet = ipaddress.ip_network(f"{ip}/{plen}", strict=False)
    if plen > ip.max_prefixlen - 2:
        raise InvalidConfig(f"{where}: network {subnet} too small to allocate from (use /{ip.max_prefixlen - 2} or larger)")
    if subnet.network_address != ip:
        raise InvalidConfig(
            f"{where}: network {raw['subnet']} has host bits set. "
            f"For a subnet mask of length {plen} the network address is {subnet.network_address}"
        )
    first, last = int(subnet.network_address), int(subnet.broadcast_address)
    if ip.version == 4:  # network and broadcast addresses are never usable
        usable_lo, usable_hi = first + 1, last - 1
    else:
        usable_lo, usable_hi = first + 1, last

    def member(key: str) -> Optional[IPAddress]:
        if raw.get(key) in (None, ""):
            return None
        addr = parse_ip(raw[key], f"{where}.{key}")
        if addr.version != ip.version:
            raise InvalidConfig(f"{where}: {key} {addr} is not the same family as subnet {subnet}")
        if addr not in subnet:
            raise InvalidConfig(f"{where}: {key} {addr} not in network {subnet}")
        if not usable_lo <= int(addr) <= usable_hi:
            raise InvalidConfig(f"{where}: {key} {addr} is the network or broadcast address of {subnet}")
        return addr

    gateway = member("gateway") or subnet.network_address + 1
    start = member("rangeStart")
    end = member("rangeEnd")
    lo = int(start) if start is not None else first + 1
    hi = int(end) if end is not None else usable_hi
    if lo > hi:
        raise InvalidConfig(f"{where}: rangeStart {_make(ip.version, lo)} is after rangeEnd {_make(ip.version, hi)}")
    return Range(subnet=subnet, start=lo, end=hi, gateway=gateway)


def parse_range_set(raw: Any, index: int) -> RangeSet:
    where = f"invalid range set {index}"
    if not isinstance(raw, list):
        raise InvalidConfig(f"{where}: expected a list of ranges, got {raw!r}")
    if not raw:
        raise InvalidConfig(f"{where}: empty range set")
    ranges = tuple(parse_range(r, f"{where}, range {i}") for i, r in enumerate(raw))
    for r in ranges[1:]:
        if r.version != ranges[0].version:
            raise InvalidConfig(f"{where}: mixed address families ({ranges[0].subnet} and {r.subnet}); use one range set per family")
    for i, a in enumerate(ranges):
        for b in ranges[i + 1:]:
            if a.overlaps(b):
                raise InvalidConfig(f"{where}: subnets {a} and {b} overlap")
    return RangeSet(ranges)


def parse_range_sets(raw_sets: Sequence[Any], cni_version: str) -> Tuple[RangeSet, ...]:
    if not raw_sets:
        raise InvalidConfig("no IP ranges specified", 'give ipam.ranges, e.g. [[{"subnet": "10.244.1.0/24"}]]')
    sets = tuple(parse_range_set(s, i) for i, s in enumerate(raw_sets))
    families = [s.version for s in sets]
    if (families.count(4) > 1 or families.count(6) > 1) and _before_030(cni_version):
        raise InvalidConfig(f"CNI version {cni_version} does not support more than 1 address per family")
    for i, a in enumerate(sets):
        for j in range(i + 1, len(sets)):
            b = sets[j]
            if any(x.overlaps(y) for x in a.ranges for y in b.ranges):
                raise InvalidConfig(f"range set {i} overlaps with {j} ({a} and {b})")
    return sets


def _before_030(version: str) -> bool:
    from cni_flannel.cni.version import at_least

    return not at_least(version, "0.3.0")


# -- the rest of the section -------------------------------------------------


def parse_routes(raw: Any) -> Tuple[Route, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidConfig(f"ipam.routes: expected a list of {{dst, gw}}, got {raw!r}")
    routes = []
    for i, r in enumerate(raw):
        where = f"ipam.routes[{i}]"
        if not isinstance(r, dict) or "dst" not in r:
            raise InvalidConfig(f"{where}: expected {{\"dst\": CIDR, \"gw\": IP}}, got {r!r}")
        ip, plen = parse_cidr(r["dst"], f"{where}.dst")
        gw = parse_ip(r["gw"], f"{where}.gw") if r.get("gw") not in (None, "") else None
        extra: Dict[str, Any] = {}
        for key in ("mtu", "advmss", "priority", "table", "scope"):
            if r.get(key) is not None:
                if not isinstance(r[key], int) or isinstance(r[key], bool):
                    raise InvalidConfig(f"{where}.{key}: expected an integer, got {r[key]!r}")
                extra[key] = r[key]
        routes.append(Route(dst=f"{ip}/{plen}", gw=str(gw) if gw else None, **extra))
    return tuple(routes)


def check_network_name(network: Any) -> str:
    """The network name becomes a directory under dataDir: it must not escape it."""
    if not isinstance(network, str) or not _NAME.fullmatch(network) or network in (".", ".."):
        raise InvalidConfig(
            f"invalid network name {network!r}",
            "it must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ (it names a directory under dataDir)",
        )
    return network


def check_data_dir(value: Any) -> str:
    if value in (None, ""):
        return DEFAULT_DATA_DIR
    if not isinstance(value, str) or "\0" in value or not os.path.isabs(value):
        raise InvalidConfig(f"ipam.dataDir: {value!r} is not an absolute path")
    return os.path.normpath(value)


def requested_ips(cni_args: Dict[str, str], conf_args: Dict[str, Any], runtime_config: Dict[str, Any]) -> Tuple[IPAddress, ...]:
    """CNI_ARGS ``IP=`` (comma-separated), then ``args.cni.ips``, then ``runtimeConfig.ips``."""
    out: List[IPAddress] = []
    env_ip = cni_args.get("IP", "")
    if env_ip:
        out += [parse_requested(item.strip(), "CNI_ARGS IP") for item in env_ip.split(",")]
    cni = conf_args.get("cni") if isinstance(conf_args, dict) else None
    for source, holder in (("args.cni.ips", cni), ("runtimeConfig.ips", runtime_config)):
        if not isinstance(holder, dict) or holder.get("ips") is None:
            continue
        ips = holder["ips"]
        if not isinstance(ips, list):
            raise InvalidConfig(f"{source}: expected a list of IP addresses, got {ips!r}")
        out += [parse_requested(v, source) for v in ips]
    unique: List[IPAddress] = []
    for ip in out:  # the reference keys requests by address: duplicates collapse
        if ip not in unique:
            unique.append(ip)
    return tuple(unique)


def parse_ipam(
    ipam: Dict[str, Any],
    network: str,
    cni_version: str,
    cni_args: Optional[Dict[str, str]] = None,
    runtime_config: Optional[Dict[str, Any]] = None,
    conf_args: Optional[Dict[str, Any]] = None,
    ranges: bool = True,
) -> IPAMConfig:
    """The whole IPAM section.  ``ranges=False`` parses only what DEL, CHECK
    and GC need (network, dataDir), so a config whose ranges were since broken
    can still release its addresses."""
    if not isinstance(ipam, dict):
        raise InvalidConfig(f"ipam: expected an object, got {ipam!r}")
    network = check_network_name(network)
    data_dir = check_data_dir(ipam.get("dataDir"))
    if not ranges:
        return IPAMConfig(network=network, data_dir=data_dir)
    runtime_config = runtime_config or {}
    raw_sets: List[Any] = []
    rt_ranges = runtime_config.get("ipRanges")
    if rt_ranges is not None:
        if not isinstance(rt_ranges, list):
            raise InvalidConfig(f"runtimeConfig.ipRanges: expected a list of range sets, got {rt_ranges!r}")
        raw_sets += rt_ranges
    if ipam.get("subnet") not in (None, ""):  # legacy single range
        raw_sets.append([{k: ipam.get(k) for k in ("subnet", "rangeStart", "rangeEnd", "gateway")}])
    conf_ranges = ipam.get("ranges")
    if conf_ranges is not None:
        if not isinstance(conf_ranges, list):
            raise InvalidConfig(f"ipam.ranges: expected a list of range sets, got {conf_ranges!r}")
        raw_sets += conf_ranges
    resolv = ipam.get("resolvConf") or ""
    if not isinstance(resolv, str):
        raise InvalidConfig(f"ipam.resolvConf: expected a file path, got {resolv!r}")
    return IPAMConfig(
        network=network,
        data_dir=data_dir,
        range_sets=parse_range_sets(raw_sets, cni_version),
        routes=parse_routes(ipam.get("routes")),
        resolv_conf=resolv,
        requested=requested_ips(cni_args or {}, conf_args or {}, runtime_config),
    )
