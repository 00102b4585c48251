//! Deliberately broken transfers, so that every check can be shown to catch a real bug.
//!
//! Each control takes the same [`Transfer`] as [`Ledger::transfer`] and answers with the same
//! types, and records what it did in the same tables (balances, versions, the transfer, its two
//! entries), so the same audit and checker judge it. What each gets wrong:
//!
//! - [`Control::Naive`]: read-modify-write without a transaction or lock: reads both balances,
//!   decides in Rust, writes the new balances back as absolute values. Concurrent transfers on
//!   one account overwrite each other's debit or credit: money is created or lost.
//! - [`Control::Unlocked`]: the same inside one `READ COMMITTED` transaction, but without
//!   `FOR UPDATE`: a transaction does not protect a read it did not lock. Same loss.
//! - [`Control::RequestOrder`]: locks correctly (`FOR UPDATE`) but each row with its own
//!   statement in the order of the request, from then to: two opposite transfers can each hold
//!   one row and wait for the other: deadlocks (SQLSTATE 40P01), which the server counts.
//!
//! [`Control::MultiStatement`] is not broken: it is the ledger's own algorithm (one ordered
//! locking statement, checks, updates, records) sent as separate statements inside a client-side
//! transaction, seven round trips with the rows locked instead of one. It exists to measure what
//! the single server-side function saves.
//!
//! Three more variants are not controls but the ledger's other correct paths, run by the same
//! runner and judged by the same checker: [`Control::Batched`] (the runner sends each thread's
//! transfers in `transfer_batch` calls of 1 to 5 items), [`Control::Posting`] (each transfer as
//! a two-leg [`Posting`](crate::Posting): `from` −amount, `to` +amount, same key and memo) and
//! [`Control::Combined`] (`Ledger::transfer` on a ledger built with the combiner; see
//! [`ledger_with`](super::ledger_with)).
//!
//! Idempotency keys are ignored by the controls.

use postgres::error::SqlState;
use std::collections::HashMap;

use postgres::{Client, GenericClient, Statement};
use rust_decimal::Decimal;

use crate::{AccountId, Ledger, LedgerConnection, LedgerError, Receipt, Transfer, TransferId};

/// Which transfer implementation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Control {
    /// The library's own [`Ledger::transfer`]: the implementation under test, not broken.
    Ledger,
    /// Read-modify-write with no transaction and no lock.
    Naive,
    /// A transaction without `FOR UPDATE`.
    Unlocked,
    /// `FOR UPDATE`, one statement per row, in request order instead of id order.
    RequestOrder,
    /// Correct, but one client round trip per statement while the rows are locked.
    MultiStatement,
    /// [`Ledger::transfer_batch`]: the runner groups each thread's transfers into batches.
    Batched,
    /// [`Ledger::post`] of a two-leg posting per transfer.
    Posting,
    /// [`Ledger::transfer`] through the combiner ([`CombineConfig`](crate::CombineConfig)).
    Combined,
}

impl Control {
    /// Every control, the real ledger first.
    pub const ALL: [Control; 5] =
        [Control::Ledger, Control::Naive, Control::Unlocked, Control::RequestOrder, Control::MultiStatement];

    /// The ledger's correct paths besides [`Control::Ledger`]: batches, postings, the combiner.
    pub const PATHS: [Control; 3] = [Control::Batched, Control::Posting, Control::Combined];

    /// A short lowercase name for reports (`ledger`, `naive`, `unlocked`, `request-order`).
    pub fn name(self) -> &'static str {
        match self {
            Control::Ledger => "ledger",
            Control::Naive => "naive",
            Control::Unlocked => "unlocked",
            Control::RequestOrder => "request-order",
            Control::MultiStatement => "multi-statement",
            Control::Batched => "batched",
            Control::Posting => "posting",
            Control::Combined => "combined",
        }
    }

    /// Runs `t` with this implementation. The broken ones validate like the ledger does and
    /// refuse overdrafts (on the values they read), so refusals can be compared one to one;
    /// they do not retry, so a deadlock comes back as [`LedgerError::Database`] with SQLSTATE
    /// 40P01.
    pub fn transfer(self, ledger: &Ledger, t: &Transfer) -> Result<Receipt, LedgerError> {
        match self {
            // The combiner is the ledger's own: `ledger` must be built with it (see `ledger_with`).
            Control::Ledger | Control::Combined => return ledger.transfer(t),
            Control::Batched => {
                let mut results = ledger.transfer_batch(std::slice::from_ref(t))?;
                return results.pop().expect("one result per item");
            }
            Control::Posting => return post_as_transfer(ledger, t),
            _ => {}
        }
        t.validate()?;
        let mut conn = ledger.connection()?;
        let p = Prepared::new(&mut conn)?;
        let client = conn.client();
        match self {
            Control::Naive => read_decide_write(client, &p, t, Locking::None),
            Control::Unlocked => in_transaction(client, |tx| read_decide_write(tx, &p, t, Locking::None)),
            Control::RequestOrder => in_transaction(client, |tx| read_decide_write(tx, &p, t, Locking::RequestOrder)),
            Control::MultiStatement => in_transaction(client, |tx| read_decide_write(tx, &p, t, Locking::Ordered)),
            Control::Ledger | Control::Batched | Control::Posting | Control::Combined => {
                unreachable!("handled above")
            }
        }
    }
}

/// Whether an error is a deadlock reported by the server.
pub fn is_deadlock(e: &LedgerError) -> bool {
    e.sql_state() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
}

const READ: &str = "SELECT balance, min_balance, currency FROM wallet_ledger.accounts WHERE id = $1";
const READ_LOCKED: &str = "SELECT balance, min_balance, currency FROM wallet_ledger.accounts WHERE id = $1 FOR UPDATE";
const LOCK_ORDERED: &str =
    "SELECT id, balance, min_balance, currency FROM wallet_ledger.accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE";
const WRITE_RELATIVE: &str = "UPDATE wallet_ledger.accounts SET balance = balance + $2, version = version + 1 WHERE id = $1 RETURNING balance, version";
const WRITE_ABSOLUTE: &str =
    "UPDATE wallet_ledger.accounts SET balance = $2, version = version + 1 WHERE id = $1 RETURNING balance, version";
const INSERT_TRANSFER: &str =
    "INSERT INTO wallet_ledger.transfers (from_account, to_account, amount, memo) VALUES ($1, $2, $3, $4) RETURNING id";
const INSERT_ENTRY: &str = "INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version) VALUES ($1, $2, $3, $4, $5)";

/// The controls' statements, prepared once per pooled connection like the ledger's own, so that
/// each statement costs one round trip and the multi-statement comparison is fair.
struct Prepared(HashMap<&'static str, Statement>);

impl Prepared {
    fn new(conn: &mut LedgerConnection) -> Result<Self, LedgerError> {
        let sqls = [READ, READ_LOCKED, LOCK_ORDERED, WRITE_RELATIVE, WRITE_ABSOLUTE, INSERT_TRANSFER, INSERT_ENTRY];
        let mut map = HashMap::with_capacity(sqls.len());
        for sql in sqls {
            map.insert(sql, conn.statement(sql)?);
        }
        Ok(Prepared(map))
    }

    fn get(&self, sql: &'static str) -> &Statement {
        self.0.get(sql).expect("every control statement is prepared in Prepared::new")
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Locking {
    None,
    RequestOrder,
    /// Both rows by one `ORDER BY id FOR UPDATE` statement, as the ledger does.
    Ordered,
}

fn in_transaction(
    client: &mut Client,
    body: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<Receipt, LedgerError>,
) -> Result<Receipt, LedgerError> {
    let mut tx = client.transaction()?;
    let receipt = body(&mut tx)?;
    tx.commit()?;
    Ok(receipt)
}

struct Side {
    balance: Decimal,
    min_balance: Option<Decimal>,
    currency: String,
}

fn read_side(
    client: &mut impl GenericClient,
    p: &Prepared,
    id: AccountId,
    locking: Locking,
) -> Result<Side, LedgerError> {
    let sql = match locking {
        Locking::None => READ,
        Locking::RequestOrder | Locking::Ordered => READ_LOCKED,
    };
    let row = client.query_opt(p.get(sql), &[&id.0])?.ok_or(LedgerError::AccountNotFound { account: id })?;
    Ok(Side { balance: row.get(0), min_balance: row.get(1), currency: row.get(2) })
}

/// Both sides locked by one statement in ascending id order, as the ledger's function does.
fn lock_ordered(client: &mut impl GenericClient, p: &Prepared, t: &Transfer) -> Result<(Side, Side), LedgerError> {
    let plan = crate::LockPlan::new([t.from, t.to]);
    let rows = client.query(p.get(LOCK_ORDERED), &[&plan.as_i64()])?;
    let side = |id: AccountId| {
        rows.iter()
            .find(|r| r.get::<_, i64>(0) == id.0)
            .map(|r| Side { balance: r.get(1), min_balance: r.get(2), currency: r.get(3) })
            .ok_or(LedgerError::AccountNotFound { account: id })
    };
    Ok((side(t.from)?, side(t.to)?))
}

/// Reads (and locks, unless `Locking::None`) both sides, decides in Rust, writes back.
fn read_decide_write(
    client: &mut impl GenericClient,
    p: &Prepared,
    t: &Transfer,
    locking: Locking,
) -> Result<Receipt, LedgerError> {
    let (from, to) = match locking {
        Locking::Ordered => lock_ordered(client, p, t)?,
        _ => (read_side(client, p, t.from, locking)?, read_side(client, p, t.to, locking)?),
    };
    if from.currency != to.currency {
        return Err(LedgerError::CurrencyMismatch {
            from: t.from,
            from_currency: from.currency,
            to: t.to,
            to_currency: to.currency,
        });
    }
    let (from_balance, to_balance) = (from.balance - t.amount, to.balance + t.amount);
    if from.min_balance.is_some_and(|floor| from_balance < floor) {
        let available = from.balance - from.min_balance.unwrap_or_default();
        return Err(LedgerError::InsufficientFunds { account: t.from, available, requested: t.amount });
    }
    // Request order has the rows locked: it updates relative to the locked values. The unlocked
    // controls write back the absolute values they computed from what they read: the lost update.
    let (write, from_value, to_value) = match locking {
        Locking::RequestOrder | Locking::Ordered => (p.get(WRITE_RELATIVE), -t.amount, t.amount),
        Locking::None => (p.get(WRITE_ABSOLUTE), from_balance, to_balance),
    };
    let from_row = client.query_one(write, &[&t.from.0, &from_value])?;
    let to_row = client.query_one(write, &[&t.to.0, &to_value])?;
    let transfer_id: i64 = client.query_one(p.get(INSERT_TRANSFER), &[&t.from.0, &t.to.0, &t.amount, &t.memo])?.get(0);
    let entry = p.get(INSERT_ENTRY);
    let (fb, fver): (Decimal, i64) = (from_row.get(0), from_row.get(1));
    let (tb, tver): (Decimal, i64) = (to_row.get(0), to_row.get(1));
    client.execute(entry, &[&transfer_id, &t.from.0, &-t.amount, &fb, &fver])?;
    client.execute(entry, &[&transfer_id, &t.to.0, &t.amount, &tb, &tver])?;
    Ok(Receipt {
        transfer_id: TransferId(transfer_id),
        from: t.from,
        to: t.to,
        amount: t.amount,
        from_balance: fb,
        to_balance: tb,
        replayed: false,
    })
}

/// The [`Receipt`] of a transfer a control applied itself: `transfer_id` and both balances
/// right after it, never a replay (the controls ignore keys).
///
/// [`Receipt`] is `#[non_exhaustive]`, so a control written outside this crate (an async one on
/// `tokio-postgres`, say, whose outcomes go into a [`RunLog`](super::RunLog) for
/// [`check`](super::check)) builds the receipt it answers with here.
pub fn receipt(transfer_id: i64, t: &Transfer, from_balance: Decimal, to_balance: Decimal) -> Receipt {
    Receipt {
        transfer_id: TransferId(transfer_id),
        from: t.from,
        to: t.to,
        amount: t.amount,
        from_balance,
        to_balance,
        replayed: false,
    }
}

impl Control {
    /// Whether this implementation honours idempotency keys. Only the real ledger does; the
    /// controls ignore keys, so idempotency properties are checked against [`Control::Ledger`]
    /// alone.
    pub fn honours_idempotency_keys(self) -> bool {
        matches!(self, Control::Ledger | Control::Batched | Control::Posting | Control::Combined)
    }

    /// Whether this implementation is meant to be correct: [`Control::Ledger`] and
    /// [`Control::MultiStatement`] must pass every property, the others must be caught.
    pub fn is_correct(self) -> bool {
        matches!(
            self,
            Control::Ledger | Control::MultiStatement | Control::Batched | Control::Posting | Control::Combined
        )
    }
}

/// `t` as a two-leg posting (`from` −amount, `to` +amount, same key and memo), its receipt
/// read back as a transfer's. Refusals are the posting's own: a transfer to the same account is
/// an `InvalidInput` (an account in two legs), one across currencies `Unbalanced`.
fn post_as_transfer(ledger: &Ledger, t: &Transfer) -> Result<Receipt, LedgerError> {
    let mut posting = crate::Posting::new().leg(t.from, -t.amount).leg(t.to, t.amount);
    posting.idempotency_key = t.idempotency_key.clone();
    posting.memo = t.memo.clone();
    let r = ledger.post(&posting)?;
    Ok(Receipt {
        transfer_id: r.transfer_id,
        from: t.from,
        to: t.to,
        amount: t.amount,
        from_balance: r.balances[0].1,
        to_balance: r.balances[1].1,
        replayed: r.replayed,
    })
}
