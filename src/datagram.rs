//! `DatagramReader`: the receive path of UDP transports over IPv4 and IPv6.
//!
//! The transport is asyncio's `_SelectorDatagramTransport` (a Python subclass of it, see
//! `python/ferroloop/_unix.py`), so every other behaviour is the running Python's. Its
//! `_read_ready` hands the work to `DatagramReader.read`, which differs from asyncio only in
//! what cannot be observed:
//! - `socket.recvfrom(max_size)` allocates a `max_size` (256 KiB) bytes object per datagram and
//!   shrinks it; here the datagram lands in one reused buffer and is copied out at its size.
//! - The sender's address tuple is built as the socket module builds it (`inet_ntop`; IPv4
//!   `(host, port)`, IPv6 `(host, port, flowinfo, scope_id)`) and reused while the sender
//!   stays the same: a busy peer sends many datagrams in a row.
//!
//! `send` is the matching shortcut for `sendto`: a reply to the last sender reuses the address
//! it came from instead of parsing the tuple again.

use std::mem::{size_of, MaybeUninit};
use std::os::fd::RawFd;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::types::{PyBytes, PyString, PyTuple};

use crate::errors::os_error;
use crate::transport::{fd_readable_back, held_fd, would_block, MAX_READ, RECV_BUFFER};

/// A sender, as the kernel reported it (the key of the address cache).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sender {
    V4([u8; 4], u16),
    V6([u8; 16], u16, u32, u32),
}

#[pyclass(module = "ferroloop._ferroloop")]
pub struct DatagramReader {
    /// The transport's socket: its fd is used only while the socket still holds it (see
    /// `transport::held_fd`).
    sock: Py<PyAny>,
    fd: RawFd,
    fd_checked: bool,
    max_size: usize,
    last: Option<(Sender, Py<PyAny>)>,
}

/// `<arpa/inet.h>`'s, which the `libc` crate does not declare; the socket module formats
/// addresses with it, and so must we to hand out equal strings.
const INET6_ADDRSTRLEN: usize = 46;

extern "C" {
    #[link_name = "inet_ntop"]
    fn c_inet_ntop(
        af: libc::c_int,
        src: *const libc::c_void,
        dst: *mut libc::c_char,
        size: libc::socklen_t,
    ) -> *const libc::c_char;
}

fn inet_ntop(family: libc::c_int, addr: *const libc::c_void) -> PyResult<String> {
    let mut buf = [0 as libc::c_char; INET6_ADDRSTRLEN];
    // SAFETY: `addr` points to an in_addr/in6_addr matching `family`; `buf` is large enough
    // for either textual form and inet_ntop NUL-terminates what it writes.
    let text = unsafe {
        if c_inet_ntop(family, addr, buf.as_mut_ptr(), buf.len() as libc::socklen_t).is_null() {
            return Err(os_error(std::io::Error::last_os_error()));
        }
        std::ffi::CStr::from_ptr(buf.as_ptr())
    };
    Ok(text.to_string_lossy().into_owned())
}

/// `sendto(fd, data, sender)`; returns what libc's does.
fn send_to(fd: RawFd, data: &[u8], sender: Sender) -> isize {
    match sender {
        Sender::V4(ip, port) => {
            // SAFETY: an all-zero sockaddr_in is a valid value; its fields are set below.
            let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            a.sin_family = libc::AF_INET as libc::sa_family_t;
            a.sin_port = port.to_be();
            a.sin_addr.s_addr = u32::from_ne_bytes(ip);
            send_to_sockaddr(fd, data, &a)
        }
        Sender::V6(ip, port, flowinfo, scope_id) => {
            // SAFETY: an all-zero sockaddr_in6 is a valid value; its fields are set below.
            let mut a: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            a.sin6_port = port.to_be();
            a.sin6_flowinfo = flowinfo.to_be();
            a.sin6_addr.s6_addr = ip;
            a.sin6_scope_id = scope_id;
            send_to_sockaddr(fd, data, &a)
        }
    }
}

/// `sendto()` with `addr`, a complete sockaddr of one family (its size is the address length).
fn send_to_sockaddr<T>(fd: RawFd, data: &[u8], addr: &T) -> isize {
    // SAFETY: `addr` is a live, initialised sockaddr of size_of::<T>() bytes and `data` a live
    // slice, both for the duration of the call.
    unsafe {
        libc::sendto(
            fd,
            data.as_ptr() as *const libc::c_void,
            data.len(),
            0,
            addr as *const T as *const libc::sockaddr,
            size_of::<T>() as libc::socklen_t,
        )
    }
}

impl DatagramReader {
    /// The Python address of a sender: the socket module's tuple, or the cached one.
    fn address(
        &mut self,
        py: Python<'_>,
        storage: &libc::sockaddr_storage,
        len: libc::socklen_t,
    ) -> PyResult<Py<PyAny>> {
        let len = len as usize;
        let sender = match storage.ss_family as libc::c_int {
            _ if len == 0 => return Ok(py.None()),
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the kernel wrote a sockaddr_in (family and length checked), and
                // sockaddr_storage is large and aligned enough for it.
                let a = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
                Sender::V4(a.sin_addr.s_addr.to_ne_bytes(), u16::from_be(a.sin_port))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for a sockaddr_in6.
                let a = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
                Sender::V6(
                    a.sin6_addr.s6_addr,
                    u16::from_be(a.sin6_port),
                    u32::from_be(a.sin6_flowinfo),
                    a.sin6_scope_id,
                )
            }
            family => {
                // The socket module's form for a family it does not know.
                // SAFETY: every sockaddr starts with the generic header, and sockaddr_storage
                // is larger than it.
                let a = unsafe { &*(storage as *const _ as *const libc::sockaddr) };
                let data: Vec<u8> = a.sa_data.iter().map(|&c| c as u8).collect();
                let addr = (family, PyBytes::new(py, &data)).into_pyobject(py)?;
                return Ok(addr.into_any().unbind());
            }
        };
        if let Some((last, addr)) = &self.last {
            if *last == sender {
                return Ok(addr.clone_ref(py));
            }
        }
        let addr = match sender {
            Sender::V4(ip, port) => {
                let host = inet_ntop(libc::AF_INET, ip.as_ptr() as *const libc::c_void)?;
                PyTuple::new(
                    py,
                    [
                        PyString::new(py, &host).into_any(),
                        port.into_pyobject(py)?.into_any(),
                    ],
                )?
            }
            Sender::V6(ip, port, flowinfo, scope_id) => {
                let host = inet_ntop(libc::AF_INET6, ip.as_ptr() as *const libc::c_void)?;
                PyTuple::new(
                    py,
                    [
                        PyString::new(py, &host).into_any(),
                        port.into_pyobject(py)?.into_any(),
                        flowinfo.into_pyobject(py)?.into_any(),
                        scope_id.into_pyobject(py)?.into_any(),
                    ],
                )?
            }
        }
        .into_any()
        .unbind();
        self.last = Some((sender, addr.clone_ref(py)));
        Ok(addr)
    }
}

#[pymethods]
impl DatagramReader {
    #[new]
    fn new(sock: &Bound<'_, PyAny>, max_size: usize) -> PyResult<Self> {
        let fd: RawFd = sock.call_method0("fileno")?.extract()?;
        Ok(DatagramReader {
            fd_checked: fd_readable_back(sock, fd)?,
            sock: sock.clone().unbind(),
            fd,
            max_size: max_size.clamp(1, MAX_READ),
            last: None,
        })
    }

    /// asyncio's `_read_ready` after its `_conn_lost` check: one datagram, to
    /// `datagram_received(data, addr)`, or an OSError to `error_received(exc)`. One per
    /// readiness event, as asyncio: whatever the protocol schedules runs before the next
    /// datagram arrives (reading a batch, as libuv does, would break that). Exceptions from
    /// the protocol propagate, as from asyncio's reader callback.
    fn read(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let (fd, max_size) = {
            let me = slf.try_borrow()?;
            (held_fd(&me.sock, me.fd, me.fd_checked), me.max_size)
        };
        let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let received = fd.and_then(|fd| {
            RECV_BUFFER.with(|buf| {
                let mut buf = buf.borrow_mut();
                // SAFETY: the buffer has at least `max_size` writable bytes and `storage` is a
                // sockaddr_storage of `len` bytes; both outlive the call.
                let n = unsafe {
                    libc::recvfrom(
                        fd,
                        buf.as_mut_ptr() as *mut libc::c_void,
                        max_size,
                        0,
                        storage.as_mut_ptr() as *mut libc::sockaddr,
                        &mut len,
                    )
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    crate::metrics::count_read(n as usize);
                    Ok(PyBytes::new(py, &buf[..n as usize]))
                }
            })
        });
        let data = match received {
            Ok(data) => data,
            Err(err) if would_block(&err) => return Ok(()),
            Err(err) => {
                let exc = os_error(err);
                protocol.call_method1(intern!(py, "error_received"), (exc.value(py),))?;
                return Ok(());
            }
        };
        // SAFETY: zero-initialised, then (partly) written by the kernel: a valid value.
        let storage = unsafe { storage.assume_init() };
        let addr = slf.try_borrow_mut()?.address(py, &storage, len)?;
        protocol.call_method1(intern!(py, "datagram_received"), (data, addr))?;
        Ok(())
    }

    /// The sending half of asyncio's `sendto` once its checks have passed and nothing is
    /// buffered: `send()` on a connected socket, `sendto()` to `addr` when it is the address
    /// tuple this reader handed out for the last sender (an echo's reply). Returns false when
    /// the caller must take asyncio's path instead: another address (the socket module parses
    /// it) or a full socket buffer (asyncio buffers). Another OSError goes to
    /// `protocol.error_received`, as in asyncio.
    fn send(
        &self,
        py: Python<'_>,
        protocol: &Bound<'_, PyAny>,
        data: &Bound<'_, PyBytes>,
        addr: &Bound<'_, PyAny>,
        connected: bool,
    ) -> PyResult<bool> {
        let data = data.as_bytes();
        // The socket closed under us: asyncio's path, through the socket object, reports it.
        if held_fd(&self.sock, self.fd, self.fd_checked).is_err() {
            return Ok(false);
        }
        let sent = if connected {
            // SAFETY: `data` is a live slice for the duration of the call.
            unsafe { libc::send(self.fd, data.as_ptr() as *const libc::c_void, data.len(), 0) }
        } else {
            let sender = match &self.last {
                Some((sender, cached)) if cached.bind(py).is(addr) => *sender,
                _ => return Ok(false),
            };
            send_to(self.fd, data, sender)
        };
        if sent >= 0 {
            crate::metrics::count_written(sent as usize);
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        if would_block(&err) {
            return Ok(false);
        }
        protocol.call_method1(intern!(py, "error_received"), (os_error(err).value(py),))?;
        Ok(true)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.sock)?;
        if let Some((_, addr)) = &self.last {
            visit.call(addr)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.last = None;
    }
}
