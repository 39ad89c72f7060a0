"""subnet.env writer: flanneld's content, parsed back by the plugin's parser, replaced atomically."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest

from cni_flannel.daemon import subnet_file
from cni_flannel.flannel import subnet_env
from tests.unit.daemon_doubles import netconf_of

V4 = ipaddress.IPv4Network
V6 = ipaddress.IPv6Network


conf = netconf_of  # shared with the other daemon unit tests


DUAL = dict(EnableIPv6=True, IPv6Network="fd00:10:244::/56")


def test_ipv4_file_as_flanneld_writes_it(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    env = subnet_file.write_subnet_file(conf(), V4("10.244.1.0/24"), None, 1450, True, str(path))
    # WriteSubnetFile: NETWORK, SUBNET (first address), MTU, IPMASQ, in that order
    assert path.read_text() == ("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n"
                                "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    assert subnet_env.load(str(path)) == env


def test_dual_stack_file_parses_back(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    env = subnet_file.write_subnet_file(conf(**DUAL), V4("10.244.3.0/24"), V6("fd00:10:244:3::/64"), 1430, False,
                                        str(path))
    assert path.read_text() == ("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n"
                                "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64\n"
                                "FLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n")
    back = subnet_env.parse(path.read_text(), str(path))
    assert back == env
    assert back.subnets == [V4("10.244.3.0/24"), V6("fd00:10:244:3::/64")]
    assert (back.mtu, back.ipmasq) == (1430, False)


def test_ipv6_only(tmp_path: Path) -> None:
    c = conf(EnableIPv4=False, **DUAL)
    path = tmp_path / "subnet.env"
    subnet_file.write_subnet_file(c, None, V6("fd00:10:244:3::/64"), 1430, True, str(path))
    assert "FLANNEL_NETWORK" not in path.read_text()
    assert subnet_env.load(str(path)).subnets == [V6("fd00:10:244:3::/64")]


def test_lease_must_cover_enabled_families() -> None:
    with pytest.raises(ValueError):
        subnet_file.env_for(conf(**DUAL), V4("10.244.3.0/24"), None, 1430, True)
    with pytest.raises(ValueError):
        subnet_file.env_for(conf(), None, None, 1450, True)


def test_subnet_from_podcidr_zero(tmp_path: Path) -> None:
    # kube mode: the node with podCIDR 10.244.0.0/24 gets FLANNEL_SUBNET=10.244.0.1/24
    env = subnet_file.env_for(conf(), V4("10.244.0.0/24"), None, 1450, True)
    assert "FLANNEL_SUBNET=10.244.0.1/24\n" in env.render()


def test_mode_dir_and_no_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "run" / "flannel" / "subnet.env"
    old = os.umask(0o077)
    try:
        subnet_file.write_subnet_file(conf(), V4("10.244.1.0/24"), None, 1450, True, str(path))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # like flanneld, whatever the umask
    assert os.listdir(path.parent) == ["subnet.env"]


def test_replace_is_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "subnet.env"
    subnet_file.write_subnet_file(conf(), V4("10.244.1.0/24"), None, 1450, True, str(path))
    before = path.read_text()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        subnet_file.write_subnet_file(conf(), V4("10.244.2.0/24"), None, 1450, True, str(path))
    assert path.read_text() == before  # the old file stands whole
    assert os.listdir(tmp_path) == ["subnet.env"]  # and the temporary file is gone


def test_write_goes_through_fsync_and_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(("fsync", stat.S_ISDIR(os.fstat(fd).st_mode))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(("replace", os.path.dirname(a) == os.path.dirname(b))),
                                                     real_replace(a, b))[1])
    subnet_file.write_atomic(str(tmp_path / "f"), b"x\n")
    # file fsynced, renamed within its directory, then the directory fsynced
    assert calls == [("fsync", False), ("replace", True), ("fsync", True)]


def test_unchanged_content_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    env = subnet_file.env_for(conf(), V4("10.244.1.0/24"), None, 1450, True)
    assert subnet_file.write(env, str(path)) is True
    inode = path.stat().st_ino
    assert subnet_file.write(env, str(path)) is False
    assert path.stat().st_ino == inode
    changed = subnet_file.env_for(conf(), V4("10.244.1.0/24"), None, 1400, True)
    assert subnet_file.write(changed, str(path)) is True
    assert subnet_env.load(str(path)).mtu == 1400



@pytest.mark.parametrize("spoil", ["mode", "longer", "shorter"])
def test_same_text_with_another_mode_or_length_is_rewritten(tmp_path: Path, spoil: str) -> None:
    """"Unchanged" means exactly our bytes, nothing after them, and mode 0644."""
    path = tmp_path / "subnet.env"
    env = subnet_file.env_for(conf(), V4("10.244.1.0/24"), None, 1450, True)
    assert subnet_file.write(env, str(path)) is True
    if spoil == "mode":
        path.chmod(0o600)
    elif spoil == "longer":
        path.write_bytes(path.read_bytes() + b"X")
    else:
        path.write_bytes(path.read_bytes()[:-1])
    assert subnet_file.write(env, str(path)) is True
    assert path.read_text() == env.render() and stat.S_IMODE(path.stat().st_mode) == 0o644

WRITE_IN_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # the old code read /dev/zero forever
from cni_flannel.daemon import subnet_file
from tests.unit.daemon_doubles import netconf_of
import ipaddress
env = subnet_file.env_for(netconf_of(), ipaddress.IPv4Network("10.244.1.0/24"), None, 1450, True)
print(subnet_file.write(env, sys.argv[1]))
"""


@pytest.mark.parametrize("target", ["victim", "fifo", "/dev/zero", "same-content"])
def test_a_planted_symlink_is_replaced_not_followed(tmp_path: Path, target: str) -> None:
    """/run/flannel/subnet.env planted as a symlink: to a file (never written through, even when
    it holds exactly our content), to a FIFO (must not block) or /dev/zero (must not be read).
    In a child with a deadline and a memory cap, so a regression fails instead of hanging."""
    import subprocess
    import sys

    env = subnet_file.env_for(conf(), V4("10.244.1.0/24"), None, 1450, True)
    path = tmp_path / "subnet.env"
    if target == "fifo":
        os.mkfifo(tmp_path / "fifo")
        dest = str(tmp_path / "fifo")
    elif target.startswith("/"):
        dest = target
    else:
        victim = tmp_path / "victim"
        victim.write_text(env.render() if target == "same-content" else "secret\n")
        victim.chmod(0o644)
        dest = str(victim)
    path.symlink_to(dest)
    root = Path(__file__).resolve().parents[2]
    try:
        done = subprocess.run([sys.executable, "-c", WRITE_IN_CHILD, str(path)], cwd=root, capture_output=True,
                              text=True, timeout=20, env={**os.environ, "PYTHONPATH": str(root)})
    except subprocess.TimeoutExpired:
        pytest.fail(f"writing subnet.env over a symlink to {target} blocked")
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr[-2000:]
    assert not path.is_symlink() and path.read_text() == env.render()
    if not target.startswith("/") and target != "fifo":
        assert (tmp_path / "victim").read_text() == (env.render() if target == "same-content" else "secret\n")
