"""Backends: program the data plane between nodes from leases (flanneld's pkg/backend).

    peers     Lease / Event / BackendConfig (plain data in) and the error classes
    plan      desired vs current State -> Plan (pure; unit-tested without root)
    apply     read what a backend owns into a State, apply a Plan (thin netlink)
    base      the peer set, handle(events), reconcile(peers) shared by both backends
    vxlan     VxlanBackend: flannel.<VNI> / flannel-v6.<VNI>, neighbour + FDB + onlink route
    host_gw   HostGwBackend: <peer subnet> via <peer public IP> dev <ext>

``python -m cni_flannel.daemon.backends`` drives one backend over JSON lines (see __main__).
"""

from __future__ import annotations

from typing import Any

TYPES = ("vxlan", "host-gw")


def new(backend_type: str, *args: Any, **kwargs: Any) -> Any:
    """A backend of ``backend_type`` (net-conf.json Backend.Type); InvalidConfig otherwise."""
    if backend_type == "vxlan":
        from cni_flannel.daemon.backends.vxlan import VxlanBackend
        return VxlanBackend(*args, **kwargs)
    if backend_type == "host-gw":
        from cni_flannel.daemon.backends.host_gw import HostGwBackend
        return HostGwBackend(*args, **kwargs)
    from cni_flannel.cni.errors import InvalidConfig
    raise InvalidConfig(f"Backend.Type {backend_type!r} is not supported here "
                        f"(supported: {', '.join(TYPES)})")
