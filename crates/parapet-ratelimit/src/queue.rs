//! The calls waiting for one bucket, in the order they arrived.
//!
//! Only the call at the head of the queue may take the bucket's next slot;
//! the others wait their turn (each with a timer set to when its turn should
//! come, and woken when it reaches the head). A call that leaves the queue
//! (dropped, or given up because its turn would come too late) lets the ones
//! behind it move up.

use std::collections::VecDeque;
use std::task::Waker;

/// A bucket's waiting calls, oldest first, each with the waker of its task
/// (once it has been polled).
#[derive(Debug, Default)]
pub(crate) struct Queue {
    /// The id the next call to join gets. Ids only grow, so the queue is
    /// sorted by id and a call finds its place by binary search.
    next: u64,
    waiting: VecDeque<(u64, Option<Waker>)>,
}

impl Queue {
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Adds a call at the back; returns its id.
    pub(crate) fn push(&mut self) -> u64 {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        self.waiting.push_back((id, None));
        id
    }

    /// How many calls wait ahead of `id`; `None` when it is not queued.
    pub(crate) fn ahead(&self, id: u64) -> Option<usize> {
        self.waiting.binary_search_by_key(&id, |&(id, _)| id).ok()
    }

    /// Keeps `waker` for the call `at` places from the head.
    pub(crate) fn register(&mut self, at: usize, waker: &Waker) {
        if let Some((_, slot)) = self.waiting.get_mut(at) {
            match slot {
                Some(w) if w.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
    }

    /// Takes `id` out of the queue. When it was the head, returns the waker
    /// of the call that now is, which the caller wakes (after unlocking) so
    /// that it takes its turn.
    pub(crate) fn remove(&mut self, id: u64) -> Option<Waker> {
        let at = self.ahead(id)?;
        self.waiting.remove(at);
        if at == 0 {
            self.waiting.front().and_then(|(_, w)| w.clone())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_keep_their_order_and_move_up_when_one_leaves() {
        let mut q = Queue::default();
        let ids: Vec<u64> = (0..4).map(|_| q.push()).collect();
        assert_eq!(q.ahead(ids[2]), Some(2));
        q.register(1, Waker::noop());
        // A call in the middle leaves: nobody new is at the head.
        assert!(q.remove(ids[2]).is_none());
        assert_eq!(q.ahead(ids[3]), Some(2));
        assert_eq!(q.ahead(ids[2]), None);
        // The head leaves: the next one is told.
        assert!(q.remove(ids[0]).is_some());
        assert_eq!(q.ahead(ids[1]), Some(0));
        assert_eq!(q.len(), 2);
        assert!(q.remove(ids[1]).is_none(), "its successor never registered");
        assert!(q.remove(ids[3]).is_none());
        assert!(q.is_empty());
    }
}
