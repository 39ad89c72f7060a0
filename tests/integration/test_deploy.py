"""deploy/kube-flannel.yml: the manifest has the seed's kube-flannel shape, and its initContainers,
run exactly as written, install working plugins and the conflist.

The YAML is read with Debian's python3-yaml through /usr/bin/python3 (PyYAML is not a project
dependency; the test is skipped, saying so, where that module is missing).

Each initContainer runs as a tiny container: a private mount namespace (unshare) with a chroot
whose /usr is the host's /usr (read-only), whose /opt/cni-flannel is the image content (the
repository's packaging/install.sh and the frozen dist/cni), and whose volumeMounts are bind mounts
of a temporary DESTDIR standing in for the node's hostPaths (ConfigMap volumes: the ConfigMap's
files).  The command, args and env come from the manifest unchanged.  The installed plugins are
then run from DESTDIR; loopback ADD/DEL in a test network namespace `cft<hex>-depl`.
"""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import pytest

from tests.harness.netns import new_prefix, run, temp_netns
from tests.harness.plugins import FROZEN_DIR

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "deploy" / "kube-flannel.yml"
CONFLIST = REPO / "conflists" / "10-flannel.conflist"
IMAGE_HOME = "/opt/cni-flannel"  # where the image keeps our files (see the manifest's header)
BUNDLE = ".cni-flannel"
NAMES = ("flannel", "bridge", "host-local", "portmap", "loopback")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOAD_YAML = "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)"


@pytest.fixture(scope="module")
def docs() -> List[Dict[str, Any]]:
    proc = subprocess.run(["/usr/bin/python3", "-c", LOAD_YAML, str(MANIFEST)], capture_output=True, text=True)
    if proc.returncode != 0 and "No module named 'yaml'" in proc.stderr:
        pytest.skip("reading the manifest needs Debian's python3-yaml for /usr/bin/python3 "
                    "(apt-get install python3-yaml)")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def one(docs: List[Dict[str, Any]], kind: str) -> Dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


@pytest.fixture(scope="module")
def pod_spec(docs) -> Dict[str, Any]:
    return one(docs, "DaemonSet")["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    """The image's /opt/cni-flannel: install.sh and the frozen build, laid out as in the repo."""
    if not (FROZEN_DIR / BUNDLE / "BUILD").exists():
        pytest.skip(f"{FROZEN_DIR} has no frozen build: run `make binaries`")
    home = tmp_path_factory.mktemp("image") / "cni-flannel"
    (home / "packaging").mkdir(parents=True)
    for script in ("install.sh", "install-lib.sh"):
        shutil.copy2(REPO / "packaging" / script, home / "packaging" / script)
    (home / "dist").mkdir()
    shutil.copytree(FROZEN_DIR, home / "dist" / "cni", symlinks=True)
    return home


@pytest.fixture
def netns():
    with temp_netns("depl") as name:
        yield name


# --- a container, as far as these initContainers need one ------------------------------------

def run_container(container: Dict[str, Any], pod_spec: Dict[str, Any], configmaps: Mapping[str, Dict[str, str]],
                  image: Path, host: Path, work: Path,
                  env_override: Optional[Mapping[str, str]] = None) -> subprocess.CompletedProcess:
    """Run container's command+args in a chroot: host /usr, the image at IMAGE_HOME, and every
    volumeMount bound from `host` (hostPath volumes) or from a ConfigMap's files."""
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    root = work / "rootfs"
    root.mkdir()
    for d in ("usr", "proc", "dev", "tmp", "etc", "opt", "run", "var"):
        (root / d).mkdir()
    for link in ("bin", "sbin", "lib", "lib64"):
        if Path(f"/{link}").is_symlink():  # merged /usr (Debian 12)
            (root / link).symlink_to(f"usr/{link}")
    mounts = ['mount --bind /usr "$R/usr"', 'mount -o remount,bind,ro "$R/usr"',
              f'mkdir -p "$R{IMAGE_HOME}"', f'mount --bind {shlex.quote(str(image))} "$R{IMAGE_HOME}"',
              f'mount -o remount,bind,ro "$R{IMAGE_HOME}"']
    for vm in container.get("volumeMounts", []):
        vol = volumes[vm["name"]]
        target = vm["mountPath"].rstrip("/") or "/"
        if "hostPath" in vol:
            src = host / vol["hostPath"]["path"].lstrip("/")
            if vol["hostPath"].get("type") == "FileOrCreate":
                src.parent.mkdir(parents=True, exist_ok=True)
                src.touch()
            else:
                src.mkdir(parents=True, exist_ok=True)
        elif "configMap" in vol:
            src = work / "configmaps" / vol["name"]
            src.mkdir(parents=True)
            for key, text in configmaps[vol["configMap"]["name"]].items():
                (src / key).write_text(text)
        else:
            raise AssertionError(f"volume kind not handled by this test: {vol}")
        make = f'mkdir -p "$R{target}"' if src.is_dir() else f'mkdir -p "$(dirname "$R{target}")"; touch "$R{target}"'
        mounts += [make, f'mount --bind {shlex.quote(str(src))} "$R{target}"']
        if vm.get("readOnly") or "configMap" in vol:
            mounts.append(f'mount -o remount,bind,ro "$R{target}"')
    env = {"PATH": PATH}
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    env.update(env_override or {})
    argv = list(container.get("command", [])) + list(container.get("args", []))
    script = "\n".join(["set -e", f"R={shlex.quote(str(root))}", *mounts,
                        "exec chroot \"$R\" /usr/bin/env -i "
                        + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " "
                        + " ".join(shlex.quote(a) for a in argv)])
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120, cwd="/")


def run_init_containers(docs, pod_spec, image: Path, host: Path, tmp: Path,
                        env_override: Optional[Mapping[str, str]] = None) -> List[subprocess.CompletedProcess]:
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    results = []
    for i, container in enumerate(pod_spec["initContainers"]):
        work = tmp / f"{new_prefix()}-{i}"
        work.mkdir()
        override = env_override if container["name"] == "install-cni-plugin" else None
        results.append(run_container(container, pod_spec, configmaps, image, host, work, override))
    return results


def explain(procs) -> str:
    return "\n".join(f"{p.args[-1][-200:]!r}: rc={p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
                     for p in procs)


def version(binary: Path) -> dict:
    proc = subprocess.run([str(binary)], env={"CNI_COMMAND": "VERSION", "PATH": PATH, "CNI_FLANNEL_LOG": "/dev/null"},
                          capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc
    return json.loads(proc.stdout)


def files(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- the manifest ------------------------------------------------------------------------------

def test_objects_and_config(docs) -> None:
    assert [d["kind"] for d in docs] == ["Namespace", "ClusterRole", "ClusterRoleBinding",
                                         "ServiceAccount", "ConfigMap", "DaemonSet"]
    assert one(docs, "Namespace")["metadata"]["name"] == "kube-flannel"
    for kind in ("ServiceAccount", "ConfigMap", "DaemonSet"):
        assert one(docs, kind)["metadata"]["namespace"] == "kube-flannel", kind
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(docs, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "flannel", "namespace": "kube-flannel"}]
    rules = {(r, v) for rule in one(docs, "ClusterRole")["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert {("nodes", "list"), ("nodes", "watch"), ("nodes/status", "patch"), ("pods", "get")} <= rules

    data = one(docs, "ConfigMap")["data"]
    assert data["cni-conf.json"] == CONFLIST.read_text(), \
        "the ConfigMap's cni-conf.json must be conflists/10-flannel.conflist verbatim"
    assert json.loads(data["net-conf.json"]) == {"Network": "10.244.0.0/16", "EnableNFTables": False,
                                                 "Backend": {"Type": "vxlan"}}


def test_daemonset_shape(docs, pod_spec) -> None:
    ds = one(docs, "DaemonSet")
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert pod_spec["hostNetwork"] is True
    assert pod_spec["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert [c["name"] for c in pod_spec["initContainers"]] == ["install-cni-plugin", "install-cni"]
    main, agent = pod_spec["containers"]
    assert main["image"] == agent["image"] == "cni-flannel:latest"
    assert agent["command"] + agent["args"] == [f"{IMAGE_HOME}/dist/cni/flannel", "agent", "--socket",
                                                "/run/flannel/cni-agent.sock"]
    assert agent["securityContext"]["privileged"] is True  # setns() into the caller's namespaces
    assert main["command"] + main["args"] == ["/opt/bin/flanneld", "--ip-masq", "--kube-subnet-mgr",
                                              "--healthz-port=8081"]
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8081}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8081}
    assert {e["name"] for e in main["env"]} >= {"POD_NAME", "POD_NAMESPACE", "NODE_NAME"}

    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    for c in pod_spec["initContainers"] + pod_spec["containers"]:
        for vm in c.get("volumeMounts", []):
            assert vm["name"] in volumes, f"{c['name']} mounts undeclared volume {vm['name']}"

    def host_mounts(c: Dict[str, Any]) -> Dict[str, str]:
        return {vm["mountPath"].rstrip("/"): volumes[vm["name"]].get("hostPath", {}).get("path", "configMap")
                for vm in c["volumeMounts"]}

    assert host_mounts(main) == {"/run/flannel": "/run/flannel", "/etc/kube-flannel": "configMap",
                                 "/run/xtables.lock": "/run/xtables.lock", "/var/lib/cni": "/var/lib/cni"}
    assert volumes["xtables-lock"]["hostPath"]["type"] == "FileOrCreate"
    assert host_mounts(agent) == {"/run/flannel": "/run/flannel"}
    plugin_init, conf_init = pod_spec["initContainers"]
    assert host_mounts(plugin_init) == {"/opt/cni/bin": "/opt/cni/bin"}
    assert host_mounts(conf_init) == {"/etc/cni/net.d": "/etc/cni/net.d", "/etc/kube-flannel": "configMap"}
    assert plugin_init["command"][-1] == f"{IMAGE_HOME}/packaging/install.sh"


# --- the initContainers, run ------------------------------------------------------------------

def test_init_containers_install_flannel_and_the_conflist(docs, pod_spec, image: Path, tmp_path: Path) -> None:
    host = tmp_path / "host"
    procs = run_init_containers(docs, pod_spec, image, host, tmp_path)
    assert all(p.returncode == 0 for p in procs), explain(procs)

    bin_dir = host / "opt" / "cni" / "bin"
    assert sorted(p.name for p in bin_dir.iterdir()) == [BUNDLE, "flannel"]  # only what PLUGINS names
    assert (bin_dir / "flannel").read_bytes() == (FROZEN_DIR / "flannel").read_bytes()
    assert files(bin_dir / BUNDLE) == files(FROZEN_DIR / BUNDLE)
    conf_dir = host / "etc" / "cni" / "net.d"
    assert sorted(p.name for p in conf_dir.iterdir()) == ["10-flannel.conflist"]
    assert (conf_dir / "10-flannel.conflist").read_text() == CONFLIST.read_text()
    assert version(bin_dir / "flannel")["supportedVersions"][-1] == "1.1.0"

    # A restarted pod runs them again: nothing changes, nothing fails.
    before = files(host)
    procs = run_init_containers(docs, pod_spec, image, host, tmp_path)
    assert all(p.returncode == 0 for p in procs), explain(procs)
    assert files(host) == before


def test_default_leaves_the_nodes_own_plugins_alone(docs, pod_spec, image: Path, tmp_path: Path) -> None:
    """A kubeadm node's kubernetes-cni package owns loopback, bridge, ...: with the manifest's
    default PLUGINS the install neither fails nor touches them."""
    host = tmp_path / "host"
    bin_dir = host / "opt" / "cni" / "bin"
    bin_dir.mkdir(parents=True)
    theirs = {n: f"#!/bin/sh\n# the node's own {n}\n".encode() for n in ("loopback", "bridge", "host-local", "portmap")}
    for name, content in theirs.items():
        (bin_dir / name).write_bytes(content)
    procs = run_init_containers(docs, pod_spec, image, host, tmp_path)
    assert all(p.returncode == 0 for p in procs), explain(procs)
    assert {n: (bin_dir / n).read_bytes() for n in theirs} == theirs
    assert (bin_dir / "flannel").read_bytes() == (FROZEN_DIR / "flannel").read_bytes()


def test_all_plugins_when_asked_then_loopback_add_del(docs, pod_spec, image: Path, tmp_path: Path,
                                                      netns: str) -> None:
    """PLUGINS set to every name (the knob the manifest documents): all five entries answer
    VERSION from DESTDIR, and loopback brings lo up and down in a test namespace."""
    host = tmp_path / "host"
    procs = run_init_containers(docs, pod_spec, image, host, tmp_path,
                                env_override={"PLUGINS": " ".join(NAMES)})
    assert all(p.returncode == 0 for p in procs), explain(procs)
    bin_dir = host / "opt" / "cni" / "bin"
    for name in NAMES:
        assert version(bin_dir / name)["supportedVersions"][-1] == "1.1.0", name

    conf = json.dumps({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}).encode()

    def loopback(command: str) -> subprocess.CompletedProcess:
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "depl-ctr-1", "CNI_NETNS": f"/run/netns/{netns}",
               "CNI_IFNAME": "lo", "CNI_PATH": str(bin_dir), "PATH": PATH, "CNI_FLANNEL_AGENT": "off",
               "CNI_FLANNEL_LOG": str(tmp_path / "plugin.log")}
        return subprocess.run([str(bin_dir / "loopback")], input=conf, env=env, capture_output=True, timeout=60)

    def lo_up() -> bool:
        return "UP" in json.loads(run(["ip", "-n", netns, "-j", "link", "show", "lo"]).stdout)[0]["flags"]

    assert not lo_up()
    add = loopback("ADD")
    assert add.returncode == 0, add
    assert json.loads(add.stdout)["interfaces"][0]["name"] == "lo"
    assert lo_up()
    rm = loopback("DEL")
    assert rm.returncode == 0, rm
    assert not lo_up()
