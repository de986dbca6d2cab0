//! `LoopCore`: the native half of `ferroloop.Loop` (asyncio's `BaseEventLoop` +
//! `BaseSelectorEventLoop`, the parts on the hot path).
//!
//! The Python class `ferroloop.Loop` subclasses this and `asyncio.AbstractEventLoop`; it adds the
//! cold parts (run_until_complete, executors, async generators, exception handler, signals) where
//! matching asyncio line by line matters more than speed.
//!
//! ## One iteration (asyncio's `_run_once`)
//! 1. Move thread-safe calls from the inbox to the ready queue (at most `INBOX_BUDGET`).
//! 2. Poll: timeout 0 when something is ready or the loop is stopping, else until the nearest
//!    live timer, else forever. The GIL is released only when the poll can block. A zero-timeout
//!    poll with no fd watched is skipped: it could only report the waker, and the inbox is read
//!    without it. So is one right after an iteration that polled and ran only native
//!    transports' I/O (`just_polled_io`).
//! 3. Queue the handles of ready fds, then expired timers (deadline < now + clock resolution).
//! 4. Run exactly the handles that were ready at that point; what they schedule waits for the next
//!    iteration.
//! 5. Send the writes those callbacks kept in stream transports (`flush_writes`).
//!
//! ## Borrowing discipline
//! Python code can run whenever a Python object is allocated (the GC runs finalizers) or released
//! (`__del__`), and that code may call back into the loop. So the loop's state is only borrowed
//! around pure-Rust work: handles are built before the borrow, and handles removed while borrowed
//! are parked in `graveyard` and released after it. A violation surfaces as a `RuntimeError`
//! ("Already borrowed"), never as undefined behaviour.

use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use ferroloop_core::clock;
use ferroloop_core::inbox::Inbox;
use ferroloop_core::reactor::{Events, Interest, PollHandle, Reactor};
use ferroloop_core::timers::TimerHeap;
use pyo3::exceptions::{PyAttributeError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyModule, PyTuple};

use crate::errors::os_error;
use crate::handles::{has_weakrefs, retrack, run_handle, Args, Handle, TimerHandle};
use crate::metrics::{self, Counters, Timing};
use crate::ready::{Ready, ReadyQueue, Watcher};
use crate::transport::SocketTransportCore;

/// How many emptied handles the loop keeps for reuse: enough for a flood of thread-safe calls
/// (the producer pauses past `INBOX_BACKLOG`), which otherwise allocates a handle per call.
const HANDLE_POOL_SIZE: usize = INBOX_BACKLOG;
/// What the pool keeps once the loop goes idle (64 KiB of emptied handles; 1 MiB at most after a
/// burst, until the loop next waits for I/O `POOL_TRIM_INTERVAL` later or stops).
const HANDLE_POOL_IDLE: usize = 512;
const POOL_TRIM_INTERVAL: f64 = 1.0;

/// The loop runs the interpreter's signal handlers (`PyErr_CheckSignals`) once every this many
/// iterations, and at once when a blocking poll was interrupted. Python code run by a callback
/// already runs them at its next bytecode, so this only bounds the delay of a Ctrl-C during
/// callbacks that run no Python code; every iteration it was ~8 % of a call_soon chain.
const SIGNAL_CHECK_EVERY: u32 = 64;

/// The most thread-safe calls one iteration takes from the inbox: a flood from other threads
/// waits for later iterations instead of making this one longer, so timers and I/O keep their
/// turn (asyncio's iteration runs what was ready when it started; its producers are slower).
const INBOX_BUDGET: usize = 1024;

/// A `call_soon_threadsafe` that finds more than this many calls waiting for the loop pauses for
/// `BACKLOG_PAUSE` without the GIL (see `call_soon_threadsafe`).
const INBOX_BACKLOG: usize = 8 * INBOX_BUDGET;
const BACKLOG_PAUSE: Duration = Duration::from_micros(50);

/// asyncio's `MAXIMUM_SELECT_TIMEOUT`.
const MAXIMUM_SELECT_TIMEOUT: f64 = 24.0 * 3600.0;

static ISCOROUTINE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static TASKS_MODULE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static FUTURES_MODULE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static SET_TASK_NAME: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static ISCOROUTINEFUNCTION: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
/// The running asyncio makes `call_soon_threadsafe` handles that another thread cannot cancel
/// while they run (`events._ThreadSafeHandle`, 3.14): see `handles::RunLock`.
static THREADSAFE_HANDLES: PyOnceLock<bool> = PyOnceLock::new();

/// What `create_task` takes and hands to a task factory, which changed within 3.13
/// (gh-128307, gh-133745).
#[derive(Clone, Copy, PartialEq, Eq)]
enum TaskApi {
    /// Up to 3.13.2: `(coro, *, name=None, context=None)`; a factory gets `context=` only when
    /// one is given, and the loop names the task.
    NameContext,
    /// 3.13.4 and later 3.13s: the same, plus any other keyword passed on to the factory or Task.
    NameContextForward,
    /// 3.13.3 and 3.14+: `(coro, **kwargs)`, all of them passed on as given.
    Forward,
}

impl TaskApi {
    fn of(py: Python<'_>) -> TaskApi {
        match crate::python_version(py) {
            (3, 13, 3) => TaskApi::Forward,
            (3, 13, p) if p >= 4 => TaskApi::NameContextForward,
            (3, minor, _) if minor >= 14 => TaskApi::Forward,
            _ => TaskApi::NameContext,
        }
    }
}

/// What the poll needs, taken out of the loop while it waits (see `LoopCore::poller`): the
/// interests stay in `LoopCore::reactor`, where `add_reader` and the like change them, from any
/// thread, meanwhile.
struct Poller {
    reactor: PollHandle,
    events: Events,
}

pub(crate) fn current_thread() -> u64 {
    // SAFETY: pthread_self has no preconditions. Its value is what threading.get_ident() returns
    // on Linux, which asyncio compares against in its thread checks.
    unsafe { libc::pthread_self() as u64 }
}

fn closed_error() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}

fn is_cancelled(py: Python<'_>) -> impl Fn(&Py<Handle>) -> bool + '_ {
    move |h| {
        h.bind(py)
            .try_borrow()
            .map(|h| h.cancelled)
            .unwrap_or(false)
    }
}

/// asyncio's `selectors._fileobj_to_fd`: an int is the fd as it is (a bool included), anything
/// else is `int(fileobj.fileno())`, so a `fileno()` returning `"3"` or `3.7` means fd 3. An
/// AttributeError, TypeError or ValueError on the way makes it an invalid file object; any other
/// exception propagates. The number comes back as the Python int it is, of any size: what a number
/// that is no fd means depends on the caller (see `raw_fd`, `LoopCore::registrable_fd`).
fn fileobj_to_fd<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let fd = if obj.is_instance_of::<PyInt>() {
        obj.clone()
    } else {
        let converted = obj
            .call_method0(intern!(py, "fileno"))
            .and_then(|f| py.get_type::<PyInt>().call1((f,)));
        match converted {
            Ok(fd) => fd,
            Err(err)
                if err.is_instance_of::<PyAttributeError>(py)
                    || err.is_instance_of::<PyTypeError>(py)
                    || err.is_instance_of::<PyValueError>(py) =>
            {
                return Err(PyValueError::new_err(format!(
                    "Invalid file object: {}",
                    obj.repr()?
                )));
            }
            Err(err) => return Err(err),
        }
    };
    if fd.lt(0)? {
        return Err(PyValueError::new_err(format!(
            "Invalid file descriptor: {}",
            fd.str()?
        )));
    }
    Ok(fd)
}

/// The fd a non-negative number from `fileobj_to_fd` names; `None` past a C int, where no fd is
/// (and so none is watched).
fn raw_fd(fd: &Bound<'_, PyAny>) -> Option<RawFd> {
    fd.extract::<i64>()
        .ok()
        .and_then(|fd| RawFd::try_from(fd).ok())
}

fn repr(obj: &Bound<'_, PyAny>) -> String {
    obj.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<object>".to_owned())
}

/// asyncio's test for a coroutine function: 3.14 deprecates `asyncio.iscoroutinefunction` (it
/// warns) and calls the private `coroutines._iscoroutinefunction` it added.
fn iscoroutinefunction(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    ISCOROUTINEFUNCTION
        .get_or_try_init(py, || {
            let coroutines = py.import("asyncio.coroutines")?;
            coroutines
                .getattr(intern!(py, "_iscoroutinefunction"))
                .or_else(|_| coroutines.getattr(intern!(py, "iscoroutinefunction")))
                .map(Bound::unbind)
        })
        .map(|f| f.bind(py))
}

/// asyncio's C Future type (`_asyncio.Future`), if the interpreter has it.
fn c_future(py: Python<'_>) -> PyResult<Option<&Bound<'_, PyAny>>> {
    static C_FUTURE: PyOnceLock<Option<Py<PyAny>>> = PyOnceLock::new();
    C_FUTURE
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(match py.import("_asyncio") {
                Ok(m) => Some(m.getattr(intern!(py, "Future"))?.unbind()),
                Err(_) => None,
            })
        })
        .map(|f| f.as_ref().map(|f| f.bind(py)))
}

/// asyncio's `BaseEventLoop._check_callback`. The callable check always runs (a non-callable
/// would otherwise fail later, far from the mistake); the coroutine-function check, which needs
/// `inspect`, only in debug mode, as asyncio.
#[inline]
fn check_callback(callback: &Bound<'_, PyAny>, method: &str, debug: bool) -> PyResult<()> {
    if !debug && callback.is_callable() {
        return Ok(());
    }
    check_callback_slow(callback, method, debug)
}

#[cold]
#[inline(never)]
fn check_callback_slow(callback: &Bound<'_, PyAny>, method: &str, debug: bool) -> PyResult<()> {
    let py = callback.py();
    let coroutine_error =
        || PyTypeError::new_err(format!("coroutines cannot be used with {method}()"));
    if !callback.is_callable() {
        if ISCOROUTINE
            .import(py, "asyncio", "iscoroutine")?
            .call1((callback,))?
            .is_truthy()?
        {
            return Err(coroutine_error());
        }
        return Err(PyTypeError::new_err(format!(
            "a callable object was expected by {method}(), got {}",
            repr(callback)
        )));
    }
    if debug && iscoroutinefunction(py)?.call1((callback,))?.is_truthy()? {
        return Err(coroutine_error());
    }
    Ok(())
}

#[pyclass(module = "ferroloop._ferroloop", subclass)]
pub struct LoopCore {
    pub(crate) ready: ReadyQueue,
    /// The buffer the previous batch ran from, kept to reuse its capacity.
    spare: ReadyQueue,
    timers: TimerHeap<Py<Handle>>,
    /// Handles removed while the state was borrowed, released once it is not (module docs).
    graveyard: Vec<Py<Handle>>,
    /// `set_task_factory`'s factory.
    task_factory: Option<Py<PyAny>>,
    /// Emptied plain handles ready for reuse (see `recycle`).
    pool: Vec<Py<Handle>>,
    readers: HashMap<RawFd, Watcher>,
    writers: HashMap<RawFd, Watcher>,
    /// The object each fd watched by `add_reader`/`add_writer` was first registered with, as
    /// the key of asyncio's selector keeps it: a socket closed since (`fileno()` -1) is then
    /// still found, by identity, to remove its callbacks.
    watched_files: HashMap<RawFd, Py<PyAny>>,
    /// Taken out while polling, so that no borrow is held while the GIL is released.
    poller: Option<Box<Poller>>,
    /// The fds watched and the epoll instance they are registered with; `None` once closed. It
    /// stays here while the loop's thread polls without the GIL: another thread's add_reader
    /// (which asyncio allows, though it documents it as not thread-safe) registers at once, and
    /// an fd added ready wakes the poll, as with asyncio's selector.
    reactor: Option<Reactor>,
    inbox: Option<Arc<Inbox<Py<Handle>>>>,
    stopping: bool,
    closed: bool,
    debug: bool,
    /// What `set_debug` was given when it was not a bool: `get_debug()` returns it, as asyncio's
    /// returns whatever it stored (`debug` is its truth value, taken once).
    debug_value: Option<Py<PyAny>>,
    /// The thread running the loop (asyncio's `_thread_id`), `None` when not running.
    thread_id: Option<u64>,
    clock_resolution: f64,
    /// The thread that made the loop (see `call_soon_threadsafe`).
    creator_thread: u64,
    /// When the pool may next be trimmed (see `HANDLE_POOL_IDLE`).
    pool_trim_at: f64,
    /// Iterations left before the next signal check (see `SIGNAL_CHECK_EVERY`).
    signal_countdown: u32,
    /// Set while the iteration's callbacks run: stream transports then keep small writes for
    /// one send at the end of the iteration (`SocketTransportCore::write_bytes`).
    batching: bool,
    /// The transports holding such writes, flushed by `flush_writes`.
    unflushed: Vec<Py<SocketTransportCore>>,
    /// `{"loop": self}`, made once: `create_future` passes it to asyncio's C Future as is.
    future_kwargs: Option<Py<PyDict>>,
    /// The last iteration polled and then ran nothing but native transports' readiness: the
    /// next one need not poll again before running what those scheduled (see `run_once`).
    just_polled_io: bool,
    /// `metrics()`'s counters (metrics.rs).
    pub(crate) stats: Counters,
    /// Per-callback timing, while `set_timing(True)` has it on (metrics.rs).
    pub(crate) timing: Option<Box<Timing>>,
}

impl LoopCore {
    pub(crate) fn get_debug_flag(&self) -> bool {
        self.debug
    }

    fn check_closed(&self) -> PyResult<()> {
        if self.closed {
            Err(closed_error())
        } else {
            Ok(())
        }
    }

    /// asyncio's `_check_thread` (debug mode only).
    fn check_thread(&self) -> PyResult<()> {
        match self.thread_id {
            Some(t) if t != current_thread() => Err(PyRuntimeError::new_err(
                "Non-thread-safe operation invoked on an event loop other than the current one",
            )),
            _ => Ok(()),
        }
    }

    /// Checks done before scheduling anything; returns the debug flag.
    fn check_schedule(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        method: &str,
    ) -> PyResult<bool> {
        let debug = {
            let me = slf.try_borrow()?;
            me.check_closed()?;
            if me.debug {
                me.check_thread()?;
            }
            me.debug
        };
        check_callback(callback, method, debug)?;
        Ok(debug)
    }

    /// Builds a plain handle for this loop, reusing a pooled one when possible.
    fn new_handle<'py>(
        slf: &Bound<'py, Self>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
        debug: bool,
    ) -> PyResult<Bound<'py, Handle>> {
        let recycled = slf.try_borrow_mut()?.pool.pop();
        Handle::new_plain(
            slf.py(),
            callback,
            args.into(),
            context,
            slf.as_any(),
            debug,
            recycled,
        )
    }

    /// Takes back a handle that just ran if nothing else references it (the usual case for the
    /// handles asyncio's Tasks and Futures schedule), so the next `call_soon` skips an allocation
    /// and a deallocation; otherwise just releases it.
    fn recycle(slf: &Bound<'_, Self>, handle: Py<Handle>) -> PyResult<()> {
        let py = slf.py();
        // SAFETY: reads the reference count of a live object we hold a reference to.
        let only_ours = unsafe { pyo3::ffi::Py_REFCNT(handle.as_ptr()) } == 1;
        let bound = handle.bind(py);
        if !only_ours || !bound.get_type().is(py.get_type::<Handle>()) || has_weakrefs(bound) {
            retrack(&handle);
            return Ok(());
        }
        let contents = match bound.try_borrow_mut() {
            Ok(mut h) => h.take_contents(),
            Err(_) => return Ok(()),
        };
        // Released with nothing borrowed: these may hold the last reference to objects with
        // finalizers. The handle itself is unreachable from Python (refcount 1, no weakrefs).
        drop(contents);
        let mut me = slf.try_borrow_mut()?;
        if me.pool.len() < HANDLE_POOL_SIZE {
            me.pool.push(handle);
        }
        Ok(())
    }

    /// Releases the handles parked while the state was borrowed.
    fn bury(slf: &Bound<'_, Self>) -> PyResult<()> {
        let dead = std::mem::take(&mut slf.try_borrow_mut()?.graveyard);
        dead.iter().for_each(retrack);
        drop(dead);
        Ok(())
    }

    pub(crate) fn timer_handle_cancelled(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        {
            let mut me = slf.try_borrow_mut()?;
            let me = &mut *me;
            me.timers
                .note_cancelled(is_cancelled(py), &mut me.graveyard);
        }
        Self::bury(slf)
    }

    /// The fd `add_reader`/`add_writer` watch for the number `fd`. One not watched yet is checked
    /// by `PyObject_AsFileDescriptor`, as asyncio's selector registers it (`epoll.register`):
    /// OverflowError past a C int, and 3.13's RuntimeWarning for a bool. An fd watched already is
    /// modified there, which checks nothing.
    fn registrable_fd(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<RawFd> {
        if let Some(raw) = raw_fd(fd) {
            let me = slf.try_borrow()?;
            if me.readers.contains_key(&raw) || me.writers.contains_key(&raw) {
                return Ok(raw);
            }
        }
        // SAFETY: `fd` is a live object; the call returns -1 with an exception set on failure.
        let raw = unsafe { pyo3::ffi::PyObject_AsFileDescriptor(fd.as_ptr()) };
        if raw < 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(raw)
    }

    fn add_watcher(
        slf: &Bound<'_, Self>,
        fileobj: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
        write: bool,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let method = if write { "add_writer" } else { "add_reader" };
        // No thread check, even in debug mode: asyncio's add_reader/add_writer have none (they
        // work from another thread, the loop's poll included; see `reactor`).
        let debug = {
            let me = slf.try_borrow()?;
            me.check_closed()?;
            me.debug
        };
        check_callback(&callback, method, debug)?;
        let fd = Self::registrable_fd(slf, &fileobj_to_fd(fileobj)?)?;
        Self::check_no_transport(slf, fd)?;
        let handle = Self::new_handle(slf, callback, args, context, debug)?.unbind();
        let old = Self::watch(slf, fd, Watcher::Handle(handle.clone_ref(py)), write)?;
        slf.try_borrow_mut()?
            .watched_files
            .entry(fd)
            .or_insert_with(|| fileobj.clone().unbind());
        if let Some(Watcher::Handle(old)) = old {
            // Tracked first: the cancel may fail, and the handle has left the loop either way.
            retrack(&old);
            Handle::cancel_handle(old.bind(py))?;
        }
        Ok(handle)
    }

    fn remove_watcher(
        slf: &Bound<'_, Self>,
        fileobj: &Bound<'_, PyAny>,
        write: bool,
    ) -> PyResult<bool> {
        if slf.try_borrow()?.closed {
            return Ok(false);
        }
        let fd = match fileobj_to_fd(fileobj) {
            Ok(fd) => match raw_fd(&fd) {
                Some(fd) => fd,
                // No fd that large is watched: asyncio's selector has no key for it.
                None => return Ok(false),
            },
            // asyncio's selector then searches its keys for this very object.
            Err(err) if err.is_instance_of::<PyValueError>(slf.py()) => {
                let me = slf.try_borrow()?;
                match me.watched_files.iter().find(|(_, f)| f.is(fileobj)) {
                    Some((&fd, _)) => fd,
                    None => return Err(err),
                }
            }
            Err(err) => return Err(err),
        };
        Self::check_no_transport(slf, fd)?;
        let removed = Self::unwatch(slf, fd, write)?;
        {
            let mut me = slf.try_borrow_mut()?;
            if !me.readers.contains_key(&fd) && !me.writers.contains_key(&fd) {
                me.watched_files.remove(&fd);
            }
        }
        match removed {
            Some(Watcher::Handle(old)) => {
                retrack(&old);
                Handle::cancel_handle(old.bind(slf.py()))?;
                Ok(true)
            }
            // Not reachable: check_no_transport refused the fd above.
            Some(Watcher::Transport(_)) => Ok(false),
            None => Ok(false),
        }
    }

    /// asyncio's `_ensure_fd_no_transport`, for the fds our native transports watch: user
    /// callbacks must not steal a transport's fd.
    fn check_no_transport(slf: &Bound<'_, Self>, fd: RawFd) -> PyResult<()> {
        let transport = {
            let me = slf.try_borrow()?;
            match me.readers.get(&fd).or_else(|| me.writers.get(&fd)) {
                Some(Watcher::Transport(t)) => Some(t.clone_ref(slf.py())),
                _ => None,
            }
        };
        match transport {
            Some(t) => Err(PyRuntimeError::new_err(format!(
                "File descriptor {fd} is used by transport {}",
                repr(t.bind(slf.py()).as_any())
            ))),
            None => Ok(()),
        }
    }

    /// Runs `watcher` whenever `fd` is readable (or writable), replacing (and returning, not
    /// cancelling) the previous one. Native transports watch and unwatch themselves as they
    /// pause and resume.
    pub(crate) fn watch(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        watcher: Watcher,
        write: bool,
    ) -> PyResult<Option<Watcher>> {
        let mut me = slf.try_borrow_mut()?;
        let me = &mut *me;
        me.check_closed()?;
        let reactor = me.reactor.as_mut().ok_or_else(closed_error)?;
        let mut interest = reactor.interest(fd);
        if write {
            interest.write = true;
        } else {
            interest.read = true;
        }
        reactor.set_interest(fd, interest).map_err(os_error)?;
        let map = if write {
            &mut me.writers
        } else {
            &mut me.readers
        };
        Ok(map.insert(fd, watcher))
    }

    /// Stops watching `fd` in one direction; returns the watcher, not cancelled. A closed loop
    /// watches nothing.
    pub(crate) fn unwatch(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        write: bool,
    ) -> PyResult<Option<Watcher>> {
        let mut me = slf.try_borrow_mut()?;
        let me = &mut *me;
        let map = if write {
            &mut me.writers
        } else {
            &mut me.readers
        };
        let Some(old) = map.remove(&fd) else {
            return Ok(None);
        };
        if let Some(reactor) = me.reactor.as_mut() {
            let mut interest = reactor.interest(fd);
            if write {
                interest.write = false;
            } else {
                interest.read = false;
            }
            // The fd may be closed already; asyncio's unregister does not fail then either.
            let _ = reactor.set_interest(fd, interest);
        }
        Ok(Some(old))
    }

    /// `unwatch` of `transport`'s own registration only (see SocketTransportCore::unwatch).
    pub(crate) fn unwatch_transport(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        write: bool,
        transport: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Watcher>> {
        let ours = {
            let me = slf.try_borrow()?;
            let map = if write { &me.writers } else { &me.readers };
            matches!(map.get(&fd), Some(Watcher::Transport(t)) if t.is(transport))
        };
        if ours {
            Self::unwatch(slf, fd, write)
        } else {
            Ok(None)
        }
    }

    /// Queues the watchers of the fds `poller` found ready, as asyncio's `_process_events`.
    fn queue_events(&mut self, py: Python<'_>, poller: &mut Poller) {
        for ev in poller.events.iter() {
            let mut stale = false;
            for (ready, map, write) in [
                (ev.readable, &mut self.readers, false),
                (ev.writable, &mut self.writers, true),
            ] {
                if !ready {
                    continue;
                }
                match map.get(&ev.fd) {
                    // As asyncio's _process_events: a cancelled watcher is unregistered.
                    Some(Watcher::Handle(h)) if is_cancelled(py)(h) => {
                        if let Some(Watcher::Handle(h)) = map.remove(&ev.fd) {
                            self.graveyard.push(h);
                        }
                        stale = true;
                    }
                    Some(w) => {
                        self.ready.push_back(w.ready(py, write));
                        self.stats.io_events += 1;
                    }
                    None => stale = true,
                }
            }
            if stale {
                // The registration no longer matches the watchers (a cancelled one, or one
                // removed from another thread while we polled): fix it, or a level-triggered
                // fd would wake every poll.
                let want = Interest {
                    read: self.readers.contains_key(&ev.fd),
                    write: self.writers.contains_key(&ev.fd),
                };
                if let Some(reactor) = self.reactor.as_mut() {
                    if reactor.interest(ev.fd) != want {
                        let _ = reactor.set_interest(ev.fd, want);
                    }
                }
            }
        }
    }

    /// One iteration; see the module docs.
    fn run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let mut budget = INBOX_BUDGET;
        // When a poll that may block began (the clock read the timeout needed anyway).
        let mut blocking_since = 0.0;
        let (poll, check_signals) = {
            let mut me = slf.try_borrow_mut()?;
            let me = &mut *me;
            me.stats.iterations += 1;
            me.signal_countdown -= 1;
            let check_signals = me.signal_countdown == 0;
            if check_signals {
                me.signal_countdown = SIGNAL_CHECK_EVERY;
            }
            if let Some(inbox) = &me.inbox {
                budget -= inbox.drain_into(&mut me.ready, budget);
            }
            let poll = if !me.ready.is_empty() || me.stopping {
                // Callbacks are waiting, so the poll cannot block. With no fd watched it could
                // find nothing but the waker, whose thread-safe calls the inbox hands over
                // without it: skip the syscall (most of the cost of a call_soon chain). With fds
                // watched, poll every iteration as asyncio does: programs rely on one iteration
                // (`await asyncio.sleep(0)`) letting I/O that is ready be handled. The exception
                // is the iteration right after one that ran only native transports' I/O (a
                // server's data_received, which made a task): it just polled, and no
                // callback of a program has run since, so none can be counting on a poll.
                if (me.readers.is_empty() && me.writers.is_empty()) || me.just_polled_io {
                    None
                } else {
                    Some(Some(Duration::ZERO))
                }
            } else {
                let now = clock::monotonic();
                blocking_since = now;
                // About to block: give back what the pool grew to for a burst, at most once a
                // second so that a flood, which empties the ready queue between its bursts, keeps
                // it. The handles are empty: dropping them runs no Python code.
                if now >= me.pool_trim_at {
                    me.pool.truncate(HANDLE_POOL_IDLE);
                    me.pool_trim_at = now + POOL_TRIM_INTERVAL;
                }
                Some(
                    me.timers
                        .next_deadline(is_cancelled(py), &mut me.graveyard)
                        .map(|when| {
                            let secs = when - now;
                            // Written so NaN (a NaN deadline) gives 0, as asyncio's max(0, ...).
                            if secs > 0.0 {
                                Duration::from_secs_f64(secs.min(MAXIMUM_SELECT_TIMEOUT))
                            } else {
                                Duration::ZERO
                            }
                        }),
                )
            }
            .map(|timeout| {
                me.poller
                    .take()
                    .ok_or_else(closed_error)
                    .map(|p| (p, timeout))
            })
            .transpose()?;
            (poll, check_signals)
        };
        let poll_ran = poll.is_some();
        // When a blocking poll returned: the time the timers below are compared with.
        let mut polled_at = None;
        let polled = match poll {
            None => Ok(()),
            Some((mut poller, timeout)) => {
                let polled = if timeout == Some(Duration::ZERO) {
                    poller.reactor.poll(&mut poller.events, timeout)
                } else {
                    let p = &mut *poller;
                    let polled = py.detach(|| p.reactor.poll(&mut p.events, timeout));
                    polled_at = Some(clock::monotonic());
                    polled
                };
                let mut me = slf.try_borrow_mut()?;
                if let Some(t) = polled_at {
                    me.stats.blocked += t - blocking_since;
                }
                me.queue_events(py, &mut poller);
                me.poller = Some(poller);
                polled
            }
        };
        // Expired timers, the inbox again, and the batch to run, in one borrow.
        let (mut batch, debug, timed, dead) = {
            let mut me = slf.try_borrow_mut()?;
            let me = &mut *me;
            if !me.timers.is_empty() {
                let end_time = polled_at.unwrap_or_else(clock::monotonic) + me.clock_resolution;
                let before = me.ready.len();
                me.timers
                    .pop_due(end_time, is_cancelled(py), &mut me.ready, &mut me.graveyard);
                me.stats.timers_fired += (me.ready.len() - before) as u64;
                for item in me.ready.range(before..) {
                    if let Ready::Handle(h) = item {
                        if let Ok(mut h) = h.bind(py).try_borrow_mut() {
                            h.scheduled = false;
                        }
                    }
                }
            }
            if budget > 0 {
                if let Some(inbox) = &me.inbox {
                    inbox.drain_into(&mut me.ready, budget);
                }
            }
            // Handles removed while borrowed; released below, with nothing borrowed.
            let dead = (!me.graveyard.is_empty()).then(|| std::mem::take(&mut me.graveyard));
            let mut batch = std::mem::take(&mut me.spare);
            std::mem::swap(&mut batch, &mut me.ready);
            me.batching = true;
            // libuv's order for what I/O callbacks schedule, with asyncio's iterations: see the
            // poll decision above.
            me.just_polled_io = poll_ran
                && !batch.is_empty()
                && batch.iter().all(|item| !matches!(item, Ready::Handle(_)));
            // Counted as run now; run_batch takes back what it leaves unrun.
            me.stats.callbacks += batch.len() as u64;
            me.stats.ready_max = me.stats.ready_max.max(batch.len());
            (batch, me.debug, me.timing.is_some(), dead)
        };
        if let Some(dead) = dead {
            dead.iter().for_each(retrack);
        }
        if let Err(err) = polled {
            let err = if err.kind() != std::io::ErrorKind::Interrupted {
                Some(os_error(err))
            } else {
                // Ctrl-C while blocked: run the interpreter's signal handlers now.
                py.check_signals().err()
            };
            if let Some(err) = err {
                slf.try_borrow_mut()?.batching = false;
                Self::unrun(slf, batch)?;
                return Err(err);
            }
        }
        let outcome = Self::run_batch(slf, &mut batch, debug, timed);
        let unflushed = {
            let mut me = slf.try_borrow_mut()?;
            // `batch` is empty now (or its rest went back to the ready queue): keep its
            // allocation for the next iteration. What it replaces is the empty default queue
            // taken above, which owns nothing.
            std::mem::forget(std::mem::replace(&mut me.spare, batch));
            me.batching = false;
            (!me.unflushed.is_empty()).then(|| std::mem::take(&mut me.unflushed))
        };
        // Even when the batch failed (Ctrl-C out of run_forever): the bytes were written.
        if let Some(unflushed) = unflushed {
            let flushed = Self::flush_writes(slf, unflushed);
            outcome?;
            flushed?;
        } else {
            outcome?;
        }
        if check_signals {
            py.check_signals()?;
        }
        Ok(())
    }

    /// Puts back a batch that did not run, uncounted.
    #[cold]
    fn unrun(slf: &Bound<'_, Self>, batch: ReadyQueue) -> PyResult<()> {
        let mut me = slf.try_borrow_mut()?;
        me.stats.callbacks -= batch.len() as u64;
        me.ready = batch;
        Ok(())
    }

    /// Sends what the iteration's callbacks wrote to each stream transport (see `batching`).
    /// Writes made meanwhile (by a protocol's `connection_lost` or `resume_writing`) are sent at
    /// once, as `batching` is off. Every transport is flushed even if one raises
    /// KeyboardInterrupt or SystemExit; the first such error is returned.
    #[inline(never)]
    fn flush_writes(
        slf: &Bound<'_, Self>,
        mut unflushed: Vec<Py<SocketTransportCore>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let mut first_err = None;
        for t in unflushed.drain(..) {
            if let Err(err) = SocketTransportCore::flush(t.bind(py)) {
                first_err.get_or_insert(err);
            }
        }
        // Keep the allocation: a server flushes on most iterations.
        let mut me = slf.try_borrow_mut()?;
        if me.unflushed.is_empty() {
            me.unflushed = unflushed;
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Takes `transport` into this iteration's flush if the iteration's callbacks are running;
    /// false otherwise (the caller then sends at once).
    pub(crate) fn defer_flush(&mut self, transport: &Bound<'_, SocketTransportCore>) -> bool {
        if self.batching {
            self.unflushed.push(transport.clone().unbind());
        }
        self.batching
    }

    /// Runs `batch` in order. On an error (only what leaves `run_forever`), what did not run is
    /// put back at the front of the ready queue, as asyncio pops handles one at a time.
    ///
    /// With `timed` (`set_timing(True)`), each entry is timed (metrics.rs, `entry_ended`),
    /// which also stands for debug mode's slow-callback log: one report per slow callback.
    fn run_batch(
        slf: &Bound<'_, Self>,
        batch: &mut VecDeque<Ready>,
        debug: bool,
        timed: bool,
    ) -> PyResult<()> {
        let py = slf.py();
        // Timing's state is the loop's (metrics.rs), not a local: the untimed loop pays a test
        // of `timed` per hook and nothing else (a local timer, or a result passed through it,
        // cost 10-15 instructions per callback).
        if timed {
            metrics::batch_began(slf)?;
        }
        let debug_untimed = debug && !timed;
        while let Some(item) = batch.pop_front() {
            if timed {
                metrics::entry_begins(slf, &item);
            }
            let result = match item {
                Ready::Handle(handle) => {
                    let mut result = if debug_untimed {
                        Self::run_handle_debug(slf, handle.bind(py))
                    } else {
                        run_handle(py, handle.bind(py))
                    };
                    if timed {
                        metrics::entry_ended(
                            slf,
                            handle.bind(py).as_any(),
                            "callback",
                            &mut result,
                        );
                    }
                    // Released (or recycled) here, with nothing borrowed: the handle may hold
                    // the last reference to objects with finalizers.
                    result.and(Self::recycle(slf, handle))
                }
                Ready::Read(t) if debug_untimed => Self::dispatch_debug(slf, t.bind(py), false),
                Ready::Write(t) if debug_untimed => Self::dispatch_debug(slf, t.bind(py), true),
                Ready::Read(t) => {
                    let mut result = SocketTransportCore::dispatch(t.bind(py), false);
                    if timed {
                        metrics::entry_ended(slf, t.bind(py).as_any(), "read", &mut result);
                    }
                    result
                }
                Ready::Write(t) => {
                    let mut result = SocketTransportCore::dispatch(t.bind(py), true);
                    if timed {
                        metrics::entry_ended(slf, t.bind(py).as_any(), "write", &mut result);
                    }
                    result
                }
            };
            if let Err(err) = result {
                let mut me = slf.try_borrow_mut()?;
                me.stats.callbacks -= batch.len() as u64;
                while let Some(h) = batch.pop_back() {
                    me.ready.push_front(h);
                }
                return Err(err);
            }
        }
        Ok(())
    }

    /// `call_soon` as the vectorcall entry point calls it (`fastcall.rs`).
    pub(crate) fn call_soon_args<'py>(
        slf: &Bound<'py, Self>,
        callback: Bound<'py, PyAny>,
        args: Args,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        // check_schedule and new_handle in one borrow: this is every Future callback's and
        // Task step's way in.
        let (debug, recycled) = {
            let mut me = slf.try_borrow_mut()?;
            me.check_closed()?;
            if me.debug {
                me.check_thread()?;
            }
            (me.debug, me.pool.pop())
        };
        // A call with `context=` is how asyncio's C Future schedules its done callbacks (all of
        // them, in one loop inside set_result()); an error here would leave the ones after it
        // unscheduled and their awaiters waiting forever. Such a call is checked in debug mode
        // only, as asyncio checks: a non-callable then fails when it runs, reported to the
        // exception handler ("Exception in callback"), as on the stock loop.
        if context.is_none() || debug {
            check_callback(&callback, "call_soon", debug)?;
        }
        let handle = Handle::new_plain(
            slf.py(),
            callback,
            args,
            context,
            slf.as_any(),
            debug,
            recycled,
        )?;
        slf.try_borrow_mut()?
            .ready
            .push_back(Ready::Handle(handle.clone().unbind()));
        Ok(handle)
    }

    /// `call_soon_threadsafe` as the vectorcall entry point calls it (`fastcall.rs`).
    pub(crate) fn call_soon_threadsafe_args<'py>(
        slf: &Bound<'py, Self>,
        callback: Bound<'py, PyAny>,
        args: Args,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        let debug = {
            let me = slf.try_borrow()?;
            me.check_closed()?;
            me.debug
        };
        check_callback(&callback, "call_soon_threadsafe", debug)?;
        let py = slf.py();
        // From the pool like call_soon's: the GIL serialises this thread's use of it with the
        // loop thread's (the module is not free-threaded, see lib.rs).
        let recycled = slf.try_borrow_mut()?.pool.pop();
        let handle = Handle::new_plain(py, callback, args, context, slf.as_any(), debug, recycled)?;
        if *THREADSAFE_HANDLES.get_or_try_init(py, || {
            py.import("asyncio.events")?
                .hasattr(intern!(py, "_ThreadSafeHandle"))
        })? {
            handle.try_borrow_mut()?.run_lock = Some(Arc::default());
        }
        // Where the handle goes is decided here, with no Python code between the decision and
        // the push: building the handle can run Python code (the GC) and switch threads, and the
        // loop may have started and gone to sleep meanwhile; a handle put on its ready queue then
        // would wait, unseen, for whatever wakes the loop next (asyncio's
        // run_coroutine_threadsafe test hung on that under load).
        let here = current_thread();
        let backlog = {
            let mut me = slf.try_borrow_mut()?;
            me.check_closed()?;
            match (me.thread_id, &me.inbox) {
                (Some(t), Some(inbox)) if t != here => {
                    inbox.push(handle.clone().unbind()).map_err(os_error)?
                }
                (thread_id, _) => {
                    me.ready.push_back(Ready::Handle(handle.clone().unbind()));
                    // Not running: a call from a thread other than the loop's creator comes from
                    // a producer thread all the same (see INBOX_BACKLOG).
                    if thread_id.is_none() && here != me.creator_thread {
                        me.ready.len()
                    } else {
                        0
                    }
                }
            }
        };
        if backlog > INBOX_BACKLOG {
            // The loop is far behind: step off the GIL for a moment so other threads, the
            // loop's among them, get it. Threads that never release the GIL would otherwise keep
            // the loop from running at all (the stock loop's producers release it at every call,
            // in the send() that wakes the loop), and the backlog would grow without bound.
            py.detach(|| std::thread::sleep(BACKLOG_PAUSE));
        }
        Ok(handle)
    }

    #[cold]
    fn run_handle_debug(slf: &Bound<'_, Self>, handle: &Bound<'_, Handle>) -> PyResult<()> {
        // asyncio skips a cancelled handle before it starts the clock.
        if handle.try_borrow()?.cancelled {
            return Ok(());
        }
        let t0 = clock::monotonic();
        // What escapes a handle (KeyboardInterrupt, SystemExit) leaves before the timing, as
        // out of asyncio's `handle._run()`.
        run_handle(slf.py(), handle)?;
        let dt = clock::monotonic() - t0;
        if Self::is_slow(slf, dt)? {
            slf.call_method1("_log_slow_callback", (handle, dt))?;
        }
        Ok(())
    }

    /// asyncio's `dt >= self.slow_callback_duration`, with whatever the attribute holds (a
    /// TypeError for what a float cannot be compared with, False for NaN).
    fn is_slow(slf: &Bound<'_, Self>, dt: f64) -> PyResult<bool> {
        let py = slf.py();
        let slow = slf.getattr(intern!(py, "slow_callback_duration"))?;
        match slow.cast_exact::<PyFloat>() {
            Ok(slow) => Ok(dt >= slow.value()),
            Err(_) => PyFloat::new(py, dt).ge(&slow),
        }
    }

    /// A native transport's readiness in debug mode, timed as asyncio times the transport's
    /// reader or writer handle. A slow one is logged as that handle would be: a handle of the
    /// transport's `_read_ready`/`_write_ready`, cancelled if the callback stopped the watching
    /// (asyncio's remove_reader/remove_writer cancel the handle).
    #[cold]
    fn dispatch_debug(
        slf: &Bound<'_, Self>,
        transport: &Bound<'_, SocketTransportCore>,
        write: bool,
    ) -> PyResult<()> {
        let py = slf.py();
        let watching = |slf: &Bound<'_, Self>| -> PyResult<bool> {
            let me = slf.try_borrow()?;
            let map = if write { &me.writers } else { &me.readers };
            Ok(map
                .values()
                .any(|w| matches!(w, Watcher::Transport(t) if t.is(transport))))
        };
        // Unwatched since the poll: asyncio's handle would be cancelled, and skipped untimed.
        if !watching(slf)? {
            return SocketTransportCore::dispatch(transport, write);
        }
        let t0 = clock::monotonic();
        SocketTransportCore::dispatch(transport, write)?;
        let dt = clock::monotonic() - t0;
        if !Self::is_slow(slf, dt)? {
            return Ok(());
        }
        let method = if write { "_write_ready" } else { "_read_ready" };
        let callback = transport.getattr(method)?;
        let handle = Bound::new(
            py,
            Handle::build(py, callback, Args::Empty, None, slf.as_any(), false, None)?,
        )?;
        if !watching(slf)? {
            handle.try_borrow_mut()?.cancelled = true;
        }
        slf.call_method1("_log_slow_callback", (handle, dt))?;
        Ok(())
    }
}

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> PyResult<Self> {
        let reactor = Reactor::new().map_err(os_error)?;
        let inbox = Arc::new(Inbox::new(reactor.waker().clone()));
        Ok(LoopCore {
            ready: ReadyQueue::default(),
            spare: ReadyQueue::default(),
            timers: TimerHeap::new(),
            graveyard: Vec::new(),
            pool: Vec::with_capacity(HANDLE_POOL_IDLE),
            task_factory: None,
            readers: HashMap::new(),
            writers: HashMap::new(),
            watched_files: HashMap::new(),
            poller: Some(Box::new(Poller {
                reactor: reactor.poll_handle(),
                events: Events::with_capacity(1024),
            })),
            reactor: Some(reactor),
            inbox: Some(inbox),
            stopping: false,
            closed: false,
            debug: false,
            debug_value: None,
            thread_id: None,
            clock_resolution: clock::resolution(),
            creator_thread: current_thread(),
            signal_countdown: SIGNAL_CHECK_EVERY,
            pool_trim_at: 0.0,
            batching: false,
            unflushed: Vec::new(),
            future_kwargs: None,
            just_polled_io: false,
            stats: Counters::default(),
            timing: None,
        })
    }

    /// The loop's clock: `time.monotonic()`.
    fn time(&self) -> f64 {
        clock::monotonic()
    }

    #[pyo3(signature = (callback, *args, context=None))]
    fn call_soon<'py>(
        slf: &Bound<'py, Self>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        Self::call_soon_args(slf, callback, args.into(), context)
    }

    /// `delay` is added to the loop's time as asyncio's `self.time() + delay` does, so whatever
    /// Python's `+` refuses (an object with only `__index__` or `__float__`, a Decimal) is its
    /// TypeError, and a Fraction or numpy number works.
    #[pyo3(signature = (delay, callback, *args, context=None))]
    fn call_later<'py>(
        slf: &Bound<'py, Self>,
        delay: &Bound<'py, PyAny>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, TimerHandle>> {
        if delay.is_none() {
            return Err(PyTypeError::new_err("delay must not be None"));
        }
        let now = clock::monotonic();
        let secs = if let Ok(delay) = delay.cast::<PyFloat>() {
            Some(delay.value())
        } else if delay.is_instance_of::<PyInt>() {
            // float + int: the int as a double (OverflowError past one, as there).
            Some(delay.extract::<f64>()?)
        } else {
            None
        };
        if let Some(secs) = secs {
            let when = now + secs;
            return Self::schedule_at(slf, |_| Ok(when), callback, args, context, "call_later");
        }
        let when = PyFloat::new(slf.py(), now).add(delay)?;
        Self::schedule_at(
            slf,
            |pending| deadline(&when, pending),
            callback,
            args,
            context,
            "call_later",
        )
    }

    #[pyo3(signature = (when, callback, *args, context=None))]
    fn call_at<'py>(
        slf: &Bound<'py, Self>,
        when: Bound<'py, PyAny>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, TimerHandle>> {
        if when.is_none() {
            return Err(PyTypeError::new_err("when cannot be None"));
        }
        Self::schedule_at(
            slf,
            |pending| deadline(&when, pending),
            callback,
            args,
            context,
            "call_at",
        )
    }

    /// Schedules from any thread. From the loop's own thread (or while the loop is not running)
    /// the handle goes straight to the ready queue, which keeps its order relative to
    /// `call_soon` as asyncio's shared deque does; from other threads it goes through the inbox
    /// and wakes the poll.
    #[pyo3(signature = (callback, *args, context=None))]
    fn call_soon_threadsafe<'py>(
        slf: &Bound<'py, Self>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        Self::call_soon_threadsafe_args(slf, callback, args.into(), context)
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn add_reader(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Self::add_watcher(slf, fd, callback, args, None, false)
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn add_writer(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Self::add_watcher(slf, fd, callback, args, None, true)
    }

    fn remove_reader(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::remove_watcher(slf, fd, false)
    }

    fn remove_writer(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::remove_watcher(slf, fd, true)
    }

    // The internal interface asyncio's own transports and networking methods call (see
    // ferroloop._net, which also makes _remove_reader/_remove_writer the native public methods):
    // without the Python subclass's check for an fd owned by a live transport, which those
    // callers have made. `context` is 3.15's: the callback runs in it rather than in a copy of
    // the current context.

    #[pyo3(signature = (fd, callback, *args, context=None))]
    fn _add_reader(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        Self::add_watcher(slf, fd, callback, args, context, false)
    }

    #[pyo3(signature = (fd, callback, *args, context=None))]
    fn _add_writer(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        Self::add_watcher(slf, fd, callback, args, context, true)
    }

    /// The callback `add_reader`/`add_writer` registered for the number `fd`, if any: asyncio's
    /// pipe transports, whose pipe was closed under them, check that a registration on their old
    /// number is still theirs before removing it (ferroloop._unix).
    fn _watcher_callback(&self, py: Python<'_>, fd: RawFd, write: bool) -> Option<Py<PyAny>> {
        let watchers = if write { &self.writers } else { &self.readers };
        match watchers.get(&fd)? {
            Watcher::Handle(h) => h
                .bind(py)
                .try_borrow()
                .ok()?
                .callback
                .as_ref()
                .map(|c| c.clone_ref(py)),
            Watcher::Transport(_) => None,
        }
    }

    /// `asyncio.Future(loop=self)`. The class is looked up on `asyncio.futures` at each call, as
    /// asyncio's `create_future` does, so a patched `asyncio.futures.Future` is honoured.
    fn create_future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let futures = FUTURES_MODULE.import(py, "asyncio", "futures")?;
        // The module's attribute, read from its dict (a plain module: the same answer as
        // getattr, without the type lookup that precedes it).
        let class = match futures.cast::<PyModule>() {
            Ok(m) => m.dict().get_item(intern!(py, "Future"))?,
            Err(_) => None,
        };
        let class = match class {
            Some(class) => class,
            None => futures.getattr(intern!(py, "Future"))?,
        };
        // asyncio's own C Future gets `loop=self` from a dict made once per loop: its __init__
        // only reads it, and building one per call was ~550 instructions of a
        // create_future/set_result/await round trip of ~5,600. (`Future()` without `loop=`
        // costs a getpid() syscall on 3.11, in its get_running_loop().) Any other class gets a
        // fresh dict, as it may keep what it is given.
        if c_future(py)?.is_some_and(|c| class.is(c)) {
            let cached = slf
                .try_borrow()?
                .future_kwargs
                .as_ref()
                .map(|k| k.clone_ref(py));
            let kwargs = match cached {
                Some(kwargs) => kwargs.into_bound(py),
                None => {
                    let kwargs = PyDict::new(py);
                    kwargs.set_item(intern!(py, "loop"), slf)?;
                    slf.try_borrow_mut()?.future_kwargs = Some(kwargs.clone().unbind());
                    kwargs
                }
            };
            return class.call((), Some(&kwargs));
        }
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "loop"), slf)?;
        class.call((), Some(&kwargs))
    }

    /// asyncio's `BaseEventLoop.create_task`, with the running Python's signature (see
    /// `TaskApi`): keyword arguments the version does not know are a TypeError, as there.
    #[pyo3(signature = (coro, **kwargs))]
    fn create_task<'py>(
        slf: &Bound<'py, Self>,
        coro: Bound<'py, PyAny>,
        kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let (factory, debug) = {
            let me = slf.try_borrow()?;
            me.check_closed()?;
            (me.task_factory.as_ref().map(|f| f.clone_ref(py)), me.debug)
        };
        let api = TaskApi::of(py);
        // `name` and `context` leave `kwargs` where the version treats them apart.
        let (name, context) = match (&kwargs, api) {
            (Some(kw), TaskApi::NameContext | TaskApi::NameContextForward) => {
                let name = kw.get_item(intern!(py, "name"))?;
                let context = kw.get_item(intern!(py, "context"))?;
                kw.del_item(intern!(py, "name")).ok();
                kw.del_item(intern!(py, "context")).ok();
                if api == TaskApi::NameContext {
                    if let Some((key, _)) = kw.iter().next() {
                        return Err(PyTypeError::new_err(format!(
                            "create_task() got an unexpected keyword argument '{key}'"
                        )));
                    }
                }
                (
                    name.filter(|n| !n.is_none()),
                    context.filter(|c| !c.is_none()),
                )
            }
            _ => (None, None),
        };
        let kwargs = kwargs.filter(|kw| !kw.is_empty());
        let Some(factory) = factory else {
            let task_kwargs = match kwargs {
                Some(kw) => kw,
                None => PyDict::new(py),
            };
            task_kwargs.set_item(intern!(py, "loop"), slf)?;
            if let Some(name) = name {
                task_kwargs.set_item(intern!(py, "name"), name)?;
            }
            if let Some(context) = context {
                task_kwargs.set_item(intern!(py, "context"), context)?;
            }
            let task = TASKS_MODULE
                .import(py, "asyncio", "tasks")?
                .getattr(intern!(py, "Task"))?
                .call((coro,), Some(&task_kwargs))?;
            if debug {
                // Drop this call's own frame from the recorded stack, as asyncio does.
                if let Ok(tb) = task.getattr(intern!(py, "_source_traceback")) {
                    if tb.is_truthy()? {
                        tb.del_item(-1)?;
                    }
                }
            }
            return Ok(task);
        };
        let factory = factory.bind(py);
        if api == TaskApi::Forward {
            // 3.14 (and 3.13.3): everything goes to the factory as given; it names the task.
            return factory.call((slf, coro), kwargs.as_ref());
        }
        let task = match (context, kwargs) {
            // The legacy two-argument form when nothing else is asked for.
            (None, None) => factory.call1((slf, coro))?,
            (context, kwargs) => {
                let kwargs = kwargs.unwrap_or_else(|| PyDict::new(py));
                if let Some(context) = context {
                    kwargs.set_item(intern!(py, "context"), context)?;
                }
                factory.call((slf, coro), Some(&kwargs))?
            }
        };
        if crate::python_version(py) >= (3, 13, 0) {
            // 3.13 dropped tasks._set_task_name and calls set_name() itself.
            if let Some(name) = name {
                task.call_method1(intern!(py, "set_name"), (name,))?;
            }
        } else {
            SET_TASK_NAME
                .import(py, "asyncio.tasks", "_set_task_name")?
                .call1((&task, name))?;
        }
        Ok(task)
    }

    fn set_task_factory(&mut self, factory: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let factory = factory.filter(|f| !f.is_none());
        if let Some(f) = &factory {
            if !f.is_callable() {
                return Err(PyTypeError::new_err(
                    "task factory must be a callable or None",
                ));
            }
        }
        self.task_factory = factory.map(Bound::unbind);
        Ok(())
    }

    fn get_task_factory(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.task_factory.as_ref().map(|f| f.clone_ref(py))
    }

    /// A handle that is not scheduled yet (signal handlers keep one and queue it per signal).
    #[pyo3(signature = (callback, args, context=None))]
    fn _make_handle<'py>(
        slf: &Bound<'py, Self>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        // No thread check, as asyncio's add_signal_handler has none (only the main thread can
        // set the wakeup fd, and the loop may run in another).
        let debug = {
            let me = slf.try_borrow()?;
            me.check_closed()?;
            me.debug
        };
        check_callback(&callback, "add_signal_handler", debug)?;
        let handle = Handle::new_plain(
            slf.py(),
            callback,
            args.into(),
            context,
            slf.as_any(),
            debug,
            None,
        )?;
        // Kept by the Python side between signals, not by the loop: tracked.
        retrack(&handle.clone().unbind());
        Ok(handle)
    }

    /// Pushes an existing handle to the ready queue (signal handlers use it).
    fn _add_callback(slf: &Bound<'_, Self>, handle: Py<Handle>) -> PyResult<()> {
        slf.try_borrow_mut()?.ready.push_back(Ready::Handle(handle));
        Ok(())
    }

    fn stop(&mut self) {
        self.stopping = true;
    }

    fn is_running(&self) -> bool {
        self.thread_id.is_some()
    }

    fn is_closed(&self) -> bool {
        self.closed
    }

    fn get_debug(&self, py: Python<'_>) -> Py<PyAny> {
        match &self.debug_value {
            Some(value) => value.clone_ref(py),
            None => PyBool::new(py, self.debug).to_owned().into_any().unbind(),
        }
    }

    /// Any object, as asyncio's `set_debug` stores whatever it is given (and `get_debug` returns
    /// it). Its truth value is taken here, once: asyncio takes it at each use, so an object whose
    /// `__bool__` raises makes every later call_soon, call_later, close... raise; here set_debug
    /// raises it, and the loop keeps its flag.
    fn _set_debug_flag(slf: &Bound<'_, Self>, enabled: &Bound<'_, PyAny>) -> PyResult<()> {
        let debug = enabled.is_truthy()?;
        let value = (!enabled.is_instance_of::<PyBool>()).then(|| enabled.clone().unbind());
        let old = {
            let mut me = slf.try_borrow_mut()?;
            me.debug = debug;
            std::mem::replace(&mut me.debug_value, value)
        };
        // Released with nothing borrowed: it may have a finalizer.
        drop(old);
        Ok(())
    }

    #[getter]
    fn _debug(&self, py: Python<'_>) -> Py<PyAny> {
        self.get_debug(py)
    }

    #[getter]
    fn _stopping(&self) -> bool {
        self.stopping
    }

    #[getter]
    fn _closed(&self) -> bool {
        self.closed
    }

    #[getter]
    fn _thread_id(&self) -> Option<u64> {
        self.thread_id
    }

    /// The numbers behind `metrics()`, which python/ferroloop/_metrics.py makes a snapshot of.
    fn _metrics_raw<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        if self.thread_id == Some(current_thread()) {
            self.stats.take_io();
        }
        let fds = self.readers.len()
            + self
                .writers
                .keys()
                .filter(|fd| !self.readers.contains_key(fd))
                .count();
        let (pending, ready) = (self.timers.live_len(), self.ready.len());
        crate::metrics::raw(py, self, pending, ready, fds)
    }

    /// Turns per-callback timing on or off (`Loop.set_timing`); off forgets what was recorded.
    fn _set_timing(&mut self, enabled: bool) {
        if enabled != self.timing.is_some() {
            self.timing = enabled.then(Box::default);
        }
    }

    fn get_timing(&self) -> bool {
        self.timing.is_some()
    }

    /// Number of ready handles and of scheduled timers (cancelled included), for tests and repr.
    fn _queue_sizes(&self) -> (usize, usize) {
        (self.ready.len(), self.timers.len())
    }

    #[getter]
    fn _clock_resolution(&self) -> f64 {
        self.clock_resolution
    }

    fn _timer_handle_cancelled(slf: &Bound<'_, Self>, _handle: &Bound<'_, PyAny>) -> PyResult<()> {
        // Our own TimerHandles notify the heap themselves; asyncio.TimerHandle objects created by
        // third-party code against this loop are not in the heap, so there is nothing to count.
        let _ = slf;
        Ok(())
    }

    /// Marks the loop running on this thread (the start of asyncio's `run_forever`).
    fn _enter_run(&mut self) -> PyResult<()> {
        self.check_closed()?;
        if self.thread_id.is_some() {
            return Err(PyRuntimeError::new_err(
                "This event loop is already running",
            ));
        }
        self.thread_id = Some(current_thread());
        self.stats.run_started = Some(clock::monotonic());
        Ok(())
    }

    /// The end of asyncio's `run_forever`: not stopping, not running.
    fn _leave_run(&mut self) {
        self.stats.leave_run(clock::monotonic());
        self.stopping = false;
        self.thread_id = None;
        // A stopped loop keeps no burst-sized pool (see HANDLE_POOL_IDLE); the handles are empty.
        self.pool.truncate(HANDLE_POOL_IDLE);
    }

    /// Runs iterations until `stop()`.
    fn _run_forever_core(slf: &Bound<'_, Self>) -> PyResult<()> {
        loop {
            Self::run_once(slf)?;
            if slf.try_borrow()?.stopping {
                return Ok(());
            }
        }
    }

    fn _run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::run_once(slf)
    }

    /// Releases everything the loop holds and closes its epoll and eventfd; returns False when it
    /// was closed already.
    fn _close_core(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let released = {
            let mut me = slf.try_borrow_mut()?;
            if me.thread_id.is_some() {
                return Err(PyRuntimeError::new_err("Cannot close a running event loop"));
            }
            if me.closed {
                return Ok(false);
            }
            me.closed = true;
            let mut handles: Vec<Py<Handle>> = me.timers.clear();
            if let Some(inbox) = me.inbox.take() {
                handles.extend(inbox.clear());
            }
            handles.append(&mut me.graveyard);
            handles.append(&mut me.pool);
            me.poller = None;
            me.reactor = None;
            (
                handles,
                std::mem::take(&mut me.ready),
                std::mem::take(&mut me.spare),
                std::mem::take(&mut me.readers),
                std::mem::take(&mut me.writers),
                std::mem::take(&mut me.watched_files),
            )
        };
        // Handles someone else still references are tracked by the GC again (handles.rs).
        let (handles, ready, spare, readers, writers, _) = &released;
        handles.iter().for_each(retrack);
        for item in ready.iter().chain(spare.iter()) {
            if let Ready::Handle(h) = item {
                retrack(h);
            }
        }
        for watcher in readers.values().chain(writers.values()) {
            if let Watcher::Handle(h) = watcher {
                retrack(h);
            }
        }
        drop(released);
        Ok(true)
    }

    /// Pending handles are not tracked by the GC (see handles.rs): what such a handle references
    /// is visited here, as if the handle were a container the loop owns, but only when every
    /// reference to the handle is one of the loop's. A handle that something else references
    /// too (a Python object keeping a TimerHandle, the local batch of the running iteration, the
    /// inbox) is not visited: to the GC, what it holds then looks referenced from outside, which
    /// keeps it alive as long as the handle is, never less. Visiting any reference twice would
    /// make the GC free objects still in use, hence the count per handle.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.task_factory)?;
        visit.call(&self.future_kwargs)?;
        visit.call(&self.debug_value)?;
        // SAFETY: tp_traverse runs with the GIL held (the GC runs attached), and borrowing a
        // handle's cell neither runs Python code nor touches the GC.
        let py = unsafe { Python::assume_attached() };
        // Only a watcher's handle can be held twice by the loop (by its fd's entry and, once the
        // fd is ready, by the ready queue): those are counted. Any other handle sits in exactly
        // one of the containers below, so its count is 1 and no map is needed (were one held
        // twice, its reference count would exceed 1 and it would merely not be visited, the safe
        // side). This runs twice per collection over every pending handle: a map of them all
        // made full collections with 100k tasks or timers pending cost 1.8-3x rloop's.
        let mut watched: HashMap<*mut pyo3::ffi::PyObject, (usize, &Py<Handle>)> = HashMap::new();
        for watcher in self.readers.values().chain(self.writers.values()) {
            match watcher {
                Watcher::Handle(h) => watched.entry(h.as_ptr()).or_insert((0, h)).0 += 1,
                Watcher::Transport(t) => visit.call(t)?,
            }
        }
        let visit_held = |h: &Py<Handle>, count: usize| -> Result<(), PyTraverseError> {
            let ptr = h.as_ptr();
            // SAFETY: `ptr` is a live object the loop holds a reference to.
            if unsafe { pyo3::ffi::PyObject_GC_IsTracked(ptr) } != 0 {
                // A tracked handle (a signal handler's) is a GC object like any: visit the
                // loop's references to it, and it visits what it holds.
                for _ in 0..count {
                    visit.call(h)?;
                }
            // SAFETY: as above.
            } else if unsafe { pyo3::ffi::Py_REFCNT(ptr) } as usize == count {
                if let Ok(h) = h.bind(py).try_borrow() {
                    h.visit_contents(&visit)?;
                }
            }
            Ok(())
        };
        let queued = self
            .ready
            .iter()
            .chain(self.spare.iter())
            .filter_map(|item| match item {
                Ready::Handle(h) => Some(h),
                Ready::Read(_) | Ready::Write(_) => None,
            });
        for h in self
            .timers
            .iter()
            .chain(self.graveyard.iter())
            .chain(queued)
        {
            match watched.get_mut(&h.as_ptr()) {
                Some((count, _)) => *count += 1,
                None => visit_held(h, 1)?,
            }
        }
        for item in self.ready.iter().chain(self.spare.iter()) {
            if let Ready::Read(t) | Ready::Write(t) = item {
                visit.call(t)?;
            }
        }
        for (h, count) in watched.values().map(|(count, h)| (*h, *count)) {
            visit_held(h, count)?;
        }
        for file in self.watched_files.values() {
            visit.call(file)?;
        }
        for t in &self.unflushed {
            visit.call(t)?;
        }
        Ok(())
    }

    // The handles released here are not tracked again (tracking objects in the middle of a
    // collection is not something to do): one that something else still references keeps what
    // it holds alive for as long as it lives, which can only leak, never free too early.
    fn __clear__(&mut self) {
        self.ready.clear();
        self.spare.clear();
        self.timers.clear();
        self.graveyard.clear();
        self.pool.clear();
        self.task_factory = None;
        self.future_kwargs = None;
        self.debug_value = None;
        self.readers.clear();
        self.writers.clear();
        self.watched_files.clear();
        self.unflushed.clear();
    }
}

/// The deadline on the loop's clock. asyncio keeps whatever object it is given and only uses
/// it once the timer is in its heap: compared with floats (the heap push, when another timer
/// is pending: "'<' not supported between instances of 'object' and 'float'"; the iteration's
/// `when >= end_time`) and a float subtracted from it (the poll's timeout, when the loop
/// waits for it). A deadline those fail on fails there, out of `run_forever` when nothing
/// else was pending. Our heap holds doubles, so those operations are made here, at once, with
/// asyncio's messages (`pending`: is a timer scheduled, so that the first one asyncio would
/// make is the push's `<`), and the deadline is the double `when - 0.0` is: a Fraction works
/// as there, an object with only `__float__` or `__index__`, or a Decimal, is asyncio's
/// TypeError. An int past a double is asyncio's OverflowError of the first poll, now.
fn deadline(when: &Bound<'_, PyAny>, pending: &dyn Fn() -> PyResult<bool>) -> PyResult<f64> {
    if let Ok(f) = when.cast::<PyFloat>() {
        return Ok(f.value());
    }
    if when.is_instance_of::<PyInt>() {
        return when.extract::<f64>();
    }
    if pending()? {
        when.lt(0.0)?;
    } else {
        when.ge(0.0)?;
    }
    when.sub(0.0)?.extract::<f64>()
}

impl LoopCore {
    /// Schedules a timer for the deadline `when` gives once the loop's checks passed; `when` is
    /// told whether a timer is pending (see `deadline`).
    fn schedule_at<'py>(
        slf: &Bound<'py, Self>,
        when: impl FnOnce(&dyn Fn() -> PyResult<bool>) -> PyResult<f64>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
        method: &str,
    ) -> PyResult<Bound<'py, TimerHandle>> {
        let debug = Self::check_schedule(slf, &callback, method)?;
        let when = when(&|| Ok(!slf.try_borrow()?.timers.is_empty()))?;
        let timer = Handle::new_timer(
            slf.py(),
            when,
            callback,
            args.into(),
            context,
            slf.as_any(),
            debug,
        )?;
        timer.as_super().try_borrow_mut()?.scheduled = true;
        let base: Py<Handle> = timer.as_super().clone().unbind();
        slf.try_borrow_mut()?.timers.push(when, base);
        Ok(timer)
    }
}
