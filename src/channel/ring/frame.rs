//! The ring's arithmetic: positions and counts packed in one word, frame headers
//! and lengths. Pure functions, so that they can be checked without a segment.

pub(super) const POS_BITS: u32 = 40;
pub(super) const POS_MASK: u64 = (1 << POS_BITS) - 1;
pub(super) const COUNT_MASK: u32 = (1 << 24) - 1;
/// How often a joinable ring's put looks at the unfinished count (in puts).
pub(super) const LIMIT_LOOK: u32 = 4096;
/// The largest capacity: positions are compared modulo 2⁴⁰.
pub(crate) const MAX_CAPACITY: u64 = 1 << 38;
/// The smallest capacity worth having.
pub(crate) const MIN_CAPACITY: u64 = 256;

pub(super) const FRAME_HEADER: u64 = 8;
pub(super) const CHECK: u64 = 0xA5;
pub(super) const INLINE: u8 = 1;
pub(super) const SIDE: u8 = 2;
/// Not a message: the producer's note that the next frame starts at the
/// beginning of the data area (see `Ring::rewind`). It carries the number of the
/// message after it, which it does not count. Five bits or more from either
/// message kind (and from 0): a bit or two flipped does not turn a message into a
/// skip (losing it unseen when it ends the lap) or a skip into a message (stale
/// bytes delivered).
pub(super) const SKIP: u8 = 0xF0;

/// A frame's header word: payload length (bits 0-31), kind (32-39), the check
/// byte (40-47), and the low 16 bits of the message's number in the ring (48-63),
/// which the reader compares with its own count.
pub(super) fn frame_word(len: u64, kind: u8, number: u32) -> u64 {
    debug_assert!(len <= u64::from(u32::MAX), "a frame's length is 32 bits");
    len | (u64::from(kind) << 32) | (CHECK << 40) | (u64::from(number as u16) << 48)
}

pub(super) fn unpack(word: u64) -> (u64, u32) {
    (word & POS_MASK, (word >> POS_BITS) as u32 & COUNT_MASK)
}

pub(super) fn pack(pos: u64, count: u32) -> u64 {
    (pos & POS_MASK) | (u64::from(count & COUNT_MASK) << POS_BITS)
}

pub(super) fn frame_len(payload: u64) -> u64 {
    FRAME_HEADER + payload.next_multiple_of(8)
}

/// The bytes of a frame's checksum.
pub(super) const CRC_LEN: usize = 4;

/// The fields of a frame's header word (see [`frame_word`]): length, kind, check
/// byte and number; none of them trusted yet.
pub(super) fn frame_fields(word: u64) -> (u64, u8, u64, u16) {
    (word & 0xFFFF_FFFF, (word >> 32) as u8, (word >> 40) & 0xFF, (word >> 48) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn positions_and_counts_pack_and_unpack(pos in 0u64..(1 << POS_BITS), count in 0u32..=COUNT_MASK) {
            prop_assert_eq!(unpack(pack(pos, count)), (pos, count));
        }

        #[test]
        fn any_position_and_count_wrap_into_their_fields(pos: u64, count: u32) {
            prop_assert_eq!(unpack(pack(pos, count)), (pos & POS_MASK, count & COUNT_MASK));
        }

        #[test]
        fn a_frame_header_reads_back_what_was_written(len in 0u64..(1 << 32), kind: u8, number: u32) {
            prop_assert_eq!(frame_fields(frame_word(len, kind, number)), (len, kind, CHECK, number as u16));
        }

        #[test]
        fn a_frame_is_whole_words_and_holds_its_payload(payload in 0u64..(1 << 40)) {
            let f = frame_len(payload);
            prop_assert!(f.is_multiple_of(8) && f >= FRAME_HEADER + payload && f < FRAME_HEADER + payload + 8);
        }

        #[test]
        fn any_word_parses_to_fields_without_panicking(word: u64) {
            let (len, _, check, _) = frame_fields(word);
            prop_assert!(len <= u64::from(u32::MAX) && check <= 0xFF);
        }
    }
}
