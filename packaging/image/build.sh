#!/bin/bash
# `make image`: the DaemonSet's container image as an OCI archive, built offline (no registry,
# no container tool): a Debian bullseye minbase root (glibc 2.31, the frozen build's target) with
# iptables, nftables and iproute2, plus
#   /opt/cni-flannel/packaging/install.sh     what the install-cni-plugin initContainer runs
#   /opt/cni-flannel/packaging/install-lib.sh (sourced by it)
#   /opt/cni-flannel/dist/cni/                the frozen build (plugins, flanneld, .cni-flannel/)
#   /opt/bin/flanneld -> /opt/cni-flannel/dist/cni/flanneld   (upstream's path; the bundle
#                                              is found next to the symlink's target)
# and nothing else: no Python, no apt lists, docs, man pages or locales.
#
#   bash packaging/image/build.sh [OUT]     (OUT default: dist/cni-flannel-image.tar; name
#                                            IMAGE default cni-flannel:latest)
#
# Cached: build/image-root (debootstrap + apt, ~1 min once, stamp per input).  Every run: copy it
# to build/image-stage, add our files, write the OCI layout (packaging/image/oci.py, stdlib).
# Load it with `podman load -i OUT` or `ctr images import OUT`.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
source "$repo/packaging/lib.sh"
say() { echo "image: $*" >&2; }
die() { echo "image: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot)"
in_private_mount_ns "$0" "$@"

OUT=${1:-$repo/dist/cni-flannel-image.tar}
[[ $OUT == /* ]] || OUT=$repo/$OUT
IMAGE=${IMAGE:-cni-flannel:latest}
ROOT=${IMAGE_ROOT:-$repo/build/image-root}
STAGE=$repo/build/image-stage
DIST=$repo/dist/cni
MIRROR=${DEBIAN_MIRROR:-$(host_mirror)}
SECURITY=${DEBIAN_SECURITY_MIRROR:-$(host_security_mirror)}
PACKAGES=(iptables nftables iproute2)

[[ -x $DIST/flanneld && -f $DIST/.cni-flannel/BUILD ]] || die "$DIST has no frozen build with flanneld: run make binaries"

mkdir -p "$(dirname "$ROOT")"
exec 8>"$ROOT.lock"
flock 8
trap unmount_all EXIT
trap 'exit 1' INT TERM HUP

ensure_debootstrap "$ROOT"
ensure_apt "$ROOT" "${PACKAGES[@]}"
unmount_all  # the stage is a hard-link copy of the root: nothing may be mounted in it

say "staging $STAGE"
rm -rf "$STAGE"
cp -al "$ROOT" "$STAGE"  # hard links: quick; the removals below only unlink
rm -rf "$STAGE/.cni-flannel" "$STAGE"/var/lib/apt/lists/* "$STAGE"/var/cache/apt/* "$STAGE"/var/log/* \
    "$STAGE"/usr/share/doc/* "$STAGE"/usr/share/man/* "$STAGE"/usr/share/info/* "$STAGE"/usr/share/locale/* \
    "$STAGE"/usr/share/lintian "$STAGE"/etc/resolv.conf "$STAGE"/tmp/* "$STAGE"/root/.[!.]* 2>/dev/null || true
: >"$STAGE/etc/resolv.conf"
mkdir -p "$STAGE/opt/cni-flannel/packaging" "$STAGE/opt/cni-flannel/dist" "$STAGE/opt/bin"
cp -a "$repo/packaging/install.sh" "$STAGE/opt/cni-flannel/packaging/install.sh"
cp -a "$repo/packaging/install-lib.sh" "$STAGE/opt/cni-flannel/packaging/install-lib.sh"
cp -a "$repo/conflists" "$STAGE/opt/cni-flannel/conflists"
cp -a "$DIST" "$STAGE/opt/cni-flannel/dist/cni"
ln -s /opt/cni-flannel/dist/cni/flanneld "$STAGE/opt/bin/flanneld"
# Python must not be in the image: the frozen build carries its own.
if compgen -G "$STAGE/usr/bin/python*" >/dev/null; then die "the image root unexpectedly contains Python"; fi

say "writing $OUT ($IMAGE)"
mkdir -p "$(dirname "$OUT")"
digest=$(/usr/bin/python3 "$here/oci.py" "$STAGE" "$OUT" --name "$IMAGE" \
    --env PATH=/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
rm -rf "$STAGE"
say "done: $OUT $(du -h "$OUT" | cut -f1), manifest $digest"
