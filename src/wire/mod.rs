//! The wire format our own processes speak to each other: serde with fixed-width
//! little-endian numbers, for messages whose two ends are the same executable (a
//! pool and its workers).
//!
//! postcard, which the channels use, writes integers as varints: compact on the
//! wire, but a loop per integer at each end. Between a pool and its workers the
//! bytes cost nothing to move (shared memory) and every task pays the encoding
//! twice (arguments, result), so here an integer is its bytes: a store to write, a
//! bounds-checked load to read (a pool `map` of integers went from a third of its
//! time in varint code to a few percent).
//!
//! ## Encoding
//! | value | bytes |
//! |---|---|
//! | `bool` | one byte, 0 or 1 |
//! | integers, floats | their little-endian bytes (`char` as its `u32`) |
//! | `str`, bytes | length (`u64`), then the bytes |
//! | `Option` | 0, or 1 and the value |
//! | sequence, map | count (`u64`), then the elements (key, value, key, ...) |
//! | tuple, struct | the fields in order, nothing else |
//! | enum | variant index (`u32`), then its fields |
//! | unit, unit struct | nothing |
//!
//! Not self-describing (as postcard): `deserialize_any` is refused, so types that
//! need it (`#[serde(flatten)]`, untagged enums) cannot travel this way.
//!
//! ## What a reader promises
//! The bytes come from shared memory that another process may have damaged. A
//! reader checks every length against the bytes left, refuses what is not valid
//! (a `bool` of 7, a string that is not UTF-8, a `char` that is a surrogate), and
//! bounds the work a message can demand: every element of a sequence or map takes
//! a step from a budget of the message's length plus [`ZERO_SIZED_ELEMENTS`], so a
//! damaged count of `()` elements ends in an error, not a loop of 2^64 steps; and a
//! value nested deeper than [`MAX_DEPTH`] (a recursive type) is an error, not a
//! stack overflow.
//!
//! A writer checks what it is told: a sequence or map that declared its length
//! must write exactly that many elements. As with any format that does not
//! describe itself, `#[serde(skip_serializing_if)]` cannot be used (the reader
//! would not know a field was left out).

mod de;
mod ser;

use std::fmt;

pub(crate) use de::{from_bytes, Reader};
pub(crate) use ser::append;

/// How many elements a message may hold beyond its length in bytes (elements that
/// take no bytes: `()`, empty tuples).
const ZERO_SIZED_ELEMENTS: u64 = 1 << 24;

/// The most elements (sequence and map items, values of a chunk) that `len` bytes
/// may hold: the reader's budget for them.
pub(crate) fn element_budget(len: usize) -> u64 {
    (len as u64).saturating_add(ZERO_SIZED_ELEMENTS)
}

/// How deeply a value may nest (options, sequences, tuples, structs, enums): a
/// recursive type read from damaged bytes must end in an error, not in a stack
/// overflow. Measured in a debug build, a level costs up to about 1.3 KB of stack (a
/// tree node: a struct level and a sequence level, 2.5 KB): 512 levels fit a spawned
/// thread's 2 MiB (the pool's result-handling thread decodes results) with room.
pub(crate) const MAX_DEPTH: u32 = 512;

/// Why a value could not be written or read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireError(pub(crate) String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

impl serde::ser::Error for WireError {
    fn custom<T: fmt::Display>(msg: T) -> WireError {
        WireError(msg.to_string())
    }
}

impl serde::de::Error for WireError {
    fn custom<T: fmt::Display>(msg: T) -> WireError {
        WireError(msg.to_string())
    }
}

#[cfg(test)]
mod tests;
