"""Shared fixtures. Tests under tests/integration are marked ``integration``:
they need root and working ``ip netns`` and are skipped (with the reason)
otherwise — failed instead with CNI_TEST_REQUIRE_NETNS=1, as `make test` sets.
Each test gets its own Lab, torn down even when the test fails."""
from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Union

import pytest

from tests.harness.netns import Lab, Node, Pod, new_prefix, remove_netns, run
from tests.harness.plugins import PluginsNotBuilt
from tests.harness.plugins import plugin_dir as _plugin_dir

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "integration: needs root and network namespaces (tests/integration)")


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)


@functools.lru_cache(maxsize=None)
def _namespaces_unusable() -> Optional[str]:
    """Why integration tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "integration tests need root (network and mount namespaces)"
    probe = f"{new_prefix()}-probe"
    try:
        run(["ip", "netns", "add", probe])
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"`ip netns add` does not work here: {exc}"
    remove_netns(probe)
    return None


def pytest_runtest_setup(item) -> None:
    if item.get_closest_marker("integration"):
        reason = _namespaces_unusable()
        if reason and os.environ.get("CNI_TEST_REQUIRE_NETNS") == "1":
            pytest.fail(reason, pytrace=False)  # make test: a run that skipped them all is no pass
        if reason:
            pytest.skip(reason)


@pytest.fixture(scope="session")
def plugin_dir() -> Path:
    """The plugin executables under test (dist/cni, or source wrappers)."""
    try:
        return _plugin_dir()
    except PluginsNotBuilt as exc:  # a missing build is a failure, never a quiet skip
        pytest.fail(str(exc))


@pytest.fixture
def lab():
    """All namespaces of one test; removed afterwards whatever the outcome."""
    lab = Lab()
    yield lab
    lab.close()


@pytest.fixture
def make_node(lab: Lab, request) -> Callable[..., Node]:
    """make_node(name=None, underlay=False, plugins=True): a fresh node; plugins=True
    installs plugin_dir() into its /opt/cni/bin, a path installs that dir, False nothing."""
    def make(name: Optional[str] = None, underlay: bool = False,
             plugins: Union[bool, str, Path] = True) -> Node:
        node = lab.add_node(name, underlay=underlay)
        if plugins is True:
            plugins = request.getfixturevalue("plugin_dir")
        if plugins:
            node.install_plugins(plugins)
        return node
    return make


@pytest.fixture
def node(make_node) -> Node:
    """One node with the plugins under test in /opt/cni/bin."""
    return make_node()


@pytest.fixture
def pod(request) -> Callable[..., Pod]:
    """pod(name=None, node=None): a pod netns on node (default: the `node` fixture)."""
    def make(name: Optional[str] = None, node: Optional[Node] = None) -> Pod:
        return (node or request.getfixturevalue("node")).add_pod(name)
    return make


AGENT_SOCKET = "/run/flannel/cni-agent.sock"
#: The agent's request log in a node (``--request-log``): one line per request, served or refused.
AGENT_LOG = "/run/flannel/cni-agent.requests"
PYTHON_ENTRY = "/opt/cni/bin/.cni-flannel/cni-flannel"


def start_agent(node: Node, timeout: float = 60.0, stderr: int = subprocess.PIPE) -> subprocess.Popen:
    """Run the resident plugin agent in ``node`` (from its /opt/cni/bin) until the lab closes."""
    import time

    proc = node.popen(["/opt/cni/bin/flannel", "agent", "--socket", AGENT_SOCKET, "--request-log", AGENT_LOG],
                      stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + timeout
    while not node.exists(AGENT_SOCKET):
        if proc.poll() is not None or time.monotonic() > deadline:
            late = proc.poll() is None
            if late:  # a live agent keeps its stderr open: reading it would wait forever
                proc.kill()
                proc.wait()
            why = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"agent did not start ({f'no socket after {timeout:.0f} s' if late else f'exit {proc.returncode}'}): {why}")
        time.sleep(0.05)
    return proc


def agent_requests(node: Node) -> List[str]:
    """The agent's request log: ``<plugin> <COMMAND> <containerID> exit <code> (...)`` per served
    request, ``refused: <why>`` per refusal."""
    if not node.exists(AGENT_LOG):
        return []
    return [line.split("]: ", 1)[1] for line in node.read_file(AGENT_LOG).splitlines()]


def forbid_fallback(node: Node) -> None:
    """Make the self-contained path fail loudly in ``node``: the hand-off client can no longer
    exec the PyInstaller entry, so a request the agent does not serve fails (code 999) instead of
    passing unnoticed.  The running agent does not need the file any more."""
    if node.exists(PYTHON_ENTRY):  # (a source-tree run has no client and no such file)
        node.run(["mv", PYTHON_ENTRY, PYTHON_ENTRY + ".hidden-by-test"])


@pytest.fixture(params=["in-process", "agent"])
def plugin_path(request, node: Node) -> Iterator[str]:
    """Runs a test twice: plugins doing the work themselves, and handing it to the agent.

    The agent variant proves the agent did the work: the fallback is made impossible
    (forbid_fallback), and afterwards the agent's request log must show served requests and no
    refusal."""
    if request.param == "in-process":
        yield request.param
        assert not node.exists(AGENT_LOG)
        return
    start_agent(node, stderr=subprocess.DEVNULL)
    forbid_fallback(node)
    yield request.param
    log = agent_requests(node)
    served = [line for line in log if not line.startswith("refused")]
    assert served, "the agent served no request: the plugins did the work themselves"
    assert len(served) == len(log), f"the agent refused requests: {log}"
