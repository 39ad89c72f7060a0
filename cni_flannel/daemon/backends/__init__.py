"""Backends: program the data plane between nodes from leases (flanneld's pkg/backend).

    plan      desired vs current State -> Plan (pure; unit-tested without root)
    apply     read what a backend owns into a State, apply a Plan (thin netlink)
    base      the peer set, handle(events), reconcile(peers) shared by the backends; PeerError
    vxlan     VxlanBackend: flannel.<VNI> / flannel-v6.<VNI>, neighbour + FDB + onlink route
    host_gw   HostGwBackend: <peer subnet> via <peer public IP> dev <ext>
    udp       UdpBackend: TUN flannel0 + the forwarder threads of cni_flannel.daemon.udp

Leases are :class:`cni_flannel.daemon.lease.Lease`, events :class:`cni_flannel.daemon.manager.Event`,
options :class:`cni_flannel.daemon.netconf.Backend`, errors :class:`cni_flannel.daemon.errors.BackendError`.

``REGISTRY`` maps net-conf.json's Backend.Type to "module:Class", imported on first use; a new
backend (udp) adds one line here.  ``python -m cni_flannel.daemon.backends`` drives one backend
over JSON lines (see __main__).
"""

from __future__ import annotations

import importlib
from typing import Any, Dict

REGISTRY: Dict[str, str] = {
    "vxlan": "cni_flannel.daemon.backends.vxlan:VxlanBackend",
    "host-gw": "cni_flannel.daemon.backends.host_gw:HostGwBackend",
    "udp": "cni_flannel.daemon.backends.udp:UdpBackend",
}


def types() -> tuple:
    return tuple(REGISTRY)


def new(backend_type: str, *args: Any, **kwargs: Any) -> Any:
    """A backend of ``backend_type`` (net-conf.json Backend.Type); ConfigError otherwise."""
    target = REGISTRY.get(backend_type)
    if target is None:
        from cni_flannel.daemon.errors import ConfigError
        raise ConfigError(f"Backend.Type {backend_type!r} is not supported here "
                          f"(supported: {', '.join(REGISTRY)})")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(*args, **kwargs)
