"""KubeSubnetManager: leases are Node objects (flanneld --kube-subnet-mgr).

- network config: net-conf.json from --net-config-path (kube rules: no subnet-range checks);
- our lease: our node's spec.podCIDR(s) (waiting, with a line every ``wait_log_interval`` s, while
  it has none), checked against the configured networks; our attributes are recorded as node
  annotations by one strategic-merge patch on nodes/status, only when something differs;
- ``mark_network_available()``: NetworkUnavailable=False (reason FlannelIsUp) once the node is
  ready, unless --set-node-network-unavailable=false;
- ``previous_attrs()`` / ``stored_public_ips()``: what our node says from a previous run (the
  vxlan VtepMAC is reused) or from an operator (node-public-ip);
- peers: list + watch of all nodes -> Snapshot, then Events; resumes from the last
  resourceVersion (bookmarks keep it fresh), lists again after 410 Gone, backs off while the API
  server is away.  Kube leases never expire: renew_lease returns the lease.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .. import netconf as netconf_mod
from ..errors import ConfigError, StoreError, StoreUnavailable
from ..lease import ANNOTATION_PREFIX, Lease, LeaseAttrs, LeaseFormatError, annotation_names
from ..manager import Event, Sink, Snapshot, SubnetManager
from ..netconf import NetConf
from ..subnets import SubnetError, kube_subnets
from .client import Connection, Gone, KubeClient, NotFound
from .nodes import (NodeTracker, has_pod_cidr, network_available_patch, own_annotations_patch, pod_cidrs_of,
                    stored)

log = logging.getLogger("cni_flannel.daemon.kube")

MAX_BATCH = 1000  # watch events handed to the main loop at once, at most


@dataclass(frozen=True)
class KubeOptions:
    connection: Connection = field(default_factory=Connection)
    node_name: str = ""              # NODE_NAME; else the node of POD_NAMESPACE/POD_NAME
    pod_name: str = ""
    pod_namespace: str = ""
    annotation_prefix: str = ANNOTATION_PREFIX     # --kube-annotation-prefix
    net_config_path: str = netconf_mod.DEFAULT_PATH  # --net-config-path
    set_node_network_unavailable: bool = True       # --set-node-network-unavailable
    watch_timeout: float = 300.0     # one watch request; then resumed from the last resourceVersion
    wait_log_interval: float = 30.0  # "still no podCIDR" at most this often
    poll_interval: float = 1.0       # how often a node without podCIDR is looked at again
    backoff_cap: float = 30.0

    @classmethod
    def from_env(cls, env: Optional[Dict[str, str]] = None, **kw: Any) -> "KubeOptions":
        e = os.environ if env is None else env
        return cls(node_name=e.get("NODE_NAME", ""), pod_name=e.get("POD_NAME", ""),
                   pod_namespace=e.get("POD_NAMESPACE", ""), **kw)


class KubeSubnetManager(SubnetManager):
    name = "kube"

    def __init__(self, opts: KubeOptions, client: Optional[KubeClient] = None) -> None:
        try:
            annotation_names(opts.annotation_prefix)
        except LeaseFormatError as exc:
            raise ConfigError(f"--kube-annotation-prefix: {exc}") from None
        self.opts = opts
        self.client = client or KubeClient(opts.connection)
        self._closing = threading.Event()
        self._conf: Optional[NetConf] = None
        self._node_name = opts.node_name

    # --- identity and config ----------------------------------------------------------------
    @property
    def node_name(self) -> str:
        if not self._node_name:
            o = self.opts
            if not (o.pod_name and o.pod_namespace):
                raise ConfigError("NODE_NAME is not set (nor POD_NAME and POD_NAMESPACE): the DaemonSet passes "
                                  "it from spec.nodeName (env valueFrom fieldRef)")
            name = self.client.get_pod_node_name(o.pod_namespace, o.pod_name)
            if not name:
                raise ConfigError(f"pod {o.pod_namespace}/{o.pod_name} has no spec.nodeName")
            self._node_name = name
        return self._node_name

    def network_config(self) -> NetConf:
        if self._conf is None:
            self._conf = netconf_mod.load(self.opts.net_config_path, kube=True)
        return self._conf

    def _own_node(self) -> Dict[str, Any]:
        try:
            return self.client.get_node(self.node_name)
        except NotFound:
            raise StoreError(f"node {self.node_name!r} does not exist in the API server "
                             f"({self.client.server}): is NODE_NAME the node's Kubernetes name?") from None

    def previous_attrs(self) -> Optional[LeaseAttrs]:
        """Backend type/data our node carries from a previous run (None: none or unreadable)."""
        try:
            return stored(self._own_node(), self.opts.annotation_prefix).attrs
        except StoreError as exc:
            log.warning("cannot read our node's previous backend data: %s", exc)
            return None

    def stored_public_ips(self) -> Tuple[Any, Any]:
        """The operator's <prefix>node-public-ip / node-public-ipv6 (override --public-ip, as upstream)."""
        try:
            s = stored(self._own_node(), self.opts.annotation_prefix)
        except StoreError as exc:
            log.warning("cannot read our node's public-IP annotations: %s", exc)
            return None, None
        return s.node_public_ip, s.node_public_ipv6

    # --- our lease ----------------------------------------------------------------------------
    def acquire_lease(self, attrs: LeaseAttrs, previous: Optional[Lease] = None) -> Lease:
        conf = self.network_config()
        node = self._wait_for_pod_cidr()
        cidrs, cidr = pod_cidrs_of(node)
        try:
            v4, v6 = kube_subnets(conf, cidrs, cidr, self.node_name)
        except (SubnetError, LeaseFormatError) as exc:
            raise ConfigError(str(exc)) from None
        patch = own_annotations_patch(node, attrs, self.opts.annotation_prefix)
        if patch:
            self.client.patch_node_status(self.node_name, patch)
            log.info("node %r: recorded %s", self.node_name, ", ".join(sorted(patch["metadata"]["annotations"])))
        return Lease(subnet=v4, ipv6_subnet=v6, attrs=attrs)

    def _wait_for_pod_cidr(self) -> Dict[str, Any]:
        next_log, started = 0.0, time.monotonic()
        while True:
            node = self._own_node()
            if has_pod_cidr(node):
                if next_log:
                    log.info("node %r got podCIDR(s) %s after %.0fs", self.node_name,
                             pod_cidrs_of(node)[0] or [pod_cidrs_of(node)[1]], time.monotonic() - started)
                return node
            now = time.monotonic()
            if now >= next_log:
                log.warning("node %r has no podCIDR yet (spec.podCIDR is empty), waiting %.0fs so far: flannel "
                            "needs kube-controller-manager --allocate-node-cidrs (and --cluster-cidr matching "
                            "net-conf.json Network), or a podCIDR set on the node", self.node_name, now - started)
                next_log = now + self.opts.wait_log_interval
            if self._closing.wait(self.opts.poll_interval):
                raise StoreUnavailable(f"stopped while node {self.node_name!r} had no podCIDR")

    def renew_lease(self, lease: Lease) -> Lease:
        return lease  # a podCIDR does not expire

    def mark_network_available(self) -> None:
        """NetworkUnavailable=False on our node (flannel's CompleteLease); call once ready."""
        if not self.opts.set_node_network_unavailable:
            return
        self.client.patch_node_status(self.node_name, network_available_patch())
        log.info("node %r: condition NetworkUnavailable=False (FlannelIsUp)", self.node_name)

    # --- peers --------------------------------------------------------------------------------
    def watch_leases(self, sink: Sink, stop: threading.Event) -> None:
        conf = self.network_config()
        tracker = NodeTracker(conf.enable_ipv4, conf.enable_ipv6, self.opts.annotation_prefix)
        rv: Optional[str] = None
        delay = 1.0
        while not (stop.is_set() or self._closing.is_set()):
            try:
                if rv is None:
                    items, rv = self.client.list_nodes()
                    leases = tracker.reset(items)
                    log.info("listed %d nodes, %d with a flannel lease (resourceVersion %s)", len(items),
                             len(leases), rv)
                    sink(Snapshot(leases))
                cursor = [rv]
                try:
                    if self._watch_once(cursor, tracker, sink, stop):
                        delay = 1.0
                finally:
                    rv = cursor[0]
            except Gone as exc:
                log.info("node watch: %s; listing again", exc)
                rv = None
            except StoreError as exc:
                log.warning("node watch: %s; retrying in %.0fs", exc, delay)
                if stop.wait(delay):
                    return
                delay = min(delay * 2, self.opts.backoff_cap)

    def _watch_once(self, cursor: List[Optional[str]], tracker: NodeTracker, sink: Sink,
                    stop: threading.Event) -> bool:
        """One watch request.  A reader thread queues its events; here everything queued at a
        time becomes one batch (1,000 deletions arrive as a few batches, not 1,000), and ``stop``
        is seen within a second.  cursor[0]: the resourceVersion to resume from, kept current
        (bookmarks included).  True when at least one event arrived."""
        items: "queue.Queue[Any]" = queue.Queue()
        end = object()

        def read() -> None:
            try:
                for item in self.client.watch_nodes(str(cursor[0]), self.opts.watch_timeout):
                    items.put(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
                items.put(exc)
            items.put(end)

        threading.Thread(target=read, name="kube-node-watch", daemon=True).start()
        got_any = False
        while True:
            try:
                first = items.get(timeout=1.0)
            except queue.Empty:
                if stop.is_set() or self._closing.is_set():
                    return got_any
                continue
            pending = [first]
            while len(pending) < MAX_BATCH:
                try:
                    pending.append(items.get_nowait())
                except queue.Empty:
                    break
            events: List[Event] = []
            try:
                for item in pending:
                    if item is end:
                        return got_any
                    if isinstance(item, BaseException):
                        raise item
                    kind, obj = item
                    got_any = True
                    cursor[0] = str((obj.get("metadata") or {}).get("resourceVersion") or cursor[0])
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        event = tracker.apply(kind, obj)
                        if event is not None:
                            events.append(event)
            finally:
                if events:
                    sink(events)

    def close(self) -> None:
        self._closing.set()
        self.client.close()


def make_kube_manager(flags: Any) -> KubeSubnetManager:
    """The CLI registry's factory for --kube-subnet-mgr: flanneld's parsed flags (a dict, keys as
    in cni_flannel.daemon.cli) or ready KubeOptions.  NODE_NAME / POD_NAME / POD_NAMESPACE come
    from the environment, as upstream."""
    if isinstance(flags, KubeOptions):
        return KubeSubnetManager(flags)
    conn = Connection(api_url=flags.get("kube_api_url") or "", kubeconfig=flags.get("kubeconfig_file") or "")
    opts = KubeOptions.from_env(
        connection=conn, annotation_prefix=flags.get("kube_annotation_prefix") or ANNOTATION_PREFIX,
        net_config_path=flags.get("net_config_path") or netconf_mod.DEFAULT_PATH,
        set_node_network_unavailable=bool(flags.get("set_node_network_unavailable", True)))
    return KubeSubnetManager(opts)
