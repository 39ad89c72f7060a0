"""flannel's saved delegate configs (<dataDir>/<containerID>) when something else stands at the
name: a FIFO, a symlink (to a FIFO, to /dev/zero, to a file elsewhere), a directory, a file over
MAX_SIZE.  load() must neither block, nor follow, nor read without bound: it answers None (DEL
then rebuilds the config and still releases the address) and logs what it found.  The FIFO and
/dev/zero cases run in a child with a deadline and a 1 GiB address-space cap, so a regression (a
blocking open, an endless read) fails the test instead of hanging it or starving the machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cni_flannel.cni.errors import InvalidConfig, IOFailure
from cni_flannel.flannel import saved_conf

REPO = Path(__file__).resolve().parents[2]
LOAD_IN_CHILD = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
                 "from cni_flannel.flannel import saved_conf; print(repr(saved_conf.load(sys.argv[1], sys.argv[2])))")


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cni.log"
    monkeypatch.setenv("CNI_FLANNEL_LOG", str(path))
    return path


def load_in_child(data_dir: Path, cid: str, log: Path) -> str:
    try:
        done = subprocess.run([sys.executable, "-c", LOAD_IN_CHILD, str(data_dir), cid], cwd=REPO,
                              capture_output=True, text=True, timeout=20,
                              env={**os.environ, "PYTHONPATH": str(REPO), "CNI_FLANNEL_LOG": str(log)})
    except subprocess.TimeoutExpired:
        pytest.fail(f"saved_conf.load({data_dir}, {cid}) blocked")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_a_fifo_is_ignored_without_blocking(tmp_path: Path, log: Path) -> None:
    os.mkfifo(tmp_path / "c1")
    assert load_in_child(tmp_path, "c1", log) == "None"
    assert f"saved config {tmp_path}/c1 is a FIFO" in log.read_text()
    assert (tmp_path / "c1").is_fifo()


def test_a_symlink_to_a_fifo_is_ignored_without_blocking(tmp_path: Path, log: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "c1").symlink_to(tmp_path / "fifo")
    assert load_in_child(tmp_path, "c1", log) == "None"
    assert f"saved config {tmp_path}/c1 is a symlink" in log.read_text()


def test_a_symlink_to_dev_zero_is_not_read(tmp_path: Path, log: Path) -> None:
    (tmp_path / "c1").symlink_to("/dev/zero")
    assert load_in_child(tmp_path, "c1", log) == "None"
    assert "is a symlink" in log.read_text()


def test_a_symlink_to_a_regular_file_is_not_followed(tmp_path: Path, log: Path) -> None:
    """Even a link to a valid-looking config: flannel writes its files itself, never a link."""
    (tmp_path / "elsewhere").write_bytes(b'{"type":"bridge"}')
    (tmp_path / "c1").symlink_to(tmp_path / "elsewhere")
    assert saved_conf.load(str(tmp_path), "c1") is None
    assert "is a symlink" in log.read_text()


def test_a_directory_is_ignored(tmp_path: Path, log: Path) -> None:
    (tmp_path / "c1").mkdir()
    assert saved_conf.load(str(tmp_path), "c1") is None
    assert "is a directory" in log.read_text()


def test_content_over_the_limit_is_ignored_and_the_limit_itself_is_read(tmp_path: Path, log: Path) -> None:
    (tmp_path / "big").write_bytes(b" " * (saved_conf.MAX_SIZE + 1))
    assert saved_conf.load(str(tmp_path), "big") is None
    assert f"larger than {saved_conf.MAX_SIZE} bytes" in log.read_text()
    at_limit = b'{"type":"bridge"}'.ljust(saved_conf.MAX_SIZE)
    (tmp_path / "fits").write_bytes(at_limit)
    assert saved_conf.load(str(tmp_path), "fits") == at_limit


def test_missing_is_none_and_not_logged(tmp_path: Path, log: Path) -> None:
    assert saved_conf.load(str(tmp_path), "c1") is None
    assert saved_conf.load(str(tmp_path / "no-dir"), "c1") is None
    assert not log.exists() or log.read_text() == ""


def test_other_read_errors_are_an_io_failure(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(IOFailure) as info:  # ENOTDIR: dataDir is a file
        saved_conf.load(str(tmp_path / "file"), "c1")
    assert info.value.code == 5 and "failed to read saved delegate config" in info.value.msg


def test_save_refuses_what_load_would_not_take_back(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig):
        saved_conf.save(str(tmp_path), "c1", b" " * (saved_conf.MAX_SIZE + 1))
    assert list(tmp_path.iterdir()) == []


def test_remove_takes_the_planted_name_not_its_target(tmp_path: Path, log: Path) -> None:
    """DEL/GC unlink the container's name whatever stands there — never what a link points at;
    a planted directory is left (and logged) instead of failing every DEL and GC."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "victim").write_bytes(b"secret")
    d = tmp_path / "flannel"
    d.mkdir()
    os.mkfifo(d / "f1")
    (d / "l1").symlink_to(tmp_path / "fifo")
    (d / "l2").symlink_to("/dev/zero")
    (d / "l3").symlink_to(tmp_path / "victim")
    (d / "dir").mkdir()
    (d / "dir" / "inside").write_bytes(b"x")
    assert saved_conf.container_ids(str(d)) == ["dir", "f1", "l1", "l2", "l3"]
    for cid in ("f1", "l1", "l2", "l3", "dir"):
        saved_conf.remove(str(d), cid)
    assert sorted(p.name for p in d.iterdir()) == ["dir"]
    assert (d / "dir" / "inside").read_bytes() == b"x"
    assert (tmp_path / "fifo").is_fifo() and (tmp_path / "victim").read_bytes() == b"secret"
    assert f"{d}/dir is a directory, not a saved config; leaving it" in log.read_text()
