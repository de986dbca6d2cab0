//! `RawBuffer`: an export of any object's buffer, whatever its format.
//!
//! `socket.send()` takes any C-contiguous buffer as its raw bytes (`y*`, PyBUF_SIMPLE): a
//! `memoryview` of an `array('d')` sends its 16 bytes; `recv_into()` fills any writable one
//! (`w*`). PyO3's `PyBuffer<u8>` refuses every format but bytes, so the transports that stand in
//! for those calls ask for the buffer themselves.

use pyo3::ffi;
use pyo3::prelude::*;

/// The exported buffer of an object, released on drop. It keeps the memory in place (an
/// exporting bytearray cannot be resized meanwhile). Not `Send`: it is released on the thread,
/// and under the GIL, that took it.
pub(crate) struct RawBuffer<'py> {
    /// Boxed: the exporter may keep the view's address until it is released.
    view: Box<ffi::Py_buffer>,
    py: Python<'py>,
}

impl<'py> RawBuffer<'py> {
    /// `obj`'s buffer with its shape and strides (PyBUF_FULL_RO), of any format.
    pub(crate) fn get(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        // SAFETY: a zeroed Py_buffer is the "empty" value PyObject_GetBuffer expects to fill.
        let mut view: Box<ffi::Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `obj` is a live object and `view` a writable Py_buffer; on failure the call
        // sets an exception and leaves nothing to release.
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, ffi::PyBUF_FULL_RO) } != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(RawBuffer { view, py: obj.py() })
    }

    /// `obj`'s buffer for writing, as `socket.recv_into()` asks for it (`w*`: PyBUF_WRITABLE,
    /// any format); check `as_mut_ptr` for contiguity.
    pub(crate) fn get_writable(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        // SAFETY: as in `get`.
        let mut view: Box<ffi::Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: as in `get`.
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, ffi::PyBUF_WRITABLE) } != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(RawBuffer { view, py: obj.py() })
    }

    /// The start and length in bytes of a writable, C-contiguous buffer; `None` otherwise.
    pub(crate) fn as_mut_ptr(&self) -> Option<(*mut u8, usize)> {
        // SAFETY: `view` is a buffer exported by PyObject_GetBuffer, still held.
        let contiguous =
            unsafe { ffi::PyBuffer_IsContiguous(&*self.view, b'C' as std::ffi::c_char) } != 0;
        if self.view.readonly != 0 || !contiguous {
            return None;
        }
        Some((
            self.view.buf.cast::<u8>(),
            usize::try_from(self.view.len).unwrap_or(0),
        ))
    }

    /// The bytes, if the buffer is C-contiguous.
    pub(crate) fn as_bytes(&self) -> Option<&[u8]> {
        // SAFETY: `view` is a buffer exported by PyObject_GetBuffer, still held.
        if unsafe { ffi::PyBuffer_IsContiguous(&*self.view, b'C' as std::ffi::c_char) } == 0 {
            return None;
        }
        let len = usize::try_from(self.view.len).unwrap_or(0);
        if len == 0 {
            return Some(&[]);
        }
        // SAFETY: a C-contiguous export holds `len` readable bytes at `buf`, which stay valid
        // and in place until the export is released (in drop, after this borrow ends).
        Some(unsafe { std::slice::from_raw_parts(self.view.buf as *const u8, len) })
    }

    /// The bytes in C order, copied (what `bytes(memoryview(obj))` holds).
    pub(crate) fn to_vec(&self) -> PyResult<Vec<u8>> {
        if let Some(bytes) = self.as_bytes() {
            return Ok(bytes.to_vec());
        }
        let len = usize::try_from(self.view.len).unwrap_or(0);
        let mut out = vec![0u8; len];
        // SAFETY: `out` has room for the `len` bytes the export holds; the view is held.
        let copied = unsafe {
            ffi::PyBuffer_ToContiguous(
                out.as_mut_ptr().cast(),
                &*self.view,
                self.view.len,
                b'C' as std::ffi::c_char,
            )
        };
        if copied != 0 {
            return Err(PyErr::fetch(self.py));
        }
        Ok(out)
    }
}

impl Drop for RawBuffer<'_> {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful PyObject_GetBuffer and is released once;
        // the `'py` token says the GIL is held.
        unsafe { ffi::PyBuffer_Release(&mut *self.view) };
    }
}
