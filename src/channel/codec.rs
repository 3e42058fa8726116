//! How messages become bytes and back: postcard, a small message encoded on the
//! stack, a larger one in a per-thread scratch buffer, so that neither a put nor a
//! get of a small message allocates. Shared by `Queue` and `Pipe`.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::ChannelFault;

/// The largest encoding kept on the stack.
const SMALL_MESSAGE: usize = 128;

/// Where a message is encoded: on the stack while it fits, then in a buffer taken
/// from this thread's scratch (moved there at the first byte that does not fit), so
/// that a small message costs no allocation and any message is encoded in one pass
/// (a `Serialize` impl runs once).
pub(crate) struct Encoding {
    stack: [u8; SMALL_MESSAGE],
    len: usize,
    heap: Option<Vec<u8>>,
}

impl Encoding {
    #[inline]
    pub(crate) fn new() -> Encoding {
        Encoding { stack: [0; SMALL_MESSAGE], len: 0, heap: None }
    }

    /// Encodes `item` (into an empty `Encoding`: built where it is used, not moved).
    #[inline]
    pub(crate) fn encode<T: Serialize>(&mut self, item: &T) -> Result<(), ChannelFault> {
        postcard::serialize_with_flavor::<T, _, ()>(item, self)
            .map_err(|e| ChannelFault::Encode(crate::segment::transfer::encode_failure::<T>(e)))
    }

    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        self.heap.as_deref().unwrap_or(&self.stack[..self.len])
    }
}

impl Drop for Encoding {
    /// Hands a heap buffer back to the thread's scratch for the next large message.
    fn drop(&mut self) {
        if let Some(buf) = self.heap.take() {
            give_back_scratch(buf);
        }
    }
}

impl postcard::ser_flavors::Flavor for &mut Encoding {
    type Output = ();

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if self.heap.is_none() {
            if let Some(room) = self.stack.get_mut(self.len..self.len + data.len()) {
                if data.len() <= 16 {
                    // A varint or a short field: a loop, not a call to memcpy.
                    room.iter_mut().zip(data).for_each(|(to, from)| *to = *from);
                } else {
                    room.copy_from_slice(data);
                }
                self.len += data.len();
                return Ok(());
            }
            let mut buf = take_scratch();
            buf.extend_from_slice(&self.stack[..self.len]);
            self.heap = Some(buf);
        }
        if let Some(buf) = &mut self.heap {
            buf.extend_from_slice(data);
        }
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        match (&mut self.heap, self.stack.get_mut(self.len)) {
            (None, Some(slot)) => {
                *slot = byte;
                self.len += 1;
                Ok(())
            }
            _ => self.try_extend(&[byte]),
        }
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// This thread's scratch buffer, emptied, for the caller to keep a while.
fn take_scratch() -> Vec<u8> {
    // `try_with`: a put from another thread-local's destructor gets a fresh buffer.
    let taken = SCRATCH.try_with(|cell| cell.try_borrow_mut().map(|mut b| std::mem::take(&mut *b)).ok());
    let mut buf = taken.ok().flatten().unwrap_or_default();
    buf.clear();
    buf
}

/// Gives a buffer back for the next [`take_scratch`], unless a large message grew it
/// past 1 MiB.
fn give_back_scratch(buf: Vec<u8>) {
    if buf.capacity() <= 1 << 20 {
        let _ = SCRATCH.try_with(|cell| {
            if let Ok(mut b) = cell.try_borrow_mut() {
                *b = buf;
            }
        });
    }
}

/// Runs `f` with this thread's scratch buffer (emptied), so that a small message
/// costs no allocation. A buffer grown past 1 MiB by a large message is let go.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buf = take_scratch();
    let r = f(&mut buf);
    give_back_scratch(buf);
    r
}

/// Decodes a message, naming `T` in the error.
/// A message is one whole value: bytes left over after it are an error (a message
/// of another type, or a damaged one), never silently dropped.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ChannelFault> {
    let fault = |reason: String| ChannelFault::Decode { expected: std::any::type_name::<T>(), reason };
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(fault(format!("{} bytes left over after the value", rest.len()))),
        Err(e) => Err(fault(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Message = (u32, String, Vec<u64>, Option<i8>);

    proptest! {
        /// Bytes from a damaged ring: a value or a decode error, never a panic.
        #[test]
        fn any_bytes_decode_to_a_value_or_an_error(bytes: Vec<u8>) {
            let _ = decode::<Message>(&bytes);
        }

        /// What is encoded decodes to itself, with nothing left over.
        #[test]
        fn a_message_decodes_to_itself(m: Message) {
            let mut e = Encoding::new();
            e.encode(&m).unwrap();
            prop_assert_eq!(decode::<Message>(e.bytes()).unwrap(), m);
        }
    }
}
