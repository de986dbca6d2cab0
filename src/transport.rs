//! `SocketTransportCore`: the native stream transport for TCP and Unix sockets (asyncio's
//! `selector_events._SelectorSocketTransport`).
//!
//! What it guarantees, as asyncio does:
//! - `write()` never blocks and never loses data: with nothing buffered it sends at once (from
//!   the loop's callbacks, small writes at the end of the iteration, all in one send: see
//!   `BATCH_LIMIT`); what the kernel does not take is buffered and flushed when the socket is
//!   writable. The protocol
//!   gets `pause_writing()` above the high-water mark and `resume_writing()` at the low one, so
//!   memory stays bounded when the peer reads slowly.
//! - `close()` stops reading and flushes, then closes; `abort()` drops the buffer. Either way
//!   `connection_lost` runs exactly once, from the loop, and the socket is closed right after it.
//! - EOF: `eof_received()` returning true keeps the transport open for writing (half-close);
//!   `write_eof()` shuts the write side down once the buffer is flushed.
//! - One read per readiness event (the reactor is level-triggered), 256 KiB at most, as asyncio's
//!   `max_size` (124 KiB once reads are large, see `BULK_READ`); `BufferedProtocol` reads
//!   straight into the protocol's buffer.
//!
//! The loop dispatches the transport's readiness straight to `_read_ready`/`_write_ready`
//! (`crate::ready`), inside a context copied when the transport was made, as the handle asyncio
//! would have registered carries one. An unwatch cannot withdraw an event already queued for
//! this iteration (asyncio cancels the handle instead), so both re-check the state they need.
//!
//! The Python subclass `ferroloop._transports.SocketTransport` adds the cold parts (repr,
//! `__del__`, sendfile support) and the asyncio-visible class attributes.

use std::cell::RefCell;
use std::os::fd::RawFd;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyMemoryView};

use crate::buffer::RawBuffer;
use crate::errors::os_error;
use crate::event_loop::LoopCore;
use crate::handles::{is_fatal, retrack, with_context, Handle};
use crate::ready::Watcher;
use crate::sslproto::SSLProtocolCore;

/// asyncio's `max_size` of its socket and datagram transports alike.
pub(crate) const MAX_READ: usize = 256 * 1024;
/// A read this large marks the connection as carrying bulk data: its next reads land straight in
/// the `bytes` they are delivered in, since copying them out of the shared buffer would cost more
/// than allocating the whole read size and shrinking the object to what arrived.
const BULK_READ_THRESHOLD: usize = 64 * 1024;
/// The read size in bulk mode. It keeps the `bytes` allocation below glibc's default mmap
/// threshold (128 KiB): above it, every read would map fresh pages, fault them in, remap them on
/// the shrink and unmap them (which is what the stock loop's 256 KiB `recv` does in a process
/// whose threshold never rose).
const BULK_READ: usize = 124 * 1024;
/// asyncio's `constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES`.
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;
/// asyncio's default high-water mark for transports.
const DEFAULT_HIGH_WATER: usize = 64 * 1024;
/// Writes made by the loop's callbacks are kept for one send at the end of the iteration while
/// the transport holds at most this much (and no more than its high-water mark): a server's
/// response head and body, or a TLS connection's records, then leave in one syscall (one TCP
/// segment with TCP_NODELAY). Past it, the bytes kept and the new ones leave at once in one
/// `sendmsg`, the new ones without being copied; a copy this small costs less than a syscall.
const BATCH_LIMIT: usize = 16 * 1024;

static TRANSPORT_SOCKET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static SOCKET_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The fd a `_socket.socket` object holds right now (-1 once closed), read from its C struct
/// without running Python code: CPython's `PySocketSockObject` starts with the object header,
/// then `SOCKET_T sock_fd` (an int on POSIX), and has since Python 2. `SocketTransportCore::new`
/// checks the read against `fileno()` before relying on it.
///
/// # Safety
/// `sock` must be a live instance of `_socket.socket` (or of a subclass: they share the layout).
unsafe fn socket_struct_fd(sock: *mut pyo3::ffi::PyObject) -> RawFd {
    // SAFETY: per the contract, `sock` points to a PySocketSockObject, whose `sock_fd` int
    // follows the PyObject header (suitably aligned: the header is pointer-aligned).
    unsafe {
        *(sock as *const u8)
            .add(std::mem::size_of::<pyo3::ffi::PyObject>())
            .cast::<libc::c_int>()
    }
}

/// Whether the fd of `sock` (which is `fd` now) can be read back later without Python code.
pub(crate) fn fd_readable_back(sock: &Bound<'_, PyAny>, fd: RawFd) -> PyResult<bool> {
    let socket_type = SOCKET_TYPE.import(sock.py(), "_socket", "socket")?;
    // SAFETY: only read once `sock` is known to be a `_socket.socket`.
    Ok(sock.is_instance(socket_type)? && unsafe { socket_struct_fd(sock.as_ptr()) } == fd)
}

/// `fd` while `sock` still holds it, else EBADF: what asyncio's transports get from the socket
/// object's methods once the program closed it. Unchecked (`checked` false: not a
/// `_socket.socket`), `fd` as it was.
pub(crate) fn held_fd(sock: &Py<PyAny>, fd: RawFd, checked: bool) -> std::io::Result<RawFd> {
    // SAFETY: `checked` comes from fd_readable_back on this very object, alive while we hold it.
    if !checked || unsafe { socket_struct_fd(sock.as_ptr()) } == fd {
        Ok(fd)
    } else {
        Err(std::io::Error::from_raw_os_error(libc::EBADF))
    }
}
static LOGGER_MODULE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

thread_local! {
    /// The receive buffer for `Protocol` reads and datagrams: data is copied out of it into a
    /// `bytes` of the exact size, so one buffer per thread serves every transport.
    pub(crate) static RECV_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_READ]);
}

pub(crate) fn would_block(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
    )
}

/// `sendmsg` of `first` then `second` (with MSG_NOSIGNAL, as `send`): the byte count sent from
/// both together.
fn send2(fd: RawFd, first: &[u8], second: &[u8]) -> std::io::Result<usize> {
    if first.is_empty() {
        return send(fd, second);
    }
    let mut iov = [
        libc::iovec {
            iov_base: first.as_ptr() as *mut libc::c_void,
            iov_len: first.len(),
        },
        libc::iovec {
            iov_base: second.as_ptr() as *mut libc::c_void,
            iov_len: second.len(),
        },
    ];
    // SAFETY: an all-zero msghdr is valid (no name, no control data); the iovecs point at live
    // slices for the duration of the call, which only reads through them.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len() as _;
        libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL)
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        crate::metrics::count_written(n as usize);
        Ok(n as usize)
    }
}

fn send(fd: RawFd, data: &[u8]) -> std::io::Result<usize> {
    // SAFETY: `data` is a live slice for the duration of the call; MSG_NOSIGNAL turns a closed
    // peer into EPIPE instead of SIGPIPE.
    let n = unsafe {
        libc::send(
            fd,
            data.as_ptr() as *const libc::c_void,
            data.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        crate::metrics::count_written(n as usize);
        Ok(n as usize)
    }
}

pub(crate) fn recv(fd: RawFd, buf: *mut u8, len: usize) -> std::io::Result<usize> {
    // SAFETY: callers pass a pointer to at least `len` writable bytes that stay valid during
    // the call.
    let n = unsafe { libc::recv(fd, buf as *mut libc::c_void, len, 0) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

extern "C" {
    /// CPython's own way to shrink a `bytes` it just allocated (socket.recv uses it); pyo3-ffi
    /// does not export it.
    fn _PyBytes_Resize(bytes: *mut *mut pyo3::ffi::PyObject, size: pyo3::ffi::Py_ssize_t) -> i32;
}

/// Receives up to `len` bytes straight into a new `bytes` of that size, shrunk in place to what
/// arrived, as CPython's `socket.recv` does. The outer error is Python's (allocation), the inner
/// one the socket's.
fn recv_bytes(
    py: Python<'_>,
    fd: RawFd,
    len: usize,
) -> PyResult<std::io::Result<Bound<'_, PyBytes>>> {
    use pyo3::ffi;
    // SAFETY: a NULL source asks for an uninitialised object of `len` bytes, owned by us.
    let mut obj =
        unsafe { ffi::PyBytes_FromStringAndSize(std::ptr::null(), len as ffi::Py_ssize_t) };
    if obj.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `obj` is a new bytes object nobody else has seen; its buffer holds `len` bytes.
    let received = recv(fd, unsafe { ffi::PyBytes_AsString(obj) } as *mut u8, len);
    let n = match received {
        Ok(n) => n,
        Err(err) => {
            // SAFETY: drops the only reference, taken above.
            unsafe { ffi::Py_DECREF(obj) };
            return Ok(Err(err));
        }
    };
    // SAFETY: `obj` has a single reference and was never exposed, as _PyBytes_Resize requires;
    // on failure it releases the object and sets `obj` to NULL.
    if unsafe { _PyBytes_Resize(&mut obj, n as ffi::Py_ssize_t) } < 0 {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `obj` is an owned reference to a bytes object.
    Ok(Ok(unsafe {
        Bound::from_owned_ptr(py, obj).cast_into_unchecked()
    }))
}

/// The type's name as CPython's argument parsing prints it (`tp_name`: `bytes`, `array.array`).
fn type_name(obj: &Bound<'_, PyAny>) -> String {
    // SAFETY: `obj` is a live object; every type's tp_name is a NUL-terminated C string that
    // lives as long as the type, which `obj` keeps alive during the call.
    unsafe { std::ffi::CStr::from_ptr((*pyo3::ffi::Py_TYPE(obj.as_ptr())).tp_name) }
        .to_string_lossy()
        .into_owned()
}

/// asyncio's `base_events.logger` (looked up at each use, so patching it works as in asyncio).
fn logger(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    LOGGER_MODULE
        .import(py, "asyncio", "base_events")?
        .getattr(intern!(py, "logger"))
}

/// `protocol.<method>()` for `pause_writing`/`resume_writing`: a failure other than
/// KeyboardInterrupt or SystemExit goes to the loop's exception handler as asyncio reports it,
/// naming `transport` and `reported_protocol`.
pub(crate) fn call_flow_control(
    loop_: &Bound<'_, PyAny>,
    protocol: &Bound<'_, PyAny>,
    method: &str,
    transport: &Bound<'_, PyAny>,
    reported_protocol: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let py = loop_.py();
    match protocol.call_method0(method) {
        Ok(_) => Ok(()),
        Err(err) if is_fatal(py, &err) => Err(err),
        Err(err) => {
            let context = PyDict::new(py);
            context.set_item("message", format!("protocol.{method}() failed"))?;
            context.set_item("exception", err.value(py))?;
            context.set_item("transport", transport)?;
            context.set_item("protocol", reported_protocol)?;
            loop_
                .call_method1(intern!(py, "call_exception_handler"), (context,))
                .map(drop)
        }
    }
}

/// What `send_kept` left to do.
enum Kept {
    Done,
    /// Bytes are left for a writer to send.
    Watch,
}

/// A write-buffer limit as asyncio's `_FlowControlMixin` keeps it: the object it was given
/// (what `get_write_buffer_limits()` returns), compared with the buffer's size at each use. A
/// plain int or float becomes, once, the largest size that is `<=` it, so that the write path
/// compares integers; anything else (a Fraction, a Decimal...) is compared by Python, as there.
struct WaterMark {
    /// What `set_write_buffer_limits()` stored; `None` for the default (`size`, an int).
    object: Option<Py<PyAny>>,
    /// `size <= mark` is `size <= self.size`; `None`: ask Python.
    size: Option<usize>,
}

impl WaterMark {
    fn size(size: usize) -> Self {
        WaterMark {
            object: None,
            size: Some(size),
        }
    }

    fn new(mark: &Bound<'_, PyAny>) -> Self {
        let size = if let Ok(f) = mark.cast_exact::<PyFloat>() {
            let f = f.value();
            // `as` truncates towards zero and saturates (inf: no buffer reaches it). A negative
            // or NaN mark never passes the limits' check; Python would compare it.
            (f >= 0.0).then_some(f as usize)
        } else if mark.is_exact_instance_of::<PyInt>() {
            // Non-negative here (the check passed): past usize, no buffer reaches it.
            Some(mark.extract::<usize>().unwrap_or(usize::MAX))
        } else {
            None
        };
        WaterMark {
            object: Some(mark.clone().unbind()),
            size,
        }
    }

    /// `size <= self`, as asyncio computes it.
    fn at_least(&self, py: Python<'_>, size: usize) -> PyResult<bool> {
        match (self.size, &self.object) {
            (Some(mark), _) => Ok(size <= mark),
            (None, Some(mark)) => size.into_pyobject(py)?.le(mark.bind(py)),
            (None, None) => Ok(false),
        }
    }

    fn get(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match &self.object {
            Some(mark) => Ok(mark.clone_ref(py)),
            None => Ok(self
                .size
                .unwrap_or(0)
                .into_pyobject(py)?
                .into_any()
                .unbind()),
        }
    }

    /// A copy for use outside the transport's borrow (Python code may run meanwhile).
    fn clone_ref(&self, py: Python<'_>) -> Self {
        WaterMark {
            object: self.object.as_ref().map(|m| m.clone_ref(py)),
            size: self.size,
        }
    }
}

#[pyclass(module = "ferroloop._ferroloop", subclass, weakref)]
pub struct SocketTransportCore {
    loop_: Option<Py<LoopCore>>,
    sock: Option<Py<PyAny>>,
    /// The socket's fd when the transport was made. Used only while the socket object still
    /// holds it (`io_fd`): a program may close the socket under the transport, and the kernel
    /// gives the number to the next socket opened, which must never see this connection's I/O.
    fd: RawFd,
    /// The socket is a `_socket.socket` whose fd can be read back without Python code.
    fd_checked: bool,
    protocol: Option<Py<PyAny>>,
    /// The protocol is a `BufferedProtocol`: reads go into its `get_buffer()`.
    buffered: bool,
    /// The last read was at least `BULK_READ_THRESHOLD` bytes (see `recv_bytes`).
    bulk: bool,
    protocol_connected: bool,
    extra: Py<PyDict>,
    server: Option<Py<PyAny>>,
    /// The context readiness callbacks run in: the one asyncio passed (3.15 gives its transports
    /// one, in which every protocol callback runs), else a copy made at creation, as the reader
    /// handle of asyncio's transport carries one before 3.15.
    context: Py<PyAny>,
    /// `context` was given: the callbacks this transport schedules (`connection_lost`) run in it
    /// too, as 3.15's `_SelectorTransport._call_soon` does; else in a copy of the current one.
    context_given: bool,
    /// Unsent bytes are `buffer[head..]`; the consumed prefix is dropped when it dominates.
    buffer: Vec<u8>,
    head: usize,
    high_water: WaterMark,
    low_water: WaterMark,
    /// asyncio's `_conn_lost`: nonzero once the connection is lost or being torn down; counts
    /// the writes attempted after that.
    conn_lost: u32,
    closing: bool,
    eof: bool,
    paused: bool,
    protocol_paused: bool,
    /// sendfile's waiter for the buffer to drain (asyncio's `_empty_waiter`).
    empty_waiter: Option<Py<PyAny>>,
    /// The buffer holds writes for the loop to send at the end of the iteration (the transport
    /// is in its `unflushed` list) and no writer is registered: see `BATCH_LIMIT`.
    batched: bool,
    /// A send of kept writes failed outside the loop's flush (`send_kept`): the flush reports it.
    write_error: Option<std::io::Error>,
    /// The transport's writer is registered (`watch(.., true)` since the last unwatch). Writes
    /// are not kept then, even with an empty buffer (a `resume_writing()` that writes from
    /// inside `_write_ready`): the writer completes a close or a `write_eof`, and only when it
    /// finds bytes to send.
    write_watched: bool,
}

impl SocketTransportCore {
    /// The fd to do I/O on, or EBADF when the socket object no longer holds it (closed by the
    /// program, its number perhaps another socket's by now): the error asyncio's transports get
    /// from the socket object's methods then. Called right before each syscall, with no Python
    /// code in between.
    fn io_fd(&self) -> std::io::Result<RawFd> {
        match &self.sock {
            Some(sock) => held_fd(sock, self.fd, self.fd_checked),
            None => Err(std::io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    fn pending(&self) -> usize {
        self.buffer.len() - self.head
    }

    fn consume(&mut self, n: usize) {
        self.head += n;
        if self.head == self.buffer.len() {
            self.buffer.clear();
            self.head = 0;
        } else if self.head > self.buffer.len() / 2 {
            self.buffer.drain(..self.head);
            self.head = 0;
        }
    }

    fn clear_buffer(&mut self) {
        self.buffer.clear();
        self.buffer.shrink_to(DEFAULT_HIGH_WATER);
        self.head = 0;
    }

    /// Sends the writes kept for the end of the iteration now, running no Python code. A
    /// method whose answer depends on what is buffered calls this first (through `flush_now`),
    /// so that it answers as asyncio's, which sent those bytes in `write()`.
    fn send_kept(&mut self) -> Kept {
        if !self.batched || self.write_error.is_some() {
            return Kept::Done;
        }
        if self.conn_lost > 0 || self.pending() == 0 {
            self.batched = false;
            return Kept::Done;
        }
        match self
            .io_fd()
            .and_then(|fd| send(fd, &self.buffer[self.head..]))
        {
            Ok(n) => {
                self.batched = false;
                self.consume(n);
                if self.pending() == 0 {
                    Kept::Done
                } else {
                    Kept::Watch
                }
            }
            Err(err) if would_block(&err) => {
                self.batched = false;
                Kept::Watch
            }
            Err(err) => {
                // Still `batched`: the loop's flush reports it, in the transport's context.
                self.clear_buffer();
                self.write_error = Some(err);
                Kept::Done
            }
        }
    }

    /// `send_kept`, then the writer for what is left.
    fn flush_now(slf: &Bound<'_, Self>) -> PyResult<()> {
        let watch = {
            let mut me = slf.try_borrow_mut()?;
            if !me.batched {
                return Ok(());
            }
            matches!(me.send_kept(), Kept::Watch)
        };
        if watch {
            Self::watch(slf, true)?;
        }
        Ok(())
    }

    fn loop_bound<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, LoopCore>> {
        self.loop_
            .as_ref()
            .map(|l| l.bind(py).clone())
            .ok_or_else(|| PyRuntimeError::new_err("transport is closed"))
    }

    fn protocol_bound<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.protocol
            .as_ref()
            .map(|p| p.bind(py).clone())
            .ok_or_else(|| PyRuntimeError::new_err("transport is closed"))
    }

    fn watch(slf: &Bound<'_, Self>, write: bool) -> PyResult<()> {
        let py = slf.py();
        let (loop_, fd) = {
            let me = slf.try_borrow()?;
            let Some(l) = &me.loop_ else {
                return Ok(());
            };
            match me.io_fd() {
                Ok(fd) => (l.clone_ref(py), fd),
                // The socket was closed under us: its number may be another socket's, which
                // we must not register as ours. Fail as asyncio's transport fails on its first
                // I/O through the closed socket object.
                Err(err) => {
                    drop(me);
                    let message = if write {
                        "Fatal write error on socket transport"
                    } else {
                        "Fatal read error on socket transport"
                    };
                    return Self::fatal_error(slf, os_error(err), message);
                }
            }
        };
        let watcher = Watcher::Transport(slf.clone().unbind());
        // A callback still registered on this fd number (its file closed under the loop without
        // remove_reader, the number now this socket's) is replaced, and cancelled as asyncio's
        // `_add_reader` cancels the handle it replaces. It leaves the loop's hands: tracked again
        // by the GC, or a cycle through it would never be collected (see handles.rs).
        let old = LoopCore::watch(loop_.bind(py), fd, watcher, write)?;
        if write {
            slf.try_borrow_mut()?.write_watched = true;
        }
        if let Some(Watcher::Handle(old)) = old {
            retrack(&old);
            Handle::cancel_handle(old.bind(py))?;
        }
        Ok(())
    }

    /// Runs this transport's reaction to readiness, as the loop's ready queue asks. Errors are
    /// reported like a failing callback's; only KeyboardInterrupt and SystemExit come back.
    pub(crate) fn dispatch(slf: &Bound<'_, Self>, write: bool) -> PyResult<()> {
        let py = slf.py();
        let context = slf.try_borrow()?.context.clone_ref(py);
        let result = with_context(py, &context, || {
            if write {
                Self::_write_ready(slf)
            } else {
                Self::_read_ready(slf)
            }
        });
        match result {
            Ok(()) => Ok(()),
            Err(err) if is_fatal(py, &err) => Err(err),
            Err(err) => {
                let loop_ = slf.try_borrow()?.loop_.as_ref().map(|l| l.clone_ref(py));
                let method = if write { "_write_ready" } else { "_read_ready" };
                let context = PyDict::new(py);
                context.set_item(
                    "message",
                    format!("Exception in callback {}.{method}()", slf.repr()?),
                )?;
                context.set_item("exception", err.value(py))?;
                context.set_item("transport", slf)?;
                match loop_ {
                    Some(l) => l
                        .bind(py)
                        .call_method1("call_exception_handler", (context,))
                        .map(drop),
                    None => {
                        err.restore(py);
                        // SAFETY: an exception is set (restored just above).
                        unsafe { pyo3::ffi::PyErr_WriteUnraisable(slf.as_ptr()) };
                        Ok(())
                    }
                }
            }
        }
    }

    fn unwatch(slf: &Bound<'_, Self>, write: bool) -> PyResult<()> {
        let py = slf.py();
        let (loop_, fd) = {
            let mut me = slf.try_borrow_mut()?;
            if write {
                me.write_watched = false;
            }
            match &me.loop_ {
                Some(l) => (l.clone_ref(py), me.fd),
                None => return Ok(()),
            }
        };
        // Only our own registration: if the socket was closed under us and its number taken
        // by another socket, the watcher there now is someone else's.
        let old = LoopCore::unwatch_transport(loop_.bind(py), fd, write, slf.as_any())?;
        drop(old);
        Ok(())
    }

    /// asyncio's `_fatal_error`: report (OSErrors only in debug mode), then force-close.
    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        if is_fatal(py, &err) {
            return Err(err);
        }
        let (loop_, protocol) = {
            let me = slf.try_borrow()?;
            (
                me.loop_.as_ref().map(|l| l.clone_ref(py)),
                me.protocol.as_ref().map(|p| p.clone_ref(py)),
            )
        };
        if let Some(loop_) = &loop_ {
            let loop_ = loop_.bind(py);
            if err.is_instance_of::<pyo3::exceptions::PyOSError>(py) {
                if loop_.borrow().get_debug_flag() {
                    let kwargs = PyDict::new(py);
                    kwargs.set_item("exc_info", err.value(py))?;
                    logger(py)?.call_method("debug", ("%r: %s", slf, message), Some(&kwargs))?;
                }
            } else {
                let context = PyDict::new(py);
                context.set_item("message", message)?;
                context.set_item("exception", err.value(py))?;
                context.set_item("transport", slf)?;
                context.set_item("protocol", protocol)?;
                loop_.call_method1("call_exception_handler", (context,))?;
            }
        }
        Self::force_close(slf, Some(err.value(py).clone().into_any()))
    }

    /// asyncio's `_force_close`.
    fn force_close(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let (had_buffer, was_closing) = {
            let mut me = slf.try_borrow_mut()?;
            if me.conn_lost > 0 {
                return Ok(());
            }
            // The kept writes are ones asyncio would have sent by now: send what the kernel
            // takes, as asyncio's write() did, and drop only the rest, as its abort() does.
            me.send_kept();
            me.batched = false;
            me.write_error = None;
            let had_buffer = me.pending() > 0;
            me.clear_buffer();
            let was_closing = me.closing;
            me.closing = true;
            me.conn_lost += 1;
            (had_buffer, was_closing)
        };
        if had_buffer {
            Self::unwatch(slf, true)?;
        }
        if !was_closing {
            Self::unwatch(slf, false)?;
        }
        Self::schedule_connection_lost(slf, exc.unwrap_or_else(|| py.None().into_bound(py)))
    }

    fn schedule_connection_lost(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let (loop_, context) = {
            let me = slf.try_borrow()?;
            let context = me.context_given.then(|| me.context.clone_ref(py));
            (me.loop_bound(py)?, context)
        };
        let callback = slf.getattr(intern!(py, "_call_connection_lost"))?;
        let kwargs = match context {
            Some(context) => {
                let kwargs = PyDict::new(py);
                kwargs.set_item(intern!(py, "context"), context)?;
                Some(kwargs)
            }
            None => None,
        };
        loop_.call_method(intern!(py, "call_soon"), (callback, exc), kwargs.as_ref())?;
        Ok(())
    }

    /// Calls a protocol flow-control method; a failure goes to the exception handler.
    fn call_flow_control(slf: &Bound<'_, Self>, method: &str) -> PyResult<()> {
        let py = slf.py();
        let (loop_, protocol) = {
            let me = slf.try_borrow()?;
            (me.loop_bound(py)?, me.protocol_bound(py)?)
        };
        call_flow_control(loop_.as_any(), &protocol, method, slf.as_any(), &protocol)
    }

    /// asyncio's `_maybe_pause_protocol`.
    fn maybe_pause_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let pause = {
            let mut me = slf.try_borrow_mut()?;
            let size = me.pending();
            let below = match me.high_water.size {
                Some(high) => size <= high,
                None => {
                    let high = me.high_water.clone_ref(py);
                    drop(me);
                    let below = high.at_least(py, size)?;
                    me = slf.try_borrow_mut()?;
                    below
                }
            };
            let pause = !below && !me.protocol_paused;
            if pause {
                me.protocol_paused = true;
            }
            pause
        };
        if pause {
            Self::call_flow_control(slf, "pause_writing")?;
        }
        Ok(())
    }

    /// asyncio's `_maybe_resume_protocol`.
    fn maybe_resume_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let resume = {
            let mut me = slf.try_borrow_mut()?;
            if !me.protocol_paused {
                return Ok(());
            }
            let size = me.pending();
            let resume = match me.low_water.size {
                Some(low) => size <= low,
                None => {
                    let low = me.low_water.clone_ref(py);
                    drop(me);
                    let resume = low.at_least(py, size)?;
                    me = slf.try_borrow_mut()?;
                    resume && me.protocol_paused
                }
            };
            if resume {
                me.protocol_paused = false;
            }
            resume
        };
        if resume {
            Self::call_flow_control(slf, "resume_writing")?;
        }
        Ok(())
    }

    /// asyncio's `_read_ready__on_eof`.
    fn on_eof(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        match protocol.call_method0(intern!(py, "eof_received")) {
            Err(err) => Self::fatal_error(
                slf,
                err,
                "Fatal error: protocol.eof_received() call failed.",
            ),
            Ok(keep_open) => {
                if keep_open.is_truthy()? {
                    // Half-closed: keep writing, stop reading.
                    Self::unwatch(slf, false)
                } else {
                    Self::close(slf)
                }
            }
        }
    }

    fn read_data(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>, bulk: bool) -> PyResult<()> {
        let py = slf.py();
        let fd = match slf.try_borrow()?.io_fd() {
            Ok(fd) => fd,
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    os_error(err),
                    "Fatal read error on socket transport",
                )
            }
        };
        let received = if bulk {
            match recv_bytes(py, fd, BULK_READ) {
                Ok(received) => received,
                Err(err) => {
                    return Self::fatal_error(slf, err, "Fatal read error on socket transport")
                }
            }
        } else {
            RECV_BUFFER.with(|buf| {
                let mut buf = buf.borrow_mut();
                recv(fd, buf.as_mut_ptr(), buf.len()).map(|n| PyBytes::new(py, &buf[..n]))
            })
        };
        let data = match received {
            Ok(data) => {
                crate::metrics::count_read(data.as_bytes().len());
                let now_bulk = data.as_bytes().len() >= BULK_READ_THRESHOLD;
                if now_bulk != bulk {
                    slf.try_borrow_mut()?.bulk = now_bulk;
                }
                data
            }
            Err(err) if would_block(&err) => return Ok(()),
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    os_error(err),
                    "Fatal read error on socket transport",
                )
            }
        };
        if data.as_bytes().is_empty() {
            return Self::on_eof(slf, protocol);
        }
        match protocol.call_method1(intern!(py, "data_received"), (data,)) {
            Ok(_) => Ok(()),
            Err(err) => Self::fatal_error(
                slf,
                err,
                "Fatal error: protocol.data_received() call failed.",
            ),
        }
    }

    fn read_buffered(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        // ferroloop's TLS protocol is called directly, not through its Python methods, and the
        // received records go into its incoming BIO straight from the buffer they landed in.
        let tls = protocol.cast::<SSLProtocolCore>().ok();
        let buffer = match tls {
            Some(tls) => SSLProtocolCore::receive_buffer(tls),
            None => protocol.call_method1(intern!(py, "get_buffer"), (-1,)),
        }
        .and_then(|buf| {
            // asyncio's `if not len(buf)`, a get_buffer() failure (as is a buffer without len).
            if buf.len()? == 0 {
                return Err(PyRuntimeError::new_err(
                    "get_buffer() returned an empty buffer",
                ));
            }
            Ok(buf)
        });
        let buf = match buffer {
            Ok(buf) => buf,
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    err,
                    "Fatal error: protocol.get_buffer() call failed.",
                )
            }
        };
        // What recv_into(buf) accepts (`w*`): any writable C-contiguous buffer, of any format;
        // anything else is its TypeError, a read error.
        let view = RawBuffer::get_writable(&buf).ok();
        let Some((ptr, len)) = view.as_ref().and_then(RawBuffer::as_mut_ptr) else {
            let expected = if view.is_some() {
                "contiguous buffer"
            } else {
                "read-write bytes-like object"
            };
            drop(view);
            let err = PyTypeError::new_err(format!(
                "recv_into() argument 1 must be {expected}, not {}",
                type_name(&buf)
            ));
            return Self::fatal_error(slf, err, "Fatal read error on socket transport");
        };
        // The view holds the buffer exported (and so its memory pinned) until it is dropped.
        // get_buffer() ran Python code: the socket may have been closed (and its number reused)
        // meanwhile, so ownership is checked here, right before the read.
        let received = slf.try_borrow()?.io_fd().and_then(|fd| recv(fd, ptr, len));
        let nbytes = match received {
            Ok(n) => {
                crate::metrics::count_read(n);
                n
            }
            Err(err) if would_block(&err) => return Ok(()),
            Err(err) => {
                drop(view);
                return Self::fatal_error(
                    slf,
                    os_error(err),
                    "Fatal read error on socket transport",
                );
            }
        };
        // get_buffer() may have set another protocol (set_protocol): asyncio's
        // _read_ready__get_buffer hands the count, or the EOF, to `self._protocol` as it is by
        // now, although the bytes are in the old one's buffer (a plain Protocol then has no
        // buffer_updated(): a fatal error).
        let current = slf
            .try_borrow()?
            .protocol
            .as_ref()
            .map(|p| p.bind(py).clone());
        let protocol = match (&current, tls) {
            (Some(current), None) => current,
            _ => protocol,
        };
        if nbytes == 0 {
            drop(view);
            return Self::on_eof(slf, protocol);
        }
        let updated = match tls {
            Some(tls) => {
                // SAFETY: the kernel wrote `nbytes` bytes at the start of the exported buffer,
                // which `view` keeps alive and unresized until feed() (no Python code) returns.
                let data = unsafe { std::slice::from_raw_parts(ptr as *const u8, nbytes) };
                let fed = SSLProtocolCore::feed(tls, data);
                drop(view);
                fed.and_then(|()| SSLProtocolCore::process_incoming(tls))
            }
            None => {
                drop(view);
                protocol
                    .call_method1(intern!(py, "buffer_updated"), (nbytes,))
                    .map(drop)
            }
        };
        match updated {
            Ok(()) => Ok(()),
            Err(err) => Self::fatal_error(
                slf,
                err,
                "Fatal error: protocol.buffer_updated() call failed.",
            ),
        }
    }

    /// Sends or buffers `data` (asyncio's `write` after its checks). From the loop's callbacks,
    /// small writes wait for the end of the iteration (`BATCH_LIMIT`, `flush`).
    fn write_bytes(slf: &Bound<'_, Self>, data: &[u8]) -> PyResult<()> {
        let py = slf.py();
        let mut data = data;
        let start_watching = {
            let mut me = slf.try_borrow_mut()?;
            if me.eof {
                return Err(PyRuntimeError::new_err(
                    "Cannot call write() after write_eof()",
                ));
            }
            if me.empty_waiter.is_some() {
                return Err(PyRuntimeError::new_err(
                    "unable to write; sendfile is in progress",
                ));
            }
            if data.is_empty() {
                return Ok(());
            }
            if me.conn_lost > 0 {
                let warn = me.conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES;
                me.conn_lost += 1;
                drop(me);
                if warn {
                    logger(py)?.call_method1("warning", ("socket.send() raised exception.",))?;
                }
                return Ok(());
            }
            let pending = me.pending();
            let mut start_watching = false;
            if me.write_error.is_some() {
                // A send of kept writes failed; the flush is about to report it and close.
                return Ok(());
            }
            if pending == 0 || me.batched {
                // A high-water mark Python must compare (a Fraction...) sends at once: no
                // Python code while the transport is borrowed.
                let total = pending + data.len();
                let fits =
                    total <= BATCH_LIMIT && matches!(me.high_water.size, Some(h) if total <= h);
                let keep = if me.batched {
                    fits
                } else {
                    // Only a real socket's writes wait: another object (a test's mock) fails
                    // its sends at once, where the program expects to hear of it.
                    fits && !me.write_watched
                        && me.fd_checked
                        && match &me.loop_ {
                            Some(l) => l.bind(py).try_borrow_mut()?.defer_flush(slf),
                            None => false,
                        }
                };
                if keep {
                    me.batched = true;
                } else {
                    // Sent now, the kept bytes first: the flush will find nothing to do.
                    me.batched = false;
                    let sent = me
                        .io_fd()
                        .and_then(|fd| send2(fd, &me.buffer[me.head..], data));
                    match sent {
                        Ok(n) if n >= pending => {
                            me.consume(pending);
                            data = &data[n - pending..];
                            if data.is_empty() {
                                return Ok(());
                            }
                        }
                        Ok(n) => me.consume(n),
                        Err(err) if would_block(&err) => {}
                        Err(err) => {
                            drop(me);
                            return Self::fatal_error(
                                slf,
                                os_error(err),
                                "Fatal write error on socket transport",
                            );
                        }
                    }
                    start_watching = true;
                }
            }
            me.buffer.extend_from_slice(data);
            start_watching
        };
        if start_watching {
            Self::watch(slf, true)?;
        }
        Self::maybe_pause_protocol(slf)
    }

    /// Sends the writes kept for the end of the iteration (called by the loop, see
    /// `BATCH_LIMIT`); what the kernel does not take is left to the writer, as `write` leaves
    /// it, and an error is reported as `write` reports it, in the transport's context.
    pub(crate) fn flush(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let error = {
            let mut me = slf.try_borrow_mut()?;
            if !me.batched {
                return Ok(());
            }
            match me.send_kept() {
                Kept::Watch => None,
                Kept::Done => {
                    me.batched = false;
                    match me.write_error.take() {
                        Some(err) => Some(err),
                        None => return Ok(()),
                    }
                }
            }
        };
        match error {
            None => Self::watch(slf, true),
            Some(err) => {
                let context = slf.try_borrow()?.context.clone_ref(py);
                with_context(py, &context, || {
                    Self::fatal_error(slf, os_error(err), "Fatal write error on socket transport")
                })
            }
        }
    }
}

#[pymethods]
impl SocketTransportCore {
    #[new]
    #[pyo3(signature = (loop_, sock, protocol, waiter=None, extra=None, server=None, context=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        loop_: &Bound<'_, LoopCore>,
        sock: &Bound<'_, PyAny>,
        protocol: &Bound<'_, PyAny>,
        waiter: Option<&Bound<'_, PyAny>>,
        extra: Option<Bound<'_, PyDict>>,
        server: Option<&Bound<'_, PyAny>>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let _ = waiter; // resolved by the Python subclass once connection_made() is scheduled
        let fd: RawFd = sock.call_method0("fileno")?.extract()?;
        if fd < 0 {
            return Err(PyValueError::new_err("the socket is closed"));
        }
        let fd_checked = fd_readable_back(sock, fd)?;
        let extra = extra.unwrap_or_else(|| PyDict::new(py));
        let wrapper = TRANSPORT_SOCKET
            .import(py, "asyncio.trsock", "TransportSocket")?
            .call1((sock,))?;
        extra.set_item("socket", wrapper)?;
        extra.set_item("sockname", sock.call_method0("getsockname").ok())?;
        if !extra.contains("peername")? {
            extra.set_item("peername", sock.call_method0("getpeername").ok())?;
        }
        let buffered = protocol.is_instance(
            &py.import("asyncio")?
                .getattr(intern!(py, "BufferedProtocol"))?,
        )?;
        Ok(SocketTransportCore {
            loop_: Some(loop_.clone().unbind()),
            sock: Some(sock.clone().unbind()),
            fd,
            fd_checked,
            protocol: Some(protocol.clone().unbind()),
            buffered,
            bulk: false,
            protocol_connected: true,
            extra: extra.unbind(),
            server: server.filter(|s| !s.is_none()).map(|s| s.clone().unbind()),
            context_given: context.is_some(),
            context: match context {
                Some(context) => context.unbind(),
                // SAFETY: PyContext_CopyCurrent returns a new reference or NULL with an
                // exception set, which from_owned_ptr_or_err turns into an error.
                None => {
                    unsafe { Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyContext_CopyCurrent())? }
                        .unbind()
                }
            },
            buffer: Vec::new(),
            head: 0,
            high_water: WaterMark::size(DEFAULT_HIGH_WATER),
            low_water: WaterMark::size(DEFAULT_HIGH_WATER / 4),
            conn_lost: 0,
            closing: false,
            eof: false,
            paused: false,
            protocol_paused: false,
            empty_waiter: None,
            batched: false,
            write_error: None,
            write_watched: false,
        })
    }

    /// Starts reading (scheduled right after `connection_made`), unless closing or paused.
    fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        {
            let me = slf.try_borrow()?;
            if me.closing || me.paused {
                return Ok(());
            }
        }
        Self::watch(slf, false)
    }

    pub(crate) fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (protocol, buffered, bulk) = {
            let me = slf.try_borrow()?;
            if me.conn_lost > 0 || me.closing || me.paused {
                return Ok(());
            }
            (me.protocol_bound(py)?, me.buffered, me.bulk)
        };
        if buffered {
            Self::read_buffered(slf, &protocol)
        } else {
            Self::read_data(slf, &protocol, bulk)
        }
    }

    pub(crate) fn _write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let sent = {
            let me = slf.try_borrow()?;
            if me.conn_lost > 0 {
                return Ok(());
            }
            if me.pending() == 0 {
                None
            } else {
                Some(me.io_fd().and_then(|fd| send(fd, &me.buffer[me.head..])))
            }
        };
        let Some(sent) = sent else {
            return Self::unwatch(slf, true);
        };
        match sent {
            Err(err) if would_block(&err) => Ok(()),
            Err(err) => {
                Self::unwatch(slf, true)?;
                let waiter = {
                    let mut me = slf.try_borrow_mut()?;
                    me.clear_buffer();
                    me.empty_waiter.as_ref().map(|w| w.clone_ref(py))
                };
                let err = os_error(err);
                let value = err.value(py).clone();
                Self::fatal_error(slf, err, "Fatal write error on socket transport")?;
                if let Some(waiter) = waiter {
                    waiter.bind(py).call_method1("set_exception", (value,))?;
                }
                Ok(())
            }
            Ok(n) => {
                slf.try_borrow_mut()?.consume(n);
                // May write more (asyncio's comment: "May append to buffer").
                Self::maybe_resume_protocol(slf)?;
                let (empty, waiter, closing, eof) = {
                    let me = slf.try_borrow()?;
                    (
                        me.pending() == 0,
                        me.empty_waiter.as_ref().map(|w| w.clone_ref(py)),
                        me.closing,
                        me.eof,
                    )
                };
                if empty {
                    Self::unwatch(slf, true)?;
                    if let Some(waiter) = waiter {
                        waiter.bind(py).call_method1("set_result", (py.None(),))?;
                    }
                    if closing {
                        Self::_call_connection_lost(slf, py.None().into_bound(py))?;
                    } else if eof {
                        // Failure (peer gone, socket closed under us) is harmless here: the
                        // next read reports it.
                        if let Ok(fd) = slf.try_borrow()?.io_fd() {
                            // SAFETY: shutdown of the fd our socket object still holds.
                            unsafe { libc::shutdown(fd, libc::SHUT_WR) };
                        }
                    }
                }
                Ok(())
            }
        }
    }

    pub(crate) fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(bytes) = data.cast::<PyBytes>() {
            return Self::write_bytes(slf, bytes.as_bytes());
        }
        if !(data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>()) {
            // asyncio's message, which 3.14 made name the accepted types.
            let accepted = if crate::python_version(data.py()) >= (3, 14, 0) {
                "a bytes, bytearray, or memoryview object"
            } else {
                "a bytes-like object"
            };
            return Err(PyTypeError::new_err(format!(
                "data argument must be {accepted}, not {}",
                data.get_type().name()?.repr()?
            )));
        }
        // Any format, as socket.send() takes it: its raw bytes.
        let view = RawBuffer::get(data)?;
        match view.as_bytes() {
            // No Python code runs before write_bytes has sent or copied them.
            Some(bytes) => Self::write_bytes(slf, bytes),
            // A strided memoryview: a contiguous copy, as bytes(view) would make (asyncio's
            // send() refuses it, see docs/differences.md, noncontiguous-write).
            None => {
                let copy = view.to_vec()?;
                drop(view);
                Self::write_bytes(slf, &copy)
            }
        }
    }

    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        // One write of the joined data, as 3.11's WriteTransport.writelines.
        let joined = PyBytes::new(slf.py(), b"").call_method1("join", (list_of_data,))?;
        Self::write(slf, &joined)
    }

    fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::flush_now(slf)?;
        let shutdown_fd = {
            let mut me = slf.try_borrow_mut()?;
            if me.closing || me.eof {
                return Ok(());
            }
            me.eof = true;
            (me.pending() == 0).then(|| me.io_fd())
        };
        if let Some(fd) = shutdown_fd {
            let fd = fd.map_err(os_error)?;
            // SAFETY: shutdown of the fd our socket object still holds.
            if unsafe { libc::shutdown(fd, libc::SHUT_WR) } != 0 {
                return Err(os_error(std::io::Error::last_os_error()));
            }
        }
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::flush_now(slf)?;
        let flushed = {
            let mut me = slf.try_borrow_mut()?;
            if me.closing {
                return Ok(());
            }
            me.closing = true;
            let flushed = me.pending() == 0;
            if flushed {
                me.conn_lost += 1;
            }
            flushed
        };
        Self::unwatch(slf, false)?;
        if flushed {
            Self::unwatch(slf, true)?;
            let py = slf.py();
            Self::schedule_connection_lost(slf, py.None().into_bound(py))?;
        }
        Ok(())
    }

    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::force_close(slf, None)
    }

    #[pyo3(signature = (exc))]
    fn _force_close(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        Self::force_close(slf, Some(exc))
    }

    fn _fatal_error(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>, message: &str) -> PyResult<()> {
        Self::fatal_error(slf, PyErr::from_value(exc), message)
    }

    /// asyncio's `_call_connection_lost`: the protocol hears of it, then the socket is closed and
    /// every reference this transport holds is released (which also breaks the cycle through
    /// its handles).
    fn _call_connection_lost(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let (protocol, connected) = {
            let me = slf.try_borrow()?;
            (
                me.protocol.as_ref().map(|p| p.clone_ref(py)),
                me.protocol_connected,
            )
        };
        let notified = match (protocol, connected) {
            (Some(p), true) => p
                .bind(py)
                .call_method1("connection_lost", (&exc,))
                .map(drop),
            _ => Ok(()),
        };
        let (sock, server, waiter) = {
            let mut me = slf.try_borrow_mut()?;
            me.conn_lost = me.conn_lost.max(1);
            me.closing = true;
            me.protocol = None;
            me.loop_ = None;
            (me.sock.take(), me.server.take(), me.empty_waiter.take())
        };
        if let Some(sock) = sock {
            sock.bind(py).call_method0("close")?;
        }
        if let Some(server) = server {
            server.bind(py).call_method1("_detach", (slf,))?;
        }
        if let Some(waiter) = waiter {
            let waiter = waiter.bind(py);
            if !waiter.call_method0("done")?.is_truthy()? {
                let err =
                    pyo3::exceptions::PyConnectionError::new_err("Connection is closed by peer");
                waiter.call_method1("set_exception", (err.value(py),))?;
            }
        }
        notified
    }

    fn is_closing(&self) -> bool {
        self.closing
    }

    fn is_reading(&self) -> bool {
        !self.paused && !self.closing
    }

    fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        {
            let mut me = slf.try_borrow_mut()?;
            if me.closing || me.paused {
                return Ok(());
            }
            me.paused = true;
        }
        Self::unwatch(slf, false)
    }

    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        {
            let mut me = slf.try_borrow_mut()?;
            if me.closing || !me.paused {
                return Ok(());
            }
            me.paused = false;
        }
        Self::watch(slf, false)
    }

    /// asyncio's `_FlowControlMixin.set_write_buffer_limits`, computed as there with the
    /// objects given: `4 * low`, `high // 4` and `high >= low >= 0` are Python's, exceptions
    /// and all (an object with only `__index__` is a TypeError, 1.5 and 10**400 are limits).
    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(
        slf: &Bound<'_, Self>,
        high: Option<Bound<'_, PyAny>>,
        low: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let high = high.filter(|h| !h.is_none());
        let low = low.filter(|l| !l.is_none());
        let high = match (high, &low) {
            (Some(h), _) => h,
            (None, None) => DEFAULT_HIGH_WATER.into_pyobject(py)?.into_any(),
            (None, Some(l)) => 4i64.into_pyobject(py)?.mul(l)?,
        };
        let low = match low {
            Some(l) => l,
            None => high.floor_div(4i64)?,
        };
        if !(high.ge(&low)? && low.ge(0i64)?) {
            return Err(PyValueError::new_err(format!(
                "high ({}) must be >= low ({}) must be >= 0",
                high.repr()?,
                low.repr()?
            )));
        }
        Self::flush_now(slf)?;
        let old = {
            let mut me = slf.try_borrow_mut()?;
            (
                std::mem::replace(&mut me.high_water, WaterMark::new(&high)),
                std::mem::replace(&mut me.low_water, WaterMark::new(&low)),
            )
        };
        // Released with nothing borrowed: they may have finalizers.
        drop(old);
        Self::maybe_pause_protocol(slf)
    }

    fn get_write_buffer_limits(&self, py: Python<'_>) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        Ok((self.low_water.get(py)?, self.high_water.get(py)?))
    }

    fn get_write_buffer_size(slf: &Bound<'_, Self>) -> PyResult<usize> {
        Self::flush_now(slf)?;
        Ok(slf.try_borrow()?.pending())
    }

    #[pyo3(signature = (name, default=None))]
    fn get_extra_info<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self.extra.bind(py).get_item(name)? {
            Some(v) => Ok(v),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    fn set_protocol(&mut self, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = protocol.py();
        self.buffered = protocol.is_instance(
            &py.import("asyncio")?
                .getattr(intern!(py, "BufferedProtocol"))?,
        )?;
        self.protocol = Some(protocol.clone().unbind());
        self.protocol_connected = true;
        Ok(())
    }

    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.protocol.as_ref().map(|p| p.clone_ref(py))
    }

    #[getter]
    fn _sock(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.sock.as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn _sock_fd(&self) -> RawFd {
        self.fd
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> Option<Py<LoopCore>> {
        self.loop_.as_ref().map(|l| l.clone_ref(py))
    }

    #[getter]
    fn _protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.protocol.as_ref().map(|p| p.clone_ref(py))
    }

    #[getter]
    fn _server(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.server.as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn _closing(&self) -> bool {
        self.closing
    }

    #[getter]
    fn _conn_lost(&self) -> u32 {
        self.conn_lost
    }

    #[getter]
    fn _paused(&self) -> bool {
        self.paused
    }

    #[getter]
    fn _eof(&self) -> bool {
        self.eof
    }

    #[getter]
    fn _protocol_paused(&self) -> bool {
        self.protocol_paused
    }

    #[getter]
    fn _empty_waiter(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.empty_waiter.as_ref().map(|w| w.clone_ref(py))
    }

    /// sendfile support (asyncio's `_make_empty_waiter`): a future done once the buffer drains.
    fn _make_empty_waiter(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        Self::flush_now(slf)?;
        let (loop_, empty) = {
            let me = slf.try_borrow()?;
            if me.empty_waiter.is_some() {
                return Err(PyRuntimeError::new_err("Empty waiter is already set"));
            }
            (me.loop_bound(py)?, me.pending() == 0)
        };
        let waiter = loop_.call_method0(intern!(py, "create_future"))?;
        if empty {
            waiter.call_method1("set_result", (py.None(),))?;
        }
        slf.try_borrow_mut()?.empty_waiter = Some(waiter.clone().unbind());
        Ok(waiter.unbind())
    }

    fn _reset_empty_waiter(&mut self) {
        self.empty_waiter = None;
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        visit.call(&self.sock)?;
        visit.call(&self.protocol)?;
        visit.call(&self.extra)?;
        visit.call(&self.server)?;
        visit.call(&self.context)?;
        visit.call(&self.empty_waiter)?;
        visit.call(&self.high_water.object)?;
        visit.call(&self.low_water.object)?;
        Ok(())
    }

    fn __clear__(&mut self) {
        self.loop_ = None;
        self.sock = None;
        self.protocol = None;
        self.server = None;
        self.empty_waiter = None;
    }
}
