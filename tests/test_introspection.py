"""3.14's task introspection on the loop: ``asyncio.capture_call_graph`` inside a program, and
``python -m asyncio ps PID`` / ``pstree PID`` from outside it (they read the interpreter's
memory, so they see tasks whichever loop runs them, if the loop keeps asyncio's bookkeeping:
the running loop and the current task per thread)."""

from __future__ import annotations

import asyncio
import sys
import textwrap

import pytest

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.version_info < (3, 14), reason="task introspection is new in 3.14"),
]


def test_capture_call_graph(loop):
    async def leaf(ready, graphs):
        graphs.append(asyncio.capture_call_graph())
        ready.set_result(None)
        await asyncio.sleep(3600)

    async def middle(ready, graphs):
        await leaf(ready, graphs)

    async def main():
        ready = loop.create_future()
        graphs = []
        child = asyncio.create_task(middle(ready, graphs), name="child")

        async def parent():
            await child

        waiting = asyncio.create_task(parent(), name="parent")
        await ready
        await asyncio.sleep(0)
        outside = asyncio.capture_call_graph(child)
        text = asyncio.format_call_graph(child)
        waiting.cancel()
        child.cancel()
        await asyncio.gather(waiting, child, return_exceptions=True)
        return graphs[0], outside, text

    inside, outside, text = loop.run_until_complete(main())
    assert inside.future.get_name() == "child"
    assert [e.frame.f_code.co_name for e in inside.call_stack][:2] == ["leaf", "middle"]
    # From outside, the child is awaited by the parent task.
    assert [g.future.get_name() for g in outside.awaited_by] == ["parent"]
    assert "child" in text and "parent" in text and "leaf" in text


PROGRAM = textwrap.dedent(
    """
    import asyncio
    {setup}

    async def worker(n, started):
        started.release()
        await asyncio.sleep(3600)

    async def supervisor():
        started = asyncio.Semaphore(0)
        async with asyncio.TaskGroup() as tg:
            for n in range(2):
                tg.create_task(worker(n, started), name=f"worker-{{n}}")
            for _ in range(2):
                await started.acquire()
            print(type(asyncio.get_running_loop()).__module__, flush=True)
            await asyncio.sleep(3600)

    {run}(supervisor())
    """
)


@pytest.mark.parametrize("command", ["ps", "pstree"])
def test_asyncio_ps_sees_the_tasks(flavor, spawn_python, run_python, command):
    code = PROGRAM.format(setup=flavor.import_code, run=flavor.run_expr)
    proc = spawn_python([sys.executable, "-c", code])
    first = proc.stdout.readline().strip()
    assert first.startswith(flavor.module), proc.stderr.read()
    try:
        out = run_python([sys.executable, "-m", "asyncio", command, str(proc.pid)])
    finally:
        proc.kill()
    if "Operation not permitted" in out.stderr or "insufficient permissions" in out.stderr:
        pytest.fail(f"cannot attach to the child here: {out.stderr}")
    assert out.returncode == 0, out.stderr
    for name in ("worker-0", "worker-1"):
        assert name in out.stdout
    assert "supervisor" in out.stdout
    if command == "pstree":
        assert "worker" in out.stdout and "sleep" in out.stdout
