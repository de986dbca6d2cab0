"""run_in_executor, set_default_executor, shutdown_default_executor."""

import asyncio
import concurrent.futures
import sys
import threading
import warnings

import pytest

pytestmark = pytest.mark.timeout(15)


def test_default_executor_result(loop):
    main_thread = threading.get_ident()

    def work(a, b):
        return a + b, threading.get_ident()

    async def main():
        return await loop.run_in_executor(None, work, 2, 3)

    result, tid = loop.run_until_complete(main())
    assert result == 5
    assert tid != main_thread


def test_run_in_executor_returns_future(loop):
    fut = loop.run_in_executor(None, int, "7")
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    assert loop.run_until_complete(fut) == 7


def test_default_executor_exception(loop):
    def fail():
        raise ZeroDivisionError("in thread")

    with pytest.raises(ZeroDivisionError, match="in thread"):
        loop.run_until_complete(loop.run_in_executor(None, fail))


def test_default_executor_is_reused(loop):
    async def main():
        return [await loop.run_in_executor(None, threading.current_thread) for _ in range(5)]

    threads = loop.run_until_complete(main())
    # All jobs ran on the one default pool: every worker name shares its prefix.
    prefixes = {t.name.rsplit("_", 1)[0] for t in threads}
    assert len(prefixes) == 1


def test_many_concurrent_executor_jobs(loop):
    async def main():
        futs = [loop.run_in_executor(None, pow, i, 2) for i in range(200)]
        return await asyncio.gather(*futs)

    assert loop.run_until_complete(main()) == [i * i for i in range(200)]


def test_custom_executor(loop):
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="custompool") as ex:

        async def main():
            return await loop.run_in_executor(ex, lambda: threading.current_thread().name)

        name = loop.run_until_complete(main())
    assert name.startswith("custompool")


def test_custom_executor_exception(loop):
    def fail():
        raise KeyError("k")

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        with pytest.raises(KeyError):
            loop.run_until_complete(loop.run_in_executor(ex, fail))


def test_set_default_executor(loop):
    ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mydefault")
    try:
        loop.set_default_executor(ex)

        async def main():
            return await loop.run_in_executor(None, lambda: threading.current_thread().name)

        assert loop.run_until_complete(main()).startswith("mydefault")
    finally:
        ex.shutdown(wait=True)


@pytest.mark.parametrize(
    "executor_factory",
    [
        lambda: concurrent.futures.ProcessPoolExecutor(1),
        lambda: type("MyExecutor", (concurrent.futures.Executor,), {})(),
        lambda: object(),
    ],
    ids=["process-pool", "executor-subclass", "object"],
)
def test_set_default_executor_requires_thread_pool(loop, executor_factory):
    # Python 3.11 raises TypeError (the 3.8-3.10 DeprecationWarning became an error).
    ex = executor_factory()
    try:
        with pytest.raises(TypeError, match="executor must be ThreadPoolExecutor"):
            loop.set_default_executor(ex)
    finally:
        if isinstance(ex, concurrent.futures.Executor):
            ex.shutdown(wait=True)


def test_shutdown_default_executor(loop):
    seen = []

    async def main():
        seen.append(await loop.run_in_executor(None, threading.current_thread))
        await loop.shutdown_default_executor()

    loop.run_until_complete(main())
    worker = seen[0]
    assert not worker.is_alive()  # the pool was joined
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, print)


def test_shutdown_default_executor_waits_for_jobs(loop):
    finished = []

    def slow():
        threading.Event().wait(0.2)
        finished.append(True)
        return "finished"

    async def main():
        fut = loop.run_in_executor(None, slow)
        await loop.shutdown_default_executor()
        # shutdown_default_executor() joins the pool, so the job has completed.
        assert finished == [True]
        return await fut

    assert loop.run_until_complete(main()) == "finished"


def test_shutdown_default_executor_without_executor(loop):
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, print)


def test_custom_executor_still_allowed_after_default_shutdown(loop):
    loop.run_until_complete(loop.shutdown_default_executor())
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        assert loop.run_until_complete(loop.run_in_executor(ex, abs, -3)) == 3


def test_to_thread(loop):
    async def main():
        return await asyncio.to_thread(sorted, [3, 1, 2])

    assert loop.run_until_complete(main()) == [1, 2, 3]


def test_close_shuts_down_default_executor(loop):
    seen = []

    async def main():
        seen.append(await loop.run_in_executor(None, threading.current_thread))

    loop.run_until_complete(main())
    loop.close()
    seen[0].join(timeout=5)
    assert not seen[0].is_alive()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12 added timeout=")
def test_shutdown_default_executor_takes_no_argument_before_3_12(loop):
    with pytest.raises(TypeError, match=r"takes 1 positional argument but 2 were given$"):
        loop.shutdown_default_executor(1)
    with pytest.raises(TypeError, match=r"got an unexpected keyword argument 'timeout'$"):
        loop.shutdown_default_executor(timeout=1)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.12 added timeout=")
def test_shutdown_default_executor_takes_a_timeout_from_3_12(loop):
    with pytest.raises(TypeError, match=r"takes from 1 to 2 positional arguments but 3 were"):
        loop.shutdown_default_executor(1, 2)
    loop.run_until_complete(loop.shutdown_default_executor(timeout=1))
    loop.run_until_complete(loop.shutdown_default_executor(1))


# 3.12.1's asyncio waited for the executor whatever the timeout (gh-111358, fixed in 3.13).
@pytest.mark.skipif(sys.version_info < (3, 13), reason="the timeout bounds the wait from 3.13")
def test_shutdown_default_executor_timeout_warns_from_the_awaiting_code(loop):
    release = threading.Event()
    joined = []

    async def main():
        worker = loop.run_in_executor(None, release.wait, 5)
        await loop.shutdown_default_executor(0.05)
        # Not joined: the job still runs, the loop does not wait for it any longer.
        joined.append(worker.done())

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loop.run_until_complete(main())
    finally:
        release.set()
    assert [(str(w.message), w.filename) for w in caught if w.category is RuntimeWarning] == [
        ("The executor did not finishing joining its threads within 0.05 seconds.", __file__)
    ]
    assert joined == [False]
