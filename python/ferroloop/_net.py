"""Networking for ``ferroloop.Loop``: sockets, DNS, TCP and Unix connections and servers.

``NetworkMixin`` is a base class of ``Loop``; it follows asyncio's ``base_events.py`` and
``selector_events.py`` / ``unix_events.py`` method by method. Methods not implemented yet raise
NotImplementedError naming the issue that brings them (the README's compatibility table).
"""

from __future__ import annotations

__all__ = ["NetworkMixin"]

_NETWORKING_ISSUE = "networking (issue 3)"
_TRANSPORTS_ISSUE = "UDP, pipes, subprocesses and TLS (issue 4)"

# Methods of asyncio.AbstractEventLoop that later work provides; until then they raise
# NotImplementedError naming what is missing (the README's compatibility table lists them).
_NOT_YET = {
    "create_connection": _NETWORKING_ISSUE,
    "create_server": _NETWORKING_ISSUE,
    "create_unix_connection": _NETWORKING_ISSUE,
    "create_unix_server": _NETWORKING_ISSUE,
    "connect_accepted_socket": _NETWORKING_ISSUE,
    "sendfile": _NETWORKING_ISSUE,
    "sock_recv": _NETWORKING_ISSUE,
    "sock_recv_into": _NETWORKING_ISSUE,
    "sock_sendall": _NETWORKING_ISSUE,
    "sock_connect": _NETWORKING_ISSUE,
    "sock_accept": _NETWORKING_ISSUE,
    "sock_sendfile": _NETWORKING_ISSUE,
    "getaddrinfo": _NETWORKING_ISSUE,
    "getnameinfo": _NETWORKING_ISSUE,
    "start_tls": _TRANSPORTS_ISSUE,
    "create_datagram_endpoint": _TRANSPORTS_ISSUE,
    "sock_recvfrom": _TRANSPORTS_ISSUE,
    "sock_recvfrom_into": _TRANSPORTS_ISSUE,
    "sock_sendto": _TRANSPORTS_ISSUE,
    "connect_read_pipe": _TRANSPORTS_ISSUE,
    "connect_write_pipe": _TRANSPORTS_ISSUE,
    "subprocess_exec": _TRANSPORTS_ISSUE,
    "subprocess_shell": _TRANSPORTS_ISSUE,
}


def _not_yet(name: str, where: str):
    async def method(self, *args, **kwargs):
        raise NotImplementedError(
            f"ferroloop does not implement {name}() yet: it comes with {where}"
        )

    method.__name__ = method.__qualname__ = name
    return method


class NetworkMixin:
    """The networking half of asyncio.AbstractEventLoop."""


for _name, _where in _NOT_YET.items():
    setattr(NetworkMixin, _name, _not_yet(_name, _where))
del _name, _where
