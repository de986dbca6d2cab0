//! Hand-written `METH_FASTCALL | METH_KEYWORDS` entry points for `call_soon` and
//! `call_soon_threadsafe`.
//!
//! Every `Future` callback and every `Task` step goes through `loop.call_soon(cb, arg,
//! context=ctx)`, called by asyncio's C code with vectorcall. PyO3's generic argument parser
//! (which handles any signature) costs about as much as the rest of `call_soon` together; this
//! parser knows the one signature `(callback, *args, context=None)` and does the same checks.
//! The descriptors' `__text_signature__` (`$self, callback, *args, context=None`) is what
//! `inspect.signature` and stubtest read: asyncio's signature, `self` included.
//! Measured with callgrind: about 300 instructions less per call.
//!
//! The function is exposed as a method descriptor bound to `LoopCore`, which the Python `Loop`
//! class installs as its `call_soon`. The descriptor type-checks `self` before calling us.

use std::panic::AssertUnwindSafe;
use std::ptr;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple, PyType};
use std::ffi::CStr;

use crate::event_loop::LoopCore;
use crate::handles::Args;

/// Runs `f`, turning its error or panic into a raised Python exception (a NULL return).
pub(crate) fn into_raw(
    py: Python<'_>,
    f: impl FnOnce() -> PyResult<Py<PyAny>>,
) -> *mut ffi::PyObject {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(obj)) => obj.into_ptr(),
        Ok(Err(err)) => {
            err.restore(py);
            ptr::null_mut()
        }
        Err(_) => {
            PanicException::new_err("ferroloop: internal error (panic) in call_soon").restore(py);
            ptr::null_mut()
        }
    }
}

/// `(callback, args, context)` of a `call_soon`-style call.
type CallbackCall<'py> = (Bound<'py, PyAny>, Args, Option<Bound<'py, PyAny>>);

/// Parses a vectorcall of `(callback, *args, context=None)`.
///
/// # Safety
/// `args` must point to `nargs` positional arguments followed by one value per name in
/// `kwnames` (a tuple of str, or NULL), all live references, as CPython guarantees for
/// `METH_FASTCALL | METH_KEYWORDS` functions.
unsafe fn parse_callback_call<'py>(
    py: Python<'py>,
    method: &str,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<CallbackCall<'py>> {
    let nargs = usize::try_from(nargs).map_err(|_| PyValueError::new_err("bad argument count"))?;
    let kwnames = if kwnames.is_null() {
        None
    } else {
        // SAFETY: CPython passes a tuple of keyword names (or NULL, handled above).
        Some(unsafe { Bound::from_borrowed_ptr(py, kwnames) }.cast_into::<PyTuple>()?)
    };
    let nkw = kwnames.as_ref().map_or(0, |k| k.len());
    // SAFETY: per this function's contract, `args` holds `nargs + nkw` live references.
    let all = unsafe { std::slice::from_raw_parts(args, nargs + nkw) };
    if nargs == 0 {
        return named_callback(py, method, all, kwnames);
    }
    // SAFETY: each element is a live reference (see above).
    let callback = unsafe { Bound::from_borrowed_ptr(py, all[0]) };
    let mut context = None;
    if let Some(names) = &kwnames {
        for (i, name) in names.iter().enumerate() {
            let name = name.cast_into::<PyString>()?;
            // Byte comparison: asyncio's C code passes its own static "context" string, which is
            // not our interned one, so a pointer check would miss and a rich compare is slow.
            if name.to_str()? != "context" {
                return Err(unexpected_keyword(method, &name, true));
            }
            // SAFETY: keyword values follow the positional ones in `all`.
            context = Some(unsafe { Bound::from_borrowed_ptr(py, all[nargs + i]) });
        }
    }
    let extra = &all[1..nargs];
    match extra {
        [] => return Ok((callback, Args::Empty, context)),
        [one] => {
            // SAFETY: `one` is a live reference CPython passed us (this function's contract).
            let one = unsafe { Bound::from_borrowed_ptr(py, *one) };
            return Ok((callback, Args::One(one.unbind()), context));
        }
        _ => {}
    }
    // SAFETY: PyTuple_New returns a new tuple (or NULL with an exception set), which we fill
    // completely with new references before anyone else can see it.
    let tuple = unsafe {
        let t = ffi::PyTuple_New(extra.len() as ffi::Py_ssize_t);
        if t.is_null() {
            return Err(PyErr::fetch(py));
        }
        for (i, &item) in extra.iter().enumerate() {
            ffi::Py_INCREF(item);
            ffi::PyTuple_SET_ITEM(t, i as ffi::Py_ssize_t, item);
        }
        Bound::from_owned_ptr(py, t).cast_into_unchecked::<PyTuple>()
    };
    Ok((callback, tuple.into(), context))
}

/// `call_soon(callback=cb, context=ctx)`: asyncio's signature lets the callback be named (then
/// with no `*args`). Nothing in asyncio calls it so; kept out of the positional path, which
/// every Future and Task takes.
#[cold]
fn named_callback<'py>(
    py: Python<'py>,
    method: &str,
    all: &[*mut ffi::PyObject],
    kwnames: Option<Bound<'py, PyTuple>>,
) -> PyResult<CallbackCall<'py>> {
    let (mut callback, mut context) = (None, None);
    for (name, &value) in kwnames.iter().flatten().zip(all) {
        let name = name.cast_into::<PyString>()?;
        // SAFETY: `all` holds the keyword values, live references (see parse_callback_call).
        let value = unsafe { Bound::from_borrowed_ptr(py, value) };
        match name.to_str()? {
            "callback" => callback = Some(value),
            "context" => context = Some(value),
            _ => return Err(unexpected_keyword(method, &name, false)),
        }
    }
    let callback = callback.ok_or_else(|| {
        PyTypeError::new_err(format!(
            "{method}() missing required positional argument: 'callback'"
        ))
    })?;
    Ok((callback, Args::Empty, context))
}

/// The TypeError for keyword `name`, which is not `context` (nor `callback`, unless it was
/// also given by position).
#[cold]
fn unexpected_keyword(method: &str, name: &Bound<'_, PyString>, positional: bool) -> PyErr {
    if positional && name.to_str().is_ok_and(|n| n == "callback") {
        return PyTypeError::new_err(format!(
            "{method}() got multiple values for argument 'callback'"
        ));
    }
    PyTypeError::new_err(format!(
        "{method}() got an unexpected keyword argument '{name}'"
    ))
}

/// The native method a `(callback, *args, context=None)` entry point calls.
type ScheduleFn = for<'py> fn(
    &Bound<'py, LoopCore>,
    Bound<'py, PyAny>,
    Args,
    Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, crate::handles::Handle>>;

/// The body of both entry points: parse, then call `schedule` on the loop.
///
/// # Safety
/// As for [`parse_callback_call`]; `slf` is the live object the descriptor was called on.
unsafe fn callback_fastcall(
    method: &str,
    schedule: ScheduleFn,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls C methods with the calling thread attached to the interpreter.
    let py = unsafe { Python::assume_attached() };
    into_raw(py, || {
        // SAFETY: `slf` is the live object the descriptor was called on.
        let slf = unsafe { Bound::from_borrowed_ptr(py, slf) };
        // SAFETY: the method descriptor checked that `self` is a LoopCore (or a subclass)
        // before calling us (PyDescr_NewMethod's descriptors type-check their first argument).
        let slf = unsafe { slf.cast_unchecked::<LoopCore>() };
        // SAFETY: arguments as CPython passes them to METH_FASTCALL | METH_KEYWORDS.
        let (callback, args, context) =
            unsafe { parse_callback_call(py, method, args, nargs, kwnames) }?;
        Ok(schedule(slf, callback, args, context)?.into_any().unbind())
    })
}

/// `Loop.call_soon(callback, *args, context=None)`.
///
/// # Safety
/// Called by CPython only, through the method descriptor made in [`call_soon_descriptor`].
unsafe extern "C" fn call_soon_fastcall(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: forwarded as CPython passed them.
    unsafe {
        callback_fastcall(
            "call_soon",
            LoopCore::call_soon_args,
            slf,
            args,
            nargs,
            kwnames,
        )
    }
}

/// `Loop.call_soon_threadsafe(callback, *args, context=None)`: asyncio's Futures completed from
/// executor threads (`wrap_future`) and `run_coroutine_threadsafe` call it.
///
/// # Safety
/// Called by CPython only, through [`call_soon_threadsafe_descriptor`].
unsafe extern "C" fn call_soon_threadsafe_fastcall(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let method = "call_soon_threadsafe";
    // SAFETY: forwarded as CPython passed them.
    unsafe {
        callback_fastcall(
            method,
            LoopCore::call_soon_threadsafe_args,
            slf,
            args,
            nargs,
            kwnames,
        )
    }
}

/// The method descriptor for `call_soon`, bound to `LoopCore` and its subclasses.
pub(crate) fn call_soon_descriptor(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    method_descriptor(
        &py.get_type::<LoopCore>(),
        c"call_soon",
        call_soon_fastcall,
        c"call_soon($self, callback, *args, context=None)\n--\n\nArrange for a callback to be called as soon as possible.",
    )
}

/// The method descriptor for `call_soon_threadsafe`.
pub(crate) fn call_soon_threadsafe_descriptor(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    method_descriptor(
        &py.get_type::<LoopCore>(),
        c"call_soon_threadsafe",
        call_soon_threadsafe_fastcall,
        c"call_soon_threadsafe($self, callback, *args, context=None)\n--\n\nLike call_soon(), but thread-safe.",
    )
}

/// A `METH_FASTCALL | METH_KEYWORDS` method descriptor named `name` for the instances of `ty`
/// (the descriptor checks the type of `self` before calling `func`).
pub(crate) fn method_descriptor<'py>(
    ty: &Bound<'py, PyType>,
    name: &'static CStr,
    func: ffi::PyCFunctionFastWithKeywords,
    doc: &'static CStr,
) -> PyResult<Bound<'py, PyAny>> {
    // The definition must outlive the descriptor, i.e. the interpreter: leaked once per
    // descriptor, and the package makes each once.
    let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: func,
        },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: doc.as_ptr(),
    }));
    // SAFETY: `ty` is a live type object and `def` lives forever; PyDescr_NewMethod returns a
    // new reference or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(ty.py(), ffi::PyDescr_NewMethod(ty.as_type_ptr(), def)) }
}

/// The one argument `arg` of a `METH_FASTCALL | METH_KEYWORDS` call of `method`, positional or
/// by name.
///
/// # Safety
/// As for [`parse_callback_call`]: `args` holds `nargs` positional arguments followed by one
/// value per name in `kwnames` (a tuple of str, or NULL), all live references.
pub(crate) unsafe fn single_argument<'py>(
    py: Python<'py>,
    method: &str,
    arg: &str,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<Bound<'py, PyAny>> {
    let nkw = if kwnames.is_null() {
        0
    } else {
        // SAFETY: CPython passes a tuple of keyword names here.
        unsafe { ffi::PyTuple_GET_SIZE(kwnames) }
    };
    if nargs + nkw != 1 {
        return Err(PyTypeError::new_err(format!(
            "{method}() takes exactly one argument ('{arg}'), {} given",
            nargs + nkw
        )));
    }
    if nkw == 1 {
        // SAFETY: as above; the tuple has one item, a str.
        let keyword = unsafe { Bound::from_borrowed_ptr(py, ffi::PyTuple_GET_ITEM(kwnames, 0)) };
        if keyword.cast::<PyString>()?.to_str()? != arg {
            return Err(PyTypeError::new_err(format!(
                "{method}() got an unexpected keyword argument '{keyword}'"
            )));
        }
    }
    // SAFETY: the one argument, positional or keyword, is `args[0]` (checked above).
    Ok(unsafe { Bound::from_borrowed_ptr(py, *args) })
}
