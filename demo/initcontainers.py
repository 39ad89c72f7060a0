"""kube-flannel's initContainers (deploy/kube-flannel.yml), run on a demo node exactly as written.

Each container runs as the kubelet would start it, as far as these two need: inside the node's
network and mount namespaces, in a further private mount namespace with a chroot whose /usr is
the host's (read-only), whose /opt/cni-flannel is the image (the repository's packaging/ and
frozen dist/cni, read-only), whose hostPath volumes are the node's own directories and whose
ConfigMap volumes hold the ConfigMap's files.  Command, args and env come from the manifest; the
demo changes two values, both as the manifest's header documents: PLUGINS lists all five plugins
(a demo node has no kubernetes-cni package), and cni-conf.json is the seed's file.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Mapping

from tests.harness.netns import Node

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "deploy" / "kube-flannel.yml"
IMAGE_HOME = "/opt/cni-flannel"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOAD_YAML = "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)"


def load_manifest() -> List[Dict[str, Any]]:
    """The manifest's objects, read with Debian's python3-yaml (PyYAML is no project dependency)."""
    proc = subprocess.run(["/usr/bin/python3", "-c", LOAD_YAML, str(MANIFEST)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"cannot read {MANIFEST} (needs python3-yaml): {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def pod_spec(docs: List[Dict[str, Any]]) -> Dict[str, Any]:
    return next(d for d in docs if d["kind"] == "DaemonSet")["spec"]["template"]["spec"]


def configmaps(docs: List[Dict[str, Any]]) -> Dict[str, Dict[str, str]]:
    return {d["metadata"]["name"]: dict(d["data"]) for d in docs if d["kind"] == "ConfigMap"}


def container_script(container: Dict[str, Any], spec: Dict[str, Any], cms: Mapping[str, Mapping[str, str]],
                     root: Path, work: Path, env_override: Mapping[str, str]) -> str:
    """The shell script that mounts the container's filesystem and execs its command in a chroot."""
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = ['mount --bind /usr "$R/usr"', 'mount -o remount,bind,ro "$R/usr"']
    for sub in ("packaging", "dist/cni"):
        mounts += [f'mkdir -p "$R{IMAGE_HOME}/{sub}"',
                   f'mount --bind {shlex.quote(str(ROOT / sub))} "$R{IMAGE_HOME}/{sub}"',
                   f'mount -o remount,bind,ro "$R{IMAGE_HOME}/{sub}"']
    for vm in container.get("volumeMounts", []):
        vol = volumes[vm["name"]]
        target = vm["mountPath"].rstrip("/")
        if "hostPath" in vol:
            src = vol["hostPath"]["path"]  # the node's own directory (its mount namespace)
        elif "configMap" in vol:
            cm_dir = work / vm["name"]
            cm_dir.mkdir(parents=True, exist_ok=True)
            for key, text in cms[vol["configMap"]["name"]].items():
                (cm_dir / key).write_text(text)
            src = str(cm_dir)
        else:
            raise RuntimeError(f"volume kind of {vm['name']!r} is not handled by the demo")
        mounts += [f'mkdir -p "$R{target}"', f'mount --bind {shlex.quote(src)} "$R{target}"']
        if "configMap" in vol:
            mounts.append(f'mount -o remount,bind,ro "$R{target}"')
    env = {"PATH": PATH}
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    env.update(env_override)
    argv = list(container.get("command", [])) + list(container.get("args", []))
    return "\n".join(["set -e", f"R={shlex.quote(str(root))}", *mounts,
                      'exec chroot "$R" /usr/bin/env -i ' + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
                      + " " + " ".join(map(shlex.quote, argv))])


def command_line(container: Dict[str, Any]) -> str:
    return " ".join(map(shlex.quote, list(container.get("command", [])) + list(container.get("args", []))))


def run_init_containers(node: Node, work: Path, cni_conf: str, plugins: str) -> List[subprocess.CompletedProcess]:
    """Run every initContainer on node, in order; stop at the first that fails (as the kubelet does)."""
    docs = load_manifest()
    spec = pod_spec(docs)
    cms = configmaps(docs)
    cms["kube-flannel-cfg"]["cni-conf.json"] = cni_conf
    done = []
    for container in spec["initContainers"]:
        cwork = work / f"{node.name}-{container['name']}"
        root = cwork / "rootfs"
        for d in ("usr", "proc", "dev", "tmp", "etc", "opt", "run", "var"):
            (root / d).mkdir(parents=True, exist_ok=True)
        for link in ("bin", "sbin", "lib", "lib64"):
            if os.path.islink(f"/{link}") and not (root / link).is_symlink():  # merged /usr
                (root / link).symlink_to(f"usr/{link}")
        override = {"PLUGINS": plugins} if container["name"] == "install-cni-plugin" else {}
        script = container_script(container, spec, cms, root, cwork, override)
        proc = node.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], check=False)
        proc.args = container  # for the caller's report
        done.append(proc)
        if proc.returncode != 0:
            break
    return done
