//! The set of keys already accepted in a file, in bounded memory.
//!
//! Keys are 128-bit fingerprints (xxh3-128 of the normalised key text: a collision is about as
//! likely as 2⁻⁶⁰ for a billion keys). Up to `memory_keys` live in a hash set; beyond that the set
//! is sorted and spilled to a run file on disk with a Bloom filter and a sparse index kept in
//! memory, and runs are merged level by level so a lookup touches few of them. Memory stays
//! bounded by configuration, not by the size of the input.

use std::collections::HashSet;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;

/// Fingerprints are already uniformly distributed: hash them by taking their low bits.
#[derive(Default)]
struct Fingerprint(u64);

impl Hasher for Fingerprint {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

type FpSet = HashSet<u128, BuildHasherDefault<Fingerprint>>;

/// Keys per sparse-index entry: one disk read of 16 KiB per probe.
const BLOCK_KEYS: usize = 1024;
/// Runs of one level merged into one of the next.
const FAN_IN: usize = 8;
/// Bloom filter bits per key (at least; a filter has a power-of-two number of blocks).
const BLOOM_BITS_PER_KEY: u64 = 10;
/// The most bytes all filters of a key set hold (16 MiB: 10+ bits per key up to about 13 M keys
/// on disk). Past it the largest filters are folded in half — fewer bits per key, more reads
/// of the run files — so memory stays bounded whatever the input size.
const BLOOM_BUDGET_BYTES: usize = 16 << 20;
const BLOOM_HASHES: u32 = 7;

/// A blocked Bloom filter: all the bits of one key live in one 512-bit block (one cache line),
/// so a probe costs one memory access. The number of blocks is a power of two and a key's
/// block is the low bits of its fingerprint, so the filter can be folded in half (block `i`
/// ORed with block `i + n/2`) and still hold every key it held.
struct Bloom {
    blocks: Vec<[u64; 8]>,
}

impl Bloom {
    /// A filter for `keys` keys of at most `max_bytes`.
    fn new(keys: u64, max_bytes: usize) -> Bloom {
        let wanted = (keys * BLOOM_BITS_PER_KEY).div_ceil(512).max(1);
        let cap = (max_bytes / 64).max(1);
        let blocks = (wanted as usize)
            .next_power_of_two()
            .min(prev_power_of_two(cap));
        Bloom {
            blocks: vec![[0; 8]; blocks],
        }
    }
    fn bytes(&self) -> usize {
        self.blocks.len() * 64
    }
    /// Halves the filter (and its memory); `false` when it is one block already.
    fn fold(&mut self) -> bool {
        let half = self.blocks.len() / 2;
        if half == 0 {
            return false;
        }
        let (low, high) = self.blocks.split_at_mut(half);
        for (l, h) in low.iter_mut().zip(high.iter()) {
            for (a, b) in l.iter_mut().zip(h) {
                *a |= b;
            }
        }
        self.blocks.truncate(half);
        self.blocks.shrink_to_fit();
        true
    }
    /// The block and, for each of the `BLOOM_HASHES` bits, its word and mask.
    fn locate(&self, fp: u128) -> (usize, [(usize, u64); BLOOM_HASHES as usize]) {
        let block = (fp as u64 & (self.blocks.len() as u64 - 1)) as usize;
        let mut h = (fp >> 64) as u64;
        let mut bits = [(0usize, 0u64); BLOOM_HASHES as usize];
        for b in bits.iter_mut() {
            let pos = (h & 511) as usize;
            *b = (pos / 64, 1u64 << (pos % 64));
            h >>= 9;
        }
        (block, bits)
    }
    fn insert(&mut self, fp: u128) {
        let (block, bits) = self.locate(fp);
        let words = &mut self.blocks[block];
        for (w, m) in bits {
            words[w] |= m;
        }
    }
    fn may_contain(&self, fp: u128) -> bool {
        let (block, bits) = self.locate(fp);
        let words = &self.blocks[block];
        bits.iter().all(|(w, m)| words[*w] & m != 0)
    }
}

struct Run {
    file: File,
    len: u64,
    level: u32,
    bloom: Bloom,
    /// First key of every block of `BLOCK_KEYS` keys.
    fences: Vec<u128>,
}

impl Run {
    fn contains(&self, fp: u128, buf: &mut Vec<u8>) -> io::Result<bool> {
        if !self.bloom.may_contain(fp) {
            return Ok(false);
        }
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

/// The largest power of two ≤ `n` (`n` ≥ 1).
fn prev_power_of_two(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.leading_zeros())
}

fn read_fp(b: &[u8]) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    u128::from_le_bytes(a)
}

/// Writes sorted keys to a new run file.
fn write_run(
    sorted: impl Iterator<Item = io::Result<u128>>,
    len: u64,
    level: u32,
    filter_bytes: usize,
) -> io::Result<Run> {
    let file = tempfile::tempfile()?;
    let mut bloom = Bloom::new(len, filter_bytes);
    let mut fences = Vec::with_capacity((len as usize).div_ceil(BLOCK_KEYS));
    let mut w = BufWriter::with_capacity(1 << 20, &file);
    let mut n = 0u64;
    for fp in sorted {
        let fp = fp?;
        if n % BLOCK_KEYS as u64 == 0 {
            fences.push(fp);
        }
        bloom.insert(fp);
        w.write_all(&fp.to_le_bytes())?;
        n += 1;
    }
    w.flush()?;
    drop(w);
    Ok(Run {
        file,
        len: n,
        level,
        bloom,
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
    mem: FpSet,
    memory_keys: usize,
    runs: Vec<Run>,
    probe: Vec<u8>,
    spills: u32,
    filter_budget: usize,
}

impl KeySet {
    /// `memory_keys` bounds the in-memory set (about 20 bytes a key).
    pub fn new(memory_keys: usize) -> KeySet {
        KeySet {
            mem: FpSet::with_capacity_and_hasher(memory_keys.max(1024), Default::default()),
            memory_keys: memory_keys.max(1024),
            runs: Vec::new(),
            probe: Vec::new(),
            spills: 0,
            filter_budget: BLOOM_BUDGET_BYTES,
        }
    }

    /// The same set with another budget for its Bloom filters (tests).
    #[cfg(test)]
    fn with_filter_budget(mut self, bytes: usize) -> KeySet {
        self.filter_budget = bytes.max(64);
        self
    }

    /// Bytes held by the Bloom filters of the runs on disk.
    pub fn filter_bytes(&self) -> usize {
        self.runs.iter().map(|r| r.bloom.bytes()).sum()
    }

    /// Folds the largest filters until all of them fit the budget.
    fn fit_filters(&mut self) {
        while self.filter_bytes() > self.filter_budget {
            let Some(largest) = self.runs.iter_mut().max_by_key(|r| r.bloom.bytes()) else {
                return;
            };
            if !largest.bloom.fold() {
                return;
            }
        }
    }

    /// Inserts a key; `false` when it was already there.
    pub fn insert(&mut self, fp: u128) -> io::Result<bool> {
        // A key is never both in memory and on disk, so the runs can be asked first and the
        // in-memory set probed once, by the insertion itself.
        for run in &self.runs {
            if run.contains(fp, &mut self.probe)? {
                return Ok(false);
            }
        }
        if !self.mem.insert(fp) {
            return Ok(false);
        }
        if self.mem.len() >= self.memory_keys {
            self.spill()?;
        }
        Ok(true)
    }

    /// Number of times the in-memory set was spilled to disk.
    pub fn spills(&self) -> u32 {
        self.spills
    }

    fn spill(&mut self) -> io::Result<()> {
        let mut keys: Vec<u128> = self.mem.drain().collect();
        keys.sort_unstable();
        let len = keys.len() as u64;
        let run = write_run(keys.into_iter().map(Ok), len, 0, self.filter_budget)?;
        self.runs.push(run);
        self.spills += 1;
        self.compact()?;
        self.fit_filters();
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
            let len: u64 = merge.iter().map(|r| r.len).sum();
            let run = write_run(
                MergeSorted::new(&merge)?,
                len,
                level + 1,
                self.filter_budget,
            )?;
            drop(merge);
            self.runs.push(run);
            self.fit_filters();
        }
    }
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
    fn a_folded_filter_still_holds_every_key() {
        let mut bloom = Bloom::new(10_000, 1 << 20);
        for i in 0..10_000 {
            bloom.insert(fp(i));
        }
        let before = bloom.bytes();
        while bloom.fold() {
            assert!((0..10_000).all(|i| bloom.may_contain(fp(i))));
        }
        assert_eq!(bloom.bytes(), 64);
        assert!(before >= 10_000 * BLOOM_BITS_PER_KEY as usize / 8);
    }

    #[test]
    fn filters_stay_within_their_budget_however_many_keys() -> io::Result<()> {
        // GIVEN 4 KiB for all filters (3,276 keys at 10 bits) and 1,024 keys in memory
        let budget = 4096;
        let mut s = KeySet::new(1024).with_filter_budget(budget);
        // WHEN twenty times as many keys arrive
        let keys = 3276 * 20;
        for i in 0..keys {
            assert!(s.insert(fp(i))?, "key {i} reported as duplicate");
            assert!(s.filter_bytes() <= budget, "{} bytes", s.filter_bytes());
        }
        // THEN every key is still found, however small the filters became
        assert!(s.spills() >= 60);
        for i in (0..keys).step_by(37) {
            assert!(!s.insert(fp(i))?, "key {i} not found");
        }
        assert!(s.insert(fp(keys + 1))?);
        Ok(())
    }
}
