"""Bad input to host-local, exec'd like a runtime: error JSON with the right code,
exit 1, and the data directory exactly as it was (names, modes, mtimes, contents)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import pytest

from tests.integration.test_host_local_common import (  # noqa: F401  (fixtures)
    NETWORK, addresses, call, go, net_config, netns, ours, tree,
)

V4 = [{"subnet": "10.1.2.0/24"}]
V6 = [{"subnet": "fd00::/64"}]
GOOD = [V4, V6]


def r(**kw: Any) -> list:
    return [[dict({"subnet": "10.1.2.0/24"}, **kw)]]


# (id, command, ipam overrides, top-level overrides, CNI_ARGS, version, expected code)
CASES = [
    ("subnet-garbage", "ADD", {"ranges": [[{"subnet": "bogus"}]]}, {}, None, "1.0.0", 7),
    ("subnet-no-prefix", "ADD", {"ranges": [[{"subnet": "10.1.2.0"}]]}, {}, None, "1.0.0", 7),
    ("subnet-netmask-form", "ADD", {"ranges": [[{"subnet": "10.1.2.0/255.255.255.0"}]]}, {}, None, "1.0.0", 7),
    ("subnet-prefix-33", "ADD", {"ranges": [[{"subnet": "10.1.2.0/33"}]]}, {}, None, "1.0.0", 7),
    ("subnet-not-string", "ADD", {"ranges": [[{"subnet": 24}]]}, {}, None, "1.0.0", 7),
    ("host-bits-set", "ADD", {"ranges": [[{"subnet": "10.1.2.5/24"}]]}, {}, None, "1.0.0", 7),
    ("too-small-v4", "ADD", {"ranges": [[{"subnet": "10.1.2.0/31"}]]}, {}, None, "1.0.0", 7),
    ("too-small-v6", "ADD", {"ranges": [[{"subnet": "fd00::/127"}]]}, {}, None, "1.0.0", 7),
    ("start-outside", "ADD", {"ranges": r(rangeStart="10.1.3.5")}, {}, None, "1.0.0", 7),
    ("end-outside", "ADD", {"ranges": r(rangeEnd="10.1.3.5")}, {}, None, "1.0.0", 7),
    ("gateway-outside", "ADD", {"ranges": r(gateway="10.9.9.9")}, {}, None, "1.0.0", 7),
    ("start-after-end", "ADD", {"ranges": r(rangeStart="10.1.2.50", rangeEnd="10.1.2.40")}, {}, None, "1.0.0", 7),
    ("start-other-family", "ADD", {"ranges": r(rangeStart="fd00::5")}, {}, None, "1.0.0", 7),
    ("end-is-broadcast", "ADD", {"ranges": r(rangeEnd="10.1.2.255")}, {}, None, "1.0.0", 7),
    ("start-not-ip", "ADD", {"ranges": r(rangeStart="10.1.2")}, {}, None, "1.0.0", 7),
    ("mixed-families-in-set", "ADD", {"ranges": [V4 + V6]}, {}, None, "1.0.0", 7),
    ("overlap-in-set", "ADD", {"ranges": [V4 + [{"subnet": "10.1.2.0/25"}]]}, {}, None, "1.0.0", 7),
    ("overlap-between-sets", "ADD", {"ranges": [V4, [{"subnet": "10.1.2.128/25"}]]}, {}, None, "1.0.0", 7),
    ("overlap-runtime-ranges", "ADD", {}, {"runtimeConfig": {"ipRanges": [V4]}}, None, "1.0.0", 7),
    ("two-v4-on-0.2.0", "ADD", {"ranges": [V4, [{"subnet": "10.1.3.0/24"}]]}, {}, None, "0.2.0", 7),
    ("no-ranges", "ADD", {"ranges": []}, {}, None, "1.0.0", 7),
    ("empty-range-set", "ADD", {"ranges": [[]]}, {}, None, "1.0.0", 7),
    ("ranges-not-list", "ADD", {"ranges": {"subnet": "10.1.2.0/24"}}, {}, None, "1.0.0", 7),
    ("no-ipam-section", "ADD", None, {}, None, "1.0.0", 7),
    ("network-dotdot", "ADD", {}, {"name": ".."}, None, "1.0.0", 7),
    ("network-path", "DEL", {}, {"name": "a/../../etc"}, None, "1.0.0", 7),
    ("datadir-relative", "ADD", {"dataDir": "var/lib/cni"}, {}, None, "1.0.0", 7),
    ("datadir-under-a-file", "ADD", {"dataDir": "/dev/null/networks"}, {}, None, "1.0.0", 5),
    ("status-datadir-unusable", "STATUS", {"dataDir": "/dev/null/networks"}, {}, None, "1.1.0", 50),
    ("requested-garbage", "ADD", {}, {}, "IgnoreUnknown=1;IP=10.1.2.300", "1.0.0", 7),
    ("requested-other-family", "ADD", {"ranges": [V4]}, {}, "IP=fd00::5", "1.0.0", 7),
    ("requested-outside-range", "ADD", {}, {}, "IP=10.9.9.9", "1.0.0", 7),
    ("requested-gateway", "ADD", {}, {}, "IP=10.1.2.1", "1.0.0", 7),
    ("requested-two-in-one-set", "ADD", {}, {}, "IP=10.1.2.7,10.1.2.8", "1.0.0", 7),
    ("runtime-ips-not-list", "ADD", {}, {"runtimeConfig": {"ips": "10.1.2.9"}}, None, "1.0.0", 7),
    ("args-cni-ips-garbage", "ADD", {}, {"args": {"cni": {"ips": ["x"]}}}, None, "1.0.0", 7),
    ("route-dst-garbage", "ADD", {"routes": [{"dst": "default"}]}, {}, None, "1.0.0", 7),
    ("route-gw-garbage", "ADD", {"routes": [{"dst": "0.0.0.0/0", "gw": "x"}]}, {}, None, "1.0.0", 7),
    ("resolvconf-missing", "ADD", {"resolvConf": "/nonexistent/resolv.conf"}, {}, None, "1.0.0", 7),
    ("check-nothing-held", "CHECK", {}, {}, None, "1.0.0", 3),
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, ours: str, netns: str) -> Iterator[Path]:  # noqa: F811
    root = tmp_path_factory.mktemp("hl-bad")
    # Something already allocated, so any stray write (last_reserved_ip, lock, a file) shows up.
    assert addresses(call(ours, "ADD", net_config(root, GOOD), netns, cid="existing")) == ["10.1.2.2/24", "fd00::2/64"]
    yield root


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case: Tuple[str, str, Optional[Dict[str, Any]], Dict[str, Any], Optional[str], str, int],
                   ours: str, netns: str, data_dir: Path) -> None:  # noqa: F811
    _, command, ipam, top, cni_args, version, code = case
    conf = net_config(data_dir, GOOD, version)
    if ipam is None:
        del conf["ipam"]
    else:
        conf["ipam"].update(ipam)
    conf.update(top)
    before = tree(data_dir)
    done = call(ours, command, conf, netns, cid="newcomer", cni_args=cni_args)
    assert done.rc == 1, (done.stdout, done.stderr)
    assert isinstance(done.json, dict), f"stdout is not error JSON: {done.stdout!r}"
    assert done.json["code"] == code, done.json
    assert done.json["msg"]
    assert "Traceback" not in done.stderr
    assert tree(data_dir) == before

