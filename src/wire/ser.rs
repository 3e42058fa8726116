//! Writing: a serde `Serializer` that appends to a `Vec<u8>`.

use serde::ser::{self, Serialize};

use super::WireError;

type Result<T = ()> = std::result::Result<T, WireError>;

/// Appends `value`'s encoding to `out`; on failure `out` is as it was and the error
/// names the type and says why (a shared object's refusal keeps its own words).
pub(crate) fn append<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> std::result::Result<(), String> {
    let mark = out.len();
    value.serialize(&mut Encoder { out }).map_err(|e| {
        out.truncate(mark);
        // The refusal came to us as the error's message: forget the copy kept for
        // formats that drop it.
        let _ = crate::segment::transfer::take_refusal();
        format!("`{}`: {e}", crate::names::type_name::<T>())
    })
}

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
}

impl Encoder<'_> {
    #[inline]
    fn put<const N: usize>(&mut self, bytes: [u8; N]) -> Result {
        self.out.extend_from_slice(&bytes);
        Ok(())
    }

    #[inline]
    fn len(&mut self, n: usize) -> Result {
        self.put((n as u64).to_le_bytes())
    }
}

/// Starts a sequence or map: its count now if known, else a place for it, filled
/// in by [`Compound::end`].
fn begin<'e, 'a>(enc: &'e mut Encoder<'a>, len: Option<usize>) -> Result<Compound<'e, 'a>> {
    let at = enc.out.len();
    enc.len(len.unwrap_or(0))?;
    Ok(Compound { at, declared: len, count: 0, enc })
}

/// Starts a variant with fields: its index, then the fields one after another.
fn variant<'e, 'a>(enc: &'e mut Encoder<'a>, index: u32) -> Result<&'e mut Encoder<'a>> {
    enc.put(index.to_le_bytes())?;
    Ok(enc)
}

/// A sequence or map being written; counts its elements when the count was not
/// known at the start.
struct Compound<'e, 'a> {
    enc: &'e mut Encoder<'a>,
    /// Where the count is written.
    at: usize,
    /// The count written there at the start, if it was known; else it is
    /// written at the end.
    declared: Option<usize>,
    count: u64,
}

impl Compound<'_, '_> {
    #[inline]
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        self.count += 1;
        value.serialize(&mut *self.enc)
    }

    fn end(self) -> Result {
        match self.declared {
            None => {
                self.enc.out[self.at..self.at + 8].copy_from_slice(&self.count.to_le_bytes());
                Ok(())
            }
            Some(n) if n as u64 != self.count => {
                Err(WireError(format!("a sequence declared {n} elements and wrote {}", self.count)))
            }
            Some(_) => Ok(()),
        }
    }
}

impl<'e, 'a> ser::Serializer for &'e mut Encoder<'a> {
    type Ok = ();
    type Error = WireError;
    type SerializeSeq = Compound<'e, 'a>;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Compound<'e, 'a>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn is_human_readable(&self) -> bool {
        false
    }

    #[inline]
    fn serialize_bool(self, v: bool) -> Result {
        self.put([u8::from(v)])
    }
    #[inline]
    fn serialize_i8(self, v: i8) -> Result {
        self.put(v.to_le_bytes())
    }
    #[inline]
    fn serialize_i16(self, v: i16) -> Result {
        self.put(v.to_le_bytes())
    }
    #[inline]
    fn serialize_i32(self, v: i32) -> Result {
        self.put(v.to_le_bytes())
    }
    #[inline]
    fn serialize_i64(self, v: i64) -> Result {
        self.put(v.to_le_bytes())
    }
    #[inline]
    fn serialize_i128(self, v: i128) -> Result {
        self.put(v.to_le_bytes())
    }
    #[inline]
    fn serialize_u8(self, v: u8) -> Result {
        self.put([v])
    }
    #[inline]
    fn serialize_u16(self, v: u16) -> Result {
        self.put(v.to_le_bytes())
    }
    #[inline]
    fn serialize_u32(self, v: u32) -> Result {
        self.put(v.to_le_bytes())
    }
    #[inline]
    fn serialize_u64(self, v: u64) -> Result {
        self.put(v.to_le_bytes())
    }
    #[inline]
    fn serialize_u128(self, v: u128) -> Result {
        self.put(v.to_le_bytes())
    }
    #[inline]
    fn serialize_f32(self, v: f32) -> Result {
        self.put(v.to_le_bytes())
    }
    #[inline]
    fn serialize_f64(self, v: f64) -> Result {
        self.put(v.to_le_bytes())
    }
    #[inline]
    fn serialize_char(self, v: char) -> Result {
        self.put(u32::from(v).to_le_bytes())
    }
    fn serialize_str(self, v: &str) -> Result {
        self.serialize_bytes(v.as_bytes())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result {
        self.len(v.len())?;
        self.out.extend_from_slice(v);
        Ok(())
    }
    fn serialize_none(self) -> Result {
        self.put([0])
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result {
        self.put([1])?;
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result {
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result {
        Ok(())
    }
    fn serialize_unit_variant(self, _name: &'static str, index: u32, _variant: &'static str) -> Result {
        self.put(index.to_le_bytes())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _name: &'static str, value: &T) -> Result {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result {
        self.put(index.to_le_bytes())?;
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Compound<'e, 'a>> {
        begin(self, len)
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self> {
        variant(self, index)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Compound<'e, 'a>> {
        begin(self, len)
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self> {
        variant(self, index)
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = WireError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        self.element(value)
    }
    fn end(self) -> Result {
        Compound::end(self)
    }
}

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = WireError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result {
        self.element(key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        // The key counted the entry.
        value.serialize(&mut *self.enc)
    }
    fn end(self) -> Result {
        Compound::end(self)
    }
}

/// Tuples, structs and their variants: the fields one after another.
macro_rules! fields {
    ($($trait:ident :: $method:ident ($($key:ident)?)),+) => {$(
        impl ser::$trait for &mut Encoder<'_> {
            type Ok = ();
            type Error = WireError;
            fn $method<T: Serialize + ?Sized>(&mut self, $($key: &'static str,)? value: &T) -> Result {
                $(let _ = $key;)?
                value.serialize(&mut **self)
            }
            fn end(self) -> Result {
                Ok(())
            }
        }
    )+};
}

fields!(
    SerializeTuple::serialize_element(),
    SerializeTupleStruct::serialize_field(),
    SerializeTupleVariant::serialize_field(),
    SerializeStruct::serialize_field(key),
    SerializeStructVariant::serialize_field(key)
);
