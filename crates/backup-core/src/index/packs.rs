//! The packs of an index, numbered in the order added: most of them frozen
//! in a shared list with an order by id (4 bytes a pack besides its id and
//! size, and nothing copied when the index is cloned), the rest in a small
//! map until the next freeze.

use std::collections::HashMap;
use std::sync::Arc;

use crate::id::Id;

#[derive(Debug, Default)]
struct Frozen {
    packs: Vec<(Id, u64)>,
    /// Pack numbers ordered by pack id.
    order: Vec<u32>,
}

/// Packs by number and by id.
#[derive(Debug, Clone, Default)]
pub(super) struct PackList {
    frozen: Arc<Frozen>,
    fresh: Vec<(Id, u64)>,
    /// Numbers of the fresh packs.
    numbers: HashMap<Id, u32>,
}

impl PackList {
    /// A frozen list of `packs`, numbered in order.
    pub(super) fn from_vec(packs: Vec<(Id, u64)>) -> Self {
        let mut order: Vec<u32> = (0..packs.len() as u32).collect();
        order.sort_unstable_by_key(|&n| packs[n as usize].0);
        PackList {
            frozen: Arc::new(Frozen { packs, order }),
            ..PackList::default()
        }
    }

    /// Packs held.
    pub(super) fn len(&self) -> usize {
        self.frozen.packs.len() + self.fresh.len()
    }

    /// The number of pack `id`.
    pub(super) fn number(&self, id: &Id) -> Option<u32> {
        let f = &self.frozen;
        f.order
            .binary_search_by_key(id, |&n| f.packs[n as usize].0)
            .ok()
            .map(|i| f.order[i])
            .or_else(|| self.numbers.get(id).copied())
    }

    /// The number of pack `id`, added with `size` when new.
    pub(super) fn number_or_add(&mut self, id: Id, size: u64) -> u32 {
        if let Some(n) = self.number(&id) {
            return n;
        }
        let n = self.len() as u32;
        self.fresh.push((id, size));
        self.numbers.insert(id, n);
        n
    }

    /// Pack number `n`.
    pub(super) fn get(&self, n: u32) -> Option<&(Id, u64)> {
        let n = n as usize;
        let frozen = self.frozen.packs.len();
        if n < frozen {
            self.frozen.packs.get(n)
        } else {
            self.fresh.get(n - frozen)
        }
    }

    /// Every pack, by number.
    pub(super) fn iter(&self) -> impl Iterator<Item = &(Id, u64)> + '_ {
        self.frozen.packs.iter().chain(&self.fresh)
    }

    /// Moves the fresh packs into the frozen list.
    pub(super) fn freeze(&mut self) {
        if self.fresh.is_empty() {
            return;
        }
        let mut all = Vec::with_capacity(self.len());
        all.extend(self.iter().copied());
        *self = PackList::from_vec(all);
    }
}
