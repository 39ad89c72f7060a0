"""cni-flannel: flannel's node-side networking for Kubernetes, in Python."""

__version__ = "0.1.0"
