"""Async generator hooks and shutdown_asyncgens."""

import asyncio
import gc
import sys
import warnings

import pytest

pytestmark = pytest.mark.timeout(10)


def make_gen(log, name="gen"):
    async def agen():
        try:
            for i in range(100):
                yield i
        finally:
            log.append(f"{name} closed")

    return agen()


def test_hooks_installed_while_running(loop):
    def outer_first(agen):
        pass

    def outer_final(agen):
        pass

    sys.set_asyncgen_hooks(firstiter=outer_first, finalizer=outer_final)
    seen = []

    async def main():
        seen.append(sys.get_asyncgen_hooks())

    loop.run_until_complete(main())
    inside = seen[0]
    assert inside.firstiter is not None and inside.firstiter is not outer_first
    assert inside.finalizer is not None and inside.finalizer is not outer_final
    assert callable(inside.firstiter) and callable(inside.finalizer)
    # Restored afterwards.
    after = sys.get_asyncgen_hooks()
    assert after.firstiter is outer_first
    assert after.finalizer is outer_final


def test_hooks_restored_to_none(loop):
    sys.set_asyncgen_hooks(firstiter=None, finalizer=None)
    seen = []
    loop.call_soon(lambda: seen.append(sys.get_asyncgen_hooks()))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen[0].firstiter is not None
    assert seen[0].finalizer is not None
    assert sys.get_asyncgen_hooks() == (None, None)


def test_hooks_restored_after_exception(loop):
    sys.set_asyncgen_hooks(firstiter=None, finalizer=None)

    def boom():
        raise KeyboardInterrupt

    loop.call_soon(boom)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert sys.get_asyncgen_hooks() == (None, None)


def test_hooks_are_per_loop(loop, new_loop):
    other = new_loop()
    seen = []

    async def grab():
        seen.append(sys.get_asyncgen_hooks())

    loop.run_until_complete(grab())
    other.run_until_complete(grab())
    assert seen[0].firstiter != seen[1].firstiter


def test_shutdown_asyncgens_closes_unfinished(loop):
    log = []
    gens = [make_gen(log, f"g{i}") for i in range(3)]

    async def main():
        for g in gens:
            assert await g.__anext__() == 0

    loop.run_until_complete(main())
    assert log == []
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert sorted(log) == ["g0 closed", "g1 closed", "g2 closed"]
    for g in gens:
        assert g.ag_frame is None  # finished


def test_shutdown_asyncgens_ignores_finished_and_unstarted(loop):
    log = []
    finished = make_gen(log, "finished")
    unstarted = make_gen(log, "unstarted")

    async def main():
        async for _ in finished:
            pass

    loop.run_until_complete(main())
    assert log == ["finished closed"]
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert log == ["finished closed"]
    unstarted.aclose().close()  # never started: nothing to run


def test_shutdown_asyncgens_with_no_generators(loop):
    assert loop.run_until_complete(loop.shutdown_asyncgens()) is None


def test_shutdown_asyncgens_error_goes_to_exception_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def bad():
        try:
            yield 1
        finally:
            raise ValueError("close failed")

    g = bad()

    async def main():
        await g.__anext__()

    loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], ValueError)
    assert contexts[0]["asyncgen"] is g
    assert "an error occurred during closing of asynchronous generator" in contexts[0]["message"]


def test_asyncgen_after_shutdown_warns(loop):
    loop.run_until_complete(loop.shutdown_asyncgens())
    log = []
    g = make_gen(log)

    async def main():
        return await g.__anext__()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert loop.run_until_complete(main()) == 0
    assert any(
        issubclass(w.category, ResourceWarning)
        and "was scheduled after loop.shutdown_asyncgens() call" in str(w.message)
        for w in caught
    )
    loop.run_until_complete(g.aclose())


def test_finalizer_closes_dropped_generator(loop):
    log = []

    async def main():
        g = make_gen(log)
        assert await g.__anext__() == 0
        del g
        gc.collect()
        # The finalizer hook schedules aclose() on the loop; give it a few ticks.
        for _ in range(20):
            if log:
                break
            await asyncio.sleep(0)
        return list(log)

    assert loop.run_until_complete(main()) == ["gen closed"]


def test_finalizer_aclose_runs_async_cleanup(loop):
    log = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)
            log.append("async cleanup done")

    async def main():
        g = agen()
        await g.__anext__()
        del g
        gc.collect()
        for _ in range(20):
            if log:
                break
            await asyncio.sleep(0)
        return list(log)

    assert loop.run_until_complete(main()) == ["async cleanup done"]


def test_runner_shuts_down_asyncgens(flavor):
    log = []
    holder = []

    async def main():
        g = make_gen(log)
        holder.append(g)  # keep it alive past main()
        await g.__anext__()

    flavor.run(main())
    assert log == ["gen closed"]
