"""flanneld's etcd v3 subnet manager.

    from cni_flannel.daemon.etcd import EtcdOptions, EtcdSubnetManager
    manager = EtcdSubnetManager(EtcdOptions(endpoints=["https://10.0.0.1:2379"], cafile=..., ...))

Modules: ``options`` (the --etcd-* flags, checked), ``client`` (the one boundary to etcd3gw and
etcd's JSON gateway: retries, auth, error translation, watch streams), ``records`` (pure:
gateway JSON -> key-values, leases, events, batches; backoff), ``watch`` (Snapshot + events,
resume, re-list), ``manager`` (EtcdSubnetManager).
"""

from .manager import EtcdSubnetManager
from .options import Clock, EtcdOptions

__all__ = ["Clock", "EtcdOptions", "EtcdSubnetManager"]
