"""The daemon's health endpoints, etcd's lease keys (v3 JSON gateway) and the Kubernetes
Node objects -- plain HTTP with short timeouts, read-only."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Dict, List, Optional

from cni_flannel.daemon import lease as L
from cni_flannel.daemon import netconf as netconf_mod

from .collect import Options
from .facts import Daemon, LeaseSource, NodeFacts

if TYPE_CHECKING:
    import ssl

IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
IN_CLUSTER_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"


def _get(url: str, timeout: float, data: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None,
         context: Optional["ssl.SSLContext"] = None):
    """One request, never through a proxy from the environment (these are node-local or cluster endpoints)."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    handlers: list = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers).open(req, timeout=timeout)


def read_daemon(f: NodeFacts, o: Options) -> None:
    port = o.healthz_port or 8081  # kube-flannel.yml runs --healthz-port=8081
    host = f"[{o.healthz_ip}]" if ":" in o.healthz_ip else o.healthz_ip
    d = Daemon(url=f"http://{host}:{port}", explicit=o.healthz_port is not None)
    try:
        with _get(d.url + "/readyz", o.http_timeout) as resp:
            d = Daemon(d.url, d.explicit, True, resp.status, resp.read(2048).decode(errors="replace"))
    except urllib.error.HTTPError as exc:
        d = Daemon(d.url, d.explicit, False, exc.code, exc.read(2048).decode(errors="replace"))
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        f.daemon = Daemon(d.url, d.explicit, None, error=str(getattr(reason, "strerror", None) or reason))
        return
    try:
        with _get(d.url + "/metrics", o.http_timeout) as resp:
            metrics = parse_metrics(resp.read(1 << 20).decode(errors="replace"))
        d = Daemon(d.url, d.explicit, d.ready, d.status, d.body, metrics=metrics)
    except (OSError, ValueError):
        pass  # an older daemon without /metrics: lease expiry then comes from etcd or stays "!"
    f.daemon = d


def parse_metrics(text: str) -> Dict[str, float]:
    """Prometheus text format -> {metric name: value} (labels dropped; the last sample wins)."""
    out: Dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, rest = line.partition(" ") if "{" not in line.split(" ", 1)[0] else \
            (line[:line.index("{")], "", line[line.rindex("}") + 1:])
        try:
            out[name_part] = float(rest.split()[0])
        except (ValueError, IndexError):
            continue
    return out


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _prefix_end(key: str) -> str:
    return key[:-1] + chr(ord(key[-1]) + 1)


def read_etcd(f: NodeFacts, o: Options) -> None:
    errors = []
    for endpoint in o.etcd_endpoints:
        base = endpoint.rstrip("/")
        try:
            f.lease_source = _etcd_leases(f, o, base)
            return
        except (OSError, ValueError, KeyError) as exc:
            errors.append(f"{base}: {getattr(exc, 'reason', exc)}")
    f.unavailable["leases"] = "etcd unreachable (" + "; ".join(errors) + ")"


def _etcd_leases(f: NodeFacts, o: Options, base: str) -> LeaseSource:
    prefix = L.subnets_prefix(o.etcd_prefix)
    if not prefix.endswith("/"):
        prefix += "/"
    body = json.dumps({"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))}).encode()
    with _get(base + "/v3/kv/range", o.http_timeout, body, {"Content-Type": "application/json"}) as resp:
        doc = json.load(resp)

    leases: List[L.Lease] = []
    ids: Dict[L.Lease, str] = {}
    for kv in doc.get("kvs", []):
        key = base64.b64decode(kv["key"]).decode(errors="replace")
        value = base64.b64decode(kv.get("value", "")).decode(errors="replace")
        try:
            lease = L.lease_from_kv(key, value)
        except L.LeaseFormatError:
            continue
        leases.append(lease)
        ids[lease] = kv.get("lease", "0")
    mine = {a.address for a in f.addresses}
    own = next((l for l in leases if any(s.public_ip in mine for s in l.sides())), None)
    ttl = None
    if own is not None and ids.get(own, "0") not in ("0", ""):
        body = json.dumps({"ID": ids[own]}).encode()
        with _get(base + "/v3/lease/timetolive", o.http_timeout, body, {"Content-Type": "application/json"}) as resp:
            ttl = float(json.load(resp).get("TTL", -1))
    if f.netconf is None:  # etcd mode keeps net-conf in <prefix>/config
        body = json.dumps({"key": _b64(L.config_key(o.etcd_prefix))}).encode()
        with _get(base + "/v3/kv/range", o.http_timeout, body, {"Content-Type": "application/json"}) as resp:
            kvs = json.load(resp).get("kvs", [])
        if kvs:
            try:
                f.netconf = netconf_mod.parse(base64.b64decode(kvs[0]["value"]).decode(), f"etcd {L.config_key(o.etcd_prefix)}")
                f.netconf_path = f"etcd {L.config_key(o.etcd_prefix)}"
            except ValueError as exc:
                f.netconf_error = str(exc)
    return LeaseSource("etcd", base, tuple(leases), own, ttl)


def read_kube(f: NodeFacts, o: Options) -> None:
    node = o.node_name or os.environ.get("NODE_NAME", "")
    if not node:
        f.unavailable["leases"] = "--kube-api-url needs --node-name (or NODE_NAME)"
        return
    token = o.kube_token_file or (IN_CLUSTER_TOKEN if os.path.exists(IN_CLUSTER_TOKEN) else "")
    headers = {"Accept": "application/json"}
    try:
        if token:
            with open(token) as fh:
                headers["Authorization"] = "Bearer " + fh.read().strip()
        ca = o.kube_ca_file or (IN_CLUSTER_CA if os.path.exists(IN_CLUSTER_CA) else "")
        ctx = None
        if o.kube_api_url.startswith("https"):
            import ssl

            ctx = ssl.create_default_context(cafile=ca or None)
        with _get(o.kube_api_url.rstrip("/") + "/api/v1/nodes", o.http_timeout * 3, headers=headers, context=ctx) as resp:
            items = json.load(resp).get("items", [])
    except (OSError, ValueError) as exc:
        f.unavailable["leases"] = f"Kubernetes API {o.kube_api_url}: {getattr(exc, 'reason', exc)}"
        return
    leases, own = [], None
    v6 = f.netconf.enable_ipv6 if f.netconf is not None else False
    v4 = f.netconf.enable_ipv4 if f.netconf is not None else True
    for item in items:
        meta, spec = item.get("metadata", {}), item.get("spec", {})
        name = meta.get("name", "")
        try:
            lease = L.lease_from_node(meta.get("annotations") or {}, spec.get("podCIDRs") or [],
                                      spec.get("podCIDR", ""), enable_ipv4=v4, enable_ipv6=v6, node=name)
        except L.LeaseFormatError:
            if name != node:
                continue  # a node flanneld has not annotated yet: not a peer yet
            try:
                v4net, v6net = L.pod_subnets(spec.get("podCIDRs") or [], spec.get("podCIDR", ""), name)
            except L.LeaseFormatError:
                continue
            lease = L.Lease(v4net, v6net)
        leases.append(lease)
        if name == node:
            own = lease
    if own is None:
        f.unavailable["leases"] = f"node {node!r} not found in the Kubernetes API, or it has no podCIDR"
        return
    f.lease_source = LeaseSource("kube", f"{o.kube_api_url} node {node}", tuple(leases), own, None)


