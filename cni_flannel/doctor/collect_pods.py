"""Find the pods of this node: network namespaces at the other end of cni0's veths.

Candidates are the runtime's pinned namespaces (/run/netns, /var/run/netns) and every
process's (/proc/<pid>/ns/net, for runtimes that pin none).  A candidate is a pod of this
node only when the node gives it an id that one of cni0's veths names as its peer -- so
namespaces of other nodes, or of anything else on the machine, are never taken for pods.
Only those are entered (to read their addresses and MTUs).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Dict, Iterator, List, Set, Tuple

from cni_flannel.cni.errors import CNIError
from cni_flannel.net import ns
from cni_flannel.net.dump import Dumper

from .facts import PodNet

NETNS_DIRS = ("/run/netns", "/var/run/netns")


def _candidates() -> Iterator[str]:
    for d in NETNS_DIRS:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for name in names:
            yield os.path.join(d, name)
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return
    for pid in pids:
        yield f"/proc/{pid}/ns/net"


def find_pods(peer_nsids: Set[int]) -> List[PodNet]:
    """PodNet for each namespace whose id (as this thread's namespace sees it) is in peer_nsids."""
    if not peer_nsids:
        return []
    found: Dict[int, str] = {}
    seen: Set[Tuple[int, int]] = set()
    own = os.stat(ns.SELF)
    seen.add((own.st_dev, own.st_ino))
    with Dumper() as sock:
        for path in _candidates():
            try:
                st = os.stat(path)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                nsid = sock.nsid_of(fd)
            except OSError:
                continue
            finally:
                os.close(fd)
            if nsid in peer_nsids and nsid not in found:
                found[nsid] = path
                if len(found) == len(peer_nsids):
                    break
    return [_read_pod(path, nsid) for nsid, path in sorted(found.items())]


def _read_pod(path: str, nsid: int) -> PodNet:
    try:
        with ns.enter(path), Dumper() as d:
            links = d.links()
            addrs = d.addresses()
    except (OSError, CNIError):  # the pod went away meanwhile: an empty record, never a crash
        return PodNet(path, nsid)
    ips = tuple(a.address for a in addrs if a.address not in ("127.0.0.1", "::1")
                and not ipaddress.ip_address(a.address).is_link_local)
    mtus = tuple((l.name, l.mtu) for l in links if l.kind == "veth")
    return PodNet(path, nsid, ips, mtus)
