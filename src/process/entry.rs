//! Naming a target function so that a child can call it: directly after `fork`, or,
//! in a re-executed copy of this binary, by its offset from a known function.
//!
//! A target is a `fn(A)`; its arguments travel serialized. The child calls a
//! monomorphized *trampoline* that decodes `A` (attaching to the shared objects
//! inside it) and calls the target. Both addresses are recorded relative to
//! [`anchor`], which survives address-space randomisation because the whole image
//! moves together; the child checks that it runs the very same executable file
//! before it trusts an offset.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::child::{Panic, PanicCapture};
use crate::channel::Queue;
use crate::segment::transfer::{self, Incoming};

/// Decodes the arguments of `target` and calls it.
pub(crate) type Trampoline = fn(target: usize, args: &[u8], incoming: Incoming) -> Result<(), String>;

/// A target and the trampoline that knows its argument type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    trampoline: Trampoline,
    target: usize,
}

/// An [`Entry`] as offsets from [`anchor`], for another process running this binary.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct EntryOffsets {
    trampoline: u64,
    target: u64,
}

/// Identifies the executable, so that a re-executed child can refuse offsets made
/// in a different one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BinaryCheck {
    exe: [u64; 4],
    probe: u64,
}

#[inline(never)]
fn anchor() {}

fn offset(addr: usize) -> u64 {
    addr.wrapping_sub(anchor as *const () as usize) as u64
}

impl Entry {
    pub(crate) fn new<A: DeserializeOwned + 'static>(target: fn(A)) -> Entry {
        Entry { trampoline: trampoline::<A>, target: target as usize }
    }

    /// Decodes the arguments and runs the target, in this process.
    pub(crate) fn run(self, args: &[u8], incoming: Incoming) -> Result<(), String> {
        (self.trampoline)(self.target, args, incoming)
    }

    /// The offsets, if the target and trampoline lie in the same loaded object as
    /// the anchor (the executable); a function in a shared library has no offset that
    /// means anything in another process.
    pub(crate) fn offsets(self) -> Option<EntryOffsets> {
        let base = anchor as *const () as usize;
        let same = |addr: usize| crate::sys::same_object(base, addr);
        (same(self.trampoline as usize) && same(self.target))
            .then(|| EntryOffsets { trampoline: offset(self.trampoline as usize), target: offset(self.target) })
    }

    /// # Safety
    /// `o` was made by [`Entry::offsets`] in a process running this same executable
    /// (the caller has compared [`BinaryCheck`]s).
    pub(crate) unsafe fn from_offsets(o: EntryOffsets) -> Entry {
        let base = anchor as *const () as usize;
        let trampoline_addr = base.wrapping_add(o.trampoline as usize);
        // SAFETY: per the contract, this is the address of a `Trampoline` in this
        // image, moved by the same ASLR slide as `anchor`.
        let trampoline = unsafe { std::mem::transmute::<usize, Trampoline>(trampoline_addr) };
        Entry { trampoline, target: base.wrapping_add(o.target as usize) }
    }
}

/// The offset of a function of this executable from [`anchor`], for a child running
/// the same executable (a pool worker: started by us, after the [`BinaryCheck`]);
/// `None` for a function in a shared library.
pub(crate) fn code_offset(addr: usize) -> Option<u64> {
    let base = anchor as *const () as usize;
    crate::sys::same_object(base, addr).then(|| offset(addr))
}

/// The address of the function at `offset` from [`anchor`] (see [`code_offset`]).
/// Only an address: calling it is sound only for offsets that a process running
/// this same executable made with `code_offset`.
pub(crate) fn code_address(offset: u64) -> usize {
    (anchor as *const () as usize).wrapping_add(offset as usize)
}

impl BinaryCheck {
    pub(crate) fn this_binary() -> std::io::Result<BinaryCheck> {
        Ok(BinaryCheck {
            exe: crate::sys::exe_identity()?,
            probe: offset(BinaryCheck::this_binary as *const () as usize),
        })
    }
}

fn trampoline<A: DeserializeOwned + 'static>(target: usize, args: &[u8], incoming: Incoming) -> Result<(), String> {
    let (slot, args): (PanicSlot, A) = match transfer::receiving(incoming, || postcard::take_from_bytes(args)) {
        Ok((decoded, [])) => decoded,
        Ok(_) => return Err(format!("bytes left over after the arguments (`{}`)", crate::names::type_name::<A>())),
        Err(e) => return Err(format!("cannot decode the arguments as `{}`: {e}", crate::names::type_name::<A>())),
    };
    // SAFETY: `target` came from `Entry::new::<A>` paired with this very
    // `trampoline::<A>`: in this process (fork), or in a parent running the same
    // executable, translated by `from_offsets`. So it is a `fn(A)`.
    let target = unsafe { std::mem::transmute::<usize, fn(A)>(target) };
    match PanicCapture::begin(false).catch(|| target(args)) {
        Ok(()) => Ok(()),
        Err((panic, payload)) => {
            slot.record(panic);
            // On to `child::run`, which exits with code 1 (already printed).
            std::panic::resume_unwind(payload)
        }
    }
}

/// Where a child's panic goes for its parent to read (`Process::panic_message`): a
/// one-message queue of its own.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct PanicSlot(Queue<Panic>);

impl PanicSlot {
    /// Messages are cut to this many bytes, so that one always fits in the ring
    /// inline (two of them and their lengths under a quarter of [`Self::RING`]; a
    /// larger one would need a side segment, a file that could outlive us).
    const MAX_TEXT: usize = 480;
    const RING: usize = 4096;

    pub(crate) fn new() -> Result<PanicSlot, crate::SegmentCreateError> {
        Ok(PanicSlot(Queue::<Panic>::builder().capacity(Self::RING).maxsize(1).build()?))
    }

    fn record(&self, mut panic: Panic) {
        for text in [&mut panic.message, &mut panic.location] {
            if text.len() > Self::MAX_TEXT {
                let mut end = Self::MAX_TEXT;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
            }
        }
        let _ = self.0.try_put(panic);
    }

    /// The child's panic, if it recorded one (taken: ask once, keep the answer).
    pub(crate) fn take(&self) -> Option<Panic> {
        self.0.try_get().ok()
    }
}

/// Checks, when it is instantiated, that `F` is zero-sized: a fn item or a
/// non-capturing closure, which a child can make again from its type alone.
const fn assert_zero_sized<F>() {
    assert!(
        std::mem::size_of::<F>() == 0,
        "a task must be a fn item or a non-capturing closure (not a fn pointer or a capturing closure)"
    );
}

/// A value of the zero-sized function type `F`, made from nothing: how a child calls
/// a task that only its type names (the code is the same executable's).
pub(crate) fn conjure<F: Copy>() -> F {
    const { assert_zero_sized::<F>() };
    // SAFETY: `F` is zero-sized (checked at compile time above), so it has no bytes to
    // initialise, and it is `Copy`: the process that named the task held a value of
    // it, so making one here is making a copy, which `Copy` allows.
    unsafe { std::mem::zeroed::<F>() }
}
