//! The combiner: in-process group commit, adaptive by default, tuned with [`CombineConfig`].
//!
//! Concurrent callers queue their items in the process; one of them (the leader) takes the
//! queue and applies it with the function it was given, as one batch. Meanwhile the next items
//! queue up behind it, so batches grow with the load by themselves. For transfers, that
//! function is one [batch](crate::Ledger::transfer_batch): one transaction, one ordered lock of
//! every account, one WAL flush for all of them (`ops::transfer` says how each caller still
//! gets its own outcome).
//!
//! Two modes:
//! - **adaptive** (the default of every ledger): a caller that finds fewer than
//!   [`ADAPTIVE_IN_FLIGHT`] calls in flight and nobody queued goes straight to the server with
//!   its own item (the `solo` function: no queue, no wait), unless batches are forming and a
//!   call in flight holds one of its keys (accounts); while no more than
//!   [`ADAPTIVE_FEW_CALLERS`] callers are in the combiner, a caller whose keys no call in flight
//!   holds goes straight too, however many calls are in flight; otherwise it queues, and the
//!   first queued caller applies what is queued when there is room in flight, waiting at most
//!   [`ADAPTIVE_WAIT`] for as many callers as the previous batch had. A lone caller never
//!   waits; under load batch sizes follow the load.
//! - **tuned** ([`CombineConfig`]): every item queues; one batch runs at a time, and its leader
//!   waits up to `max_wait` for as many items as the previous batch had.
//!
//! In both, the callers of a batch whose items share a key (they were serial on those rows
//! anyway) are awaited: until they are back with their next item, at most `max_wait` after the
//! batch was delivered, they queue rather than go alone, and a leader with nothing else in
//! flight waits for them. Otherwise the callers who queued while a batch ran would go as the
//! next batch without them, and a closed loop of callers would split into two groups taking
//! turns, each batch half the size it could be.
//!
//! Rules:
//! - no thread or runtime is added: the leader is a caller's own thread, blocked in its own
//!   call anyway;
//! - each caller waits on its own (a parked thread, or an async task's `Notify`) and is woken
//!   alone: when its result is in, or when it is the first queued caller and a collector is
//!   wanted;
//! - adaptive: at most [`ADAPTIVE_IN_FLIGHT`] calls in flight (at most
//!   [`ADAPTIVE_FEW_CALLERS`] while that few callers are in), and a batch never beside another
//!   call on one of its keys; tuned: one batch at a time (`docs/design.md`, "The combiner",
//!   says why);
//! - every caller gets exactly the result the apply function gave its item; when the function
//!   panics, the other callers of that batch get the combiner's failure value and the leader's
//!   thread resumes the panic.
//!
//! The module does no I/O and decides everything in steps ([`Combiner::enter`], `turn`,
//! `collect`, `deliver`) that each door drives with its own way of waiting: `submit` here for
//! threads, `aio::combine` for tasks. Its logic is tested without a database (`tests` below).

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::limits::BATCH_ITEMS_MAX;

/// Settings of the combiner (see [`LedgerBuilder::combine`](crate::LedgerBuilder::combine)).
///
/// ```no_run
/// # fn main() -> Result<(), wallet_ledger::LedgerError> {
/// use std::time::Duration;
/// use wallet_ledger::{CombineConfig, Ledger};
///
/// let ledger = Ledger::builder("postgresql://app@localhost/payments")
///     .combine(CombineConfig { max_batch: 256, max_wait: Duration::from_micros(200) })
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CombineConfig {
    /// Most transfers applied in one batch (1 to [`BATCH_ITEMS_MAX`]). Default 128.
    pub max_batch: usize,
    /// How long a leader waits at most, from the moment the oldest queued transfer arrived, for
    /// more transfers before it applies what is queued. Default 500 µs. It waits for as many
    /// transfers as were queued when the previous batch was taken (the callers of a batch come
    /// back with their next transfer; the first leader waits for `max_batch`), so under steady
    /// load batches stay full, and a lone caller waits only once.
    /// Zero applies at once: batches still form, from the transfers that queue while the
    /// previous batch runs.
    pub max_wait: Duration,
}

/// Calls in flight before an adaptive combiner queues a caller.
const ADAPTIVE_IN_FLIGHT: usize = crate::limits::COMBINE_IN_FLIGHT;

/// Most items in one batch of an adaptive combiner.
const ADAPTIVE_MAX_BATCH: usize = crate::limits::COMBINE_BATCH_MAX;

/// Callers in an adaptive combiner at or below which a caller whose keys no call in flight
/// holds goes straight to the server even when [`ADAPTIVE_IN_FLIGHT`] calls are in flight: so
/// few callers would make batches of two or three, which cost the server about as much as the
/// same transfers sent alone and would make them wait for room (`docs/benchmarks.md`).
const ADAPTIVE_FEW_CALLERS: usize = 2 * ADAPTIVE_IN_FLIGHT;

/// How long the leader of an adaptive combiner's batch waits at most for as many callers as
/// its previous batch had (it waits only when callers already queue: never a lone caller).
const ADAPTIVE_WAIT: Duration = Duration::from_micros(500);

impl Default for CombineConfig {
    fn default() -> Self {
        CombineConfig { max_batch: 128, max_wait: Duration::from_micros(500) }
    }
}

impl CombineConfig {
    /// Panics on a setting out of range (at build time rather than at the first call).
    pub(crate) fn check(&self) {
        assert!(
            (1..=BATCH_ITEMS_MAX).contains(&self.max_batch),
            "CombineConfig::max_batch must be 1 to {BATCH_ITEMS_MAX}, not {}",
            self.max_batch
        );
    }
}

/// How a waiting caller is woken: its parked thread (the synchronous door), or its task's
/// `Notify` (the async door). A wake-up before the wait is kept (an unpark token, a Notify
/// permit), so none is lost.
pub(crate) trait Wake: Send + Sync {
    fn wake(&self);
}

impl Wake for Thread {
    fn wake(&self) {
        self.unpark();
    }
}

#[cfg(feature = "aio")]
impl Wake for tokio::sync::Notify {
    fn wake(&self) {
        self.notify_one();
    }
}

/// An item waiting in the queue, and the caller to wake when its result is in.
pub(crate) struct Queued<T> {
    ticket: u64,
    item: T,
    since: Instant,
    caller: Arc<dyn Wake>,
}

/// Where a submitted item goes.
pub(crate) enum Entry<T> {
    /// Straight to the server with the solo function; then [`Combiner::solo_done`] with the keys.
    Solo(T, [i64; 2]),
    /// Queued under this ticket: the caller asks [`Combiner::turn`] what to do.
    Queued(u64),
}

/// What a queued caller does next.
pub(crate) enum Turn<R> {
    /// Its result is in.
    Done(R),
    /// It collects the next batch ([`Combiner::collect`]).
    Lead,
    /// It waits to be woken, then asks again.
    Wait,
}

/// What the collector of a batch does next.
pub(crate) enum Collect<T> {
    /// Wait at most this long for more callers (woken early when enough queued), then ask again.
    Wait(Duration),
    /// Apply these items and [`Combiner::deliver`] their results.
    Take(Batch<T>),
}

/// A batch taken from the queue, in flight until delivered.
pub(crate) struct Batch<T> {
    queued: Vec<Queued<T>>,
}

impl<T: Clone> Batch<T> {
    /// The items, in queue order.
    pub(crate) fn items(&self) -> Vec<T> {
        self.queued.iter().map(|q| q.item.clone()).collect()
    }
}

struct State<T, R> {
    queue: VecDeque<Queued<T>>,
    /// The caller collecting the next batch, if any (at most one at a time).
    collector: Option<Arc<dyn Wake>>,
    /// Calls in flight: batches being applied and (adaptive) callers gone straight to the server.
    in_flight: usize,
    /// Callers between [`Combiner::enter`] and their result (alone, queued or in a batch).
    callers: usize,
    /// Items queued when the last batch was taken: how many are likely to come back, which the
    /// next collector waits for (clamped to 1..=`max_batch`).
    last_batch: usize,
    /// Results not yet picked up by their callers, by ticket.
    done: HashMap<u64, R>,
    next_ticket: u64,
    /// Keys (accounts) of the items in flight, with how many calls in flight hold each.
    busy: HashMap<i64, usize>,
    /// Batches among the calls in flight.
    batches: usize,
    /// Tickets taken into a batch whose callers stopped waiting: their results are dropped.
    abandoned: HashSet<u64>,
    /// Callers of the last delivered batch whose items shared a key, not yet back (each caller
    /// that enters counts one down), and when that batch was delivered.
    returning: usize,
    delivered: Instant,
}

impl<T, R> State<T, R> {
    /// How many queued items the collector waits for (at most `max_wait`).
    fn target(&self, max_batch: usize) -> usize {
        self.last_batch.clamp(1, max_batch)
    }

    fn hold(&mut self, keys: [i64; 2]) {
        for k in keys {
            *self.busy.entry(k).or_insert(0) += 1;
        }
    }

    fn release(&mut self, keys: [i64; 2]) {
        for k in keys {
            if let Some(n) = self.busy.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.busy.remove(&k);
                }
            }
        }
    }
}

/// The queue and its one lock, shared by every caller of one [`Ledger`](crate::Ledger) and its
/// clones. `T` is a queued item, `R` its result.
pub(crate) struct Combiner<T, R> {
    config: CombineConfig,
    /// Whether callers may go straight to the server when few calls are in flight.
    adaptive: bool,
    /// Calls allowed in flight at once.
    limit: usize,
    /// The keys an item locks (a transfer's two accounts): a call that shares one with a call
    /// in flight would only wait for its locks, so it queues instead.
    keys: fn(&T) -> [i64; 2],
    state: Mutex<State<T, R>>,
    /// The result of a caller whose batch the apply function did not finish (it panicked, or
    /// returned fewer results than items).
    failed: fn() -> R,
}

impl<T: Clone, R> Combiner<T, R> {
    /// A tuned combiner: every item queues, one batch at a time.
    ///
    /// # Panics
    /// On a `config` out of range (see [`CombineConfig`]).
    pub(crate) fn new(config: CombineConfig, keys: fn(&T) -> [i64; 2], failed: fn() -> R) -> Self {
        Self::with_mode(config, false, 1, keys, failed)
    }

    /// An adaptive combiner: a caller goes straight to the server while fewer than
    /// [`ADAPTIVE_IN_FLIGHT`] calls are in flight and nobody is queued, unless a call in flight
    /// holds one of its keys while batches are forming (a batch in flight, or the last batch
    /// had company), or while at most [`ADAPTIVE_FEW_CALLERS`] callers are in and no call in
    /// flight holds one of its keys; the others are combined. So at low load two lone calls on
    /// one account are sent at once, as without a combiner (the second waits for the first's
    /// locks in the server, its request already there), and under load every caller on a busy
    /// account joins the next batch.
    pub(crate) fn adaptive(keys: fn(&T) -> [i64; 2], failed: fn() -> R) -> Self {
        let config = CombineConfig { max_batch: ADAPTIVE_MAX_BATCH, max_wait: ADAPTIVE_WAIT };
        Self::with_mode(config, true, ADAPTIVE_IN_FLIGHT, keys, failed)
    }

    /// Whether this combiner is adaptive.
    pub(crate) fn is_adaptive(&self) -> bool {
        self.adaptive
    }

    fn with_mode(
        config: CombineConfig,
        adaptive: bool,
        limit: usize,
        keys: fn(&T) -> [i64; 2],
        failed: fn() -> R,
    ) -> Self {
        config.check();
        // Until a first hand-over has counted the callers, a collector waits for a full batch
        // (at most `max_wait`): a lone caller waits once.
        let state = State {
            queue: VecDeque::new(),
            collector: None,
            in_flight: 0,
            callers: 0,
            last_batch: if adaptive { 1 } else { config.max_batch },
            done: HashMap::new(),
            next_ticket: 0,
            busy: HashMap::new(),
            batches: 0,
            abandoned: HashSet::new(),
            returning: 0,
            delivered: Instant::now(),
        };
        Combiner { config, adaptive, limit, keys, state: Mutex::new(state), failed }
    }

    /// How much longer the callers of the last shared-key batch are awaited, if some are not
    /// back and `max_wait` has not passed since its delivery.
    fn awaited(&self, state: &State<T, R>) -> Option<Duration> {
        if state.returning == 0 {
            return None;
        }
        self.config.max_wait.checked_sub(state.delivered.elapsed()).filter(|left| !left.is_zero())
    }

    /// How much longer the collector waits before it takes the queue (`None`: take it now):
    /// until as many items are queued as the previous batch had, at most `max_wait` after the
    /// oldest arrived; and, with nothing else in flight, until the callers of the last
    /// shared-key batch are back ([`Self::awaited`]). A full batch never waits.
    fn wait_left(&self, state: &State<T, R>) -> Option<Duration> {
        if state.queue.len() >= self.config.max_batch {
            return None;
        }
        if let Some(oldest) = state.queue.front().map(|q| q.since) {
            let waited = oldest.elapsed();
            if state.queue.len() < state.target(self.config.max_batch) && waited < self.config.max_wait {
                return Some(self.config.max_wait - waited);
            }
        }
        if state.in_flight == 0 {
            return self.awaited(state);
        }
        None
    }

    /// Whether two items of `batch` share a key (then they were serial on it in the server, and
    /// their callers are awaited for the next batch).
    fn shares_a_key(&self, batch: &Batch<T>) -> bool {
        let mut keys: Vec<i64> = Vec::with_capacity(2 * batch.queued.len());
        for q in &batch.queued {
            let [a, b] = (self.keys)(&q.item);
            keys.push(a);
            if b != a {
                keys.push(b);
            }
        }
        keys.sort_unstable();
        keys.windows(2).any(|pair| pair[0] == pair[1])
    }

    /// Whether so few callers are in the combiner that one on free keys goes straight to the
    /// server whatever is in flight ([`ADAPTIVE_FEW_CALLERS`]).
    fn few_callers(&self, state: &State<T, R>) -> bool {
        self.adaptive && state.callers <= ADAPTIVE_FEW_CALLERS
    }

    /// Whether `item` shares a key with a call in flight.
    fn collides(&self, state: &State<T, R>, item: &T) -> bool {
        (self.keys)(item).iter().any(|k| state.busy.contains_key(k))
    }

    /// Whether a queued caller may start collecting the next batch: nobody collects, there is
    /// room in flight, and, with a call already in flight, no queued item would wait for its
    /// locks (then the next batch waits for it to end, and takes everything queued meanwhile).
    fn collector_wanted(&self, state: &State<T, R>) -> bool {
        state.collector.is_none()
            && !state.queue.is_empty()
            && (state.in_flight < self.limit || self.few_callers(state))
            && (state.in_flight == 0 || !state.queue.iter().any(|q| self.collides(state, &q.item)))
    }

    /// Wakes the first queued caller when a collector is wanted (it checks again, under the
    /// lock, and takes the role).
    fn wake_collector(&self, state: &State<T, R>) {
        if self.collector_wanted(state) {
            if let Some(front) = state.queue.front() {
                front.caller.wake();
            }
        }
    }

    pub(crate) fn config(&self) -> CombineConfig {
        self.config
    }

    fn lock(&self) -> MutexGuard<'_, State<T, R>> {
        // Nothing panics while holding the lock; a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The first step of a call: straight to the server (adaptive, with room in flight and
    /// nobody queued, unless batches are forming and a call in flight holds one of its keys, or
    /// the callers of a shared-key batch are awaited), or queued. `caller` is how this caller
    /// is woken while queued.
    pub(crate) fn enter(&self, item: T, caller: Arc<dyn Wake>) -> Entry<T> {
        let mut state = self.lock();
        state.callers += 1;
        let awaited = self.awaited(&state).is_some();
        state.returning = if awaited { state.returning - 1 } else { 0 };
        let collides = self.collides(&state, &item);
        let forming = state.batches > 0 || state.last_batch > 1;
        if self.adaptive
            && !awaited
            && state.queue.is_empty()
            && state.collector.is_none()
            && ((state.in_flight < self.limit && !(forming && collides)) || (self.few_callers(&state) && !collides))
        {
            let keys = (self.keys)(&item);
            state.in_flight += 1;
            state.hold(keys);
            return Entry::Solo(item, keys);
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push_back(Queued { ticket, item, since: Instant::now(), caller });
        if let Some(collector) = &state.collector {
            if self.wait_left(&state).is_none() {
                collector.wake();
            }
        }
        Entry::Queued(ticket)
    }

    /// A solo call with these keys ended (however it ended).
    pub(crate) fn solo_done(&self, keys: [i64; 2]) {
        let mut state = self.lock();
        state.in_flight -= 1;
        state.callers -= 1;
        state.release(keys);
        self.wake_collector(&state);
    }

    /// What the queued caller `ticket` does next; `caller` becomes the collector's wake-up
    /// when it leads.
    pub(crate) fn turn(&self, ticket: u64, caller: &Arc<dyn Wake>) -> Turn<R> {
        let mut state = self.lock();
        if let Some(result) = state.done.remove(&ticket) {
            state.callers -= 1;
            return Turn::Done(result);
        }
        if self.collector_wanted(&state) && state.queue.iter().any(|q| q.ticket == ticket) {
            state.collector = Some(Arc::clone(caller));
            return Turn::Lead;
        }
        Turn::Wait
    }

    /// The collector's step: take a batch once as many callers queued as the previous batch
    /// had (bounded by `max_batch`) or the oldest waited `max_wait`, and the awaited callers of
    /// a shared-key batch are back or `max_wait` passed since its delivery; else wait.
    pub(crate) fn collect(&self) -> Collect<T> {
        let mut state = self.lock();
        if let Some(left) = self.wait_left(&state) {
            return Collect::Wait(left);
        }
        state.returning = 0;
        let take = state.queue.len().min(self.config.max_batch);
        state.last_batch = state.queue.len();
        let queued: Vec<Queued<T>> = state.queue.drain(..take).collect();
        state.collector = None;
        state.in_flight += 1;
        state.batches += 1;
        for q in &queued {
            state.hold((self.keys)(&q.item));
        }
        self.wake_collector(&state);
        Collect::Take(Batch { queued })
    }

    /// Ends a batch: every caller's own result (`results`, one per item in order; an item
    /// without one, or every item when `results` is `None` because the apply function did not
    /// finish, gets the failure value), and wakes them, except `leader`, whose caller reads its
    /// result itself.
    pub(crate) fn deliver(&self, batch: Batch<T>, results: Option<Vec<R>>, leader: Option<u64>) {
        // Decided before the lock: it depends on the batch alone.
        let awaits_callers = batch.queued.len() > 1 && self.shares_a_key(&batch);
        let mut state = self.lock();
        state.in_flight -= 1;
        state.batches -= 1;
        for q in &batch.queued {
            state.release((self.keys)(&q.item));
        }
        if awaits_callers {
            state.returning = batch.queued.len();
            state.delivered = Instant::now();
        }
        let mut results = results.unwrap_or_default().into_iter();
        for q in &batch.queued {
            let result = results.next().unwrap_or_else(self.failed);
            if state.abandoned.remove(&q.ticket) {
                continue;
            }
            state.done.insert(q.ticket, result);
        }
        for q in batch.queued.iter().filter(|q| Some(q.ticket) != leader) {
            q.caller.wake();
        }
        self.wake_collector(&state);
    }

    /// A queued caller `ticket` gave up waiting (its future was dropped): still queued, its item
    /// leaves the queue unsent; taken, its result is dropped when it comes. A collector that
    /// gives up hands its role on.
    #[cfg_attr(not(feature = "aio"), allow(dead_code))]
    pub(crate) fn abandon(&self, ticket: u64, was_collector: bool) {
        let mut state = self.lock();
        state.callers -= 1;
        if was_collector {
            state.collector = None;
        }
        let before = state.queue.len();
        state.queue.retain(|q| q.ticket != ticket);
        if state.queue.len() == before && state.done.remove(&ticket).is_none() {
            state.abandoned.insert(ticket);
        }
        self.wake_collector(&state);
    }

    /// The synchronous door: returns `item`'s own result, from `solo(item)` at once when it goes
    /// straight, otherwise queued, collecting batches and applying them with `apply` (one result
    /// per item, in order) when it is this caller's turn. The caller's thread parks while it
    /// waits, and is the leader's thread when it leads.
    pub(crate) fn submit(&self, item: T, solo: &dyn Fn(&T) -> R, apply: &dyn Fn(&[T]) -> Vec<R>) -> R {
        let me: Arc<dyn Wake> = Arc::new(thread::current());
        let ticket = match self.enter(item, Arc::clone(&me)) {
            Entry::Solo(item, keys) => {
                let result = catch_unwind(AssertUnwindSafe(|| solo(&item)));
                self.solo_done(keys);
                return result.unwrap_or_else(|panic| resume_unwind(panic));
            }
            Entry::Queued(ticket) => ticket,
        };
        loop {
            match self.turn(ticket, &me) {
                Turn::Done(result) => return result,
                Turn::Wait => thread::park(),
                Turn::Lead => {
                    let batch = loop {
                        match self.collect() {
                            Collect::Wait(timeout) => thread::park_timeout(timeout),
                            Collect::Take(batch) => break batch,
                        }
                    };
                    let results = catch_unwind(AssertUnwindSafe(|| apply(&batch.items())));
                    match results {
                        Ok(results) => self.deliver(batch, Some(results), Some(ticket)),
                        Err(panic) => {
                            // The leader's own caller unwinds with the panic and never
                            // collects a result.
                            self.abandon_taken(ticket);
                            self.deliver(batch, None, Some(ticket));
                            resume_unwind(panic);
                        }
                    }
                }
            }
        }
    }

    /// The leader's own result will never be read (its thread unwinds).
    fn abandon_taken(&self, ticket: u64) {
        let mut state = self.lock();
        state.callers -= 1;
        state.abandoned.insert(ticket);
    }
}

/// The combiners of one ledger, one per lane
/// ([`LedgerBuilder::combining_lanes`](crate::LedgerBuilder::combining_lanes)): a call joins the
/// lane of the smaller of its two keys modulo the number of lanes, so the calls on one pair of
/// accounts always meet in one lane and keep combining there. Lanes are independent: each has
/// its own queue, leader and calls in flight. What a caller gets does not depend on its lane
/// (two lanes' batches on a shared account wait for each other's row locks in the server, each
/// locking its accounts in ascending order).
pub(crate) struct Lanes<C>(Box<[C]>);

impl<C> Lanes<C> {
    /// `n` lanes (at least one), each made by `make`.
    pub(crate) fn new(n: usize, mut make: impl FnMut() -> C) -> Self {
        Lanes((0..n.max(1)).map(|_| make()).collect())
    }

    /// How many lanes there are.
    pub(crate) fn count(&self) -> usize {
        self.0.len()
    }

    /// The first lane (every lane has the same settings).
    pub(crate) fn first(&self) -> &C {
        &self.0[0]
    }

    /// The lane of a call on `keys`.
    pub(crate) fn of(&self, keys: [i64; 2]) -> &C {
        match &*self.0 {
            [one] => one,
            lanes => &lanes[lane(keys, lanes.len())],
        }
    }
}

/// The lane of a call on `keys` among `n` (at least one): the smaller key modulo `n`.
fn lane(keys: [i64; 2], n: usize) -> usize {
    let n = i64::try_from(n).unwrap_or(i64::MAX).max(1);
    usize::try_from(keys[0].min(keys[1]).rem_euclid(n)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    const FAILED: i64 = -1;

    /// Keys that never collide: each item its own.
    fn distinct(x: &i64) -> [i64; 2] {
        [*x, *x]
    }

    /// The solo function of a tuned combiner, which never calls it.
    fn no_solo(_: &i64) -> i64 {
        unreachable!("a tuned combiner queues every item")
    }

    /// A shared apply function for the test threads.
    type Apply = Arc<dyn Fn(&[i64]) -> Vec<i64> + Send + Sync>;

    fn combiner(max_batch: usize, max_wait: Duration) -> Arc<Combiner<i64, i64>> {
        Arc::new(Combiner::new(CombineConfig { max_batch, max_wait }, distinct, || FAILED))
    }

    /// Runs `threads` threads that each submit `per_thread` distinct items through `apply`.
    fn run(
        c: &Arc<Combiner<i64, i64>>,
        threads: usize,
        per_thread: usize,
        apply: Apply,
    ) -> Vec<(i64, std::thread::Result<i64>)> {
        let start = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (c, apply, start) = (Arc::clone(c), Arc::clone(&apply), Arc::clone(&start));
                thread::spawn(move || {
                    start.wait();
                    (0..per_thread)
                        .map(|i| {
                            let item = (t * per_thread + i) as i64;
                            (item, catch_unwind(AssertUnwindSafe(|| c.submit(item, &no_solo, &*apply))))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a caller thread ended")).collect()
    }

    #[test]
    fn a_lone_caller_gets_its_own_result_in_a_batch_of_one() {
        let c = combiner(8, Duration::ZERO);
        let sizes = Mutex::new(Vec::new());
        let apply = |items: &[i64]| {
            sizes.lock().unwrap().push(items.len());
            items.iter().map(|i| i * 10).collect()
        };
        assert_eq!(c.submit(7, &no_solo, &apply), 70);
        assert_eq!(c.submit(8, &no_solo, &apply), 80);
        assert_eq!(*sizes.lock().unwrap(), vec![1, 1]);
    }

    #[test]
    fn concurrent_callers_are_combined_and_each_gets_exactly_its_own_result() {
        let c = combiner(16, Duration::from_micros(200));
        let applied = Arc::new(Mutex::new(Vec::new()));
        let largest = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicBool::new(false));
        let apply: Apply = {
            let (applied, largest, running) = (Arc::clone(&applied), Arc::clone(&largest), Arc::clone(&running));
            Arc::new(move |items: &[i64]| {
                assert!(!running.swap(true, Ordering::SeqCst), "two batches ran at once");
                largest.fetch_max(items.len(), Ordering::SeqCst);
                applied.lock().unwrap().extend_from_slice(items);
                thread::sleep(Duration::from_millis(1));
                running.store(false, Ordering::SeqCst);
                items.iter().map(|i| i * 2 + 1).collect()
            })
        };
        let results = run(&c, 8, 40, apply);
        assert_eq!(results.len(), 320);
        for (item, result) in &results {
            assert_eq!(*result.as_ref().expect("no panic"), item * 2 + 1, "item {item} got another's result");
        }
        let mut applied = applied.lock().unwrap().clone();
        applied.sort_unstable();
        assert_eq!(applied, (0..320).collect::<Vec<i64>>(), "every item applied exactly once");
        let largest = largest.load(Ordering::SeqCst);
        assert!(largest > 1, "8 threads on a 1 ms apply never formed a batch");
        assert!(largest <= 16, "a batch of {largest} exceeds max_batch");
    }

    #[test]
    fn a_panicking_apply_fails_every_caller_of_its_batch_and_unwinds_the_leader() {
        let c = combiner(64, Duration::from_millis(20));
        let apply: Apply = Arc::new(|_: &[i64]| panic!("apply broke"));
        let results = run(&c, 4, 1, apply);
        let panicked = results.iter().filter(|(_, r)| r.is_err()).count();
        assert!(panicked >= 1, "the leader's thread resumes the panic");
        for (item, result) in &results {
            if let Ok(value) = result {
                assert_eq!(*value, FAILED, "item {item} got a result from a batch that panicked");
            }
        }
        // The combiner is usable afterwards: nothing was left running.
        assert_eq!(c.submit(5, &no_solo, &|items: &[i64]| items.to_vec()), 5);
    }

    #[test]
    fn items_the_apply_function_gave_no_result_get_the_failure_value() {
        let c = combiner(8, Duration::from_millis(50));
        let apply: Apply = Arc::new(|items: &[i64]| items[..items.len() - 1].iter().map(|i| i + 100).collect());
        let results = run(&c, 3, 1, apply);
        let failed = results.iter().filter(|(_, r)| *r.as_ref().unwrap() == FAILED).count();
        assert!(failed >= 1, "each batch's last item has no result");
        for (item, result) in &results {
            let value = *result.as_ref().unwrap();
            assert!(value == FAILED || value == item + 100, "item {item} got {value}");
        }
    }

    #[test]
    #[should_panic(expected = "max_batch must be 1 to")]
    fn a_batch_bound_of_zero_is_refused_at_construction() {
        let _ =
            Combiner::<i64, i64>::new(CombineConfig { max_batch: 0, max_wait: Duration::ZERO }, distinct, || FAILED);
    }

    #[test]
    fn an_adaptive_combiner_sends_a_lone_caller_straight_and_combines_under_load() {
        let c: Arc<Combiner<i64, i64>> = Arc::new(Combiner::adaptive(distinct, || FAILED));
        // Alone: the solo function, never a batch.
        let never: &dyn Fn(&[i64]) -> Vec<i64> = &|_| panic!("a lone caller was batched");
        for i in 0..5 {
            assert_eq!(c.submit(i, &|x| x * 10, never), i * 10);
        }
        // Under load: never more calls at once than ADAPTIVE_IN_FLIGHT, or than
        // ADAPTIVE_FEW_CALLERS while so few callers are in (the threads that finish first leave
        // fewer behind), every item its own result, and batches of more than one form while calls
        // are in flight.
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let largest = Arc::new(AtomicUsize::new(0));
        let enter = {
            let (in_flight, most) = (Arc::clone(&in_flight), Arc::clone(&most));
            move || {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(2));
                in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        };
        let threads = 12;
        let start = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads as i64)
            .map(|t| {
                let (c, start, enter, largest) =
                    (Arc::clone(&c), Arc::clone(&start), enter.clone(), Arc::clone(&largest));
                thread::spawn(move || {
                    start.wait();
                    for i in 0..20 {
                        let item = t * 100 + i;
                        let solo = |x: &i64| {
                            enter();
                            x + 1
                        };
                        let apply = |items: &[i64]| {
                            largest.fetch_max(items.len(), Ordering::SeqCst);
                            enter();
                            items.iter().map(|x| x + 1).collect()
                        };
                        assert_eq!(c.submit(item, &solo, &apply), item + 1);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("caller");
        }
        let most = most.load(Ordering::SeqCst);
        assert!(most <= ADAPTIVE_IN_FLIGHT.max(ADAPTIVE_FEW_CALLERS), "{most} calls in flight");
        assert!(largest.load(Ordering::SeqCst) > 1, "no batch formed under load");
    }

    /// An adaptive combiner whose waits last `max_wait`.
    fn adaptive_waiting(keys: fn(&i64) -> [i64; 2], max_wait: Duration) -> Combiner<i64, i64> {
        let config = CombineConfig { max_batch: ADAPTIVE_MAX_BATCH, max_wait };
        Combiner::with_mode(config, true, ADAPTIVE_IN_FLIGHT, keys, || FAILED)
    }

    /// `solos` lone calls straight to the server, then `items` queued behind them and taken as
    /// one batch, which is in flight when this returns.
    fn batch_in_flight(c: &Combiner<i64, i64>, me: &Arc<dyn Wake>, solos: i64, items: [i64; 2]) -> (Batch<i64>, u64) {
        let solos: Vec<[i64; 2]> = (1..=solos)
            .map(|x| match c.enter(-x, Arc::clone(me)) {
                Entry::Solo(_, keys) => keys,
                Entry::Queued(_) => panic!("a lone call queued"),
            })
            .collect();
        let tickets = items.map(|x| match c.enter(x, Arc::clone(me)) {
            Entry::Queued(ticket) => ticket,
            Entry::Solo(..) => panic!("a call went beside a full flight"),
        });
        solos.into_iter().for_each(|keys| c.solo_done(keys));
        assert!(matches!(c.turn(tickets[0], me), Turn::Lead));
        match c.collect() {
            Collect::Take(batch) => (batch, tickets[0]),
            Collect::Wait(_) => panic!("the first batch waited"),
        }
    }

    fn queued(c: &Combiner<i64, i64>, me: &Arc<dyn Wake>, item: i64) -> u64 {
        match c.enter(item, Arc::clone(me)) {
            Entry::Queued(ticket) => ticket,
            Entry::Solo(..) => panic!("item {item} went alone"),
        }
    }

    #[test]
    fn the_callers_of_a_shared_key_batch_are_awaited_for_the_next_one() {
        let me: Arc<dyn Wake> = Arc::new(thread::current());
        let c = adaptive_waiting(|_| [1, 2], Duration::from_secs(60));
        let (first, leader) = batch_in_flight(&c, &me, 2, [3, 4]);
        // Callers arriving meanwhile queue behind the batch on their keys.
        let t5 = queued(&c, &me, 5);
        queued(&c, &me, 6);
        c.deliver(first, Some(vec![30, 40]), Some(leader));
        // As many are queued as the last batch had, and nothing is in flight; yet the collector
        // waits for the two callers of the delivered batch, who queue even with nothing in
        // flight.
        assert!(matches!(c.turn(t5, &me), Turn::Lead));
        assert!(matches!(c.collect(), Collect::Wait(_)), "the next batch left without the callers of the last");
        queued(&c, &me, 7);
        assert!(matches!(c.collect(), Collect::Wait(_)), "the next batch left without one caller of the last");
        queued(&c, &me, 8);
        match c.collect() {
            Collect::Take(batch) => assert_eq!(batch.items(), vec![5, 6, 7, 8]),
            Collect::Wait(_) => panic!("the collector waited with every caller back"),
        }
    }

    #[test]
    fn callers_are_awaited_only_after_a_shared_key_batch_and_at_most_max_wait() {
        let me: Arc<dyn Wake> = Arc::new(thread::current());
        // Items on distinct keys were not serial in the server: their callers are not awaited.
        let c = adaptive_waiting(distinct, Duration::from_secs(60));
        let (batch, leader) = batch_in_flight(&c, &me, ADAPTIVE_FEW_CALLERS as i64, [3, 4]);
        c.deliver(batch, Some(vec![30, 40]), Some(leader));
        assert!(matches!(c.enter(5, Arc::clone(&me)), Entry::Solo(..)), "awaited after a batch on distinct keys");
        // On a shared key, for at most `max_wait` after the delivery.
        let c = adaptive_waiting(|_| [1, 2], Duration::from_millis(1));
        let (batch, leader) = batch_in_flight(&c, &me, 2, [3, 4]);
        c.deliver(batch, Some(vec![30, 40]), Some(leader));
        thread::sleep(Duration::from_millis(5));
        assert!(matches!(c.enter(5, Arc::clone(&me)), Entry::Solo(..)), "still awaited after max_wait");
    }

    #[test]
    fn few_callers_on_free_keys_go_straight_beside_a_full_flight_and_more_queue() {
        let me: Arc<dyn Wake> = Arc::new(thread::current());
        let c = adaptive_waiting(distinct, Duration::ZERO);
        // Up to ADAPTIVE_FEW_CALLERS callers on keys no call in flight holds: all alone.
        let solos: Vec<[i64; 2]> = (0..ADAPTIVE_FEW_CALLERS as i64)
            .map(|x| match c.enter(x, Arc::clone(&me)) {
                Entry::Solo(_, keys) => keys,
                Entry::Queued(_) => panic!("caller {x} of {ADAPTIVE_FEW_CALLERS} queued on a free key"),
            })
            .collect();
        assert!(solos.len() > ADAPTIVE_IN_FLIGHT);
        // One more: the flight is full and the callers are no longer few.
        let extra = queued(&c, &me, 100);
        // A caller ending makes them few again, and room in flight for the queued one's batch.
        c.solo_done(solos[0]);
        assert!(matches!(c.turn(extra, &me), Turn::Lead));
        match c.collect() {
            Collect::Take(batch) => assert_eq!(batch.items(), vec![100]),
            Collect::Wait(_) => panic!("a lone queued caller waited"),
        }

        // Few callers, but on a key a call in flight holds: queued, as under load.
        let c = adaptive_waiting(|x| [*x % 2, 10 + *x % 2], Duration::ZERO);
        for x in 0..ADAPTIVE_IN_FLIGHT as i64 {
            assert!(matches!(c.enter(x, Arc::clone(&me)), Entry::Solo(..)), "caller {x} queued");
        }
        queued(&c, &me, 2);
    }

    #[test]
    fn an_adaptive_combiner_never_runs_a_call_beside_a_batch_on_one_key() {
        let c: Arc<Combiner<i64, i64>> = Arc::new(Combiner::adaptive(|_| [1, 2], || FAILED));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let batching = Arc::new(AtomicBool::new(false));
        let largest = Arc::new(AtomicUsize::new(0));
        let threads = 8;
        let start = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads as i64)
            .map(|t| {
                let (c, start, in_flight, largest, batching) = (
                    Arc::clone(&c),
                    Arc::clone(&start),
                    Arc::clone(&in_flight),
                    Arc::clone(&largest),
                    Arc::clone(&batching),
                );
                thread::spawn(move || {
                    start.wait();
                    for i in 0..15 {
                        let item = t * 100 + i;
                        let enter = |batch: bool| {
                            let before = in_flight.fetch_add(1, Ordering::SeqCst);
                            assert!(before < ADAPTIVE_IN_FLIGHT, "{} calls in flight", before + 1);
                            if batch {
                                assert_eq!(before, 0, "a batch beside another call on its key");
                                batching.store(true, Ordering::SeqCst);
                            } else {
                                assert!(!batching.load(Ordering::SeqCst), "a lone call beside a batch on its key");
                            }
                            thread::sleep(Duration::from_millis(1));
                            batching.store(false, Ordering::SeqCst);
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                        };
                        let solo = |x: &i64| {
                            enter(false);
                            x + 1
                        };
                        let apply = |items: &[i64]| {
                            largest.fetch_max(items.len(), Ordering::SeqCst);
                            enter(true);
                            items.iter().map(|x| x + 1).collect()
                        };
                        assert_eq!(c.submit(item, &solo, &apply), item + 1);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("caller");
        }
        assert!(largest.load(Ordering::SeqCst) > 1, "no batch formed on the shared key");
    }

    #[test]
    fn a_pair_of_keys_has_one_lane_whichever_way_and_lanes_share_the_keys() {
        let lanes = Lanes::new(4, || AtomicUsize::new(0));
        assert_eq!(lanes.count(), 4);
        for (a, b) in [(1, 2), (7, 3), (400, 401), (-5, 9), (i64::MIN, i64::MAX)] {
            assert!(std::ptr::eq(lanes.of([a, b]), lanes.of([b, a])), "{a} and {b}");
        }
        // Consecutive smaller keys go round the lanes.
        let used: HashSet<usize> = (10..14).map(|k| lane([k, k + 100], 4)).collect();
        assert_eq!(used.len(), 4);
        assert_eq!(lane([-1, 3], 4), 3);
        // One lane (and zero asked for) is always the first.
        let one = Lanes::new(0, || AtomicUsize::new(0));
        assert_eq!(one.count(), 1);
        assert!(std::ptr::eq(one.of([5, 9]), one.first()));
    }

    /// The most batches running at once when two callers on keys 0 and 1 submit together
    /// through `lanes` tuned lanes (each batch waits up to `patience` for the other to run).
    fn batches_at_once(lanes: usize, patience: Duration) -> usize {
        let lanes = Arc::new(Lanes::new(lanes, || Combiner::new(CombineConfig::default(), distinct, || FAILED)));
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let start = Arc::new(Barrier::new(2));
        let handles: Vec<_> = (0..2i64)
            .map(|item| {
                let (lanes, running, most, start) =
                    (Arc::clone(&lanes), Arc::clone(&running), Arc::clone(&most), Arc::clone(&start));
                thread::spawn(move || {
                    let apply = |items: &[i64]| {
                        // Counted while running; a batch that saw the other one running
                        // leaves at once, and the other sees the count it left behind.
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        let since = Instant::now();
                        while most.load(Ordering::SeqCst) < 2 && since.elapsed() < patience {
                            thread::sleep(Duration::from_millis(1));
                        }
                        running.fetch_sub(1, Ordering::SeqCst);
                        items.to_vec()
                    };
                    start.wait();
                    assert_eq!(lanes.of([item, item]).submit(item, &no_solo, &apply), item);
                })
            })
            .collect();
        for h in handles {
            h.join().expect("a caller thread ended");
        }
        most.load(Ordering::SeqCst)
    }

    #[test]
    fn batches_of_two_lanes_run_at_once_and_one_lane_runs_one_at_a_time() {
        assert_eq!(batches_at_once(2, Duration::from_secs(20)), 2, "two lanes' batches did not overlap");
        // The control: one lane, the same callers: never two batches at once.
        assert_eq!(batches_at_once(1, Duration::from_millis(300)), 1);
    }
}
