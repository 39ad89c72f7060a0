"""Drop UDP conntrack entries for the mapped host ports.

A UDP flow that started while no rule (or another pod's rule) matched stays
pinned to its old destination for as long as packets keep coming; deleting
the entries makes the next packet go through the new rules.  The reference
does this after ADD only (plugins#1190); we also do it after DEL, so traffic
stops reaching an address the next pod may get.

Cost matters: each ``conntrack -D`` walks the kernel's whole table (~10 ms
here), so deleting 50 ports blindly takes half a second.  So we first look
at what exists — ``/proc/net/nf_conntrack`` (this namespace, both families,
no exec) or else one ``conntrack -L`` per family — and run one
``conntrack -R -`` (one command per line) for the ports that have entries,
usually none.  Failures are logged, never fatal, as upstream.
"""

from __future__ import annotations

import re
from typing import Iterable, List, Optional, Sequence, Set, Tuple

from cni_flannel.cni.log import logger
from cni_flannel.firewall import Runner

FAMILIES = ("ipv4", "ipv6")
PROC_TABLE = "/proc/net/nf_conntrack"
PROC_COUNT = "/proc/sys/net/netfilter/nf_conntrack_count"
_DPORT = re.compile(r"\bdport=(\d+)\b")
Entry = Tuple[str, int]  # (family, original destination port)


def udp_entries(lines: Iterable[str], family: Optional[str] = None) -> Set[Entry]:
    """(family, original dport) of the UDP flows in /proc/net/nf_conntrack or
    ``conntrack -L`` output (which lacks the family column: pass it)."""
    found: Set[Entry] = set()
    for line in lines:
        cols = line.split()
        if family is None:
            if len(cols) < 3 or cols[0] not in FAMILIES or cols[2] != "udp":
                continue
            fam = cols[0]
        else:
            if not cols or cols[0] != "udp":
                continue
            fam = family
        m = _DPORT.search(line)  # the first dport= is the original direction's
        if m:
            found.add((fam, int(m.group(1))))
    return found


def commands(entries: Iterable[Entry]) -> str:
    return "".join(f"-D -f {fam} -p udp --orig-port-dst {int(port)}\n" for fam, port in sorted(entries))


def _existing(families: Sequence[str], runner: Runner) -> Optional[Set[Entry]]:
    """The UDP flows that exist now; None when they cannot be listed."""
    try:
        with open(PROC_COUNT) as f:
            if f.read().strip() == "0":
                return set()
    except OSError:
        return set()  # no conntrack in this namespace's kernel: nothing to flush
    try:
        with open(PROC_TABLE) as f:
            return {e for e in udp_entries(f) if e[0] in families}
    except OSError:
        pass
    found: Set[Entry] = set()
    for fam in families:
        done = runner.run(["conntrack", "-L", "-f", fam, "-p", "udp"], check=False)
        if done.returncode != 0:
            return None
        found |= udp_entries(done.stdout.splitlines(), fam)
    return found


def flush_udp(ports: Sequence[int], families: Sequence[str] = FAMILIES,
              runner: Optional[Runner] = None) -> bool:
    """Delete the entries; True when nothing was left to delete or conntrack succeeded."""
    if not ports or not families:
        return True
    runner = runner or Runner()
    try:
        existing = _existing(families, runner)
        if existing is None:  # cannot list: delete blindly
            doomed: List[Entry] = [(f, p) for f in families for p in ports]
        else:
            wanted = set(ports)
            doomed = [e for e in existing if e[1] in wanted]
        if not doomed:
            return True
        done = runner.run(["conntrack", "-R", "-"], stdin=commands(doomed), check=False)
    except Exception as exc:  # conntrack missing or stuck: informative only
        logger().warning("portmap: not flushing UDP conntrack entries: %s", exc)
        return False
    if done.returncode != 0:
        logger().warning("portmap: conntrack -R failed (exit %s): %s", done.returncode, done.stderr.strip())
        return False
    return True

