"""The portable build runs on an old node without Python (issue 8).

The binaries frozen inside Debian bullseye (`bash packaging/portable/build.sh dist/cni-bullseye`)
are run inside a *separate* bare bullseye root (`bash packaging/portable/node-root.sh`:
debootstrap --variant=minbase, glibc 2.31, no Python at all) — not inside the build root, which
has python3, libpython3.9 and the -dev libraries that could hide a library missing from the
bundle.  Every run is a chroot driven from the host in a private mount namespace (unshare), so the
/proc, binary-directory and /run/netns binds it needs vanish with the process; the roots are only
written under a per-test /var/lib/cni/<prefix> that a finalizer removes.

Prerequisites (skipped with this reason when missing): the two roots under build/.  Cold cost on
this machine: build root + venv + freeze ~1.5 min, node root ~1 min; afterwards the portable
build takes ~20 s.  Env: CNI_PORTABLE_DIST (default dist/cni-bullseye), BULLSEYE_NODE_ROOT
(default build/bullseye-node).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Mapping, Optional

import pytest

from tests.harness.netns import new_prefix, remove_netns, run, temp_netns

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BUNDLE = ".cni-flannel"
NAMES = ("flannel", "bridge", "host-local", "portmap", "loopback")
HOST_BUILD = REPO / "dist" / "cni-native"  # `make binaries-native`: frozen on this Debian 12
BUILD_HINT = ("run `bash packaging/portable/build.sh dist/cni-bullseye` (cold ~1.5 min: debootstrap "
              "+ apt + venv; warm ~20 s) and `bash packaging/portable/node-root.sh` (~1 min)")
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def build_info(dist: Path) -> Dict[str, str]:
    try:
        text = (dist / BUNDLE / "BUILD").read_text()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _portable_dist() -> Optional[Path]:
    if os.environ.get("CNI_PORTABLE_DIST"):
        return Path(os.environ["CNI_PORTABLE_DIST"]).resolve()
    for candidate in (REPO / "dist" / "cni", REPO / "dist" / "cni-bullseye"):
        if build_info(candidate).get("GLIBC") == "2.31":
            return candidate
    return None


@pytest.fixture(scope="module")
def node_root() -> Path:
    root = Path(os.environ.get("BULLSEYE_NODE_ROOT", REPO / "build" / "bullseye-node")).resolve()
    if not (root / ".cni-flannel" / "debootstrap").exists():
        pytest.skip(f"no bullseye node root at {root}: {BUILD_HINT}")
    return root


@pytest.fixture(scope="module")
def portable() -> Path:
    dist = _portable_dist()
    if dist is None or not all((dist / n).exists() for n in (*NAMES, BUNDLE)):
        pytest.skip(f"no portable (glibc 2.31) build: {BUILD_HINT}")
    return dist


@pytest.fixture
def workdir(node_root: Path):
    """A per-test directory inside the node root (/var/lib/cni/<prefix>), removed afterwards."""
    prefix = new_prefix()
    inside = f"/var/lib/cni/{prefix}"
    path = node_root / inside.lstrip("/")
    path.mkdir(parents=True)
    yield inside, path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def netns():
    """A test network namespace `cft<hex>-port` (the only one these tests create)."""
    with temp_netns("port") as name:
        yield name


def in_root(root: Path, binaries: Path, argv: List[str], env: Mapping[str, str] = (),
            stdin: bytes = b"", netns: bool = False, extra: str = "",
            node_netns: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run argv chrooted in root with binaries at /mnt/cni (read-only) and a plain environment.

    Mounts are made in a private mount namespace of this one command: /proc, a tmpfs on /mnt
    holding the bind, and with netns=True a tmpfs on /run with the host's /run/netns in it.
    node_netns: run in that test network namespace (via `ip netns exec`, whose /sys is then bound
    in too) -- for plugins that create links in their own namespace.
    ``extra`` is shell run outside the chroot just before it ($CHROOT runs a command inside).
    """
    env_args = " ".join(shlex.quote(f"{k}={v}") for k, v in {"PATH": PATH, **dict(env)}.items())
    script = f"""set -e
R={shlex.quote(str(root))}
mount -t proc proc "$R/proc"
mount -t tmpfs -o mode=0755 cft "$R/mnt"
mkdir "$R/mnt/cni"
mount --bind {shlex.quote(str(binaries))} "$R/mnt/cni"
mount -o remount,bind,ro "$R/mnt/cni"
if [ {int(netns)} = 1 ]; then
    mount -t tmpfs -o mode=0755 cft "$R/run"
    mkdir "$R/run/netns"
    mount --rbind /run/netns "$R/run/netns"
fi
if [ {int(bool(node_netns))} = 1 ]; then
    mount --rbind /sys "$R/sys"
fi
CHROOT="chroot $R /usr/bin/env -i {env_args}"
{extra}
exec $CHROOT {" ".join(shlex.quote(a) for a in argv)}
"""
    enter = ["ip", "netns", "exec", node_netns] if node_netns else []
    return subprocess.run([*enter, "unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          input=stdin, capture_output=True, timeout=120, cwd="/")


def cni_env(command: str, log: str, **extra: str) -> Dict[str, str]:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "port-ctr-1", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/mnt/cni", "CNI_NETNS": "", "CNI_FLANNEL_LOG": log,
           "CNI_FLANNEL_AGENT": "off"}
    env.update(extra)
    return env


def explain(proc: subprocess.CompletedProcess) -> str:
    return f"rc={proc.returncode}\nstdout: {proc.stdout.decode(errors='replace')}\n" \
           f"stderr: {proc.stderr.decode(errors='replace')}"


# --- the node stands in for an old distribution without Python -------------------------------

def test_node_root_is_glibc_231_without_python(node_root: Path, portable: Path) -> None:
    proc = in_root(node_root, portable, ["/bin/sh", "-c",
                                         "getconf GNU_LIBC_VERSION; command -v python3 python || true; "
                                         "ls -d /usr/lib/python3* /usr/lib/x86_64-linux-gnu/libpython* 2>/dev/null || true"])
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout.decode().split("\n") == ["glibc 2.31", ""], explain(proc)


@pytest.mark.parametrize("name", NAMES)
def test_version_runs_for_every_name(node_root: Path, portable: Path, name: str) -> None:
    proc = in_root(node_root, portable, [f"/mnt/cni/{name}"],
                   env={"CNI_COMMAND": "VERSION", "CNI_FLANNEL_LOG": "/dev/null"})
    assert proc.returncode == 0, explain(proc)
    assert proc.stderr == b"", explain(proc)
    reply = json.loads(proc.stdout)
    assert reply["supportedVersions"][-1] == "1.1.0"


def test_debian12_build_does_not_run_there(node_root: Path, portable: Path) -> None:
    """Proves the node root can fail: the Debian 12 (glibc 2.36) build needs a newer glibc.

    The Python entry itself is run: the plugin names are the static C client, which answers
    VERSION without Python and so runs anywhere."""
    glibc = build_info(HOST_BUILD).get("GLIBC")
    if not glibc or glibc == "2.31":
        pytest.skip(f"{HOST_BUILD} is not a Debian 12 build (GLIBC={glibc}): run `make binaries-native`")
    proc = in_root(node_root, HOST_BUILD, ["/mnt/cni/.cni-flannel/cni-flannel", "loopback"],
                   env={"CNI_COMMAND": "VERSION", "CNI_FLANNEL_LOG": "/dev/null"})
    assert proc.returncode != 0, explain(proc)
    assert re.search(r"GLIBC_2\.3[2-9]' not found", proc.stderr.decode(errors="replace")), explain(proc)
    assert proc.stdout == b""


# --- real work --------------------------------------------------------------------------------

def host_local_conf(data_dir: str) -> bytes:
    return json.dumps({
        "cniVersion": "1.0.0", "name": "portnet", "type": "host-local",
        "ipam": {"type": "host-local", "dataDir": data_dir,
                 "ranges": [[{"subnet": "10.244.7.0/24"}]]},
    }).encode()


def test_host_local_add_and_del(node_root: Path, portable: Path, workdir, netns: str) -> None:
    inside, path = workdir
    conf = host_local_conf(f"{inside}/networks")
    log = f"{inside}/plugin.log"

    add = in_root(node_root, portable, ["/mnt/cni/host-local"],
                  cni_env("ADD", log, CNI_NETNS=f"/run/netns/{netns}"), conf, netns=True)
    assert add.returncode == 0, explain(add)
    result = json.loads(add.stdout)
    assert [ip["address"] for ip in result["ips"]] == ["10.244.7.2/24"], result
    lease = path / "networks" / "portnet" / "10.244.7.2"
    assert lease.read_bytes() == b"port-ctr-1\r\neth0"

    for _ in range(2):  # DEL releases, and a repeated DEL still succeeds
        rm = in_root(node_root, portable, ["/mnt/cni/host-local"], cni_env("DEL", log), conf)  # no netns
        assert rm.returncode == 0, explain(rm)
        assert rm.stdout == b"", explain(rm)
        assert not lease.exists()


def lo_flags(netns: str) -> List[str]:
    links = json.loads(run(["ip", "-n", netns, "-j", "link", "show", "lo"]).stdout)
    return links[0]["flags"]


def test_loopback_add_and_del_in_a_netns(node_root: Path, portable: Path, workdir, netns: str) -> None:
    inside, _ = workdir
    conf = json.dumps({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}).encode()
    env = dict(CNI_NETNS=f"/run/netns/{netns}", CNI_IFNAME="lo")
    log = f"{inside}/plugin.log"
    assert "UP" not in lo_flags(netns)

    add = in_root(node_root, portable, ["/mnt/cni/loopback"], cni_env("ADD", log, **env), conf, netns=True)
    assert add.returncode == 0, explain(add)
    result = json.loads(add.stdout)
    assert result["interfaces"][0]["name"] == "lo", result
    assert "UP" in lo_flags(netns)

    rm = in_root(node_root, portable, ["/mnt/cni/loopback"], cni_env("DEL", log, **env), conf, netns=True)
    assert rm.returncode == 0, explain(rm)
    assert "UP" not in lo_flags(netns)


def test_flannel_chain_add_and_del_in_a_node_netns(node_root: Path, portable: Path, workdir,
                                                   netns: str) -> None:
    """The seed's pod set-up on the old node: flannel reads subnet.env and delegates to bridge,
    which calls host-local -- three processes of the bundle, each started by the previous one
    inside the root.  The node is the test namespace `netns`, the pod a second one."""
    inside, path = workdir
    pod = f"{netns}-pod"
    run(["ip", "netns", "add", pod])
    try:
        (path / "subnet.env").write_text("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\n"
                                         "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")  # no iptables in the root
        conf = json.dumps({
            "cniVersion": "1.0.0", "name": "cbr0", "type": "flannel",
            "subnetFile": f"{inside}/subnet.env", "dataDir": f"{inside}/flannel",
            "ipam": {"dataDir": f"{inside}/networks"},
            "delegate": {"hairpinMode": True, "isDefaultGateway": True},
        }).encode()
        env = dict(CNI_NETNS=f"/run/netns/{pod}")
        log = f"{inside}/plugin.log"

        add = in_root(node_root, portable, ["/mnt/cni/flannel"], cni_env("ADD", log, **env), conf,
                      netns=True, node_netns=netns)
        assert add.returncode == 0, explain(add) + (path / "plugin.log").read_text(errors="replace")
        result = json.loads(add.stdout)
        assert [ip["address"] for ip in result["ips"]] == ["10.244.7.2/24"], result
        pod_addrs = json.loads(run(["ip", "-n", pod, "-j", "addr", "show", "eth0"]).stdout)[0]["addr_info"]
        assert "10.244.7.2" in [a["local"] for a in pod_addrs]
        bridge = json.loads(run(["ip", "-n", netns, "-j", "addr", "show", "cni0"]).stdout)[0]["addr_info"]
        assert "10.244.7.1" in [a["local"] for a in bridge]
        assert (path / "networks" / "cbr0" / "10.244.7.2").exists()

        rm = in_root(node_root, portable, ["/mnt/cni/flannel"], cni_env("DEL", log, **env), conf,
                     netns=True, node_netns=netns)
        assert rm.returncode == 0, explain(rm)
        assert not (path / "networks" / "cbr0" / "10.244.7.2").exists()
        assert not list((path / "flannel").iterdir())  # the saved delegate config is gone too
        assert run(["ip", "-n", pod, "link", "show", "eth0"], check=False).returncode != 0
    finally:
        remove_netns(pod)


def test_agent_preloads_everything_in_the_bundle(node_root: Path, portable: Path, workdir,
                                                netns: str) -> None:
    """The resident agent imports every module of the bundle (pyroute2 included) on glibc 2.31
    and serves a handed-off host-local ADD; only modules absent from this build may be reported
    as not preloadable."""
    inside, path = workdir
    sock = f"{inside}/agent.sock"
    conf = host_local_conf(f"{inside}/networks")
    extra = f"""
$CHROOT timeout 60 /mnt/cni/flannel agent --socket {sock} 2>"$R{inside}/agent.err" &  # bounded even if we die
agent=$!
trap 'kill $agent 2>/dev/null || true' EXIT
i=0; while [ ! -S "$R{sock}" ]; do
    i=$((i + 1)); [ $i -lt 300 ] || {{ cat "$R{inside}/agent.err" >&2; exit 97; }}
    kill -0 $agent 2>/dev/null || {{ cat "$R{inside}/agent.err" >&2; exit 98; }}
    sleep 0.1
done
$CHROOT {" ".join(shlex.quote(f"{k}={v}") for k, v in cni_env("ADD", f"{inside}/plugin.log",
                                                                   CNI_FLANNEL_AGENT="on",
                                                                   CNI_NETNS=f"/run/netns/{netns}",
                                                                   CNI_FLANNEL_AGENT_SOCKET=sock).items())} \\
    /mnt/cni/host-local <&0
exit $?
"""
    proc = in_root(node_root, portable, ["true"], stdin=conf, netns=True, extra=extra)
    assert proc.returncode == 0, explain(proc)
    assert [ip["address"] for ip in json.loads(proc.stdout)["ips"]] == ["10.244.7.2/24"]

    err = (path / "agent.err").read_text()
    assert "Traceback" not in err, err
    assert re.search(r"host-local ADD port-ctr-1 exit 0", err), f"the ADD was not handed to the agent: {err}"
    match = re.search(r"could not preload (.*)", err)
    for module in (match.group(1).split(", ") if match else []):
        rel = module.replace(".", "/")
        present = [p for p in (f"{rel}.pyc", f"{rel}/__init__.pyc") if (portable / BUNDLE / p).exists()]
        assert not present, f"{module} is in the bundle ({present}) but does not import on bullseye: {err}"
