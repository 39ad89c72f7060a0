"""The closing table: per mode, our TTLs and wire format beside the seed's, iperf3, hostPort."""
from __future__ import annotations

from typing import List, Sequence, Tuple

from demo.modes import SEED, ModeResult


NOTES = (
    "TTL: 64 = the bridge alone; each routing hop takes one: node1 and node2 forward (62); udp's flanneld",
    "decrements it once more on each side (60).  The seed's host-gw 61: its nodes' underlay (a cloud",
    "network) routes between them once more; the demo's underlay is one bridge.",
)


def table(results: Sequence[ModeResult]) -> List[str]:
    head = ("mode", "same-node ttl (seed)", "cross-node ttl (seed)", "on eth0, cross-node", "iperf3 a->c",
            "hostPort")
    rows: List[Tuple[str, ...]] = [head]
    for r in results:
        seed = SEED[r.mode]
        if r.status != "ok":
            rows.append((r.mode, r.status, "", "", "", ""))
            continue
        rows.append((r.mode, f"{r.same_ttl} ({seed['same']})", f"{r.cross_ttl} ({seed['cross']})", r.wire,
                     f"{r.gbps:.2f} Gbit/s" if r.gbps is not None else "-", "ok" if r.hostport else "-"))
    full = [row for row in rows if len(row) > 2 and row[2]]
    widths = [max(len(row[i]) for row in full) for i in range(len(head))]
    out = []
    for row in rows:
        if row in full:
            out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        else:  # a mode that did not run: its status in one wide cell
            out.append(f"{row[0]:<{widths[0]}}  {row[1]}")
    hand = [f"{r.mode}: flanneld left {r.by_hand} route(s) of the previous backend; the demo removed them by hand."
            for r in results if r.by_hand]
    return out + [""] + list(NOTES) + hand
