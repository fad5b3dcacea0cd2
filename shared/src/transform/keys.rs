//! The set of keys already accepted in a file, in bounded memory.
//!
//! Keys are 128-bit fingerprints (xxh3-128 of the normalised key text: a collision is about as
//! likely as 2⁻⁶⁰ for a billion keys). Up to `memory_keys` live in a hash table; beyond that the
//! table is sorted and spilled to a run file on disk with a sparse index kept in memory, and runs
//! are merged level by level. One Bloom filter in memory holds every key on disk, so a new key
//! (the usual case) costs a table probe and a filter probe, and the disk is read only for the
//! few the filter cannot rule out. Memory stays bounded by configuration, not by the input.
//!
//! The table and the filter place a key by the top bits of its fingerprint, so a sorted run
//! fills the filter front to back, and the table drains almost in order.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;

/// How many keys ahead of its insertion a key's slot and filter block are prefetched.
const WARM_AHEAD: usize = 24;
/// Keys per sparse-index entry: one disk read of 4 KiB per probe.
const BLOCK_KEYS: usize = 256;
/// Runs of one level merged into one of the next.
const FAN_IN: usize = 8;
/// Filter bits per key on disk while the budget allows (about one false positive in 10,000).
const BLOOM_BITS_PER_KEY: u64 = 24;
/// The most bytes the filter holds (16 MiB: 24 bits per key up to about 5.6 M keys on disk,
/// fewer bits per key beyond, so more reads of the run files but bounded memory).
const BLOOM_BUDGET_BYTES: usize = 16 << 20;
/// The smallest filter (64 KiB).
const BLOOM_MIN_BYTES: usize = 64 << 10;
/// The farthest a key sits from its home slot; a key that would sit farther spills the table.
const MAX_PROBE: usize = 64;

/// The top `bits` bits of a fingerprint.
fn top_bits(fp: u128, bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        (fp >> (128 - bits)) as usize
    }
}

/// The keys of the current run, in an open-addressing table of fingerprints (linear probing
/// without wrap-around, 0 marks an empty slot). A key's home is the top bits of its fingerprint
/// and it sits at most [`MAX_PROBE`] slots past it, so slot order is sorted order but for a
/// short distance. One slot is one 16-byte load, and [`FpTable::warm`] can prefetch it.
struct FpTable {
    /// `2^bits` home slots and [`MAX_PROBE`] overflow slots after them.
    slots: Vec<u128>,
    bits: u32,
    len: usize,
    /// Whether the fingerprint 0 (which cannot be stored in a slot) is in the set.
    zero: bool,
}

/// What an insertion into the table found.
#[derive(Debug, PartialEq, Eq)]
enum Placed {
    New,
    Present,
    /// No free slot within [`MAX_PROBE`] of the key's home (keys crafted to collide, or a very
    /// unlucky run): the table must be spilled first.
    NoRoom,
}

impl FpTable {
    /// A table for `keys` keys, at most five eighths full.
    fn new(keys: usize) -> FpTable {
        let homes = (keys * 8).div_ceil(5).next_power_of_two();
        FpTable {
            slots: vec![0; homes + MAX_PROBE],
            bits: homes.trailing_zeros(),
            len: 0,
            zero: false,
        }
    }
    fn insert(&mut self, fp: u128) -> Placed {
        if fp == 0 {
            return if std::mem::replace(&mut self.zero, true) {
                Placed::Present
            } else {
                Placed::New
            };
        }
        let home = top_bits(fp, self.bits);
        for slot in &mut self.slots[home..home + MAX_PROBE] {
            if *slot == 0 {
                *slot = fp;
                self.len += 1;
                return Placed::New;
            }
            if *slot == fp {
                return Placed::Present;
            }
        }
        Placed::NoRoom
    }
    fn contains(&self, fp: u128) -> bool {
        if fp == 0 {
            return self.zero;
        }
        let home = top_bits(fp, self.bits);
        // Keys are never removed one by one, so an empty slot ends the search.
        for &slot in &self.slots[home..home + MAX_PROBE] {
            if slot == fp {
                return true;
            }
            if slot == 0 {
                return false;
            }
        }
        false
    }
    fn len(&self) -> usize {
        self.len + usize::from(self.zero)
    }
    /// Starts loading the home slot of `fp` into cache.
    fn warm(&self, fp: u128) {
        crate::prefetch::prefetch(&self.slots[top_bits(fp, self.bits)]);
    }
    /// Moves every key into `keys` (emptied first), sorted, leaving the table empty. Slot order
    /// is almost sorted order (a key is at most [`MAX_PROBE`] slots from its place), so an
    /// insertion sort finishes it in linear time.
    fn drain_sorted(&mut self, keys: &mut Vec<u128>) {
        keys.clear();
        if self.zero {
            keys.push(0);
        }
        keys.extend(self.slots.iter().copied().filter(|s| *s != 0));
        self.slots.fill(0);
        self.len = 0;
        self.zero = false;
        for i in 1..keys.len() {
            let key = keys[i];
            let mut j = i;
            while j > 0 && keys[j - 1] > key {
                keys[j] = keys[j - 1];
                j -= 1;
            }
            keys[j] = key;
        }
    }
}

/// A blocked Bloom filter: all the bits of one key live in one 512-bit block (one cache line),
/// so a probe costs one memory access. A key's block is the top bits of its fingerprint, so
/// sorted keys fill the filter front to back.
struct Bloom {
    blocks: Vec<Block>,
    bits: u32,
}

/// One cache line of filter bits.
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct Block([u64; 8]);

impl Bloom {
    /// A filter of `bytes` (a power of two, at least one block).
    fn with_bytes(bytes: usize) -> Bloom {
        let blocks = (bytes / 64).max(1).next_power_of_two();
        Bloom {
            blocks: vec![Block::default(); blocks],
            bits: blocks.trailing_zeros(),
        }
    }
    fn bytes(&self) -> usize {
        self.blocks.len() * 64
    }
    /// The block of `fp`, and its eight bits as (word, mask): nine bits of the fingerprint's
    /// low half each, the last from the high half (whose top bits chose the block).
    fn locate(&self, fp: u128) -> (usize, [(usize, u64); 8]) {
        let mut h = fp as u64;
        let mut bits = [(0usize, 0u64); 8];
        for (i, b) in bits.iter_mut().enumerate() {
            let pos = if i == 7 {
                ((fp >> 64) as u64 & 511) as usize
            } else {
                let p = (h & 511) as usize;
                h >>= 9;
                p
            };
            *b = (pos / 64, 1u64 << (pos % 64));
        }
        (top_bits(fp, self.bits), bits)
    }
    fn insert(&mut self, fp: u128) {
        let (block, bits) = self.locate(fp);
        let words = &mut self.blocks[block].0;
        for (w, m) in bits {
            words[w] |= m;
        }
    }
    fn may_contain(&self, fp: u128) -> bool {
        let (block, bits) = self.locate(fp);
        let words = &self.blocks[block].0;
        bits.iter().all(|(w, m)| words[*w] & m != 0)
    }
    /// Starts loading the block of `fp` into cache.
    fn warm(&self, fp: u128) {
        crate::prefetch::prefetch(&self.blocks[top_bits(fp, self.bits)]);
    }
}

struct Run {
    file: File,
    len: u64,
    level: u32,
    /// First key of every block of `BLOCK_KEYS` keys.
    fences: Vec<u128>,
}

impl Run {
    fn contains(&self, fp: u128, buf: &mut Vec<u8>) -> io::Result<bool> {
        let block = match self.fences.binary_search(&fp) {
            Ok(_) => return Ok(true),
            Err(0) => return Ok(false),
            Err(i) => i - 1,
        };
        let start = block as u64 * BLOCK_KEYS as u64;
        let n = (self.len - start).min(BLOCK_KEYS as u64) as usize;
        buf.resize(n * 16, 0);
        self.file.read_exact_at(buf, start * 16)?;
        let mut lo = 0usize;
        let mut hi = n;
        while lo < hi {
            let mid = (lo + hi) / 2;
            match read_fp(&buf[mid * 16..mid * 16 + 16]).cmp(&fp) {
                std::cmp::Ordering::Equal => return Ok(true),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(false)
    }
}

fn read_fp(b: &[u8]) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    u128::from_le_bytes(a)
}

/// Writes sorted keys to a new run file.
fn write_run(sorted: impl Iterator<Item = io::Result<u128>>, level: u32) -> io::Result<Run> {
    let file = tempfile::tempfile()?;
    let mut fences = Vec::new();
    let mut w = BufWriter::with_capacity(64 << 10, &file);
    let mut n = 0u64;
    for fp in sorted {
        let fp = fp?;
        if n.is_multiple_of(BLOCK_KEYS as u64) {
            fences.push(fp);
        }
        w.write_all(&fp.to_le_bytes())?;
        n += 1;
    }
    w.flush()?;
    drop(w);
    fences.shrink_to_fit();
    Ok(Run {
        file,
        len: n,
        level,
        fences,
    })
}

/// Streams the keys of a run in order.
fn run_keys(run: &Run) -> impl Iterator<Item = io::Result<u128>> + '_ {
    let mut r = BufReader::with_capacity(1 << 16, &run.file);
    let mut read = 0u64;
    let mut positioned = false;
    std::iter::from_fn(move || {
        if !positioned {
            positioned = true;
            if let Err(e) = std::io::Seek::seek(&mut r, io::SeekFrom::Start(0)) {
                return Some(Err(e));
            }
        }
        if read == run.len {
            return None;
        }
        let mut b = [0u8; 16];
        read += 1;
        Some(r.read_exact(&mut b).map(|_| u128::from_le_bytes(b)))
    })
}

/// Keys accepted so far in one file.
pub struct KeySet {
    mem: FpTable,
    memory_keys: usize,
    runs: Vec<Run>,
    /// Every key in `runs` (and no other).
    filter: Bloom,
    on_disk: u64,
    probe: Vec<u8>,
    spills: u32,
    filter_budget: usize,
}

impl KeySet {
    /// `memory_keys` bounds the in-memory table (16 to 26 bytes a key: a power of two of slots
    /// at most five eighths full).
    pub fn new(memory_keys: usize) -> KeySet {
        KeySet {
            mem: FpTable::new(memory_keys.max(1024)),
            memory_keys: memory_keys.max(1024),
            runs: Vec::new(),
            filter: Bloom::with_bytes(64),
            on_disk: 0,
            probe: Vec::new(),
            spills: 0,
            filter_budget: BLOOM_BUDGET_BYTES,
        }
    }

    /// The same set with another budget for its Bloom filter (tests).
    #[cfg(test)]
    fn with_filter_budget(mut self, bytes: usize) -> KeySet {
        self.filter_budget = bytes.max(64);
        self
    }

    /// Bytes held by the Bloom filter of the keys on disk.
    pub fn filter_bytes(&self) -> usize {
        self.filter.bytes()
    }

    /// Inserts a key; `false` when it was already there.
    pub fn insert(&mut self, fp: u128) -> io::Result<bool> {
        // A key is never both in memory and on disk, so the disk can be asked first and the
        // table probed once, by the insertion itself.
        if self.on_disk > 0 && self.filter.may_contain(fp) {
            for run in &self.runs {
                if run.contains(fp, &mut self.probe)? {
                    return Ok(false);
                }
            }
        }
        match self.mem.insert(fp) {
            Placed::New => {}
            Placed::Present => return Ok(false),
            Placed::NoRoom => {
                // The table may hold the key: spill it, then ask again (the table is empty).
                self.spill()?;
                return self.insert(fp);
            }
        }
        if self.mem.len() >= self.memory_keys {
            self.spill()?;
        }
        Ok(true)
    }

    /// Whether a key is in the set, without inserting it: for rows that must pass further
    /// checks before they claim their key.
    pub fn contains(&mut self, fp: u128) -> io::Result<bool> {
        if self.on_disk > 0 && self.filter.may_contain(fp) {
            for run in &self.runs {
                if run.contains(fp, &mut self.probe)? {
                    return Ok(true);
                }
            }
        }
        Ok(self.mem.contains(fp))
    }

    /// Inserts keys in order, as [`KeySet::insert`] one by one would (a key repeated within
    /// `fps` is fresh only the first time), and pushes onto `fresh` whether each was new.
    /// The table slot and filter block of each key are prefetched [`WARM_AHEAD`] keys before
    /// its insertion, so the cache misses of a batch overlap instead of coming one at a time.
    pub fn insert_batch(&mut self, fps: &[u128], fresh: &mut Vec<bool>) -> io::Result<()> {
        fresh.reserve(fps.len());
        for fp in fps.iter().take(WARM_AHEAD) {
            self.warm(*fp);
        }
        for (i, fp) in fps.iter().enumerate() {
            if let Some(ahead) = fps.get(i + WARM_AHEAD) {
                self.warm(*ahead);
            }
            fresh.push(self.insert(*fp)?);
        }
        Ok(())
    }

    fn warm(&self, fp: u128) {
        self.mem.warm(fp);
        self.filter.warm(fp);
    }

    /// Number of times the in-memory table was spilled to disk.
    pub fn spills(&self) -> u32 {
        self.spills
    }

    fn spill(&mut self) -> io::Result<()> {
        let mut keys = Vec::with_capacity(self.mem.len());
        self.mem.drain_sorted(&mut keys);
        self.on_disk += keys.len() as u64;
        self.size_filter(&keys)?;
        for fp in &keys {
            self.filter.insert(*fp);
        }
        self.runs.push(write_run(keys.into_iter().map(Ok), 0)?);
        self.spills += 1;
        self.compact()
    }

    /// Grows the filter (doubling, within the budget) while it has fewer than
    /// [`BLOOM_BITS_PER_KEY`] bits for each key on disk; a grown filter is refilled from the
    /// runs, in order. `adding` are the keys about to be written, not yet in any run.
    fn size_filter(&mut self, adding: &[u128]) -> io::Result<()> {
        let wanted = (self.on_disk * BLOOM_BITS_PER_KEY / 8) as usize;
        let cap = prev_power_of_two(self.filter_budget.max(64));
        let bytes = wanted.max(BLOOM_MIN_BYTES).next_power_of_two().min(cap);
        if bytes <= self.filter.bytes() {
            return Ok(());
        }
        // The old filter is not needed to fill the new one: free it first, so the two are
        // never held together.
        self.filter = Bloom::with_bytes(64);
        let mut filter = Bloom::with_bytes(bytes);
        for run in &self.runs {
            for fp in run_keys(run) {
                filter.insert(fp?);
            }
        }
        for fp in adding {
            filter.insert(*fp);
        }
        self.filter = filter;
        Ok(())
    }

    fn compact(&mut self) -> io::Result<()> {
        loop {
            let Some(level) =
                (0..32).find(|l| self.runs.iter().filter(|r| r.level == *l).count() >= FAN_IN)
            else {
                return Ok(());
            };
            let (merge, keep): (Vec<Run>, Vec<Run>) = std::mem::take(&mut self.runs)
                .into_iter()
                .partition(|r| r.level == level);
            self.runs = keep;
            let run = write_run(MergeSorted::new(&merge)?, level + 1)?;
            drop(merge);
            self.runs.push(run);
        }
    }
}

/// The largest power of two ≤ `n` (`n` ≥ 1).
fn prev_power_of_two(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// Streaming k-way merge of sorted runs (keys are unique across runs).
struct MergeSorted<'a> {
    iters: Vec<Box<dyn Iterator<Item = io::Result<u128>> + 'a>>,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(u128, usize)>>,
}

impl<'a> MergeSorted<'a> {
    fn new(runs: &'a [Run]) -> io::Result<MergeSorted<'a>> {
        let mut iters: Vec<Box<dyn Iterator<Item = io::Result<u128>> + 'a>> = runs
            .iter()
            .map(|r| Box::new(run_keys(r)) as Box<_>)
            .collect();
        let mut heap = std::collections::BinaryHeap::new();
        for (i, it) in iters.iter_mut().enumerate() {
            if let Some(k) = it.next() {
                heap.push(std::cmp::Reverse((k?, i)));
            }
        }
        Ok(MergeSorted { iters, heap })
    }
}

impl Iterator for MergeSorted<'_> {
    type Item = io::Result<u128>;
    fn next(&mut self) -> Option<io::Result<u128>> {
        let std::cmp::Reverse((k, i)) = self.heap.pop()?;
        match self.iters[i].next() {
            Some(Ok(next)) => self.heap.push(std::cmp::Reverse((next, i))),
            Some(Err(e)) => return Some(Err(e)),
            None => {}
        }
        Some(Ok(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(i: u64) -> u128 {
        xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes())
    }

    #[test]
    fn detects_duplicates_in_memory() -> io::Result<()> {
        let mut s = KeySet::new(10_000);
        assert!(s.insert(fp(1))?);
        assert!(!s.insert(fp(1))?);
        assert!(s.insert(fp(2))?);
        Ok(())
    }

    #[test]
    fn detects_duplicates_after_spilling_and_merging() -> io::Result<()> {
        // GIVEN a set that may hold only 1024 keys in memory
        let mut s = KeySet::new(1024);
        // WHEN far more distinct keys are inserted (forcing spills and a merge level)
        for i in 0..(1024 * 20) {
            assert!(s.insert(fp(i))?, "key {i} reported as duplicate");
        }
        assert!(s.spills() >= 19);
        // THEN every earlier key, wherever it lives now, is still a duplicate
        for i in (0..(1024 * 20)).step_by(97) {
            assert!(!s.insert(fp(i))?, "key {i} not found");
        }
        assert!(s.insert(fp(1_000_000))?);
        Ok(())
    }

    #[test]
    fn contains_finds_every_key_wherever_it_lives_and_inserts_nothing() -> io::Result<()> {
        // GIVEN keys spread over memory and spilled runs, 0 among them
        let mut s = KeySet::new(1024);
        for i in 0..5_000 {
            s.insert(fp(i))?;
        }
        s.insert(0)?;
        assert!(s.spills() >= 4);
        // WHEN asked about them and about others THEN it answers as the set holds them
        for i in (0..5_000).step_by(7) {
            assert!(s.contains(fp(i))?, "key {i} not found");
        }
        assert!(s.contains(0)?);
        assert!(!s.contains(fp(9_999))?);
        // AND asking inserted nothing
        assert!(s.insert(fp(9_999))?);
        Ok(())
    }

    #[test]
    fn a_batch_answers_as_one_insert_after_another() -> io::Result<()> {
        // GIVEN a stream of keys with repeats near and far (within a batch, across batches,
        // across spills) and the fingerprint 0, which no table slot can hold
        let stream: Vec<u128> = (0..30_000u64)
            .map(|i| match i % 7 {
                0 => fp(i / 3),
                3 => 0,
                _ => fp(i),
            })
            .collect();
        let mut one_by_one = KeySet::new(1024);
        let expected: Vec<bool> = stream
            .iter()
            .map(|k| one_by_one.insert(*k))
            .collect::<io::Result<_>>()?;
        // WHEN the same keys go in as batches of uneven sizes
        let mut batched = KeySet::new(1024);
        let mut fresh = Vec::new();
        for batch in stream.chunks(997) {
            batched.insert_batch(batch, &mut fresh)?;
        }
        // THEN every answer is the same, and it is the answer of a plain hash set
        assert_eq!(fresh, expected);
        assert!(batched.spills() >= 20);
        let mut seen = std::collections::HashSet::new();
        let oracle: Vec<bool> = stream.iter().map(|k| seen.insert(*k)).collect();
        assert_eq!(fresh, oracle);
        assert!(fresh.iter().filter(|f| !**f).count() > 4285);
        Ok(())
    }

    #[test]
    fn the_filter_grows_with_the_keys_on_disk_and_holds_each_one() -> io::Result<()> {
        // GIVEN a set that may hold only 1024 keys in memory
        let mut s = KeySet::new(1024);
        let keys = 200_000u64;
        // WHEN far more keys arrive
        for i in 0..keys {
            assert!(s.insert(fp(i))?);
        }
        // THEN the filter has grown to its bits per key, holds every key on disk, and lets
        // through few keys that are not there
        assert!(s.filter_bytes() as u64 * 8 >= s.on_disk * BLOOM_BITS_PER_KEY);
        assert!(s.filter_bytes() <= 2 * (keys * BLOOM_BITS_PER_KEY / 8) as usize);
        let on_disk: Vec<u128> = s
            .runs
            .iter()
            .flat_map(run_keys)
            .collect::<io::Result<_>>()?;
        assert_eq!(on_disk.len() as u64, s.on_disk);
        assert!(on_disk.iter().all(|k| s.filter.may_contain(*k)));
        let false_positives = (keys..keys + 100_000)
            .filter(|i| s.filter.may_contain(fp(*i)))
            .count();
        assert!(false_positives < 100, "{false_positives} in 100,000");
        Ok(())
    }

    #[test]
    fn keys_crowding_one_home_slot_spill_the_table_and_stay_exact() -> io::Result<()> {
        // GIVEN fingerprints that all share their top bits, so they all want one home slot
        let crowd: Vec<u128> = (1..=500u128).map(|i| (0xABCD_u128 << 112) | i).collect();
        let mut s = KeySet::new(1024);
        // WHEN they arrive, more of them than a key may sit away from its home
        let mut fresh = Vec::new();
        s.insert_batch(&crowd, &mut fresh)?;
        // THEN the table spilled instead of refusing, each key was new once, and each is
        // still known, on disk or in memory
        assert!(fresh.iter().all(|f| *f));
        assert!(s.spills() >= 500 / MAX_PROBE as u32);
        fresh.clear();
        s.insert_batch(&crowd, &mut fresh)?;
        assert!(fresh.iter().all(|f| !*f));
        Ok(())
    }

    #[test]
    fn the_table_drains_in_sorted_order() {
        // GIVEN a table holding keys spread over it, 0 among them
        let mut t = FpTable::new(4096);
        let mut keys: Vec<u128> = (0..4000u64).map(fp).chain([0]).collect();
        for k in &keys {
            assert_eq!(t.insert(*k), Placed::New);
        }
        // WHEN it is drained
        let mut drained = vec![7];
        t.drain_sorted(&mut drained);
        // THEN the keys come out sorted, and the table is empty
        keys.sort_unstable();
        assert_eq!(drained, keys);
        assert_eq!(t.len(), 0);
        assert_eq!(t.insert(fp(1)), Placed::New);
    }

    #[test]
    fn filters_stay_within_their_budget_however_many_keys() -> io::Result<()> {
        // GIVEN 4 KiB for the filter (1,365 keys at 24 bits) and 1,024 keys in memory
        let budget = 4096;
        let mut s = KeySet::new(1024).with_filter_budget(budget);
        // WHEN twenty times as many keys arrive
        let keys = 3276 * 20;
        for i in 0..keys {
            assert!(s.insert(fp(i))?, "key {i} reported as duplicate");
            assert!(s.filter_bytes() <= budget, "{} bytes", s.filter_bytes());
        }
        // THEN every key is still found, however few bits per key the filter has
        assert!(s.spills() >= 60);
        for i in (0..keys).step_by(37) {
            assert!(!s.insert(fp(i))?, "key {i} not found");
        }
        assert!(s.insert(fp(keys + 1))?);
        Ok(())
    }
}
