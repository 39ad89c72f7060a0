"""subnet.env, the lease behind it, net-conf.json, and the daemon (pure checks over NodeFacts)."""

from __future__ import annotations

import time
from typing import List, Optional

from cni_flannel.daemon.lease import RENEW_MARGIN, Lease

from . import model as M
from .common import duration, node_ips, subnets
from .facts import NodeFacts

# flanneld's gauge (cni_flannel/daemon/metrics.py; 0: the lease never expires), and the name
# first announced for it.
LEASE_METRICS = ("flannel_lease_expiry_timestamp_seconds", "flannel_lease_expiration_timestamp_seconds")
LEASE_METRIC = LEASE_METRICS[0]
START_FLANNELD = ("start flanneld on this node; with kube-flannel: kubectl -n kube-flannel get pods -o wide "
                  "--field-selector spec.nodeName=<node>, then `kubectl -n kube-flannel logs <that pod>` says "
                  "why it has not written the file")


def subnet_env(f: NodeFacts) -> M.Check:
    cid, title = "subnet-env", "subnet.env"
    if f.subnet_env is None:
        if f.subnet_env_missing:
            return M.fail(cid, title, f"{f.subnet_env_path} does not exist: every pod ADD fails "
                          "(\"loadFlannelSubnetEnv failed\" / \"plugin type=flannel failed\")", START_FLANNELD)
        return M.fail(cid, title, f.subnet_env_error or f"{f.subnet_env_path} cannot be read",
                      "restart flanneld so it rewrites the file (it writes it after taking its lease)")
    env = f.subnet_env
    parts = [f"subnet {', '.join(str(s) for s in env.subnets)}",
             f"network {', '.join(str(n) for n in env.networks)}", f"MTU {env.mtu}",
             f"ipmasq {'true' if env.ipmasq else 'false'}"]
    return M.ok(cid, title, f"{f.subnet_env_path}: " + ", ".join(parts))


def _own_lease(f: NodeFacts) -> Optional[Lease]:
    src = f.lease_source
    if src is None:
        return None
    if src.own is not None:
        return src.own
    mine = set(node_ips(f))
    return next((l for l in src.leases if any(s.public_ip in mine for s in l.sides())), None)


def lease(f: NodeFacts) -> M.Check:
    cid, title = "lease", "subnet.env vs lease"
    if f.lease_source is None:
        why = f.unavailable.get("leases", "no lease store given (--etcd-endpoints, or --kube-api-url with --node-name)")
        return M.unknown(cid, title, f"not checked: {why}")
    if f.subnet_env is None:
        return M.unknown(cid, title, "no readable subnet.env to compare the lease with")
    src, want = f.lease_source, {str(s) for s in subnets(f)}
    own = _own_lease(f)
    restart = ("restart flanneld: it rewrites subnet.env from its lease; then recreate this node's pods "
               "(they keep addresses of the old subnet) and, if the cni0 check fails, cni0 too")
    if own is None:
        holders = [l.name for l in src.leases if {str(s.subnet) for s in l.sides()} & want]
        if holders:
            return M.fail(cid, title, f"{', '.join(sorted(want))} is leased to {'; '.join(holders)} in {src.kind} "
                          f"({src.where}), not to this node ({', '.join(node_ips(f)) or 'no addresses'})",
                          "two nodes use one subnet: stop flanneld here, remove /run/flannel/subnet.env and "
                          "start it again so it takes a free lease, then recreate this node's pods")
        return M.fail(cid, title, f"{src.kind} ({src.where}) holds no lease for this node; subnet.env says "
                      f"{', '.join(sorted(want))}", "the lease expired or was revoked: " + restart)
    have = {str(s.subnet) for s in own.sides()}
    if have != want:
        return M.fail(cid, title, f"{src.kind} leases {', '.join(sorted(have))} to this node, subnet.env says "
                      f"{', '.join(sorted(want))}", restart)
    return M.ok(cid, title, f"{src.kind} ({src.where}) leases {', '.join(sorted(have))} to this node, as subnet.env says")


def net_conf(f: NodeFacts) -> M.Check:
    cid, title = "net-conf", "subnet.env vs net-conf"
    if f.netconf is None:
        return M.unknown(cid, title, f"not checked: {f.netconf_error or 'no net-conf.json'}")
    if f.subnet_env is None:
        return M.unknown(cid, title, "no readable subnet.env to compare net-conf.json with")
    conf, env = f.netconf, f.subnet_env
    problems: List[str] = []
    for pool in conf.pools:
        nets = [n for n in env.networks if n.version == pool.version]
        if nets and pool.network not in nets:
            problems.append(f"net-conf.json Network {pool.network}, subnet.env {', '.join(map(str, nets))}")
        elif not nets:
            problems.append(f"net-conf.json enables IPv{pool.version} ({pool.network}) but subnet.env has no IPv{pool.version} network")
        for sub in (s for s in env.subnets if s.version == pool.version):
            if not sub.subnet_of(pool.network):  # type: ignore[arg-type]
                problems.append(f"the lease {sub} is outside the Network {pool.network}")
    for sub in env.subnets:
        if conf.pool(sub.version) is None:
            problems.append(f"subnet.env has IPv{sub.version} subnet {sub} but net-conf.json does not enable IPv{sub.version}")
    if problems:
        return M.fail(cid, title, "; ".join(problems),
                      "net-conf.json changed after flanneld wrote subnet.env: restart flanneld on every node "
                      "(each rewrites subnet.env), then recreate the pods (they keep their old addresses)")
    nets = ", ".join(str(p.network) for p in conf.pools)
    return M.ok(cid, title, f"{f.netconf_path}: Network {nets}, Backend {conf.backend.type}; subnet.env agrees")


def daemon(f: NodeFacts) -> M.Check:
    cid, title = "daemon", "flanneld ready"
    d = f.daemon
    if d is None:
        return M.unknown(cid, title, f"not checked: {f.unavailable.get('daemon', 'no health port given')}")
    if d.ready is None:
        evidence = f"nothing answers on {d.url}/readyz ({d.error})"
        if d.explicit:
            return M.fail(cid, title, evidence + ": flanneld is not running", START_FLANNELD.split(";")[0]
                          + " (and check that --healthz-port matches)")
        return M.unknown(cid, title, evidence + "; flanneld may run with another --healthz-port: give it")
    if not d.ready:
        body = d.body.strip().splitlines()[0][:160] if d.body.strip() else "no reason given"
        return M.fail(cid, title, f"GET {d.url}/readyz answered {d.status}: {body}",
                      "flanneld runs but is not ready (no lease, rules or subnet.env yet): its log says what it "
                      "waits for (kubectl -n kube-flannel logs <flannel pod on this node>)")
    return M.ok(cid, title, f"GET {d.url}/readyz answered {d.status}")


def lease_expiry(f: NodeFacts, now: Optional[float] = None) -> M.Check:
    cid, title = "lease-expiry", "lease expiry"
    now = time.time() if now is None else now
    left, where = None, ""
    src = f.lease_source
    if src is not None and src.kind == "kube":
        return M.ok(cid, title, "kube subnet manager: the lease is the Node's podCIDR and does not expire")
    if src is not None and src.ttl is not None:
        left, where = src.ttl, f"etcd {src.where}"
    elif f.daemon is not None and any(m in f.daemon.metrics for m in LEASE_METRICS):
        stamp = next(f.daemon.metrics[m] for m in LEASE_METRICS if m in f.daemon.metrics)
        if stamp == 0:
            return M.ok(cid, title, f"{f.daemon.url}/metrics: the lease has no expiry")
        left, where = stamp - now, f"{f.daemon.url}/metrics"
    if left is None:
        return M.unknown(cid, title, "not checked: needs --etcd-endpoints, or the daemon's /metrics "
                         f"({LEASE_METRIC})")
    renew = ("flanneld renews the lease 1 h before it expires and retries every minute: when it is close to "
             "expiry renewals fail -- check flanneld's log for etcd errors and that etcd is reachable from this node")
    if left <= 0:
        return M.fail(cid, title, f"the lease expired {duration(-left)} ago (from {where})",
                      "restart flanneld so it takes a lease again; " + renew)
    if left < RENEW_MARGIN - 300:  # renewal is due an hour before expiry; allow a few failed minutes
        return M.fail(cid, title, f"the lease expires in {duration(left)} (from {where}) and was not renewed", renew)
    return M.ok(cid, title, f"the lease expires in {duration(left)} (from {where}); flanneld renews it 1 h before")


