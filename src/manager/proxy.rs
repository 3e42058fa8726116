//! The typed proxies: `Dict<K, V>`, `List<T>` and `Namespace`, thin over the raw
//! operations (encode, one [`Op`], decode), the same for a manager in this machine's
//! shared memory and one reached over the network.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::arena::Arena;
use super::net::Client;
use super::op::{self, Kind, Op};
use super::ManagerError;
use crate::segment::transfer::{self, Segments, SegmentsOf};
use crate::segment::TypeInfo;

/// Where a proxy's container lives.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    /// In shared memory this process maps.
    Local(Arena),
    /// Behind a server, over an authenticated connection.
    Remote(Arc<Client>),
}

impl Backend {
    pub(crate) fn call(&self, op: Op) -> Result<op::Reply, ManagerError> {
        match self {
            Backend::Local(arena) => op::execute(arena, op),
            Backend::Remote(client) => client.call(op),
        }
    }

    /// Serializes the container `id` of this backend: its arena's segment and the id.
    fn serialize_container<S: Serializer>(&self, id: u64, what: &str, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Backend::Local(arena) => (SegmentsOf(&[arena.segment()], what), id).serialize(s),
            Backend::Remote(_) => Err(S::Error::custom(transfer::refuse(format!(
                "`{what}` is a proxy of a manager reached over the network: \
                 connect to it again in the receiving process (Manager::connect)"
            )))),
        }
    }

    /// Rebuilds a serialized container handle, checking that it holds `kind` and `types`.
    fn deserialize_container<'de, D: Deserializer<'de>>(
        d: D,
        kind: Kind,
        types: [u64; 2],
    ) -> Result<(Backend, u64), D::Error> {
        let (Segments([seg]), id) = <(Segments<1>, u64)>::deserialize(d)?;
        let arena = Arena::from_segment(seg).map_err(D::Error::custom)?;
        let backend = Backend::Local(arena);
        backend.call(Op::Check { id, kind, types }).and_then(op::Reply::unit).map_err(D::Error::custom)?;
        Ok((backend, id))
    }
}

/// The fingerprint of `T` recorded in a container: tells a `Dict<u64, String>` from
/// a `Dict<u64, f64>` opened under one name.
fn fingerprint<T>() -> u64 {
    TypeInfo::of_message::<T>().fingerprint
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ManagerError> {
    postcard::to_allocvec(value).map_err(|e| ManagerError::Encode(transfer::encode_failure::<T>(e)))
}

/// Hands `value`'s encoding to `f`: from a buffer on the stack when it fits (most
/// keys and values), else from the heap. The local fast paths use it so that a small
/// `insert` or `get` allocates nothing before taking the lock.
fn with_encoded<T: Serialize, R>(
    value: &T,
    f: impl FnOnce(&[u8]) -> Result<R, ManagerError>,
) -> Result<R, ManagerError> {
    let mut buf = [0u8; 128];
    match postcard::to_slice(value, &mut buf) {
        Ok(bytes) => f(bytes),
        Err(postcard::Error::SerializeBufferFull) => f(&encode(value)?),
        Err(e) => Err(ManagerError::Encode(transfer::encode_failure::<T>(e))),
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ManagerError> {
    postcard::from_bytes(bytes).map_err(|e| ManagerError::Decode(format!("`{}`: {e}", crate::names::type_name::<T>())))
}

fn decode_maybe<T: DeserializeOwned>(bytes: Option<Vec<u8>>) -> Result<Option<T>, ManagerError> {
    bytes.map(|b| decode(&b)).transpose()
}

/// A dict shared through a [`Manager`](crate::Manager) (Python's `manager.dict()`):
/// keys and values of any serde type, stored encoded.
///
/// Every method is one atomic operation on the shared dict. Unlike Python's proxy, a
/// value read with `get` is a copy: change it and `insert` it back, or use
/// [`update`](Dict::update), which reads, changes and writes under one lock, so that
/// `d[k] += 1` from many processes loses no increment.
///
/// ```
/// use shmproc::Manager;
///
/// let m = Manager::start()?;
/// let d = m.dict::<String, u64>()?;
/// d.insert("a".into(), 1)?;
/// d.update("a".into(), |v| v.unwrap_or(0) + 10)?;
/// assert_eq!(d.get(&"a".into())?, Some(11));
/// assert_eq!(d.len()?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A clone is another handle to the same dict; pass one to a child process or a pool
/// worker as (part of) its arguments, or (from a manager with a name, the default)
/// inside a `Queue` or `Pipe` message.
pub struct Dict<K, V> {
    backend: Backend,
    id: u64,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Dict<K, V> {
    fn clone(&self) -> Self {
        Dict { backend: self.backend.clone(), id: self.id, _types: PhantomData }
    }
}

impl<K, V> fmt::Debug for Dict<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dict").field("backend", &self.backend).field("id", &self.id).finish()
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> Dict<K, V> {
    pub(crate) fn types() -> [u64; 2] {
        [fingerprint::<K>(), fingerprint::<V>()]
    }

    pub(crate) fn open(backend: Backend, name: Option<&str>) -> Result<Dict<K, V>, ManagerError> {
        let op = Op::Open { kind: Kind::Dict, name: name.map(str::to_owned), types: Self::types() };
        let id = backend.call(op)?.id()?;
        Ok(Dict { backend, id, _types: PhantomData })
    }

    /// Sets `key` to `value`; returns the value it replaced (Python's `d[key] = value`).
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>, ManagerError> {
        if let Backend::Local(arena) = &self.backend {
            let old = with_encoded(&key, |k| with_encoded(&value, |v| op::dict_insert(arena, self.id, k, v)))?;
            return decode_maybe(old);
        }
        let op = Op::DictInsert { id: self.id, key: encode(&key)?, value: encode(&value)? };
        decode_maybe(self.backend.call(op)?.maybe()?)
    }

    /// A copy of the value under `key` (Python's `d.get(key)`).
    pub fn get(&self, key: &K) -> Result<Option<V>, ManagerError> {
        if let Backend::Local(arena) = &self.backend {
            return decode_maybe(with_encoded(key, |k| op::dict_get(arena, self.id, k))?);
        }
        decode_maybe(self.backend.call(Op::DictGet { id: self.id, key: encode(key)? })?.maybe()?)
    }

    /// Removes `key`; returns its value (Python's `d.pop(key, None)`).
    pub fn remove(&self, key: &K) -> Result<Option<V>, ManagerError> {
        decode_maybe(self.backend.call(Op::DictRemove { id: self.id, key: encode(key)? })?.maybe()?)
    }

    /// Whether `key` is present (Python's `key in d`).
    pub fn contains_key(&self, key: &K) -> Result<bool, ManagerError> {
        self.backend.call(Op::DictContains { id: self.id, key: encode(key)? })?.bool()
    }

    /// The number of entries (Python's `len(d)`).
    pub fn len(&self) -> Result<usize, ManagerError> {
        Ok(self.backend.call(Op::Len { id: self.id, kind: Kind::Dict })?.len()? as usize)
    }

    /// Whether the dict is empty.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }

    /// Every key, in no particular order (Python's `d.keys()`).
    pub fn keys(&self) -> Result<Vec<K>, ManagerError> {
        self.backend.call(Op::DictKeys { id: self.id })?.many()?.iter().map(|k| decode(k)).collect()
    }

    /// Every value, in no particular order (Python's `d.values()`).
    pub fn values(&self) -> Result<Vec<V>, ManagerError> {
        self.backend.call(Op::DictValues { id: self.id })?.many()?.iter().map(|v| decode(v)).collect()
    }

    /// Every entry, in no particular order, read in one step (Python's `d.items()`).
    pub fn items(&self) -> Result<Vec<(K, V)>, ManagerError> {
        let pairs = self.backend.call(Op::DictItems { id: self.id })?.pairs()?;
        pairs.iter().map(|(k, v)| Ok((decode(k)?, decode(v)?))).collect()
    }

    /// Removes every entry (Python's `d.clear()`).
    pub fn clear(&self) -> Result<(), ManagerError> {
        self.backend.call(Op::Clear { id: self.id, kind: Kind::Dict })?.unit()
    }

    /// A private copy of the whole dict, read in one step (Python's `dict(d)`).
    pub fn to_hashmap(&self) -> Result<HashMap<K, V>, ManagerError>
    where
        K: Hash + Eq,
    {
        Ok(self.items()?.into_iter().collect())
    }

    /// Replaces the value under `key` with `f(old)` atomically: no other process
    /// changes the dict between the read and the write, so concurrent updates lose
    /// nothing (Python's `d[k] += 1` is a read and a write, and loses updates).
    /// Returns the new value.
    ///
    /// On a manager in this machine's shared memory, `f` runs once, under the
    /// manager's lock: keep it short. Reading the manager inside it works; changing
    /// it there is [`ManagerError::WouldDeadlock`], not a deadlock. A process
    /// killed while `f` runs changes nothing. Over the network, `f` runs in this
    /// process and the write happens only if the value is still the one `f` saw;
    /// otherwise `f` runs again on the newer value.
    pub fn update(&self, key: K, mut f: impl FnMut(Option<V>) -> V) -> Result<V, ManagerError> {
        let key = encode(&key)?;
        match &self.backend {
            Backend::Local(arena) => op::update_local(arena, self.id, &key, &mut |old| {
                let new = f(decode_maybe(old.map(<[u8]>::to_vec))?);
                Ok((encode(&new)?, new))
            }),
            Backend::Remote(_) => {
                let mut found = self.backend.call(Op::DictGet { id: self.id, key: key.clone() })?.maybe()?;
                loop {
                    let new = f(decode_maybe(found.clone())?);
                    let op = Op::DictSwap { id: self.id, key: key.clone(), expected: found, new: encode(&new)? };
                    let (done, now) = self.backend.call(op)?.swapped()?;
                    if done {
                        return Ok(new);
                    }
                    found = now;
                }
            }
        }
    }

    /// The value under `key`, inserting `default` first if it is absent (Python's
    /// `d.setdefault(key, default)`), in one step.
    pub fn setdefault(&self, key: K, default: V) -> Result<V, ManagerError> {
        let key = encode(&key)?;
        let value = encode(&default)?;
        let op = Op::DictSwap { id: self.id, key, expected: None, new: value };
        match self.backend.call(op)?.swapped()? {
            (true, _) => Ok(default),
            (false, Some(found)) => decode(&found),
            (false, None) => Err(ManagerError::Protocol("a failed swap that found nothing".into())),
        }
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> Serialize for Dict<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.backend.serialize_container(self.id, &crate::names::type_name::<Self>(), s)
    }
}

impl<'de, K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> Deserialize<'de> for Dict<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (backend, id) = Backend::deserialize_container(d, Kind::Dict, Self::types())?;
        Ok(Dict { backend, id, _types: PhantomData })
    }
}

/// A list shared through a [`Manager`](crate::Manager) (Python's `manager.list()`).
///
/// ```
/// let m = shmproc::Manager::start()?;
/// let l = m.list::<String>()?;
/// l.push("a".into())?;
/// l.extend(["b".to_string(), "c".to_string()])?;
/// l.set(0, "A".into())?;
/// assert_eq!(l.to_vec()?, ["A", "b", "c"]);
/// assert_eq!(l.pop()?, Some("c".to_string()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct List<T> {
    backend: Backend,
    id: u64,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for List<T> {
    fn clone(&self) -> Self {
        List { backend: self.backend.clone(), id: self.id, _type: PhantomData }
    }
}

impl<T> fmt::Debug for List<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("List").field("backend", &self.backend).field("id", &self.id).finish()
    }
}

impl<T: Serialize + DeserializeOwned> List<T> {
    fn types() -> [u64; 2] {
        [fingerprint::<T>(), 0]
    }

    pub(crate) fn open(backend: Backend, name: Option<&str>) -> Result<List<T>, ManagerError> {
        let op = Op::Open { kind: Kind::List, name: name.map(str::to_owned), types: Self::types() };
        let id = backend.call(op)?.id()?;
        Ok(List { backend, id, _type: PhantomData })
    }

    /// Appends `item` (Python's `l.append(item)`).
    pub fn push(&self, item: T) -> Result<(), ManagerError> {
        let (count, items) = op::pack_items([encode(&item)?])?;
        self.backend.call(Op::ListExtend { id: self.id, count, items })?.unit()
    }

    /// Appends every item, all in one step (Python's `l.extend(items)`).
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<(), ManagerError> {
        let items = items.into_iter().map(|i| encode(&i)).collect::<Result<Vec<_>, _>>()?;
        let (count, items) = op::pack_items(items)?;
        self.backend.call(Op::ListExtend { id: self.id, count, items })?.unit()
    }

    /// Removes and returns the last item; `None` when empty (Python's `l.pop()`
    /// raises IndexError instead).
    pub fn pop(&self) -> Result<Option<T>, ManagerError> {
        decode_maybe(self.backend.call(Op::ListPop { id: self.id })?.maybe()?)
    }

    /// A copy of item `index` (Python's `l[index]`).
    pub fn get(&self, index: usize) -> Result<T, ManagerError> {
        decode(&self.backend.call(Op::ListGet { id: self.id, index: index as u64 })?.bytes()?)
    }

    /// Replaces item `index`; returns the old one (Python's `l[index] = item`).
    pub fn set(&self, index: usize, item: T) -> Result<T, ManagerError> {
        let op = Op::ListSet { id: self.id, index: index as u64, item: encode(&item)? };
        decode(&self.backend.call(op)?.bytes()?)
    }

    /// The number of items (Python's `len(l)`).
    pub fn len(&self) -> Result<usize, ManagerError> {
        Ok(self.backend.call(Op::Len { id: self.id, kind: Kind::List })?.len()? as usize)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }

    /// Removes every item.
    pub fn clear(&self) -> Result<(), ManagerError> {
        self.backend.call(Op::Clear { id: self.id, kind: Kind::List })?.unit()
    }

    /// A private copy of the whole list, read in one step (Python's `list(l)`).
    pub fn to_vec(&self) -> Result<Vec<T>, ManagerError> {
        self.backend.call(Op::ListToVec { id: self.id })?.many()?.iter().map(|b| decode(b)).collect()
    }
}

impl<T: Serialize + DeserializeOwned> Serialize for List<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.backend.serialize_container(self.id, &crate::names::type_name::<Self>(), s)
    }
}

impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (backend, id) = Backend::deserialize_container(d, Kind::List, Self::types())?;
        Ok(List { backend, id, _type: PhantomData })
    }
}

/// Named fields of any serde types, shared through a [`Manager`](crate::Manager)
/// (Python's `manager.Namespace()`, whose attributes become `set` and `get`).
///
/// Each field remembers its type: reading it as another is
/// [`ManagerError::WrongType`], never a misread.
///
/// ```
/// use shmproc::ManagerError;
///
/// let m = shmproc::Manager::start()?;
/// let ns = m.namespace()?;
/// ns.set("x", &10u32)?;                       // ns.x = 10
/// ns.set("label", &"ready".to_string())?;
/// assert_eq!(ns.get::<u32>("x")?, Some(10));  // ns.x
/// assert_eq!(ns.get::<u32>("missing")?, None);
/// assert!(matches!(ns.get::<String>("x"), Err(ManagerError::WrongType)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Namespace {
    fields: Dict<String, Vec<u8>>,
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Namespace").field("backend", &self.fields.backend).field("id", &self.fields.id).finish()
    }
}

/// The value type a namespace records, apart from any dict's.
struct NamespaceFields;

impl Namespace {
    fn types() -> [u64; 2] {
        [fingerprint::<String>(), fingerprint::<NamespaceFields>()]
    }

    pub(crate) fn open(backend: Backend, name: Option<&str>) -> Result<Namespace, ManagerError> {
        let op = Op::Open { kind: Kind::Dict, name: name.map(str::to_owned), types: Self::types() };
        let id = backend.call(op)?.id()?;
        Ok(Namespace { fields: Dict { backend, id, _types: PhantomData } })
    }

    /// Sets field `name` to `value` (Python's `ns.name = value`).
    pub fn set<T: Serialize>(&self, name: &str, value: &T) -> Result<(), ManagerError> {
        let mut bytes = fingerprint::<T>().to_le_bytes().to_vec();
        bytes.extend(encode(value)?);
        let op = Op::DictInsert { id: self.fields.id, key: encode(&name)?, value: bytes };
        self.fields.backend.call(op)?.maybe().map(drop)
    }

    /// A copy of field `name`, if it is set (Python's `ns.name`).
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ManagerError> {
        let op = Op::DictGet { id: self.fields.id, key: encode(&name)? };
        let Some(bytes) = self.fields.backend.call(op)?.maybe()? else { return Ok(None) };
        let (tag, value) = bytes.split_at_checked(8).ok_or(ManagerError::Decode("a namespace field".into()))?;
        if tag != fingerprint::<T>().to_le_bytes() {
            return Err(ManagerError::WrongType);
        }
        decode(value).map(Some)
    }

    /// Removes field `name`; returns whether it was set (Python's `del ns.name`).
    pub fn remove(&self, name: &str) -> Result<bool, ManagerError> {
        let op = Op::DictRemove { id: self.fields.id, key: encode(&name)? };
        Ok(self.fields.backend.call(op)?.maybe()?.is_some())
    }

    /// The names of the fields set (Python's `vars(ns)`).
    pub fn names(&self) -> Result<Vec<String>, ManagerError> {
        self.fields.keys()
    }
}

impl Serialize for Namespace {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.fields.backend.serialize_container(self.fields.id, "Namespace", s)
    }
}

impl<'de> Deserialize<'de> for Namespace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (backend, id) = Backend::deserialize_container(d, Kind::Dict, Self::types())?;
        Ok(Namespace { fields: Dict { backend, id, _types: PhantomData } })
    }
}
