"""host-local with a CNI_NETNS it cannot open, beside Go's host-local.

Upstream's skel leaves a namespace path it cannot open to the plugin (pkg/ns CheckNetNS), and
host-local never enters the namespace, so Go's host-local allocates for a sandbox that is
already gone — callers that delegate IPAM rely on it.  Ours does the same; the plugins that
do enter the namespace keep refusing such a path (tests/integration/test_bad_input.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.exec import run_plugin
from tests.harness.netns import temp_netns
from tests.harness.state import list_dir
from tests.integration.test_host_local_common import (  # noqa: F401  (fixtures)
    addresses, call, go, net_config, ours, state,
)

RANGES = [[{"subnet": "10.1.9.0/29"}]]


def gone_netns() -> str:
    """The path of a namespace that existed and was deleted (what a runtime may still pass)."""
    with temp_netns("gone") as name:
        pass
    return f"/run/netns/{name}"


@pytest.mark.parametrize("netns", ["gone", "/etc/hostname"])
def test_add_check_del_with_an_unusable_netns_path_as_go(tmp_path: Path, ours: str, go: str, netns: str) -> None:  # noqa: F811
    path = gone_netns() if netns == "gone" else netns
    assert Path(path).exists() == (netns != "gone")
    files = {}
    for name, plugin in (("go", go), ("ours", ours)):
        conf = net_config(tmp_path / name, RANGES)
        assert addresses(call(plugin, "ADD", conf, path, cid="c1")) == ["10.1.9.2/29"], name
        assert call(plugin, "CHECK", conf, path, cid="c1").rc == 0, name
        files[name] = state(tmp_path / name)
        done = call(plugin, "DEL", conf, path, cid="c1")
        assert done.rc == 0, (name, done.stdout)
        assert "10.1.9.2" not in state(tmp_path / name), name
    assert files["ours"] == files["go"] and "10.1.9.2" in files["ours"]


def test_our_own_namespace_is_still_refused(tmp_path: Path, ours: str) -> None:  # noqa: F811
    # Current upstream refuses it too (code 8); Debian's older Go build does not check at all.
    done = call(ours, "ADD", net_config(tmp_path, RANGES), "/proc/self/ns/net")
    assert done.rc == 1 and done.json["code"] == 8, done.stdout
    assert state(tmp_path) == {}


def test_a_plugin_that_enters_the_netns_keeps_refusing(node) -> None:
    # in a node: were the check gone, bridge would set up cni0 where it runs
    conf = {"cniVersion": "1.0.0", "name": "hlnet", "type": "bridge",
            "ipam": {"type": "host-local", "ranges": RANGES}}
    done = run_plugin("bridge", "ADD", conf, netns=gone_netns(), node=node)
    assert done.rc == 1 and done.json["code"] == 4 and "not usable" in done.json["msg"], done.stdout
    assert list_dir(node, "/var/lib/cni/networks/hlnet") == []
