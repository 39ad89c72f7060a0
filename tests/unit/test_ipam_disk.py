"""The disk store: the reference's layout byte for byte, the lock, and crash safety (no root)."""

from __future__ import annotations

import fcntl
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cni_flannel.cni.errors import CNIError, InvalidConfig, IOFailure, NotAvailable
from cni_flannel.ipam import host_local
from cni_flannel.ipam.disk import DiskStore, TMP_PREFIX

REPO = Path(__file__).resolve().parents[2]
DUAL = [[{"subnet": "10.1.2.0/29"}], [{"subnet": "fd00::/125"}]]


def ipam(tmp_path, ranges=DUAL, **extra):
    return dict({"type": "host-local", "dataDir": str(tmp_path), "ranges": ranges}, **extra)


def add(tmp_path, cid, ifname="eth0", **kw):
    res = host_local.allocate(ipam(tmp_path, **kw.pop("conf", {})), "net", cid, ifname, **kw)
    return [i.address for i in res.ips]


def files(tmp_path):
    d = tmp_path / "net"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_layout_content_and_modes(tmp_path):
    assert add(tmp_path, "c1") == ["10.1.2.2/29", "fd00::2/125"]
    d = tmp_path / "net"
    assert files(tmp_path) == ["10.1.2.2", "fd00::2", "last_reserved_ip.0", "last_reserved_ip.1", "lock"]
    assert (d / "10.1.2.2").read_bytes() == b"c1\r\neth0"
    assert (d / "fd00::2").read_bytes() == b"c1\r\neth0"
    assert (d / "last_reserved_ip.0").read_bytes() == b"10.1.2.2"
    assert (d / "last_reserved_ip.1").read_bytes() == b"fd00::2"
    for name in ("10.1.2.2", "fd00::2", "last_reserved_ip.0"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600, name


def test_ipv6_names_are_compressed_like_go(tmp_path):
    add(tmp_path, "c1", conf={"ranges": [[{"subnet": "2001:db8:0:0:1::/120", "rangeStart": "2001:db8::1:0:0:10"}]]})
    assert "2001:db8::1:0:0:10" in files(tmp_path)


def test_round_robin_state_survives_processes(tmp_path):
    add(tmp_path, "a")
    add(tmp_path, "b")
    host_local.release(ipam(tmp_path), "net", "a", "eth0")
    assert add(tmp_path, "c") == ["10.1.2.4/29", "fd00::4/125"]


def test_go_written_files_are_understood(tmp_path):
    d = tmp_path / "net"
    d.mkdir()
    (d / "10.1.2.2").write_bytes(b"go1\r\neth0")
    (d / "10.1.2.3").write_bytes(b"legacy\n")
    (d / "last_reserved_ip.0").write_bytes(b"10.1.2.3")
    (d / "lock").write_bytes(b"")
    assert add(tmp_path, "py", conf={"ranges": [[{"subnet": "10.1.2.0/29"}]]}) == ["10.1.2.4/29"]
    with pytest.raises(CNIError) as exc:
        add(tmp_path, "go1", conf={"ranges": [[{"subnet": "10.1.2.0/29"}]]})
    assert "duplicate allocation is not allowed" in exc.value.msg
    host_local.release(ipam(tmp_path), "net", "legacy", "eth0")
    host_local.release(ipam(tmp_path), "net", "go1", "eth0")
    assert files(tmp_path) == ["10.1.2.4", "last_reserved_ip.0", "lock"]


def test_garbage_last_reserved_restarts_from_range_start(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "last_reserved_ip.0").write_bytes(b"")
    assert add(tmp_path, "a")[0] == "10.1.2.2/29"


def test_lock_is_held_for_the_whole_operation(tmp_path):
    store = DiskStore(str(tmp_path), "net")
    with store.locked():
        fd = os.open(str(tmp_path / "net" / "lock"), os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(str(tmp_path / "net" / "lock"), os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    os.close(fd)


def test_release_check_gc_do_not_create_the_directory(tmp_path):
    conf = ipam(tmp_path)
    assert host_local.release(conf, "net", "a", "eth0") == []
    assert host_local.gc(conf, "net", []) == []
    with pytest.raises(CNIError) as exc:
        host_local.check(conf, "net", "a", "eth0")
    assert exc.value.code == 3
    assert "host-local: Failed to find address added by container a" in exc.value.msg
    assert not (tmp_path / "net").exists()


def test_invalid_config_touches_nothing(tmp_path):
    with pytest.raises(InvalidConfig):
        add(tmp_path, "a", conf={"ranges": [[{"subnet": "10.1.2.5/24"}]]})
    with pytest.raises(InvalidConfig):
        add(tmp_path, "a", runtime_config={"ips": ["10.9.9.9"]})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("network", ["..", "../x", "a/b", "."])
def test_network_name_cannot_escape(tmp_path, network):
    for call in (lambda: host_local.allocate(ipam(tmp_path), network, "a", "eth0"),
                 lambda: host_local.release(ipam(tmp_path), network, "a", "eth0")):
        with pytest.raises(InvalidConfig):
            call()
    assert list(tmp_path.iterdir()) == []


def test_data_dir_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(IOFailure):
        host_local.allocate(ipam(tmp_path / "f"), "net", "a", "eth0")
    with pytest.raises(NotAvailable):
        host_local.status(ipam(tmp_path / "f"), "net")


def test_status_stays_ready_when_a_range_is_full(tmp_path):
    """A full pool fails the next ADD, not STATUS: a failing STATUS makes the node NotReady."""
    conf = ipam(tmp_path, ranges=[[{"subnet": "10.1.2.0/30"}]])
    host_local.status(conf, "net")
    host_local.allocate(conf, "net", "a", "eth0")
    host_local.status(conf, "net")
    with pytest.raises(CNIError, match="no IP addresses available in range set"):
        host_local.allocate(conf, "net", "b", "eth0")


# -- crash safety ----------------------------------------------------------------------------


def _crash_add(tmp_path, step, cid="crash"):
    code = (
        "import sys; from cni_flannel.ipam import host_local;"
        f"host_local.allocate({ipam(tmp_path)!r}, 'net', {cid!r}, 'eth0')"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), CNI_FLANNEL_CRASH_AT=step)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)


def test_crash_before_link_leaves_no_address_file(tmp_path):
    done = _crash_add(tmp_path, "host-local.reserve-tmp-written")
    assert done.returncode == -9
    names = files(tmp_path)
    assert not [n for n in names if n[0].isdigit() or ":" in n]  # no address is blocked
    assert any(n.startswith(TMP_PREFIX) for n in names)
    assert add(tmp_path, "next") == ["10.1.2.2/29", "fd00::2/125"]
    assert not any(n.startswith(TMP_PREFIX) for n in files(tmp_path))  # swept under the lock


def test_crash_after_link_leaves_a_complete_file(tmp_path):
    done = _crash_add(tmp_path, "host-local.reserved")
    assert done.returncode == -9
    assert (tmp_path / "net" / "10.1.2.2").read_bytes() == b"crash\r\neth0"
    assert not any(n.startswith(TMP_PREFIX) for n in files(tmp_path))
    host_local.release(ipam(tmp_path), "net", "crash", "eth0")
    assert "10.1.2.2" not in files(tmp_path)


def test_empty_address_file_is_reclaimed_by_del_of_anyone(tmp_path):
    d = tmp_path / "net"
    d.mkdir()
    (d / "10.1.2.2").write_bytes(b"")  # what a power loss under the Go plugin leaves
    (d / "10.1.2.3").write_bytes(b"  \r\n ")
    (d / "10.1.2.4").write_bytes(b"live\r\neth0")
    host_local.release(ipam(tmp_path), "net", "unrelated", "eth0")
    assert files(tmp_path) == ["10.1.2.4", "lock"]


def test_empty_address_file_is_reclaimed_by_gc(tmp_path):
    d = tmp_path / "net"
    d.mkdir()
    (d / "fd00::3").write_bytes(b"")
    (d / "stray-notes.txt").write_bytes(b"")  # not an address: left alone
    host_local.gc(ipam(tmp_path), "net", [("x", "eth0")])
    assert files(tmp_path) == ["lock", "stray-notes.txt"]


def test_gc_leaves_bookkeeping_and_valid(tmp_path):
    add(tmp_path, "keep")
    add(tmp_path, "gone")
    released = host_local.gc(ipam(tmp_path), "net", [("keep", "eth0")])
    assert sorted(released) == ["10.1.2.3", "fd00::3"]
    assert files(tmp_path) == ["10.1.2.2", "fd00::2", "last_reserved_ip.0", "last_reserved_ip.1", "lock"]


def test_gc_without_list_does_nothing(tmp_path):
    add(tmp_path, "a")
    assert host_local.gc(ipam(tmp_path), "net", None) == []
    assert "10.1.2.2" in files(tmp_path)


def test_resolv_conf_like_the_reference(tmp_path):
    rc = tmp_path / "resolv.conf"
    rc.write_text("# c\n; c\nnameserver 10.0.0.10\nnameserver  fd00::53 \nsearch a.local b.local\n"
                  "domain x.local\noptions ndots:5 edns0\nsearch c.local\nbogus\n")
    res = host_local.allocate(ipam(tmp_path, resolvConf=str(rc)), "net", "a", "eth0")
    assert res.dns.to_dict() == {"nameservers": ["10.0.0.10", "fd00::53"], "domain": "x.local",
                                 "search": ["a.local", "b.local", "c.local"], "options": ["ndots:5", "edns0"]}


def test_missing_resolv_conf_is_config_error_before_allocating(tmp_path):
    with pytest.raises(InvalidConfig) as exc:
        host_local.allocate(ipam(tmp_path, resolvConf=str(tmp_path / "nope")), "net", "a", "eth0")
    assert "nope" in exc.value.msg
    assert list(tmp_path.iterdir()) == []


def test_result_shape(tmp_path):
    res = host_local.allocate(ipam(tmp_path, routes=[{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]), "net", "a", "eth0")
    assert res.to_dict("1.0.0") == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.1.2.2/29", "gateway": "10.1.2.1"}, {"address": "fd00::2/125", "gateway": "fd00::1"}],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
        "dns": {},
    }
    json.dumps(res.to_dict("0.2.0"))


def test_a_planted_fifo_as_last_reserved_does_not_block_the_add(tmp_path):
    """A symlink (or a FIFO) in place of last_reserved_ip.0 is ignored, as a lost round-robin
    position is: open() would follow it and block forever on the FIFO."""
    d = tmp_path / "net"
    d.mkdir()
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "fifo", d / "last_reserved_ip.0")
    os.mkfifo(d / "last_reserved_ip.1")
    done = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                           "from tests.unit.test_ipam_disk import add; from pathlib import Path; "
                           "print(add(Path(sys.argv[2]), 'c1'))", str(REPO), str(tmp_path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "10.1.2.2/29" in done.stdout


def test_a_planted_lock_symlink_is_an_error_and_creates_nothing(tmp_path):
    d = tmp_path / "net"
    d.mkdir()
    os.symlink(tmp_path / "elsewhere", d / "lock")
    with pytest.raises(IOFailure, match="lock"):
        add(tmp_path, "c1")
    assert not (tmp_path / "elsewhere").exists()


def test_non_regular_entries_named_like_addresses_are_not_reservations(tmp_path):
    """A FIFO, a directory or a symlink under an address's name is not a reservation (read_regular
    gives None): never read or unlinked — DEL and GC leave it — and never handed out (link() fails
    on the existing name).  ADD in a child: a FIFO that blocked us would fail, not hang."""
    d = tmp_path / "net"
    d.mkdir()
    os.mkfifo(d / "10.1.2.2")
    (d / "10.1.2.3").mkdir()
    (tmp_path / "victim").write_bytes(b"")
    os.symlink(tmp_path / "victim", d / "10.1.2.4")
    done = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                           "from tests.unit.test_ipam_disk import add; from pathlib import Path; "
                           "print(add(Path(sys.argv[2]), 'c1', conf={'ranges': [[{'subnet': '10.1.2.0/29'}]]}))",
                           str(REPO), str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['10.1.2.5/29']"
    # in this process only now: had the child blocked on the FIFO, we would have failed above
    store = DiskStore(str(tmp_path), "net")
    with store.locked():
        assert [r.name for r in store.reservations()] == ["10.1.2.5"]
    host_local.release(ipam(tmp_path), "net", "someone-else", "eth0")  # reclaims empty leftovers only
    host_local.gc(ipam(tmp_path), "net", [("c1", "eth0")])
    assert files(tmp_path) == ["10.1.2.2", "10.1.2.3", "10.1.2.4", "10.1.2.5", "last_reserved_ip.0", "lock"]
    assert stat.S_ISFIFO((d / "10.1.2.2").lstat().st_mode) and (tmp_path / "victim").read_bytes() == b""


def test_an_address_file_that_cannot_be_read_is_held_and_never_reclaimed(tmp_path, monkeypatch):
    """Any other read error (EIO, EACCES...) keeps the address taken, and GC/DEL do not treat it as garbage."""
    from cni_flannel.ipam import disk

    d = tmp_path / "net"
    d.mkdir()
    (d / "10.1.2.2").write_bytes(b"owner\r\neth0")
    real = disk.read_regular

    def failing(path, limit, **kw):
        if path == "10.1.2.2":
            raise OSError(5, "Input/output error")
        return real(path, limit, **kw)

    monkeypatch.setattr(disk, "read_regular", failing)
    store = DiskStore(str(tmp_path), "net")
    with store.locked():
        assert [(r.name, r.owner, r.readable) for r in store.reservations()] == [("10.1.2.2", None, False)]
    assert add(tmp_path, "c1", conf={"ranges": [[{"subnet": "10.1.2.0/29"}]]}) == ["10.1.2.3/29"]
    host_local.gc(ipam(tmp_path), "net", [("c1", "eth0")])
    host_local.release(ipam(tmp_path), "net", "someone-else", "eth0")
    assert "10.1.2.2" in files(tmp_path)


def test_an_over_long_address_file_is_read_up_to_its_limit(tmp_path):
    """Only the first 4 KiB of an address file count (a planted huge file costs nothing)."""
    d = tmp_path / "net"
    d.mkdir()
    (d / "10.1.2.2").write_bytes(b"x" * 4096 + b"\r\neth0" + b"y" * (1 << 20))
    store = DiskStore(str(tmp_path), "net")
    with store.locked():
        assert [(r.name, r.owner) for r in store.reservations()] == [("10.1.2.2", ("x" * 4096, None))]
