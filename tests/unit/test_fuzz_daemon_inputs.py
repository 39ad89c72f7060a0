"""Fuzzing what the daemon and the flannel plugin read from outside: net-conf.json, etcd lease
keys and values, peers' node annotations and podCIDRs, subnet.env.  Every input ends in a
valid result or the module's own clear error — never another exception (a traceback).

CNI_FUZZ_EXAMPLES cases per target (100 in `make test`, >= 1000 in `make reliability`)."""
from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Any, Callable, Dict, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cni_flannel.cni.errors import CNIError
from cni_flannel.daemon import lease as leases
from cni_flannel.daemon import netconf
from cni_flannel.daemon.errors import DaemonError
from cni_flannel.flannel import subnet_env
from tests.fuzz import strategies as S
from tests.fuzz.settings import EXAMPLES, fuzz_settings, report


@pytest.fixture
def tally(request) -> Iterator[Counter]:
    """Counts cases, results and clean errors; reports them and checks enough cases ran."""
    counts: Counter = Counter()
    yield counts
    report(request.node.name.replace("test_fuzz_", "daemon:"),
           {k: counts[k] for k in ("cases", "ok", "errors", "tracebacks")})
    assert counts["cases"] >= EXAMPLES * 0.9, counts  # hypothesis ran what was asked
    assert counts["ok"] and counts["errors"], f"the strategy reaches one outcome only: {counts}"


def outcome(counts: Counter, fn: Callable[[], Any], clean: tuple) -> Any:
    """Run fn: a result or one of the clean errors (counted); anything else propagates as a failure."""
    counts["cases"] += 1
    try:
        value = fn()
    except clean as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        counts["errors"] += 1
        return None
    except Exception:
        counts["tracebacks"] += 1  # counted for the table; hypothesis then shrinks and reports it
        raise
    counts["ok"] += 1
    return value


def test_fuzz_netconf(tally: Counter) -> None:
    @fuzz_settings()
    @given(S.netconf_text(), st.booleans())
    def case(text: str, kube: bool) -> None:
        conf = outcome(tally, lambda: netconf.parse(text, kube=kube), (DaemonError,))
        if conf is not None and not kube:  # checked (etcd mode; kube mode leaves them unused): pools in range
            for pool in conf.pools:
                assert pool.first.subnet_of(pool.network) and pool.last.subnet_of(pool.network)
        if conf is not None:
            assert conf.backend.type in ("vxlan", "host-gw", "udp")
            assert conf.backend.type == "host-gw" or 0 < conf.backend.effective_port < 65536  # host-gw: no port
    case()


def test_fuzz_etcd_lease(tally: Counter) -> None:
    @fuzz_settings()
    @given(S.lease_key(), S.lease_value())
    def case(key: str, value: str) -> None:
        lease = outcome(tally, lambda: leases.lease_from_kv(key, value, ttl=30, now=0), (leases.LeaseFormatError,))
        if lease is not None:
            assert lease.name and lease.key in key.replace("/", "") + lease.key
            lease.sides()
            again = leases.parse_attrs(leases.render_attrs(lease.attrs))  # what we write, we read back
            assert (again.public_ip, again.backend_type) == (lease.attrs.public_ip, lease.attrs.backend_type)
    case()


def test_fuzz_lease_dict(tally: Counter) -> None:
    @fuzz_settings()
    @given(S.lease_dict())
    def case(d: Dict[str, Any]) -> None:
        lease = outcome(tally, lambda: leases.Lease.from_dict(d), (leases.LeaseFormatError,))
        if lease is not None:
            assert leases.Lease.from_dict(lease.to_dict()) == lease
    case()


def test_fuzz_node_annotations(tally: Counter) -> None:
    @fuzz_settings()
    @given(S.node_annotations())
    def case(node: Dict[str, Any]) -> None:
        def read() -> Any:
            if not leases.is_managed(node["annotations"]):
                return None
            return leases.lease_from_node(node["annotations"], node["pod_cidrs"], node["pod_cidr"],
                                          enable_ipv4=node["enable_ipv4"], enable_ipv6=node["enable_ipv6"], node="n")
        lease = outcome(tally, read, (leases.LeaseFormatError,))
        if lease is not None:
            lease.sides()
            assert lease.subnet is None or isinstance(lease.subnet, ipaddress.IPv4Network)
    case()


def test_fuzz_subnet_env(tally: Counter) -> None:
    @fuzz_settings()
    @given(S.subnet_env_text())
    def case(text: str) -> None:
        env = outcome(tally, lambda: subnet_env.parse(text, "/run/flannel/subnet.env"), (CNIError,))
        if env is not None:
            assert subnet_env.parse(env.render()) == env  # what the daemon writes, the plugin reads back
    case()
