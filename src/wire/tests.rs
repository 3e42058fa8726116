use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::de::take_from_bytes;
use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Dot,
    Circle(f64),
    Rect(u32, u32),
    Named { name: String, sides: u8 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Everything {
    flag: bool,
    small: (i8, u8, i16, u16),
    words: (i32, u32, i64, u64),
    wide: (i128, u128),
    real: (f32, f64),
    letter: char,
    text: String,
    #[serde(with = "serde_bytes_like")]
    raw: Vec<u8>,
    maybe: Option<Box<Everything>>,
    shapes: Vec<Shape>,
    table: BTreeMap<String, Vec<u16>>,
    unit: (),
    newtype: Meters,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Meters(u64);

/// `Vec<u8>` through `serialize_bytes` / `deserialize_byte_buf`.
mod serde_bytes_like {
    pub(super) fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
        }
        d.deserialize_byte_buf(V)
    }
}

fn sample() -> Everything {
    let inner = Everything {
        flag: false,
        small: (-1, 2, -3, 4),
        words: (-5, 6, i64::MIN, u64::MAX),
        wide: (i128::MIN, u128::MAX),
        real: (1.5, -0.0),
        letter: 'é',
        text: String::new(),
        raw: vec![],
        maybe: None,
        shapes: vec![],
        table: BTreeMap::new(),
        unit: (),
        newtype: Meters(0),
    };
    Everything {
        flag: true,
        text: "héllo, wörld".into(),
        raw: vec![0, 1, 2, 255],
        maybe: Some(Box::new(inner.clone())),
        shapes: vec![Shape::Dot, Shape::Circle(2.5), Shape::Rect(3, 4), Shape::Named { name: "tri".into(), sides: 3 }],
        table: [("a".to_string(), vec![1, 2]), ("b".to_string(), vec![])].into_iter().collect(),
        newtype: Meters(42),
        ..inner
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    append(value, &mut out).unwrap();
    out
}

#[test]
fn every_kind_of_value_round_trips() {
    let value = sample();
    let bytes = encode(&value);
    assert_eq!(from_bytes::<Everything>(&bytes), Ok(value));
}

#[test]
fn integers_are_their_little_endian_bytes() {
    assert_eq!(encode(&0x0102_0304_0506_0708u64), [8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(encode(&(-2i16, true, 'A')), [0xfe, 0xff, 1, 0x41, 0, 0, 0]);
    assert_eq!(encode("hi"), [2, 0, 0, 0, 0, 0, 0, 0, b'h', b'i']);
    assert_eq!(encode(&Some(7u8)), [1, 7]);
    assert_eq!(encode(&Shape::Rect(1, 2)), [2, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]);
}

#[test]
fn a_sequence_of_unknown_length_is_counted_as_it_is_written() {
    /// Writes its items through `serialize_seq(None)`, as a filtered iterator would.
    struct Unsized(Vec<u32>);
    impl Serialize for Unsized {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter().filter(|_| true))
        }
    }
    let bytes = encode(&(Unsized(vec![5, 6, 7]), 9u8));
    assert_eq!(from_bytes::<(Vec<u32>, u8)>(&bytes), Ok((vec![5, 6, 7], 9)));
}

#[test]
fn several_values_are_read_one_after_another() {
    let mut bytes = encode(&1u64);
    append("two", &mut bytes).unwrap();
    let (one, rest) = take_from_bytes::<u64>(&bytes).unwrap();
    assert_eq!(one, 1);
    assert_eq!(from_bytes::<String>(rest), Ok("two".to_string()));
    assert!(from_bytes::<u64>(&bytes).unwrap_err().0.contains("left over"));
}

#[test]
fn a_failed_write_leaves_the_buffer_as_it_was() {
    struct Refuses;
    impl Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("not here"))
        }
    }
    let mut out = vec![9, 9];
    let e = append(&(1u64, Refuses), &mut out).unwrap_err();
    assert_eq!(out, [9, 9]);
    assert!(e.contains("not here"), "{e}");
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = encode(&sample());
    for cut in 0..bytes.len() {
        assert!(from_bytes::<Everything>(&bytes[..cut]).is_err(), "cut at {cut} of {}", bytes.len());
    }
}

#[test]
fn invalid_bytes_are_errors() {
    assert!(from_bytes::<bool>(&[7]).unwrap_err().0.contains("bool"));
    assert!(from_bytes::<Option<u8>>(&[2, 0]).is_err());
    assert!(from_bytes::<char>(&0xd800u32.to_le_bytes()).is_err());
    let mut not_utf8 = encode(&2u64);
    not_utf8.extend_from_slice(&[0xff, 0xfe]);
    assert!(from_bytes::<String>(&not_utf8).unwrap_err().0.contains("UTF-8"));
    assert!(from_bytes::<Shape>(&9u32.to_le_bytes()).is_err());
    // A length past the end, and one past any machine's memory.
    assert!(from_bytes::<Vec<u8>>(&encode(&10u64)).is_err());
    assert!(from_bytes::<Vec<u64>>(&encode(&u64::MAX)).is_err());
    assert!(from_bytes::<String>(&encode(&u64::MAX)).is_err());
}

#[test]
fn a_damaged_count_of_empty_elements_ends_in_an_error_not_a_loop() {
    let t = std::time::Instant::now();
    let e = from_bytes::<Vec<()>>(&encode(&u64::MAX)).unwrap_err();
    assert!(e.0.contains("more elements"), "{e}");
    assert!(t.elapsed() < std::time::Duration::from_secs(if cfg!(miri) { 3600 } else { 30 }));
    // Within the budget, empty elements are fine.
    assert_eq!(from_bytes::<Vec<()>>(&encode(&1000u64)), Ok(vec![(); 1000]));
}

#[test]
fn types_that_describe_themselves_are_refused_not_misread() {
    #[derive(Debug, Deserialize)]
    #[serde(untagged)]
    #[allow(dead_code)]
    enum Either {
        A(u64),
        B(String),
    }
    assert!(from_bytes::<Either>(&encode(&1u64)).unwrap_err().0.contains("describe"));
}

#[test]
fn random_damage_never_panics() {
    let clean = encode(&sample());
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for _ in 0..if cfg!(miri) { 20 } else { 20_000 } {
        let mut bytes = clean.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % bytes.len();
            bytes[at] = next() as u8;
        }
        // Either a value or an error; the point is that it returns.
        let _ = from_bytes::<Everything>(&bytes);
    }
}

#[test]
fn a_value_nested_too_deep_is_an_error_not_a_stack_overflow() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Chain {
        End,
        Link(Box<Chain>),
    }
    fn chain(n: u32) -> Chain {
        (0..n).fold(Chain::End, |c, _| Chain::Link(Box::new(c)))
    }
    let ok = chain(MAX_DEPTH / 2 - 1);
    assert_eq!(from_bytes::<Chain>(&encode(&ok)), Ok(ok));
    // Damaged bytes that claim a million links: each is 4 bytes, nothing more.
    let deep: Vec<u8> = std::iter::repeat_n(1u32.to_le_bytes(), 1_000_000).flatten().collect();
    let e = from_bytes::<Chain>(&deep).unwrap_err();
    assert!(e.0.contains("nested"), "{e}");
}

#[test]
fn a_sequence_that_writes_other_than_it_declared_is_refused() {
    /// Declares three elements and writes two.
    struct Short;
    impl Serialize for Short {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            let mut seq = s.serialize_seq(Some(3))?;
            seq.serialize_element(&1u8)?;
            seq.serialize_element(&2u8)?;
            seq.end()
        }
    }
    let mut out = Vec::new();
    let e = append(&Short, &mut out).unwrap_err();
    assert!(e.contains("declared 3") && out.is_empty(), "{e}");
}
