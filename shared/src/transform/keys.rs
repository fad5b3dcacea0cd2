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
/// Bloom filter bits per key, and the cap on one filter's size.
const BLOOM_BITS_PER_KEY: u64 = 10;
const BLOOM_MAX_BITS: u64 = 256 * 1024 * 1024;
const BLOOM_HASHES: u32 = 7;

/// A blocked Bloom filter: all the bits of one key live in one 512-bit block (one cache line),
/// so a probe costs one memory access.
struct Bloom {
    blocks: Vec<[u64; 8]>,
}

impl Bloom {
    fn new(keys: u64) -> Bloom {
        let nbits = (keys * BLOOM_BITS_PER_KEY).clamp(512, BLOOM_MAX_BITS);
        Bloom {
            blocks: vec![[0; 8]; nbits.div_ceil(512) as usize],
        }
    }
    /// The block and, for each of the `BLOOM_HASHES` bits, its word and mask.
    fn locate(&self, fp: u128) -> (usize, [(usize, u64); BLOOM_HASHES as usize]) {
        let block = ((fp as u64) % self.blocks.len() as u64) as usize;
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
) -> io::Result<Run> {
    let file = tempfile::tempfile()?;
    let mut bloom = Bloom::new(len);
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
        }
    }

    /// Inserts a key; `false` when it was already there.
    pub fn insert(&mut self, fp: u128) -> io::Result<bool> {
        if self.mem.contains(&fp) {
            return Ok(false);
        }
        for run in &self.runs {
            if run.contains(fp, &mut self.probe)? {
                return Ok(false);
            }
        }
        self.mem.insert(fp);
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
        let run = write_run(keys.into_iter().map(Ok), len, 0)?;
        self.runs.push(run);
        self.spills += 1;
        self.compact()
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
            let run = write_run(MergeSorted::new(&merge)?, len, level + 1)?;
            self.runs.push(run);
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
}
