//! The interpreter-free core of ferroloop.
//!
//! Everything here deals in tokens, deadlines and file descriptors and knows nothing of Python, so
//! the hot paths of the loop are unit-tested with `cargo test` and no interpreter. The PyO3 crate
//! (`ferroloop._ferroloop`) owns every Python object and drives these pieces:
//!
//! - [`clock`]: the loop's clock, the same `CLOCK_MONOTONIC` that `time.monotonic()` reads.
//! - [`timers::TimerHeap`]: scheduled callbacks ordered by deadline, ties in scheduling order,
//!   with asyncio's lazy removal of cancelled entries.
//! - [`reactor::Reactor`]: a level-triggered epoll instance with a built-in eventfd waker.
//! - [`inbox::Inbox`]: the multi-producer queue behind `call_soon_threadsafe`.
//! - [`histogram::Histogram`]: fixed-bucket duration histograms for the loop's timing metrics.

pub mod clock;
pub mod histogram;
pub mod inbox;
pub mod reactor;
pub mod timers;
