# Shared by packaging/portable/*.sh and packaging/image/build.sh (sourced, not run).
#
# Chroot mounts are made only inside a private mount namespace (see in_private_mount_ns): they
# exist while the script runs and vanish with the namespace when it ends, however it ends (error,
# ^C, SIGKILL), so nothing is ever left mounted on the host.  The explicit unmounts on EXIT are a
# second line for readers who run the functions by hand.

SUITE=bullseye

say() { echo "portable: $*" >&2; }
die() { echo "portable: $*" >&2; exit 1; }

# Archive URIs from the host's apt sources (deb822 .sources and one-line .list files).
_apt_uris() {
    {
        sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null
        awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
    } | tr ' ' '\n' | grep -E '^https?://'
}

# The Debian mirror the host's apt uses (first "debian" archive URI in its sources), so the build
# talks to no other network than the one apt already does.
host_mirror() {
    local uri
    uri=$(_apt_uris | grep -E '/debian/?$' | head -1)
    echo "${uri:-http://deb.debian.org/debian}"
}

# The security archive next to it (same host), e.g. http://deb.debian.org/debian-security.
host_security_mirror() {
    local uri
    uri=$(_apt_uris | grep -E '/debian-security/?$' | head -1)
    echo "${uri:-$(host_mirror)-security}"
}

# Re-exec the calling script in a private mount namespace, once.
in_private_mount_ns() {
    if [[ -z ${CNI_PORTABLE_PRIVATE_NS:-} ]]; then
        export CNI_PORTABLE_PRIVATE_NS=1
        exec unshare --mount --propagation private -- "$BASH" "$@"
    fi
}

CHROOT_MOUNTS=()

# mount_into <root> <fs-args...> <target-inside-root>: mount and remember it for unmount_all.
mount_into() {
    local root=$1
    local target=$root${*: -1}
    mkdir -p "$target"
    mount "${@:2:$#-2}" "$target"
    CHROOT_MOUNTS+=("$target")
}

# bind_ro <root> <host path>: the host path, read-only, at the same path inside the root.
bind_ro() {
    local root=$1 src=$2
    local target=$root$src
    if [[ -d $src ]]; then mkdir -p "$target"; else mkdir -p "$(dirname "$target")"; [[ -e $target ]] || : >"$target"; fi
    mount --bind "$src" "$target"
    mount -o remount,bind,ro "$target"
    CHROOT_MOUNTS+=("$target")
}

mount_chroot() {
    local root=$1
    mount_into "$root" -t proc proc /proc
    mount_into "$root" -t sysfs sysfs /sys
    mount_into "$root" --rbind /dev /dev
}

unmount_all() {
    local i
    for ((i = ${#CHROOT_MOUNTS[@]} - 1; i >= 0; i--)); do
        umount --recursive --lazy "${CHROOT_MOUNTS[i]}" 2>/dev/null || true
    done
    CHROOT_MOUNTS=()
}

# in_root <root> <cmd...>: run in the chroot with a plain environment (plus PIP_* settings).
in_root() {
    local root=$1; shift
    local env=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
               LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive)
    local v
    while IFS= read -r v; do env+=("$v"); done < <(env | grep -E '^PIP_' || true)
    chroot "$root" /usr/bin/env -i "${env[@]}" "$@"
}

# A stamp records what a step was made from; a step re-runs only when its inputs change.
stamp_ok() { [[ -f $1 && $(cat "$1") == "$2" ]]; }

# ensure_debootstrap <root>: a minbase $SUITE root from $MIRROR, made once (stamp).  A half-made
# root (interrupted earlier) is not trusted: start over.  Nothing can be mounted in it (mounts
# only ever live in a private namespace).
ensure_debootstrap() {
    local root=$1
    [[ -f $root/.cni-flannel/debootstrap ]] && return 0
    say "debootstrap --variant=minbase $SUITE from $MIRROR into $root"
    grep -qF " $root/" /proc/self/mountinfo && die "something is mounted under $root: unmount it first"
    rm -rf "$root"
    debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$root.debootstrap.log" 2>&1 \
        || { tail -20 "$root.debootstrap.log" >&2; die "debootstrap failed (log: $root.debootstrap.log)"; }
    mkdir -p "$root/.cni-flannel"
    echo "$SUITE $MIRROR" >"$root/.cni-flannel/debootstrap"
}

# ensure_apt <root> <package...>: the packages installed in the root from $MIRROR and $SECURITY,
# again only when the list or the mirrors change (stamp).  Mounts /proc, /sys, /dev in the root
# (mount_chroot) when they are not yet; unmount_all undoes that.
ensure_apt() {
    local root=$1; shift
    local key="$* | $MIRROR | $SECURITY"
    stamp_ok "$root/.cni-flannel/apt" "$key" && return 0
    say "apt-get install $*"
    mountpoint -q "$root/proc" || mount_chroot "$root"
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
        "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SECURITY" "$SUITE" >"$root/etc/apt/sources.list"
    in_root "$root" apt-get update -qq
    in_root "$root" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    in_root "$root" apt-get clean
    echo "$key" >"$root/.cni-flannel/apt"
}
