//! What the loop queues and watches: plain handles, and native transports dispatched directly.
//!
//! A native transport's readiness is queued as `Ready::Read`/`Ready::Write` and run by calling
//! the transport's Rust code, with no handle object and no Python-level call per event
//! (docs/architecture.md, "The data path"). Order is kept: transport events sit in the same
//! FIFO as handles, exactly where asyncio would have queued the transport's handle.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};

use pyo3::prelude::*;

use crate::handles::Handle;
use crate::transport::SocketTransportCore;

/// One entry of the ready queue.
pub(crate) enum Ready {
    Handle(Py<Handle>),
    Read(Py<SocketTransportCore>),
    Write(Py<SocketTransportCore>),
}

/// What runs when an fd becomes ready.
pub(crate) enum Watcher {
    Handle(Py<Handle>),
    Transport(Py<SocketTransportCore>),
}

impl Watcher {
    /// The queue entry for this watcher firing in `write` direction.
    pub(crate) fn ready(&self, py: Python<'_>, write: bool) -> Ready {
        match self {
            Watcher::Handle(h) => Ready::Handle(h.clone_ref(py)),
            Watcher::Transport(t) if write => Ready::Write(t.clone_ref(py)),
            Watcher::Transport(t) => Ready::Read(t.clone_ref(py)),
        }
    }
}

/// The ready queue. Handles from the timer heap and the thread-safe inbox extend it directly.
#[derive(Default)]
pub(crate) struct ReadyQueue(VecDeque<Ready>);

impl Extend<Py<Handle>> for ReadyQueue {
    fn extend<I: IntoIterator<Item = Py<Handle>>>(&mut self, iter: I) {
        self.0.extend(iter.into_iter().map(Ready::Handle));
    }
}

impl Deref for ReadyQueue {
    type Target = VecDeque<Ready>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for ReadyQueue {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}
