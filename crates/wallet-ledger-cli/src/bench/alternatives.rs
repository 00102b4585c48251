//! The alternative strategies the ledger's ordered row locks are compared with. Each is a
//! correct transfer (same tables, same double entry, so the same audit judges it) built the way
//! other systems build one, and each retries what its strategy makes it retry, counted:
//!
//! - **F() expression**: no lock statement; one autocommitted statement whose first step is the
//!   conditional debit `UPDATE ... SET balance = balance - $amount WHERE id = $from AND
//!   balance - held - $amount >= floor`, then the credit, the transfer row and its entries
//!   (CTEs). The row locks are those the two UPDATEs take, in request order: opposite transfers
//!   can deadlock, and the server breaks the cycle by aborting one (retried).
//! - **Optimistic**: read both rows (balance, version) without locks, decide in the client, then
//!   in one transaction write both rows only `WHERE version = <read version>`; when either
//!   changed in between, roll back and retry from the read.
//! - **Serializable**: read, decide and write in a `SERIALIZABLE` transaction, no explicit lock;
//!   on a serialization failure (or deadlock) roll back and retry.

use std::time::Duration;

use postgres::error::SqlState;
use wallet_ledger::{AccountId, Decimal, Ledger, LedgerError};

/// Which alternative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Conditional `UPDATE ... balance - $1 >= floor` per side, request order, one statement.
    FExpression,
    /// Version columns checked at write time, retried on conflict.
    Optimistic,
    /// `SERIALIZABLE`, retried on serialization failure.
    Serializable,
}

/// Most attempts of one transfer before it is reported as an error.
const ATTEMPTS: u32 = 200;

/// The F() expression transfer: one statement; returns the transfer id, or no row when the
/// debit's condition failed (insufficient funds).
const F_EXPRESSION: &str = "
WITH d AS (UPDATE wallet_ledger.accounts SET balance = balance - $3, version = version + 1
            WHERE id = $1 AND (min_balance IS NULL OR balance - held - $3 >= min_balance)
        RETURNING balance, version),
     c AS (UPDATE wallet_ledger.accounts SET balance = balance + $3, version = version + 1
            WHERE id = $2 AND EXISTS (SELECT 1 FROM d)
        RETURNING balance, version),
     t AS (INSERT INTO wallet_ledger.transfers (from_account, to_account, amount)
           SELECT $1, $2, $3 FROM d, c RETURNING id)
INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version)
SELECT t.id, $1, -$3, d.balance, d.version FROM t, d
UNION ALL
SELECT t.id, $2, $3, c.balance, c.version FROM t, c
RETURNING transfer_id";

/// Both sides as read, unlocked.
const READ: &str = "SELECT id, balance, held, min_balance, version FROM wallet_ledger.accounts WHERE id = ANY($1)";

/// The optimistic write: both rows only at the versions read; the inserts only when both were.
/// Returns the number of rows updated by the credit (0 = a version changed).
const OPTIMISTIC_WRITE: &str = "
WITH d AS (UPDATE wallet_ledger.accounts SET balance = $4, version = version + 1
            WHERE id = $1 AND version = $5 RETURNING balance, version),
     c AS (UPDATE wallet_ledger.accounts SET balance = $6, version = version + 1
            WHERE id = $2 AND version = $7 AND EXISTS (SELECT 1 FROM d) RETURNING balance, version),
     t AS (INSERT INTO wallet_ledger.transfers (from_account, to_account, amount)
           SELECT $1, $2, $3 FROM d, c RETURNING id),
     e AS (INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version)
           SELECT t.id, $1, -$3, d.balance, d.version FROM t, d
           UNION ALL
           SELECT t.id, $2, $3, c.balance, c.version FROM t, c RETURNING 1)
SELECT (SELECT count(*) FROM d) AS debited, (SELECT count(*) FROM e) AS entries";

/// The serializable write: relative updates (the snapshot is the check), then the records.
const SERIALIZABLE_WRITE: &str = "
WITH d AS (UPDATE wallet_ledger.accounts SET balance = balance - $3, version = version + 1
            WHERE id = $1 RETURNING balance, version),
     c AS (UPDATE wallet_ledger.accounts SET balance = balance + $3, version = version + 1
            WHERE id = $2 RETURNING balance, version),
     t AS (INSERT INTO wallet_ledger.transfers (from_account, to_account, amount)
           SELECT $1, $2, $3 FROM d, c RETURNING id)
INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version)
SELECT t.id, $1, -$3, d.balance, d.version FROM t, d
UNION ALL
SELECT t.id, $2, $3, c.balance, c.version FROM t, c";

/// A side as read.
struct Side {
    balance: Decimal,
    held: Decimal,
    floor: Option<Decimal>,
    version: i64,
}

/// One transfer with `strategy`: the outcome, and how many times it was retried.
pub fn transfer(
    ledger: &Ledger,
    strategy: Strategy,
    from: AccountId,
    to: AccountId,
    amount: Decimal,
) -> (Result<(), LedgerError>, u64) {
    let mut retries = 0;
    loop {
        let attempt = match strategy {
            Strategy::FExpression => f_expression(ledger, from, to, amount),
            Strategy::Optimistic => optimistic(ledger, from, to, amount),
            Strategy::Serializable => serializable(ledger, from, to, amount),
        };
        match attempt {
            Ok(Some(result)) => return (result, retries),
            Ok(None) => {}
            Err(e) if is_retried(&e) => {}
            Err(e) => return (Err(e), retries),
        }
        if retries + 1 >= u64::from(ATTEMPTS) {
            return (
                Err(LedgerError::InvalidInput { field: "bench", reason: format!("gave up after {ATTEMPTS} attempts") }),
                retries,
            );
        }
        retries += 1;
        // A short random pause, so that the transactions that collided do not collide again.
        let pause = (std::time::Instant::now().elapsed().subsec_nanos() as u64 ^ retries.wrapping_mul(7919)) % 200;
        std::thread::sleep(Duration::from_micros(pause));
    }
}

/// Serialization failures and deadlocks: the strategy's own aborts, retried.
fn is_retried(e: &LedgerError) -> bool {
    matches!(
        e.sql_state(),
        Some(s) if *s == SqlState::T_R_SERIALIZATION_FAILURE || *s == SqlState::T_R_DEADLOCK_DETECTED
    )
}

fn insufficient(from: AccountId, available: Decimal, amount: Decimal) -> Result<(), LedgerError> {
    Err(LedgerError::InsufficientFunds { account: from, available, requested: amount })
}

/// `Ok(None)`: retry.
type Attempt = Result<Option<Result<(), LedgerError>>, LedgerError>;

fn f_expression(ledger: &Ledger, from: AccountId, to: AccountId, amount: Decimal) -> Attempt {
    let mut conn = ledger.connection()?;
    let statement = conn.statement(F_EXPRESSION)?;
    let rows = conn.client().query(&statement, &[&from.0, &to.0, &amount])?;
    Ok(Some(if rows.is_empty() { insufficient(from, Decimal::ZERO, amount) } else { Ok(()) }))
}

fn read(
    conn: &mut wallet_ledger::LedgerConnection,
    from: AccountId,
    to: AccountId,
) -> Result<(Side, Side), LedgerError> {
    let statement = conn.statement(READ)?;
    let rows = conn.client().query(&statement, &[&vec![from.0, to.0]])?;
    let side = |id: AccountId| {
        rows.iter()
            .find(|r| r.get::<_, i64>(0) == id.0)
            .map(|r| Side { balance: r.get(1), held: r.get(2), floor: r.get(3), version: r.get(4) })
            .ok_or(LedgerError::AccountNotFound { account: id })
    };
    Ok((side(from)?, side(to)?))
}

fn optimistic(ledger: &Ledger, from: AccountId, to: AccountId, amount: Decimal) -> Attempt {
    let mut conn = ledger.connection()?;
    let (f, t) = read(&mut conn, from, to)?;
    if f.floor.is_some_and(|floor| f.balance - f.held - amount < floor) {
        return Ok(Some(insufficient(from, f.balance - f.held - f.floor.unwrap_or_default(), amount)));
    }
    let statement = conn.statement(OPTIMISTIC_WRITE)?;
    let mut tx = conn.client().transaction()?;
    let row = tx.query_one(
        &statement,
        &[&from.0, &to.0, &amount, &(f.balance - amount), &f.version, &(t.balance + amount), &t.version],
    )?;
    let entries: i64 = row.get("entries");
    if entries == 2 {
        tx.commit()?;
        Ok(Some(Ok(())))
    } else {
        // A version changed since the read (the debit may have gone through alone): undo, retry.
        tx.rollback()?;
        Ok(None)
    }
}

fn serializable(ledger: &Ledger, from: AccountId, to: AccountId, amount: Decimal) -> Attempt {
    let mut conn = ledger.connection()?;
    let read_statement = conn.statement(READ)?;
    let write_statement = conn.statement(SERIALIZABLE_WRITE)?;
    let mut tx = conn.client().build_transaction().isolation_level(postgres::IsolationLevel::Serializable).start()?;
    let rows = tx.query(&read_statement, &[&vec![from.0, to.0]])?;
    let Some(f) = rows.iter().find(|r| r.get::<_, i64>(0) == from.0) else {
        return Ok(Some(Err(LedgerError::AccountNotFound { account: from })));
    };
    let (balance, held, floor): (Decimal, Decimal, Option<Decimal>) = (f.get(1), f.get(2), f.get(3));
    if floor.is_some_and(|floor| balance - held - amount < floor) {
        return Ok(Some(insufficient(from, balance - held - floor.unwrap_or_default(), amount)));
    }
    tx.execute(&write_statement, &[&from.0, &to.0, &amount])?;
    tx.commit()?;
    Ok(Some(Ok(())))
}
