"""The node daemon (flanneld's job): net-conf.json -> subnet lease -> subnet.env, the backends
(vxlan, host-gw, udp) that route between nodes, and the masquerade/forward rules.

Modules: ``netconf`` (net-conf.json), ``subnets`` (lease math), ``lease`` (etcd/kube lease
formats), ``mtu``, ``subnet_file`` (subnet.env writer), ``backends/`` (vxlan, host_gw),
``masq`` (FLANNEL-POSTRTG / FLANNEL-FWD rules).  Subnet managers (etcd v3, Kubernetes) and the
main loop are not written yet.
"""
