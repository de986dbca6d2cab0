//! `Handle` and `TimerHandle`: what `call_soon`/`call_later` return, as asyncio's
//! `events.Handle`/`events.TimerHandle`.
//!
//! A handle owns the callback, its arguments and the `contextvars.Context` it runs in. Running one
//! enters the context with `PyContext_Enter` instead of calling `Context.run`, which saves building
//! a bound method and an argument tuple per callback.
//!
//! Plain handles that nobody else references once they ran are recycled by the loop (see
//! `LoopCore::recycle`). A recycled object must not be observable, so a handle something holds a
//! weak reference to is never recycled: it is released, and its weak references die with it, as
//! with asyncio's handles (which support weak references; uvloop's test suite checks it).
//!
//! While a handle is pending in the loop it is not tracked by the cyclic GC: most handles live
//! for one iteration, and tracked, every collection traversed every pending handle (a third of
//! the cost of scheduling and cancelling a timer, and collections that grew with the number of
//! timers). What a pending handle references is still seen by the GC: the loop's `__traverse__`
//! visits it, when the loop's references are all the handle has (see `LoopCore::__traverse__`).
//! A handle that leaves the loop (it ran, was cancelled and dropped from the heap, the loop
//! closed) while something else still references it is tracked again (`retrack`), so a cycle
//! through it, such as `self._timer = loop.call_later(t, self._on_timeout)`, is collected as
//! with asyncio's handles, which are always tracked.

use std::sync::{Arc, Condvar, Mutex};

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::{CompareOp, PyTraverseError, PyVisit};
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple};

use crate::event_loop::{current_thread, LoopCore};

static FORMAT_CALLBACK_SOURCE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static EXTRACT_STACK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static GETFRAME: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// A handle's positional arguments. One argument, what asyncio's Futures and Tasks pass to each
/// done callback and wake-up, is kept as the object itself: no tuple is made for it, and the
/// call passes it by vectorcall. `_args` makes the tuple on first use.
pub(crate) enum Args {
    /// No arguments (a Task's step, most `call_soon(cb)`s): no tuple either.
    Empty,
    Tuple(Py<PyTuple>),
    One(Py<PyAny>),
}

impl From<Bound<'_, PyTuple>> for Args {
    fn from(args: Bound<'_, PyTuple>) -> Self {
        Args::Tuple(args.unbind())
    }
}

impl Args {
    /// The arguments as the tuple asyncio's `Handle._args` is.
    pub(crate) fn tuple<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        match self {
            Args::Empty => Ok(PyTuple::empty(py)),
            Args::Tuple(t) => Ok(t.bind(py).clone()),
            Args::One(a) => PyTuple::new(py, [a.bind(py)]),
        }
    }

    pub(crate) fn clone_ref(&self, py: Python<'_>) -> Args {
        match self {
            Args::Empty => Args::Empty,
            Args::Tuple(t) => Args::Tuple(t.clone_ref(py)),
            Args::One(a) => Args::One(a.clone_ref(py)),
        }
    }

    /// `callback(*args)`.
    fn call(&self, py: Python<'_>, callback: &Py<PyAny>) -> PyResult<()> {
        let callback = callback.bind(py);
        match self {
            Args::Empty => callback.call0().map(drop),
            Args::One(a) => callback.call1((a.bind(py),)).map(drop),
            Args::Tuple(t) if t.bind(py).is_empty() => callback.call0().map(drop),
            Args::Tuple(t) => callback.call1(t.bind(py)).map(drop),
        }
    }

    fn visit(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            Args::Empty => Ok(()),
            Args::Tuple(t) => visit.call(t),
            Args::One(a) => visit.call(a),
        }
    }
}

/// asyncio's `format_helpers._format_callback_source`, e.g. `cb(1, 2) at file.py:12`.
pub(crate) fn format_callback_source(
    py: Python<'_>,
    callback: &Py<PyAny>,
    args: &Args,
    loop_: Option<&Py<PyAny>>,
) -> PyResult<String> {
    let args = args.tuple(py)?;
    let format =
        FORMAT_CALLBACK_SOURCE.import(py, "asyncio.format_helpers", "_format_callback_source")?;
    // Python 3.13 shows the arguments only when told the loop is in debug mode; older versions
    // always show them and take no such argument.
    if crate::python_version(py) >= (3, 13, 0) {
        let debug = match loop_ {
            Some(l) => l
                .bind(py)
                .call_method0(intern!(py, "get_debug"))?
                .is_truthy()?,
            None => false,
        };
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "debug"), debug)?;
        return format.call((callback, args), Some(&kwargs))?.extract();
    }
    format.call1((callback, args))?.extract()
}

/// The caller's stack as asyncio's debug mode records it (`format_helpers.extract_stack`).
fn extract_stack(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // Frame 0 is the innermost Python frame: the code that called into the loop, since the loop's
    // own method is native and has no frame.
    let frame = GETFRAME.import(py, "sys", "_getframe")?.call1((0,))?;
    Ok(EXTRACT_STACK
        .import(py, "asyncio.format_helpers", "extract_stack")?
        .call1((frame,))?
        .unbind())
}

/// Takes a new handle, made to be queued, out of the cyclic GC's lists (see the module docs).
/// PyO3 makes every pyclass a GC type; nothing tracks an object again but `retrack`, and its
/// dealloc untracks only what is tracked.
fn untracked<T>(handle: Bound<'_, T>) -> Bound<'_, T> {
    // SAFETY: `handle` is a live GC object (all pyclasses are), just created and seen by no one.
    unsafe { ffi::PyObject_GC_UnTrack(handle.as_ptr().cast()) };
    handle
}

/// A handle leaving the loop's hands: if anything else still references it, the GC tracks it
/// again (only the loop's `__traverse__` saw what it holds while it was untracked).
pub(crate) fn retrack(handle: &Py<Handle>) {
    let ptr = handle.as_ptr();
    // SAFETY: `ptr` is a live GC object we hold a reference to; tracking it when it is not
    // tracked is what PyObject_GC_Track requires, and no GC traversal is running here (we are
    // in the loop's own code, not in a tp_traverse).
    unsafe {
        if ffi::Py_REFCNT(ptr) > 1 && ffi::PyObject_GC_IsTracked(ptr) == 0 {
            ffi::PyObject_GC_Track(ptr.cast());
        }
    }
}

/// Whether anything holds a weak reference to `handle`.
pub(crate) fn has_weakrefs(handle: &Bound<'_, Handle>) -> bool {
    let ptr = handle.as_ptr();
    // SAFETY: `ptr` is a live object; its type (Handle or a subclass, created by PyO3 with
    // `weakref`) keeps the head of the object's weak reference list, a PyObject pointer (NULL
    // when there is none), at `tp_weaklistoffset` bytes from the object's start, as CPython's
    // own weakref code reads it. A type without such a slot (offset <= 0, which ours never are)
    // counts as having weak references, so the caller keeps away from it.
    unsafe {
        let offset = (*ffi::Py_TYPE(ptr)).tp_weaklistoffset;
        if offset <= 0 {
            return true;
        }
        let list = ptr.cast::<u8>().offset(offset).cast::<*mut ffi::PyObject>();
        !(*list).is_null()
    }
}

/// A callback scheduled on the loop.
#[pyclass(module = "ferroloop._ferroloop", subclass, weakref)]
pub struct Handle {
    pub(crate) callback: Option<Py<PyAny>>,
    pub(crate) args: Option<Args>,
    pub(crate) context: Option<Py<PyAny>>,
    pub(crate) loop_: Option<Py<PyAny>>,
    pub(crate) source_traceback: Option<Py<PyAny>>,
    /// In debug mode the repr is frozen at cancel time, before the callback is released
    /// (asyncio's `Handle.cancel`).
    pub(crate) repr: Option<String>,
    pub(crate) cancelled: bool,
    /// Timer handles only: the deadline, and whether the handle still sits in the timer heap.
    pub(crate) when: f64,
    pub(crate) scheduled: bool,
    /// Handles of `call_soon_threadsafe` where asyncio has `events._ThreadSafeHandle` (3.14).
    pub(crate) run_lock: Option<Arc<RunLock>>,
}

/// What 3.14's `events._ThreadSafeHandle` guarantees with the RLock it holds around `_run`,
/// `cancel` and `cancelled`: another thread that cancels the handle, or asks whether it is
/// cancelled, while its callback runs waits until the callback has returned; the loop's own thread
/// (a callback cancelling itself) does not wait.
#[derive(Default)]
pub(crate) struct RunLock {
    /// The thread running the callback; 0 while it is not running.
    running: Mutex<u64>,
    finished: Condvar,
}

impl RunLock {
    fn running(&self) -> std::sync::MutexGuard<'_, u64> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits, without the GIL, until no other thread runs the callback. Returns with the GIL held
    /// and the callback not running elsewhere: it can only start again under the GIL.
    pub(crate) fn wait_idle(&self, py: Python<'_>) {
        let me = current_thread();
        let busy = |t: u64| t != 0 && t != me;
        if !busy(*self.running()) {
            return;
        }
        py.detach(|| {
            let mut running = self.running();
            while busy(*running) {
                running = self
                    .finished
                    .wait(running)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        });
    }
}

/// Marks the callback as running for as long as it lives (also through an error).
struct Running(Arc<RunLock>);

impl Running {
    fn begin(lock: Arc<RunLock>) -> Running {
        *lock.running() = current_thread();
        Running(lock)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        *self.0.running() = 0;
        self.0.finished.notify_all();
    }
}

/// A callback scheduled for a deadline.
#[pyclass(module = "ferroloop._ferroloop", extends = Handle)]
pub struct TimerHandle {}

impl Handle {
    /// The context a handle runs in: `context=None` means a copy of the current one, as asyncio.
    fn context_for(py: Python<'_>, context: Option<Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        Ok(match context {
            Some(ctx) if !ctx.is_none() => ctx.unbind(),
            // SAFETY: PyContext_CopyCurrent returns a new reference or NULL with an exception set,
            // which from_owned_ptr_or_err turns into an error.
            _ => {
                unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent())? }.unbind()
            }
        })
    }

    /// What debug mode records of where a handle was made.
    fn traceback_for(py: Python<'_>, debug: bool) -> PyResult<Option<Py<PyAny>>> {
        debug.then(|| extract_stack(py)).transpose()
    }

    /// Builds a handle.
    pub(crate) fn build(
        py: Python<'_>,
        callback: Bound<'_, PyAny>,
        args: Args,
        context: Option<Bound<'_, PyAny>>,
        loop_: &Bound<'_, PyAny>,
        debug: bool,
        when: Option<f64>,
    ) -> PyResult<Handle> {
        let context = Handle::context_for(py, context)?;
        let source_traceback = Handle::traceback_for(py, debug)?;
        Ok(Handle {
            callback: Some(callback.unbind()),
            args: Some(args),
            context: Some(context),
            loop_: Some(loop_.clone().unbind()),
            source_traceback,
            repr: None,
            cancelled: false,
            when: when.unwrap_or(0.0),
            scheduled: false,
            run_lock: None,
        })
    }

    /// A plain handle, reusing `recycled` (a handle the loop took back, see `LoopCore::recycle`)
    /// when there is one.
    pub(crate) fn new_plain<'py>(
        py: Python<'py>,
        callback: Bound<'py, PyAny>,
        args: Args,
        context: Option<Bound<'py, PyAny>>,
        loop_: &Bound<'py, PyAny>,
        debug: bool,
        recycled: Option<Py<Handle>>,
    ) -> PyResult<Bound<'py, Handle>> {
        match recycled {
            Some(h) => {
                let h = h.into_bound(py);
                let context = Handle::context_for(py, context)?;
                let source_traceback = Handle::traceback_for(py, debug)?;
                // Field by field into the emptied handle (see take_contents): the other fields
                // already have a fresh handle's values, and replacing the whole struct cost a
                // copy and a drop of it per call_soon.
                let mut slot = h.try_borrow_mut()?;
                slot.callback = Some(callback.unbind());
                slot.args = Some(args);
                slot.context = Some(context);
                slot.loop_ = Some(loop_.clone().unbind());
                slot.source_traceback = source_traceback;
                drop(slot);
                Ok(h)
            }
            None => Bound::new(
                py,
                Handle::build(py, callback, args, context, loop_, debug, None)?,
            )
            .map(untracked),
        }
    }

    /// Empties a handle the loop is taking back, returning what it held so the caller can release
    /// it at a safe point.
    #[allow(clippy::type_complexity)]
    pub(crate) fn take_contents(
        &mut self,
    ) -> (
        Option<Py<PyAny>>,
        Option<Args>,
        Option<Py<PyAny>>,
        Option<Py<PyAny>>,
        Option<Py<PyAny>>,
    ) {
        // Everything but the references goes back to a fresh handle's values here, once: reuse
        // (`new_plain`) only sets the references.
        self.cancelled = false;
        self.scheduled = false;
        self.run_lock = None;
        self.repr = None;
        self.when = 0.0;
        (
            self.callback.take(),
            self.args.take(),
            self.context.take(),
            self.loop_.take(),
            self.source_traceback.take(),
        )
    }

    /// Visits what the handle references, for the loop's `__traverse__`.
    pub(crate) fn visit_contents(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.callback)?;
        if let Some(args) = &self.args {
            args.visit(visit)?;
        }
        visit.call(&self.context)?;
        visit.call(&self.loop_)?;
        visit.call(&self.source_traceback)?;
        Ok(())
    }

    pub(crate) fn new_timer<'py>(
        py: Python<'py>,
        when: f64,
        callback: Bound<'py, PyAny>,
        args: Args,
        context: Option<Bound<'py, PyAny>>,
        loop_: &Bound<'py, PyAny>,
        debug: bool,
    ) -> PyResult<Bound<'py, TimerHandle>> {
        let base = Handle::build(py, callback, args, context, loop_, debug, Some(when))?;
        Bound::new(
            py,
            PyClassInitializer::from(base).add_subclass(TimerHandle {}),
        )
        .map(untracked)
    }

    /// asyncio's `Handle._repr_info()`.
    fn repr_info(slf: &Bound<'_, Self>) -> PyResult<Vec<String>> {
        let py = slf.py();
        let mut info = vec![slf.get_type().name()?.to_string()];
        let (callback, args, cancelled, when, source_traceback, is_timer, loop_) = {
            let h = slf.try_borrow()?;
            (
                h.callback.as_ref().map(|c| c.clone_ref(py)),
                h.args.as_ref().map(|a| a.clone_ref(py)),
                h.cancelled,
                h.when,
                h.source_traceback.as_ref().map(|s| s.clone_ref(py)),
                slf.is_instance_of::<TimerHandle>(),
                h.loop_.as_ref().map(|l| l.clone_ref(py)),
            )
        };
        if cancelled {
            info.push("cancelled".to_owned());
        }
        if let (Some(cb), Some(args)) = (&callback, &args) {
            info.push(format_callback_source(py, cb, args, loop_.as_ref())?);
        }
        if let Some(tb) = source_traceback {
            let tb = tb.bind(py);
            if tb.len()? > 0 {
                let frame = tb.get_item(-1)?;
                let file: String = frame.get_item(0)?.str()?.extract()?;
                let line: String = frame.get_item(1)?.str()?.extract()?;
                info.push(format!("created at {file}:{line}"));
            }
        }
        if is_timer {
            // Python's repr of a float, as asyncio's f'when={self._when}', placed as
            // TimerHandle._repr_info places it: after "cancelled" when there is one.
            let when = pyo3::types::PyFloat::new(py, when).repr()?.to_string();
            info.insert(if cancelled { 2 } else { 1 }, format!("when={when}"));
        }
        Ok(info)
    }

    /// A thread-safe handle's callback is not running on another thread (see `RunLock`).
    fn wait_idle(slf: &Bound<'_, Self>) -> PyResult<()> {
        let lock = slf.try_borrow()?.run_lock.clone();
        if let Some(lock) = lock {
            lock.wait_idle(slf.py());
        }
        Ok(())
    }

    /// asyncio's `Handle.cancel()` (and `TimerHandle.cancel()`, which also tells the loop's timer
    /// heap). The callback and arguments are released once the handle is no longer borrowed,
    /// since releasing them can run arbitrary Python code.
    pub(crate) fn cancel_handle(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let loop_ = {
            let mut h = slf.try_borrow_mut()?;
            if h.cancelled {
                return Ok(());
            }
            h.cancelled = true;
            h.loop_.as_ref().map(|l| l.clone_ref(py))
        };
        // In debug mode the repr is frozen now, while it can still show the callback.
        let debug = match &loop_ {
            // ferroloop's own loop: its flag, without a method call by name (most of a cancel's
            // cost otherwise). Loop does not override get_debug().
            Some(l) => match l.bind(py).cast::<LoopCore>() {
                Ok(core) => core.try_borrow()?.get_debug_flag(),
                Err(_) => l.bind(py).call_method0("get_debug")?.is_truthy()?,
            },
            None => false,
        };
        let repr = if debug {
            Some(format!("<{}>", Self::repr_info(slf)?.join(" ")))
        } else {
            None
        };
        let (released, notify) = {
            let mut h = slf.try_borrow_mut()?;
            if repr.is_some() {
                h.repr = repr;
            }
            let notify = std::mem::take(&mut h.scheduled);
            ((h.callback.take(), h.args.take()), notify)
        };
        // Released with nothing borrowed: they may hold the last reference to objects with
        // finalizers.
        drop(released);
        if notify {
            if let Some(core) = loop_
                .as_ref()
                .and_then(|l| l.bind(py).cast::<LoopCore>().ok())
            {
                LoopCore::timer_handle_cancelled(core)?;
            }
        }
        Ok(())
    }
}

/// True for the exceptions asyncio lets out of `run_forever` instead of reporting them.
pub(crate) fn is_fatal(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py)
}

/// Runs `f` inside `context` (a `contextvars.Context`), as `Context.run` does.
pub(crate) fn with_context<T>(
    py: Python<'_>,
    context: &Py<PyAny>,
    f: impl FnOnce() -> PyResult<T>,
) -> PyResult<T> {
    with_context_or(py, context, f, Err)
}

/// `with_context`, with `not_entered` deciding what a failure to enter `context` means.
fn with_context_or<T>(
    py: Python<'_>,
    context: &Py<PyAny>,
    f: impl FnOnce() -> PyResult<T>,
    not_entered: impl FnOnce(PyErr) -> PyResult<T>,
) -> PyResult<T> {
    // SAFETY: `context` is a live object; PyContext_Enter type-checks it and fails with an
    // exception set (not a crash) if it is not a Context or is already entered.
    if unsafe { ffi::PyContext_Enter(context.as_ptr()) } != 0 {
        return not_entered(PyErr::fetch(py));
    }
    let result = f();
    // SAFETY: balances the successful PyContext_Enter above on the same thread.
    if unsafe { ffi::PyContext_Exit(context.as_ptr()) } != 0 {
        let exit_err = PyErr::fetch(py);
        result?;
        return Err(exit_err);
    }
    result
}

/// Calls `callback(*args)` inside `context`.
fn call_in_context(
    py: Python<'_>,
    callback: &Py<PyAny>,
    args: &Args,
    context: &Py<PyAny>,
) -> PyResult<()> {
    let call = || args.call(py, callback);
    with_context_or(py, context, call, |err| {
        // SAFETY: `context` is a live object; the check only reads its type.
        if unsafe { ffi::PyContext_CheckExact(context.as_ptr()) } != 0 {
            return Err(err); // a Context entered already
        }
        call_through_run(py, callback, args, context)
    })
}

/// A `context=` that is not a `contextvars.Context`: asyncio's `Handle._run` calls
/// `self._context.run(self._callback, *self._args)`, so an object with a `run` method is used as
/// one, and anything else fails there, at run time, with its AttributeError.
#[cold]
fn call_through_run(
    py: Python<'_>,
    callback: &Py<PyAny>,
    args: &Args,
    context: &Py<PyAny>,
) -> PyResult<()> {
    let run = context.bind(py).getattr(intern!(py, "run"))?;
    let call_args: Vec<Bound<'_, PyAny>> = std::iter::once(callback.bind(py).clone())
        .chain(args.tuple(py)?.iter())
        .collect();
    let call_args = PyTuple::new(py, call_args)?;
    run.call1(call_args).map(drop)
}

/// asyncio's `Handle._run()`: runs the callback; an exception goes to the loop's exception
/// handler. Only `KeyboardInterrupt`, `SystemExit` and a failing exception handler come back as
/// errors, to leave `run_forever`.
pub(crate) fn run_handle(py: Python<'_>, handle: &Bound<'_, Handle>) -> PyResult<()> {
    let (callback, args, context, run_lock) = {
        let h = handle.try_borrow()?;
        if h.cancelled {
            return Ok(());
        }
        match (&h.callback, &h.args, &h.context) {
            (Some(cb), Some(args), Some(ctx)) => (
                cb.clone_ref(py),
                args.clone_ref(py),
                ctx.clone_ref(py),
                h.run_lock.clone(),
            ),
            _ => return Ok(()),
        }
    };
    let _running = run_lock.map(Running::begin);
    match call_in_context(py, &callback, &args, &context) {
        Ok(()) => Ok(()),
        Err(err) if is_fatal(py, &err) => Err(err),
        Err(err) => report_callback_error(py, handle, &callback, &args, err),
    }
}

#[cold]
fn report_callback_error(
    py: Python<'_>,
    handle: &Bound<'_, Handle>,
    callback: &Py<PyAny>,
    args: &Args,
    err: PyErr,
) -> PyResult<()> {
    let (loop_, source_traceback) = {
        let h = handle.try_borrow()?;
        (
            h.loop_.as_ref().map(|l| l.clone_ref(py)),
            h.source_traceback.as_ref().map(|s| s.clone_ref(py)),
        )
    };
    let cb = format_callback_source(py, callback, args, loop_.as_ref())?;
    let context = PyDict::new(py);
    context.set_item("message", format!("Exception in callback {cb}"))?;
    context.set_item("exception", err.value(py))?;
    context.set_item("handle", handle)?;
    if let Some(tb) = source_traceback {
        if tb.bind(py).is_truthy()? {
            context.set_item("source_traceback", tb)?;
        }
    }
    match loop_ {
        Some(l) => l
            .bind(py)
            .call_method1("call_exception_handler", (context,))
            .map(drop),
        None => Ok(()),
    }
}

#[pymethods]
impl Handle {
    fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::wait_idle(slf)?;
        Self::cancel_handle(slf)
    }

    fn cancelled(slf: &Bound<'_, Self>) -> PyResult<bool> {
        Self::wait_idle(slf)?;
        Ok(slf.try_borrow()?.cancelled)
    }

    fn get_context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.context.as_ref().map(|c| c.clone_ref(py))
    }

    fn _run(slf: &Bound<'_, Self>) -> PyResult<()> {
        run_handle(slf.py(), slf)
    }

    fn _repr_info(slf: &Bound<'_, Self>) -> PyResult<Vec<String>> {
        Self::repr_info(slf)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        if let Some(r) = &slf.try_borrow()?.repr {
            return Ok(r.clone());
        }
        Ok(format!("<{}>", Self::repr_info(slf)?.join(" ")))
    }

    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.callback.as_ref().map(|c| c.clone_ref(py))
    }

    /// The tuple, made once for a one-argument handle (so that `h._args is h._args`).
    #[getter]
    fn _args(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyTuple>>> {
        let Some(args) = &self.args else {
            return Ok(None);
        };
        let tuple = args.tuple(py)?.unbind();
        self.args = Some(Args::Tuple(tuple.clone_ref(py)));
        Ok(Some(tuple))
    }

    #[getter]
    fn _cancelled(&self) -> bool {
        self.cancelled
    }

    #[getter]
    fn _context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.context.as_ref().map(|c| c.clone_ref(py))
    }

    #[getter(_loop)]
    fn loop_(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.loop_.as_ref().map(|l| l.clone_ref(py))
    }

    #[getter]
    fn _source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.source_traceback.as_ref().map(|s| s.clone_ref(py))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.visit_contents(&visit)
    }

    fn __clear__(&mut self) {
        self.callback = None;
        self.args = None;
        self.context = None;
        self.loop_ = None;
        self.source_traceback = None;
    }
}

#[pymethods]
impl TimerHandle {
    /// The absolute deadline, on the loop's clock.
    fn when(slf: PyRef<'_, Self>) -> f64 {
        slf.as_super().when
    }

    #[getter]
    fn _when(slf: PyRef<'_, Self>) -> f64 {
        slf.as_super().when
    }

    #[getter]
    fn _scheduled(slf: PyRef<'_, Self>) -> bool {
        slf.as_super().scheduled
    }

    fn __hash__(slf: PyRef<'_, Self>) -> isize {
        // As asyncio's TimerHandle: equal handles must hash alike, and equality looks at `when`.
        let when = slf.as_super().when;
        let bits = if when == 0.0 { 0 } else { when.to_bits() };
        (bits ^ (bits >> 32)) as isize
    }

    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let Ok(other) = other.cast::<TimerHandle>() else {
            return Ok(py.NotImplemented());
        };
        let a = slf.as_super().try_borrow()?;
        let b = other.as_super().try_borrow()?;
        let same = slf.is(other)
            || (a.when == b.when
                && a.cancelled == b.cancelled
                && a.callback.as_ref().map(|c| c.as_ptr())
                    == b.callback.as_ref().map(|c| c.as_ptr())
                && match (&a.args, &b.args) {
                    (Some(x), Some(y)) => x.tuple(py)?.eq(y.tuple(py)?)?,
                    (None, None) => true,
                    _ => false,
                });
        let result = match op {
            CompareOp::Eq => same,
            CompareOp::Ne => !same,
            CompareOp::Lt => a.when < b.when,
            CompareOp::Gt => a.when > b.when,
            CompareOp::Le => a.when < b.when || same,
            CompareOp::Ge => a.when > b.when || same,
        };
        Ok(pyo3::types::PyBool::new(py, result)
            .to_owned()
            .into_any()
            .unbind())
    }
}
