//! `ferroloop._ferroloop`: the PyO3 half of ferroloop. See `python/ferroloop/` for the Python
//! half and `crates/ferroloop-core` for the interpreter-free core.
//!
//! Errors: every `std::io::Error` goes through `errors::os_error`.

mod buffer;
mod datagram;
mod errors;
mod event_loop;
mod fastcall;
mod handles;
mod metrics;
mod ready;
mod sock;
mod sslproto;
mod transport;

use pyo3::prelude::*;

/// The running interpreter's `(major, minor, micro)`. PyO3's `version_info()` parses
/// `Py_GetVersion()`'s string on every call (~390 instructions, once per `create_task`); the
/// answer cannot change within a process.
pub(crate) fn python_version(py: Python<'_>) -> (u8, u8, u8) {
    static VERSION: std::sync::OnceLock<(u8, u8, u8)> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        let v = py.version_info();
        (v.major, v.minor, v.patch)
    })
}

// Needs the GIL, until a free-threaded build is tested: the loop's state is reached through
// runtime borrows that the GIL keeps from overlapping across threads (without it a thread
// calling in while the loop runs would meet "Already borrowed" errors), and a few paths assume
// the GIL orders them (docs/architecture.md, "Free-threading"). A free-threaded interpreter
// turns the GIL back on when it imports the module, and says so.
#[pymodule(gil_used = true)]
fn _ferroloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<event_loop::LoopCore>()?;
    m.add_class::<handles::Handle>()?;
    m.add_class::<handles::TimerHandle>()?;
    m.add_class::<transport::SocketTransportCore>()?;
    m.add_class::<datagram::DatagramReader>()?;
    m.add_class::<sslproto::SSLProtocolCore>()?;
    m.add_function(wrap_pyfunction!(sslproto::_ssl_app_write_descriptor, m)?)?;
    m.add_function(wrap_pyfunction!(sock::_sock_recv_nowait, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::_histogram_bounds, m)?)?;
    m.add_function(wrap_pyfunction!(sock::_sock_recv_into_nowait, m)?)?;
    m.add(
        "_call_soon_fastcall",
        fastcall::call_soon_descriptor(m.py())?,
    )?;
    m.add(
        "_call_soon_threadsafe_fastcall",
        fastcall::call_soon_threadsafe_descriptor(m.py())?,
    )?;
    Ok(())
}
