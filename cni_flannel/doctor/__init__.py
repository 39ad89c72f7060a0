"""``flanneld doctor``: look at a node and say, in plain words, what is wrong and what to do.

    facts.py        NodeFacts: everything the checks read, as plain data
    collect*.py     the thin I/O layer filling it (files, netlink, /proc, iptables/nft, pods)
    remote.py       the daemon's /readyz and /metrics, etcd leases, Kubernetes Nodes (HTTP)
    probe.py        one bounded round of pings to the peers' VTEP addresses
    checks_*.py     pure checks: NodeFacts -> Check (✔ / ✘ / !, evidence, fix)
    gc.py           the exact CNI GC command releasing what dead pods left
    run.py          diagnose(options) -> Report;  render.py: table / JSON;  cli.py: the command

Read-only: doctor never changes the node.
"""
