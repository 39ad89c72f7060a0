"""The image `make image` builds (dist/cni-flannel-image.tar), loaded and run by podman: flanneld
answers --version inside it, and the manifest's initContainers, run in it exactly as
deploy/kube-flannel.yml writes them (command, args, env, volumeMounts as bind mounts of a
temporary node root), install plugins that then work from that node root.

podman runs with its own storage under a temporary directory, no network (--network none),
runc as the runtime and no default ulimits (this machine's hybrid cgroups defeat crun, and the
sandbox may not raise rlimits).
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import pytest

from tests.harness.netns import run
from tests.harness.plugins import FROZEN_DIR, REPO_ROOT
from tests.integration.test_deploy import (BUNDLE, CONFLIST, NAMES, PATH, docs, files, pod_spec,  # noqa: F401
                                           version)

pytestmark = pytest.mark.integration

IMAGE_TAR = REPO_ROOT / "dist" / "cni-flannel-image.tar"
IMAGE = "cni-flannel:latest"
CONTAINERS_CONF = """[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
events_logger = "none"
runtime = "runc"
"""


class Podman:
    def __init__(self, home: Path) -> None:
        self.home = home
        (home / "containers.conf").write_text(CONTAINERS_CONF)
        self.env = {"PATH": PATH, "HOME": str(home), "CONTAINERS_CONF": str(home / "containers.conf")}

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        argv = ["podman", "--root", str(self.home / "root"), "--runroot", str(self.home / "run"),
                "--storage-driver", "overlay", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"{argv}: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def run(self, argv: List[str], volumes: Optional[List[str]] = None, env: Optional[Mapping[str, str]] = None,
            check: bool = True) -> subprocess.CompletedProcess:
        opts = ["run", "--rm", "--network", "none"]
        for v in volumes or []:
            opts += ["-v", v]
        for k, val in (env or {}).items():
            opts += ["-e", f"{k}={val}"]
        return self(*opts, IMAGE, *argv, check=check)


@pytest.fixture(scope="module")
def podman(tmp_path_factory) -> Podman:
    if shutil.which("podman") is None or shutil.which("runc") is None:
        pytest.fail("podman and runc are needed: `make apt` installs them")
    stamp = FROZEN_DIR / BUNDLE / "BUILD"
    if not IMAGE_TAR.exists() or IMAGE_TAR.stat().st_mtime < stamp.stat().st_mtime:
        pytest.fail(f"{IMAGE_TAR} is missing or older than the frozen build: run `make image`")
    p = Podman(tmp_path_factory.mktemp("podman"))
    loaded = p("load", "-i", str(IMAGE_TAR))
    assert "cni-flannel:latest" in loaded.stdout + loaded.stderr
    yield p
    p("rmi", "-a", "-f", check=False)
    run(["rm", "-rf", str(p.home)])


def test_flanneld_version_and_contents(podman):
    out = podman.run(["/opt/bin/flanneld", "--version"]).stdout.strip()
    assert out.startswith("v") and "cni-flannel" in out, out
    have = podman.run(["/bin/sh", "-c", "for t in iptables iptables-restore nft ip sh cp mv cmp sha256sum; do "
                                       "command -v $t >/dev/null || echo missing $t; done; "
                                       "ls /usr/bin | grep -c '^python' || true"]).stdout.split()
    assert have == ["0"], have  # every tool there, no Python


def container_argv(c: Dict[str, Any], pod_spec: Dict[str, Any], configmaps: Dict[str, Dict[str, str]],
                   host: Path, work: Path):
    """The container's command+args, its -v mounts (hostPath -> host/<path>, ConfigMap -> files)."""
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    mounts = []
    for vm in c.get("volumeMounts", []):
        vol = volumes[vm["name"]]
        if "hostPath" in vol:
            src = host / vol["hostPath"]["path"].lstrip("/")
            src.mkdir(parents=True, exist_ok=True)
            mounts.append(f"{src}:{vm['mountPath']}")
        else:
            src = work / vm["name"]
            src.mkdir(parents=True, exist_ok=True)
            for key, text in configmaps[vol["configMap"]["name"]].items():
                (src / key).write_text(text)
            mounts.append(f"{src}:{vm['mountPath']}:ro")
    env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
    return list(c.get("command", [])) + list(c.get("args", [])), mounts, env


def run_init_containers(podman: Podman, docs, pod_spec, host: Path, work: Path,
                        env_override: Optional[Mapping[str, str]] = None) -> None:
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    for c in pod_spec["initContainers"]:
        argv, mounts, env = container_argv(c, pod_spec, configmaps, host, work / c["name"])
        if c["name"] == "install-cni-plugin":
            env.update(env_override or {})
        podman.run(argv, mounts, env)


def test_init_containers_in_the_image_install_working_plugins(podman, docs, pod_spec, tmp_path):  # noqa: F811
    host = tmp_path / "host"
    run_init_containers(podman, docs, pod_spec, host, tmp_path, {"PLUGINS": " ".join(NAMES)})
    bin_dir = host / "opt" / "cni" / "bin"
    mnt = Path(podman("image", "mount", IMAGE).stdout.strip())
    try:
        assert files(bin_dir / BUNDLE) == files(mnt / "opt" / "cni-flannel" / "dist" / "cni" / BUNDLE)
    finally:
        podman("image", "unmount", IMAGE, check=False)
    assert (host / "etc" / "cni" / "net.d" / "10-flannel.conflist").read_text() == CONFLIST.read_text()
    for name in NAMES:
        assert version(bin_dir / name)["supportedVersions"][-1] == "1.1.0", name
    # a plugin copied out of the image does real work: loopback in a test namespace
    from tests.harness.netns import temp_netns
    conf = json.dumps({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}).encode()
    with temp_netns("img") as ns:
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "img-1", "CNI_NETNS": f"/run/netns/{ns}", "CNI_IFNAME": "lo",
               "CNI_PATH": str(bin_dir), "PATH": PATH, "CNI_FLANNEL_AGENT": "off",
               "CNI_FLANNEL_LOG": str(tmp_path / "plugin.log")}
        add = subprocess.run([str(bin_dir / "loopback")], input=conf, env=env, capture_output=True, timeout=60)
        assert add.returncode == 0, add
        flags = json.loads(run(["ip", "-n", ns, "-j", "link", "show", "lo"]).stdout)[0]["flags"]
        assert "UP" in flags
