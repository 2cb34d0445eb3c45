"""Pod IPs: one loopback address per pod, so that every pod can bind the same port.

Linux routes all of 127.0.0.0/8 to the loopback interface, so any address in it can be bound
without configuration. Pods get 127.1.0.0/16; the API server hands out Service ClusterIPs from
127.10.0.0/16 (modes.sandbox.defaulting.SERVICE_CIDR), and 127.0.0.1 stays the node's own
address (hostIP), so the three never overlap.
"""

from __future__ import annotations

import ipaddress

POD_CIDR = ipaddress.IPv4Network("127.1.0.0/16")
HOST_IP = "127.0.0.1"


class IPExhausted(RuntimeError):
    """Every address of the pod range is in use."""


class PodIPAllocator:
    """Hands out each address once; released addresses are reused last, to keep logs readable."""

    def __init__(self, cidr: str | ipaddress.IPv4Network = POD_CIDR) -> None:
        self.network = ipaddress.IPv4Network(cidr)
        self._owners: dict[str, str] = {}  # ip -> pod uid
        self._by_owner: dict[str, str] = {}
        self._next = 1

    def allocate(self, owner: str, wanted: str | None = None) -> str:
        """The address of ``owner`` (a pod uid): its own, else ``wanted`` if free, else the next."""
        if owner in self._by_owner:
            return self._by_owner[owner]
        if wanted and self._free(wanted):
            return self._take(owner, wanted)
        hosts = self.network.num_addresses - 2
        for _ in range(hosts):
            ip = str(self.network.network_address + self._next)
            self._next = self._next % hosts + 1
            if self._free(ip):
                return self._take(owner, ip)
        raise IPExhausted(f"pod IP range {self.network} exhausted")

    def release(self, owner: str) -> None:
        ip = self._by_owner.pop(owner, None)
        if ip is not None:
            self._owners.pop(ip, None)

    def owner_of(self, ip: str) -> str | None:
        return self._owners.get(ip)

    def _free(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        usable = address not in (self.network.network_address, self.network.broadcast_address)
        return address in self.network and usable and ip not in self._owners

    def _take(self, owner: str, ip: str) -> str:
        self._owners[ip] = owner
        self._by_owner[owner] = ip
        return ip
