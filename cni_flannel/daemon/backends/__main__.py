"""Drive one backend in this network namespace over JSON lines (tests, debugging).

    python -m cni_flannel.daemon.backends --backend '{"Type": "vxlan", "VNI": 1}' \
        --network 10.244.0.0/16 [--iface eth0]

Each stdin line is a request, answered by one stdout line:

    {"op": "setup", "lease": {<own lease>}}         -> {"ok": true, "data": {...}, "mtu": 1450}
    {"op": "reconcile", "peers": [{<lease>}, ...]}  -> {"ok": true, "plan": {"delete": [], "add": []}}
    {"op": "reconcile"}                             (the peers it knows)
    {"op": "handle", "events": [{"type": "added"|"removed", "lease": {...}}]}
    {"op": "peers"}                                 -> {"ok": true, "peers": [...]}
    {"op": "counters"}                              -> (udp) {"ok": true, "counters": {...}}

A failure answers {"ok": false, "error": "<class>", "msg": "...", "peers": [...]} and the
process keeps its state, as the daemon would.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
from typing import Any, Dict

from cni_flannel.daemon.backends import new
from cni_flannel.daemon.errors import DaemonError
from cni_flannel.daemon.lease import Lease, LeaseFormatError
from cni_flannel.daemon.manager import ADDED, REMOVED, Event
from cni_flannel.daemon.netconf import parse_backend
from cni_flannel.net.errors import NetFailure


def event_from_dict(d: Any) -> Event:
    """{"type": "added"|"removed", "lease": {...}} (type case-insensitive)."""
    if not isinstance(d, dict):
        raise LeaseFormatError(f"a lease event must be a JSON object, not {d!r}")
    kind = str(d.get("type", "")).lower()
    if kind not in (ADDED, REMOVED):
        raise LeaseFormatError(f"lease event type {d.get('type')!r} is neither {ADDED!r} nor {REMOVED!r}")
    return Event(kind, Lease.from_dict(d.get("lease")))


def serve(be: Any, line: str) -> Dict[str, Any]:
    req = json.loads(line)
    op = req.get("op")
    if op == "setup":
        data = be.setup(Lease.from_dict(req["lease"]))
        return {"ok": True, "data": data, "mtu": be.mtu}
    if op == "reconcile":
        peers = req.get("peers")
        plan = be.reconcile(None if peers is None else [Lease.from_dict(p) for p in peers])
        return {"ok": True, "plan": plan.to_dict()}
    if op == "handle":
        plan = be.handle([event_from_dict(e) for e in req.get("events", [])])
        return {"ok": True, "plan": plan.to_dict()}
    if op == "peers":
        return {"ok": True, "peers": [p.to_dict() for p in be.peers.values()]}
    if op == "counters" and hasattr(be, "counters"):  # the udp forwarder's, and this process's CPU
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {"ok": True, "counters": be.counters(), "process_cpu_seconds": ru.ru_utime + ru.ru_stime}
    return {"ok": False, "error": "InvalidRequest", "msg": f"unknown op {op!r}"}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m cni_flannel.daemon.backends")
    parser.add_argument("--backend", default="{}", help="net-conf.json's Backend section (JSON)")
    parser.add_argument("--network", action="append", default=[], help="a cluster Network (repeatable)")
    parser.add_argument("--iface", default=None, help="external interface (default: the one with PublicIP)")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
    config = parse_backend(json.loads(args.backend), "--backend", default_type="vxlan")
    be = new(config.type, config, networks=args.network, ext_iface=args.iface)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = serve(be, line)
        except DaemonError as exc:
            reply = {"ok": False, "error": type(exc).__name__, "msg": exc.msg,
                     "peers": getattr(exc, "peers", [])}
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "error": type(exc).__name__, "msg": str(exc)}
        except NetFailure as exc:  # a netlink request the backend does not handle itself
            reply = {"ok": False, "error": type(exc).__name__, "msg": exc.msg, "peers": []}
        print(json.dumps(reply), flush=True)
    be.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
