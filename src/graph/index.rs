//! The graph's own hash ([`FastHasher`]) and the index of node ids to
//! positions that keeps no copy of the ids ([`IdIndex`]).

use std::collections::{HashMap, HashSet};

/// FxHash (multiply and rotate) with a final mix: a fast hash for the
/// graph's own maps,
/// keyed by node positions and ids. Not resistant to chosen collisions,
/// which is fine for keys the workflow itself chose.
#[derive(Clone, Copy, Default)]
pub(crate) struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl std::hash::Hasher for FastHasher {
    /// Mixed once more (splitmix64's finaliser): the table takes its
    /// bucket from the low bits, which the multiply alone leaves equal for
    /// keys that differ only in their high bytes (`n1`, `n2`, …).
    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let mut last = [0u8; 8];
        let rest = chunks.remainder();
        last[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 56));
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(n as u64);
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(n as u64);
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn write_isize(&mut self, n: isize) {
        self.add(n as u64);
    }
}

pub(super) type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;
pub(super) type FastSet<K> = HashSet<K, std::hash::BuildHasherDefault<FastHasher>>;

/// Node ids to positions without a copy of the ids: keyed by each id's
/// 64-bit hash, a hit checked against the id where it is kept (a graph's
/// node, a batch's mutation, a workflow's registration), so the table
/// holds 16 bytes an id instead of a second `String`. An id whose hash an
/// earlier id has already is kept with its text in `clash`.
///
/// Ids are inserted once each (callers refuse duplicates first).
#[derive(Clone, Debug, Default)]
pub(crate) struct IdIndex {
    by_hash: FastMap<u64, usize>,
    clash: FastMap<String, usize>,
}

impl IdIndex {
    fn hash(id: &str) -> u64 {
        let mut h = FastHasher::default();
        std::hash::Hasher::write(&mut h, id.as_bytes());
        std::hash::Hasher::finish(&h)
    }

    /// The position of `id`; `id_at(i)` is the id kept at position `i`.
    #[inline]
    pub(crate) fn get<'a>(&self, id: &str, id_at: impl Fn(usize) -> &'a str) -> Option<usize> {
        match self.by_hash.get(&Self::hash(id)) {
            Some(&i) if id_at(i) == id => Some(i),
            Some(_) => self.clash.get(id).copied(),
            None => None,
        }
    }

    /// Records `id` at position `i`; `id` must not be in the index yet.
    pub(crate) fn insert(&mut self, id: &str, i: usize) {
        match self.by_hash.entry(Self::hash(id)) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(i);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.clash.insert(id.to_string(), i);
            }
        }
    }

    /// Room for `n` more ids.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.by_hash.reserve(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_index_finds_ids_kept_elsewhere_and_clashing_hashes() {
        let ids = ["a", "b", "n1", "n2"];
        let at = |i: usize| ids[i];
        let mut index = IdIndex::default();
        index.insert("a", 0);
        // `b` as if its hash were `a`'s: the table points at `a`, so `b`
        // is kept with its text.
        index.by_hash.insert(IdIndex::hash("b"), 0);
        index.insert("b", 1);
        index.insert("n1", 2);
        index.insert("n2", 3);
        assert_eq!(index.get("a", at), Some(0));
        assert_eq!(index.get("b", at), Some(1));
        assert_eq!(index.get("n1", at), Some(2));
        assert_eq!(index.get("n2", at), Some(3));
        assert_eq!(index.get("n3", at), None);
        assert_eq!(index.get("", at), None);
        assert_eq!(index.clash.len(), 1, "only the clashing id is copied");
    }
}
