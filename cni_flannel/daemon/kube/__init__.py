"""flanneld --kube-subnet-mgr: leases are Node objects (see manager.py; client.py is the only
module that talks to the API server, nodes.py the pure part)."""

from .client import Connection
from .manager import KubeOptions, KubeSubnetManager, make_kube_manager

__all__ = ["Connection", "KubeOptions", "KubeSubnetManager", "make_kube_manager"]
