"""host-local (type ``host-local``): the IPAM plugin another plugin execs.

SPEC.md section "IP Allocation": the calling plugin passes its whole network
configuration; we read its ``ipam`` object.

ADD     reserve one address per range set; print ips, routes, dns
DEL     release what (CNI_CONTAINERID, CNI_IFNAME) holds; nothing held is fine
CHECK   fail when the container holds no address
GC      release every address not held by a cni.dev/valid-attachments entry
STATUS  fail (50) when the data directory cannot record addresses

The work is done by :mod:`cni_flannel.ipam.host_local`, shared with the
plugins that embed host-local in-process.
"""

from __future__ import annotations

from cni_flannel.cni.request import Request
from cni_flannel.cni.result import Result
from cni_flannel.ipam import host_local as ipam

#: host-local never enters CNI_NETNS, so the dispatcher lets a path it cannot open through
#: (as Go's host-local allocates for a sandbox that is already gone).
ENTERS_NETNS = False


def add(req: Request) -> Result:
    conf = req.config
    return ipam.allocate(
        ipam.require_ipam_section(conf.raw), conf.name, req.container_id, req.ifname,
        cni_args=req.args, cni_version=conf.cni_version,
        runtime_config=conf.runtime_config, conf_args=conf.args,
    )


def delete(req: Request) -> None:
    ipam.release(ipam.require_ipam_section(req.config.raw), req.config.name, req.container_id, req.ifname)


def check(req: Request) -> None:
    conf = req.config
    ipam.check(ipam.require_ipam_section(conf.raw), conf.name, req.container_id, req.ifname, conf.cni_version)


def gc(req: Request) -> None:
    ipam.gc(ipam.require_ipam_section(req.config.raw), req.config.name, req.valid_attachments)


def status(req: Request) -> None:
    conf = req.config
    ipam.status(ipam.require_ipam_section(conf.raw), conf.name, conf.cni_version)
