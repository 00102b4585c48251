//! Issue 16's operations under the threaded properties: reversals (partial and whole, several
//! threads reversing one payment at once), freezes and unfreezes, closes, floor and ceiling
//! changes and sweeps, mixed with plain transfers and raced on real threads; then judged by a
//! checker whose serial replay covers every one of them ([`check_operations`]).
//!
//! The transfer-shaped kit ([`case`](super::case), [`Shape`](super::Shape)) keeps its public
//! types; this module has its own, like [`postings`](super::postings):
//!
//! | Part | Here |
//! |---|---|
//! | generate | [`operation_case`] of an [`OperationShape`] ([`mixed`](OperationShape::mixed), [`hot`](OperationShape::hot)) → [`OperationCase`] |
//! | build | [`OperationSetup::create`] (the accounts of [`Setup::create`], then the case's opening ceilings) |
//! | run | [`run_operations`] with an [`OpControl`] → [`OperationRun`] |
//! | check | [`check_operations`] → [`OperationReport`] |
//!
//! **One issuer per account for state changes.** A freeze, unfreeze, close or limit change
//! writes no entry and does not move the account's version: the database records *where* among
//! the account's entries it happened (the version its answer carries) but not its order against
//! another state change of the same account at the same version. The generator therefore gives
//! the state changes of account `i` to thread `i % threads` alone, whose calls are sequential:
//! their order is the thread's. Transfers, sweeps and reversals on that account come from every
//! thread and race the changes on the row lock. `docs/testing.md` has the full argument.
//!
//! ```
//! use proptest::prelude::*;
//! use wallet_ledger::testkit::operations::{check_operation_case, operation_case, OpControl, OperationShape};
//!
//! let mut runner = proptest::test_runner::TestRunner::new(wallet_ledger::testkit::config(1));
//! runner
//!     .run(&operation_case(OperationShape::mixed().threads(2..=3).ops_per_thread(2..=4)), |case| {
//!         let report = check_operation_case(&case, OpControl::Ledger, "operations_doc")
//!             .map_err(|e| TestCaseError::fail(e.to_string()))?;
//!         prop_assert!(report.is_clean(), "{report}");
//!         Ok(())
//!     })
//!     .expect("the operations keep every property");
//! ```

mod checker;

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use rust_decimal::Decimal;

use super::model::{AccountSpec, CurrencySpec, Floor, LedgerSpec};
use super::operation_controls::OperationControl;
use super::runner::{ledger_for, KitError, ScratchDatabase, Setup};
use crate::{Account, AccountId, Ledger, LedgerError, Receipt, Reversal, Transfer, TransferId};

pub use checker::{check_operations, OperationReport, Rule};

/// One payment of a case: a keyed transfer (key `pay{j}`) that threads send first and then
/// reverse. Every thread sending payment `j` sends the same content, so all but one replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payment {
    /// The payer's index.
    pub from: usize,
    /// The payee's index.
    pub to: usize,
    /// The amount.
    pub amount: Decimal,
}

/// One attempt of an operations workload. Accounts are indices into the spec.
#[derive(Clone, PartialEq, Eq)]
pub enum Action {
    /// A plain transfer.
    Transfer {
        /// Debited account.
        from: usize,
        /// Credited account.
        to: usize,
        /// Amount.
        amount: Decimal,
    },
    /// A sweep ([`Transfer::up_to_available`]): `amount` or all that is available, if less.
    Sweep {
        /// Debited account.
        from: usize,
        /// Credited account.
        to: usize,
        /// The most it may move.
        amount: Decimal,
    },
    /// Sends payment `j` of [`OperationCase::payments`] under its key.
    Pay(usize),
    /// Reverses payment `j` (the transfer its key committed): `Some` a part, `None` all that is
    /// left. When the payment is not committed yet, the runner records it as skipped.
    Reverse {
        /// Index into [`OperationCase::payments`].
        payment: usize,
        /// The part to reverse, or everything left.
        amount: Option<Decimal>,
    },
    /// [`Ledger::freeze`].
    Freeze(usize),
    /// [`Ledger::unfreeze`].
    Unfreeze(usize),
    /// [`Ledger::close`].
    Close(usize),
    /// [`Ledger::set_min_balance`] (`None`: unbounded).
    SetMin(usize, Option<Decimal>),
    /// [`Ledger::set_max_balance`] (`None`: no ceiling).
    SetMax(usize, Option<Decimal>),
}

impl Action {
    /// The account whose state this action changes, if it is a state or limit change.
    pub fn changed_account(&self) -> Option<usize> {
        match self {
            Action::Freeze(a)
            | Action::Unfreeze(a)
            | Action::Close(a)
            | Action::SetMin(a, _)
            | Action::SetMax(a, _) => Some(*a),
            _ => None,
        }
    }

    /// A short name of the kind of action (`transfer`, `sweep`, `pay`, `reverse`, `freeze`,
    /// `unfreeze`, `close`, `set-min`, `set-max`).
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Transfer { .. } => "transfer",
            Action::Sweep { .. } => "sweep",
            Action::Pay(_) => "pay",
            Action::Reverse { .. } => "reverse",
            Action::Freeze(_) => "freeze",
            Action::Unfreeze(_) => "unfreeze",
            Action::Close(_) => "close",
            Action::SetMin(..) => "set-min",
            Action::SetMax(..) => "set-max",
        }
    }
}

impl fmt::Debug for Action {
    /// `a0->a1 5.00`, `sweep a0->a1 <=5.00`, `pay0`, `reverse pay1 2.00`, `freeze a2`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limit = |l: &Option<Decimal>| l.map_or_else(|| "none".to_string(), |d| d.to_string());
        match self {
            Action::Transfer { from, to, amount } => write!(f, "a{from}->a{to} {amount}"),
            Action::Sweep { from, to, amount } => write!(f, "sweep a{from}->a{to} <={amount}"),
            Action::Pay(j) => write!(f, "pay{j}"),
            Action::Reverse { payment, amount: Some(a) } => write!(f, "reverse pay{payment} {a}"),
            Action::Reverse { payment, amount: None } => write!(f, "reverse pay{payment} all"),
            Action::Freeze(a) => write!(f, "freeze a{a}"),
            Action::Unfreeze(a) => write!(f, "unfreeze a{a}"),
            Action::Close(a) => write!(f, "close a{a}"),
            Action::SetMin(a, l) => write!(f, "min a{a}={}", limit(l)),
            Action::SetMax(a, l) => write!(f, "max a{a}={}", limit(l)),
        }
    }
}

/// A generated case: a one-currency ledger (USD, 2 places) with opening ceilings, the payments
/// the threads send and reverse, and per thread its actions.
#[derive(Clone, PartialEq, Eq)]
pub struct OperationCase {
    /// The ledger to build.
    pub spec: LedgerSpec,
    /// Per account (by index), its ceiling when the workload starts.
    pub ceilings: Vec<Option<Decimal>>,
    /// The keyed payments (`pay0`, `pay1`, ...).
    pub payments: Vec<Payment>,
    /// Per thread, its actions in order; all threads start together.
    pub threads: Vec<Vec<Action>>,
}

impl OperationCase {
    /// How many actions the workload attempts in total.
    pub fn attempts(&self) -> usize {
        self.threads.iter().map(Vec::len).sum()
    }
}

impl fmt::Debug for OperationCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "OperationCase {{")?;
        for (i, a) in self.spec.accounts.iter().enumerate() {
            let floor = a.floor.min_balance().map_or_else(|| "unbounded".to_string(), |d| d.to_string());
            let ceiling = self.ceilings.get(i).copied().flatten().map_or_else(|| "none".to_string(), |d| d.to_string());
            writeln!(f, "    a{i}: floor {floor} ceiling {ceiling} opening {}", a.opening)?;
        }
        for (j, p) in self.payments.iter().enumerate() {
            writeln!(f, "    pay{j}: a{}->a{} {}", p.from, p.to, p.amount)?;
        }
        for (t, actions) in self.threads.iter().enumerate() {
            writeln!(f, "    t{t}: {actions:?}")?;
        }
        write!(f, "}}")
    }
}

/// The shape of generated operation cases. Amounts are in cents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationShape {
    accounts: RangeInclusive<usize>,
    threads: RangeInclusive<usize>,
    ops_per_thread: RangeInclusive<usize>,
    opening_cents: RangeInclusive<i64>,
    amount_cents: RangeInclusive<i64>,
    payments: RangeInclusive<usize>,
    /// Largest headroom of an opening ceiling above the opening balance, in cents.
    headroom_cents: i64,
}

impl OperationShape {
    /// 3 to 8 accounts (floors 0, negative or none; half with a ceiling up to 200.00 above the opening), 2 to 6 threads of 2
    /// to 10 actions, 1 to 3 payments.
    pub fn mixed() -> OperationShape {
        OperationShape {
            accounts: 3..=8,
            threads: 2..=6,
            ops_per_thread: 2..=10,
            opening_cents: 0..=20_000,
            amount_cents: 1..=8_000,
            payments: 1..=3,
            headroom_cents: 20_000,
        }
    }

    /// A hot spot: 3 or 4 accounts, 6 to 10 threads of 15 to 25 actions, 2 or 3 payments that
    /// every thread pays and then reverses in parts, half the accounts with a ceiling at most
    /// 60.00 above the opening: the freezes, limit changes and sweeps race
    /// transfers on the same rows, and reversals of one payment race each other on its row.
    pub fn hot() -> OperationShape {
        OperationShape {
            accounts: 3..=4,
            threads: 6..=10,
            ops_per_thread: 15..=25,
            opening_cents: 5_000..=50_000,
            amount_cents: 1..=3_000,
            payments: 2..=3,
            headroom_cents: 6_000,
        }
    }

    /// Sets the number of threads.
    pub fn threads(mut self, threads: RangeInclusive<usize>) -> OperationShape {
        self.threads = threads;
        self
    }

    /// Sets the number of actions per thread.
    pub fn ops_per_thread(mut self, ops: RangeInclusive<usize>) -> OperationShape {
        self.ops_per_thread = ops;
        self
    }
}

/// An action before it knows its ledger.
#[derive(Debug, Clone)]
enum Choice {
    Transfer(Index, Index, i64),
    Sweep(Index, Index, i64),
    Pay(Index),
    /// Payment, part (`None`: all), in hundredths of the payment.
    Reverse(Index, Option<u8>),
    Freeze(Index),
    Unfreeze(Index),
    Close(Index),
    SetMin(Index, Option<i64>),
    SetMax(Index, Option<i64>),
}

fn choice(shape: &OperationShape) -> BoxedStrategy<Choice> {
    let cents = shape.amount_cents.clone();
    let big = *shape.opening_cents.end() * 2;
    prop_oneof![
        30 => (any::<Index>(), any::<Index>(), cents.clone()).prop_map(|(a, b, c)| Choice::Transfer(a, b, c)),
        6 => (any::<Index>(), any::<Index>(), cents.clone()).prop_map(|(a, b, c)| Choice::Sweep(a, b, c)),
        // A sweep asking for more than any account holds: it takes everything available.
        3 => (any::<Index>(), any::<Index>()).prop_map(move |(a, b)| Choice::Sweep(a, b, big.max(1))),
        3 => any::<Index>().prop_map(Choice::Pay),
        14 => (any::<Index>(), 1..=25u8).prop_map(|(p, part)| Choice::Reverse(p, Some(part))),
        4 => any::<Index>().prop_map(|p| Choice::Reverse(p, None)),
        3 => any::<Index>().prop_map(Choice::Freeze),
        5 => any::<Index>().prop_map(Choice::Unfreeze),
        1 => any::<Index>().prop_map(Choice::Close),
        3 => (any::<Index>(), proptest::option::weighted(0.8, 0..=5_000i64)).prop_map(|(a, f)| Choice::SetMin(a, f)),
        4 => (any::<Index>(), proptest::option::weighted(0.8, 0..=big.max(1))).prop_map(|(a, c)| Choice::SetMax(a, c)),
    ]
    .boxed()
}

fn floor() -> impl Strategy<Value = Floor> {
    prop_oneof![6 => Just(Floor::Zero), 2 => (1..=5_000i64).prop_map(|c| Floor::Credit(Decimal::new(-c, 2))), 1 => Just(Floor::Unbounded)]
}

type RawCase = (Vec<Vec<Choice>>, Vec<(Floor, i64, Option<i64>)>, Vec<(Index, Index, i64)>);

/// Operation cases of `shape`. Each thread first sends one payment (thread `t` payment
/// `t % payments`), so that reversals later in the run find it committed; about one action in
/// five is a reversal (partial, or of all that is left); a close comes after a sweep of
/// everything out of the account; state and limit changes of account `i`
/// come from thread `i % threads` only (a change drawn on a thread that owns no account becomes
/// a transfer).
pub fn operation_case(shape: OperationShape) -> impl Strategy<Value = OperationCase> {
    let threads = proptest::collection::vec(
        proptest::collection::vec(choice(&shape), shape.ops_per_thread.clone()),
        shape.threads.clone(),
    );
    let account =
        (floor(), shape.opening_cents.clone(), proptest::option::weighted(0.5, 0..=shape.headroom_cents.max(1)));
    let accounts = proptest::collection::vec(account, shape.accounts.clone());
    let payment = (any::<Index>(), any::<Index>(), shape.amount_cents.clone());
    let payments = proptest::collection::vec(payment, shape.payments.clone());
    (threads, accounts, payments).prop_map(|raw: RawCase| resolve(raw))
}

fn resolve((threads, accounts, payments): RawCase) -> OperationCase {
    let cents = |c: i64| Decimal::new(c, 2);
    let n = accounts.len();
    let spec = LedgerSpec {
        currencies: vec![CurrencySpec { code: "USD".into(), scale: 2 }],
        accounts: accounts
            .iter()
            .map(|(floor, opening, _)| AccountSpec { currency: 0, floor: *floor, opening: cents(*opening) })
            .collect(),
    };
    // An opening ceiling sits above the opening balance (a ceiling never starts broken).
    let ceilings = accounts.iter().map(|(_, opening, extra)| extra.map(|e| cents(opening + e))).collect();
    let other = |from: usize, to: &Index| {
        let k = to.index(n - 1);
        if k >= from {
            k + 1
        } else {
            k
        }
    };
    let payments: Vec<Payment> = payments
        .iter()
        .map(|(from, to, c)| {
            let from = from.index(n);
            Payment { from, to: other(from, to), amount: cents(*c) }
        })
        .collect();
    let thread_count = threads.len();
    let resolved = threads
        .iter()
        .enumerate()
        .map(|(t, choices)| {
            let owned: Vec<usize> = (0..n).filter(|i| i % thread_count == t).collect();
            let mut actions = vec![Action::Pay(t % payments.len())];
            for c in choices {
                let own = |i: &Index| (!owned.is_empty()).then(|| *i.get(&owned));
                let fallback = |i: &Index| {
                    let from = i.index(n);
                    Action::Transfer { from, to: other(from, i), amount: cents(1 + i.index(999) as i64) }
                };
                let action = match c {
                    Choice::Transfer(a, b, c) => {
                        let from = a.index(n);
                        Action::Transfer { from, to: other(from, b), amount: cents(*c) }
                    }
                    Choice::Sweep(a, b, c) => {
                        let from = a.index(n);
                        Action::Sweep { from, to: other(from, b), amount: cents(*c) }
                    }
                    Choice::Pay(p) => Action::Pay(p.index(payments.len())),
                    Choice::Reverse(p, part) => {
                        let payment = p.index(payments.len());
                        let whole = payments[payment].amount;
                        let amount = part.map(|part| {
                            let share = (whole * Decimal::from(part) / Decimal::from(100)).round_dp(2);
                            share.max(Decimal::new(1, 2))
                        });
                        Action::Reverse { payment, amount }
                    }
                    Choice::Freeze(a) => own(a).map_or_else(|| fallback(a), Action::Freeze),
                    Choice::Unfreeze(a) => own(a).map_or_else(|| fallback(a), Action::Unfreeze),
                    // Closing needs a zero balance: the owner first sweeps everything it can out.
                    Choice::Close(a) => match own(a) {
                        Some(i) => {
                            actions.push(Action::Sweep {
                                from: i,
                                to: other(i, a),
                                amount: cents(i64::from(u32::MAX)),
                            });
                            Action::Close(i)
                        }
                        None => fallback(a),
                    },
                    Choice::SetMin(a, f) => {
                        own(a).map_or_else(|| fallback(a), |i| Action::SetMin(i, f.map(|c| cents(-c))))
                    }
                    Choice::SetMax(a, m) => own(a).map_or_else(|| fallback(a), |i| Action::SetMax(i, m.map(cents))),
                };
                actions.push(action);
            }
            actions
        })
        .collect();
    OperationCase { spec, ceilings, payments, threads: resolved }
}

/// Which implementation runs the operations. Every variant but [`OpControl::Ledger`] is broken
/// in exactly one operation and sends every other action through the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpControl {
    /// The library's own calls.
    Ledger,
    /// Reversals by [`OperationControl::ReversalUnlocked`]: the remaining amount read without
    /// the original's lock.
    ReversalUnlocked,
    /// Plain transfers by [`OperationControl::FreezeCheckedBeforeLock`]: the payer's status read
    /// before the row locks.
    FreezeCheckedBeforeLock,
    /// Plain transfers that check the payee's ceiling on an unlocked read, then move the money
    /// under ordered locks that check states and floors but not the ceiling. The database's own
    /// guard (`accounts_ceiling`) is dropped first by [`OpControl::prepare`], so that the checker,
    /// not the database, has to catch it.
    CeilingCheckedBeforeLock,
    /// Sweeps that read the payer's available amount before locking, then send a plain transfer
    /// of what they read.
    SweepReadBeforeLock,
}

/// How long the broken controls wait between their unlocked read and the write it decides.
const WINDOW: Duration = Duration::from_millis(2);

impl OpControl {
    /// The broken ones, in the order `docs/testing.md` lists them.
    pub const BROKEN: [OpControl; 4] = [
        OpControl::ReversalUnlocked,
        OpControl::FreezeCheckedBeforeLock,
        OpControl::CeilingCheckedBeforeLock,
        OpControl::SweepReadBeforeLock,
    ];

    /// A short lowercase name for reports.
    pub fn name(self) -> &'static str {
        match self {
            OpControl::Ledger => "ledger",
            OpControl::ReversalUnlocked => "reversal-unlocked",
            OpControl::FreezeCheckedBeforeLock => "freeze-checked-before-lock",
            OpControl::CeilingCheckedBeforeLock => "ceiling-checked-before-lock",
            OpControl::SweepReadBeforeLock => "sweep-read-before-lock",
        }
    }

    /// The rule this control breaks (`None` for the ledger).
    pub fn breaks(self) -> Option<Rule> {
        match self {
            OpControl::Ledger => None,
            OpControl::ReversalUnlocked => Some(Rule::Reversal),
            OpControl::FreezeCheckedBeforeLock => Some(Rule::Frozen),
            OpControl::CeilingCheckedBeforeLock => Some(Rule::Ceiling),
            OpControl::SweepReadBeforeLock => Some(Rule::Sweep),
        }
    }

    /// Prepares a freshly built ledger for this implementation: drops the ceiling's database
    /// guard for [`OpControl::CeilingCheckedBeforeLock`]; nothing for the others.
    ///
    /// # Errors
    /// When the statement fails.
    pub fn prepare(self, ledger: &Ledger) -> Result<(), KitError> {
        if self == OpControl::CeilingCheckedBeforeLock {
            let mut conn = ledger.connection()?;
            let sql = conn.sql("ALTER TABLE wallet_ledger.accounts DROP CONSTRAINT accounts_ceiling").into_owned();
            conn.client().batch_execute(&sql)?;
        }
        Ok(())
    }

    /// A plain transfer (unkeyed, not a sweep) as this implementation sends it.
    fn transfer(self, ledger: &Ledger, t: &Transfer) -> Result<Receipt, LedgerError> {
        match self {
            OpControl::FreezeCheckedBeforeLock => OperationControl::FreezeCheckedBeforeLock.transfer(ledger, t),
            OpControl::CeilingCheckedBeforeLock => ceiling_checked_before_lock(ledger, t),
            _ => ledger.transfer(t),
        }
    }

    fn sweep(self, ledger: &Ledger, t: &Transfer) -> Result<Receipt, LedgerError> {
        match self {
            OpControl::SweepReadBeforeLock => sweep_read_before_lock(ledger, t),
            _ => ledger.transfer(t),
        }
    }

    fn reverse(self, ledger: &Ledger, r: &Reversal) -> Result<Receipt, LedgerError> {
        match self {
            OpControl::ReversalUnlocked => OperationControl::ReversalUnlocked.reverse(ledger, r),
            _ => ledger.reverse(r),
        }
    }
}

/// Reads the payee's balance and ceiling without a lock and refuses on them; then, after
/// [`WINDOW`], moves the money under ordered row locks checking states and the payer's floor,
/// but not the ceiling: a credit that commits in the window is not seen.
fn ceiling_checked_before_lock(ledger: &Ledger, t: &Transfer) -> Result<Receipt, LedgerError> {
    let mut conn = ledger.connection()?;
    let read = conn.sql("SELECT balance, max_balance FROM wallet_ledger.accounts WHERE id = $1").into_owned();
    let row = conn.client().query_opt(&read, &[&t.to.0])?.ok_or(LedgerError::AccountNotFound { account: t.to })?;
    let (balance, ceiling): (Decimal, Option<Decimal>) = (row.try_get(0)?, row.try_get(1)?);
    if let Some(max_balance) = ceiling.filter(|max| balance + t.amount > *max) {
        return Err(LedgerError::BalanceLimitExceeded { account: t.to, max_balance, requested: t.amount });
    }
    std::thread::sleep(WINDOW);
    let lock = conn
        .sql(
            "SELECT id, balance, min_balance, status FROM wallet_ledger.accounts WHERE id = ANY($1) ORDER BY id
              FOR NO KEY UPDATE",
        )
        .into_owned();
    let write = conn
        .sql("UPDATE wallet_ledger.accounts SET balance = balance + $2, version = version + 1 WHERE id = $1 RETURNING balance, version")
        .into_owned();
    let insert = conn
        .sql("INSERT INTO wallet_ledger.transfers (from_account, to_account, amount) VALUES ($1, $2, $3) RETURNING id")
        .into_owned();
    let entry = conn
        .sql("INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version) VALUES ($1, $2, $3, $4, $5)")
        .into_owned();
    let mut tx = conn.client().transaction()?;
    let rows = tx.query(&lock, &[&vec![t.from.0, t.to.0]])?;
    let side = |id: AccountId| -> Result<(Decimal, Option<Decimal>, String), LedgerError> {
        let r = rows
            .iter()
            .find(|r| r.try_get::<_, i64>(0).is_ok_and(|x| x == id.0))
            .ok_or(LedgerError::AccountNotFound { account: id })?;
        Ok((r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))
    };
    let ((from_balance, floor, from_status), (_, _, to_status)) = (side(t.from)?, side(t.to)?);
    match from_status.as_str() {
        "frozen" => return Err(LedgerError::AccountFrozen { account: t.from }),
        "closed" => return Err(LedgerError::AccountClosed { account: t.from }),
        _ => {}
    }
    if to_status == "closed" {
        return Err(LedgerError::AccountClosed { account: t.to });
    }
    if let Some(floor) = floor.filter(|floor| from_balance - t.amount < *floor) {
        return Err(LedgerError::InsufficientFunds {
            account: t.from,
            available: from_balance - floor,
            requested: t.amount,
        });
    }
    let from_row = tx.query_one(&write, &[&t.from.0, &-t.amount])?;
    let to_row = tx.query_one(&write, &[&t.to.0, &t.amount])?;
    let id: i64 = tx.query_one(&insert, &[&t.from.0, &t.to.0, &t.amount])?.try_get(0)?;
    let (fb, fv): (Decimal, i64) = (from_row.try_get(0)?, from_row.try_get(1)?);
    let (tb, tv): (Decimal, i64) = (to_row.try_get(0)?, to_row.try_get(1)?);
    tx.execute(&entry, &[&id, &t.from.0, &-t.amount, &fb, &fv])?;
    tx.execute(&entry, &[&id, &t.to.0, &t.amount, &tb, &tv])?;
    tx.commit()?;
    Ok(Receipt {
        transfer_id: TransferId(id),
        from: t.from,
        to: t.to,
        amount: t.amount,
        from_balance: fb,
        to_balance: tb,
        replayed: false,
    })
}

/// Reads the payer's available amount without a lock, waits [`WINDOW`], then sends a plain
/// transfer of `min(asked, what it read)` (all of `asked` when nothing was available, so that
/// the ledger refuses it): a debit or credit in the window makes it move the wrong amount, or be
/// refused while something is available.
fn sweep_read_before_lock(ledger: &Ledger, t: &Transfer) -> Result<Receipt, LedgerError> {
    let available: Option<Decimal> = {
        let mut conn = ledger.connection()?;
        let read = conn.sql("SELECT balance - held - min_balance FROM wallet_ledger.accounts WHERE id = $1");
        let row = conn.client().query_opt(read.as_ref(), &[&t.from.0])?;
        row.map(|r| r.try_get(0)).transpose()?.flatten()
    };
    let amount = match available {
        Some(a) if a > Decimal::ZERO && a < t.amount => a,
        _ => t.amount,
    };
    std::thread::sleep(WINDOW);
    ledger.transfer(&Transfer::new(t.from, t.to, amount))
}

/// A case built: the accounts of [`Setup::create`], then the case's opening ceilings.
#[derive(Debug, Clone)]
pub struct OperationSetup {
    /// The accounts, issuer and openings.
    pub setup: Setup,
    /// The ceilings set before the run, by account index.
    pub ceilings: Vec<Option<Decimal>>,
    /// The payments, as the case gives them.
    pub payments: Vec<Payment>,
}

impl OperationSetup {
    /// Builds `case`'s ledger: [`Setup::create`], then [`Ledger::set_max_balance`] for each
    /// opening ceiling (a limit change writes no entry: the openings and versions stay).
    ///
    /// # Errors
    /// Whatever the ledger returns while building: a correct ledger returns none.
    pub fn create(ledger: &Ledger, case: &OperationCase) -> Result<OperationSetup, KitError> {
        let setup = Setup::create(ledger, &case.spec)?;
        for (id, ceiling) in setup.accounts.iter().zip(&case.ceilings) {
            if ceiling.is_some() {
                ledger.set_max_balance(*id, *ceiling)?;
            }
        }
        Ok(OperationSetup { setup, ceilings: case.ceilings.clone(), payments: case.payments.clone() })
    }

    /// The payment's transfer as sent (key `pay{j}` under the setup's prefix).
    pub fn payment(&self, j: usize) -> Transfer {
        let p = &self.payments[j];
        let s = &self.setup;
        Transfer::new(s.accounts[p.from], s.accounts[p.to], p.amount).idempotency_key(s.key(&format!("pay{j}")))
    }
}

/// What an action came back with.
#[derive(Debug)]
pub enum Answer {
    /// A transfer, sweep, payment or reversal went through (or replayed).
    Moved(Receipt),
    /// A state or limit change went through: the account as it left it.
    Changed(Account),
    /// The call failed or was refused.
    Failed(LedgerError),
    /// Not sent: a reversal whose payment was not committed yet.
    Skipped,
}

/// One action and what came back.
#[derive(Debug)]
pub struct OperationOutcome {
    /// The thread that made it.
    pub thread: usize,
    /// Its position in the thread's list.
    pub position: usize,
    /// The action.
    pub action: Action,
    /// For a reversal, the transfer it reversed.
    pub target: Option<TransferId>,
    /// What came back.
    pub answer: Answer,
    /// When the call began and when it returned (one clock for every thread).
    pub began: Instant,
    /// See `began`.
    pub ended: Instant,
}

/// Everything an operations run did.
#[derive(Debug)]
pub struct OperationRun {
    /// The implementation that ran.
    pub control: OpControl,
    /// Actions planned.
    pub attempts: usize,
    /// One per action made, by thread then position.
    pub outcomes: Vec<OperationOutcome>,
    /// Threads that panicked before finishing their list.
    pub panicked_threads: Vec<usize>,
    /// Wall time from the start barrier to the last thread's end.
    pub elapsed: Duration,
}

/// Runs `case`'s threads on `setup` with `control`: one real thread each, holding a pooled
/// connection until all do, then released together from a barrier. A payment that succeeds
/// (applied or replayed) publishes its transfer id; a reversal of a payment not yet published is
/// recorded as [`Answer::Skipped`].
pub fn run_operations(
    ledger: &Ledger,
    setup: &OperationSetup,
    case: &OperationCase,
    control: OpControl,
) -> OperationRun {
    let threads = case.threads.len().max(1);
    let (warm, start) = (Barrier::new(threads), Barrier::new(threads));
    let paid: Vec<OnceLock<TransferId>> = case.payments.iter().map(|_| OnceLock::new()).collect();
    let started = Instant::now();
    let mut outcomes = Vec::with_capacity(case.attempts());
    let mut panicked_threads = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = case
            .threads
            .iter()
            .enumerate()
            .map(|(thread, actions)| {
                let (warm, start, paid) = (&warm, &start, &paid);
                scope.spawn(move || {
                    let connection = ledger.connection();
                    warm.wait();
                    drop(connection);
                    start.wait();
                    actions
                        .iter()
                        .enumerate()
                        .map(|(position, action)| one(ledger, setup, control, paid, thread, position, action))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (thread, handle) in handles.into_iter().enumerate() {
            match handle.join() {
                Ok(mut done) => outcomes.append(&mut done),
                Err(_) => panicked_threads.push(thread),
            }
        }
    });
    OperationRun { control, attempts: case.attempts(), outcomes, panicked_threads, elapsed: started.elapsed() }
}

fn one(
    ledger: &Ledger,
    setup: &OperationSetup,
    control: OpControl,
    paid: &[OnceLock<TransferId>],
    thread: usize,
    position: usize,
    action: &Action,
) -> OperationOutcome {
    let id = |i: usize| setup.setup.accounts[i];
    let moved = |r: Result<Receipt, LedgerError>| r.map_or_else(Answer::Failed, Answer::Moved);
    let changed = |r: Result<Account, LedgerError>| r.map_or_else(Answer::Failed, Answer::Changed);
    let mut target = None;
    let began = Instant::now();
    let answer = match action {
        Action::Transfer { from, to, amount } => {
            moved(control.transfer(ledger, &Transfer::new(id(*from), id(*to), *amount)))
        }
        Action::Sweep { from, to, amount } => {
            moved(control.sweep(ledger, &Transfer::new(id(*from), id(*to), *amount).up_to_available()))
        }
        Action::Pay(j) => {
            let result = ledger.transfer(&setup.payment(*j));
            if let (Ok(r), Some(slot)) = (&result, paid.get(*j)) {
                let _ = slot.set(r.transfer_id);
            }
            moved(result)
        }
        Action::Reverse { payment, amount } => match paid.get(*payment).and_then(OnceLock::get) {
            None => Answer::Skipped,
            Some(transfer) => {
                target = Some(*transfer);
                let r = Reversal::of(*transfer);
                moved(control.reverse(
                    ledger,
                    &match amount {
                        Some(a) => r.amount(*a),
                        None => r,
                    },
                ))
            }
        },
        Action::Freeze(a) => changed(ledger.freeze(id(*a))),
        Action::Unfreeze(a) => changed(ledger.unfreeze(id(*a))),
        Action::Close(a) => changed(ledger.close(id(*a))),
        Action::SetMin(a, floor) => changed(ledger.set_min_balance(id(*a), *floor)),
        Action::SetMax(a, ceiling) => changed(ledger.set_max_balance(id(*a), *ceiling)),
    };
    let ended = Instant::now();
    OperationOutcome { thread, position, action: action.clone(), target, answer, began, ended }
}

/// Builds `case` on a new scratch database (dropped afterwards), prepares `control`, runs the
/// case with it and checks it. `prefix` names the database (`[a-z0-9_]`).
///
/// # Errors
/// When the database cannot be created or read, or the ledger fails while building the case:
/// never because a property is broken (that is in the [`OperationReport`]).
pub fn check_operation_case(
    case: &OperationCase,
    control: OpControl,
    prefix: &str,
) -> Result<OperationReport, KitError> {
    let database = ScratchDatabase::new(prefix)?;
    // A broken control races the library's own calls as they were when its hunt was written:
    // each sent alone. Combined, the calls it needs to race would often be serialized in one
    // batch, and the race it exists to show would come rarely. The library's own run keeps the
    // default (combining).
    let ledger = if control == OpControl::Ledger {
        ledger_for(database.url(), case.threads.len())?
    } else {
        let size = u32::try_from(case.threads.len()).unwrap_or(u32::MAX).saturating_add(2);
        crate::Ledger::builder(database.url()).pool_size(size).combining(false).build()?
    };
    let setup = OperationSetup::create(&ledger, case)?;
    control.prepare(&ledger)?;
    let run = run_operations(&ledger, &setup, case, control);
    let report = check_operations(&ledger, &setup, &run)?;
    drop(ledger);
    drop(database);
    Ok(report)
}
