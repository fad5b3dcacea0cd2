//! In-memory and local-folder adapters of the trade ports: the local twin's store, archive,
//! DLQ and notifier, and the test doubles (scripted failures, request counters).

use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

use super::hash::{FastMap, FastState};
use super::outcome::{DeadLetter, Notification};
use super::ports::{
    compare_sequences, sequence_key, sequence_key_into, BoxError, Commit, CommitOutcome, Conflict,
    DeadLetterSink, DecisionOutcome, Loaded, Notifier, PortfolioStore, SinkError, StoreError,
    StoredPortfolio, TradeArchive,
};
use std::hash::BuildHasher;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these maps half-updated in a way that matters to a test
    // double, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Requests a store received, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreCounters {
    /// `load` calls.
    pub loads: u64,
    /// Portfolio keys asked for across loads.
    pub load_keys: u64,
    /// What the loads would cost as DynamoDB `BatchGetItem` requests (100 keys each).
    pub batch_get_requests: u64,
    /// `commit` calls (= `TransactWriteItems` requests), whatever their result.
    pub commits: u64,
    /// Commits written.
    pub committed: u64,
    /// Commits refused by a condition.
    pub conflicts: u64,
    /// Scripted transient failures returned.
    pub transient_failures: u64,
    /// Items written by committed transactions.
    pub items_written: u64,
    /// The most calls (loads and commits) in flight at once.
    pub max_in_flight: u64,
}

impl StoreCounters {
    /// Every request a DynamoDB store would have received.
    pub fn requests(&self) -> u64 {
        self.batch_get_requests + self.commits
    }
}

/// How a scripted commit failure behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Throttled: nothing is written.
    Transient,
    /// Timed out after the write landed: written, yet reported as a transient failure.
    TransientAfterWrite,
}

#[derive(Debug, thiserror::Error)]
#[error("scripted transient failure of {operation} call {call}")]
pub struct ScriptedFailure {
    pub operation: &'static str,
    pub call: u64,
}

#[derive(Debug, Default)]
struct MemoryState {
    portfolios: FastMap<String, StoredPortfolio>,
    decisions: DecisionIndex,
    counters: StoreCounters,
    load_failures: BTreeSet<u64>,
    commit_failures: BTreeMap<u64, FailureMode>,
}

impl MemoryState {
    /// Whether a stored decision is durable: written by a final commit, or by a pending one
    /// whose final commit has landed (the user's portfolio is at or past its record).
    fn durable(&self, entry: &DecisionEntry) -> bool {
        match entry.pending.as_deref() {
            None => true,
            Some((user, seq)) => self
                .portfolios
                .get(&**user)
                .and_then(|p| p.last_sequence.as_deref())
                .is_some_and(|last| compare_sequences(seq, last) != Ordering::Greater),
        }
    }
}

/// A [`PortfolioStore`] in memory with the same conditional semantics as the DynamoDB one: a
/// commit writes all its items or none, refused when the portfolio's version moved or a trade
/// id is already decided.
#[derive(Debug)]
pub struct MemoryPortfolioStore {
    state: Mutex<MemoryState>,
    lookup_decisions: bool,
    latency: Latency,
    in_flight: AtomicU64,
}

/// One call in flight, counted from its start to its end (dropped).
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn enter(store: &'a MemoryPortfolioStore) -> Self {
        let now = store.in_flight.fetch_add(1, AtomicOrdering::SeqCst) + 1;
        let mut state = lock(&store.state);
        state.counters.max_in_flight = state.counters.max_in_flight.max(now);
        Self(&store.in_flight)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, AtomicOrdering::SeqCst);
    }
}

/// A delay before every store call, to stand in for a real store's round trip: `base` plus a
/// uniformly random part in `[0, jitter]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    pub base: Duration,
    pub jitter: Duration,
}

impl Latency {
    pub fn fixed(base: Duration) -> Self {
        Self {
            base,
            jitter: Duration::ZERO,
        }
    }

    fn is_zero(&self) -> bool {
        self.base.is_zero() && self.jitter.is_zero()
    }

    /// Sleeps on tokio's timer (no-op, and no runtime needed, when zero).
    async fn wait(&self) {
        if self.is_zero() {
            return;
        }
        let mut delay = self.base;
        if !self.jitter.is_zero() {
            let nanos = u64::try_from(self.jitter.as_nanos()).unwrap_or(u64::MAX);
            let random = RandomState::new().build_hasher().finish();
            delay += Duration::from_nanos(random % nanos.saturating_add(1));
        }
        tokio::time::sleep(delay).await;
    }
}

impl Default for MemoryPortfolioStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryPortfolioStore {
    /// A store whose `load` also reports which asked trade ids are decided.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(MemoryState::default()),
            lookup_decisions: true,
            latency: Latency::default(),
            in_flight: AtomicU64::new(0),
        }
    }

    /// A store whose `load` reads portfolios only, like the DynamoDB adapter: duplicates are
    /// found by the commit conditions.
    pub fn without_decision_lookup() -> Self {
        Self {
            lookup_decisions: false,
            ..Self::new()
        }
    }

    /// Room for `decisions` trade ids and `users` portfolios without rehashing (benchmarks).
    pub fn with_capacity(self, decisions: usize, users: usize) -> Self {
        {
            let mut state = lock(&self.state);
            state.decisions.reserve(decisions);
            state.portfolios.reserve(users);
        }
        self
    }

    /// Every `load` and `commit` waits `latency` first, as a round trip to a real store would
    /// (calls in flight at once wait together). Needs a tokio runtime with time enabled.
    pub fn with_latency(mut self, latency: Latency) -> Self {
        self.latency = latency;
        self
    }

    /// The commit call number `call` (1-based, counting every call) fails once with `mode`.
    pub fn fail_commit(&self, call: u64, mode: FailureMode) {
        lock(&self.state).commit_failures.insert(call, mode);
    }

    /// The load call number `call` (1-based) fails once.
    pub fn fail_load(&self, call: u64) {
        lock(&self.state).load_failures.insert(call);
    }

    pub fn counters(&self) -> StoreCounters {
        lock(&self.state).counters
    }

    pub fn portfolio(&self, user_id: &str) -> Option<StoredPortfolio> {
        lock(&self.state).portfolios.get(user_id).cloned()
    }

    /// Every stored portfolio, sorted by user id.
    pub fn portfolios(&self) -> Vec<StoredPortfolio> {
        let mut all: Vec<StoredPortfolio> =
            lock(&self.state).portfolios.values().cloned().collect();
        all.sort_by(|a, b| a.portfolio.user_id.cmp(&b.portfolio.user_id));
        all
    }

    /// `Some(true)` applied, `Some(false)` rejected, `None` not durably decided (never
    /// written, or pending on a final commit that has not landed).
    pub fn decision(&self, trade_id: &str) -> Option<bool> {
        let state = lock(&self.state);
        state
            .decisions
            .get(trade_id)
            .filter(|entry| state.durable(entry))
            .map(|entry| entry.applied)
    }

    /// Durably decided trade ids.
    pub fn decided_count(&self) -> usize {
        let state = lock(&self.state);
        state
            .decisions
            .entries
            .iter()
            .filter(|entry| state.durable(entry))
            .count()
    }

    /// Stored decision items, durable or pending (what a scan of the decisions table sees).
    pub fn decision_items(&self) -> usize {
        lock(&self.state).decisions.len()
    }
}

impl PortfolioStore for MemoryPortfolioStore {
    async fn load(&self, user_ids: &[&str], trade_ids: &[&str]) -> Result<Loaded, StoreError> {
        let _call = InFlight::enter(self);
        self.latency.wait().await;
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        state.counters.loads += 1;
        state.counters.load_keys += user_ids.len() as u64;
        state.counters.batch_get_requests += user_ids.len().div_ceil(100) as u64;
        let call = state.counters.loads;
        if state.load_failures.remove(&call) {
            state.counters.transient_failures += 1;
            let cause: BoxError = Box::new(ScriptedFailure {
                operation: "load",
                call,
            });
            return Err(StoreError::Transient(cause));
        }
        let portfolios = user_ids
            .iter()
            .map(|user| state.portfolios.get(*user).cloned())
            .collect();
        state.decisions.warm(trade_ids);
        let mut decided = HashSet::new();
        if self.lookup_decisions && state.decisions.len() > 0 {
            state.decisions.look_up(trade_ids.iter().copied());
            let decisions = &state.decisions;
            for (id, probe) in trade_ids.iter().zip(&decisions.looked_up) {
                if decisions.entry(probe).is_some_and(|e| state.durable(e)) {
                    decided.insert((*id).to_string());
                }
            }
        }
        Ok(Loaded {
            portfolios,
            decided,
        })
    }

    async fn commit(&self, commit: &Commit<'_>) -> Result<CommitOutcome, StoreError> {
        let _call = InFlight::enter(self);
        self.latency.wait().await;
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        state.counters.commits += 1;
        let call = state.counters.commits;
        let failure = state.commit_failures.remove(&call);
        let transient = || {
            let cause: BoxError = Box::new(ScriptedFailure {
                operation: "commit",
                call,
            });
            StoreError::Transient(cause)
        };
        if failure == Some(FailureMode::Transient) {
            state.counters.transient_failures += 1;
            return Err(transient());
        }

        let MemoryState {
            portfolios,
            decisions,
            counters,
            ..
        } = state;
        let stored = portfolios.get_mut(commit.user_id);
        let version_moved =
            !commit.pending && stored.as_ref().map_or(0, |p| p.version) != commit.expected_version;
        // Check every condition first, then write: all or nothing.
        decisions.reserve(commit.decisions.len());
        decisions.look_up(commit.decisions.iter().map(|d| &*d.trade.trade_id));
        decisions.warm_next(commit.decisions.len());
        let already_decided: Vec<String> = commit
            .decisions
            .iter()
            .zip(&decisions.looked_up)
            .filter(|(d, probe)| {
                decisions.entry(probe).is_some_and(|entry| {
                    !entry
                        .pending
                        .as_deref()
                        .is_some_and(|(user, seq)| commit.may_redo(d, user, seq))
                })
            })
            .map(|(d, _)| d.trade.trade_id.to_string())
            .collect();
        if version_moved || !already_decided.is_empty() {
            counters.conflicts += 1;
            return Ok(CommitOutcome::Conflict(Conflict {
                version_moved,
                already_decided,
            }));
        }
        for (i, d) in commit.decisions.iter().enumerate() {
            let entry = DecisionEntry {
                trade_id: d.trade.trade_id.clone(),
                applied: matches!(d.outcome, DecisionOutcome::Applied(_)),
                pending: commit
                    .pending
                    .then(|| Box::new((d.trade.user_id.clone(), d.sequence_number.to_string()))),
            };
            decisions.put_looked_up(i, entry);
        }
        if !commit.pending {
            match stored {
                Some(slot) => {
                    slot.portfolio.clone_from(commit.portfolio);
                    slot.version = commit.new_version();
                    sequence_key_into(
                        commit.last_sequence,
                        slot.last_sequence.get_or_insert_with(String::new),
                    );
                }
                None => {
                    let stored = StoredPortfolio {
                        portfolio: commit.portfolio.clone(),
                        version: commit.new_version(),
                        last_sequence: Some(sequence_key(commit.last_sequence)),
                    };
                    portfolios.insert(commit.user_id.to_string(), stored);
                }
            }
        }
        state.counters.committed += 1;
        state.counters.items_written += commit.item_count() as u64;
        if failure == Some(FailureMode::TransientAfterWrite) {
            state.counters.transient_failures += 1;
            return Err(transient());
        }
        Ok(CommitOutcome::Committed)
    }
}

/// How many ids ahead of the commits the decision index reads its slots.
const WARM_AHEAD: usize = 160;

/// Decided trade ids, as a linear-probing table of 8-byte slots (a 32-bit tag of the id's
/// hash and the index of its entry) over an append-only list of ids: checking or adding an
/// id touches one slot of the table (one cache miss on a table of millions) and reads the id
/// itself only when tags match.
#[derive(Debug, Default)]
struct DecisionIndex {
    /// Length 0 or a power of two, at most half full; `tag == 0` is empty.
    slots: Vec<Slot>,
    /// Decisions in the order they were first written.
    entries: Vec<DecisionEntry>,
    hasher: FastState,
    /// What the last [`DecisionIndex::look_up`] found, one per id.
    looked_up: Vec<Probe>,
    /// Home slots of the current batch's ids (see [`DecisionIndex::warm`]), read up to
    /// `warmed`.
    homes: Vec<usize>,
    warmed: usize,
}

/// One stored decision.
#[derive(Debug)]
struct DecisionEntry {
    trade_id: Arc<str>,
    applied: bool,
    /// Written by a pending commit: (user id, sequence number); durable once the user's
    /// portfolio has moved to or past that sequence number.
    pending: Option<Box<(Arc<str>, String)>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    tag: u32,
    entry: u32,
}

impl Slot {
    /// The slot's tag for a hash whose low bits pick the home slot: its high half, never 0.
    fn tag(hash: u64) -> u32 {
        ((hash >> 32) as u32).max(1)
    }
}

/// An id's hash and its entry, if stored.
#[derive(Debug, Clone, Copy)]
struct Probe {
    hash: u64,
    entry: Option<u32>,
}

impl DecisionIndex {
    fn hash_of(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The stored decision of `id`, if any.
    fn get(&self, id: &str) -> Option<&DecisionEntry> {
        self.find(self.hash_of(id), id)
            .map(|e| &self.entries[e as usize])
    }

    /// The entry of `id`, whose hash is `hash`.
    fn find(&self, hash: u64, id: &str) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let tag = Slot::tag(hash);
        let mut i = hash as usize & mask;
        loop {
            let slot = self.slots[i];
            if slot.tag == 0 {
                return None;
            }
            if slot.tag == tag && *self.entries[slot.entry as usize].trade_id == *id {
                return Some(slot.entry);
            }
            i = (i + 1) & mask;
        }
    }

    /// Finds every id of a commit into [`DecisionIndex::looked_up`], hashing each once for
    /// the check and the write that follows.
    fn look_up<'a>(&mut self, ids: impl Iterator<Item = &'a str>) {
        self.looked_up.clear();
        for id in ids {
            let hash = self.hash_of(id);
            let entry = self.find(hash, id);
            self.looked_up.push(Probe { hash, entry });
        }
    }

    /// Notes the home slots of a batch's ids, in the order the commits will ask for them
    /// (the processor loads them user by user), and reads the first few into cache: each
    /// commit then reads the slots [`WARM_AHEAD`] ids ahead of it (see
    /// [`DecisionIndex::warm_next`]), so a slot arrives in cache before its commit and is
    /// still there when it comes. A different order only makes the warming useless.
    fn warm(&mut self, ids: &[&str]) {
        self.homes.clear();
        self.warmed = 0;
        if self.slots.is_empty() {
            return;
        }
        let mask = self.slots.len() - 1;
        let hasher = &self.hasher;
        self.homes
            .extend(ids.iter().map(|id| hasher.hash_one(*id) as usize & mask));
        self.warm_next(WARM_AHEAD);
    }

    /// Reads the next `n` noted home slots. The reads do not depend on each other or feed
    /// anything but a discarded count, so their misses overlap with the commit's own work.
    fn warm_next(&mut self, n: usize) {
        let end = (self.warmed + n).min(self.homes.len());
        let empty = self.homes[self.warmed.min(end)..end]
            .iter()
            .filter(|h| self.slots.get(**h).is_some_and(|s| s.tag == 0))
            .count();
        std::hint::black_box(empty);
        self.warmed = end;
    }

    /// The stored decision a probe found.
    fn entry(&self, probe: &Probe) -> Option<&DecisionEntry> {
        probe.entry.map(|e| &self.entries[e as usize])
    }

    /// Writes `entry`, whose id is the `i`-th of the last look-up, replacing a stored one of
    /// the same id. The caller has reserved room. A miss is probed again (from cached slots,
    /// without hashing) in case an earlier write of the same look-up added the id.
    fn put_looked_up(&mut self, i: usize, entry: DecisionEntry) {
        let probe = self.looked_up[i];
        match probe
            .entry
            .or_else(|| self.find(probe.hash, &entry.trade_id))
        {
            Some(index) => self.entries[index as usize] = entry,
            None => self.insert_new(probe.hash, entry),
        }
    }

    /// Adds an id the caller has checked is not stored, with room reserved.
    fn insert_new(&mut self, hash: u64, entry: DecisionEntry) {
        let index = self.entries.len() as u32;
        self.place(hash, index);
        self.entries.push(entry);
    }

    fn place(&mut self, hash: u64, entry: u32) {
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        while self.slots[i].tag != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = Slot {
            tag: Slot::tag(hash),
            entry,
        };
    }

    /// Room for `more` ids at most half full.
    fn reserve(&mut self, more: usize) {
        let needed = (self.entries.len() + more) * 2;
        if needed <= self.slots.len() {
            return;
        }
        // Slots keep a tag, not the whole hash: the ids are hashed again.
        self.slots = vec![Slot::default(); needed.next_power_of_two().max(16)];
        for index in 0..self.entries.len() {
            let hash = self.hash_of(&self.entries[index].trade_id);
            self.place(hash, index as u32);
        }
        self.entries.reserve(more);
    }
}

/// The archive on a local folder laid out like the bucket: `<root>/<key>`.
#[derive(Debug, Clone)]
pub struct LocalFolderArchive {
    root: PathBuf,
}

impl LocalFolderArchive {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl TradeArchive for LocalFolderArchive {
    async fn put(&self, key: &str, body: &[u8]) -> Result<(), SinkError> {
        let path = self.root.join(key);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Write then rename, so a reader never sees half an object.
        let tmp = path.with_extension("gz.partial");
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }
}

/// An archive that keeps the objects in memory, by key (a retry overwrites).
#[derive(Debug, Default)]
pub struct RecordingArchive {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl RecordingArchive {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        lock(&self.objects).clone()
    }
}

impl TradeArchive for RecordingArchive {
    async fn put(&self, key: &str, body: &[u8]) -> Result<(), SinkError> {
        lock(&self.objects).insert(key.to_string(), body.to_vec());
        Ok(())
    }
}

/// A DLQ that records every dead letter.
#[derive(Debug, Default)]
pub struct RecordingDeadLetters {
    letters: Mutex<Vec<DeadLetter>>,
}

impl RecordingDeadLetters {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn letters(&self) -> Vec<DeadLetter> {
        lock(&self.letters).clone()
    }

    pub fn len(&self) -> usize {
        lock(&self.letters).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl DeadLetterSink for RecordingDeadLetters {
    async fn send(&self, letters: &[DeadLetter]) -> Result<(), SinkError> {
        lock(&self.letters).extend_from_slice(letters);
        Ok(())
    }
}

/// A notifier that counts messages by kind and, unless built with
/// [`RecordingNotifier::counting`], keeps them.
#[derive(Debug)]
pub struct RecordingNotifier {
    keep: bool,
    kept: Mutex<Vec<Notification>>,
    counts: Mutex<BTreeMap<String, u64>>,
}

impl Default for RecordingNotifier {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordingNotifier {
    pub fn new() -> Self {
        Self {
            keep: true,
            kept: Mutex::new(Vec::new()),
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counts only (for long replays).
    pub fn counting() -> Self {
        Self {
            keep: false,
            ..Self::new()
        }
    }

    pub fn notifications(&self) -> Vec<Notification> {
        lock(&self.kept).clone()
    }

    /// Messages published, by kind (`TradeConfirmed`, `TradeRejected`).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        lock(&self.counts).clone()
    }
}

impl Notifier for RecordingNotifier {
    async fn publish(&self, notifications: &[Notification]) -> Result<(), SinkError> {
        {
            let mut counts = lock(&self.counts);
            for n in notifications {
                match counts.get_mut(n.kind.as_str()) {
                    Some(count) => *count += 1,
                    None => {
                        counts.insert(n.kind.as_str().to_string(), 1);
                    }
                }
            }
        }
        if self.keep {
            lock(&self.kept).extend_from_slice(notifications);
        }
        Ok(())
    }
}
