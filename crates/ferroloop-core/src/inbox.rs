//! The queue behind `call_soon_threadsafe`.
//!
//! Any thread may [`Inbox::push`]; only the loop's thread drains. The `wake_pending` flag keeps
//! producers from writing the eventfd more than once per loop iteration, and doubles as a cheap
//! "anything to drain?" check so an iteration with no thread-safe calls costs one atomic load.
//!
//! Ordering argument: the consumer clears `wake_pending` *before* taking the items. A producer
//! that pushes after the take therefore finds the flag clear, sets it and wakes the reactor, so its
//! item is picked up on the next iteration; a producer that pushed before the take had its item
//! taken. No item can sit in the queue while the loop sleeps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::reactor::Waker;

pub struct Inbox<T> {
    items: Mutex<Vec<T>>,
    wake_pending: AtomicBool,
    waker: Arc<Waker>,
}

impl<T> Inbox<T> {
    pub fn new(waker: Arc<Waker>) -> Self {
        Inbox {
            items: Mutex::new(Vec::new()),
            wake_pending: AtomicBool::new(false),
            waker,
        }
    }

    /// Queues `item` and makes sure the loop wakes up to take it.
    pub fn push(&self, item: T) -> std::io::Result<()> {
        self.items
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(item);
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            self.waker.wake()?;
        }
        Ok(())
    }

    /// Moves everything queued so far into `out`, in push order.
    pub fn drain_into(&self, out: &mut impl Extend<T>) {
        if !self.wake_pending.load(Ordering::Acquire) {
            return;
        }
        self.wake_pending.store(false, Ordering::Release);
        let taken = std::mem::take(
            &mut *self
                .items
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        out.extend(taken);
    }

    /// Drops everything still queued (the loop is closing).
    pub fn clear(&self) -> Vec<T> {
        self.wake_pending.store(false, Ordering::Release);
        std::mem::take(
            &mut *self
                .items
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::{Events, Reactor};
    use std::time::Duration;

    #[test]
    fn items_from_many_threads_arrive_in_per_thread_order() {
        let mut reactor = Reactor::new().unwrap();
        let inbox = Arc::new(Inbox::new(reactor.waker().clone()));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let inbox = inbox.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        inbox.push((t, i)).unwrap();
                    }
                })
            })
            .collect();
        let mut got = Vec::new();
        let mut events = Events::with_capacity(4);
        while got.len() < 40_000 {
            reactor
                .poll(&mut events, Some(Duration::from_secs(5)))
                .unwrap();
            inbox.drain_into(&mut got);
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(got.len(), 40_000);
        for t in 0..4 {
            let seq: Vec<u64> = got.iter().filter(|x| x.0 == t).map(|x| x.1).collect();
            assert_eq!(seq, (0..10_000).collect::<Vec<_>>());
        }
    }

    #[test]
    fn push_wakes_a_sleeping_reactor_once() {
        let mut reactor = Reactor::new().unwrap();
        let inbox = Inbox::new(reactor.waker().clone());
        inbox.push(1).unwrap();
        inbox.push(2).unwrap();
        let mut events = Events::with_capacity(4);
        reactor
            .poll(&mut events, Some(Duration::from_secs(1)))
            .unwrap();
        assert!(events.woken());
        let mut got = Vec::new();
        inbox.drain_into(&mut got);
        assert_eq!(got, vec![1, 2]);
        reactor
            .poll(&mut events, Some(Duration::from_millis(1)))
            .unwrap();
        assert!(!events.woken());
        inbox.drain_into(&mut got);
        assert_eq!(got, vec![1, 2]);
    }
}
