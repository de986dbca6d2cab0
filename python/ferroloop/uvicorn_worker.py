"""gunicorn worker classes that serve an ASGI application with uvicorn on ferroloop::

    gunicorn -k ferroloop.uvicorn_worker.UvicornWorker app:app
    gunicorn -k ferroloop.uvicorn_worker.UvicornH11Worker app:app   # uvicorn's pure-Python h11

Each is uvicorn's worker class of the same name (from the uvicorn-worker package, or from
``uvicorn.workers`` where that package is not installed) with ferroloop as its loop, and as the
worker process's default loop for anything else in it that asks asyncio for one. This module
imports neither gunicorn nor uvicorn: the classes are made the first time they are asked for.
"""

from __future__ import annotations

# Made by __getattr__ on first access, so not names ruff can see defined.
_CLASSES = ("UvicornH11Worker", "UvicornWorker")
__all__ = list(_CLASSES)


def _uvicorn_class(name: str) -> type:
    try:
        import uvicorn_worker as workers
    except ImportError:
        # Deprecated in uvicorn in favour of uvicorn-worker, but the same classes.
        from uvicorn import workers
    return getattr(workers, name)


def _worker_class(name: str) -> type:
    base = _uvicorn_class(name)
    from uvicorn.config import Config

    import ferroloop

    # uvicorn >= 0.36 takes a loop factory by import string; before, it took a setup function
    # there, and "none" leaves the loop to asyncio's default, which init_process makes ferroloop.
    loop = "ferroloop:new_event_loop" if hasattr(Config, "get_loop_factory") else "none"

    class Worker(base):
        CONFIG_KWARGS = {**base.CONFIG_KWARGS, "loop": loop}

        def init_process(self) -> None:
            # In the forked worker, before uvicorn makes its loop.
            ferroloop.install()
            super().init_process()

    Worker.__name__ = Worker.__qualname__ = name
    Worker.__module__ = __name__
    Worker.__doc__ = f"{base.__module__}.{name} on ferroloop."
    return Worker


def __getattr__(name: str) -> type:
    if name in _CLASSES:
        cls = _worker_class(name)
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
