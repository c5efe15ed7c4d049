//! An item's stock ledger in time order, and its valuation.
//!
//! Every movement line becomes one or more [`Entry`]s in its item's journal, ordered by
//! `(effective time, seq)`: `seq` is the item's arrival counter, so entries at the same
//! instant keep the order they were posted in and every entry has one place. The journal is
//! stored in chunks of a few hundred entries (`journal/{item}/{chunk}`); the item's [`Head`]
//! lists them in order with their first and last keys, and holds the valuation at the end.
//!
//! Nothing derived is stored per entry except its cost (`c`, the change in stock value it
//! made), so a back-dated entry moves no running balance: it is inserted in its chunk, and the
//! costs from there on are worked out again ([`Journal::revalue`]), each chunk starting from
//! the valuation its `start` holds. Only quantities decide whether a movement is allowed; the
//! costs follow them, inline for a short tail and in a chunked task for a long one, with the
//! earliest stale point kept in `Head::dirty_from` so a resumed or restarted revaluation never
//! skips an entry.

use crate::num::{Money, Qty};
use keel_sdk::Error;
use serde::{Deserialize, Serialize};
use std::collections::btree_map::Entry as Slot;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// `(effective time in ms, seq)`: an entry's place in its item's journal.
pub type Key = (i64, u64);

/// Entries a chunk holds at most when filled by appends; one grown past twice this by
/// back-dated inserts is split in two.
pub const CHUNK: usize = 400;
/// A FIFO start with more layers than this is stored in full only every [`CHECKPOINT_EVERY`]
/// chunks; the others keep quantity and value and work their layers out from the last full
/// one (so an item with thousands of layers does not copy them into every chunk).
pub const CHECKPOINT_LAYERS: usize = 16;
pub const CHECKPOINT_EVERY: usize = 16;
/// Appends go to a small last chunk (the tail) of up to this many entries; a full tail is
/// merged into the chunk before it while that has room. A posting then rewrites a few
/// entries, and a full chunk only once every [`TAIL`] postings, not 400 entries each time.
pub const TAIL: usize = 40;
/// FIFO layers kept per item. Receipts at the same unit cost share a layer; past this many
/// distinct costs in stock, the two oldest layers are merged (valued at their average), so an
/// item's valuation stays a bounded document.
pub const MAX_LAYERS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "r")]
    Receipt,
    #[serde(rename = "i")]
    Issue,
    #[serde(rename = "a")]
    Adjustment,
    /// A transfer's two sides move quantity between places and no value.
    #[serde(rename = "o")]
    TransferOut,
    #[serde(rename = "n")]
    TransferIn,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Receipt => "receipt",
            Kind::Issue => "issue",
            Kind::Adjustment => "adjustment",
            Kind::TransferOut => "transfer-out",
            Kind::TransferIn => "transfer-in",
        }
    }

    fn valued(self) -> bool {
        !matches!(self, Kind::TransferOut | Kind::TransferIn)
    }
}

/// One line of an item's journal. Stored as a JSON array (a journal holds many of them, and
/// a revaluation reads and writes them all): `[s, t, m, k, l, o, q, u, c]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "EntryRow", from = "EntryRow")]
pub struct Entry {
    /// Seq: the item's arrival counter.
    pub s: u64,
    /// Effective time, ms since the epoch.
    pub t: i64,
    /// The movement's number.
    pub m: u64,
    pub k: Kind,
    /// Location.
    pub l: String,
    /// Lot or serial number.
    pub o: Option<String>,
    /// Quantity in the base unit, signed: in is positive.
    pub q: Qty,
    /// The value of what came in, when the movement gave its cost (quantity as entered ×
    /// unit cost as entered: exact in any unit).
    pub u: Option<Money>,
    /// The change in stock value this entry made (negative for what went out): its cost.
    pub c: Money,
}

#[derive(Serialize, Deserialize)]
struct EntryRow(u64, i64, u64, Kind, String, Option<String>, Qty, Option<Money>, Money);

impl From<Entry> for EntryRow {
    fn from(e: Entry) -> EntryRow {
        EntryRow(e.s, e.t, e.m, e.k, e.l, e.o, e.q, e.u, e.c)
    }
}

impl From<EntryRow> for Entry {
    fn from(r: EntryRow) -> Entry {
        Entry { s: r.0, t: r.1, m: r.2, k: r.3, l: r.4, o: r.5, q: r.6, u: r.7, c: r.8 }
    }
}

impl Entry {
    pub fn key(&self) -> Key {
        (self.t, self.s)
    }

    pub fn in_bucket(&self, location: &str, lot: Option<&str>) -> bool {
        self.l == location && self.o.as_deref() == lot
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Moving average: what goes out costs the average of what is there.
    Average,
    /// First in, first out: what goes out costs the oldest receipts still there (layers).
    Fifo,
}

/// A FIFO cost layer: what is left of one receipt.
/// Stored as `[q, v]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "(Qty, Money)", from = "(Qty, Money)")]
pub struct Layer {
    pub q: Qty,
    pub v: Money,
}

/// An item's stock and its value at one point of its journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Valuation {
    pub qty: Qty,
    pub value: Money,
    /// FIFO only: the receipts still in stock, oldest first.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub layers: VecDeque<Layer>,
    /// The last unit cost known: what an inflow without a cost is valued at when nothing is
    /// in stock to take an average from.
    #[serde(default)]
    pub rate: Money,
}

impl Valuation {
    /// The value of what is in stock per unit (the last known one when nothing is).
    pub fn unit_cost(&self) -> Money {
        if self.qty.0 > 0 { self.value.per(self.qty) } else { self.rate }
    }

    fn push_layer(&mut self, layer: Layer) {
        if let Some(last) = self.layers.back_mut()
            && i128::from(last.v.0) * i128::from(layer.q.0) == i128::from(layer.v.0) * i128::from(last.q.0)
        {
            last.q += layer.q;
            last.v += layer.v;
            return;
        }
        self.layers.push_back(layer);
        if self.layers.len() > MAX_LAYERS {
            let oldest = self.layers.pop_front().expect("more than the cap");
            let next = self.layers.front_mut().expect("more than the cap");
            next.q += oldest.q;
            next.v += oldest.v;
        }
    }

    /// Applies one entry; returns its cost (the change in value).
    pub fn apply(&mut self, method: Method, entry: &Entry) -> Result<Money, Error> {
        if !entry.k.valued() || entry.q.0 == 0 {
            return Ok(Money::ZERO);
        }
        let cost = if entry.q.0 > 0 {
            let cost = match entry.u {
                Some(value) => value,
                None if self.qty.0 > 0 => self.value.share(entry.q, self.qty),
                None => self.rate.of(entry.q),
            };
            if method == Method::Fifo {
                self.push_layer(Layer { q: entry.q, v: cost });
            }
            cost
        } else {
            let out = -entry.q;
            if out > self.qty {
                return Err(Error::internal(
                    "valuation-underflow",
                    format!("entry {} takes {out} of {} in stock", entry.s, self.qty),
                ));
            }
            match method {
                Method::Average if out == self.qty => -self.value,
                Method::Average => -self.value.share(out, self.qty),
                Method::Fifo => {
                    let (mut left, mut cost) = (out, Money::ZERO);
                    while left.0 > 0 {
                        let layer = self.layers.front_mut().ok_or_else(|| {
                            Error::internal("valuation-underflow", format!("entry {} outruns its layers", entry.s))
                        })?;
                        if layer.q <= left {
                            left -= layer.q;
                            cost = cost - layer.v;
                            self.layers.pop_front();
                        } else {
                            let take = layer.v.share(left, layer.q);
                            layer.q -= left;
                            layer.v = layer.v - take;
                            cost = cost - take;
                            left = Qty::ZERO;
                        }
                    }
                    cost
                }
            }
        };
        self.qty += entry.q;
        self.value += cost;
        if self.qty.0 > 0 {
            self.rate = self.value.per(self.qty);
        } else if let Some(value) = entry.u {
            self.rate = value.per(entry.q);
        }
        Ok(cost)
    }
}

/// A stored piece of an item's journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The valuation before the first entry.
    pub start: Valuation,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: u32,
    pub first: Key,
    pub last: Key,
    pub n: u32,
    /// Its start was stored without its FIFO layers (many of them): they are worked out from
    /// the nearest chunk before it that has them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bare: bool,
}

/// An item's journal: its chunks in order and the valuation at its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub method: Method,
    pub next_seq: u64,
    pub next_chunk: u32,
    pub chunks: Vec<ChunkRef>,
    /// The valuation after the last entry (exact in quantity always; in value once
    /// `dirty_from` is empty).
    pub end: Valuation,
    /// The earliest entry whose cost may be stale; a revaluation is due from there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty_from: Option<Key>,
    /// When a revaluation task for this item last started or made progress (host ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revaluing_since: Option<u64>,
}

impl Head {
    pub fn new(method: Method) -> Head {
        Head {
            method,
            next_seq: 1,
            next_chunk: 1,
            chunks: Vec::new(),
            end: Valuation::default(),
            dirty_from: None,
            revaluing_since: None,
        }
    }

    pub fn last_key(&self) -> Option<Key> {
        self.chunks.last().map(|c| c.last)
    }

    pub fn entries(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.n)).sum()
    }

    /// The chunk `key` belongs in: the last whose first key is at or before it (the first
    /// chunk for a key before everything).
    pub fn chunk_index(&self, key: Key) -> usize {
        self.chunks.partition_point(|c| c.first <= key).saturating_sub(1)
    }

    /// How many entries come after `key`.
    pub fn entries_after(&self, key: Key) -> u64 {
        let at = self.chunk_index(key);
        let later: u64 = self.chunks.iter().skip(at + 1).map(|c| u64::from(c.n)).sum();
        // Within its chunk, at most all of it.
        later + self.chunks.get(at).map_or(0, |c| u64::from(c.n))
    }
}

/// How far below zero a place would go if an outflow of `q` (negative) were put before
/// `later`, its entries after that point, when it holds `on_hand` now: the worst shortfall,
/// and the later entry after which it happens (`None`: at the outflow itself).
pub fn shortfall(on_hand: Qty, later: &[Entry], q: Qty) -> Option<(Qty, Option<&Entry>)> {
    let mut running = on_hand - later.iter().fold(Qty::ZERO, |sum, e| sum + e.q);
    let mut worst: Option<(Qty, Option<&Entry>)> = None;
    for at in std::iter::once(None).chain(later.iter().map(Some)) {
        if let Some(entry) = at {
            running += entry.q;
        }
        let short = -(running + q);
        if short.0 > 0 && worst.as_ref().is_none_or(|(w, _)| short > *w) {
            worst = Some((short, at));
        }
    }
    worst
}

/// Loads a chunk by id (from storage, or a map in tests).
pub type Loader<'a> = dyn FnMut(u32) -> Result<Chunk, Error> + 'a;

/// An item's journal being worked on in one call: the head and the chunks read so far,
/// and which of them changed.
pub struct Journal {
    pub head: Head,
    /// Entries a chunk is filled to ([`CHUNK`]; smaller in tests, to make many chunks).
    pub chunk_size: usize,
    /// Entries of the tail before it is merged ([`TAIL`]).
    pub tail_size: usize,
    /// FIFO layers a chunk start keeps in every chunk ([`CHECKPOINT_LAYERS`]).
    pub checkpoint_layers: usize,
    /// Whether a full tail may be merged into a chunk this call has not written yet. A bulk
    /// import says no: merging rewrites the whole chunk before, and an import touching many
    /// items would rewrite all their chunks in one commit. Its tails are kept as they are.
    pub merge_unwritten: bool,
    chunks: BTreeMap<u32, Chunk>,
    changed: BTreeSet<u32>,
    /// Chunks merged into the one before them: to delete.
    removed: BTreeSet<u32>,
    head_changed: bool,
}

impl Journal {
    pub fn new(head: Head) -> Journal {
        Journal {
            head,
            chunk_size: CHUNK,
            tail_size: TAIL,
            checkpoint_layers: CHECKPOINT_LAYERS,
            merge_unwritten: true,
            chunks: BTreeMap::new(),
            changed: BTreeSet::new(),
            removed: BTreeSet::new(),
            head_changed: false,
        }
    }

    pub fn chunk(&mut self, id: u32, load: &mut Loader<'_>) -> Result<&mut Chunk, Error> {
        Ok(match self.chunks.entry(id) {
            Slot::Occupied(slot) => slot.into_mut(),
            Slot::Vacant(slot) => slot.insert(checked(&self.head, id, load)?),
        })
    }

    /// What to write back: the head if it changed, and the changed chunks.
    pub fn changes(&self) -> (Option<&Head>, Vec<(u32, &Chunk)>) {
        let chunks = self.changed.iter().map(|id| (*id, &self.chunks[id])).collect();
        (self.head_changed.then_some(&self.head), chunks)
    }

    /// What to store as the start of the chunk at `index`: the valuation, without its layers
    /// when they are many and a chunk shortly before keeps them (that chunk's ref says so).
    fn stored_start(&mut self, index: usize, mut state: Valuation) -> Valuation {
        let near = index.saturating_sub(CHECKPOINT_EVERY - 1);
        let bare = self.head.method == Method::Fifo
            && state.layers.len() > self.checkpoint_layers
            && self.head.chunks[near..index].iter().any(|c| !c.bare);
        self.head.chunks[index].bare = bare;
        if bare {
            state.layers.clear();
        }
        state
    }

    /// The full valuation at the start of the chunk at `index` (its layers worked out from
    /// the nearest full start before it when it is bare). Only for chunks a revaluation has
    /// passed: the chunks it replays must be clean.
    fn full_start(&mut self, index: usize, load: &mut Loader<'_>) -> Result<Valuation, Error> {
        let method = self.head.method;
        let mut from = index;
        while self.head.chunks[from].bare && from > 0 {
            from -= 1;
        }
        let ids: Vec<u32> = self.head.chunks[from..index].iter().map(|c| c.id).collect();
        let id = self.head.chunks[from].id;
        let mut state = self.chunk(id, load)?.start.clone();
        // A full FIFO start's layers add up to its quantity. One that does not was made bare
        // by a call that committed after this one read the head: the head is stale.
        if method == Method::Fifo && state.layers.iter().fold(Qty::ZERO, |sum, l| sum + l.q) != state.qty {
            return Err(moved(id));
        }
        for id in ids {
            for entry in &self.chunk(id, load)?.entries {
                state.apply(method, entry)?;
            }
        }
        Ok(state)
    }

    /// Chunks to delete (merged into the one before them).
    pub fn removed(&self) -> Vec<u32> {
        self.removed.iter().copied().collect()
    }

    /// Merges the tail into the chunk before it, if that has room for it.
    fn merge_tail(&mut self, load: &mut Loader<'_>) -> Result<(), Error> {
        let n = self.head.chunks.len();
        if n < 2 {
            return Ok(());
        }
        let (before, tail) = (self.head.chunks[n - 2].clone(), self.head.chunks[n - 1].clone());
        if (before.n + tail.n) as usize > self.chunk_size
            || (!self.merge_unwritten && !self.changed.contains(&before.id))
        {
            return Ok(());
        }
        let moved = std::mem::take(&mut self.chunk(tail.id, load)?.entries);
        self.chunk(before.id, load)?.entries.extend(moved);
        self.changed.insert(before.id);
        self.changed.remove(&tail.id);
        self.chunks.remove(&tail.id);
        self.removed.insert(tail.id);
        let r = &mut self.head.chunks[n - 2];
        r.last = tail.last;
        r.n += tail.n;
        self.head.chunks.pop();
        Ok(())
    }

    pub fn mark_head(&mut self) {
        self.head_changed = true;
    }

    /// Takes the next seq for an entry of this item.
    pub fn next_seq(&mut self) -> u64 {
        let seq = self.head.next_seq;
        self.head.next_seq += 1;
        self.head_changed = true;
        seq
    }

    /// The entries of one place (location and lot) after `key`, in order.
    pub fn later_in_bucket(
        &mut self,
        key: Key,
        location: &str,
        lot: Option<&str>,
        load: &mut Loader<'_>,
    ) -> Result<Vec<Entry>, Error> {
        let mut later = Vec::new();
        if self.head.chunks.is_empty() {
            return Ok(later);
        }
        let from = self.head.chunk_index(key);
        let ids: Vec<u32> = self.head.chunks[from..].iter().filter(|c| c.last > key).map(|c| c.id).collect();
        let wanted = |e: &&Entry| e.key() > key && e.in_bucket(location, lot);
        for id in ids {
            // Scanned, not kept: a long tail would not fit in memory twice.
            match self.chunks.get(&id) {
                Some(chunk) => later.extend(chunk.entries.iter().filter(wanted).cloned()),
                None => later.extend(checked(&self.head, id, load)?.entries.iter().filter(wanted).cloned()),
            }
        }
        Ok(later)
    }

    /// Adds an entry (its `s` taken from [`Journal::next_seq`]) and values it. An entry after
    /// every other, on a journal with no revaluation due, is valued at once from the end; any
    /// other marks the journal stale from it (see [`Journal::revalue`]).
    pub fn add(&mut self, mut entry: Entry, load: &mut Loader<'_>) -> Result<Money, Error> {
        self.head_changed = true;
        let key = entry.key();
        let method = self.head.method;
        let at_end = self.head.last_key().is_none_or(|last| key > last);
        // A full tail is sealed (merged back, or kept as it is) and a new one started.
        let seal = at_end && self.head.chunks.last().is_some_and(|c| c.n as usize >= self.tail_size);
        let new_chunk = at_end && (self.head.chunks.is_empty() || seal);
        // A new chunk starts from the end before this entry; while a revaluation is due,
        // that is provisional and the revaluation sets it.
        let start = new_chunk.then(|| self.head.end.clone());
        // The end's quantity stays exact whatever the order; its value is exact only when
        // this is the last entry and nothing before it is stale.
        let cost = self.head.end.apply(method, &entry)?;
        if !(at_end && self.head.dirty_from.is_none()) {
            self.head.dirty_from = Some(self.head.dirty_from.map_or(key, |d| d.min(key)));
        }
        entry.c = cost;
        if at_end {
            if seal {
                self.merge_tail(load)?;
            }
            if let Some(start) = start {
                let id = self.head.next_chunk;
                self.head.next_chunk += 1;
                self.head.chunks.push(ChunkRef { id, first: key, last: key, n: 0, bare: false });
                let start = self.stored_start(self.head.chunks.len() - 1, start);
                self.chunks.insert(id, Chunk { start, entries: Vec::new() });
            }
            let index = self.head.chunks.len() - 1;
            let id = self.head.chunks[index].id;
            self.chunk(id, load)?.entries.push(entry);
            self.changed.insert(id);
            let r = &mut self.head.chunks[index];
            r.last = key;
            r.n += 1;
            if r.n == 1 {
                r.first = key;
            }
        } else {
            let index = self.head.chunk_index(key);
            let id = self.head.chunks[index].id;
            let chunk = self.chunk(id, load)?;
            let at = chunk.entries.partition_point(|e| e.key() < key);
            chunk.entries.insert(at, entry);
            let len = chunk.entries.len();
            self.changed.insert(id);
            let r = &mut self.head.chunks[index];
            r.n += 1;
            r.first = r.first.min(key);
            r.last = r.last.max(key);
            if len > 2 * self.chunk_size {
                self.split(index, load)?;
            }
        }
        Ok(cost)
    }

    /// Splits an overfull chunk in two halves. The right half's start is worked out from the
    /// left's (a revaluation is due from an entry in this chunk anyway).
    fn split(&mut self, index: usize, load: &mut Loader<'_>) -> Result<(), Error> {
        let method = self.head.method;
        let id = self.head.chunks[index].id;
        let new_id = self.head.next_chunk;
        self.head.next_chunk += 1;
        // When a revaluation is due from before this chunk, its start is stale too: the
        // right half gets a placeholder the revaluation replaces on its way through.
        let stale = self.head.dirty_from.is_some_and(|d| self.head.chunk_index(d) < index);
        let mut start = if stale { self.chunks[&id].start.clone() } else { self.full_start(index, load)? };
        let chunk = self.chunks.get_mut(&id).expect("loaded to insert");
        let right = chunk.entries.split_off(chunk.entries.len() / 2);
        if !stale {
            for entry in &chunk.entries {
                start.apply(method, entry)?;
            }
        }
        let (left_last, left_n) = (chunk.entries.last().expect("half of a full chunk").key(), chunk.entries.len());
        // A stale placeholder says it is bare: nothing may take it for a full start.
        let right_ref = ChunkRef {
            id: new_id,
            first: right[0].key(),
            last: right[right.len() - 1].key(),
            n: right.len() as u32,
            bare: stale,
        };
        let r = &mut self.head.chunks[index];
        r.last = left_last;
        r.n = left_n as u32;
        self.head.chunks.insert(index + 1, right_ref);
        // A stale placeholder is never replayed from (the revaluation sets it first).
        let start =
            if stale { Valuation { layers: VecDeque::new(), ..start } } else { self.stored_start(index + 1, start) };
        self.chunks.insert(new_id, Chunk { start, entries: right });
        self.changed.insert(new_id);
        Ok(())
    }

    /// Every entry, in order (tests and checks; reads the whole journal).
    pub fn all_entries(&mut self, load: &mut Loader<'_>) -> Result<Vec<Entry>, Error> {
        let ids: Vec<u32> = self.head.chunks.iter().map(|c| c.id).collect();
        let mut all = Vec::new();
        for id in ids {
            all.extend(self.chunk(id, load)?.entries.iter().cloned());
        }
        Ok(all)
    }

    /// Works out costs again from `dirty_from`, for at most about `budget` entries (whole
    /// chunks). Returns whether the journal is clean now. Each chunk's `start` is set from the
    /// one before, so a chunk can always be valued on its own from there.
    pub fn revalue(&mut self, budget: usize, load: &mut Loader<'_>) -> Result<bool, Error> {
        let Some(from) = self.head.dirty_from else { return Ok(true) };
        self.head_changed = true;
        let method = self.head.method;
        let mut index = self.head.chunk_index(from);
        let mut state = self.full_start(index, load)?;
        let mut done = 0;
        loop {
            let id = self.head.chunks[index].id;
            let stored = self.stored_start(index, state.clone());
            let chunk = self.chunk(id, load)?;
            let mut changed = chunk.start != stored;
            chunk.start = stored;
            for entry in &mut chunk.entries {
                let cost = state.apply(method, entry)?;
                if entry.c != cost {
                    entry.c = cost;
                    changed = true;
                }
            }
            done += chunk.entries.len();
            if changed {
                self.changed.insert(id);
            }
            index += 1;
            if index == self.head.chunks.len() {
                self.head.end = state;
                self.head.dirty_from = None;
                return Ok(true);
            }
            if done >= budget {
                // The next chunk starts where this one ended: the next run starts from there.
                let next = self.head.chunks[index].id;
                let stored = self.stored_start(index, state);
                let chunk = self.chunk(next, load)?;
                if chunk.start != stored {
                    chunk.start = stored;
                    self.changed.insert(next);
                }
                self.head.dirty_from = Some(self.head.chunks[index].first);
                return Ok(false);
            }
        }
    }

    /// The entry at `key`, if there is one.
    pub fn find(&mut self, key: Key, load: &mut Loader<'_>) -> Result<Option<Entry>, Error> {
        if self.head.chunks.is_empty() {
            return Ok(None);
        }
        let id = self.head.chunks[self.head.chunk_index(key)].id;
        let chunk = self.chunk(id, load)?;
        Ok(chunk.entries.binary_search_by(|e| e.key().cmp(&key)).ok().map(|i| chunk.entries[i].clone()))
    }

    /// The valuation just after `key` (everything at or before it), from the chunk holding it.
    ///
    /// While a revaluation is due from before `key`, chunk starts there may be stale: the
    /// quantity is then worked out from the end (always exact) less what came after, and the
    /// value is that quantity at the end's unit cost, provisional until the revaluation ends.
    pub fn valuation_at(&mut self, key: Key, load: &mut Loader<'_>) -> Result<Valuation, Error> {
        let method = self.head.method;
        let Some(first) = self.head.chunks.first() else { return Ok(Valuation::default()) };
        if key < first.first {
            return Ok(Valuation::default());
        }
        if self.head.last_key().is_some_and(|last| key >= last) {
            return Ok(self.head.end.clone());
        }
        if self.head.dirty_from.is_some_and(|d| d <= key) {
            let end = self.head.end.clone();
            let ids: Vec<u32> = self.head.chunks.iter().filter(|c| c.last > key).map(|c| c.id).collect();
            let mut qty = end.qty;
            for id in ids {
                let after = match self.chunks.get(&id) {
                    Some(chunk) => later_valued(chunk, key),
                    None => later_valued(&checked(&self.head, id, load)?, key),
                };
                qty -= after;
            }
            let value = if qty == end.qty { end.value } else { end.unit_cost().of(qty) };
            return Ok(Valuation { qty, value, layers: VecDeque::new(), rate: end.rate });
        }
        let index = self.head.chunk_index(key);
        let mut state = self.full_start(index, load)?;
        let id = self.head.chunks[index].id;
        for entry in self.chunk(id, load)?.entries.iter().take_while(|e| e.key() <= key) {
            state.apply(method, entry)?;
        }
        Ok(state)
    }
}

/// Loads a chunk and checks it is the one `head` describes. Reads are not a snapshot: another
/// call may have merged or grown the chunk since this call read the head. Such a call answers
/// `409 journal-moved`, and the platform runs it again on the new data (an error answered on
/// data that changed is a lost race).
pub fn checked(head: &Head, id: u32, load: &mut Loader<'_>) -> Result<Chunk, Error> {
    let chunk = load(id)?;
    match head.chunks.iter().find(|c| c.id == id) {
        Some(r) if r.n as usize != chunk.entries.len() => Err(moved(id)),
        _ => Ok(chunk),
    }
}

pub fn moved(id: u32) -> Error {
    Error::conflict("journal-moved", format!("journal chunk {id} changed while this call read it: retry"))
}

/// The quantity a chunk's valued entries after `key` add up to.
fn later_valued(chunk: &Chunk, key: Key) -> Qty {
    chunk.entries.iter().filter(|e| e.key() > key && e.k.valued()).fold(Qty::ZERO, |sum, e| sum + e.q)
}

impl From<Layer> for (Qty, Money) {
    fn from(l: Layer) -> (Qty, Money) {
        (l.q, l.v)
    }
}

impl From<(Qty, Money)> for Layer {
    fn from((q, v): (Qty, Money)) -> Layer {
        Layer { q, v }
    }
}
