"""host-local as a library: what the bridge and flannel plugins call in-process.

The standalone plugin (``cni_flannel.plugins.host_local``, type ``host-local``)
is a thin layer over these functions; a plugin that embeds host-local calls
them with its own ``ipam`` section instead of exec'ing a binary::

    from cni_flannel.ipam import host_local

    result = host_local.allocate(conf.ipam, conf.name, req.container_id, req.ifname,
                                 cni_args=req.args, cni_version=conf.cni_version,
                                 runtime_config=conf.runtime_config, conf_args=conf.args)
    host_local.release(conf.ipam, conf.name, req.container_id, req.ifname)
    host_local.check(conf.ipam, conf.name, req.container_id, req.ifname)
    host_local.gc(conf.ipam, conf.name, req.valid_attachments)
    host_local.status(conf.ipam, conf.name, conf.cni_version)

``allocate(ipam_conf, network, container_id, ifname, cni_args=None,
cni_version="1.1.0", runtime_config=None, conf_args=None) -> Result``
    One address per range set (ips carry address/prefix and gateway, no
    interface index), the section's routes, and DNS from ``resolvConf``.
    ``cni_args`` is the parsed CNI_ARGS (``IP=a,b`` requests addresses),
    ``conf_args`` the config's ``args`` (``args.cni.ips``), ``runtime_config``
    the config's ``runtimeConfig`` (``ips``, ``ipRanges``).  All or nothing.
``release(ipam_conf, network, container_id, ifname) -> List[str]``
    Frees what (container_id, ifname) holds — or, when it holds nothing, what
    a pre-ifname host-local recorded for container_id — plus crash leftovers.
    Nothing held is success.  Only network and dataDir are validated, so a
    config whose ranges were broken since ADD still releases.
``check(ipam_conf, network, container_id, ifname) -> None``
    UnknownContainer (3) when the container holds no address here.
``gc(ipam_conf, network, valid_attachments) -> List[str]``
    Frees every address whose (containerID, ifname) is not in
    ``valid_attachments``; None (the runtime sent no list) frees nothing.
``status(ipam_conf, network, cni_version="1.1.0") -> None``
    NotAvailable (50) when the data directory cannot be written or every
    address of some range set is taken; InvalidConfig (7) for a bad section.

Errors are CNIError subclasses: InvalidConfig 7 for every config problem,
IOFailure 5 for the data directory, allocator.AddressUnavailable 110
("no IP addresses available in range set: ..." / a requested address taken),
allocator.DuplicateAllocation 111.  Pass ``store=`` to run over another
:class:`~cni_flannel.ipam.store.Store` (tests use the in-memory one).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from cni_flannel.cni.errors import InvalidConfig, NotAvailable, UnknownContainer
from cni_flannel.cni.result import DNS, IPConfig, Result

from . import allocator
from .config import IPAMConfig, parse_ipam
from .disk import DiskStore
from .store import Store

CURRENT = "1.1.0"


def _store(conf: IPAMConfig, store: Optional[Store]) -> Store:
    return store if store is not None else DiskStore(conf.data_dir, conf.network)


def allocate(
    ipam_conf: Dict[str, Any],
    network: str,
    container_id: str,
    ifname: str,
    cni_args: Optional[Dict[str, str]] = None,
    cni_version: str = CURRENT,
    runtime_config: Optional[Dict[str, Any]] = None,
    conf_args: Optional[Dict[str, Any]] = None,
    store: Optional[Store] = None,
) -> Result:
    conf = parse_ipam(ipam_conf, network, cni_version, cni_args, runtime_config, conf_args)
    dns = DNS()
    if conf.resolv_conf:
        from .resolv import parse_resolv_conf

        dns = parse_resolv_conf(conf.resolv_conf)
    got = allocator.allocate(_store(conf, store), conf, container_id, ifname)
    ips = [IPConfig(address=f"{ip}/{rng.subnet.prefixlen}", gateway=str(rng.gateway)) for ip, rng in got]
    return Result(cni_version=CURRENT, ips=ips, routes=list(conf.routes), dns=dns)


def release(ipam_conf: Dict[str, Any], network: str, container_id: str, ifname: str,
            store: Optional[Store] = None) -> List[str]:
    conf = parse_ipam(ipam_conf, network, CURRENT, ranges=False)
    return allocator.release(_store(conf, store), container_id, ifname)


def check(ipam_conf: Dict[str, Any], network: str, container_id: str, ifname: str,
          cni_version: str = CURRENT, store: Optional[Store] = None) -> None:
    conf = parse_ipam(ipam_conf, network, cni_version, ranges=False)
    if not allocator.find(_store(conf, store), container_id, ifname):
        raise UnknownContainer(
            f"host-local: Failed to find address added by container {container_id}",
            f"no address of network {network!r} is reserved for interface {ifname!r}",
        )


def gc(ipam_conf: Dict[str, Any], network: str, valid_attachments: Optional[Sequence[Tuple[str, str]]],
       store: Optional[Store] = None) -> List[str]:
    conf = parse_ipam(ipam_conf, network, CURRENT, ranges=False)
    if valid_attachments is None:
        return []  # no keep-list is not "keep nothing": refuse to guess
    return allocator.gc(_store(conf, store), list(valid_attachments))


def status(ipam_conf: Dict[str, Any], network: str, cni_version: str = CURRENT,
           store: Optional[Store] = None) -> None:
    # A full range set is deliberately NOT "not available": runtimes turn a failing STATUS into
    # NetworkReady=false, the kubelet marks the node NotReady, and its pods get evicted — an
    # outage for every pod on the node because one more could not start.  ADD reports it instead.
    conf = parse_ipam(ipam_conf, network, cni_version)
    if store is None:
        _check_writable(os.path.join(conf.data_dir, conf.network))


def _check_writable(directory: str) -> None:
    """The directory, or its nearest existing ancestor, must be a writable directory."""
    path = directory
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    problem = ""
    if not os.path.isdir(path):
        problem = "is not a directory"
    elif not os.access(path, os.W_OK | os.X_OK):
        problem = "is not writable"
    else:
        try:
            st = os.statvfs(path)
            if st.f_bavail == 0 or (st.f_files and st.f_favail == 0):
                problem = "is on a full filesystem"
        except OSError as exc:
            problem = f"cannot be inspected ({exc.strerror})"
    if problem:
        raise NotAvailable(
            f"host-local: data directory {path} {problem}",
            f"addresses for {directory} cannot be recorded; fix the dataDir or its filesystem",
        )


def require_ipam_section(raw: Dict[str, Any]) -> Dict[str, Any]:
    """The standalone plugin reads the calling plugin's whole config."""
    ipam = raw.get("ipam")
    if not isinstance(ipam, dict):
        raise InvalidConfig("IPAM config missing 'ipam' key", "host-local reads the \"ipam\" object of the network configuration")
    return ipam
