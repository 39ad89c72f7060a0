"""Write a directory tree as a one-layer OCI image archive (image-spec v1.0), standard library only.

    python3 packaging/image/oci.py ROOTFS OUT.tar --name cni-flannel:latest [--env K=V ...]

OUT.tar is an OCI image layout (oci-layout, index.json, blobs/sha256/...) in a tar, which
`podman load -i`, `ctr images import` and `skopeo copy oci-archive:` read.  The layer is the
rootfs as a gzip'd tar with every owner set to root and the contents of /dev, /proc and /sys
left out (a runtime mounts those); entries are sorted and timestamps kept, so the same tree
gives the same digests.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from typing import Dict, List, Tuple

SKIP_CONTENTS = ("dev", "proc", "sys")


def _layer(rootfs: str, dest: str) -> Tuple[str, str, int]:
    """Write the gzip'd layer to dest; (sha256 of the gzip, sha256 of the tar, gzip size)."""
    tar_hash = hashlib.sha256()

    class Hashing(io.RawIOBase):  # the gzip stream's input: hash the plain tar on the way through
        def __init__(self, out) -> None:
            self.out = out

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:
            tar_hash.update(b)
            return self.out.write(b)

    def owner_root(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    with open(dest, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=1) as gz:
            with tarfile.open(fileobj=Hashing(gz), mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for top, dirs, files in os.walk(rootfs):
                    rel = os.path.relpath(top, rootfs)
                    dirs.sort()
                    if rel.split(os.sep)[0] in SKIP_CONTENTS:
                        dirs[:] = []
                        files = []
                    for name in sorted(dirs + files):
                        path = os.path.join(top, name)
                        arc = os.path.normpath(os.path.join(rel, name))
                        ti = owner_root(tar.gettarinfo(path, arc))
                        if ti.isreg():
                            with open(path, "rb") as f:
                                tar.addfile(ti, f)
                        elif ti.isdir() or ti.issym() or ti.islnk():
                            tar.addfile(ti)
                        # sockets, fifos and device nodes are not image content
    with open(dest, "rb") as f:
        gz_hash = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            gz_hash.update(chunk)
    return gz_hash.hexdigest(), tar_hash.hexdigest(), os.path.getsize(dest)


def _blob(blobs: Dict[str, bytes], obj: dict) -> Tuple[str, int]:
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return digest, len(data)


def build(rootfs: str, out: str, name: str, env: List[str], arch: str = "amd64") -> str:
    """Write OUT; returns the manifest digest."""
    repo, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "latest")
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(out))) as tmp:
        layer_path = os.path.join(tmp, "layer")
        layer_digest, diff_id, layer_size = _layer(rootfs, layer_path)
        blobs: Dict[str, bytes] = {}
        config = {"architecture": arch, "os": "linux",
                  "config": {"Env": env, "WorkingDir": "/"},
                  "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
                  "history": [{"created_by": "packaging/image/build.sh"}]}
        cfg_digest, cfg_size = _blob(blobs, config)
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": f"sha256:{cfg_digest}", "size": cfg_size},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                "digest": f"sha256:{layer_digest}", "size": layer_size}]}
        man_digest, man_size = _blob(blobs, manifest)
        full = repo if "/" in repo.split("/")[0] or "." in repo.split("/")[0] else f"docker.io/library/{repo}"
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                "digest": f"sha256:{man_digest}", "size": man_size,
                                "annotations": {"org.opencontainers.image.ref.name": tag,
                                                "io.containerd.image.name": f"{full}:{tag}"}}]}
        part = out + ".part"
        with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar:
            def add_bytes(arc: str, data: bytes) -> None:
                ti = tarfile.TarInfo(arc)
                ti.size, ti.mode = len(data), 0o644
                tar.addfile(ti, io.BytesIO(data))
            for d in ("blobs", "blobs/sha256"):
                ti = tarfile.TarInfo(d)
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(ti)
            add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            add_bytes("index.json", json.dumps(index, sort_keys=True).encode())
            for digest, data in sorted(blobs.items()):
                add_bytes(f"blobs/sha256/{digest}", data)
            tar.add(layer_path, f"blobs/sha256/{layer_digest}", filter=lambda ti: _plain(ti))
        os.replace(part, out)
    return f"sha256:{man_digest}"


def _plain(ti: tarfile.TarInfo) -> tarfile.TarInfo:
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    ti.mode = 0o644
    return ti


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rootfs")
    p.add_argument("out")
    p.add_argument("--name", default="cni-flannel:latest")
    p.add_argument("--env", action="append", default=[])
    a = p.parse_args()
    print(build(a.rootfs, a.out, a.name, a.env))


if __name__ == "__main__":
    main()
