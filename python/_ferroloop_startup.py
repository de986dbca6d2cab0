"""ferroloop's interpreter start-up hook, for ``python -m ferroloop`` and its child processes.

``python -m ferroloop`` sets ``FERROLOOP_INSTALL=1`` in the environment, so every Python
interpreter the program starts inherits it: multiprocessing's spawn and forkserver children, and
servers' workers started as new interpreters (hypercorn ``-w N``, uvicorn ``--workers N``, granian
on 3.14). ``ferroloop_startup.pth``, installed beside this module in site-packages, imports this
module at start-up only when the variable is in the environment; without it the cost is one line
of the .pth compiled and one look-up of the name (``in os.environ``, cheaper than reading the
value); this module reads the value, and does nothing for ``0`` or an empty one.

Even then nothing heavy happens at start-up: this module imports nothing beyond what the
interpreter has already imported, and puts a watcher on ``sys.meta_path``. ferroloop itself is
imported when the program first imports asyncio, or one of the modules where servers and loop
libraries choose their loop, right after that module's own code has run (see ``WATCHED``). An
interpreter that never uses asyncio never imports ferroloop, and importing asyncio this early
would change the order a program imports things in (gevent's monkey-patching, for one, must come
before ``ssl`` and ``threading``).

What happens when a watched module is loaded is ferroloop's business, in ``ferroloop._adopt``.
"""

import os
import sys

ENV = "FERROLOOP_INSTALL"

# "1": ferroloop everywhere, a program's explicit request for uvloop or rloop included;
# "defaults": only where the stock loop would otherwise run. "0" (or unset) never gets here.
MODES = ("1", "defaults")

# Watched from interpreter start-up on, not from ferroloop's first import: uvloop, uvicorn and
# granian import asyncio before their own code runs, so a watcher put up when asyncio arrives
# would miss the end of their import. ferroloop._adopt has one patch per name (a test checks).
WATCHED = frozenset(
    {
        "asyncio",
        "uvloop",
        "rloop",
        "zuvloop",
        "uvicorn.loops.auto",
        "uvicorn.loops.asyncio",
        "granian._loops",
    }
)

mode = None
# Modules seen while ferroloop itself was still importing (its own `import asyncio`): ferroloop's
# __init__ hands them over once it is complete (flush()).
_pending = []
_started = False


class _Watcher:
    """A meta path finder that finds nothing itself: for a watched name it asks the finders
    after it, and has ferroloop see the module once the module's loader has executed it."""

    def find_spec(self, name, path=None, target=None):
        if name not in WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec and find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        if getattr(loader, "name", None) == name:
            # A loader made for this one module (FileFinder's file loaders): it runs the module
            # and then tells ferroloop, once.
            loader.exec_module = _after(loader, loader.exec_module, name)
        else:
            # One that loads many modules (a zipimporter, importlib's class-level importers)
            # must stay untouched: this spec gets a stand-in.
            spec.loader = _Loader(loader, name)
        return spec


def _after(loader, exec_module, name):
    def run(module):
        try:
            exec_module(module)
        finally:
            # Back to the loader's own method: a reload runs the module's code without us.
            loader.__dict__.pop("exec_module", None)
        loaded(name, module)

    return run


class _Loader:
    """Runs a module through the loader that found it, then tells ferroloop."""

    def __init__(self, loader, name):
        self._loader = loader
        self._name = name

    def __getattr__(self, attr):
        return getattr(self._loader, attr)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        loaded(self._name, module)


def loaded(name, module):
    ferroloop = sys.modules.get("ferroloop")
    if ferroloop is not None and getattr(ferroloop.__spec__, "_initializing", False):
        _pending.append((name, module))
    else:
        _deliver(name, module)


def _deliver(name, module):
    try:
        from ferroloop import _adopt

        _adopt.loaded(name, module)
    except Exception as exc:
        # A start-up hook must not take the program down with it: say why and run on.
        print(
            f"ferroloop: not installed in this process after importing {name} "
            f"({type(exc).__name__}: {exc})",
            file=sys.stderr,
        )


def flush():
    """Called at the end of ferroloop's __init__: what arrived while it was importing."""
    while _pending:
        _deliver(*_pending.pop(0))


def watch(new_mode):
    """Follow the watched modules' imports from now on, in ``new_mode``."""
    global mode
    mode = new_mode
    if not any(isinstance(finder, _Watcher) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Watcher())


def start():
    """Called by ferroloop_startup.pth when the environment asks for ferroloop."""
    global _started
    # site runs the .pth once per site directory it lists, and a venv's lib64 is a symlink to
    # its lib: twice there.
    if _started:
        return
    _started = True
    value = os.environ.get(ENV, "")
    if value in ("", "0"):
        return
    if value not in MODES:
        print(
            f"ferroloop: {ENV}={value!r} not understood (1, defaults or 0); not installed",
            file=sys.stderr,
        )
        return
    watch(value)
