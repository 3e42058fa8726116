//! Reading: a serde `Deserializer` over bytes nobody vouches for.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

use super::{element_budget, WireError, MAX_DEPTH};

type Result<T> = std::result::Result<T, WireError>;

/// Reads one `T` from the front of `bytes`, returning it and the bytes after it.
pub(crate) fn take_from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8])> {
    let mut decoder = Decoder::new(bytes);
    let value = T::deserialize(&mut decoder)?;
    Ok((value, decoder.input))
}

/// Reads one `T` that must fill `bytes` exactly.
pub(crate) fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    match take_from_bytes(bytes)? {
        (value, []) => Ok(value),
        (_, rest) => Err(WireError(format!("{} bytes left over after the value", rest.len()))),
    }
}

/// Reads values one after another from the same bytes, under one budget (see the
/// module docs): for a run of small values, the set-up is paid once.
pub(crate) struct Reader<'de>(Decoder<'de>);

impl<'de> Reader<'de> {
    pub(crate) fn new(bytes: &'de [u8]) -> Reader<'de> {
        Reader(Decoder::new(bytes))
    }

    /// The next value. After an error the reader's position is unspecified.
    #[inline]
    pub(crate) fn read<T: DeserializeOwned>(&mut self) -> Result<T> {
        T::deserialize(&mut self.0)
    }

    /// The next byte, taken.
    #[inline]
    pub(crate) fn byte(&mut self) -> Option<u8> {
        self.0.take::<1>().ok().map(|[b]| b)
    }

    /// Gives up the rest: every later read fails.
    pub(crate) fn abandon(&mut self) {
        self.0.input = &[];
    }

    /// Gives the next value a budget of its own (the bytes left plus the allowance),
    /// as [`take_from_bytes`] would: for values read one after another.
    #[inline]
    pub(crate) fn renew(&mut self) {
        self.0.steps = element_budget(self.0.input.len());
    }

    /// Whether every byte has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.input.is_empty()
    }
}

struct Decoder<'de> {
    input: &'de [u8],
    /// Sequence and map elements this message may still hold (see the module docs).
    steps: u64,
    /// How deeply the value being read is nested now.
    depth: u32,
}

fn error(what: impl Into<String>) -> WireError {
    WireError(what.into())
}

impl<'de> Decoder<'de> {
    fn new(input: &'de [u8]) -> Decoder<'de> {
        Decoder { input, steps: element_budget(input.len()), depth: 0 }
    }

    #[inline]
    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let Some((head, rest)) = self.input.split_first_chunk::<N>() else {
            return Err(error("the message ends inside a value"));
        };
        self.input = rest;
        Ok(*head)
    }

    /// A count (of bytes, elements or entries) as this machine's `usize`.
    #[inline]
    fn count(&mut self) -> Result<usize> {
        let n = u64::from_le_bytes(self.take()?);
        usize::try_from(n).map_err(|_| error(format!("a count of {n} does not fit this machine")))
    }

    fn bytes(&mut self) -> Result<&'de [u8]> {
        let n = self.count()?;
        let Some((head, rest)) = self.input.split_at_checked(n) else {
            return Err(error(format!("a length of {n} bytes runs past the message ({} left)", self.input.len())));
        };
        self.input = rest;
        Ok(head)
    }

    fn str(&mut self) -> Result<&'de str> {
        std::str::from_utf8(self.bytes()?).map_err(|e| error(format!("a string is not UTF-8: {e}")))
    }

    #[inline]
    fn step(&mut self) -> Result<()> {
        self.steps = self.steps.checked_sub(1).ok_or_else(|| error("more elements than the message can hold"))?;
        Ok(())
    }

    /// Reads a value nested one level deeper (see [`MAX_DEPTH`]).
    #[inline]
    fn nested<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.depth >= MAX_DEPTH {
            return Err(error(format!("a value nested more than {MAX_DEPTH} deep")));
        }
        self.depth += 1;
        let out = read(self);
        self.depth -= 1;
        out
    }

    #[inline]
    fn variant(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take()?))
    }
}

macro_rules! numbers {
    ($($method:ident $visit:ident $ty:ty),+) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            visitor.$visit(<$ty>::from_le_bytes(self.take()?))
        }
    )+};
}

impl<'de> de::Deserializer<'de> for &mut Decoder<'de> {
    type Error = WireError;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(error("this format does not describe itself: a type that needs `deserialize_any` cannot be read"))
    }

    numbers!(
        deserialize_i8 visit_i8 i8, deserialize_i16 visit_i16 i16, deserialize_i32 visit_i32 i32,
        deserialize_i64 visit_i64 i64, deserialize_i128 visit_i128 i128,
        deserialize_u16 visit_u16 u16, deserialize_u32 visit_u32 u32,
        deserialize_u64 visit_u64 u64, deserialize_u128 visit_u128 u128,
        deserialize_f32 visit_f32 f32, deserialize_f64 visit_f64 f64
    );

    #[inline]
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u8(self.take::<1>()?[0])
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.take::<1>()?[0] {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            b => Err(error(format!("a bool of {b}"))),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let n = u32::from_le_bytes(self.take()?);
        visitor.visit_char(char::from_u32(n).ok_or_else(|| error(format!("{n:#x} is not a char")))?)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_str(self.str()?)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_bytes(self.bytes()?)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.take::<1>()?[0] {
            0 => visitor.visit_none(),
            1 => self.nested(|de| visitor.visit_some(de)),
            b => Err(error(format!("an option tag of {b}"))),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value> {
        self.nested(|de| visitor.visit_newtype_struct(de))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.count()?;
        self.nested(|de| visitor.visit_seq(Elements { de, left: len, counted: true }))
    }

    #[inline]
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        self.nested(|de| visitor.visit_seq(Elements { de, left: len, counted: false }))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.count()?;
        self.nested(|de| visitor.visit_map(Elements { de, left: len, counted: true }))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_tuple(fields.len(), visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.nested(|de| visitor.visit_enum(de))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u32(self.variant()?)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(error("this format does not describe itself: a value cannot be skipped"))
    }
}

/// The elements of a sequence, tuple, struct or map. `counted`: the count came
/// from the message, so each element spends a step of its budget.
struct Elements<'a, 'de> {
    de: &'a mut Decoder<'de>,
    left: usize,
    counted: bool,
}

impl Elements<'_, '_> {
    #[inline]
    fn advance(&mut self) -> Result<bool> {
        if self.left == 0 {
            return Ok(false);
        }
        if self.counted {
            self.de.step()?;
        }
        self.left -= 1;
        Ok(true)
    }

    fn size_hint(&self) -> Option<usize> {
        // A damaged count must not size an allocation: never more than the bytes left.
        Some(self.left.min(self.de.input.len()))
    }
}

impl<'de> de::SeqAccess<'de> for Elements<'_, 'de> {
    type Error = WireError;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if !self.advance()? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Elements::size_hint(self)
    }
}

impl<'de> de::MapAccess<'de> for Elements<'_, 'de> {
    type Error = WireError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if !self.advance()? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        Elements::size_hint(self)
    }
}

impl<'de> de::EnumAccess<'de> for &mut Decoder<'de> {
    type Error = WireError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        let index = self.variant()?;
        let value = seed.deserialize(IntoDeserializer::<WireError>::into_deserializer(index))?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut Decoder<'de> {
    type Error = WireError;

    fn unit_variant(self) -> Result<()> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        de::Deserializer::deserialize_tuple(self, len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value> {
        de::Deserializer::deserialize_tuple(self, fields.len(), visitor)
    }
}
