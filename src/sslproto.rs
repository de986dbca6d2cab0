//! `SSLProtocolCore`: the data path of asyncio's TLS protocol (`sslproto.SSLProtocol`), native.
//!
//! The Python class `ferroloop._sslproto.SSLProtocol` derives from this one *and* from the running
//! interpreter's `asyncio.sslproto.SSLProtocol`. The methods defined here come first in its MRO and
//! replace asyncio's on the per-byte path: `get_buffer`/`buffer_updated` (TLS records from the
//! socket), `_do_read`/`_do_read__copied`/`_do_read__buffered` (plaintext to the app protocol), `_write_appdata`/
//! `_do_write`/`_process_outgoing` (plaintext from the app, records to the socket) and the flow
//! control checks. Everything else (handshake, shutdown, timeouts, `connection_lost`, error
//! reporting) stays asyncio's own code, so it follows the running Python version.
//!
//! The state those methods share with asyncio's is stored here, behind properties named as
//! asyncio names its attributes (`_state`, `_sslobj`, `_write_backlog`...): asyncio's methods
//! read and write it unchanged.
//!
//! Differences from asyncio that cannot be observed:
//! - Decrypted data is read into the protocol's 256 KiB receive buffer (free again once its
//!   records are in the incoming BIO) and copied out at its size, instead of a 256 KiB `bytes`
//!   per `SSLObject.read()`.
//! - With an exact `ssl.SSLObject`, reads stop when neither the incoming BIO nor OpenSSL holds
//!   anything more: asyncio reads once more there only to be told `SSLWantReadError`, whose
//!   construction costs more than the read. (OpenSSL takes records from a memory BIO one at a
//!   time unless read-ahead is on, which the ssl module never turns on: nothing can be left
//!   half-way between the BIO and `pending()`.) Subclasses (`SSLContext.sslobject_class`) get
//!   their own `read` and `write` called exactly as asyncio calls them.
//! - The app transport's `write()` (a native method of our `_SSLProtocolTransport` subclass)
//!   and the socket transport's reads call this class directly, not through Python methods.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyException;
use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyTuple, PyType};

use crate::fastcall::{into_raw, method_descriptor, single_argument};

use crate::transport::{call_flow_control, SocketTransportCore};

/// asyncio's `SSLProtocol.max_size`: the receive buffer and the most one read asks for.
const MAX_SIZE: usize = 256 * 1024;

static SSLPROTO: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
static SSL_OBJECT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static MEMORY_BIO: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `asyncio.sslproto.SSLProtocolState`, by member.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Unwrapped,
    DoHandshake,
    Wrapped,
    Flushing,
    Shutdown,
    /// Not a member (a test's stand-in): equal to none of them, as in asyncio's comparisons.
    Other,
}

const STATE_NAMES: [(&str, State); 5] = [
    ("UNWRAPPED", State::Unwrapped),
    ("DO_HANDSHAKE", State::DoHandshake),
    ("WRAPPED", State::Wrapped),
    ("FLUSHING", State::Flushing),
    ("SHUTDOWN", State::Shutdown),
];

fn sslproto(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    SSLPROTO
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("asyncio.sslproto")?.unbind())
        })
        .map(|m| m.bind(py))
}

fn classify(value: &Bound<'_, PyAny>) -> PyResult<State> {
    let states = sslproto(value.py())?.getattr(intern!(value.py(), "SSLProtocolState"))?;
    for (name, state) in STATE_NAMES {
        if states.getattr(name)?.is(value) {
            return Ok(state);
        }
    }
    Ok(State::Other)
}

/// asyncio's `SSLAgainErrors`: what a read or write says when the BIOs must move first.
fn is_again(py: Python<'_>, err: &PyErr) -> PyResult<bool> {
    let again = sslproto(py)?.getattr(intern!(py, "SSLAgainErrors"))?;
    Ok(err.is_instance(py, &again))
}

/// What `_write_appdata` writes: asyncio passes a list (or any iterable) of pieces; the app
/// transport's `write()` has one.
pub(crate) enum AppData<'a, 'py> {
    One(&'a Bound<'py, PyAny>),
    Many(&'a Bound<'py, PyAny>),
}

#[pyclass(module = "ferroloop._ferroloop", subclass)]
pub struct SSLProtocolCore {
    state_obj: Option<Py<PyAny>>,
    state: State,
    incoming: Option<Py<PyAny>>,
    /// `incoming.write` and `outgoing.read`, bound once: a call by name looks the method up
    /// each time.
    incoming_write: Option<Py<PyAny>>,
    outgoing: Option<Py<PyAny>>,
    outgoing_read: Option<Py<PyAny>>,
    /// `outgoing` is exactly `ssl.MemoryBIO`, whose `read()` empties it.
    outgoing_is_bio: bool,
    sslobj: Option<Py<PyAny>>,
    /// The methods of `sslobj._sslobj` (the `_ssl` object) when `sslobj` is exactly
    /// `ssl.SSLObject`, whose `read`, `write` and `pending` only forward to them.
    sslobj_c: Option<SslMethods>,
    #[pyo3(get, set, name = "_transport")]
    transport: Option<Py<PyAny>>,
    #[pyo3(get, set, name = "_app_protocol")]
    app_protocol: Option<Py<PyAny>>,
    #[pyo3(get, set, name = "_app_protocol_is_buffer")]
    app_protocol_is_buffer: bool,
    #[pyo3(get, set, name = "_app_transport")]
    app_transport: Option<Py<PyAny>>,
    #[pyo3(get, set, name = "_loop")]
    loop_: Option<Py<PyAny>>,
    #[pyo3(get, set, name = "_ssl_buffer")]
    ssl_buffer: Option<Py<PyAny>>,
    #[pyo3(get, set, name = "_ssl_buffer_view")]
    ssl_buffer_view: Option<Py<PyAny>>,
    #[pyo3(get, set, name = "_write_backlog")]
    write_backlog: Option<Py<PyAny>>,
    #[pyo3(get, set, name = "_write_buffer_size")]
    write_buffer_size: isize,
    #[pyo3(get, set, name = "_conn_lost")]
    conn_lost: isize,
    #[pyo3(get, set, name = "_app_reading_paused")]
    app_reading_paused: bool,
    #[pyo3(get, set, name = "_app_writing_paused")]
    app_writing_paused: bool,
    #[pyo3(get, set, name = "_ssl_reading_paused")]
    ssl_reading_paused: bool,
    #[pyo3(get, set, name = "_ssl_writing_paused")]
    ssl_writing_paused: bool,
    /// The water marks as asyncio stored them (any number) and as compared here.
    incoming_high_water: (Option<Py<PyAny>>, f64),
    incoming_low_water: (Option<Py<PyAny>>, f64),
    outgoing_high_water: (Option<Py<PyAny>>, f64),
    outgoing_low_water: (Option<Py<PyAny>>, f64),
}

pub(crate) struct SslMethods {
    read: Py<PyAny>,
    write: Py<PyAny>,
    pending: Py<PyAny>,
}

impl SslMethods {
    fn clone_ref(&self, py: Python<'_>) -> Self {
        SslMethods {
            read: self.read.clone_ref(py),
            write: self.write.clone_ref(py),
            pending: self.pending.clone_ref(py),
        }
    }
}

/// `object.name`, bound, or `None` when it has no such attribute (a call by name then fails
/// as in asyncio).
fn bound_method(
    object: &Bound<'_, PyAny>,
    name: &Bound<'_, pyo3::types::PyString>,
) -> Option<Py<PyAny>> {
    object.getattr(name).ok().map(Bound::unbind)
}

/// `field.name(*args)`, through the method bound beforehand when there is one.
fn call_cached<'py>(
    py: Python<'py>,
    object: &Option<Py<PyAny>>,
    method: &Option<Py<PyAny>>,
    name: &Bound<'py, pyo3::types::PyString>,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    match method {
        Some(method) => method.bind(py).call1(args),
        None => bind(py, object).call_method1(name, args),
    }
}

/// A field's object, `None` included (calling a method on it then fails as in asyncio).
fn bind<'py>(py: Python<'py>, field: &Option<Py<PyAny>>) -> Bound<'py, PyAny> {
    match field {
        Some(object) => object.bind(py).clone(),
        None => py.None().into_bound(py),
    }
}

fn water_mark(value: &Bound<'_, PyAny>) -> PyResult<(Option<Py<PyAny>>, f64)> {
    Ok((Some(value.clone().unbind()), value.extract::<f64>()?))
}

fn bio_pending(bio: &Bound<'_, PyAny>) -> PyResult<isize> {
    bio.getattr(intern!(bio.py(), "pending"))?.extract()
}

/// A writable memoryview of `len` bytes at `ptr`, for `read(n, buffer)`.
///
/// # Safety
/// `ptr..ptr+len` must stay valid and unaliased while the view is used.
unsafe fn raw_view(
    py: Python<'_>,
    ptr: *mut u8,
    len: usize,
    writable: bool,
) -> PyResult<Bound<'_, PyAny>> {
    let flags = if writable {
        pyo3::ffi::PyBUF_WRITE
    } else {
        pyo3::ffi::PyBUF_READ
    };
    // SAFETY: guaranteed by the caller; the result is a new reference or NULL with an error set.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyMemoryView_FromMemory(ptr as *mut _, len as pyo3::ffi::Py_ssize_t, flags),
        )
    }
}

impl SSLProtocolCore {
    /// Calls one of asyncio's methods on this object (the Python half).
    fn call_py<'py>(
        slf: &Bound<'py, Self>,
        name: &Bound<'py, pyo3::types::PyString>,
        args: impl pyo3::call::PyCallArgs<'py>,
    ) -> PyResult<Bound<'py, PyAny>> {
        slf.as_any().call_method1(name, args)
    }

    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        if !err.is_instance_of::<PyException>(py) {
            return Err(err);
        }
        Self::call_py(slf, intern!(py, "_fatal_error"), (err.value(py), message)).map(drop)
    }

    /// `protocol.pause_writing()`/`resume_writing()` of the app, failures reported as asyncio.
    fn call_app_flow_control(slf: &Bound<'_, Self>, method: &str) -> PyResult<()> {
        let py = slf.py();
        let (app_protocol, app_transport, loop_) = {
            let me = slf.try_borrow()?;
            (
                bind(py, &me.app_protocol),
                bind(py, &me.app_transport),
                bind(py, &me.loop_),
            )
        };
        call_flow_control(&loop_, &app_protocol, method, &app_transport, slf.as_any())
    }

    /// One `sslobj.write(data)`: the byte count.
    fn ssl_write(
        py: Python<'_>,
        sslobj: &Bound<'_, PyAny>,
        sslobj_c: &Option<SslMethods>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<isize> {
        match sslobj_c {
            Some(c) => c.write.bind(py).call1((data,))?.extract(),
            None => sslobj
                .call_method1(intern!(py, "write"), (data,))?
                .extract(),
        }
    }

    /// asyncio's `_do_read__copied`. `fed`: records were just written to the incoming BIO, so
    /// the first read is made without asking whether there is anything to read.
    fn read_copied(slf: &Bound<'_, Self>, fed: bool) -> PyResult<()> {
        let py = slf.py();
        let (sslobj, sslobj_c, incoming, ssl_buffer_view, app_protocol) = {
            let me = slf.try_borrow()?;
            (
                bind(py, &me.sslobj),
                me.sslobj_c.as_ref().map(|o| o.clone_ref(py)),
                bind(py, &me.incoming),
                bind(py, &me.ssl_buffer_view),
                bind(py, &me.app_protocol),
            )
        };
        // What the reads returned, passed on as asyncio does: alone, or joined.
        let mut parts: Vec<Bound<'_, PyAny>> = Vec::new();
        let mut eof = false;
        match &sslobj_c {
            Some(c) => {
                // Decrypted data lands in the receive buffer (through `_ssl_buffer_view`); the
                // export pins its memory (it cannot be resized) while reads land in it.
                let buffer = PyBuffer::<u8>::get(&ssl_buffer_view)?;
                if buffer.readonly() || !buffer.is_c_contiguous() || buffer.len_bytes() == 0 {
                    return Err(pyo3::exceptions::PyTypeError::new_err(
                        "_ssl_buffer_view must be a writable, contiguous, non-empty buffer",
                    ));
                }
                let base = buffer.buf_ptr() as *mut u8;
                let capacity = buffer.len_bytes();
                let mut filled = 0usize;
                let mut check = !fed;
                loop {
                    if std::mem::replace(&mut check, true)
                        && bio_pending(&incoming)? == 0
                        && c.pending.bind(py).call0()?.extract::<usize>()? == 0
                    {
                        break;
                    }
                    if filled == capacity {
                        // SAFETY: `base..base+filled` is initialised, exported memory.
                        let full = unsafe { std::slice::from_raw_parts(base, filled) };
                        parts.push(PyBytes::new(py, full).into_any());
                        filled = 0;
                    }
                    let room = (capacity - filled).min(MAX_SIZE);
                    let result = if filled == 0 {
                        c.read.bind(py).call1((room, &ssl_buffer_view))
                    } else {
                        // SAFETY: `base+filled..base+filled+room` lies inside the exported
                        // buffer, which `buffer` keeps alive and unresized; the view is dropped
                        // right after the read, and nothing else writes there meanwhile.
                        let view = unsafe { raw_view(py, base.add(filled), room, true)? };
                        c.read.bind(py).call1((room, &view))
                    };
                    match result {
                        Ok(count) => {
                            let count: usize = count.extract()?;
                            if count == 0 {
                                eof = true;
                                break;
                            }
                            filled += count.min(room);
                        }
                        Err(err) if is_again(py, &err)? => break,
                        Err(err) => return Err(err),
                    }
                }
                if filled > 0 {
                    // SAFETY: as above; copied out before the export is released.
                    let data = unsafe { std::slice::from_raw_parts(base, filled) };
                    parts.push(PyBytes::new(py, data).into_any());
                }
                drop(buffer);
            }
            None => loop {
                match sslobj.call_method1(intern!(py, "read"), (MAX_SIZE,)) {
                    Ok(chunk) => {
                        if !chunk.is_truthy()? {
                            eof = true;
                            break;
                        }
                        parts.push(chunk);
                    }
                    Err(err) if is_again(py, &err)? => break,
                    Err(err) => return Err(err),
                }
            },
        }
        match parts.len() {
            0 => {}
            1 => {
                app_protocol.call_method1(intern!(py, "data_received"), (&parts[0],))?;
            }
            _ => {
                let joined = PyBytes::new(py, b"")
                    .call_method1(intern!(py, "join"), (PyTuple::new(py, &parts)?,))?;
                app_protocol.call_method1(intern!(py, "data_received"), (joined,))?;
            }
        }
        if eof {
            Self::call_py(slf, intern!(py, "_call_eof_received"), ())?;
            Self::call_py(slf, intern!(py, "_start_shutdown"), ())?;
        }
        Ok(())
    }

    /// asyncio's `_do_read`; `fed` as for `read_copied`.
    fn do_read(slf: &Bound<'_, Self>, fed: bool) -> PyResult<()> {
        let state = slf.try_borrow()?.state;
        if !matches!(state, State::Wrapped | State::Flushing) {
            return Ok(());
        }
        Self::or_fatal(slf, Self::read_body(slf, fed))
    }

    /// asyncio's `_do_read__buffered`: decrypted data goes straight into the buffer the app
    /// protocol (a `BufferedProtocol`) hands out. `fed` as for `read_copied`.
    fn read_buffered(slf: &Bound<'_, Self>, fed: bool) -> PyResult<()> {
        let py = slf.py();
        let (sslobj, sslobj_c, incoming) = {
            let me = slf.try_borrow()?;
            (
                bind(py, &me.sslobj),
                me.sslobj_c.as_ref().map(|o| o.clone_ref(py)),
                bind(py, &me.incoming),
            )
        };
        let size_hint = bio_pending(&incoming)?;
        let buf = slf
            .getattr(intern!(py, "_app_protocol_get_buffer"))?
            .call1((size_hint,))?;
        let wants = buf.len()? as isize;
        let read = |n: isize, target: &Bound<'_, PyAny>| -> PyResult<isize> {
            match &sslobj_c {
                Some(c) => c.read.bind(py).call1((n, target))?.extract(),
                None => sslobj
                    .call_method1(intern!(py, "read"), (n, target))?
                    .extract(),
            }
        };
        // Whether a read can only say SSLWantReadError (see the module docs).
        let exhausted = || -> PyResult<bool> {
            Ok(match &sslobj_c {
                Some(c) => {
                    bio_pending(&incoming)? == 0
                        && c.pending.bind(py).call0()?.extract::<usize>()? == 0
                }
                None => false,
            })
        };
        let mut offset = 0isize;
        let mut count = 1isize;
        let outcome: PyResult<()> = (|| {
            if !fed && exhausted()? {
                return Ok(());
            }
            count = read(wants, &buf)?;
            if count > 0 {
                offset = count;
                while offset < wants {
                    if exhausted()? {
                        return Ok(());
                    }
                    let rest =
                        buf.get_item(pyo3::types::PySlice::new(py, offset, isize::MAX, 1))?;
                    count = read(wants - offset, &rest)?;
                    if count > 0 {
                        offset += count;
                    } else {
                        return Ok(());
                    }
                }
                // The app's buffer is full and more may be waiting: read again soon.
                let again = slf.getattr(intern!(py, "_do_read"))?;
                bind(py, &slf.try_borrow()?.loop_)
                    .call_method1(intern!(py, "call_soon"), (again,))?;
            }
            Ok(())
        })();
        match outcome {
            Ok(()) => {}
            Err(err) if is_again(py, &err)? => {}
            Err(err) => return Err(err),
        }
        if offset > 0 {
            slf.getattr(intern!(py, "_app_protocol_buffer_updated"))?
                .call1((offset,))?;
        }
        if count == 0 {
            // close_notify
            Self::call_py(slf, intern!(py, "_call_eof_received"), ())?;
            Self::call_py(slf, intern!(py, "_start_shutdown"), ())?;
        }
        Ok(())
    }

    /// The body of `_do_read`, whose exceptions asyncio turns into `_fatal_error`.
    fn read_body(slf: &Bound<'_, Self>, fed: bool) -> PyResult<()> {
        let (paused, is_buffer) = {
            let me = slf.try_borrow()?;
            (me.app_reading_paused, me.app_protocol_is_buffer)
        };
        if !paused {
            if is_buffer {
                Self::read_buffered(slf, fed)?;
            } else {
                Self::read_copied(slf, fed)?;
            }
            if Self::backlog_len(slf)? > 0 {
                Self::_do_write(slf)?;
            } else {
                Self::_process_outgoing(slf)?;
            }
        }
        Self::_control_ssl_reading(slf)
    }

    fn backlog_len(slf: &Bound<'_, Self>) -> PyResult<usize> {
        let backlog = bind(slf.py(), &slf.try_borrow()?.write_backlog);
        backlog.len()
    }

    /// `_write_appdata` after its state check.
    fn write_body(slf: &Bound<'_, Self>, data: AppData<'_, '_>) -> PyResult<()> {
        let py = slf.py();
        let (state, backlog, sslobj, sslobj_c) = {
            let me = slf.try_borrow()?;
            (
                me.state,
                bind(py, &me.write_backlog),
                bind(py, &me.sslobj),
                me.sslobj_c.as_ref().map(|o| o.clone_ref(py)),
            )
        };
        let single = match data {
            AppData::One(piece) => Some(piece.clone()),
            AppData::Many(list) => match list.cast::<PyTuple>() {
                Ok(tuple) if tuple.len() == 1 => Some(tuple.get_item(0)?),
                _ => None,
            },
        };
        // One piece and nothing queued (the app transport's write()): asyncio would append it
        // to the backlog and pop it again at once; the outcome is the same without the deque.
        if let Some(data) = single.filter(|_| state == State::Wrapped) {
            if backlog.len()? == 0 {
                let data_len = match data.len() {
                    Ok(len) => len as isize,
                    Err(err) => {
                        // asyncio has appended the piece before measuring it.
                        backlog.call_method1(intern!(py, "append"), (&data,))?;
                        return Err(err);
                    }
                };
                slf.try_borrow_mut()?.write_buffer_size += data_len;
                let written = match Self::ssl_write(py, &sslobj, &sslobj_c, &data) {
                    Ok(count) if count >= data_len => {
                        slf.try_borrow_mut()?.write_buffer_size -= data_len;
                        Self::_process_outgoing(slf)
                    }
                    Ok(count) => {
                        let rest =
                            data.get_item(pyo3::types::PySlice::new(py, count, isize::MAX, 1))?;
                        backlog.call_method1(intern!(py, "append"), (rest,))?;
                        slf.try_borrow_mut()?.write_buffer_size -= count;
                        Self::_do_write(slf)
                    }
                    Err(err) => {
                        backlog.call_method1(intern!(py, "append"), (&data,))?;
                        if is_again(py, &err)? {
                            Self::_process_outgoing(slf)
                        } else {
                            Err(err)
                        }
                    }
                };
                return Self::or_fatal(slf, written);
            }
        }
        let list_of_data = match data {
            AppData::One(piece) => PyTuple::new(py, [piece])?.into_any(),
            AppData::Many(list) => list.clone(),
        };
        // As in asyncio, a piece without a length fails the call; only the writing is guarded.
        for data in list_of_data.try_iter()? {
            let data = data?;
            backlog.call_method1(intern!(py, "append"), (&data,))?;
            let data_len = data.len()? as isize;
            slf.try_borrow_mut()?.write_buffer_size += data_len;
        }
        if state == State::Wrapped {
            return Self::or_fatal(slf, Self::_do_write(slf));
        }
        Ok(())
    }

    /// asyncio's `except Exception as ex: self._fatal_error(ex, 'Fatal error on SSL protocol')`.
    fn or_fatal(slf: &Bound<'_, Self>, result: PyResult<()>) -> PyResult<()> {
        match result {
            Ok(()) => Ok(()),
            Err(err) => Self::fatal_error(slf, err, "Fatal error on SSL protocol"),
        }
    }

    /// Makes the receive buffer (`_ssl_buffer` and its view) at least `want` bytes long, as
    /// asyncio's `get_buffer` does; returns the buffer.
    fn ensure_buffer<'py>(slf: &Bound<'py, Self>, want: usize) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let buffer = bind(py, &slf.try_borrow()?.ssl_buffer);
        if buffer.len()? >= want {
            return Ok(buffer);
        }
        let buffer = PyByteArray::new_with(py, want, |_| Ok(()))?.into_any();
        let view = PyMemoryView::from(&buffer)?;
        let mut me = slf.try_borrow_mut()?;
        me.ssl_buffer = Some(buffer.clone().unbind());
        me.ssl_buffer_view = Some(view.into_any().unbind());
        Ok(buffer)
    }

    /// The buffer the transport receives into: what `get_buffer(-1)` returns a view of.
    pub(crate) fn receive_buffer<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::ensure_buffer(slf, MAX_SIZE)
    }

    /// The first half of `buffer_updated`: TLS records from the socket into the incoming BIO.
    pub(crate) fn feed(slf: &Bound<'_, Self>, data: &[u8]) -> PyResult<()> {
        let py = slf.py();
        let (incoming, incoming_write) = {
            let me = slf.try_borrow()?;
            (
                me.incoming.as_ref().map(|o| o.clone_ref(py)),
                me.incoming_write.as_ref().map(|o| o.clone_ref(py)),
            )
        };
        // SAFETY: the caller keeps `data` alive and unchanged during the call; the view is
        // read-only and dropped before we return (MemoryBIO.write copies what it is given).
        let view = unsafe { raw_view(py, data.as_ptr() as *mut u8, data.len(), false)? };
        call_cached(
            py,
            &incoming,
            &incoming_write,
            intern!(py, "write"),
            (&view,),
        )?;
        Ok(())
    }

    /// The second half of `buffer_updated`: moves the state machine on.
    pub(crate) fn process_incoming(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let state = slf.try_borrow()?.state;
        match state {
            State::DoHandshake => Self::call_py(slf, intern!(py, "_do_handshake"), ()).map(drop),
            State::Wrapped => Self::do_read(slf, true),
            State::Flushing => Self::call_py(slf, intern!(py, "_do_flush"), ()).map(drop),
            State::Shutdown => Self::call_py(slf, intern!(py, "_do_shutdown"), ()).map(drop),
            State::Unwrapped | State::Other => Ok(()),
        }
    }

    /// asyncio's `_control_app_writing`; `drained`: the outgoing BIO is known to be empty.
    fn control_app_writing(slf: &Bound<'_, Self>, drained: bool) -> PyResult<()> {
        let size = if drained {
            slf.try_borrow()?.write_buffer_size
        } else {
            Self::_get_write_buffer_size(slf)?
        } as f64;
        let (pause, resume) = {
            let mut me = slf.try_borrow_mut()?;
            let me = &mut *me;
            flow_step(
                size,
                me.outgoing_high_water.1,
                me.outgoing_low_water.1,
                &mut me.app_writing_paused,
            )
        };
        if pause {
            Self::call_app_flow_control(slf, "pause_writing")
        } else if resume {
            Self::call_app_flow_control(slf, "resume_writing")
        } else {
            Ok(())
        }
    }

    /// asyncio's `_write_appdata`.
    pub(crate) fn write_appdata(slf: &Bound<'_, Self>, data: AppData<'_, '_>) -> PyResult<()> {
        let py = slf.py();
        let state = slf.try_borrow()?.state;
        if matches!(state, State::Flushing | State::Shutdown | State::Unwrapped) {
            let threshold: isize = py
                .import("asyncio.constants")?
                .getattr(intern!(py, "LOG_THRESHOLD_FOR_CONNLOST_WRITES"))?
                .extract()?;
            let conn_lost = slf.try_borrow()?.conn_lost;
            if conn_lost >= threshold {
                sslproto(py)?
                    .getattr(intern!(py, "logger"))?
                    .call_method1(intern!(py, "warning"), ("SSL connection is closed",))?;
            }
            slf.try_borrow_mut()?.conn_lost += 1;
            return Ok(());
        }
        Self::write_body(slf, data)
    }
}

/// The water-mark hysteresis of asyncio's `_control_app_writing`/`_control_ssl_reading`:
/// (pause, resume), pausing at or above `high` and resuming at or below `low`, with `paused`
/// updated to match.
fn flow_step(size: f64, high: f64, low: f64, paused: &mut bool) -> (bool, bool) {
    let pause = size >= high && !*paused;
    let resume = !pause && size <= low && *paused;
    if pause {
        *paused = true;
    } else if resume {
        *paused = false;
    }
    (pause, resume)
}

#[pymethods]
impl SSLProtocolCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> Self {
        let zero = || {
            (
                Some(0i64.into_pyobject(py).unwrap().into_any().unbind()),
                0.0,
            )
        };
        SSLProtocolCore {
            state_obj: None,
            state: State::Other,
            incoming: None,
            incoming_write: None,
            outgoing: None,
            outgoing_read: None,
            outgoing_is_bio: false,
            sslobj: None,
            sslobj_c: None,
            transport: None,
            app_protocol: None,
            app_protocol_is_buffer: false,
            app_transport: None,
            loop_: None,
            ssl_buffer: None,
            ssl_buffer_view: None,
            write_backlog: None,
            write_buffer_size: 0,
            conn_lost: 0,
            app_reading_paused: false,
            app_writing_paused: false,
            ssl_reading_paused: false,
            ssl_writing_paused: false,
            incoming_high_water: zero(),
            incoming_low_water: zero(),
            outgoing_high_water: zero(),
            outgoing_low_water: zero(),
        }
    }

    // -- the data path --------------------------------------------------------------------

    fn get_buffer(slf: &Bound<'_, Self>, n: isize) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let want = if n <= 0 || n as usize > MAX_SIZE {
            MAX_SIZE
        } else {
            n as usize
        };
        Self::ensure_buffer(slf, want)?;
        Ok(bind(py, &slf.try_borrow()?.ssl_buffer_view).unbind())
    }

    fn buffer_updated(slf: &Bound<'_, Self>, nbytes: isize) -> PyResult<()> {
        let ssl_buffer = bind(slf.py(), &slf.try_borrow()?.ssl_buffer);
        {
            let buffer = PyBuffer::<u8>::get(&ssl_buffer)?;
            // `view[:nbytes]`, Python's slice semantics included.
            let len = buffer.len_bytes() as isize;
            let end = if nbytes < 0 {
                (len + nbytes).max(0)
            } else {
                nbytes.min(len)
            };
            // SAFETY: `buffer` keeps the exported memory alive and unresized while the slice is
            // used, and feed() runs no Python code that could write to it.
            let data =
                unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, end as usize) };
            Self::feed(slf, data)?;
        }
        Self::process_incoming(slf)
    }

    fn _do_read(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::do_read(slf, false)
    }

    #[pyo3(name = "_do_read__buffered")]
    fn do_read_buffered(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::read_buffered(slf, false)
    }

    #[pyo3(name = "_do_read__copied")]
    fn do_read_copied(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::read_copied(slf, false)
    }

    fn _write_appdata(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::write_appdata(slf, AppData::Many(list_of_data))
    }

    fn _do_write(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (backlog, sslobj, sslobj_c) = {
            let me = slf.try_borrow()?;
            (
                bind(py, &me.write_backlog),
                bind(py, &me.sslobj),
                me.sslobj_c.as_ref().map(|o| o.clone_ref(py)),
            )
        };
        let written: PyResult<()> = (|| {
            while backlog.len()? > 0 {
                let data = backlog.get_item(0)?;
                let count = Self::ssl_write(py, &sslobj, &sslobj_c, &data)?;
                let data_len = data.len()? as isize;
                if count < data_len {
                    let rest =
                        data.get_item(pyo3::types::PySlice::new(py, count, isize::MAX, 1))?;
                    backlog.set_item(0, rest)?;
                    slf.try_borrow_mut()?.write_buffer_size -= count;
                } else {
                    backlog.del_item(0)?;
                    slf.try_borrow_mut()?.write_buffer_size -= data_len;
                }
            }
            Ok(())
        })();
        match written {
            Ok(()) => {}
            Err(err) if is_again(py, &err)? => {}
            Err(err) => return Err(err),
        }
        Self::_process_outgoing(slf)
    }

    fn _process_outgoing(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (paused, outgoing, outgoing_read, outgoing_is_bio, transport) = {
            let me = slf.try_borrow()?;
            (
                me.ssl_writing_paused,
                me.outgoing.as_ref().map(|o| o.clone_ref(py)),
                me.outgoing_read.as_ref().map(|o| o.clone_ref(py)),
                me.outgoing_is_bio,
                bind(py, &me.transport),
            )
        };
        // Whether the outgoing BIO is known to be empty now: a real MemoryBIO just read in full,
        // whose bytes went (if any) to our own transport, which never writes back into it.
        let mut drained = false;
        if !paused {
            let data = call_cached(py, &outgoing, &outgoing_read, intern!(py, "read"), ())?;
            let bio = outgoing_is_bio;
            if data.len()? > 0 {
                match transport.cast::<SocketTransportCore>() {
                    Ok(native) => {
                        SocketTransportCore::write(native, &data)?;
                        drained = bio;
                    }
                    Err(_) => {
                        transport.call_method1(intern!(py, "write"), (data,))?;
                    }
                }
            } else {
                drained = bio;
            }
        }
        Self::control_app_writing(slf, drained)
    }

    fn _control_app_writing(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::control_app_writing(slf, false)
    }

    fn _get_write_buffer_size(slf: &Bound<'_, Self>) -> PyResult<isize> {
        let py = slf.py();
        let (outgoing, size) = {
            let me = slf.try_borrow()?;
            (bind(py, &me.outgoing), me.write_buffer_size)
        };
        Ok(bio_pending(&outgoing)? + size)
    }

    fn _control_ssl_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let size = Self::_get_read_buffer_size(slf)? as f64;
        let (pause, resume, transport) = {
            let mut me = slf.try_borrow_mut()?;
            let me = &mut *me;
            let (pause, resume) = flow_step(
                size,
                me.incoming_high_water.1,
                me.incoming_low_water.1,
                &mut me.ssl_reading_paused,
            );
            (pause, resume, bind(py, &me.transport))
        };
        if pause {
            transport.call_method0(intern!(py, "pause_reading"))?;
        } else if resume {
            transport.call_method0(intern!(py, "resume_reading"))?;
        }
        Ok(())
    }

    fn _get_read_buffer_size(slf: &Bound<'_, Self>) -> PyResult<isize> {
        let incoming = bind(slf.py(), &slf.try_borrow()?.incoming);
        bio_pending(&incoming)
    }

    // -- the state asyncio's methods share, under asyncio's names ---------------------------

    #[getter(_state)]
    fn get_state(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state_obj.as_ref().map(|o| o.clone_ref(py))
    }

    #[setter(_state)]
    fn set_state(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.state = classify(value)?;
        self.state_obj = Some(value.clone().unbind());
        Ok(())
    }

    #[getter(_incoming)]
    fn get_incoming(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.incoming.as_ref().map(|o| o.clone_ref(py))
    }

    #[setter(_incoming)]
    fn set_incoming(&mut self, value: Option<&Bound<'_, PyAny>>) {
        self.incoming_write = value.and_then(|v| bound_method(v, intern!(v.py(), "write")));
        self.incoming = value.map(|v| v.clone().unbind());
    }

    #[getter(_outgoing)]
    fn get_outgoing(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.outgoing.as_ref().map(|o| o.clone_ref(py))
    }

    #[setter(_outgoing)]
    fn set_outgoing(&mut self, value: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.outgoing_read = value.and_then(|v| bound_method(v, intern!(v.py(), "read")));
        self.outgoing_is_bio = match value {
            Some(v) => v
                .get_type()
                .is(MEMORY_BIO.import(v.py(), "ssl", "MemoryBIO")?),
            None => false,
        };
        self.outgoing = value.map(|v| v.clone().unbind());
        Ok(())
    }

    #[getter(_sslobj)]
    fn get_sslobj(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.sslobj.as_ref().map(|o| o.clone_ref(py))
    }

    #[setter(_sslobj)]
    fn set_sslobj(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = value.py();
        let exact = SSL_OBJECT.import(py, "ssl", "SSLObject")?;
        self.sslobj_c = if value.get_type().is(exact) {
            let c = value.getattr(intern!(py, "_sslobj"))?;
            Some(SslMethods {
                read: c.getattr(intern!(py, "read"))?.unbind(),
                write: c.getattr(intern!(py, "write"))?.unbind(),
                pending: c.getattr(intern!(py, "pending"))?.unbind(),
            })
        } else {
            None
        };
        self.sslobj = Some(value.clone().unbind());
        Ok(())
    }

    #[getter(_incoming_high_water)]
    fn get_incoming_high_water(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.incoming_high_water.0.as_ref().map(|o| o.clone_ref(py))
    }

    #[setter(_incoming_high_water)]
    fn set_incoming_high_water(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.incoming_high_water = water_mark(value)?;
        Ok(())
    }

    #[getter(_incoming_low_water)]
    fn get_incoming_low_water(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.incoming_low_water.0.as_ref().map(|o| o.clone_ref(py))
    }

    #[setter(_incoming_low_water)]
    fn set_incoming_low_water(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.incoming_low_water = water_mark(value)?;
        Ok(())
    }

    #[getter(_outgoing_high_water)]
    fn get_outgoing_high_water(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.outgoing_high_water.0.as_ref().map(|o| o.clone_ref(py))
    }

    #[setter(_outgoing_high_water)]
    fn set_outgoing_high_water(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.outgoing_high_water = water_mark(value)?;
        Ok(())
    }

    #[getter(_outgoing_low_water)]
    fn get_outgoing_low_water(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.outgoing_low_water.0.as_ref().map(|o| o.clone_ref(py))
    }

    #[setter(_outgoing_low_water)]
    fn set_outgoing_low_water(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.outgoing_low_water = water_mark(value)?;
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for object in [
            &self.state_obj,
            &self.incoming,
            &self.outgoing,
            &self.sslobj,
            &self.transport,
            &self.app_protocol,
            &self.app_transport,
            &self.loop_,
            &self.ssl_buffer,
            &self.ssl_buffer_view,
            &self.write_backlog,
            &self.incoming_high_water.0,
            &self.incoming_low_water.0,
            &self.outgoing_high_water.0,
            &self.outgoing_low_water.0,
            &self.incoming_write,
            &self.outgoing_read,
        ] {
            visit.call(object)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        for object in [
            &mut self.incoming,
            &mut self.outgoing,
            &mut self.sslobj,
            &mut self.incoming_write,
            &mut self.outgoing_read,
            &mut self.transport,
            &mut self.app_protocol,
            &mut self.app_transport,
            &mut self.loop_,
            &mut self.ssl_buffer,
            &mut self.ssl_buffer_view,
            &mut self.write_backlog,
        ] {
            *object = None;
        }
        self.sslobj_c = None;
    }
}

/// `_SSLProtocolTransport.write(data)`: asyncio's checks, then the protocol's write path
/// without a Python frame and a one-element tuple per write.
///
/// # Safety
/// Called by CPython only, through the method descriptor made in [`_ssl_app_write_descriptor`].
unsafe extern "C" fn app_write_fastcall(
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
        // SAFETY: arguments as CPython passes them to METH_FASTCALL | METH_KEYWORDS.
        let data = unsafe { single_argument(py, "write", "data", args, nargs, kwnames) }?;
        if !(data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>())
        {
            return Err(PyTypeError::new_err(format!(
                "data: expecting a bytes-like instance, got {}",
                data.get_type().name()?
            )));
        }
        if data.is_truthy()? {
            let protocol = slf.getattr(intern!(py, "_ssl_protocol"))?;
            match protocol.cast::<SSLProtocolCore>() {
                Ok(core) => SSLProtocolCore::write_appdata(core, AppData::One(&data))?,
                Err(_) => {
                    protocol.call_method1(
                        intern!(py, "_write_appdata"),
                        (PyTuple::new(py, [data])?,),
                    )?;
                }
            }
        }
        Ok(py.None())
    })
}

/// A `write` method descriptor for `cls` (asyncio's `_SSLProtocolTransport` or a subclass).
#[pyfunction]
pub(crate) fn _ssl_app_write_descriptor<'py>(
    cls: &Bound<'py, PyType>,
) -> PyResult<Bound<'py, PyAny>> {
    method_descriptor(
        cls,
        c"write",
        app_write_fastcall,
        c"write(data)\n--\n\nWrite some data bytes to the transport.\n\nThis does not block; it buffers the data and arranges for it\nto be sent out asynchronously.",
    )
}
