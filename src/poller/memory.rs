//! What the poller remembers of each agent of one API between cycles: the
//! agents of the current host lists in dense tables, found by query key.
//!
//! Owns the slot of each key, the last status observation and the last info
//! of each agent, and forgetting agents that no group lists any more. It never
//! talks to GSE and never builds snapshots: the poller does both.
//!
//! A slot costs a 4-byte entry in the index plus one element in each table,
//! where a map per kind of knowledge cost a bucket of a key and a value in
//! each (about 230 bytes an agent at a million agents).

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use super::record::{AgentInfo, Observation};
use crate::model::Key;

/// Dense tables of what is known per agent of one API.
#[derive(Debug, Default)]
pub(super) struct Memory {
    /// Slot numbers, hashed by their key.
    index: HashTable<u32>,
    /// The query key of each slot (the host entry's string, shared).
    keys: Vec<Key>,
    /// The last answer of the status call per slot; `None` until GSE answered.
    pub(crate) observed: Vec<Option<Observation>>,
    /// The last info per slot; `None` until fetched.
    pub(crate) info: Vec<Option<AgentInfo>>,
}

fn hash(key: &Key) -> u64 {
    FxBuildHasher.hash_one(key)
}

impl Memory {
    /// Agents remembered.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The query key of a slot.
    pub(crate) fn key(&self, slot: u32) -> &Key {
        &self.keys[slot as usize]
    }

    /// The slot of a key, if it has one.
    #[cfg(test)]
    pub(crate) fn find(&self, key: &str) -> Option<u32> {
        let (keys, key) = (&self.keys, Key::new(key));
        self.index
            .find(hash(&key), |&slot| keys[slot as usize] == key)
            .copied()
    }

    /// The slot of a key, given a new empty one when the key is new.
    pub(crate) fn slot(&mut self, key: &Key) -> u32 {
        let Memory {
            index,
            keys,
            observed,
            info,
            ..
        } = self;
        let entry = index.entry(
            hash(key),
            |&slot| keys[slot as usize] == *key,
            |&slot| hash(&keys[slot as usize]),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(found) => *found.get(),
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                let slot = u32::try_from(keys.len()).expect("fewer than 2^32 agents");
                vacant.insert(slot);
                keys.push(key.clone());
                observed.push(None);
                info.push(None);
                slot
            }
        }
    }

    /// Room for `additional` more agents, so a first cycle over a large
    /// list does not grow (and rehash) the tables an agent at a time.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let keys = &self.keys;
        self.index
            .reserve(additional, |&slot| hash(&keys[slot as usize]));
        self.keys.reserve(additional);
        self.observed.reserve(additional);
        self.info.reserve(additional);
    }

    /// Gives the tables their length back after a cycle that had taken one
    /// out was dropped half-way (what that table held is forgotten); a no-op
    /// otherwise.
    pub(crate) fn restore_tables(&mut self) {
        self.observed.resize(self.keys.len(), None);
        self.info.resize(self.keys.len(), None);
    }

    /// Keeps the slots marked in `keep` (one flag per slot) and forgets the
    /// rest; returns each old slot's new number (`None` for a forgotten one).
    pub(crate) fn retain(&mut self, keep: &[bool]) -> Vec<Option<u32>> {
        let mut renumbered = Vec::with_capacity(keep.len());
        let mut next = 0u32;
        for &kept in keep {
            renumbered.push(kept.then(|| {
                next += 1;
                next - 1
            }));
        }
        retain_marked(&mut self.keys, keep);
        retain_marked(&mut self.observed, keep);
        retain_marked(&mut self.info, keep);
        self.rebuild_index();
        renumbered
    }

    fn rebuild_index(&mut self) {
        let keys = &self.keys;
        self.index = HashTable::with_capacity(keys.len());
        for (slot, key) in keys.iter().enumerate() {
            self.index
                .insert_unique(hash(key), slot as u32, |&s| hash(&keys[s as usize]));
        }
        self.shrink();
    }

    /// Gives back the room the tables grew into beyond their length (they
    /// grow by doubling, which at a million agents is a lot of room).
    pub(crate) fn shrink(&mut self) {
        let keys = &self.keys;
        self.index.shrink_to_fit(|&slot| hash(&keys[slot as usize]));
        self.keys.shrink_to_fit();
        self.observed.shrink_to_fit();
        self.info.shrink_to_fit();
    }
}

/// Keeps the elements whose flag in `keep` is set (unflagged ones go).
fn retain_marked<T>(table: &mut Vec<T>, keep: &[bool]) {
    let mut flags = keep.iter();
    table.retain(|_| flags.next().copied().unwrap_or(false));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_stable_until_forgotten_and_renumbered_in_order() {
        let mut memory = Memory::default();
        let keys: Vec<Key> = ["a", "b", "c", "d"].map(Key::new).to_vec();
        let slots: Vec<u32> = keys.iter().map(|k| memory.slot(k)).collect();
        assert_eq!(slots, [0, 1, 2, 3]);
        assert_eq!(memory.slot(&keys[2]), 2);
        assert_eq!(memory.find("d"), Some(3));
        assert_eq!(memory.find("e"), None);

        let renumbered = memory.retain(&[true, false, true, false]);
        assert_eq!(renumbered, [Some(0), None, Some(1), None]);
        assert_eq!(memory.len(), 2);
        assert_eq!(memory.key(1).to_string(), "c");
        assert_eq!(memory.find("c"), Some(1));
        assert_eq!(memory.find("b"), None);
        assert_eq!(memory.slot(&Key::new("e")), 2);
    }

    #[test]
    fn tables_taken_by_a_dropped_cycle_get_their_length_back() {
        let mut memory = Memory::default();
        memory.slot(&Key::new("a"));
        memory.slot(&Key::new("b"));
        drop(std::mem::take(&mut memory.observed));
        memory.restore_tables();
        assert_eq!(memory.observed.len(), 2);
        assert_eq!(memory.info.len(), 2);
    }

    #[test]
    fn what_is_kept_per_agent_stays_small() {
        // A million agents keep one of each: every byte here is a megabyte.
        assert!(size_of::<Option<Observation>>() <= 40);
        assert!(size_of::<Option<AgentInfo>>() <= 40);
        // A host entry holds its key in place (24 bytes) and the memory a
        // copy of it: an agent id costs no allocation (it cost 16 + 16 + 48).
        assert!(size_of::<crate::model::HostEntry>() <= 48);
        assert!(size_of::<u32>() + size_of::<Key>() <= 28);
    }
}
