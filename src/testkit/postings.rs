//! Multi-leg postings under the checker's properties: generated postings of three and four legs
//! (one or two debited accounts, one to three credited), raced on real threads, judged for
//! conservation and floors, accounting, serial equivalence and idempotency, with a broken
//! control that must be caught.
//!
//! The transfer-shaped kit ([`case`](super::case), [`run`](super::run), [`check`](super::check))
//! already runs every transfer as a two-leg posting ([`Control::Posting`](super::Control::Posting)).
//! This module covers what a two-leg posting cannot: several debits and credits in one atomic
//! unit, where a leg that would break a floor refuses all the others, and where the serial
//! replay has to move money on three or four accounts at once.
//!
//! ```
//! use proptest::prelude::*;
//! use wallet_ledger::testkit::postings::{check_posting_case, posting_case, PostingControl, PostingShape};
//!
//! let mut runner = proptest::test_runner::TestRunner::new(wallet_ledger::testkit::config(2));
//! runner
//!     .run(&posting_case(PostingShape::mixed().threads(2..=3).ops_per_thread(1..=3)), |case| {
//!         let report = check_posting_case(&case, PostingControl::Ledger, "postings_doc")
//!             .map_err(|e| TestCaseError::fail(e.to_string()))?;
//!         prop_assert!(report.is_clean(), "{report}");
//!         Ok(())
//!     })
//!     .expect("postings keep every property");
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::RangeInclusive;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rust_decimal::Decimal;

use super::checker::{
    audit_findings, conservation, final_balances, judge_key, key_holders, read_state, serial_order, write_verdict,
    Judge, KeyedSuccess, State,
};
use super::controls::is_deadlock;
use super::model::{AccountSpec, CurrencySpec, Floor, LedgerSpec};
use super::runner::{ledger_for, KitError, ScratchDatabase, Setup};
use super::{Finding, Property, Stats};
use crate::{AccountId, Audit, Ledger, LedgerError, Posting, PostingReceipt, TransferId};

/// One posting attempt: legs on accounts of the spec (by index) with signed amounts that sum to
/// zero, and an optional idempotency key (the runner prefixes it per case).
#[derive(Clone, PartialEq, Eq)]
pub struct PostingOp {
    /// `(account index, signed amount)`, in the order sent.
    pub legs: Vec<(usize, Decimal)>,
    /// The idempotency key, if any.
    pub key: Option<String>,
}

impl fmt::Debug for PostingOp {
    /// `[a0 -5.00, a2 +3.00, a1 +2.00] key=k1`: one short line per attempt.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let legs: Vec<String> = self
            .legs
            .iter()
            .map(|(a, d)| if d.is_sign_negative() { format!("a{a} {d}") } else { format!("a{a} +{d}") })
            .collect();
        write!(f, "[{}]", legs.join(", "))?;
        if let Some(key) = &self.key {
            write!(f, " key={key}")?;
        }
        Ok(())
    }
}

/// A generated case: a one-currency ledger (USD, 2 places) and, per thread, its postings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostingCase {
    /// The ledger to build.
    pub spec: LedgerSpec,
    /// Per thread, its postings in order; all threads start together.
    pub threads: Vec<Vec<PostingOp>>,
}

/// The shape of generated posting cases.
#[derive(Debug, Clone)]
pub struct PostingShape {
    accounts: RangeInclusive<usize>,
    threads: RangeInclusive<usize>,
    ops_per_thread: RangeInclusive<usize>,
    /// Largest debit leg, in cents.
    max_cents: i64,
    /// Largest opening balance, in cents.
    max_opening_cents: i64,
}

impl PostingShape {
    /// 4 to 8 accounts (floors 0, −50.00 or none; openings up to 200.00), 2 to 8 threads of 1
    /// to 8 postings, debit legs up to 80.00: some postings overdraw and are refused whole.
    pub fn mixed() -> PostingShape {
        PostingShape {
            accounts: 4..=8,
            threads: 2..=8,
            ops_per_thread: 1..=8,
            max_cents: 8_000,
            max_opening_cents: 20_000,
        }
    }

    /// 4 accounts opening with up to 50.00, 8 to 12 threads of 20 to 30 postings each, debit
    /// legs up to 20.00: every posting meets the others on its rows, so a missing lock shows at
    /// once, and accounts run dry, so postings are refused whole.
    pub fn hot() -> PostingShape {
        PostingShape {
            accounts: 4..=4,
            threads: 8..=12,
            ops_per_thread: 20..=30,
            max_cents: 2_000,
            max_opening_cents: 5_000,
        }
    }

    /// Sets the number of threads.
    pub fn threads(mut self, threads: RangeInclusive<usize>) -> PostingShape {
        self.threads = threads;
        self
    }

    /// Sets the number of postings per thread.
    pub fn ops_per_thread(mut self, ops: RangeInclusive<usize>) -> PostingShape {
        self.ops_per_thread = ops;
        self
    }
}

/// Keys a case draws its keyed postings from; each key always carries the same posting, so a
/// repeat is a replay, never a conflict.
const KEYS: usize = 3;

fn floor() -> impl Strategy<Value = Floor> {
    prop_oneof![6 => Just(Floor::Zero), 2 => Just(Floor::Credit(Decimal::new(-5_000, 2))), 1 => Just(Floor::Unbounded)]
}

fn posting_spec(shape: &PostingShape) -> impl Strategy<Value = LedgerSpec> {
    let account = (floor(), 0..=shape.max_opening_cents).prop_map(|(floor, cents)| AccountSpec {
        currency: 0,
        floor,
        opening: Decimal::new(cents, 2),
    });
    proptest::collection::vec(account, shape.accounts.clone())
        .prop_map(|accounts| LedgerSpec { currencies: vec![CurrencySpec { code: "USD".into(), scale: 2 }], accounts })
}

/// A balanced posting on 3 (or, with 4+ accounts, 4) distinct accounts: the first `debits` legs
/// take money out, the credit legs share their total (each at least one cent).
fn posting_op(accounts: usize, max_cents: i64) -> impl Strategy<Value = PostingOp> {
    let widest = accounts.min(4);
    (3..=widest)
        .prop_flat_map(move |k| {
            (
                proptest::sample::subsequence((0..accounts).collect::<Vec<_>>(), k).prop_shuffle(),
                1..k,
                proptest::collection::vec(1..=max_cents, k),
            )
        })
        .prop_map(|(who, debits, mut cents)| {
            let credits = (who.len() - debits) as i64;
            let total: i64 = cents[..debits].iter().sum();
            if total < credits {
                cents[0] += credits - total;
            }
            let total: i64 = cents[..debits].iter().sum();
            // Each credit gets a cent, and the rest in proportion to its weight.
            let weights: i64 = cents[debits..].iter().sum();
            let rest = total - credits;
            let mut shares: Vec<i64> = cents[debits..].iter().map(|w| 1 + rest * w / weights).collect();
            let given: i64 = shares.iter().sum();
            *shares.last_mut().expect("a credit leg") += total - given;
            let amounts = cents[..debits].iter().map(|c| -c).chain(shares);
            let legs = who.into_iter().zip(amounts.map(|c| Decimal::new(c, 2))).collect();
            PostingOp { legs, key: None }
        })
}

#[derive(Debug, Clone)]
enum Choice {
    Fresh(PostingOp),
    Keyed(usize),
}

/// Posting cases of `shape`: a ledger, and per thread its postings; about one in five carries
/// one of three keys, each key always with the same legs.
pub fn posting_case(shape: PostingShape) -> impl Strategy<Value = PostingCase> {
    posting_spec(&shape)
        .prop_flat_map(move |spec| {
            let n = spec.accounts.len();
            let templates = proptest::collection::vec(posting_op(n, shape.max_cents), KEYS);
            let choice = prop_oneof![
                4 => posting_op(n, shape.max_cents).prop_map(Choice::Fresh),
                1 => (0..KEYS).prop_map(Choice::Keyed),
            ];
            let ops = proptest::collection::vec(choice, shape.ops_per_thread.clone());
            (Just(spec), templates, proptest::collection::vec(ops, shape.threads.clone()))
        })
        .prop_map(|(spec, templates, threads)| {
            let threads = threads
                .into_iter()
                .map(|ops| {
                    ops.into_iter()
                        .map(|c| match c {
                            Choice::Fresh(op) => op,
                            Choice::Keyed(k) => PostingOp { key: Some(format!("p{k}")), ..templates[k].clone() },
                        })
                        .collect()
                })
                .collect();
            PostingCase { spec, threads }
        })
}

/// Which posting implementation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PostingControl {
    /// The library's own [`Ledger::post`]: the implementation under test.
    Ledger,
    /// Deliberately broken: one transaction that reads every leg's account without a lock,
    /// checks the floors in Rust, and writes the computed balances back as absolute values
    /// (the read-modify-write race, on several rows at once). Keys are ignored.
    Unlocked,
}

impl PostingControl {
    /// A short lowercase name for reports.
    pub fn name(self) -> &'static str {
        match self {
            PostingControl::Ledger => "ledger",
            PostingControl::Unlocked => "unlocked",
        }
    }

    /// Runs `p` with this implementation.
    pub fn post(self, ledger: &Ledger, p: &Posting) -> Result<PostingReceipt, LedgerError> {
        match self {
            PostingControl::Ledger => ledger.post(p),
            PostingControl::Unlocked => post_unlocked(ledger, p),
        }
    }
}

fn post_unlocked(ledger: &Ledger, p: &Posting) -> Result<PostingReceipt, LedgerError> {
    let mut conn = ledger.connection()?;
    let schema = conn.schema().clone();
    let read = schema.qualify("SELECT balance, min_balance FROM wallet_ledger.accounts WHERE id = $1");
    let write = schema.qualify(
        "UPDATE wallet_ledger.accounts SET balance = $2, version = version + 1 WHERE id = $1 RETURNING balance, version",
    );
    let insert_transfer = schema.qualify(
        "INSERT INTO wallet_ledger.transfers (from_account, to_account, amount) VALUES (NULL, NULL, $1) RETURNING id",
    );
    let insert_entry = schema.qualify(
        "INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version)
         VALUES ($1, $2, $3, $4, $5)",
    );
    let mut tx = conn.client().transaction()?;
    let mut after = Vec::with_capacity(p.legs.len());
    for (account, amount) in &p.legs {
        let row =
            tx.query_opt(read.as_ref(), &[&account.0])?.ok_or(LedgerError::AccountNotFound { account: *account })?;
        let (balance, floor): (Decimal, Option<Decimal>) = (row.get(0), row.get(1));
        if let Some(floor) = floor.filter(|floor| balance + amount < *floor) {
            return Err(LedgerError::InsufficientFunds {
                account: *account,
                available: balance - floor,
                requested: -amount,
            });
        }
        after.push(balance + amount);
    }
    let credits: Decimal = p.legs.iter().map(|(_, d)| *d).filter(|d| d.is_sign_positive()).sum();
    let transfer_id: i64 = tx.query_one(insert_transfer.as_ref(), &[&credits])?.get(0);
    let mut balances = Vec::with_capacity(p.legs.len());
    for ((account, amount), value) in p.legs.iter().zip(after) {
        let row = tx.query_one(write.as_ref(), &[&account.0, &value])?;
        let (balance, version): (Decimal, i64) = (row.get(0), row.get(1));
        tx.execute(insert_entry.as_ref(), &[&transfer_id, &account.0, amount, &balance, &version])?;
        balances.push((*account, balance));
    }
    tx.commit()?;
    Ok(PostingReceipt { transfer_id: TransferId(transfer_id), balances, replayed: false })
}

/// One posting attempt and what came back.
#[derive(Debug)]
pub struct PostingOutcome {
    /// The thread that made it.
    pub thread: usize,
    /// Its position in the thread's list.
    pub position: usize,
    /// The operation.
    pub op: PostingOp,
    /// The posting as sent.
    pub posting: Posting,
    /// What came back.
    pub result: Result<PostingReceipt, LedgerError>,
    /// How long the call took.
    pub elapsed: Duration,
}

/// Everything a posting run did.
#[derive(Debug)]
pub struct PostingRun {
    /// The implementation that ran the postings.
    pub control: PostingControl,
    /// Attempts planned.
    pub attempts: usize,
    /// One per attempt made, by thread then position.
    pub outcomes: Vec<PostingOutcome>,
    /// Threads that panicked before finishing their list.
    pub panicked_threads: Vec<usize>,
}

/// `op` with the setup's account ids and key prefix.
fn to_posting(setup: &Setup, op: &PostingOp) -> Posting {
    let mut posting = Posting::new();
    for (account, amount) in &op.legs {
        posting = posting.leg(setup.accounts[*account], *amount);
    }
    if let Some(key) = &op.key {
        posting = posting.idempotency_key(format!("{}{key}", setup.key_prefix));
    }
    posting
}

/// Runs `threads` on real threads (one pooled connection each, released together from a
/// barrier) with `control`, and records every outcome.
pub fn run_postings(ledger: &Ledger, setup: &Setup, threads: &[Vec<PostingOp>], control: PostingControl) -> PostingRun {
    let barrier = Arc::new(Barrier::new(threads.len().max(1)));
    let mut outcomes = Vec::new();
    let mut panicked_threads = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = threads
            .iter()
            .enumerate()
            .map(|(thread, ops)| {
                let barrier = barrier.clone();
                scope.spawn(move || {
                    barrier.wait();
                    let mut done = Vec::with_capacity(ops.len());
                    for (position, op) in ops.iter().enumerate() {
                        let posting = to_posting(setup, op);
                        let started = Instant::now();
                        let result = control.post(ledger, &posting);
                        let elapsed = started.elapsed();
                        done.push(PostingOutcome { thread, position, op: op.clone(), posting, result, elapsed });
                    }
                    done
                })
            })
            .collect();
        for (thread, handle) in handles.into_iter().enumerate() {
            match handle.join() {
                Ok(done) => outcomes.extend(done),
                Err(_) => panicked_threads.push(thread),
            }
        }
    });
    PostingRun { control, attempts: threads.iter().map(Vec::len).sum(), outcomes, panicked_threads }
}

/// The checker's verdict on one posting run.
#[derive(Debug, Clone)]
pub struct PostingReport {
    /// The implementation that ran.
    pub control: PostingControl,
    /// Outcome counts (a posting counts as one transfer).
    pub stats: Stats,
    /// Every broken property found; empty when the run is clean.
    pub findings: Vec<Finding>,
    /// The ledger's own audit after the run.
    pub audit: Audit,
}

impl PostingReport {
    /// No property broken.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// Whether some finding breaks `property`.
    pub fn caught(&self, property: Property) -> bool {
        self.findings.iter().any(|f| f.property == property)
    }
}

impl fmt::Display for PostingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_verdict(f, &format!("postings, {}", self.control.name()), &self.stats, &self.findings)
    }
}

fn label(o: &PostingOutcome) -> String {
    format!("t{}#{} {:?}", o.thread, o.position, o.op)
}

/// Sorted by account, to compare leg lists whatever their order.
fn sorted(mut legs: Vec<(AccountId, Decimal)>) -> Vec<(AccountId, Decimal)> {
    legs.sort();
    legs
}

/// Judges a posting run against the final database, with nothing else writing:
///
/// - **conservation and floors**: the ledger's audit is clean, and the case's accounts (the
///   issuer included) hold in total what they held before;
/// - **accounting**: every attempt has an outcome; each is a success or `InsufficientFunds` on
///   one of its own bounded debited accounts with `available < requested`; no deadlock, no other
///   error; each committed posting was announced by exactly one success, with the legs asked for;
/// - **serial equivalence**: the committed postings, ordered as their entries record per
///   account, replay serially from the openings without breaking a floor, and give every
///   entry's `balance_after`, every receipt's balances and the final balances;
/// - **idempotency** (the ledger only): a key is held by at most one posting, exactly one success
///   per committed key applied it, and every replay names it with the first receipt's balances.
pub fn check_postings(ledger: &Ledger, setup: &Setup, run: &PostingRun) -> Result<PostingReport, KitError> {
    let audit = ledger.verify()?;
    let state = read_state(ledger, setup)?;
    let mut judge = Judge::new(setup);
    audit_findings(&mut judge, &audit);
    conservation(&mut judge, &state);
    let stats = accounting(&mut judge, run, &state);
    serial_equivalence(&mut judge, run, &state);
    if run.control == PostingControl::Ledger {
        idempotency(&mut judge, run, &state);
    }
    Ok(PostingReport { control: run.control, stats, findings: judge.findings, audit })
}

fn accounting(judge: &mut Judge<'_>, run: &PostingRun, state: &State) -> Stats {
    let mut stats = Stats { attempts: run.attempts, committed: state.transfers.len(), ..Stats::default() };
    if !run.panicked_threads.is_empty() {
        judge.find(Property::Accounting, format!("threads {:?} panicked before finishing", run.panicked_threads));
    }
    if run.outcomes.len() != run.attempts {
        judge.find(Property::Accounting, format!("{} attempts planned, {} outcomes", run.attempts, run.outcomes.len()));
    }
    let mut claimed: HashMap<i64, String> = HashMap::new();
    for o in &run.outcomes {
        let label = label(o);
        match &o.result {
            Err(e) if is_deadlock(e) => {
                stats.deadlocks += 1;
                judge.find(Property::Deadlock, format!("{label}: {e} ({e:?})"));
            }
            Err(LedgerError::InsufficientFunds { account, available, requested }) => {
                stats.refused += 1;
                *stats.refused_by.entry("InsufficientFunds").or_default() += 1;
                let leg = o.posting.legs.iter().find(|(a, _)| a == account).map(|(_, d)| *d);
                let bounded = judge.known.get(account).is_some_and(|k| k.floor != Floor::Unbounded);
                if leg.is_none_or(|d| d != -*requested || !d.is_sign_negative()) || !bounded || available >= requested {
                    judge.find(
                        Property::Accounting,
                        format!("{label}: insufficient funds on {account} with {available} available for {requested}"),
                    );
                }
            }
            Err(e) => {
                stats.errors += 1;
                judge.find(Property::UnexpectedError, format!("{label}: {e} ({e:?})"));
            }
            Ok(r) if r.replayed => stats.replayed += 1,
            Ok(r) => {
                stats.applied += 1;
                let asked = sorted(o.posting.legs.clone());
                match state.legs.get(&r.transfer_id.0) {
                    Some(legs) if state.transfers.contains_key(&r.transfer_id.0) => {
                        if sorted(legs.clone()) != asked {
                            judge.find(
                                Property::Accounting,
                                format!("{label}: committed posting {} has legs {legs:?}", r.transfer_id),
                            );
                        }
                    }
                    _ => judge.find(
                        Property::Accounting,
                        format!("{label}: receipt names posting {}, not committed by the run", r.transfer_id),
                    ),
                }
                if let Some(other) = claimed.insert(r.transfer_id.0, label.clone()) {
                    judge.find(
                        Property::Accounting,
                        format!("{label} and {other} were both told they applied posting {}", r.transfer_id),
                    );
                }
            }
        }
        if let Ok(r) = &o.result {
            let touched: Vec<AccountId> = sorted(r.balances.clone()).into_iter().map(|(a, _)| a).collect();
            let asked: Vec<AccountId> = sorted(o.posting.legs.clone()).into_iter().map(|(a, _)| a).collect();
            if touched != asked {
                judge.find(Property::Accounting, format!("{label}: receipt lists balances of {touched:?}"));
            }
        }
    }
    let phantoms: Vec<i64> = state.transfers.keys().filter(|id| !claimed.contains_key(id)).copied().collect();
    if !phantoms.is_empty() {
        judge.find(Property::Accounting, format!("postings committed without a success to show for it: {phantoms:?}"));
    }
    stats
}

fn serial_equivalence(judge: &mut Judge<'_>, run: &PostingRun, state: &State) {
    let order = serial_order(judge, state);
    let mut balances: HashMap<AccountId, Decimal> = judge.known.iter().map(|(id, k)| (*id, k.opening)).collect();
    let mut after: HashMap<i64, Vec<(AccountId, Decimal)>> = HashMap::new();
    let entries_of: HashMap<(i64, AccountId), Decimal> =
        state.entries.values().flatten().map(|e| ((e.transfer, e.account), e.balance_after)).collect();
    for id in order {
        let legs = state.legs.get(&id).map_or(&[][..], Vec::as_slice);
        let mut moved = Vec::with_capacity(legs.len());
        for (account, amount) in legs {
            let Some(before) = balances.get(account).copied() else {
                judge.find(Property::SerialEquivalence, format!("posting {id} moves money outside the case"));
                continue;
            };
            let replayed = before + amount;
            let floor = judge.known[account].floor.min_balance();
            if amount.is_sign_negative() && floor.is_some_and(|floor| replayed < floor) {
                let name = judge.name(*account);
                judge.find(
                    Property::SerialEquivalence,
                    format!(
                        "serially, posting {id} would be refused: {name} holds {before}, leg {amount}, floor {}",
                        floor.unwrap_or_default()
                    ),
                );
            }
            balances.insert(*account, replayed);
            moved.push((*account, replayed));
            if let Some(recorded) = entries_of.get(&(id, *account)).filter(|r| **r != replayed) {
                let name = judge.name(*account);
                judge.find(
                    Property::SerialEquivalence,
                    format!("posting {id}: the entry on {name} records balance_after {recorded}, serial replay gives {replayed}"),
                );
            }
        }
        after.insert(id, sorted(moved));
    }
    for o in &run.outcomes {
        let Ok(r) = &o.result else { continue };
        let Some(replayed) = after.get(&r.transfer_id.0) else { continue };
        if sorted(r.balances.clone()) != *replayed {
            judge.find(
                Property::SerialEquivalence,
                format!(
                    "{}: receipt of posting {} says {:?}, serial replay gives {replayed:?}",
                    label(o),
                    r.transfer_id,
                    r.balances
                ),
            );
        }
    }
    final_balances(judge, &balances, state);
}

fn idempotency(judge: &mut Judge<'_>, run: &PostingRun, state: &State) {
    let mut by_key: BTreeMap<&str, Vec<&PostingOutcome>> = BTreeMap::new();
    for o in &run.outcomes {
        if let Some(key) = &o.posting.idempotency_key {
            by_key.entry(key.as_str()).or_default().push(o);
        }
    }
    let holders = key_holders(state);
    for (key, outcomes) in by_key {
        let successes: Vec<KeyedSuccess> = outcomes
            .iter()
            .filter_map(|o| {
                o.result.as_ref().ok().map(|r| KeyedSuccess {
                    label: label(o),
                    transfer: r.transfer_id.0,
                    replayed: r.replayed,
                    balances: sorted(r.balances.clone()),
                })
            })
            .collect();
        judge_key(judge, key, holders.get(key).map_or(&[][..], Vec::as_slice), &successes);
    }
}

/// Builds `case` on a new scratch database (dropped afterwards), runs its postings with
/// `control` and checks them. `prefix` names the database (`[a-z0-9_]`).
///
/// # Errors
/// When the database cannot be created or read, or the ledger fails while building the spec:
/// never because a property is broken (that is in the [`PostingReport`]).
pub fn check_posting_case(
    case: &PostingCase,
    control: PostingControl,
    prefix: &str,
) -> Result<PostingReport, KitError> {
    let database = ScratchDatabase::new(prefix)?;
    let ledger = ledger_for(database.url(), case.threads.len())?;
    let setup = Setup::create(&ledger, &case.spec)?;
    let run = run_postings(&ledger, &setup, &case.threads, control);
    let report = check_postings(&ledger, &setup, &run)?;
    drop(ledger);
    drop(database);
    Ok(report)
}
