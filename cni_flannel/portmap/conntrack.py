"""Drop UDP conntrack entries for the mapped host ports.

A UDP flow that started while no rule (or another pod's rule) matched stays
pinned to its old destination for as long as packets keep coming; deleting
the entries makes the next packet go through the new rules.  The reference
does this after ADD only (plugins#1190); we also do it after DEL, so traffic
stops reaching an address the next pod may get.

One ``conntrack -R -`` exec deletes every port of both families (the CLI
reads one command per line); failures are logged, never fatal, as upstream.
"""

from __future__ import annotations

from typing import Optional, Sequence

from cni_flannel.cni.log import logger
from cni_flannel.firewall import Runner

FAMILIES = ("ipv4", "ipv6")


def commands(ports: Sequence[int], families: Sequence[str] = FAMILIES) -> str:
    lines = [f"-D -f {family} -p udp --orig-port-dst {int(port)}" for family in families for port in ports]
    return "".join(line + "\n" for line in lines)


def flush_udp(ports: Sequence[int], families: Sequence[str] = FAMILIES,
              runner: Optional[Runner] = None) -> bool:
    """Delete the entries; True when conntrack ran and succeeded."""
    if not ports or not families:
        return True
    runner = runner or Runner()
    try:
        done = runner.run(["conntrack", "-R", "-"], stdin=commands(ports, families), check=False)
    except Exception as exc:  # conntrack missing or stuck: informative only
        logger().warning("portmap: not flushing UDP conntrack entries: %s", exc)
        return False
    if done.returncode != 0:
        logger().warning("portmap: conntrack -R failed (exit %s): %s", done.returncode, done.stderr.strip())
        return False
    return True
