//! The journal and its valuation, natively: the worked examples of moving average and FIFO
//! with a back-dated receipt, and a property test over random sequences of movements (many
//! back-dated) against a from-scratch recomputation.

use keel_plugin_inventory::journal::{Chunk, Entry, Head, Journal, Key, Kind, Method, Valuation, shortfall};
use keel_plugin_inventory::num::{Money, Qty};
use keel_sdk::Error;
use std::collections::{BTreeMap, HashMap};

const DAY: i64 = 86_400_000;

/// A journal over an in-memory "store" of chunks, written back as the plugin does.
struct Ledger {
    store: HashMap<u32, Chunk>,
    head: Head,
    chunk_size: usize,
    tail_size: usize,
    checkpoint_layers: usize,
    merge_unwritten: bool,
}

impl Ledger {
    fn new(method: Method, chunk_size: usize) -> Ledger {
        Ledger {
            store: HashMap::new(),
            head: Head::new(method),
            chunk_size,
            tail_size: (chunk_size / 10).max(1),
            checkpoint_layers: 64,
            merge_unwritten: true,
        }
    }

    /// One call: opens the journal, runs `work`, writes back what changed.
    fn call<R>(&mut self, work: impl FnOnce(&mut Journal, &mut dyn FnMut(u32) -> Result<Chunk, Error>) -> R) -> R {
        let mut journal = Journal::new(self.head.clone());
        journal.chunk_size = self.chunk_size;
        journal.tail_size = self.tail_size;
        journal.checkpoint_layers = self.checkpoint_layers;
        journal.merge_unwritten = self.merge_unwritten;
        let store = self.store.clone();
        let mut load = move |id: u32| store.get(&id).cloned().ok_or_else(|| Error::internal("missing", "chunk"));
        let result = work(&mut journal, &mut load);
        let (head, chunks) = journal.changes();
        for (id, chunk) in chunks {
            self.store.insert(id, chunk.clone());
        }
        for id in journal.removed() {
            self.store.remove(&id);
        }
        if let Some(head) = head {
            self.head = head.clone();
        }
        result
    }

    /// Posts one entry the way the plugin does (outflows checked against every later point
    /// of their place), then revalues inline. Returns whether it was accepted.
    fn post(&mut self, kind: Kind, t: i64, location: &str, q: i64, unit: Option<&str>, inline: bool) -> bool {
        let q = Qty::units(q);
        let on_hand = self.on_hand(location);
        self.call(|journal, load| {
            let seq = journal.head.next_seq;
            if q.0 < 0 {
                if (on_hand + q).0 < 0 {
                    return false;
                }
                let later = journal.later_in_bucket((t, seq), location, None, load).unwrap();
                if shortfall(on_hand, &later, q).is_some() {
                    return false;
                }
            }
            let s = journal.next_seq();
            let entry = Entry {
                s,
                t,
                m: s,
                k: kind,
                l: location.into(),
                o: None,
                q,
                u: unit.map(|u| Money::parse(u).unwrap().of(q)),
                c: Money::ZERO,
            };
            journal.add(entry, load).unwrap();
            if inline {
                journal.revalue(usize::MAX, load).unwrap();
            }
            true
        })
    }

    fn revalue(&mut self, budget: usize) -> bool {
        self.call(|journal, load| journal.revalue(budget, load).unwrap())
    }

    fn entries(&mut self) -> Vec<Entry> {
        self.call(|journal, load| journal.all_entries(load).unwrap())
    }

    fn on_hand(&mut self, location: &str) -> Qty {
        self.entries().iter().filter(|e| e.l == location).fold(Qty::ZERO, |s, e| s + e.q)
    }

    fn cost_of(&mut self, key: Key) -> Money {
        self.call(|journal, load| journal.find(key, load).unwrap().unwrap().c)
    }

    fn valuation_at(&mut self, t: i64) -> Valuation {
        self.valuation_at_key((t, u64::MAX))
    }

    fn valuation_at_key(&mut self, key: Key) -> Valuation {
        self.call(|journal, load| journal.valuation_at(key, load).unwrap())
    }
}

/// D1 receipt 10 @100, D3 receipt 10 @130, D4 issue 15; then a receipt of 10 @160 dated D2.
fn worked_example(method: Method) -> (Ledger, Money, Money) {
    let mut ledger = Ledger::new(method, 400);
    assert!(ledger.post(Kind::Receipt, DAY, "A", 10, Some("100"), true));
    assert!(ledger.post(Kind::Receipt, 3 * DAY, "A", 10, Some("130"), true));
    assert!(ledger.post(Kind::Issue, 4 * DAY, "A", -15, None, true));
    let before = -ledger.cost_of((4 * DAY, 3));
    assert!(ledger.post(Kind::Receipt, 2 * DAY, "A", 10, Some("160"), true));
    let after = -ledger.cost_of((4 * DAY, 3));
    (ledger, before, after)
}

#[test]
fn moving_average_issue_cost_is_revalued_by_a_back_dated_receipt() {
    let (mut ledger, before, after) = worked_example(Method::Average);
    // Before: (1000 + 1300) / 20 = 115 a unit; 15 × 115 = 1725.
    assert_eq!(before.to_string(), "1725.00");
    // After: D2 (1000 + 1600) / 20 = 130; D3 (2600 + 1300) / 30 = 130; 15 × 130 = 1950.
    assert_eq!(after.to_string(), "1950.00");
    assert_eq!(ledger.head.end.qty, Qty::units(15));
    assert_eq!(ledger.head.end.value.to_string(), "1950.00");
    // In = out + what is left: 3900 = 1950 + 1950.
    assert_eq!(ledger.head.end.value + after, Money::parse("3900").unwrap());
    // As of D3 (before the issue): 30 units worth 3900.
    let at_d3 = ledger.valuation_at(3 * DAY);
    assert_eq!((at_d3.qty, at_d3.value.to_string()), (Qty::units(30), "3900.00".to_owned()));
}

#[test]
fn fifo_issue_cost_is_revalued_by_a_back_dated_receipt() {
    let (mut ledger, before, after) = worked_example(Method::Fifo);
    // Before: 10 @100 + 5 @130 = 1650.
    assert_eq!(before.to_string(), "1650.00");
    // After: the layers are 10 @100, 10 @160 (D2), 10 @130; the issue takes 10 @100 + 5 @160.
    assert_eq!(after.to_string(), "1800.00");
    let end = &ledger.head.end;
    assert_eq!(end.value.to_string(), "2100.00");
    let layers: Vec<(String, String)> = end.layers.iter().map(|l| (l.q.to_string(), l.v.to_string())).collect();
    assert_eq!(layers, [("5".to_owned(), "800.00".to_owned()), ("10".to_owned(), "1300.00".to_owned())]);
    assert_eq!(ledger.valuation_at(DAY).value.to_string(), "1000.00");
}

#[test]
fn a_back_dated_issue_that_would_make_a_later_balance_negative_is_refused() {
    let mut ledger = Ledger::new(Method::Average, 400);
    // 01-Mar +10 (balance 10), 10-Mar −8 (balance 2).
    assert!(ledger.post(Kind::Receipt, DAY, "A", 10, Some("5"), true));
    assert!(ledger.post(Kind::Issue, 10 * DAY, "A", -8, None, true));
    // A −5 on 05-Mar: 5 left that day, but the balance after 10-Mar would be −3.
    let later = ledger.call(|j, load| j.later_in_bucket((5 * DAY, 99), "A", None, load).unwrap());
    let (short, at) = shortfall(Qty::units(2), &later, Qty::units(-5)).unwrap();
    assert_eq!((short, at.map(|e| e.t)), (Qty::units(3), Some(10 * DAY)));
    assert!(!ledger.post(Kind::Issue, 5 * DAY, "A", -5, None, true));
    // −2 fits: 8 that day, 0 after 10-Mar.
    assert!(ledger.post(Kind::Issue, 5 * DAY, "A", -2, None, true));
    assert_eq!(ledger.on_hand("A"), Qty::ZERO);
}

/// A small deterministic generator (SplitMix64): the same sequences on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Replays every valued entry in order from nothing.
fn from_scratch(method: Method, entries: &[Entry]) -> (Vec<Money>, Valuation) {
    let mut state = Valuation::default();
    let costs = entries.iter().map(|e| state.apply(method, e).unwrap()).collect();
    (costs, state)
}

#[test]
fn random_ledgers_never_go_negative_and_value_as_a_recomputation_does() {
    for seed in 0..60u64 {
        let mut rng = Rng(seed);
        let method = if seed % 2 == 0 { Method::Average } else { Method::Fifo };
        // Chunks of 3 to 8 entries, so a few hundred entries make many chunks and splits.
        let mut ledger = Ledger::new(method, 3 + (seed % 6) as usize);
        ledger.tail_size = 1 + (seed % 3) as usize;
        // FIFO starts with more than this many layers are mostly stored bare.
        ledger.checkpoint_layers = (seed % 4) as usize;
        // As a bulk import posts: tails kept, not merged into chunks written before.
        ledger.merge_unwritten = seed % 5 != 0;
        let places = ["A", "B", "C"];
        let mut latest = 100 * DAY;
        let mut accepted = 0;
        for step in 0..250 {
            latest += rng.below(DAY as u64) as i64;
            // A third are back-dated, some far back (before most of the journal).
            let t =
                if rng.below(3) == 0 { 100 * DAY + rng.below((latest - 100 * DAY) as u64 + 1) as i64 } else { latest };
            let place = places[rng.below(3) as usize];
            // Revalue inline sometimes; otherwise leave it to "task chunks" run now and then,
            // with postings arriving in between.
            let inline = rng.below(4) == 0;
            let ok = match rng.below(10) {
                0..=3 => {
                    let cost = format!("{}.{:02}", 1 + rng.below(200), rng.below(100));
                    ledger.post(Kind::Receipt, t, place, 1 + rng.below(20) as i64, Some(&cost), inline)
                }
                4..=7 => ledger.post(Kind::Issue, t, place, -(1 + rng.below(15) as i64), None, inline),
                8 => ledger.post(Kind::Adjustment, t, place, 1 + rng.below(5) as i64, None, inline),
                _ => {
                    // A transfer: out of one place, into another, at the same instant.
                    let to = places[(places.iter().position(|p| *p == place).unwrap() + 1) % 3];
                    let n = 1 + rng.below(10) as i64;
                    let out = ledger.post(Kind::TransferOut, t, place, -n, None, false);
                    out && ledger.post(Kind::TransferIn, t, to, n, None, inline)
                }
            };
            accepted += usize::from(ok);
            if step % 17 == 0 {
                ledger.revalue(1 + rng.below(12) as usize);
            }
            // Every place's running balance, in journal order, never goes below zero.
            let entries = ledger.entries();
            for place in places {
                let mut running = Qty::ZERO;
                for e in entries.iter().filter(|e| e.l == place) {
                    running += e.q;
                    assert!(running.0 >= 0, "seed {seed} step {step}: {place} went to {running} at {:?}", e.key());
                }
            }
            // The journal is in order, and the head's chunk list says where each entry is.
            assert!(entries.windows(2).all(|w| w[0].key() < w[1].key()), "seed {seed}: out of order");
            let total: u64 = ledger.head.chunks.iter().map(|c| u64::from(c.n)).sum();
            assert_eq!(total as usize, entries.len());
            assert_eq!(ledger.store.len(), ledger.head.chunks.len(), "seed {seed}: merged tails are deleted");
            for c in &ledger.head.chunks {
                let stored = &ledger.store[&c.id].entries;
                assert_eq!(stored.len(), c.n as usize, "seed {seed}: chunk {} count", c.id);
                assert_eq!(
                    (stored[0].key(), stored[stored.len() - 1].key()),
                    (c.first, c.last),
                    "seed {seed}: chunk {} keys",
                    c.id
                );
            }
            // The quantity as of any point is exact even while costs are stale (values are
            // then provisional).
            if !entries.is_empty() {
                let probe = entries[rng.below(entries.len() as u64) as usize].key();
                let expected = entries
                    .iter()
                    .filter(|e| e.key() <= probe && !matches!(e.k, Kind::TransferIn | Kind::TransferOut))
                    .fold(Qty::ZERO, |s, e| s + e.q);
                assert_eq!(
                    ledger.valuation_at_key(probe).qty,
                    expected,
                    "seed {seed} step {step}: qty as of {probe:?}"
                );
            }
            // The end's quantity is exact at all times.
            let on_hand = entries
                .iter()
                .filter(|e| !matches!(e.k, Kind::TransferIn | Kind::TransferOut))
                .fold(Qty::ZERO, |s, e| s + e.q);
            if ledger.head.end.qty != on_hand {
                let (_, replay) = from_scratch(method, &entries);
                panic!(
                    "seed {seed} step {step}: end {:?} replay {:?} dirty {:?} chunks {:?} entries {entries:?}",
                    ledger.head.end, replay, ledger.head.dirty_from, ledger.head.chunks
                );
            }
        }
        assert!(accepted > 100, "seed {seed}: only {accepted} accepted");
        // Once the revaluation has run to the end, every cost is what a replay from nothing
        // gives, and so is the end.
        while !ledger.revalue(1 + rng.below(20) as usize) {}
        let entries = ledger.entries();
        let (costs, end) = from_scratch(method, &entries);
        let stored: Vec<Money> = entries.iter().map(|e| e.c).collect();
        assert_eq!(stored, costs, "seed {seed}: costs differ from a recomputation");
        assert_eq!(ledger.head.end, end, "seed {seed}: end differs");
        // Each chunk starts from the valuation before its first entry.
        let mut state = Valuation::default();
        let mut index = 0;
        for chunk in ledger.head.chunks.clone() {
            let mut expected = state.clone();
            if chunk.bare {
                expected.layers.clear();
            }
            assert_eq!(ledger.store[&chunk.id].start, expected, "seed {seed}: chunk {} starts wrong", chunk.id);
            for e in &entries[index..index + chunk.n as usize] {
                state.apply(method, e).unwrap();
            }
            index += chunk.n as usize;
        }
        // Value in = value out + value left, to the ten-thousandth.
        let net: i64 = entries.iter().map(|e| e.c.0).sum();
        assert_eq!(net, end.value.0);
        let by_key: BTreeMap<Key, &Entry> = entries.iter().map(|e| (e.key(), e)).collect();
        assert_eq!(by_key.len(), entries.len());
    }
}

#[test]
fn a_reader_holding_an_older_head_is_told_the_journal_moved_rather_than_answered_wrong() {
    let mut ledger = Ledger::new(Method::Fifo, 2);
    ledger.tail_size = 2;
    ledger.checkpoint_layers = 2;
    assert!(ledger.post(Kind::Receipt, 10, "A", 1, Some("10"), true));
    assert!(ledger.post(Kind::Receipt, 20, "A", 1, Some("11"), true));
    // The tail is full: this one starts a second chunk whose start holds 2 layers, in full.
    assert!(ledger.post(Kind::Receipt, 30, "A", 1, Some("12"), true));
    assert!(ledger.post(Kind::Receipt, 40, "A", 1, Some("13"), true));
    assert_eq!(ledger.head.chunks.len(), 2);
    assert!(!ledger.head.chunks[1].bare);
    let older = ledger.head.clone();
    // A receipt back-dated into the first chunk gives the second's start 3 layers: stored bare.
    assert!(ledger.post(Kind::Receipt, 5, "A", 1, Some("9"), true));
    assert!(ledger.head.chunks[1].bare);
    // A reader that read the head before that commit must not take the bare start as full.
    let mut stale = Journal::new(older);
    let store = ledger.store.clone();
    let mut load = move |id: u32| store.get(&id).cloned().ok_or_else(|| Error::internal("missing", "chunk"));
    let answer = stale.valuation_at((35, u64::MAX), &mut load);
    assert_eq!(answer.map_err(|e| e.code().to_owned()), Err("journal-moved".to_owned()));
    // The current head answers exactly: 4 units, 9 + 10 + 11 + 12.
    let now = ledger.valuation_at(35);
    assert_eq!((now.qty, now.value.to_string()), (Qty::units(4), "42.00".to_owned()));
}
