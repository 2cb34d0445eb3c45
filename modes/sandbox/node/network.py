"""Where pods live on the network: loopback addresses (builtin) or a network namespace (real).

With the builtin API server every pod gets a 127.x address and Services a 127.x ClusterIP:
Linux routes all of 127.0.0.0/8 to the loopback interface, so anything can bind them. A real
kube-apiserver refuses loopback addresses in Endpoints and EndpointSlices (CVE-2021-25737), so
with the real control plane pods and ClusterIPs take addresses of a private range that exists
only inside a network namespace the sandbox creates: its loopback interface holds the whole
range as a local route, the same trick that makes 127.0.0.0/8 work. Pods run inside it; the
node's own parts (kube-proxy listeners, port-forward and probe dials) stay in this process and
make their sockets there, because a socket belongs to the namespace it was created in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import ipaddress
import os
import socket
from typing import Any, Protocol

HOST_IP = "127.0.0.1"
CLONE_NEWNET = 0x40000000


class PodNetwork(Protocol):
    """How the node reaches pod and Service addresses, and where pod processes start."""

    host_ip: str  # the node's address as pods see it (status.hostIP)
    netns: str | None  # the namespace file pod processes join, or None for this one

    async def listen(self, host: str, port: int) -> socket.socket:
        """A listening TCP socket on host:port in the pod network (raises OSError)."""
        ...

    async def open_connection(
        self, host: str, port: int, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """asyncio.open_connection to an address of the pod network."""
        ...


def tcp_socket() -> socket.socket:
    """An IPv4 TCP socket that asyncio will give TCP_NODELAY, as it gives the sockets it makes.

    asyncio turns Nagle's algorithm off only for sockets whose ``proto`` is IPPROTO_TCP, and
    ``socket.socket(AF_INET, SOCK_STREAM)`` has proto 0 (so have the connections a listener of
    proto 0 accepts). With Nagle on, a relay's small writes (a tunnel frame's header, then its
    data) wait for the peer's delayed ACK: about 40 ms per request through the real control
    plane's pod network, where every node socket is made here.
    """
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)


def _listening(host: str, port: int) -> socket.socket:
    sock = tcp_socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class LoopbackNetwork:
    """Pods on 127.x addresses of this machine's own network (the builtin control plane)."""

    host_ip = HOST_IP
    netns: str | None = None

    async def listen(self, host: str, port: int) -> socket.socket:
        return _listening(host, port)

    async def open_connection(
        self, host: str, port: int, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(host, port, **kwargs)


class NamespaceNetwork:
    """Pods inside the network namespace at ``path`` (``/run/netns/NAME``).

    One thread of this process joins the namespace for good; every socket the node needs there
    is created on that thread and then used from the event loop like any other.
    """

    def __init__(self, path: str, host_ip: str) -> None:
        self.netns: str | None = path
        self.host_ip = host_ip
        self._thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="netns", initializer=self._enter)

    def _enter(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        assert self.netns is not None
        fd = os.open(self.netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"cannot join network namespace {self.netns}")
        finally:
            os.close(fd)

    async def _in_namespace(self, make: Any) -> socket.socket:
        loop = asyncio.get_running_loop()
        sock: socket.socket = await loop.run_in_executor(self._thread, make)
        return sock

    async def listen(self, host: str, port: int) -> socket.socket:
        return await self._in_namespace(lambda: _listening(host, port))

    async def open_connection(
        self, host: str, port: int, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        def make() -> socket.socket:
            sock = tcp_socket()
            sock.setblocking(False)
            return sock

        if ipaddress.ip_address(host).is_loopback:
            # The pod network has no loopback of its own worth reaching: 127.x is this
            # machine, where hostNetwork pods live (their podIP is the node's address).
            sock = make()
        else:
            sock = await self._in_namespace(make)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        if kwargs.get("ssl") and "server_hostname" not in kwargs:
            kwargs["server_hostname"] = host
        return await asyncio.open_connection(sock=sock, **kwargs)

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)


# One sandbox process runs one node, so which network its pods are on is a property of the
# process, set once when the node starts; the proxy, the probes, port-forward and the
# container runtime read it here instead of having it threaded through every constructor.
_active: PodNetwork = LoopbackNetwork()


def use(network: PodNetwork) -> None:
    global _active
    _active = network


def active() -> PodNetwork:
    return _active
