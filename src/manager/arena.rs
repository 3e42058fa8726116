//! The manager's arena: one segment of 64-bit words behind one robust lock, with a
//! block allocator and an undo log, so that every change to a container happens
//! whole or not at all, even when the process making it is killed halfway.
//!
//! ## Layout (in words of 8 bytes, from the start of the segment's body)
//! | words        | what |
//! |--------------|------|
//! | 0–2          | the [`RawMutex`] every transaction holds |
//! | 3            | change sequence: odd while a transaction changes words |
//! | 4            | undo log length |
//! | 5            | the bump pointer: first word never handed out |
//! | 6            | shut down (1) or serving (0) |
//! | 7            | magic and layout version |
//! | 8            | the registry of named containers (a dict's data word) |
//! | 16–207       | undo log: (word, old value) pairs |
//! | 208–239      | free-list heads, one per block class |
//! | 256–         | blocks |
//!
//! Words 0–7 are one cache line: taking the lock brings the words every
//! transaction writes with it.
//!
//! A block of class `c` is `4 << c` words: one word holding its class (low 8 bits)
//! and, only while the block is free, the next free block of its class (above them);
//! then data. Blocks are carved from the bump pointer
//! and recycled through their class's free list.
//!
//! ## Transactions
//! A [`Tx`] holds the lock. Every store to a word that existed before the
//! transaction goes through [`Tx::set`], which first records the word's old value
//! in the undo log (once per word), then publishes the log length, then stores.
//! Words of blocks handed out in this transaction, and the link words of blocks
//! being freed, are written without logging: until the transaction commits nothing
//! reachable points at them. Committing clears the log; dropping an uncommitted
//! transaction (an error halfway) rolls it back; a holder killed or panicking halfway
//! leaves the lock poisoned, and the next [`Arena::begin`] rolls the log back before
//! it does anything else. So a container is always as it was before or after one
//! whole operation.
//!
//! ## Readers without the lock
//! Operations that only read ([`Arena::read`]) take no lock: they read the change
//! sequence, run, and read it again; an odd or changed sequence means a writer was
//! at work, and they run again (after a few tries, under the lock). A writer makes
//! the sequence odd before its first store and even again when it commits or rolls
//! back; recovering a dead writer's log makes it even too. Because every read is
//! bounds-checked, a read racing a writer sees wrong but harmless words, and the
//! sequence check throws its result away.
//!
//! ## Never trusting the words
//! Every index read from the arena is checked against the length this process
//! mapped (never a length read from shared memory), every block's class against its
//! place, and every loop is bounded by a count fixed before it starts. Scribbled
//! words give [`ManagerError::Corrupted`], or wrong but well-formed data; never
//! undefined behaviour, a panic or an endless loop.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::ManagerError;
use crate::segment::{Backing, Expect, ObjectKind, Segment, SegmentCreateError, SegmentOpenError, View};
use crate::steps::{self, Step};
use crate::sync::{Lock, LockError, LockGuard, RawMutex};

const MAGIC: u64 = 0x5348_4d4d_4752_0001; // "SHMMGR", layout 1
                                          // The words every transaction touches share the lock's cache line, so that a
                                          // transaction moves as few lines between processes as it can.
/// Even while no transaction changes anything; odd while one does (a seqlock for
/// readers that take no lock).
const W_SEQ: u64 = 3;
const W_LOG_LEN: u64 = 4;
const W_BUMP: u64 = 5;
const W_SHUTDOWN: u64 = 6;
const W_MAGIC: u64 = 7;
pub(super) const W_REGISTRY: u64 = 8;
const W_LOG: u64 = 16;
const W_FREE: u64 = W_LOG + 2 * LOG_CAP;
const CLASSES: u64 = 32;
/// Distinct words one transaction may change. An operation changes a bounded set:
/// the bump pointer, free-list heads, a container's header and one table or array
/// slot; the largest (a dict growing while an entry is replaced) about 16.
const LOG_CAP: u64 = 96;
pub(super) const HEAP: u64 = 256;
/// Words of a block before its data: one, its class in the low 8 bits and, while
/// the block is free, the next free block's index above them.
const BLOCK_HEAD: u64 = 1;
const CLASS_BITS: u64 = 0xff;

/// The smallest arena: the fixed words and a little room.
pub(crate) const MIN_CAPACITY: usize = 64 * 1024;

/// A handle to a manager's arena; clones share the mapping.
#[derive(Clone)]
pub(crate) struct Arena {
    seg: Arc<Segment>,
    lock: Lock,
    words: NonNull<AtomicU64>,
    /// Words this process mapped: the bound for every index, never re-read.
    len: u64,
}

// SAFETY: the words are atomics in a mapping kept alive by `seg`; the lock is Sync.
unsafe impl Send for Arena {}
// SAFETY: as above.
unsafe impl Sync for Arena {}

impl fmt::Debug for Arena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arena").field("name", &self.seg.name()).field("words", &self.len).finish()
    }
}

const EXPECT: Expect = Expect { kind: ObjectKind::Manager, elem: None };

impl Arena {
    /// A new arena of `capacity` bytes (rounded down to whole words).
    pub(crate) fn create(capacity: usize, backing: Backing) -> Result<Arena, SegmentCreateError> {
        let capacity = capacity.max(MIN_CAPACITY) & !7;
        let seg = Segment::create(EXPECT, 0, capacity, backing, |body| {
            let words = body.cast::<AtomicU64>();
            // SAFETY: the body is `capacity >= MIN_CAPACITY` bytes, 64-byte aligned,
            // zero-filled and not yet visible to anyone; these indices are below HEAP.
            unsafe {
                (*words.add(W_MAGIC as usize)).store(MAGIC, Ordering::Relaxed);
                (*words.add(W_BUMP as usize)).store(HEAP, Ordering::Relaxed);
            }
            Ok(())
        })?;
        let arena = Arena::from_segment(Arc::new(seg)).map_err(|e| SegmentCreateError::Os {
            op: "attaching a new manager arena",
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(arena)
    }

    /// Attaches to a manager's segment, checking its magic and size.
    pub(crate) fn from_segment(seg: Arc<Segment>) -> Result<Arena, SegmentOpenError> {
        seg.check(EXPECT)?;
        let len = (seg.body_len() / 8) as u64;
        if len < HEAP + 64 {
            return Err(SegmentOpenError::Corrupted("manager arena too small"));
        }
        // SAFETY: the body is at least HEAP + 64 words (checked above), 64-byte aligned,
        // and holds words that are only ever accessed as atomics.
        let lock = Lock::from_view(unsafe { View::<RawMutex>::new(Arc::clone(&seg), 0) });
        let words = NonNull::new(seg.body().cast::<AtomicU64>()).expect("a mapping is never null");
        let arena = Arena { seg, lock, words, len };
        if arena.load(W_MAGIC) != MAGIC {
            return Err(SegmentOpenError::Corrupted("manager arena magic"));
        }
        Ok(arena)
    }

    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// Capacity in bytes.
    pub(crate) fn capacity(&self) -> usize {
        (self.len * 8) as usize
    }

    /// The word at `i`, which the caller has checked is below `len`.
    fn word(&self, i: u64) -> &AtomicU64 {
        debug_assert!(i < self.len);
        // SAFETY: `i < len` (callers check; `at` below does), the words lie inside the
        // mapping that `seg` keeps alive, and are only ever used as atomics.
        unsafe { &*self.words.as_ptr().add(i as usize) }
    }

    fn load(&self, i: u64) -> u64 {
        self.word(i).load(Ordering::Acquire)
    }

    /// Bytes handed out so far (including freed blocks not yet reused).
    pub(crate) fn used(&self) -> usize {
        (self.load(W_BUMP).min(self.len) * 8) as usize
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.load(W_SHUTDOWN) != 0
    }

    /// Marks the manager shut down: every later operation, in every process, is
    /// [`ManagerError::ShutDown`].
    pub(crate) fn shut_down(&self) {
        self.word(W_SHUTDOWN).store(1, Ordering::Release);
    }

    /// Takes the lock, repairing what a holder that died or panicked left, and
    /// starts a transaction.
    pub(crate) fn begin(&self) -> Result<Tx<'_>, ManagerError> {
        let guard = match self.lock.acquire_spinning() {
            Ok(g) => g,
            Err(LockError::Poisoned(p)) => {
                let g = p.into_inner();
                self.roll_back_log()?;
                self.lock.clear_poison();
                g
            }
            Err(LockError::Deadlock) => return Err(ManagerError::WouldDeadlock),
            Err(_) => return Err(ManagerError::Corrupted("the manager's lock word")),
        };
        if self.is_shut_down() {
            return Err(ManagerError::ShutDown);
        }
        Ok(Tx {
            reader: Reader { arena: self },
            logged: Marks::default(),
            freed: Marks::default(),
            popped: Marks::default(),
            changing: false,
            dead: false,
            committed: false,
            _guard: guard,
        })
    }

    /// Runs the read-only `f` without the lock when no writer interferes, else under
    /// the lock. `f` may run several times; only a run no writer overlapped counts.
    pub(crate) fn read<R>(&self, f: impl Fn(&Reader) -> Result<R, ManagerError>) -> Result<R, ManagerError> {
        const TRIES: u32 = 4;
        let reader = Reader { arena: self };
        for _ in 0..TRIES {
            let Some(before) = self.even_sequence() else { continue };
            if self.is_shut_down() {
                return Err(ManagerError::ShutDown);
            }
            let out = f(&reader);
            std::sync::atomic::fence(Ordering::Acquire);
            if self.word(W_SEQ).load(Ordering::Relaxed) == before {
                return out;
            }
        }
        let tx = self.begin()?;
        f(&tx)
    }

    /// The change sequence once it is even, waiting a little for a writer to finish;
    /// `None` if it stays odd (a slow writer, or a dead one the lock will repair).
    fn even_sequence(&self) -> Option<u64> {
        crate::sync::wait::spin(|| Some(self.load(W_SEQ)).filter(|s| s % 2 == 0))
    }

    /// Restores every word the undo log names to its old value, newest first.
    fn roll_back_log(&self) -> Result<(), ManagerError> {
        let n = self.load(W_LOG_LEN);
        if n > LOG_CAP {
            return Err(ManagerError::Corrupted("undo log length"));
        }
        // Every entry checked before any is applied: a rollback happens whole or not
        // at all, and one that cannot leaves the log (and the poison) for the next try.
        if (0..n).any(|k| !loggable(self.load(W_LOG + 2 * k), self.len)) {
            return Err(ManagerError::Corrupted("undo log entry"));
        }
        for k in (0..n).rev() {
            let (at, old) = (self.load(W_LOG + 2 * k), self.load(W_LOG + 2 * k + 1));
            if loggable(at, self.len) {
                self.word(at).store(old, Ordering::Release);
            }
        }
        self.word(W_LOG_LEN).store(0, Ordering::Release);
        self.end_change();
        Ok(())
    }

    /// Makes the change sequence odd: a writer is about to store.
    fn begin_change(&self) {
        let seq = self.word(W_SEQ);
        seq.store(seq.load(Ordering::Relaxed) | 1, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
    }

    /// Makes the change sequence even again, past every odd value it had.
    fn end_change(&self) {
        let seq = self.word(W_SEQ);
        let s = seq.load(Ordering::Relaxed);
        if s % 2 == 1 {
            seq.store(s.wrapping_add(1), Ordering::Release);
        }
    }
}

/// Whether the undo log may name word `at`: a mutable word, never the log itself.
fn loggable(at: u64, len: u64) -> bool {
    at < len && (at == W_BUMP || at == W_REGISTRY || (W_FREE..W_FREE + CLASSES).contains(&at) || at >= HEAP)
}

/// One operation under the arena's lock; rolled back unless committed.
pub(crate) struct Tx<'a> {
    reader: Reader<'a>,
    /// The words logged so far (a private copy, for the dedup check; the first few
    /// on the stack, so that a small transaction allocates nothing).
    logged: Marks,
    /// Blocks freed in this transaction: never handed out again before it commits,
    /// since a rollback makes them live again with whatever was written into them.
    freed: Marks,
    /// Blocks taken from a free list in this transaction: freeing one again must log
    /// its head word, which a rollback then restores (it is on the free list again).
    popped: Marks,
    /// Whether this transaction made the change sequence odd.
    changing: bool,
    /// A test killed the simulated holder here: nothing more is stored or undone.
    dead: bool,
    committed: bool,
    // Dropped after `Drop::drop` has rolled back: the lock outlives the repair.
    _guard: LockGuard<'a>,
}

impl fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tx").field("logged", &self.logged.len()).finish()
    }
}

fn corrupted(what: &'static str) -> ManagerError {
    ManagerError::Corrupted(what)
}

/// A set of word indices, the first few kept inline (most transactions free at
/// most one or two blocks; a `clear` frees many).
#[derive(Debug, Default)]
struct Marks {
    inline: [u64; 8],
    len: usize,
    spill: Vec<u64>,
}

impl Marks {
    fn push(&mut self, v: u64) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = v;
                self.len += 1;
            }
            None => self.spill.push(v),
        }
    }

    fn contains(&self, v: &u64) -> bool {
        self.inline[..self.len].contains(v) || self.spill.contains(v)
    }

    fn len(&self) -> usize {
        self.len + self.spill.len()
    }
}

/// Read access to an arena's words: what a [`Tx`] reads through, and what
/// [`Arena::read`] hands to a reader that holds no lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    arena: &'a Arena,
}

impl<'a> std::ops::Deref for Tx<'a> {
    type Target = Reader<'a>;
    fn deref(&self) -> &Reader<'a> {
        &self.reader
    }
}

impl Reader<'_> {
    pub(crate) fn capacity(&self) -> usize {
        self.arena.capacity()
    }

    /// Checks that words `at..at + n` lie in the heap.
    pub(crate) fn check_range(&self, at: u64, n: u64) -> Result<(), ManagerError> {
        match at.checked_add(n) {
            Some(end) if at >= HEAP && end <= self.arena.len => Ok(()),
            _ => Err(corrupted("an index out of the arena")),
        }
    }

    /// The word at `at`, bounds-checked.
    pub(crate) fn get(&self, at: u64) -> Result<u64, ManagerError> {
        if at >= self.arena.len {
            return Err(corrupted("an index out of the arena"));
        }
        Ok(self.arena.load(at))
    }

    /// Data words of the block whose data starts at `data`.
    pub(crate) fn block_room(&self, data: u64) -> Result<u64, ManagerError> {
        let block = data.checked_sub(BLOCK_HEAD).ok_or(corrupted("a block index"))?;
        let class = self.get(block)? & CLASS_BITS;
        self.check_block(block, class)?;
        Ok((4 << class) - BLOCK_HEAD)
    }

    fn check_block(&self, block: u64, class: u64) -> Result<(), ManagerError> {
        if class >= CLASSES || !block.is_multiple_of(4) {
            return Err(corrupted("a block header"));
        }
        self.check_range(block, 4 << class)?;
        if self.get(block)? & CLASS_BITS != class {
            return Err(corrupted("a block's class"));
        }
        Ok(())
    }

    /// Reads `n` bytes from the words at `at`.
    pub(crate) fn read_bytes(&self, at: u64, n: u64) -> Result<Vec<u8>, ManagerError> {
        let words = n.div_ceil(8);
        self.check_range(at, words)?;
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..words {
            out.extend_from_slice(&self.arena.load(at + i).to_le_bytes());
        }
        out.truncate(n as usize);
        Ok(out)
    }

    /// Whether the words at `at` hold exactly `bytes` (as [`Tx::init_bytes`] writes them).
    pub(crate) fn words_equal(&self, at: u64, bytes: &[u8]) -> Result<bool, ManagerError> {
        self.check_range(at, words_for(bytes.len()))?;
        Ok(packed(bytes).enumerate().all(|(i, w)| self.arena.load(at + i as u64) == w))
    }
}

impl Tx<'_> {
    /// Stores `v` at `at`, a word that existed before this transaction, logging its
    /// old value first.
    pub(crate) fn set(&mut self, at: u64, v: u64) -> Result<(), ManagerError> {
        if !loggable(at, self.arena.len) {
            return Err(corrupted("a store outside the mutable words"));
        }
        self.dies_here()?;
        self.changing();
        if !self.logged.contains(&at) {
            let k = self.logged.len() as u64;
            if k == LOG_CAP {
                return Err(corrupted("an operation changing more words than the undo log holds"));
            }
            let old = self.arena.load(at);
            self.arena.word(W_LOG + 2 * k).store(at, Ordering::Relaxed);
            self.arena.word(W_LOG + 2 * k + 1).store(old, Ordering::Relaxed);
            self.dies_here()?;
            // The entry is whole before the length says it exists, and the length is
            // out before the store it guards (Release on both).
            self.arena.word(W_LOG_LEN).store(k + 1, Ordering::Release);
            self.logged.push(at);
            self.dies_here()?;
        }
        self.arena.word(at).store(v, Ordering::Release);
        Ok(())
    }

    /// Whether a test kills the simulated holder at this step (never outside tests):
    /// then it stores nothing more and undoes nothing, as a process killed here.
    fn dies_here(&mut self) -> Result<(), ManagerError> {
        if self.dead || steps::point("arena:store") == Step::Die {
            self.dead = true;
            return Err(corrupted("the holder was killed here (a test)"));
        }
        Ok(())
    }

    /// Stores into a block handed out by this transaction (nothing reachable points
    /// at it until commit, so a rollback need not restore it).
    pub(crate) fn init(&mut self, at: u64, v: u64) -> Result<(), ManagerError> {
        self.check_range(at, 1)?;
        self.dies_here()?;
        self.changing();
        self.arena.word(at).store(v, Ordering::Relaxed);
        Ok(())
    }

    /// Hands out a block with room for `n` data words; returns its first data word.
    /// The data holds whatever was there before: callers initialise what they read.
    pub(crate) fn alloc(&mut self, n: u64) -> Result<u64, ManagerError> {
        let class = class_for(n).ok_or(ManagerError::Full { capacity: self.arena.capacity() })?;
        let head = self.get(W_FREE + class)?;
        if head != 0 && !self.freed.contains(&head) {
            self.check_block(head, class)?;
            let next = self.get(head)? >> 8;
            self.set(W_FREE + class, next)?;
            self.popped.push(head);
            return Ok(head + BLOCK_HEAD);
        }
        let block = self.get(W_BUMP)?;
        let end = block.checked_add(4 << class).filter(|e| *e <= self.arena.len);
        let Some(end) = end else {
            return Err(ManagerError::Full { capacity: self.arena.capacity() });
        };
        if block < HEAP || !block.is_multiple_of(4) {
            return Err(corrupted("the bump pointer"));
        }
        self.set(W_BUMP, end)?;
        self.init(block, class)?;
        Ok(block + BLOCK_HEAD)
    }

    /// Returns the block whose data starts at `data` to its class's free list.
    pub(crate) fn free(&mut self, data: u64) -> Result<(), ManagerError> {
        let block = data.checked_sub(BLOCK_HEAD).ok_or(corrupted("a block index"))?;
        let class = self.get(block)? & CLASS_BITS;
        self.check_block(block, class)?;
        let head = self.get(W_FREE + class)?;
        // The link of a block in use is never read, so writing it needs no log; the
        // head's old value is logged, so a rollback unreaches the block again.
        if self.popped.contains(&block) {
            self.set(block, class | (head << 8))?;
        } else {
            self.init(block, class | (head << 8))?;
        }
        self.freed.push(block);
        self.set(W_FREE + class, block)
    }

    /// Writes `bytes` into fresh words from `at` (see [`Tx::init`]), zero-padded to
    /// whole words.
    pub(crate) fn init_bytes(&mut self, at: u64, bytes: &[u8]) -> Result<(), ManagerError> {
        self.check_range(at, words_for(bytes.len()))?;
        self.changing();
        for (i, w) in packed(bytes).enumerate() {
            self.dies_here()?;
            self.arena.word(at + i as u64).store(w, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Makes every change so far permanent and releases the lock.
    pub(crate) fn commit(mut self) {
        if self.dies_here().is_err() {
            return; // killed with every store made and the log still full
        }
        self.arena.word(W_LOG_LEN).store(0, Ordering::Release);
        self.arena.end_change();
        self.committed = true;
    }

    /// Makes the change sequence odd before this transaction's first store.
    fn changing(&mut self) {
        if !self.changing {
            self.arena.begin_change();
            self.changing = true;
        }
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.dead {
            // As a killed holder: the log stays as it is, the lock is found poisoned
            // (a dead owner's lock is taken over poisoned) and repaired by the next
            // `begin`.
            self.arena.lock.raw().poison();
            return;
        }
        if !self.committed && self.changing && self.arena.roll_back_log().is_err() {
            // A scribbled log: the poison makes the next `begin` try again (and
            // report it), instead of going on from half-restored words.
            self.arena.lock.raw().poison();
        }
    }
}

/// Words holding `n` bytes.
pub(crate) fn words_for(n: usize) -> u64 {
    (n as u64).div_ceil(8)
}

/// `bytes` as the words [`Tx::init_bytes`] writes.
pub(crate) fn packed(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes.chunks(8).map(|c| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(w)
    })
}

/// The smallest block class with room for `n` data words.
fn class_for(n: u64) -> Option<u64> {
    let need = n.checked_add(BLOCK_HEAD)?.max(4);
    let class = u64::from(need.next_power_of_two().trailing_zeros()).checked_sub(2)?;
    (class < CLASSES).then_some(class)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arena() -> Arena {
        Arena::create(MIN_CAPACITY, Backing::Anonymous).unwrap()
    }

    #[test]
    fn classes_fit_their_data() {
        assert_eq!(class_for(0), Some(0));
        assert_eq!(class_for(3), Some(0));
        assert_eq!(class_for(4), Some(1));
        assert_eq!(class_for(7), Some(1));
        assert_eq!(class_for(8), Some(2));
        for n in [1u64, 5, 100, 1 << 20] {
            let c = class_for(n).unwrap();
            assert!((4u64 << c) - BLOCK_HEAD >= n && (c == 0 || (2u64 << c) - BLOCK_HEAD < n), "{n}");
        }
        assert_eq!(class_for(u64::MAX), None);
    }

    #[test]
    fn freed_blocks_are_reused_by_their_class() {
        let a = arena();
        let mut tx = a.begin().unwrap();
        let x = tx.alloc(5).unwrap();
        let y = tx.alloc(5).unwrap();
        assert_ne!(x, y);
        tx.free(x).unwrap();
        // Not before the free is committed: a rollback would revive x.
        assert_ne!(tx.alloc(6).unwrap(), x);
        tx.commit();
        let mut tx = a.begin().unwrap();
        assert_eq!(tx.alloc(6).unwrap(), x);
        tx.commit();
    }

    #[test]
    fn an_uncommitted_transaction_is_rolled_back() {
        let a = arena();
        let bump = a.load(W_BUMP);
        let mut tx = a.begin().unwrap();
        let x = tx.alloc(10).unwrap();
        tx.set(W_REGISTRY, x).unwrap();
        drop(tx);
        assert_eq!((a.load(W_BUMP), a.load(W_REGISTRY), a.load(W_LOG_LEN)), (bump, 0, 0));
    }

    #[test]
    fn a_panicking_holder_leaves_the_arena_as_before() {
        let a = arena();
        let b = a.clone();
        let r = std::thread::spawn(move || {
            let mut tx = b.begin().unwrap();
            tx.set(W_REGISTRY, 12345).unwrap();
            // Leak the transaction so that only the log remembers, as when killed.
            std::mem::forget(tx);
            panic!("killed halfway");
        })
        .join();
        assert!(r.is_err());
        // The thread's death left the lock to a dead owner with the log full.
        let tx = a.begin().unwrap();
        assert_eq!(tx.get(W_REGISTRY).unwrap(), 0);
    }

    #[test]
    fn the_arena_fills_up_with_an_error() {
        let a = arena();
        let mut tx = a.begin().unwrap();
        let mut n = 0;
        let err = loop {
            match tx.alloc(1000) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert!(n > 0);
        assert!(matches!(err, ManagerError::Full { .. }), "{err:?}");
    }

    #[test]
    fn scribbled_free_lists_and_logs_are_errors() {
        let a = arena();
        a.word(W_FREE).store(7, Ordering::Relaxed);
        let mut tx = a.begin().unwrap();
        assert!(matches!(tx.alloc(1), Err(ManagerError::Corrupted(_))));
        drop(tx);
        a.word(W_FREE).store(0, Ordering::Relaxed);
        a.word(W_LOG_LEN).store(u64::MAX, Ordering::Relaxed);
        a.lock.raw().poison();
        assert!(matches!(a.begin(), Err(ManagerError::Corrupted(_))));
    }

    /// Review finding: a block taken from a free list and freed again in the same
    /// transaction had its link rewritten unlogged; rolled back, the list then ran
    /// through a live block, handed out twice.
    #[test]
    fn a_block_popped_and_freed_again_in_one_transaction_rolls_back_cleanly() {
        let a = arena();
        let mut tx = a.begin().unwrap();
        let (x, y, z) = (tx.alloc(1).unwrap(), tx.alloc(1).unwrap(), tx.alloc(1).unwrap());
        tx.free(z).unwrap();
        tx.commit();
        let mut tx = a.begin().unwrap();
        tx.free(x).unwrap(); // the list: x, z; y is live
        tx.commit();
        let mut tx = a.begin().unwrap();
        assert_eq!(tx.alloc(1).unwrap(), x);
        tx.free(y).unwrap();
        tx.free(x).unwrap();
        drop(tx); // rolled back: x, z free again, y live
        let mut tx = a.begin().unwrap();
        let handed: Vec<u64> = (0..3).map(|_| tx.alloc(1).unwrap()).collect();
        assert_eq!(&handed[..2], &[x, z]);
        assert!(!handed.contains(&y), "a live block was handed out: {handed:?}");
    }

    /// A log with one bad entry is not applied at all (never half), and the lock
    /// stays poisoned so that every later `begin` reports it.
    #[test]
    fn a_rollback_is_whole_or_not_at_all() {
        let a = arena();
        a.word(W_LOG).store(W_REGISTRY, Ordering::Relaxed);
        a.word(W_LOG + 1).store(77, Ordering::Relaxed);
        a.word(W_LOG + 2).store(W_LOG_LEN, Ordering::Relaxed); // not loggable
        a.word(W_LOG + 3).store(5, Ordering::Relaxed);
        a.word(W_LOG_LEN).store(2, Ordering::Relaxed);
        a.lock.raw().poison();
        assert!(matches!(a.begin(), Err(ManagerError::Corrupted(_))));
        assert_eq!(a.load(W_REGISTRY), 0, "half a rollback was applied");
        assert!(matches!(a.begin(), Err(ManagerError::Corrupted(_))), "the damage is reported again");
    }
}
