"""/run/flannel/subnet.env: what flanneld leased for this node.

    FLANNEL_NETWORK=10.244.0.0/16          (may be a comma-separated list)
    FLANNEL_SUBNET=10.244.1.1/24           (the node's subnet: 10.244.1.0/24)
    FLANNEL_IPV6_NETWORK=...  FLANNEL_IPV6_SUBNET=...
    FLANNEL_MTU=1450
    FLANNEL_IPMASQ=true

Two kinds of trouble, told apart because the runtime reacts differently:
the file missing, empty or incomplete means flanneld has not (fully) written
it yet — :class:`TryAgainLater` (11), so the kubelet retries; a value that can
never work (bad CIDR, MTU 0, subnet outside the network) is a configuration
error — :class:`InvalidConfig` (7).  Both name the file and the key.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

from ..cni.errors import InvalidConfig, TryAgainLater

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

DEFAULT_PATH = "/run/flannel/subnet.env"
_HINT = "is flanneld running on this node? (kube-flannel: kubectl -n kube-flannel logs <flannel pod on this node>)"


@dataclass(frozen=True)
class SubnetEnv:
    networks: List[Network] = field(default_factory=list)  # v4 then v6
    subnets: List[Network] = field(default_factory=list)  # at most one per family, v4 first
    mtu: int = 0
    ipmasq: bool = False

    def render(self) -> str:
        """The file as flanneld writes it (the daemon uses this)."""
        lines = []
        for version, prefix in ((4, "FLANNEL_"), (6, "FLANNEL_IPV6_")):
            nets = [n for n in self.networks if n.version == version]
            subs = [s for s in self.subnets if s.version == version]
            if nets:
                lines.append(f"{prefix}NETWORK={','.join(str(n) for n in nets)}")
            if subs:
                lines.append(f"{prefix}SUBNET={subs[0].network_address + 1}/{subs[0].prefixlen}")
        lines.append(f"FLANNEL_MTU={self.mtu}")
        lines.append(f"FLANNEL_IPMASQ={'true' if self.ipmasq else 'false'}")
        return "\n".join(lines) + "\n"


#: flanneld writes a few hundred bytes; anything larger is not a subnet.env
MAX_SIZE = 64 << 10


def load(path: str = DEFAULT_PATH) -> SubnetEnv:
    import os
    import stat

    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang the plugin (checked below)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise TryAgainLater(f"{path} does not exist yet", _HINT) from None
    except OSError as exc:
        raise TryAgainLater(f"cannot read {path}: {exc.strerror}", _HINT) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # e.g. subnetFile=/dev/zero would be read for ever
        os.close(fd)
        raise InvalidConfig(f"{path} is not a regular file", "subnetFile must name the file flanneld writes")
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_SIZE + 1)
    if len(data) > MAX_SIZE:
        raise InvalidConfig(f"{path} is larger than {MAX_SIZE} bytes: not a subnet.env",
                            "subnetFile must name the file flanneld writes")
    return parse(data.decode("utf-8", errors="replace"), path)


def parse(text: str, path: str = DEFAULT_PATH) -> SubnetEnv:
    values = _pairs(text, path)
    missing = []
    if "FLANNEL_NETWORK" not in values and "FLANNEL_IPV6_NETWORK" not in values:
        missing.append("FLANNEL_NETWORK or FLANNEL_IPV6_NETWORK")
    if "FLANNEL_SUBNET" not in values and "FLANNEL_IPV6_SUBNET" not in values:
        missing.append("FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET")
    for key in ("FLANNEL_MTU", "FLANNEL_IPMASQ"):
        if key not in values:
            missing.append(key)
    if missing:
        what = "is empty" if not values else f"is missing {', '.join(missing)}"
        raise TryAgainLater(f"{path} {what}", _HINT)

    networks: List[Network] = []
    subnets: List[Network] = []
    for version, prefix in ((4, "FLANNEL_"), (6, "FLANNEL_IPV6_")):
        nets = [_network(path, prefix + "NETWORK", item, version) for item in _list(values.get(prefix + "NETWORK"))]
        sub_text = values.get(prefix + "SUBNET")
        if sub_text:
            sub = _network(path, prefix + "SUBNET", sub_text, version)
            if nets and not any(sub.subnet_of(n) for n in nets):  # type: ignore[arg-type]
                raise InvalidConfig(
                    f"{path}: {prefix}SUBNET={sub_text} is outside {prefix}NETWORK={values[prefix + 'NETWORK']}",
                    "flanneld wrote inconsistent values; restart flanneld so it rewrites the file",
                )
            subnets.append(sub)
        elif nets:
            raise TryAgainLater(f"{path} has {prefix}NETWORK but no {prefix}SUBNET", _HINT)
        networks.extend(nets)
    return SubnetEnv(networks=networks, subnets=subnets, mtu=_mtu(path, values["FLANNEL_MTU"]),
                     ipmasq=_bool(path, values["FLANNEL_IPMASQ"]))


def _pairs(text: str, path: str) -> Dict[str, str]:
    values: Dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].strip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if not sep:
            if key.startswith("FLANNEL_"):
                raise InvalidConfig(f"{path} line {number}: {key} has no value", "expected KEY=VALUE")
            continue  # not ours: ignore, as flannel does
        if value == "" and key.startswith("FLANNEL_"):
            continue  # an empty value counts as missing
        values[key] = value
    return values


def _list(value: Optional[str]) -> List[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _network(path: str, key: str, value: str, version: int) -> Network:
    try:
        if "/" not in value:  # a bare address would read as a /32 (Go's ParseCIDR refuses it too)
            raise ValueError(value)
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise InvalidConfig(f"{path}: {key}={value} is not a valid CIDR") from None
    if net.version != version:
        raise InvalidConfig(f"{path}: {key}={value} is not an IPv{version} network")
    return net


def _mtu(path: str, value: str) -> int:
    if not value.isdigit() or not 68 <= int(value) <= 65535:
        raise InvalidConfig(f"{path}: FLANNEL_MTU={value} is not a valid MTU", "expected a number from 68 to 65535")
    return int(value)


def _bool(path: str, value: str) -> bool:
    if value not in ("true", "false"):
        raise InvalidConfig(f"{path}: FLANNEL_IPMASQ={value} must be true or false")
    return value == "true"
