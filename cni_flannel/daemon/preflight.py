"""Checks before flanneld touches the node, each failing with what to do about it.

- br_netfilter: without /proc/sys/net/bridge/bridge-nf-call-iptables, traffic between pods on
  one bridge bypasses iptables (Services break).  flanneld >= 0.28 refuses to start then,
  unless EnableNFTables — so do we, saying ``modprobe br_netfilter``.
- ip_forward: nodes must forward pod traffic.  Off, we switch it on in the node's namespace and
  log it (what a vxlan/host-gw node needs; nothing else would), and fail when we cannot.
- the backend's kernel support: vxlan needs the vxlan module, udp /dev/net/tun.

``check`` is pure over a :class:`Probe` (files and sysctls read/written through callables), so
every branch is unit-tested; :func:`system_probe` is the real one.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, List, Optional

from .errors import PreflightError
from .netconf import NetConf

log = logging.getLogger("flanneld")

BRIDGE_NF = "/proc/sys/net/bridge/bridge-nf-call-iptables"


@dataclass
class Probe:
    exists: Callable[[str], bool]
    sysctl_get: Callable[[str], Optional[str]]
    sysctl_set: Callable[[str], None]          # key -> writes "1"
    kernel_has: Callable[[str], bool]          # "vxlan" / "tun"


def check(conf: NetConf, probe: Probe) -> List[str]:
    """Raise PreflightError on what cannot work; return the notes worth a log line."""
    notes: List[str] = []
    if not conf.enable_nftables and not probe.exists(BRIDGE_NF):
        raise PreflightError(f"{BRIDGE_NF} does not exist: the br_netfilter module is not loaded, so "
                             "bridged pod traffic would bypass iptables; run `modprobe br_netfilter` "
                             "(and add it to /etc/modules-load.d/), or set \"EnableNFTables\": true")
    keys = [k for k, on in (("net/ipv4/ip_forward", conf.enable_ipv4),
                            ("net/ipv6/conf/all/forwarding", conf.enable_ipv6)) if on]
    for key in keys:
        if (probe.sysctl_get(key) or "").strip() == "1":
            continue
        try:
            probe.sysctl_set(key)
        except OSError as exc:
            raise PreflightError(f"{key.replace('/', '.')} is off and cannot be switched on ({exc.strerror}): "
                                 f"run `sysctl -w {key.replace('/', '.')}=1`") from None
        notes.append(f"{key.replace('/', '.')} was 0: set to 1 (nodes must forward pod traffic)")
    kind = conf.backend.type
    need = {"vxlan": "vxlan", "udp": "tun"}.get(kind)
    if need and not probe.kernel_has(need):
        hint = "modprobe vxlan" if need == "vxlan" else "modprobe tun (and make /dev/net/tun available)"
        raise PreflightError(f"Backend.Type {kind} needs the kernel's {need} support, which this node "
                             f"lacks: run `{hint}` or use another backend")
    return notes


def _sysctl_path(key: str) -> str:
    return os.path.join("/proc/sys", key)


def _read(key: str) -> Optional[str]:
    try:
        with open(_sysctl_path(key)) as f:
            return f.read()
    except OSError:
        return None


def _write(key: str) -> None:
    with open(_sysctl_path(key), "w") as f:
        f.write("1")


def _kernel_has(what: str) -> bool:
    if what == "tun":
        return os.path.exists("/dev/net/tun") or os.path.exists("/sys/module/tun")
    if os.path.exists(f"/sys/module/{what}"):
        return True
    release = os.uname().release
    for ext in ("ko", "ko.xz", "ko.zst", "ko.gz"):
        if os.path.exists(f"/lib/modules/{release}/kernel/drivers/net/{what}/{what}.{ext}") or \
                os.path.exists(f"/lib/modules/{release}/kernel/drivers/net/{what}.{ext}"):
            return True
    return False


def system_probe() -> Probe:
    return Probe(exists=os.path.exists, sysctl_get=_read, sysctl_set=_write, kernel_has=_kernel_has)
