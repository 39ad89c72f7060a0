"""EtcdSubnetManager: flannel's etcd LocalManager (pkg/subnet/etcd) on etcd v3.

    <prefix>/config                       net-conf.json
    <prefix>/subnets/10.244.1.0-24        lease value (render_attrs), bound to an etcd lease

acquire_lease follows tryAcquireLease: list the leases; our own one (same PublicIP, or
PublicIPv6 on an IPv6-only node) is renewed when it still fits the config and deleted when it
does not; else the previous subnet.env's subnet when free; else a random one of the first 100
free subnets (``subnets.plan_acquire``).  New keys are created by a transaction that requires
the key not to exist (create_revision == 0), so two nodes racing for a subnet cannot both get
it: the loser lists again (10 tries, as upstream).  Every write of an existing key compares
its mod_revision with what was listed, so a key changed meanwhile is never overwritten.

Reservations (subnet keys without an etcd lease, written by an operator) are never taken by
another node; the node whose PublicIP a reservation names uses it and writes its attributes
without attaching a TTL (flannel's intent: a reservation never expires).

Renewal grants a fresh etcd lease and moves our key onto it (as upstream's updateSubnet),
only while the key still exists: a key deleted by someone is LeaseRevoked, never recreated.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any, Dict, List, Optional, Set, Tuple

from .. import subnets
from ..errors import ConfigError, LeaseError, LeaseRevoked, OutOfSubnets, StoreError
from ..lease import Lease, LeaseAttrs, config_key, render_attrs, subnet_path, subnets_prefix
from ..manager import Sink, SubnetManager
from ..netconf import NetConf, NetConfError, parse
from .client import EtcdClient
from .options import Clock, EtcdOptions
from .records import KeyValue, b64, backoff, leases_from_kvs
from .watch import LeaseWatcher, own_expiry

log = logging.getLogger("cni_flannel.daemon.etcd")

RACE_RETRIES = 10  # local_manager.go raceRetries


class EtcdSubnetManager(SubnetManager):
    name = "etcd"

    def __init__(self, options: EtcdOptions, clock: Optional[Clock] = None,
                 choose: subnets.Chooser = random.choice) -> None:
        self.options = options
        self.clock = clock or Clock()
        self._stop = threading.Event()
        self.client = EtcdClient(options, self.clock, self._stop)
        self.choose = choose  # tests pick subnets deterministically
        self._own: Set[str] = set()  # full key paths of leases we hold
        self.watcher: Optional[LeaseWatcher] = None

    # --- config ----------------------------------------------------------------------------

    def network_config(self) -> NetConf:
        key = config_key(self.options.prefix)
        tries = self.options.config_attempts
        for attempt in range(tries):
            kvs, _ = self.client.range(key)
            if kvs:
                try:
                    return parse(kvs[0].value, source=f"etcd key {key}")
                except NetConfError as exc:
                    raise ConfigError(f"etcd key {key}: {exc}") from None
            if attempt + 1 < tries:
                delay = backoff(attempt, max(self.options.backoff_base, 0.5), self.options.backoff_cap)
                log.warning("couldn't fetch network config: etcd has no key %s (attempt %d/%d); retrying in %.1fs",
                            key, attempt + 1, tries, delay)
                if self.clock.sleep(delay, self._stop):
                    break
        raise ConfigError(
            f"network config not found in etcd: key {key} does not exist. Put net-conf.json there with the "
            f"etcd v3 API, e.g. etcdctl put {key} '{{\"Network\": \"10.244.0.0/16\", \"Backend\": "
            f"{{\"Type\": \"vxlan\"}}}}' (or point --etcd-prefix at the right place)")

    # --- leases ----------------------------------------------------------------------------

    def list_leases(self) -> Tuple[List[KeyValue], int]:
        """Every key under <prefix>/subnets/ (as stored) and the revision read at."""
        return self.client.range(subnets_prefix(self.options.prefix).rstrip("/") + "/", prefix=True)

    def acquire_lease(self, attrs: LeaseAttrs, previous: Optional[Lease] = None) -> Lease:
        conf = self.network_config()
        prev = (previous.subnet, previous.ipv6_subnet) if previous is not None else (None, None)
        for _ in range(RACE_RETRIES):
            lease = self._try_acquire(conf, attrs, prev)
            if lease is not None:
                self._own = {self._path(lease)}
                return lease
        raise LeaseError(f"max retries reached trying to acquire a subnet: {RACE_RETRIES} attempts lost races "
                         f"with other nodes writing {subnets_prefix(self.options.prefix)}")

    def _try_acquire(self, conf: NetConf, attrs: LeaseAttrs,
                     prev: subnets.Pair) -> Optional[Lease]:
        """One round of tryAcquireLease; None when another node changed the keys meanwhile."""
        kvs, _ = self.list_leases()
        by_key: Dict[str, KeyValue] = {}
        leases: List[Lease] = []
        for kv in kvs:
            for lease in leases_from_kvs([kv]):
                by_key[lease.key] = kv
                leases.append(lease)
        try:
            plan = subnets.plan_acquire(conf, leases, attrs.public_ip, attrs.public_ipv6, prev, self.choose)
        except subnets.OutOfSubnets as exc:
            raise OutOfSubnets(str(exc)) from None
        if plan.reuse is not None:
            kv = by_key[plan.reuse.key]
            log.info("found lease (ip: %s ipv6: %s) for current IP (%s), reusing", plan.reuse.subnet,
                     plan.reuse.ipv6_subnet, attrs.public_ip or attrs.public_ipv6)
            return self._rewrite(plan.reuse, attrs, kv, reservation=kv.lease == 0)
        if plan.delete is not None:
            kv = by_key[plan.delete.key]
            log.info("found lease %s for current IP (%s) but not compatible with current config, deleting",
                     kv.key, attrs.public_ip or attrs.public_ipv6)
            if not self.client.txn(f"delete of {kv.key}", [_unchanged(kv)], [_delete(kv.key)]):
                return None
        assert plan.create is not None
        v4, v6 = plan.create
        if prev != (None, None) and (v4, v6) == prev:
            log.info("found previously leased subnet (%s %s), reusing", v4, v6 or "")
        return self._create(Lease(subnet=v4, ipv6_subnet=v6, attrs=attrs))

    def _create(self, lease: Lease) -> Optional[Lease]:
        path = self._path(lease)
        lease_id = self.client.grant(self.options.ttl)
        put = _put(path, render_attrs(lease.attrs), lease_id)
        try:
            won = self.client.txn(f"create of {path}", [_absent(path)], [put])
        except BaseException:
            self._revoke_quietly(lease_id)
            raise
        if not won:
            self._revoke_quietly(lease_id)
            log.info("subnet %s was taken by another node meanwhile: trying again", path)
            return None
        log.info("allocated lease (ip: %s ipv6: %s) to current node (%s)", lease.subnet, lease.ipv6_subnet,
                 lease.attrs.public_ip or lease.attrs.public_ipv6)
        return self._with_expiry(lease, lease_id)

    def _rewrite(self, lease: Lease, attrs: LeaseAttrs, kv: KeyValue, reservation: bool) -> Optional[Lease]:
        """Write our attributes onto an existing key, unless it changed since it was read."""
        mine = Lease(subnet=lease.subnet, ipv6_subnet=lease.ipv6_subnet, attrs=attrs)
        if reservation:  # keep it a reservation: no etcd lease, no expiry
            ok = self.client.txn(f"update of {kv.key}", [_unchanged(kv)], [_put(kv.key, render_attrs(attrs), 0)])
            return mine if ok else None
        lease_id = self.client.grant(self.options.ttl)
        try:
            ok = self.client.txn(f"update of {kv.key}", [_unchanged(kv)],
                                 [_put(kv.key, render_attrs(attrs), lease_id)])
        except BaseException:
            self._revoke_quietly(lease_id)
            raise
        if not ok:
            self._revoke_quietly(lease_id)
            return None
        if kv.lease:
            self._revoke_quietly(kv.lease)  # the old etcd lease holds no key any more
        return self._with_expiry(mine, lease_id)

    def renew_lease(self, lease: Lease) -> Lease:
        """A fresh etcd lease for our key; LeaseRevoked when the key is gone."""
        path = self._path(lease)
        kvs, _ = self.client.range(path)
        if not kvs:
            raise LeaseRevoked(f"lease {lease.key} has been revoked: {path} is gone from etcd")
        kv = kvs[0]
        if kv.lease == 0:
            return Lease(lease.subnet, lease.ipv6_subnet, lease.attrs, None)  # a reservation does not expire
        lease_id = self.client.grant(self.options.ttl)
        ok = self.client.txn(f"renewal of {path}", [_exists(path)], [_put(path, render_attrs(lease.attrs), lease_id)])
        if not ok:
            self._revoke_quietly(lease_id)
            raise LeaseRevoked(f"lease {lease.key} has been revoked: {path} disappeared from etcd while renewing")
        self._revoke_quietly(kv.lease)
        return self._with_expiry(lease, lease_id)

    def lease_exists(self, lease: Lease) -> bool:
        """Whether our key is still in etcd (read now, not from the watch): the main loop's
        check before it calls a REMOVED event of its own lease a revocation."""
        kvs, _ = self.client.range(self._path(lease))
        return bool(kvs)

    def _with_expiry(self, lease: Lease, lease_id: int) -> Lease:
        """The lease with its real expiry, read back from etcd (it may grant a longer TTL)."""
        try:
            ttl = self.client.time_to_live(lease_id)
        except StoreError:
            ttl = self.options.ttl
        return Lease(lease.subnet, lease.ipv6_subnet, lease.attrs,
                     self.clock.time() + (ttl if ttl > 0 else self.options.ttl))

    def _revoke_quietly(self, lease_id: int) -> None:
        try:
            self.client.revoke(lease_id)
        except StoreError as exc:  # it expires by itself; a key on it is already elsewhere
            log.warning("could not revoke unused etcd lease %x: %s", lease_id, exc)

    def _path(self, lease: Lease) -> str:
        return subnet_path(lease.subnet, lease.ipv6_subnet, self.options.prefix)

    # --- watch -----------------------------------------------------------------------------

    def watch_leases(self, sink: Sink, stop: threading.Event) -> None:
        self.watcher = LeaseWatcher(self.client, subnets_prefix(self.options.prefix), sink, stop,
                                    own_expiry(self.client, lambda: self._own))
        self.watcher.run()

    def close(self) -> None:
        self._stop.set()
        self.client.close()


# --- transaction pieces (gateway JSON) ----------------------------------------------------

def _absent(key: str) -> Dict[str, Any]:
    return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": 0}


def _exists(key: str) -> Dict[str, Any]:
    return {"key": b64(key), "target": "CREATE", "result": "GREATER", "create_revision": 0}


def _unchanged(kv: KeyValue) -> Dict[str, Any]:
    return {"key": b64(kv.key), "target": "MOD", "result": "EQUAL", "mod_revision": kv.mod_revision}


def _put(key: str, value: str, lease_id: int) -> Dict[str, Any]:
    put: Dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease_id:
        put["lease"] = lease_id
    return {"request_put": put}


def _delete(key: str) -> Dict[str, Any]:
    return {"request_delete_range": {"key": b64(key)}}
