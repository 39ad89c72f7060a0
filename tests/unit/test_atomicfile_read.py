"""read_regular: the one way state files are read back (host-local's address and last_reserved
files, subnet.env) — a planted symlink, FIFO or device must neither be followed, nor block, nor
be read without bound.  The FIFO cases run in a child with a deadline, so a regression (a
blocking open) fails the test instead of hanging it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cni_flannel.atomicfile import read_regular

REPO = Path(__file__).resolve().parents[2]
READ_IN_CHILD = "import sys; from cni_flannel.atomicfile import read_regular; print(repr(read_regular(sys.argv[1], 64)))"


def read_in_child(path: Path) -> str:
    try:
        done = subprocess.run([sys.executable, "-c", READ_IN_CHILD, str(path)], cwd=REPO, capture_output=True,
                              text=True, timeout=20, env={**os.environ, "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired:
        pytest.fail(f"read_regular({path}) blocked")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_a_regular_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"c1\r\neth0")
    assert read_regular(str(tmp_path / "f"), 4096) == b"c1\r\neth0"
    assert read_regular(str(tmp_path / "empty"), 10) is None
    (tmp_path / "empty").write_bytes(b"")
    assert read_regular(str(tmp_path / "empty"), 10) == b""


def test_a_missing_file_is_none(tmp_path: Path) -> None:
    assert read_regular(str(tmp_path / "nope"), 10) is None


def test_content_longer_than_the_limit_is_cut_at_the_limit(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40  # 10 KiB
    (tmp_path / "big").write_bytes(data)
    assert read_regular(str(tmp_path / "big"), 100) == data[:100]
    assert read_regular(str(tmp_path / "big"), len(data) + 1) == data


def test_a_symlink_to_a_file_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "victim").write_bytes(b"secret")
    (tmp_path / "link").symlink_to(tmp_path / "victim")
    assert read_regular(str(tmp_path / "link"), 4096) is None
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert read_regular(str(tmp_path / "dangling"), 4096) is None


def test_a_symlink_to_dev_zero_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "zero").symlink_to("/dev/zero")
    assert read_regular(str(tmp_path / "zero"), 4096) is None


def test_a_character_device_is_not_read() -> None:
    # /dev/zero itself (no link in the way): only the S_ISREG check stands between us and its zeros
    assert read_regular("/dev/zero", 4096) is None


def test_a_fifo_neither_blocks_nor_counts(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    assert read_in_child(tmp_path / "fifo") == "None"


def test_a_symlink_to_a_fifo_neither_blocks_nor_counts(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to(tmp_path / "fifo")
    assert read_in_child(tmp_path / "link") == "None"


def test_a_directory_and_a_socket_are_none(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    assert read_regular(str(tmp_path / "dir"), 10) is None
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "sock"))
        assert read_regular(str(tmp_path / "sock"), 10) is None
    finally:
        sock.close()


def test_dir_fd_reads_a_name_relative_to_the_directory(tmp_path: Path) -> None:
    (tmp_path / "10.1.2.2").write_bytes(b"c1\r\neth0")
    (tmp_path / "link").symlink_to(tmp_path / "10.1.2.2")
    dfd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert read_regular("10.1.2.2", 4096, dir_fd=dfd) == b"c1\r\neth0"
        assert read_regular("link", 4096, dir_fd=dfd) is None
        assert read_regular("gone", 4096, dir_fd=dfd) is None
    finally:
        os.close(dfd)


def test_mode_must_match_exactly_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    path.write_bytes(b"FLANNEL_MTU=1450\n")
    path.chmod(0o644)
    assert read_regular(str(path), 100, mode=0o644) == b"FLANNEL_MTU=1450\n"
    path.chmod(0o600)
    assert read_regular(str(path), 100, mode=0o644) is None
    assert read_regular(str(path), 100) == b"FLANNEL_MTU=1450\n"


def test_other_errors_are_raised_not_hidden(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        read_regular(str(tmp_path / ("x" * 5000)), 10)  # ENAMETOOLONG: the caller decides what it means
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        read_regular(str(tmp_path / "file" / "below"), 10)
