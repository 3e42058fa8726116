//! Who holds a pipe end: a table of processes in the pipe's segment.
//!
//! An end stays open while any of its holders does, as a pipe's descriptor stays
//! open while any process has a copy: a write end inherited down a recursion, or
//! handed to a thousand barrier parties, closes for the reader only when the last
//! holder closes it or dies. Each holder has a slot with its [`ProcessId`] (pid and
//! start time; 0 is a free slot), so a holder killed without closing is still
//! counted out: by its slot's process being gone, never by a count it could not
//! give back.
//!
//! A slot changes hands only by the hand-over protocol, and every step is one
//! compare-exchange on the slot, so a scribbled or raced slot makes a step fail
//! rather than free a slot that another holder owns:
//!
//! 1. A holder that hands its end to a child first [`reserve`](HolderTable::reserve)s
//!    a slot in its own name (so the end cannot close meanwhile), and sends its index.
//! 2. Once the child exists, the parent [`pass`](HolderTable::pass)es the slot to the
//!    child's id (a child killed before it attached is then seen gone), and the child,
//!    when it attaches, [`claim`](HolderTable::claim)s it; either may come first.
//! 3. A start that failed leaves the slot in the parent's name: its handle gives it
//!    back when it closes.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::sys::ProcessId;

/// The most holders one end can have at once (processes, and handles cloned within
/// one process).
pub(crate) const MAX_HOLDERS: usize = 1024;

/// One end's holders, in shared memory (zeroed memory is a valid, empty table).
#[repr(C)]
pub(crate) struct HolderTable {
    /// Set by the holder whose give-back left no holder; never cleared.
    closed: AtomicU32,
    slots: [AtomicU64; MAX_HOLDERS],
}

impl HolderTable {
    /// Takes a free slot for `who`: its index, or `None` when all are taken.
    pub(crate) fn reserve(&self, who: ProcessId) -> Option<usize> {
        let who = who.to_bits();
        self.slots.iter().position(|s| s.compare_exchange(0, who, Ordering::AcqRel, Ordering::Relaxed).is_ok())
    }

    /// Moves slot `slot` from `from` to `to` (the child a start created); false if
    /// the slot no longer holds `from` (the child claimed it first, or gave it back).
    pub(crate) fn pass(&self, slot: usize, from: ProcessId, to: ProcessId) -> bool {
        self.slots.get(slot).is_some_and(|s| {
            s.compare_exchange(from.to_bits(), to.to_bits(), Ordering::AcqRel, Ordering::Relaxed).is_ok()
        })
    }

    /// The receiving child takes slot `slot`, reserved for it by `from` (or already
    /// passed to it); false if the slot holds someone else (a damaged index).
    pub(crate) fn claim(&self, slot: usize, from: ProcessId, me: ProcessId) -> bool {
        let Some(s) = self.slots.get(slot) else { return false };
        loop {
            let now = ProcessId::from_bits(s.load(Ordering::Acquire));
            if now == me {
                return true;
            }
            // Passed to this process by a parent that may not have known its start
            // time (pid alone), or still in the parent's name: make it exactly ours.
            let passed = now != ProcessId::NONE && now.pid() == me.pid();
            if !passed && now != from {
                return false;
            }
            let _ = s.compare_exchange(now.to_bits(), me.to_bits(), Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// Gives back slot `slot` held as `who`. Returns true if that left the end with
    /// no holder: the caller closes it (and so might a racing last holder: closing
    /// twice is harmless).
    pub(crate) fn give_back(&self, slot: usize, who: ProcessId) -> bool {
        let Some(s) = self.slots.get(slot) else { return false };
        if s.compare_exchange(who.to_bits(), 0, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return false;
        }
        // Every step that adds a holder is made by a holder (or for one, into a slot
        // that is already taken), so once no slot is taken none can be again.
        let last = self.slots.iter().all(|s| s.load(Ordering::Acquire) == 0);
        if last {
            self.closed.store(1, Ordering::SeqCst);
        }
        last
    }

    /// Whether the last holder closed the end (one load: for every send and wait).
    pub(crate) fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst) != 0
    }

    /// Whether the end is closed, or every process holding it is gone (reads
    /// `/proc` once per holder until it finds a live one: for a waiter that has
    /// slept a while).
    pub(crate) fn gone(&self) -> bool {
        self.closed()
            || !self.slots.iter().any(|s| {
                let who = s.load(Ordering::Acquire);
                who != 0 && ProcessId::from_bits(who).is_alive()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Box<HolderTable> {
        // SAFETY: zeroed memory is a valid HolderTable (atomics only), as in a fresh segment.
        unsafe { Box::new(std::mem::zeroed()) }
    }

    #[test]
    fn the_end_closes_when_its_last_holder_gives_back() {
        let t = table();
        let me = ProcessId::me();
        let a = t.reserve(me).unwrap();
        let b = t.reserve(me).unwrap();
        assert_ne!(a, b);
        assert!(!t.give_back(a, me));
        assert!(!t.closed() && !t.gone());
        assert!(!t.give_back(a, me), "a slot given back twice counted twice");
        assert!(t.give_back(b, me));
        assert!(t.closed() && t.gone());
    }

    #[test]
    fn a_dead_holder_is_counted_out() {
        let t = table();
        let dead = ProcessId::from_bits(u64::from(i32::MAX as u32)); // no such pid
        let slot = t.reserve(ProcessId::me()).unwrap();
        assert!(t.pass(slot, ProcessId::me(), dead));
        assert!(!t.closed());
        assert!(t.gone());
    }

    #[test]
    fn a_holder_whose_pid_was_recycled_is_counted_out() {
        let t = table();
        let me = ProcessId::me();
        // This process's pid with another start time: a holder that died, its pid
        // now this process's (liveness by pid alone would call it alive).
        let earlier = ProcessId::from_bits(me.to_bits() ^ (1 << 40));
        let slot = t.reserve(me).unwrap();
        assert!(t.pass(slot, me, earlier));
        assert!(t.gone());
    }

    #[test]
    fn pass_and_claim_meet_in_either_order() {
        let me = ProcessId::me();
        let parent = ProcessId::from_bits(12345);
        // Parent first.
        let t = table();
        let s = t.reserve(parent).unwrap();
        assert!(t.pass(s, parent, me));
        assert!(t.claim(s, parent, me));
        // Child first: the parent's pass then fails, and the slot stays the child's.
        let s = t.reserve(parent).unwrap();
        assert!(t.claim(s, parent, me));
        assert!(!t.pass(s, parent, me));
        assert!(t.give_back(s, me) == t.slots.iter().all(|x| x.load(Ordering::Relaxed) == 0));
        // A damaged index claims nothing.
        assert!(!t.claim(MAX_HOLDERS, parent, me));
        let other = t.reserve(ProcessId::from_bits(777)).unwrap();
        assert!(!t.claim(other, parent, me));
    }

    #[test]
    fn a_full_table_refuses_another_holder() {
        let t = table();
        let me = ProcessId::me();
        for _ in 0..MAX_HOLDERS {
            assert!(t.reserve(me).is_some());
        }
        assert_eq!(t.reserve(me), None);
    }
}
