"""Futures, tasks and the asyncio high-level primitives running on the loop."""

import asyncio
import concurrent.futures
import contextvars
import sys
import threading

import pytest

pytestmark = pytest.mark.timeout(10)

var = contextvars.ContextVar("var", default="unset")

# create_task(coro, **kwargs) passes every keyword on as given: 3.13.3 and 3.14+ (gh-128307).
CREATE_TASK_FORWARDS_ALL = sys.version_info >= (3, 14) or sys.version_info[:3] == (3, 13, 3)
# Other keywords (eager_start...) are passed on, name and context handled as before: 3.13.4+.
CREATE_TASK_TAKES_KWARGS = CREATE_TASK_FORWARDS_ALL or sys.version_info[:3] >= (3, 13, 4)
# asyncio.eager_task_factory and Task(eager_start=): 3.12+.
HAS_EAGER_TASKS = sys.version_info >= (3, 12)
needs_eager_tasks = pytest.mark.skipif(not HAS_EAGER_TASKS, reason="eager tasks are 3.12+")


def test_create_future(loop):
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    assert not fut.done()
    fut.cancel()


def test_create_future_while_running_belongs_to_the_loop(loop):
    """From a callback of the running loop, from another loop's run in a thread, and with the
    program's own "running loop" swapped in: the future is always this loop's."""
    other = asyncio.new_event_loop()
    got = {}

    def from_callback():
        got["running"] = loop.create_future()
        # A program that replaced the running loop (as nest_asyncio-style code does).
        asyncio.events._set_running_loop(other)
        try:
            got["swapped"] = loop.create_future()
        finally:
            asyncio.events._set_running_loop(loop)
        loop.stop()

    loop.call_soon(from_callback)
    loop.run_forever()

    def in_thread():
        got["thread"] = other.run_until_complete(_make_future_on(loop))

    t = threading.Thread(target=in_thread)
    t.start()
    t.join(5)
    other.close()
    for how, fut in got.items():
        assert fut.get_loop() is loop, how
        fut.cancel()


async def _make_future_on(loop):
    return loop.create_future()


def test_create_future_honours_a_patched_future_class(loop, monkeypatch):
    made = []

    class MyFuture(asyncio.Future):
        def __init__(self, *, loop=None):
            made.append(loop)
            super().__init__(loop=loop)

    monkeypatch.setattr(asyncio.futures, "Future", MyFuture)

    async def main():
        return loop.create_future()

    fut = loop.run_until_complete(main())
    assert type(fut) is MyFuture and made == [loop] and fut.get_loop() is loop


def test_future_done_callbacks_run_via_loop(loop):
    fut = loop.create_future()
    seen = []
    fut.add_done_callback(lambda f: seen.append(f.result()))
    fut.set_result(3)
    assert seen == []  # scheduled with call_soon, not run synchronously
    loop.run_until_complete(asyncio.sleep(0))
    assert seen == [3]


def test_create_task(loop):
    async def work():
        await asyncio.sleep(0)
        return "result"

    task = loop.create_task(work())
    assert isinstance(task, asyncio.Task)
    assert task.get_loop() is loop
    assert loop.run_until_complete(task) == "result"


def test_create_task_name(loop):
    async def work():
        return asyncio.current_task().get_name()

    task = loop.create_task(work(), name="my-task")
    assert task.get_name() == "my-task"
    assert loop.run_until_complete(task) == "my-task"


def test_create_task_context(loop):
    ctx = contextvars.Context()
    ctx.run(var.set, "task-ctx")

    async def work():
        value = var.get()
        var.set("modified")
        return value

    task = loop.create_task(work(), context=ctx)
    assert loop.run_until_complete(task) == "task-ctx"
    assert ctx[var] == "modified"
    assert var.get() == "unset"


def test_create_task_default_context_is_copy(loop):
    async def work():
        return var.get()

    token = var.set("creator")
    try:
        task = loop.create_task(work())
    finally:
        var.reset(token)
    assert loop.run_until_complete(task) == "creator"


def test_create_task_rejects_non_coroutine(loop):
    with pytest.raises(TypeError):
        loop.create_task(42)


def test_task_factory(loop):
    calls = []

    def factory(lp, coro, **kwargs):
        calls.append((lp, kwargs))
        return asyncio.Task(coro, loop=lp, **kwargs)

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def work():
        return 1

    task = loop.create_task(work(), name="named")
    assert task.get_name() == "named"
    assert loop.run_until_complete(task) == 1
    # 3.14 (and 3.13.3) hand the name to the factory; before, the loop names the task.
    assert calls == [(loop, {"name": "named"} if CREATE_TASK_FORWARDS_ALL else {})]

    ctx = contextvars.copy_context()
    task = loop.create_task(work(), context=ctx)
    loop.run_until_complete(task)
    assert calls[-1] == (loop, {"context": ctx})

    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    loop.run_until_complete(loop.create_task(work()))
    assert len(calls) == 2


def test_task_factory_used_by_ensure_future(loop):
    made = []

    def factory(lp, coro):
        task = asyncio.Task(coro, loop=lp)
        made.append(task)
        return task

    loop.set_task_factory(factory)

    async def work():
        return "x"

    assert loop.run_until_complete(work()) == "x"
    assert len(made) == 1


@pytest.mark.parametrize("bad", [1, "factory", object()])
def test_task_factory_not_callable(loop, bad):
    with pytest.raises(TypeError, match="task factory must be a callable or None"):
        loop.set_task_factory(bad)


def test_current_task(loop):
    async def work():
        return asyncio.current_task()

    task = loop.create_task(work())
    assert loop.run_until_complete(task) is task


def test_current_task_outside_task(loop):
    seen = []

    def cb():
        seen.append(asyncio.current_task())
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert seen == [None]
    assert asyncio.current_task(loop) is None


def test_all_tasks(loop):
    async def sleeper():
        await asyncio.sleep(10)

    async def main():
        t1 = loop.create_task(sleeper())
        t2 = loop.create_task(sleeper())
        await asyncio.sleep(0)
        tasks = asyncio.all_tasks()
        t1.cancel()
        t2.cancel()
        await asyncio.gather(t1, t2, return_exceptions=True)
        return tasks, asyncio.current_task()

    tasks, me = loop.run_until_complete(main())
    assert len(tasks) == 3
    assert me in tasks
    assert asyncio.all_tasks(loop) == set()


def test_get_running_loop_and_get_event_loop(loop):
    async def main():
        return asyncio.get_running_loop(), asyncio.get_event_loop()

    assert loop.run_until_complete(main()) == (loop, loop)
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()


def test_get_event_loop_returns_current_loop(loop):
    # The fixture set the loop as current.
    assert asyncio.get_event_loop() is loop


def test_sleep_and_gather(loop):
    async def delayed(v, d):
        await asyncio.sleep(d)
        return v

    async def main():
        return await asyncio.gather(delayed("a", 0.03), delayed("b", 0.01), delayed("c", 0))

    assert loop.run_until_complete(main()) == ["a", "b", "c"]


def test_sleep_result(loop):
    assert loop.run_until_complete(asyncio.sleep(0.001, result="r")) == "r"


def test_task_cancellation(loop):
    async def sleeper():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "cleaned up"

    async def main():
        task = loop.create_task(sleeper())
        await asyncio.sleep(0)
        task.cancel()
        return await task

    assert loop.run_until_complete(main()) == "cleaned up"


def test_taskgroup(loop):
    async def child(i):
        await asyncio.sleep(0.001 * i)
        return i

    async def main():
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(child(i)) for i in range(5)]
        return [t.result() for t in tasks]

    assert loop.run_until_complete(main()) == [0, 1, 2, 3, 4]


def test_taskgroup_error_cancels_siblings(loop):
    cancelled = []

    async def sleeper():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def failer():
        await asyncio.sleep(0.01)
        raise ValueError("tg")

    async def main():
        async with asyncio.TaskGroup() as tg:
            tg.create_task(sleeper())
            tg.create_task(failer())

    with pytest.raises(ExceptionGroup) as info:
        loop.run_until_complete(main())
    assert [type(e) for e in info.value.exceptions] == [ValueError]
    assert cancelled == [True]


def test_timeout(loop):
    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await asyncio.sleep(10)
        return "after"

    assert loop.run_until_complete(main()) == "after"


def test_timeout_not_triggered(loop):
    async def main():
        async with asyncio.timeout(5) as cm:
            await asyncio.sleep(0)
        return cm.expired()

    assert loop.run_until_complete(main()) is False


def test_timeout_reschedule(loop):
    async def main():
        async with asyncio.timeout(None) as cm:
            cm.reschedule(asyncio.get_running_loop().time() + 0.01)
            await asyncio.sleep(10)

    with pytest.raises(TimeoutError):
        loop.run_until_complete(main())


def test_wait_for(loop):
    async def slow():
        await asyncio.sleep(10)

    async def fast():
        return "fast"

    async def main():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(slow(), 0.02)
        return await asyncio.wait_for(fast(), 5)

    assert loop.run_until_complete(main()) == "fast"


def test_wait(loop):
    async def main():
        t1 = loop.create_task(asyncio.sleep(0.01, "a"))
        t2 = loop.create_task(asyncio.sleep(10, "b"))
        done, pending = await asyncio.wait({t1, t2}, return_when=asyncio.FIRST_COMPLETED)
        t2.cancel()
        return done == {t1}, pending == {t2}

    assert loop.run_until_complete(main()) == (True, True)


def test_shield(loop):
    async def main():
        inner = loop.create_task(asyncio.sleep(0.01, "shielded"))
        outer = asyncio.ensure_future(asyncio.shield(inner))
        await asyncio.sleep(0)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        return await inner

    assert loop.run_until_complete(main()) == "shielded"


def test_queue(loop):
    async def producer(q):
        for i in range(100):
            await q.put(i)
        await q.put(None)

    async def consumer(q):
        items = []
        while (item := await q.get()) is not None:
            items.append(item)
            q.task_done()
        q.task_done()
        return items

    async def main():
        q = asyncio.Queue(maxsize=3)
        prod = loop.create_task(producer(q))
        items = await consumer(q)
        await prod
        await q.join()
        return items

    assert loop.run_until_complete(main()) == list(range(100))


def test_lock(loop):
    order = []

    async def worker(lock, name):
        async with lock:
            order.append(f"{name} in")
            await asyncio.sleep(0.001)
            order.append(f"{name} out")

    async def main():
        lock = asyncio.Lock()
        await asyncio.gather(*(worker(lock, n) for n in "abc"))

    loop.run_until_complete(main())
    assert order == ["a in", "a out", "b in", "b out", "c in", "c out"]


def test_event(loop):
    async def main():
        ev = asyncio.Event()
        waiters = [loop.create_task(ev.wait()) for _ in range(3)]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiters)
        loop.call_later(0.01, ev.set)
        return await asyncio.gather(*waiters)

    assert loop.run_until_complete(main()) == [True, True, True]


def test_semaphore(loop):
    active = 0
    peak = 0

    async def worker(sem):
        nonlocal active, peak
        async with sem:
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.001)
            active -= 1

    async def main():
        sem = asyncio.Semaphore(2)
        await asyncio.gather(*(worker(sem) for _ in range(10)))

    loop.run_until_complete(main())
    assert peak == 2


def test_condition(loop):
    async def main():
        cond = asyncio.Condition()
        state = []
        results = []

        async def waiter(i):
            async with cond:
                await cond.wait_for(lambda: state)
                results.append(i)

        tasks = [loop.create_task(waiter(i)) for i in range(3)]
        await asyncio.sleep(0)
        async with cond:
            state.append(True)
            cond.notify_all()
        await asyncio.gather(*tasks)
        return sorted(results)

    assert loop.run_until_complete(main()) == [0, 1, 2]


def test_run_coroutine_from_callback_ensure_future(loop):
    async def work():
        return "via ensure_future"

    async def main():
        return await asyncio.ensure_future(work())

    assert loop.run_until_complete(main()) == "via ensure_future"


def test_many_tasks(loop):
    async def tiny(i):
        await asyncio.sleep(0)
        return i

    async def main():
        return await asyncio.gather(*(tiny(i) for i in range(2000)))

    assert loop.run_until_complete(main()) == list(range(2000))


def test_create_task_name_is_stringified(loop):
    async def work():
        pass

    task = loop.create_task(work(), name=123)
    assert task.get_name() == "123"
    loop.run_until_complete(task)


def test_default_task_names_are_unique(loop):
    async def work():
        pass

    tasks = [loop.create_task(work()) for _ in range(3)]
    names = [t.get_name() for t in tasks]
    assert len(set(names)) == 3
    assert all(n.startswith("Task-") for n in names)
    loop.run_until_complete(asyncio.gather(*tasks))


def test_future_result_across_threads(loop):
    async def main():
        cf = concurrent.futures.Future()
        fut = asyncio.wrap_future(cf)
        th = threading.Timer(0.01, cf.set_result, args=("from thread",))
        th.start()
        try:
            return await fut
        finally:
            th.join()

    assert loop.run_until_complete(main()) == "from thread"


# -- create_task's keywords and eager tasks (3.12+, eager_start= on create_task 3.13.4+/3.14) --


def test_create_task_keywords_follow_the_running_version(loop):
    async def work():
        return asyncio.current_task()

    if not CREATE_TASK_TAKES_KWARGS:
        coro = work()
        with pytest.raises(TypeError, match="unexpected keyword argument 'eager_start'"):
            loop.create_task(coro, eager_start=True)
        coro.close()
        return
    # Not running: eager_start cannot start the task now, it is scheduled as usual.
    task = loop.create_task(work(), eager_start=True, name="eager")
    assert not task.done()
    assert task.get_name() == "eager"
    assert loop.run_until_complete(task) is task


def test_create_task_unknown_keyword_is_the_tasks_error(loop):
    async def work():
        pass

    coro = work()
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        loop.create_task(coro, bogus=1)
    coro.close()


@pytest.mark.skipif(not CREATE_TASK_TAKES_KWARGS, reason="create_task(eager_start=) is 3.13.4+")
def test_create_task_eager_start_runs_the_first_step_at_once(loop):
    steps = []

    async def work():
        steps.append("first step")
        await asyncio.sleep(0)
        steps.append("second step")
        return asyncio.current_task()

    async def main():
        task = loop.create_task(work(), eager_start=True)
        steps.append("created")
        assert asyncio.current_task() is not task
        return task, await task

    task, current = loop.run_until_complete(main())
    assert steps == ["first step", "created", "second step"]
    assert current is task


@pytest.mark.skipif(not CREATE_TASK_TAKES_KWARGS, reason="create_task(eager_start=) is 3.13.4+")
def test_create_task_eager_start_that_finishes_at_once(loop):
    async def work():
        return asyncio.current_task(), "value"

    async def main():
        task = loop.create_task(work(), eager_start=True)
        # It ran to completion inside create_task, as its own current task.
        assert task.done()
        current, value = task.result()
        assert current is task
        return value, asyncio.current_task()

    value, outer = loop.run_until_complete(main())
    assert value == "value"
    assert outer is not None


@pytest.mark.skipif(not CREATE_TASK_TAKES_KWARGS, reason="create_task(**kwargs) is 3.13.4+")
def test_task_factory_gets_the_extra_keywords(loop):
    calls = []

    def factory(lp, coro, **kwargs):
        calls.append(sorted(kwargs))
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)

    async def work():
        return asyncio.current_task().get_name()

    ctx = contextvars.copy_context()
    task = loop.create_task(work(), name="n", context=ctx, eager_start=False)
    assert loop.run_until_complete(task) == "n"
    if CREATE_TASK_FORWARDS_ALL:
        assert calls == [["context", "eager_start", "name"]]
    else:  # 3.13.4+: the loop names the task itself
        assert calls == [["context", "eager_start"]]


@needs_eager_tasks
def test_eager_task_factory(loop):
    order = []

    async def child(n):
        order.append(f"child {n} starts")
        if n:
            await asyncio.sleep(0)
        order.append(f"child {n} ends")
        return n

    async def main():
        tasks = [asyncio.create_task(child(n)) for n in range(2)]
        order.append("created")
        assert tasks[0].done() and not tasks[1].done()
        return await asyncio.gather(*tasks)

    loop.set_task_factory(asyncio.eager_task_factory)
    assert loop.run_until_complete(main()) == [0, 1]
    assert order == [
        "child 0 starts",
        "child 0 ends",
        "child 1 starts",
        "created",
        "child 1 ends",
    ]


@needs_eager_tasks
def test_create_eager_task_factory_with_custom_task(loop):
    made = []

    class MyTask(asyncio.Task):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    async def work():
        return asyncio.current_task()

    async def main():
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(work(), name="in-group")
        return task

    loop.set_task_factory(asyncio.create_eager_task_factory(MyTask))
    task = loop.run_until_complete(main())
    assert task.result() is task
    assert task.get_name() == "in-group"
    assert type(task) is MyTask and task in made


@needs_eager_tasks
def test_eager_tasks_see_current_task_and_all_tasks(loop):
    async def work(gate):
        me = asyncio.current_task()
        assert me in asyncio.all_tasks()
        await gate
        return me

    async def main():
        gate = loop.create_future()
        task = asyncio.create_task(work(gate))
        assert not task.done()
        assert task in asyncio.all_tasks()
        gate.set_result(None)
        return task, await task

    loop.set_task_factory(asyncio.eager_task_factory)
    task, me = loop.run_until_complete(main())
    assert me is task


def test_non_callable_done_callback_does_not_keep_the_others_from_running(loop):
    """A future's done callbacks are scheduled together by set_result(): a non-callable among
    them fails when it runs, reported to the exception handler, and the others still run."""
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    fut = loop.create_future()
    ran = []
    fut.add_done_callback(1)
    fut.add_done_callback(lambda f: ran.append(f.result()))
    fut.set_result("value")
    loop.run_until_complete(asyncio.sleep(0))
    assert ran == ["value"]
    assert len(errors) == 1 and isinstance(errors[0]["exception"], TypeError)
    assert errors[0]["message"].startswith("Exception in callback 1(")
