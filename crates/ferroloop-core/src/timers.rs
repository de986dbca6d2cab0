//! Scheduled callbacks, ordered by deadline.
//!
//! Invariants, matching asyncio's `BaseEventLoop._scheduled`:
//! - entries pop in deadline order; entries with equal deadlines pop in the order they were pushed
//!   (a sequence number breaks ties, where asyncio's `heapq` would be unspecified);
//! - a NaN deadline is due at once: it is ordered as -inf. asyncio's `heapq` has no order for it
//!   (NaN compares false with everything, so such a timer stays wherever the pushes and pops leave
//!   it and runs once it reaches the top, as `when >= end_time` is false); what it does at the
//!   top, which it always is in a heap of one, is what it does here, whatever else is pending.
//! - cancelling does not remove an entry: the owner reports it with [`TimerHeap::note_cancelled`]
//!   and cancelled entries are dropped when they reach the top. When more than half of the heap
//!   (and more than [`MIN_ENTRIES_FOR_COMPACTION`] entries) is cancelled, the heap is rebuilt
//!   without them, as `_run_once` does, so a program that keeps cancelling timeouts does not grow
//!   the heap without bound.
//! - the heap never drops a value itself: whatever it removes is handed back to the caller. Values
//!   are Python objects in the loop, and releasing one can run arbitrary code (`__del__`) that
//!   re-enters the loop, so the caller releases them once it no longer holds the loop's state.
//!
//! Whether a value is cancelled is asked through a closure, because answering may need the
//! interpreter (the core crate itself knows nothing of it).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// asyncio's `_MIN_SCHEDULED_TIMER_HANDLES`.
pub const MIN_ENTRIES_FOR_COMPACTION: usize = 100;

struct Entry<T> {
    when: f64,
    seq: u64,
    value: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    // Reversed, so std's max-heap pops the earliest deadline, then the lowest sequence number.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .when
            .total_cmp(&self.when)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// A min-heap of timers keyed by `(deadline, insertion order)`.
pub struct TimerHeap<T> {
    heap: BinaryHeap<Entry<T>>,
    next_seq: u64,
    cancelled: usize,
}

impl<T> Default for TimerHeap<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerHeap<T> {
    pub fn new() -> Self {
        TimerHeap {
            heap: BinaryHeap::new(),
            next_seq: 0,
            cancelled: 0,
        }
    }

    /// Number of entries, cancelled ones included (asyncio's `len(loop._scheduled)`).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Number of entries not reported cancelled (what `loop.metrics()` calls timers pending).
    pub fn live_len(&self) -> usize {
        self.heap.len().saturating_sub(self.cancelled)
    }

    pub fn push(&mut self, when: f64, value: T) {
        let when = if when.is_nan() {
            f64::NEG_INFINITY
        } else {
            when
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { when, seq, value });
    }

    /// Records that one entry still in the heap was cancelled (asyncio's
    /// `_timer_handle_cancelled`). When cancelled entries dominate, the heap is rebuilt without
    /// them and they are moved into `removed`.
    pub fn note_cancelled(
        &mut self,
        is_cancelled: impl Fn(&T) -> bool,
        removed: &mut impl Extend<T>,
    ) {
        self.cancelled += 1;
        if self.heap.len() > MIN_ENTRIES_FOR_COMPACTION && self.cancelled * 2 > self.heap.len() {
            let entries = std::mem::take(&mut self.heap).into_vec();
            let (dead, live): (Vec<_>, Vec<_>) =
                entries.into_iter().partition(|e| is_cancelled(&e.value));
            self.heap = live.into();
            removed.extend(dead.into_iter().map(|e| e.value));
            self.cancelled = 0;
        }
    }

    /// Moves cancelled entries off the top into `removed`, so the top is a live timer.
    fn skip_cancelled(&mut self, is_cancelled: &impl Fn(&T) -> bool, removed: &mut impl Extend<T>) {
        while let Some(top) = self.heap.peek() {
            if !is_cancelled(&top.value) {
                break;
            }
            let entry = self.heap.pop().expect("peeked above");
            removed.extend(std::iter::once(entry.value));
            self.cancelled = self.cancelled.saturating_sub(1);
        }
    }

    /// The deadline of the earliest live timer; cancelled entries met on the way go to `removed`.
    pub fn next_deadline(
        &mut self,
        is_cancelled: impl Fn(&T) -> bool,
        removed: &mut impl Extend<T>,
    ) -> Option<f64> {
        self.skip_cancelled(&is_cancelled, removed);
        self.heap.peek().map(|e| e.when)
    }

    /// Moves every live timer due before `end_time` into `due`, in order; cancelled entries met on
    /// the way go to `removed`.
    pub fn pop_due(
        &mut self,
        end_time: f64,
        is_cancelled: impl Fn(&T) -> bool,
        due: &mut impl Extend<T>,
        removed: &mut impl Extend<T>,
    ) {
        loop {
            self.skip_cancelled(&is_cancelled, removed);
            match self.heap.peek() {
                Some(top) if top.when < end_time => {}
                _ => return,
            }
            let entry = self.heap.pop().expect("peeked above");
            due.extend(std::iter::once(entry.value));
        }
    }

    /// Every value in the heap, in no particular order (for the GC's traversal).
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.heap.iter().map(|e| &e.value)
    }

    /// Removes everything (used when the loop closes, to release what the timers hold).
    pub fn clear(&mut self) -> Vec<T> {
        self.cancelled = 0;
        std::mem::take(&mut self.heap)
            .into_vec()
            .into_iter()
            .map(|e| e.value)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[derive(Clone)]
    struct T(u32, Rc<Cell<bool>>);
    fn cancelled(t: &T) -> bool {
        t.1.get()
    }
    fn t(id: u32) -> T {
        T(id, Rc::new(Cell::new(false)))
    }

    fn ids(heap: &mut TimerHeap<T>, end: f64) -> Vec<u32> {
        let mut out = Vec::new();
        let mut removed = Vec::new();
        heap.pop_due(end, cancelled, &mut out, &mut removed);
        assert!(removed.iter().all(cancelled));
        out.into_iter().map(|t| t.0).collect()
    }

    #[test]
    fn pops_in_deadline_order() {
        let mut h = TimerHeap::new();
        for (id, when) in [(1, 3.0), (2, 1.0), (3, 2.0)] {
            h.push(when, t(id));
        }
        assert_eq!(h.next_deadline(cancelled, &mut Vec::new()), Some(1.0));
        assert_eq!(ids(&mut h, 10.0), vec![2, 3, 1]);
        assert!(h.is_empty());
    }

    #[test]
    fn equal_deadlines_pop_in_scheduling_order() {
        let mut h = TimerHeap::new();
        for id in 0..50 {
            h.push(5.0, t(id));
        }
        assert_eq!(ids(&mut h, 6.0), (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn live_len_leaves_out_reported_cancellations() {
        let mut h = TimerHeap::new();
        let a = t(1);
        h.push(1.0, a.clone());
        h.push(2.0, t(2));
        assert_eq!(h.live_len(), 2);
        a.1.set(true);
        h.note_cancelled(cancelled, &mut Vec::new());
        assert_eq!((h.len(), h.live_len()), (2, 1));
        assert_eq!(ids(&mut h, 10.0), vec![2]);
        assert_eq!((h.len(), h.live_len()), (0, 0));
    }

    #[test]
    fn only_due_timers_pop() {
        let mut h = TimerHeap::new();
        h.push(1.0, t(1));
        h.push(2.0, t(2));
        assert_eq!(ids(&mut h, 2.0), vec![1]);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn cancelled_timers_are_skipped() {
        let mut h = TimerHeap::new();
        let a = t(1);
        h.push(1.0, a.clone());
        h.push(2.0, t(2));
        a.1.set(true);
        h.note_cancelled(cancelled, &mut Vec::new());
        let mut removed = Vec::new();
        assert_eq!(h.next_deadline(cancelled, &mut removed), Some(2.0));
        assert_eq!(removed.len(), 1);
        assert_eq!(ids(&mut h, 10.0), vec![2]);
    }

    #[test]
    fn heap_compacts_when_mostly_cancelled() {
        let mut h = TimerHeap::new();
        let all: Vec<T> = (0..400).map(t).collect();
        for (i, x) in all.iter().enumerate() {
            h.push(i as f64, x.clone());
        }
        let mut removed = Vec::new();
        for x in all.iter().skip(1).take(250) {
            x.1.set(true);
            h.note_cancelled(cancelled, &mut removed);
        }
        assert!(h.len() < 400, "heap was not compacted: {}", h.len());
        assert_eq!(h.len() + removed.len(), 400);
        assert!(removed.iter().all(cancelled));
        assert_eq!(ids(&mut h, 1e9).len(), 150);
    }

    #[test]
    fn nan_deadline_is_due_at_once() {
        let mut h = TimerHeap::new();
        h.push(f64::NAN, t(1));
        assert_eq!(ids(&mut h, 0.0), vec![1]);
    }

    #[test]
    fn nan_deadline_is_due_at_once_behind_later_timers() {
        let mut h = TimerHeap::new();
        h.push(3600.0, t(1));
        h.push(f64::INFINITY, t(2));
        h.push(f64::NAN, t(3));
        h.push(-f64::NAN, t(4));
        assert_eq!(
            h.next_deadline(cancelled, &mut Vec::new()),
            Some(f64::NEG_INFINITY)
        );
        assert_eq!(ids(&mut h, 0.0), vec![3, 4]);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn clear_returns_everything() {
        let mut h = TimerHeap::new();
        h.push(1.0, t(1));
        h.push(2.0, t(2));
        assert_eq!(h.clear().len(), 2);
        assert_eq!(h.next_deadline(cancelled, &mut Vec::new()), None);
    }
}
