//! The one place Rust errors become Python exceptions.

use pyo3::exceptions::PyOSError;
use pyo3::PyErr;

/// `OSError(errno, strerror)`, which Python turns into the matching subclass
/// (`BlockingIOError`, `FileNotFoundError`...) with its usual `[Errno N] message` text; PyO3's own
/// conversion would say "(os error N)" instead.
pub(crate) fn os_error(err: std::io::Error) -> PyErr {
    match err.raw_os_error() {
        Some(code) => {
            // strerror text without Rust's " (os error N)" suffix.
            let text = std::io::Error::from_raw_os_error(code).to_string();
            let text = text
                .strip_suffix(&format!(" (os error {code})"))
                .unwrap_or(&text)
                .to_owned();
            PyOSError::new_err((code, text))
        }
        None => PyOSError::new_err(err.to_string()),
    }
}
