//! The operations a proxy asks of its manager, as data: run at once on a local
//! arena, or sent over the network and run by the server on its own.

use serde::{Deserialize, Serialize};

use super::arena::{Arena, Reader};
use super::table::{self, Dict, List, Pair};
use super::ManagerError;

/// Which kind of container an [`Op::Open`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    Dict,
    List,
}

impl Kind {
    pub(crate) fn tag(self) -> u64 {
        match self {
            Kind::Dict => table::DICT,
            Kind::List => table::LIST,
        }
    }
}

/// One request. Keys, values and items are their encoded bytes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    /// A new container (`name: None`) or the named one; replies its id.
    Open {
        kind: Kind,
        name: Option<String>,
        types: [u64; 2],
    },
    /// Checks that `id` is a container of `kind` holding `types`.
    Check {
        id: u64,
        kind: Kind,
        types: [u64; 2],
    },
    Len {
        id: u64,
        kind: Kind,
    },
    Clear {
        id: u64,
        kind: Kind,
    },
    DictGet {
        id: u64,
        key: Vec<u8>,
    },
    DictContains {
        id: u64,
        key: Vec<u8>,
    },
    DictInsert {
        id: u64,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    DictRemove {
        id: u64,
        key: Vec<u8>,
    },
    /// Sets `key` to `new` only if its value is still `expected` (`None`: absent);
    /// replies whether it did, and the value found.
    DictSwap {
        id: u64,
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    },
    DictKeys {
        id: u64,
    },
    DictValues {
        id: u64,
    },
    DictItems {
        id: u64,
    },
    /// `items` holds `count` items, each a 4-byte little-endian length and its
    /// bytes: one buffer, so that a request of many tiny items costs its own size
    /// to decode, not a vector per item.
    ListExtend {
        id: u64,
        count: u64,
        items: Vec<u8>,
    },
    ListPop {
        id: u64,
    },
    ListGet {
        id: u64,
        index: u64,
    },
    ListSet {
        id: u64,
        index: u64,
        item: Vec<u8>,
    },
    ListToVec {
        id: u64,
    },
}

/// One answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Unit,
    Id(u64),
    Len(u64),
    Bool(bool),
    Bytes(Vec<u8>),
    Maybe(Option<Vec<u8>>),
    Many(Vec<Vec<u8>>),
    Pairs(Vec<Pair>),
    Swapped { done: bool, found: Option<Vec<u8>> },
    Failed(WireError),
}

/// A [`ManagerError`] as it crosses the network.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireError {
    ShutDown,
    Full { capacity: u64 },
    TooLarge { len: u64 },
    IndexOutOfRange { index: u64, len: u64 },
    WrongType,
    WrongKind,
    WouldDeadlock,
    Other(String),
}

impl From<ManagerError> for WireError {
    fn from(e: ManagerError) -> WireError {
        match e {
            ManagerError::ShutDown => WireError::ShutDown,
            ManagerError::Full { capacity } => WireError::Full { capacity: capacity as u64 },
            ManagerError::TooLarge { len } => WireError::TooLarge { len: len as u64 },
            ManagerError::IndexOutOfRange { index, len } => WireError::IndexOutOfRange { index, len },
            ManagerError::WrongType => WireError::WrongType,
            ManagerError::WrongKind => WireError::WrongKind,
            ManagerError::WouldDeadlock => WireError::WouldDeadlock,
            other => WireError::Other(other.to_string()),
        }
    }
}

impl From<WireError> for ManagerError {
    fn from(e: WireError) -> ManagerError {
        match e {
            WireError::ShutDown => ManagerError::ShutDown,
            WireError::Full { capacity } => ManagerError::Full { capacity: capacity as usize },
            WireError::TooLarge { len } => ManagerError::TooLarge { len: len as usize },
            WireError::IndexOutOfRange { index, len } => ManagerError::IndexOutOfRange { index, len },
            WireError::WrongType => ManagerError::WrongType,
            WireError::WrongKind => ManagerError::WrongKind,
            WireError::WouldDeadlock => ManagerError::WouldDeadlock,
            WireError::Other(why) => ManagerError::Remote(why),
        }
    }
}

impl Reply {
    fn shape(self, wanted: &str) -> ManagerError {
        match self {
            Reply::Failed(e) => e.into(),
            other => ManagerError::Protocol(format!("expected {wanted}, got {other:?}")),
        }
    }
}

/// `Reply::$name(self)`: the answer if it is the `$variant` expected, else the
/// error it carries (or a protocol error naming what came instead).
macro_rules! expect_reply {
    ($($name:ident: $variant:ident($out:ty) as $what:literal;)*) => {
        impl Reply {
            $(
                pub(crate) fn $name(self) -> Result<$out, ManagerError> {
                    match self {
                        Reply::$variant(v) => Ok(v),
                        other => Err(other.shape($what)),
                    }
                }
            )*
        }
    };
}

expect_reply! {
    id: Id(u64) as "an id";
    len: Len(u64) as "a length";
    bool: Bool(bool) as "a boolean";
    bytes: Bytes(Vec<u8>) as "bytes";
    maybe: Maybe(Option<Vec<u8>>) as "maybe bytes";
    many: Many(Vec<Vec<u8>>) as "a list of bytes";
    pairs: Pairs(Vec<Pair>) as "pairs";
}

impl Reply {
    pub(crate) fn unit(self) -> Result<(), ManagerError> {
        match self {
            Reply::Unit => Ok(()),
            other => Err(other.shape("nothing")),
        }
    }

    pub(crate) fn swapped(self) -> Result<(bool, Option<Vec<u8>>), ManagerError> {
        match self {
            Reply::Swapped { done, found } => Ok((done, found)),
            other => Err(other.shape("a swap")),
        }
    }
}

/// Runs `op` on `arena`: a read without the lock when it only reads (see
/// [`Arena::read`]), else as one transaction.
pub(crate) fn execute(arena: &Arena, op: Op) -> Result<Reply, ManagerError> {
    if op.only_reads() {
        return arena.read(|r| read(r, &op));
    }
    if let Op::DictInsert { id, key, value } = op {
        return dict_insert(arena, id, &key, &value).map(Reply::Maybe);
    }
    let mut tx = arena.begin()?;
    let reply = match op {
        Op::Open { kind, name: None, types } => Reply::Id(table::create(&mut tx, kind.tag(), types)?),
        Op::Open { kind, name: Some(name), types } => Reply::Id(table::named(&mut tx, &name, kind.tag(), types)?),
        Op::Clear { id, kind: Kind::Dict } => {
            dict(&tx, id)?.clear(&mut tx)?;
            Reply::Unit
        }
        Op::Clear { id, kind: Kind::List } => {
            list(&tx, id)?.clear(&mut tx)?;
            Reply::Unit
        }
        Op::DictRemove { id, key } => Reply::Maybe(dict(&tx, id)?.remove(&mut tx, &key, table::hash(&key))?),
        Op::DictSwap { id, key, expected, new } => {
            let d = dict(&tx, id)?;
            let h = table::hash(&key);
            let found = d.get(&tx, &key, h)?;
            if found == expected {
                d.insert(&mut tx, &key, h, &new)?;
                Reply::Swapped { done: true, found }
            } else {
                Reply::Swapped { done: false, found }
            }
        }
        Op::ListExtend { id, count, items } => {
            let items = Packed::check(count, &items)?;
            list(&tx, id)?.extend(&mut tx, items)?;
            Reply::Unit
        }
        Op::ListPop { id } => Reply::Maybe(list(&tx, id)?.pop(&mut tx)?),
        Op::ListSet { id, index, item } => Reply::Bytes(list(&tx, id)?.set(&mut tx, index, &item)?),
        reading => read(&tx, &reading)?,
    };
    tx.commit();
    Ok(reply)
}

/// Items packed for [`Op::ListExtend`].
pub(crate) fn pack_items(items: impl IntoIterator<Item = Vec<u8>>) -> Result<(u64, Vec<u8>), ManagerError> {
    let (mut count, mut out) = (0u64, Vec::new());
    for item in items {
        let len = u32::try_from(item.len()).map_err(|_| ManagerError::TooLarge { len: item.len() })?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&item);
        count += 1;
    }
    Ok((count, out))
}

/// The items of a checked [`Op::ListExtend`] buffer, in order.
#[derive(Debug, Clone)]
pub(crate) struct Packed<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Packed<'a> {
    /// Checks that `bytes` holds exactly `count` items.
    fn check(count: u64, bytes: &'a [u8]) -> Result<Packed<'a>, ManagerError> {
        let bad = || ManagerError::Protocol("a list's packed items do not add up".into());
        let left = usize::try_from(count).map_err(|_| bad())?;
        let mut walk = Packed { rest: bytes, left };
        for _ in 0..left {
            walk.split().ok_or_else(bad)?;
        }
        if !walk.rest.is_empty() {
            return Err(bad());
        }
        Ok(Packed { rest: bytes, left })
    }

    fn split(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.rest.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let (item, rest) = rest.split_at_checked(len)?;
        self.rest = rest;
        Some(item)
    }
}

impl<'a> Iterator for Packed<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.split()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Packed<'_> {}

impl Op {
    /// The container a request names, to check against those its connection opened.
    pub(crate) fn target(&self) -> Option<u64> {
        match self {
            Op::Open { .. } => None,
            Op::Check { id, .. }
            | Op::Len { id, .. }
            | Op::Clear { id, .. }
            | Op::DictGet { id, .. }
            | Op::DictContains { id, .. }
            | Op::DictInsert { id, .. }
            | Op::DictRemove { id, .. }
            | Op::DictSwap { id, .. }
            | Op::DictKeys { id }
            | Op::DictValues { id }
            | Op::DictItems { id }
            | Op::ListExtend { id, .. }
            | Op::ListPop { id }
            | Op::ListGet { id, .. }
            | Op::ListSet { id, .. }
            | Op::ListToVec { id } => Some(*id),
        }
    }

    fn only_reads(&self) -> bool {
        matches!(
            self,
            Op::Check { .. }
                | Op::Len { .. }
                | Op::DictGet { .. }
                | Op::DictContains { .. }
                | Op::DictKeys { .. }
                | Op::DictValues { .. }
                | Op::DictItems { .. }
                | Op::ListGet { .. }
                | Op::ListToVec { .. }
        )
    }
}

/// Runs an operation that only reads.
fn read(r: &Reader, op: &Op) -> Result<Reply, ManagerError> {
    Ok(match op {
        Op::Check { id, kind, types } => {
            table::check(r, *id, kind.tag(), *types)?;
            Reply::Unit
        }
        Op::Len { id, kind: Kind::Dict } => Reply::Len(dict(r, *id)?.len(r)?),
        Op::Len { id, kind: Kind::List } => Reply::Len(list(r, *id)?.len(r)?),
        Op::DictGet { id, key } => Reply::Maybe(dict(r, *id)?.get(r, key, table::hash(key))?),
        Op::DictContains { id, key } => Reply::Bool(dict(r, *id)?.contains(r, key, table::hash(key))?),
        Op::DictKeys { id } => Reply::Many(dict(r, *id)?.keys(r)?),
        Op::DictValues { id } => Reply::Many(dict(r, *id)?.values(r)?),
        Op::DictItems { id } => Reply::Pairs(dict(r, *id)?.items(r)?),
        Op::ListGet { id, index } => Reply::Bytes(list(r, *id)?.get(r, *index)?),
        Op::ListToVec { id } => Reply::Many(list(r, *id)?.to_vec(r)?),
        other => return Err(ManagerError::Protocol(format!("{other:?} changes the manager"))),
    })
}

/// The dict `id`, after checking that it is one. Proxies were checked when made, but
/// a request from the network names any id.
fn dict(tx: &Reader, id: u64) -> Result<Dict, ManagerError> {
    table::check_kind_only(tx, id, table::DICT)?;
    Ok(Dict(id))
}

fn list(tx: &Reader, id: u64) -> Result<List, ManagerError> {
    table::check_kind_only(tx, id, table::LIST)?;
    Ok(List(id))
}

/// What [`update_local`] runs: the old value's bytes in, the new value's bytes and
/// what to return out.
pub(crate) type Updater<'a, R> = dyn FnMut(Option<&[u8]>) -> Result<(Vec<u8>, R), ManagerError> + 'a;

/// Replaces the value under `key` in the dict `id` with what `f` makes of the old
/// one, under the arena's lock; returns what `f` returned beside the new bytes.
pub(crate) fn update_local<R>(arena: &Arena, id: u64, key: &[u8], f: &mut Updater<'_, R>) -> Result<R, ManagerError> {
    let mut tx = arena.begin()?;
    let d = dict(&tx, id)?;
    let h = table::hash(key);
    let old = d.get(&tx, key, h)?;
    let (new, out) = f(old.as_deref())?;
    d.insert(&mut tx, key, h, &new)?;
    tx.commit();
    Ok(out)
}

/// [`Op::DictInsert`] without building one: a local proxy's fast path.
pub(crate) fn dict_insert(arena: &Arena, id: u64, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, ManagerError> {
    let h = table::hash(key);
    let mut tx = arena.begin()?;
    let old = dict(&tx, id)?.insert(&mut tx, key, h, value)?;
    tx.commit();
    Ok(old)
}

/// [`Op::DictGet`] without building one: a local proxy's fast path.
pub(crate) fn dict_get(arena: &Arena, id: u64, key: &[u8]) -> Result<Option<Vec<u8>>, ManagerError> {
    let h = table::hash(key);
    arena.read(|r| dict(r, id)?.get(r, key, h))
}
