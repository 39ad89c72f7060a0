"""The suite's own guards can fail: snapshot helpers raise when their tool fails (instead of
comparing two empty outputs as equal), the IPv6 waits fail when DAD never finishes, and a
run whose namespaces cannot be made fails instead of skipping everything under `make test`."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.harness.netns import CommandError, Node
from tests.harness.plugins import REPO_ROOT
from tests.harness.state import iptables_save, list_dir, nft_table, node_state


def break_tool(node: Node, tool: str) -> None:
    """Shadow a tool in the node with one that always fails (the node's /opt/cni/bin first on PATH)."""
    node.write_file(f"/opt/cni/bin/{tool}", "#!/bin/sh\necho broken >&2\nexit 3\n", mode=0o755)


def test_snapshot_helpers_raise_when_their_tool_fails(node: Node, monkeypatch) -> None:
    assert nft_table(node, "inet", "no_such_table") == ""  # absent reads as empty...
    assert list_dir(node, "/var/lib/cni/no-such-dir") == []
    assert "lo:" in node_state(node)["links"]
    with pytest.raises(CommandError):  # ...but a failing nft does not
        nft_table(node, "no-such-family", "x")
    monkeypatch.setenv("PATH", "/opt/cni/bin:" + os.environ["PATH"])
    for tool in ("iptables-legacy-save", "nft"):
        break_tool(node, tool)
    with pytest.raises(CommandError):
        iptables_save(node, tool="iptables-legacy-save")
    with pytest.raises(CommandError):
        node_state(node)
    with pytest.raises(CommandError):
        nft_table(node, "inet", "no_such_table")


def test_ipv6_wait_fails_when_an_address_stays_tentative(node: Node, pod) -> None:
    from tests.integration.test_portmap import wait_v6_ready

    p = pod()
    # an address on a bridge without ports (no carrier) stays tentative for ever
    node.run(["ip", "link", "add", "cni0", "type", "bridge"])
    node.run(["ip", "addr", "add", "fd00:1::1/64", "dev", "cni0"])
    node.run(["sysctl", "-qw", "net.ipv6.conf.cni0.accept_dad=1"])
    p.run(["ip", "link", "add", "eth0", "type", "bridge"])
    assert "tentative" in node.run(["ip", "-6", "addr", "show", "dev", "cni0"]).stdout
    with pytest.raises(AssertionError, match="tentative"):
        wait_v6_ready(p, timeout=0.5)


def test_make_test_fails_when_namespaces_cannot_be_made(tmp_path) -> None:
    """With `ip netns add` broken, the integration tests fail under CNI_TEST_REQUIRE_NETNS=1
    (as packaging/run-tests.sh runs them) and skip without it."""
    fake = tmp_path / "ip"
    fake.write_text('#!/bin/sh\n[ "$1" = netns ] && [ "$2" = add ] && exit 1\nexec /usr/sbin/ip "$@"\n')
    fake.chmod(0o755)
    target = "tests/integration/test_loopback.py"

    def outcome(require: str) -> str:
        env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}", CNI_TEST_REQUIRE_NETNS=require)
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", target],
                              cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
        return f"rc={done.returncode} {done.stdout.strip().splitlines()[-1]}"

    required, optional = outcome("1"), outcome("0")
    assert required.startswith("rc=1") and " error" in required, required
    assert optional.startswith("rc=0") and "skipped" in optional, optional
