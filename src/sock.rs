//! The first, optimistic `recv` of `loop.sock_recv`/`sock_recv_into`.
//!
//! asyncio's versions start with `sock.recv(n)` and catch `BlockingIOError` when nothing has
//! arrived yet, which is the usual case for a server waiting for its next request: building and
//! catching that exception costs about as much as the rest of the call. These functions make
//! the same `recv` and say "nothing yet" with `None` instead.
//!
//! They do so only for an exact `socket.socket` whose timeout is 0 (as asyncio requires) and for
//! arguments the socket module would take without complaint; anything else goes through the
//! socket object's own method, so a subclass, a blocking socket or a bad argument behaves
//! exactly as in asyncio (a `BlockingIOError` from it becomes `None` there too).

use std::os::fd::RawFd;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyBlockingIOError, PyInterruptedError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyInt};

use crate::errors::os_error;
use crate::transport::{recv, MAX_READ, RECV_BUFFER};

static SOCKET_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The fd of `sock` when it is an exact `socket.socket` in non-blocking mode (timeout 0).
fn plain_nonblocking_fd(sock: &Bound<'_, PyAny>) -> PyResult<Option<RawFd>> {
    let py = sock.py();
    if !sock
        .get_type()
        .is(SOCKET_TYPE.import(py, "socket", "socket")?)
    {
        return Ok(None);
    }
    let timeout = sock.call_method0(intern!(py, "gettimeout"))?;
    if timeout.is_none() || timeout.extract::<f64>()? != 0.0 {
        return Ok(None);
    }
    Ok(Some(sock.call_method0(intern!(py, "fileno"))?.extract()?))
}

/// One `recv(2)` into `buf`: the count, `None` for EAGAIN, or the error (EINTR included).
fn recv_once(fd: RawFd, buf: *mut u8, len: usize) -> std::io::Result<Option<usize>> {
    match recv(fd, buf, len) {
        Ok(n) => Ok(Some(n)),
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        Err(err) => Err(err),
    }
}

/// Runs `attempt` until it is not interrupted, running signal handlers in between, as the
/// socket module does (PEP 475).
fn retrying<T>(py: Python<'_>, mut attempt: impl FnMut() -> std::io::Result<T>) -> PyResult<T> {
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => py.check_signals()?,
            Err(err) => return Err(os_error(err)),
        }
    }
}

/// `sock.recv(n)` on the Python side, with "nothing yet" as `None`.
fn by_method<'py>(
    sock: &Bound<'py, PyAny>,
    method: &Bound<'py, pyo3::types::PyString>,
    arg: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = sock.py();
    match sock.call_method1(method, (arg,)) {
        Ok(result) => Ok(Some(result)),
        Err(err)
            if err.is_instance_of::<PyBlockingIOError>(py)
                || err.is_instance_of::<PyInterruptedError>(py) =>
        {
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

/// `sock.recv(n)`, or `None` if nothing has arrived yet.
#[pyfunction]
pub(crate) fn _sock_recv_nowait<'py>(
    sock: &Bound<'py, PyAny>,
    n: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = sock.py();
    let size = match n.cast_exact::<PyInt>() {
        Ok(int) => int.extract::<usize>().ok().filter(|&size| size <= MAX_READ),
        Err(_) => None,
    };
    let (Some(size), Some(fd)) = (size, plain_nonblocking_fd(sock)?) else {
        return by_method(sock, intern!(py, "recv"), n);
    };
    if size == 0 {
        // The socket module answers recv(0) without a system call.
        return Ok(Some(PyBytes::new(py, b"").into_any()));
    }
    // The thread's receive buffer is borrowed for the system call alone: signal handlers (Python
    // code) run between attempts, with it released.
    retrying(py, || {
        RECV_BUFFER.with(|buf| {
            let mut buf = buf.borrow_mut();
            Ok(recv_once(fd, buf.as_mut_ptr(), size)?
                .map(|count| PyBytes::new(py, &buf[..count]).into_any()))
        })
    })
}

/// `sock.recv_into(buf)`, or `None` if nothing has arrived yet.
#[pyfunction]
pub(crate) fn _sock_recv_into_nowait<'py>(
    sock: &Bound<'py, PyAny>,
    buf: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = sock.py();
    let view = PyBuffer::<u8>::get(buf)
        .ok()
        .filter(|view| !view.readonly() && view.is_c_contiguous() && view.len_bytes() > 0);
    let (Some(view), Some(fd)) = (view, plain_nonblocking_fd(sock)?) else {
        return by_method(sock, intern!(py, "recv_into"), buf);
    };
    // The export keeps the buffer's memory in place (it cannot be resized) meanwhile.
    let received = retrying(py, || {
        recv_once(fd, view.buf_ptr() as *mut u8, view.len_bytes())
    })?;
    drop(view);
    match received {
        Some(count) => Ok(Some(count.into_pyobject(py)?.into_any())),
        None => Ok(None),
    }
}
