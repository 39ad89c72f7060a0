"""State files planted by a hostile or buggy actor, read back by the frozen binaries through
atomicfile.read_regular: host-local's last_reserved_ip and address files (a symlink to a FIFO, a
FIFO, a link to /dev/zero, a directory) and flanneld's /run/flannel/subnet.env (a symlink to a
FIFO).  Nothing may block (every run has a deadline that fails the test), be followed, be read
or be removed; the planted objects stay what they were."""
from __future__ import annotations

from tests.harness.etcd import etcd_factory  # noqa: F401 - fixture
from tests.harness.exec import run_plugin
from tests.integration.flannel_node import flannel_node
from tests.integration.flanneld_lab import EtcdNode, Flanneld, subnet_env

DATA = "/var/lib/cni/networks/hl"
CONF = {"cniVersion": "1.0.0", "name": "hl", "type": "host-local",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.247.0.0/24"}]]}}


def kind(node, path: str) -> str:
    """What ``path`` itself is (a link is not followed): 'fifo', 'symbolic link', 'regular file'..."""
    return node.run(["stat", "-c", "%F", path]).stdout.strip()


def test_planted_fifos_and_links_in_the_host_local_data_dir(node, pod) -> None:
    p = pod()
    node.run(["sh", "-ec", f"mkdir -p {DATA} /run/flannel; mkfifo /run/flannel/fifo; "
                           f"ln -s /run/flannel/fifo {DATA}/last_reserved_ip.0; mkfifo {DATA}/10.247.0.2; "
                           f"ln -s /dev/zero {DATA}/10.247.0.3; mkdir {DATA}/10.247.0.4"])
    done = run_plugin("host-local", "ADD", CONF, node=node, netns=p.path, container_id="planted", timeout=30)
    assert done.rc == 0, (done.stdout, done.stderr)
    assert done.json["ips"][0]["address"] == "10.247.0.5/24"  # none of the planted names is handed out
    # the round-robin position was lost (not read through the link) and is written anew, not through it
    assert kind(node, f"{DATA}/last_reserved_ip.0") == "regular file"
    assert node.read_file(f"{DATA}/last_reserved_ip.0") == "10.247.0.5"
    assert kind(node, "/run/flannel/fifo") == "fifo"
    # DEL (which reclaims empty leftovers) must not take the planted FIFO for one
    done = run_plugin("host-local", "DEL", CONF, node=node, netns=p.path, container_id="planted", timeout=30)
    assert done.rc == 0, (done.stdout, done.stderr)
    assert [kind(node, f"{DATA}/10.247.0.{i}") for i in (2, 3, 4)] == ["fifo", "symbolic link", "directory"]
    assert not node.exists(f"{DATA}/10.247.0.5")


def test_flanneld_replaces_a_subnet_env_symlink_to_a_fifo(make_node, etcd_factory) -> None:
    etcd = EtcdNode(make_node, etcd_factory)
    node = flannel_node(make_node("n1", underlay=True), subnet_env=None)
    node.run(["sh", "-ec", "mkdir -p /run/flannel; mkfifo /run/flannel/fifo; ln -s fifo /run/flannel/subnet.env"])
    daemon = Flanneld(node, etcd.endpoint).start().ready()
    assert kind(node, "/run/flannel/subnet.env") == "regular file"
    assert subnet_env(node)["FLANNEL_SUBNET"].startswith("10.244.")
    assert kind(node, "/run/flannel/fifo") == "fifo"
    assert "Traceback" not in daemon.log()
