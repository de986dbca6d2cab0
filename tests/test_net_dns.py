"""loop.getaddrinfo / loop.getnameinfo: same answers as the socket module, never blocking the
loop; ferroloop answers numeric hosts without the resolver (and so without the executor)."""

import asyncio
import concurrent.futures
import socket

import pytest
from net_helpers import ipv6_loopback_available, run

pytestmark = pytest.mark.timeout(60)


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """Records what the loop runs in its default executor."""

    def __init__(self):
        super().__init__(max_workers=1)
        self.calls = []

    def submit(self, fn, /, *args, **kwargs):
        self.calls.append(getattr(fn, "__name__", repr(fn)))
        return super().submit(fn, *args, **kwargs)


def with_executor(loop, coro_fn):
    executor = CountingExecutor()
    loop.set_default_executor(executor)

    async def main():
        return await coro_fn(), list(executor.calls)

    try:
        return run(loop, main())
    finally:
        executor.shutdown(wait=True)


NUMERIC = [
    ("127.0.0.1", 80, dict(type=socket.SOCK_STREAM)),
    ("127.0.0.1", "80", dict(family=socket.AF_INET, type=socket.SOCK_DGRAM)),
    ("127.0.0.1", 0, dict()),
    (None, 8080, dict(flags=socket.AI_PASSIVE, type=socket.SOCK_STREAM)),
    (b"10.1.2.3", 443, dict(proto=socket.IPPROTO_TCP)),
    ("::1", 80, dict(type=socket.SOCK_STREAM)),
    ("fe80::1%1", 80, dict(family=socket.AF_INET6, type=socket.SOCK_STREAM)),
]


@pytest.mark.parametrize("host, port, kw", NUMERIC, ids=[repr(h) for h, _, _ in NUMERIC])
def test_getaddrinfo_numeric_matches_the_socket_module(loop, flavor, host, port, kw):
    if host and ":" in str(host) and not socket.has_ipv6:
        pytest.skip("no IPv6 support in this Python")
    expected = socket.getaddrinfo(host, port, **kw)
    got, calls = with_executor(loop, lambda: loop.getaddrinfo(host, port, **kw))
    assert got == expected
    if flavor.name == "ferroloop":
        # A numeric host needs no resolver: answered on the loop's thread, no executor hop.
        assert calls == []
    else:
        assert calls != []


def test_getaddrinfo_of_a_name_goes_to_the_executor(loop):
    expected = socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    got, calls = with_executor(
        loop, lambda: loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    )
    assert got == expected
    assert calls != []


def test_getaddrinfo_errors_match_the_socket_module(loop):
    async def main():
        errors = []
        for args, kw in [
            (("localhost", 80), dict(flags=socket.AI_NUMERICHOST)),
            (("127.0.0.1", "no-such-service-xyz"), dict()),
            (("127.0.0.1", 80), dict(family=12345)),
            (("127.0.0.1", object()), dict()),
        ]:
            try:
                socket.getaddrinfo(*args, **kw)
            except Exception as exc:  # noqa: BLE001 - comparing whatever it raises
                want = (type(exc), exc.args)
            else:
                raise AssertionError(f"getaddrinfo{args} did not fail")
            with pytest.raises(Exception) as info:  # noqa: PT011
                await loop.getaddrinfo(*args, **kw)
            errors.append((want, (type(info.value), info.value.args)))
        return errors

    for want, got in run(loop, main()):
        assert got == want


def test_getaddrinfo_in_debug_mode(loop):
    async def main():
        loop.set_debug(True)
        try:
            return await loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
        finally:
            loop.set_debug(False)

    assert run(loop, main()) == socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)


def test_many_concurrent_lookups(loop):
    async def main():
        hosts = [f"127.0.0.{i}" for i in range(1, 200)] + ["localhost"] * 5
        results = await asyncio.gather(
            *(loop.getaddrinfo(h, 80, type=socket.SOCK_STREAM) for h in hosts)
        )
        return hosts, results

    hosts, results = run(loop, main())
    for host, res in zip(hosts, results, strict=True):
        assert res == socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM)


def test_getnameinfo(loop):
    flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
    cases = [(("127.0.0.1", 80), flags), (("127.0.0.1", 22), 0)]
    if ipv6_loopback_available():
        cases.append((("::1", 8080), flags))

    async def main():
        return [await loop.getnameinfo(addr, fl) for addr, fl in cases]

    assert run(loop, main()) == [socket.getnameinfo(addr, fl) for addr, fl in cases]


def test_getaddrinfo_of_a_numeric_host_on_a_closed_loop(loop):
    # As run_in_executor() on a closed loop, even though no executor is needed.
    loop.close()
    coro = loop.getaddrinfo("127.0.0.1", 80)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        coro.send(None)


def test_getaddrinfo_of_a_numeric_host_after_the_executor_shut_down(loop):
    async def main():
        await loop.shutdown_default_executor()
        with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
            await loop.getaddrinfo("127.0.0.1", 80)

    run(loop, main())


@pytest.mark.parametrize("flags", [1.5, "1", None, -(2**63), 2**31])
def test_getaddrinfo_odd_flags(loop, flags):
    # socket.getaddrinfo() says what is wrong with them, whichever thread calls it.
    with pytest.raises((TypeError, OverflowError)) as want:
        socket.getaddrinfo("127.0.0.1", 80, 0, 0, 0, flags)

    async def main():
        with pytest.raises(want.type) as got:
            await loop.getaddrinfo("127.0.0.1", 80, flags=flags)
        return got.value.args

    assert run(loop, main()) == want.value.args
