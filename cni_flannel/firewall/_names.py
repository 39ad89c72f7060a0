"""Chain names and comments exactly as the reference plugins make them.

containernetworking/plugins pkg/utils: a chain name is ``CNI-`` + an optional
prefix + the hex sha512 of (network name + container ID), cut to 28
characters (iptables' limit). So ``CNI-`` gets 24 hex digits and portmap's
``CNI-DN-`` 21.
"""

from __future__ import annotations

import hashlib

from ._model import check_chain_name, check_comment

MAX_CHAIN_LENGTH = 28
CHAIN_PREFIX = "CNI-"


def hash_with_prefix(length: int, prefix: str, to_hash: str) -> str:
    if len(prefix) >= length or length > 128:
        raise ValueError(f"invalid length {length} for prefix {prefix!r}")
    return (prefix + hashlib.sha512(to_hash.encode()).hexdigest())[:length]


def chain_name(network: str, container_id: str, prefix: str = "") -> str:
    """``CNI-<prefix><hash>``, 28 characters: chain_name("test", "1234") == "CNI-2bbe0c48b91a7d1b8a6753a8"."""
    return check_chain_name(hash_with_prefix(MAX_CHAIN_LENGTH, CHAIN_PREFIX + prefix, network + container_id))


def dnat_chain_name(network: str, container_id: str) -> str:
    """portmap's per-container chain: ``CNI-DN-`` + 21 hex digits."""
    return chain_name(network, container_id, "DN-")


def comment_for(network: str, container_id: str) -> str:
    """bridge/ipmasq comment: ``name: "<net>" id: "<cid>"``."""
    return check_comment(f'name: "{network}" id: "{container_id}"')


def dnat_comment_for(network: str, container_id: str) -> str:
    """portmap's comment on its entry rules: ``dnat name: "<net>" id: "<cid>"``."""
    return check_comment(f'dnat name: "{network}" id: "{container_id}"'[:255])


def nft_comment_for(network: str, ifname: str, container_id: str) -> str:
    """ipmasq's nftables comment: ``<hash(net)>-<hash(if:id)>, net: N, if: I, id: C``
    (quotes dropped, at most 128 characters); its first 16 characters find a network's rules."""
    instance = hash_with_prefix(16, "", network) + "-" + hash_with_prefix(16, "", f"{ifname}:{container_id}")
    strip = {ord('"'): None}
    text = f"{instance}, net: {network.translate(strip)}, if: {ifname.translate(strip)}, id: {container_id.translate(strip)}"
    return check_comment(text[:128])
