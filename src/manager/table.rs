//! Containers in the arena, as raw bytes: the dict's open-addressing hash table and
//! the list's array of entries, each operation one [`Tx`].
//!
//! ## A container's header (data words of its block)
//! | word | dict | list |
//! |------|------|------|
//! | 0 | [`DICT`] | [`LIST`] |
//! | 1, 2 | fingerprints of the key and value types | of the item type, 0 |
//! | 3 | entries | length |
//! | 4 | tombstones | the array's first data word (0: none yet) |
//! | 5 | the table's first data word (0: none yet) | the array's capacity |
//! | 6 | buckets | |
//!
//! A bucket is one word: the top half of the key's hash above the index of its
//! entry's first data word (0 empty, 1 removed). A table fills its block, so its
//! bucket count is any number, and a key's first bucket is its hash scaled to it. An entry holds the key's and value's byte lengths in its
//! first word (32 bits each), then the key's bytes, then the value's, each padded to
//! whole words. A list's array holds one entry per item: its length, then its bytes.
//! Replacing a value writes a new entry and swaps one word, so readers never see half
//! of one.

use super::arena::{packed, words_for, Reader, Tx, HEAP, W_REGISTRY};
use super::ManagerError;

/// A key's and a value's bytes.
pub(crate) type Pair = (Vec<u8>, Vec<u8>);

/// Container tags: what a container header's first word holds.
pub(crate) const DICT: u64 = 0x4449_4354; // "DICT"
pub(crate) const LIST: u64 = 0x4c49_5354; // "LIST"
const HEADER_WORDS: u64 = 7;
const EMPTY: u64 = 0;
const REMOVED: u64 = 1;
/// The largest key or value: lengths are stored in 32 bits.
pub(crate) const MAX_ITEM: usize = u32::MAX as usize;

fn corrupted(what: &'static str) -> ManagerError {
    ManagerError::Corrupted(what)
}

/// The hash of a key's bytes: every word through splitmix64's finalizer, so that
/// keys differing in a few low bits (small integers) spread over the whole table.
pub(crate) fn hash(key: &[u8]) -> u64 {
    packed(key).fold(0x9e37_79b9_7f4a_7c15 ^ key.len() as u64, |h, w| mix(h ^ w))
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A new container of kind `tag` with type fingerprints `types`; returns its id.
pub(crate) fn create(tx: &mut Tx, tag: u64, types: [u64; 2]) -> Result<u64, ManagerError> {
    let c = tx.alloc(HEADER_WORDS)?;
    for (i, w) in [tag, types[0], types[1], 0, 0, 0, 0].into_iter().enumerate() {
        tx.init(c + i as u64, w)?;
    }
    Ok(c)
}

/// Checks that `id` is a container of kind `tag` holding `types`.
pub(crate) fn check(tx: &Reader, id: u64, tag: u64, types: [u64; 2]) -> Result<(), ManagerError> {
    check_kind_only(tx, id, tag)?;
    if [tx.get(id + 1)?, tx.get(id + 2)?] != types {
        return Err(ManagerError::WrongType);
    }
    Ok(())
}

pub(crate) fn check_kind_only(tx: &Reader, id: u64, tag: u64) -> Result<(), ManagerError> {
    if id < HEAP || tx.block_room(id)? < HEADER_WORDS {
        return Err(corrupted("a container id"));
    }
    match tx.get(id)? {
        t if t == tag => Ok(()),
        DICT | LIST => Err(ManagerError::WrongKind),
        _ => Err(corrupted("a container header")),
    }
}

/// The named container `name`, of kind `tag` and types `types`: the one already
/// registered, or a new one registered under that name.
pub(crate) fn named(tx: &mut Tx, name: &str, tag: u64, types: [u64; 2]) -> Result<u64, ManagerError> {
    let mut registry = tx.get(W_REGISTRY)?;
    if registry == 0 {
        registry = create(tx, DICT, [0, 0])?;
        tx.set(W_REGISTRY, registry)?;
    }
    check_kind_only(tx, registry, DICT)?;
    let key = name.as_bytes();
    if let Some(found) = Dict(registry).get(tx, key, hash(key))? {
        let id = <[u8; 8]>::try_from(found.as_slice()).map_err(|_| corrupted("the registry"))?;
        let id = u64::from_le_bytes(id);
        check(tx, id, tag, types)?;
        return Ok(id);
    }
    let id = create(tx, tag, types)?;
    Dict(registry).insert(tx, key, hash(key), &id.to_le_bytes())?;
    Ok(id)
}

/// The bytes a whole-container read may copy out: no more than the arena holds. A
/// consistent container never reaches it; a read racing a writer (its result to be
/// thrown away) or a scribbled one, reading one block again and again, stops here
/// instead of allocating without bound.
struct Budget(usize);

impl Budget {
    fn of(tx: &Reader) -> Budget {
        Budget(tx.capacity())
    }

    fn spend(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>, ManagerError> {
        self.0 = self.0.checked_sub(bytes.len()).ok_or(corrupted("a container larger than its arena"))?;
        Ok(bytes)
    }
}

/// A dict's raw operations; `.0` is its id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dict(pub(crate) u64);

/// Where a key lives, or would go.
struct Probe {
    /// The bucket holding the key, or the first free one on its path.
    bucket: u64,
    /// The key's entry, if present.
    entry: Option<u64>,
}

/// A bucket's word: the key hash's top 32 bits above the entry's index (below 2^32,
/// so an arena holds at most 32 GiB), or [`EMPTY`] or [`REMOVED`].
fn bucket_word(h: u64, entry: u64) -> u64 {
    (h & !0xffff_ffff) | entry
}

fn entry_of(bucket: u64) -> u64 {
    bucket & 0xffff_ffff
}

/// The bucket a probe for hash `h` starts at, among `cap` (any count, not only
/// powers of two: a table fills its block exactly).
/// Only the hash's top half counts: it is all a bucket keeps for rehashing.
fn home(h: u64, cap: u64) -> u64 {
    ((u128::from(h >> 32) * u128::from(cap)) >> 32) as u64
}

impl Dict {
    fn count(self, tx: &Reader) -> Result<u64, ManagerError> {
        tx.get(self.0 + 3)
    }

    pub(crate) fn len(self, tx: &Reader) -> Result<u64, ManagerError> {
        self.count(tx)
    }

    /// The table's first data word and bucket count, checked against its block.
    fn table(self, tx: &Reader) -> Result<(u64, u64), ManagerError> {
        let (table, cap) = (tx.get(self.0 + 5)?, tx.get(self.0 + 6)?);
        if table == 0 {
            return Ok((0, 0));
        }
        // Bounds are what safety needs; a table that overlaps another block is merely
        // wrong, and reading its block's head would cost a cache line per operation.
        if cap == 0 {
            return Err(corrupted("a dict's table"));
        }
        tx.check_range(table, cap)?;
        Ok((table, cap))
    }

    /// An entry's key and value lengths, checked against its block.
    fn lengths(tx: &Reader, entry: u64) -> Result<(u64, u64), ManagerError> {
        let w = tx.get(entry)?;
        let (k, v) = (w & 0xffff_ffff, w >> 32);
        if 1 + words_for(k as usize) + words_for(v as usize) > tx.block_room(entry)? {
            return Err(corrupted("an entry's lengths"));
        }
        Ok((k, v))
    }

    fn probe(self, tx: &Reader, key: &[u8], h: u64) -> Result<Probe, ManagerError> {
        let (table, cap) = self.table(tx)?;
        if cap == 0 {
            return Ok(Probe { bucket: u64::MAX, entry: None });
        }
        let mut free = None;
        let mut i = home(h, cap);
        // Bounded by the table's size: a scribbled table with no empty bucket ends here.
        for _ in 0..cap {
            let bucket = table + i;
            let word = tx.get(bucket)?;
            match entry_of(word) {
                EMPTY => return Ok(Probe { bucket: free.unwrap_or(bucket), entry: None }),
                REMOVED => {
                    free.get_or_insert(bucket);
                }
                entry => {
                    if bucket_word(h, entry) == word {
                        let (k, _) = Self::lengths(tx, entry)?;
                        if k == key.len() as u64 && tx.words_equal(entry + 1, key)? {
                            return Ok(Probe { bucket, entry: Some(entry) });
                        }
                    }
                }
            }
            i = if i + 1 == cap { 0 } else { i + 1 };
        }
        match free {
            Some(bucket) => Ok(Probe { bucket, entry: None }),
            None => Err(corrupted("a dict's table has no free bucket")),
        }
    }

    fn value_of(tx: &Reader, entry: u64) -> Result<Vec<u8>, ManagerError> {
        let (k, v) = Self::lengths(tx, entry)?;
        tx.read_bytes(entry + 1 + words_for(k as usize), v)
    }

    fn key_of(tx: &Reader, entry: u64) -> Result<Vec<u8>, ManagerError> {
        let (k, _) = Self::lengths(tx, entry)?;
        tx.read_bytes(entry + 1, k)
    }

    pub(crate) fn get(self, tx: &Reader, key: &[u8], h: u64) -> Result<Option<Vec<u8>>, ManagerError> {
        match self.probe(tx, key, h)?.entry {
            Some(entry) => Self::value_of(tx, entry).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn contains(self, tx: &Reader, key: &[u8], h: u64) -> Result<bool, ManagerError> {
        Ok(self.probe(tx, key, h)?.entry.is_some())
    }

    fn new_entry(tx: &mut Tx, key: &[u8], value: &[u8]) -> Result<u64, ManagerError> {
        if key.len() > MAX_ITEM || value.len() > MAX_ITEM {
            return Err(ManagerError::TooLarge { len: key.len().max(value.len()) });
        }
        let kw = words_for(key.len());
        let entry = tx.alloc(1 + kw + words_for(value.len()))?;
        if entry > 0xffff_ffff {
            return Err(ManagerError::Full { capacity: tx.capacity() });
        }
        tx.init(entry, key.len() as u64 | ((value.len() as u64) << 32))?;
        tx.init_bytes(entry + 1, key)?;
        tx.init_bytes(entry + 1 + kw, value)?;
        Ok(entry)
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub(crate) fn insert(self, tx: &mut Tx, key: &[u8], h: u64, value: &[u8]) -> Result<Option<Vec<u8>>, ManagerError> {
        let entry = Self::new_entry(tx, key, value)?;
        let probe = self.probe(tx, key, h)?;
        if let Some(old) = probe.entry {
            let previous = Self::value_of(tx, old)?;
            tx.set(probe.bucket, bucket_word(h, entry))?;
            tx.free(old)?;
            return Ok(Some(previous));
        }
        // Growing moves the buckets: then look again.
        let probe = if self.make_room(tx)? { self.probe(tx, key, h)? } else { probe };
        let was_removed = entry_of(tx.get(probe.bucket)?) == REMOVED;
        tx.set(probe.bucket, bucket_word(h, entry))?;
        tx.set(self.0 + 3, self.count(tx)?.saturating_add(1))?;
        if was_removed {
            tx.set(self.0 + 4, tx.get(self.0 + 4)?.saturating_sub(1))?;
        }
        Ok(None)
    }

    /// Grows (or cleans) the table so that one more key keeps it at most 3/4 full;
    /// whether it did.
    fn make_room(self, tx: &mut Tx) -> Result<bool, ManagerError> {
        let (table, cap) = self.table(tx)?;
        let (count, removed) = (self.count(tx)?, tx.get(self.0 + 4)?);
        // Counts come from shared memory: saturating, so that a scribbled one is a
        // table that wants to grow (and then finds it cannot), never an overflow.
        let load = count.saturating_add(removed).saturating_add(1);
        if load.saturating_mul(4) <= cap.saturating_mul(3) {
            return Ok(false);
        }
        let wanted = if count.saturating_add(1).saturating_mul(2) <= cap { cap } else { cap.saturating_mul(2).max(7) };
        let new_table = tx.alloc(wanted)?;
        // The whole block: its size is the next power of two, minus its head.
        let new_cap = tx.block_room(new_table)?;
        for i in 0..new_cap {
            tx.init(new_table + i, EMPTY)?;
        }
        for i in 0..cap {
            let word = tx.get(table + i)?;
            if matches!(entry_of(word), EMPTY | REMOVED) {
                continue;
            }
            let mut j = home(word, new_cap);
            // The new table has more buckets than entries, so an empty one is found
            // within new_cap steps; the bound only guards against a scribbled count.
            let mut placed = false;
            for _ in 0..new_cap {
                if tx.get(new_table + j)? == EMPTY {
                    tx.init(new_table + j, word)?;
                    placed = true;
                    break;
                }
                j = if j + 1 == new_cap { 0 } else { j + 1 };
            }
            if !placed {
                return Err(corrupted("a dict holding more entries than its count"));
            }
        }
        tx.set(self.0 + 5, new_table)?;
        tx.set(self.0 + 6, new_cap)?;
        tx.set(self.0 + 4, 0)?;
        if table != 0 {
            tx.free(table)?;
        }
        Ok(true)
    }

    /// Removes `key`; returns its value.
    pub(crate) fn remove(self, tx: &mut Tx, key: &[u8], h: u64) -> Result<Option<Vec<u8>>, ManagerError> {
        let probe = self.probe(tx, key, h)?;
        let Some(entry) = probe.entry else { return Ok(None) };
        let value = Self::value_of(tx, entry)?;
        tx.set(probe.bucket, REMOVED)?;
        tx.set(self.0 + 3, self.count(tx)?.saturating_sub(1))?;
        tx.set(self.0 + 4, tx.get(self.0 + 4)?.saturating_add(1))?;
        tx.free(entry)?;
        Ok(Some(value))
    }

    /// Every live entry, in table order.
    fn entries(self, tx: &Reader) -> Result<Vec<u64>, ManagerError> {
        let (table, cap) = self.table(tx)?;
        let mut out = Vec::with_capacity(self.count(tx)?.min(cap) as usize);
        for i in 0..cap {
            match entry_of(tx.get(table + i)?) {
                EMPTY | REMOVED => {}
                entry => out.push(entry),
            }
        }
        Ok(out)
    }

    pub(crate) fn keys(self, tx: &Reader) -> Result<Vec<Vec<u8>>, ManagerError> {
        let mut budget = Budget::of(tx);
        self.entries(tx)?.into_iter().map(|e| budget.spend(Self::key_of(tx, e)?)).collect()
    }

    pub(crate) fn values(self, tx: &Reader) -> Result<Vec<Vec<u8>>, ManagerError> {
        let mut budget = Budget::of(tx);
        self.entries(tx)?.into_iter().map(|e| budget.spend(Self::value_of(tx, e)?)).collect()
    }

    pub(crate) fn items(self, tx: &Reader) -> Result<Vec<Pair>, ManagerError> {
        let mut budget = Budget::of(tx);
        self.entries(tx)?
            .into_iter()
            .map(|e| Ok((budget.spend(Self::key_of(tx, e)?)?, budget.spend(Self::value_of(tx, e)?)?)))
            .collect()
    }

    /// Removes every entry, returning their memory to the arena.
    pub(crate) fn clear(self, tx: &mut Tx) -> Result<(), ManagerError> {
        let (table, _) = self.table(tx)?;
        for entry in self.entries(tx)? {
            tx.free(entry)?;
        }
        for (i, w) in [(3, 0), (4, 0), (5, 0), (6, 0)] {
            tx.set(self.0 + i, w)?;
        }
        if table != 0 {
            tx.free(table)?;
        }
        Ok(())
    }
}

/// A list's raw operations; `.0` is its id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct List(pub(crate) u64);

impl List {
    /// Length, array and capacity, checked against the array's block.
    fn parts(self, tx: &Reader) -> Result<(u64, u64, u64), ManagerError> {
        let (len, array, cap) = (tx.get(self.0 + 3)?, tx.get(self.0 + 4)?, tx.get(self.0 + 5)?);
        if array == 0 {
            return if len == 0 { Ok((0, 0, 0)) } else { Err(corrupted("a list's length")) };
        }
        if len > cap || tx.block_room(array)? < cap {
            return Err(corrupted("a list's array"));
        }
        Ok((len, array, cap))
    }

    pub(crate) fn len(self, tx: &Reader) -> Result<u64, ManagerError> {
        Ok(self.parts(tx)?.0)
    }

    fn new_item(tx: &mut Tx, bytes: &[u8]) -> Result<u64, ManagerError> {
        if bytes.len() > MAX_ITEM {
            return Err(ManagerError::TooLarge { len: bytes.len() });
        }
        let item = tx.alloc(1 + words_for(bytes.len()))?;
        tx.init(item, bytes.len() as u64)?;
        tx.init_bytes(item + 1, bytes)?;
        Ok(item)
    }

    fn read_item(tx: &Reader, item: u64) -> Result<Vec<u8>, ManagerError> {
        let n = tx.get(item)?;
        if 1 + n.div_ceil(8) > tx.block_room(item)? {
            return Err(corrupted("a list item's length"));
        }
        tx.read_bytes(item + 1, n)
    }

    /// Appends every item of `items` (one transaction: all or none).
    pub(crate) fn extend<'b>(
        self,
        tx: &mut Tx,
        items: impl ExactSizeIterator<Item = &'b [u8]>,
    ) -> Result<(), ManagerError> {
        let (len, mut array, mut cap) = self.parts(tx)?;
        let new_len = len.checked_add(items.len() as u64).ok_or(corrupted("a list's length"))?;
        if new_len > cap {
            let new_cap = new_len.next_power_of_two().max(4);
            let new_array = tx.alloc(new_cap)?;
            for i in 0..len {
                tx.init(new_array + i, tx.get(array + i)?)?;
            }
            tx.set(self.0 + 4, new_array)?;
            tx.set(self.0 + 5, new_cap)?;
            if array != 0 {
                tx.free(array)?;
            }
            (array, cap) = (new_array, new_cap);
        }
        debug_assert!(new_len <= cap);
        for (i, bytes) in items.enumerate() {
            let item = Self::new_item(tx, bytes)?;
            // Past the length: unread until the length below says otherwise.
            tx.init(array + len + i as u64, item)?;
        }
        tx.set(self.0 + 3, new_len)
    }

    pub(crate) fn pop(self, tx: &mut Tx) -> Result<Option<Vec<u8>>, ManagerError> {
        let (len, array, _) = self.parts(tx)?;
        if len == 0 {
            return Ok(None);
        }
        let item = tx.get(array + len - 1)?;
        let bytes = Self::read_item(tx, item)?;
        tx.set(self.0 + 3, len - 1)?;
        tx.free(item)?;
        Ok(Some(bytes))
    }

    fn slot(self, tx: &Reader, index: u64) -> Result<u64, ManagerError> {
        let (len, array, _) = self.parts(tx)?;
        if index >= len {
            return Err(ManagerError::IndexOutOfRange { index, len });
        }
        Ok(array + index)
    }

    pub(crate) fn get(self, tx: &Reader, index: u64) -> Result<Vec<u8>, ManagerError> {
        let slot = self.slot(tx, index)?;
        Self::read_item(tx, tx.get(slot)?)
    }

    /// Replaces item `index`; returns the old one.
    pub(crate) fn set(self, tx: &mut Tx, index: u64, bytes: &[u8]) -> Result<Vec<u8>, ManagerError> {
        let slot = self.slot(tx, index)?;
        let old = tx.get(slot)?;
        let previous = Self::read_item(tx, old)?;
        let item = Self::new_item(tx, bytes)?;
        tx.set(slot, item)?;
        tx.free(old)?;
        Ok(previous)
    }

    pub(crate) fn to_vec(self, tx: &Reader) -> Result<Vec<Vec<u8>>, ManagerError> {
        let (len, array, _) = self.parts(tx)?;
        let mut budget = Budget::of(tx);
        (0..len).map(|i| budget.spend(Self::read_item(tx, tx.get(array + i)?)?)).collect()
    }

    pub(crate) fn clear(self, tx: &mut Tx) -> Result<(), ManagerError> {
        let (len, array, _) = self.parts(tx)?;
        for i in 0..len {
            tx.free(tx.get(array + i)?)?;
        }
        for (i, w) in [(3, 0), (4, 0), (5, 0)] {
            tx.set(self.0 + i, w)?;
        }
        if array != 0 {
            tx.free(array)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::arena::{Arena, MIN_CAPACITY};
    use crate::segment::Backing;
    use crate::steps;

    fn dict() -> (Arena, Dict) {
        let a = Arena::create(4 * MIN_CAPACITY, Backing::Anonymous).unwrap();
        let mut tx = a.begin().unwrap();
        let d = Dict(create(&mut tx, DICT, [1, 2]).unwrap());
        tx.commit();
        (a, d)
    }

    fn insert(a: &Arena, d: Dict, k: &[u8], v: &[u8]) -> Option<Vec<u8>> {
        let mut tx = a.begin().unwrap();
        let old = d.insert(&mut tx, k, hash(k), v).unwrap();
        tx.commit();
        old
    }

    #[test]
    fn a_dict_holds_what_was_put_through_growth_and_removal() {
        let (a, d) = dict();
        let mut model = std::collections::HashMap::new();
        for i in 0u32..500 {
            let k = i.to_le_bytes().repeat((i % 5) as usize + 1);
            let v = vec![i as u8; (i % 37) as usize];
            assert_eq!(insert(&a, d, &k, &v), model.insert(k.clone(), v));
            if i % 3 == 0 {
                let mut tx = a.begin().unwrap();
                let gone = d.remove(&mut tx, &k, hash(&k)).unwrap();
                tx.commit();
                assert_eq!(gone, model.remove(&k));
            }
        }
        let tx = a.begin().unwrap();
        assert_eq!(d.len(&tx).unwrap(), model.len() as u64);
        for (k, v) in &model {
            assert_eq!(d.get(&tx, k, hash(k)).unwrap().as_ref(), Some(v));
        }
        let mut items = d.items(&tx).unwrap();
        items.sort();
        let mut expected: Vec<_> = model.into_iter().collect();
        expected.sort();
        assert_eq!(items, expected);
    }

    #[test]
    fn clearing_a_dict_returns_its_memory() {
        let (a, d) = dict();
        for round in 0..20u32 {
            for i in 0u32..200 {
                insert(&a, d, &i.to_le_bytes(), &[round as u8; 40]);
            }
            let mut tx = a.begin().unwrap();
            d.clear(&mut tx).unwrap();
            tx.commit();
        }
        // Twenty rounds of 200 entries would not fit without reuse.
        assert!(a.used() < a.capacity() / 2, "used {} of {}", a.used(), a.capacity());
    }

    #[test]
    fn a_failed_insert_leaves_the_dict_as_it_was() {
        let (a, d) = dict();
        insert(&a, d, b"k", b"v");
        let mut tx = a.begin().unwrap();
        let huge = vec![0u8; a.capacity()];
        assert!(matches!(d.insert(&mut tx, b"x", hash(b"x"), &huge), Err(ManagerError::Full { .. })));
        drop(tx);
        let tx = a.begin().unwrap();
        assert_eq!(d.len(&tx).unwrap(), 1);
        assert_eq!(d.get(&tx, b"k", hash(b"k")).unwrap().as_deref(), Some(&b"v"[..]));
    }

    /// A dict's and a list's whole contents, as a model to compare with.
    fn snapshot(a: &Arena, d: Dict, l: List) -> (Vec<Pair>, Vec<Vec<u8>>) {
        let tx = a.begin().unwrap();
        let mut items = d.items(&tx).unwrap();
        items.sort();
        assert_eq!(d.len(&tx).unwrap() as usize, items.len(), "the count and the entries disagree");
        for (k, v) in &items {
            assert_eq!(d.get(&tx, k, hash(k)).unwrap().as_ref(), Some(v), "an entry its key cannot find");
        }
        (items, l.to_vec(&tx).unwrap())
    }

    /// Every operation, with its holder killed at every step it takes (each store,
    /// each log write, the commit), one kill per run: afterwards the containers are
    /// exactly as before the operation, and usable; with no kill, as after it.
    #[test]
    fn a_holder_killed_at_every_step_of_every_operation_changes_nothing() {
        type Op = fn(&mut Tx, Dict, List) -> Result<(), ManagerError>;
        let ops: [(&str, Op); 9] = [
            ("insert a new key", |tx, d, _| d.insert(tx, b"new", hash(b"new"), b"value").map(drop)),
            ("insert that grows the table", |tx, d, _| d.insert(tx, b"k5", hash(b"k5"), b"v").map(drop)),
            ("replace a value", |tx, d, _| d.insert(tx, b"k1", hash(b"k1"), &[9; 40]).map(drop)),
            ("remove a key", |tx, d, _| d.remove(tx, b"k2", hash(b"k2")).map(drop)),
            ("clear a dict", |tx, d, _| d.clear(tx)),
            ("extend a list past its capacity", |tx, _, l| l.extend(tx, [&b"x"[..], b"yy", b"zzz"].into_iter())),
            ("pop", |tx, _, l| l.pop(tx).map(drop)),
            ("set an item", |tx, _, l| l.set(tx, 0, b"replaced").map(drop)),
            ("clear a list", |tx, _, l| l.clear(tx)),
        ];
        let mut kills = 0;
        for (name, op) in ops {
            for step in 0.. {
                let a = Arena::create(MIN_CAPACITY, Backing::Anonymous).unwrap();
                let mut tx = a.begin().unwrap();
                let d = Dict(create(&mut tx, DICT, [1, 2]).unwrap());
                let l = List(create(&mut tx, LIST, [3, 0]).unwrap());
                // 5 keys: the next one grows the table (8 buckets at most 3/4 full).
                for i in 0..5u8 {
                    let k = [b'k', b'0' + i];
                    d.insert(&mut tx, &k, hash(&k), &[i; 12]).unwrap();
                }
                l.extend(&mut tx, [&b"a"[..], b"b", b"c", b"d"].into_iter()).unwrap();
                tx.commit();
                let before = snapshot(&a, d, l);

                let mut tx = a.begin().unwrap();
                let died = steps::die_at("arena:", step);
                let result = op(&mut tx, d, l);
                if result.is_ok() {
                    tx.commit();
                } else {
                    drop(tx);
                }
                let killed = died.get();
                steps::clear();
                let after = snapshot(&a, d, l);
                if !killed {
                    assert!(result.is_ok(), "{name}: {result:?}");
                    assert_ne!(after, before, "{name}: the operation changed nothing");
                    break;
                }
                kills += 1;
                assert_eq!(after, before, "{name}: killed at step {step}, the containers changed");
                // Usable: the same operation now succeeds.
                let mut tx = a.begin().unwrap();
                op(&mut tx, d, l).unwrap_or_else(|e| panic!("{name} after a kill at step {step}: {e}"));
                tx.commit();
            }
        }
        assert!(kills > 100, "only {kills} steps were tried");
    }

    #[test]
    fn a_list_pushes_pops_and_replaces() {
        let a = Arena::create(MIN_CAPACITY, Backing::Anonymous).unwrap();
        let mut tx = a.begin().unwrap();
        let l = List(create(&mut tx, LIST, [3, 0]).unwrap());
        for i in 0u8..10 {
            l.extend(&mut tx, std::iter::once(&[i; 3][..])).unwrap();
        }
        l.extend(&mut tx, [&b"a"[..], b"bc"].into_iter()).unwrap();
        assert_eq!(l.len(&tx).unwrap(), 12);
        assert_eq!(l.set(&mut tx, 0, b"zero").unwrap(), vec![0; 3]);
        assert_eq!(l.get(&tx, 0).unwrap(), b"zero");
        assert_eq!(l.pop(&mut tx).unwrap().as_deref(), Some(&b"bc"[..]));
        assert!(matches!(l.get(&tx, 11), Err(ManagerError::IndexOutOfRange { index: 11, len: 11 })));
        assert_eq!(l.to_vec(&tx).unwrap().len(), 11);
        tx.commit();
    }

    #[test]
    fn named_containers_are_found_again_and_type_checked() {
        let a = Arena::create(MIN_CAPACITY, Backing::Anonymous).unwrap();
        let mut tx = a.begin().unwrap();
        let x = named(&mut tx, "x", DICT, [1, 2]).unwrap();
        assert_eq!(named(&mut tx, "x", DICT, [1, 2]).unwrap(), x);
        assert!(matches!(named(&mut tx, "x", DICT, [1, 3]), Err(ManagerError::WrongType)));
        assert!(matches!(named(&mut tx, "x", LIST, [1, 2]), Err(ManagerError::WrongKind)));
        assert_ne!(named(&mut tx, "y", LIST, [1, 0]).unwrap(), x);
        tx.commit();
    }
}
