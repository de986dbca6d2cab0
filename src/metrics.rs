//! What `loop.metrics()` reports: counters that are always on, and the timing histograms that
//! `loop.set_timing(True)` turns on (python/ferroloop/_metrics.py builds the snapshot objects).
//!
//! ## Cost
//! The counters are plain integer increments on the loop's own thread, made once per iteration
//! or once per batch (not per callback), except the byte counts, one per socket syscall. The
//! only clock read they add is one after a poll that blocked, the poll whose length is the
//! "blocked" time; that poll already released and took back the GIL, which costs far more.
//! Timing reads the clock once per callback, so it is off by default (bench/README.md has the
//! measured costs of both).
//!
//! ## Bytes
//! The socket helpers of the native transports (transport.rs, datagram.rs) count into this
//! thread's totals, which carry no loop: a transport's I/O runs on its loop's thread, and the
//! loop takes what was counted on its thread when it leaves `run_forever` and when its
//! `metrics()` is asked for while it runs (`LoopCore::take_io`). Bytes a transport moves while
//! no loop runs on the thread (a `write()` between two `run_until_complete`) go to the next loop
//! that does; two loops taking turns on one thread (not something asyncio programs do) would
//! share their counts.
//!
//! ## Histograms
//! `ferroloop_core::histogram`: fixed log-linear buckets, nothing allocated per event.

use std::cell::Cell;

use ferroloop_core::clock;
use ferroloop_core::histogram::{bucket_bounds, Histogram, BUCKETS};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::event_loop::LoopCore;
use crate::ready::Ready;

thread_local! {
    static BYTES_READ: Cell<u64> = const { Cell::new(0) };
    static BYTES_WRITTEN: Cell<u64> = const { Cell::new(0) };
}

/// Counts `n` bytes received by a native transport on this thread.
#[inline]
pub(crate) fn count_read(n: usize) {
    BYTES_READ.with(|c| c.set(c.get().wrapping_add(n as u64)));
}

/// Counts `n` bytes sent by a native transport on this thread.
#[inline]
pub(crate) fn count_written(n: usize) {
    BYTES_WRITTEN.with(|c| c.set(c.get().wrapping_add(n as u64)));
}

/// What this thread counted since the last call: (read, written).
pub(crate) fn take_io() -> (u64, u64) {
    (
        BYTES_READ.with(|c| c.replace(0)),
        BYTES_WRITTEN.with(|c| c.replace(0)),
    )
}

/// The always-on counters of one loop.
#[derive(Default)]
pub(crate) struct Counters {
    pub iterations: u64,
    /// Ready-queue entries run: handles (cancelled ones that reached the front included, as
    /// asyncio pops them too) and native transports' readiness.
    pub callbacks: u64,
    /// fd readiness events queued (an fd readable and writable at once counts twice).
    pub io_events: u64,
    pub timers_fired: u64,
    /// The ready queue's longest batch (its depth is greatest right before an iteration takes it).
    pub ready_max: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Seconds spent in polls that could block.
    pub blocked: f64,
    /// Seconds spent inside `run_forever`, finished runs only (see `run_started`).
    pub run_total: f64,
    /// When the current `run_forever` began, while the loop runs.
    pub run_started: Option<f64>,
}

impl Counters {
    /// Takes the bytes this thread counted (see the module docs).
    pub fn take_io(&mut self) {
        let (read, written) = take_io();
        self.bytes_read += read;
        self.bytes_written += written;
    }

    /// The end of a `run_forever`.
    pub fn leave_run(&mut self, now: f64) {
        if let Some(start) = self.run_started.take() {
            self.run_total += now - start;
        }
        self.take_io();
    }

    /// Seconds spent inside `run_forever` up to `now`.
    fn running(&self, now: f64) -> f64 {
        self.run_total + self.run_started.map_or(0.0, |start| now - start)
    }
}

/// What `set_timing(True)` adds: per-callback durations, loop lag, slow callbacks.
#[derive(Default)]
pub(crate) struct Timing {
    pub durations: Histogram,
    /// How late each entry ran: a timer after its deadline, anything else after the moment its
    /// iteration began running callbacks.
    pub lag: Histogram,
    pub slow: u64,
    /// The running batch: when it began, when the current entry started and was due, and
    /// `slow_callback_duration` as the batch found it.
    pub began: f64,
    pub start: f64,
    pub due: f64,
    pub threshold: f64,
}

fn histogram<'py>(py: Python<'py>, h: &Histogram) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("count", h.count)?;
    d.set_item("sum_ns", h.sum_ns)?;
    d.set_item("max_ns", h.max_ns)?;
    d.set_item("buckets", h.nonzero())?;
    Ok(d)
}

/// The raw numbers of one snapshot (`LoopCore._metrics_raw`).
pub(crate) fn raw<'py>(
    py: Python<'py>,
    me: &LoopCore,
    timers_pending: usize,
    ready_now: usize,
    fds: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let now = clock::monotonic();
    let c = &me.stats;
    let d = PyDict::new(py);
    d.set_item("time", now)?;
    d.set_item("iterations", c.iterations)?;
    d.set_item("callbacks", c.callbacks)?;
    d.set_item("io_events", c.io_events)?;
    d.set_item("timers_fired", c.timers_fired)?;
    d.set_item("timers_pending", timers_pending)?;
    d.set_item("ready_now", ready_now)?;
    d.set_item("ready_max", c.ready_max)?;
    d.set_item("fds_watched", fds)?;
    d.set_item("bytes_read", c.bytes_read)?;
    d.set_item("bytes_written", c.bytes_written)?;
    d.set_item("blocked", c.blocked)?;
    d.set_item("running", c.running(now))?;
    match &me.timing {
        Some(t) => {
            d.set_item("slow_callbacks", t.slow)?;
            d.set_item("durations", histogram(py, &t.durations)?)?;
            d.set_item("lag", histogram(py, &t.lag)?)?;
        }
        None => d.set_item("slow_callbacks", py.None())?,
    }
    Ok(d)
}

/// The upper bound, in seconds, of each histogram bucket (for percentiles in Python).
#[pyfunction]
pub(crate) fn _histogram_bounds(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    PyList::new(py, (0..BUCKETS).map(|i| bucket_bounds(i).1 as f64 * 1e-9))
}

// The hooks `LoopCore::run_batch` calls with timing on. An entry that took
// `slow_callback_duration` or more is counted and reported to `Loop._report_slow_callback`
// (python/ferroloop/_metrics.py) while its handle still holds its callback. The first entry
// starts when the batch does, each next one when the previous ended: one clock read per entry.
//
// Never inlined: run_batch must stay as small as it was without timing, or LLVM stops inlining
// the drops of recycled handles there (each then a call doing its own `__tls_get_addr` lookups:
// +66 instructions per callback on call_soon_chains_100 with timing off, callgrind).

#[inline(never)]
pub(crate) fn batch_began(slf: &Bound<'_, LoopCore>) -> PyResult<()> {
    // The loop's attribute, as asyncio keeps it (any object): a number is compared with, and
    // anything else counts no callback as slow.
    let threshold = slf
        .getattr(pyo3::intern!(slf.py(), "slow_callback_duration"))
        .and_then(|v| v.extract::<f64>())
        .unwrap_or(f64::INFINITY);
    let mut me = slf.try_borrow_mut()?;
    if let Some(t) = me.timing.as_mut() {
        let now = clock::monotonic();
        t.began = now;
        t.start = now;
        t.threshold = threshold;
    }
    Ok(())
}

/// A timer is due at its deadline; anything else when its batch began.
#[inline(never)]
pub(crate) fn entry_begins(slf: &Bound<'_, LoopCore>, item: &Ready) {
    let when = match item {
        Ready::Handle(h) => h.bind(slf.py()).try_borrow().map_or(0.0, |h| h.when),
        _ => 0.0,
    };
    if let Ok(mut me) = slf.try_borrow_mut() {
        if let Some(t) = me.timing.as_mut() {
            t.due = if when != 0.0 { when } else { t.began };
        }
    }
}

/// Records what `what` (a handle, or a transport for "read"/"write") just took; a failing
/// report (only KeyboardInterrupt or SystemExit leave the Python side) becomes `result`.
#[inline(never)]
pub(crate) fn entry_ended(
    slf: &Bound<'_, LoopCore>,
    what: &Bound<'_, PyAny>,
    kind: &str,
    result: &mut PyResult<()>,
) {
    let end = clock::monotonic();
    let (took, started) = {
        let Ok(mut me) = slf.try_borrow_mut() else {
            return;
        };
        let Some(t) = me.timing.as_mut() else {
            return;
        };
        let took = end - t.start;
        let started = t.start;
        t.start = end;
        t.durations.record(took);
        t.lag.record(started - t.due);
        if took < t.threshold {
            return;
        }
        t.slow += 1;
        (took, started)
    };
    if result.is_err() {
        return;
    }
    let py = slf.py();
    if let Err(err) = slf.call_method1(
        intern!(py, "_report_slow_callback"),
        (what, kind, took, started),
    ) {
        *result = Err(err);
    }
    // The report ran Python code that is no callback's.
    if let Ok(mut me) = slf.try_borrow_mut() {
        if let Some(t) = me.timing.as_mut() {
            t.start = clock::monotonic();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_counts_are_taken_once() {
        count_read(10);
        count_written(3);
        count_read(5);
        assert_eq!(take_io(), (15, 3));
        assert_eq!(take_io(), (0, 0));
    }
}
