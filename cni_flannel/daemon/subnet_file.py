"""Write /run/flannel/subnet.env the way flanneld does (pkg/subnet/subnet.go WriteSubnetFile).

    FLANNEL_NETWORK=10.244.0.0/16      FLANNEL_SUBNET=10.244.1.1/24   (the lease's first address)
    FLANNEL_IPV6_NETWORK=...           FLANNEL_IPV6_SUBNET=...        (when IPv6 is enabled)
    FLANNEL_MTU=1450                   FLANNEL_IPMASQ=true

The text comes from ``SubnetEnv.render()`` (cni_flannel/flannel/subnet_env.py), the same type the
CNI plugin parses it back into.  The file is replaced atomically — temporary file in the same
directory, fsync, rename, fsync of the directory — so a plugin never reads half a file and a
power cut leaves the old or the new one.  Mode 0644 regardless of umask, like flanneld
(renameio.WriteFile with IgnoreUmask); the directory is created 0755.
"""

from __future__ import annotations

import ipaddress
from typing import Optional

from ..atomicfile import read_regular
from ..atomicfile import write_atomic as _write_atomic
from ..flannel.subnet_env import DEFAULT_PATH, SubnetEnv
from .netconf import NetConf

FILE_MODE = 0o644
DIR_MODE = 0o755


def env_for(conf: NetConf, subnet: Optional[ipaddress.IPv4Network],
            ipv6_subnet: Optional[ipaddress.IPv6Network], mtu: int, ipmasq: bool) -> SubnetEnv:
    """subnet.env's values for a lease: one network and one subnet per enabled family."""
    networks = []
    subnets = []
    for pool, sub in ((conf.ipv4, subnet), (conf.ipv6, ipv6_subnet)):
        if pool is None:
            continue
        if sub is None:
            raise ValueError(f"IPv{pool.version} is enabled but the lease has no IPv{pool.version} subnet")
        networks.append(pool.network)
        subnets.append(sub)
    return SubnetEnv(networks=networks, subnets=subnets, mtu=mtu, ipmasq=ipmasq)


def write(env: SubnetEnv, path: str = DEFAULT_PATH) -> bool:
    """Replace ``path`` with ``env`` atomically; False when it already held exactly that."""
    data = env.render().encode()
    if _holds(path, data):
        return False  # unchanged: keep its mtime, spare the disk
    write_atomic(path, data)  # a rename: a planted symlink is replaced, never written through
    return True


def _holds(path: str, data: bytes) -> bool:
    """``path`` is a regular file (not a symlink) with exactly ``data`` and our mode.  Read only
    one byte past ``data`` (a longer file differs): a planted link to /dev/zero or a FIFO costs nothing."""
    try:
        return read_regular(path, len(data) + 1, mode=FILE_MODE) == data
    except OSError:
        return False


def write_subnet_file(conf: NetConf, subnet: Optional[ipaddress.IPv4Network],
                      ipv6_subnet: Optional[ipaddress.IPv6Network], mtu: int, ipmasq: bool,
                      path: str = DEFAULT_PATH) -> SubnetEnv:
    env = env_for(conf, subnet, ipv6_subnet, mtu, ipmasq)
    write(env, path)
    return env


def write_atomic(path: str, data: bytes, mode: int = FILE_MODE) -> None:
    _write_atomic(path, data, mode=mode, dir_mode=DIR_MODE)
