//! Deliberately broken expiry workers, so the hold checks can be shown to catch real bugs.
//!
//! - [`ExpiryControl::Unlocked`]: reads lapsed holds without locking them, then releases and
//!   marks each one. Two workers (or a worker and a capture) can end the same hold twice:
//!   `held` is released twice and the hold gets two ending events.
//! - [`ExpiryControl::NoSkipLocked`]: claims with `FOR UPDATE` but without `SKIP LOCKED`. It is
//!   correct (PostgreSQL re-checks `state` after the wait), but a worker waits for every hold
//!   another worker or a capture has locked: workers queue behind each other instead of
//!   draining different holds.

use postgres::GenericClient;

use crate::schema::SchemaName;
use crate::{Ledger, LedgerError};

/// Which broken expiry worker to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpiryControl {
    /// No lock at all on the claimed holds.
    Unlocked,
    /// `FOR UPDATE` without `SKIP LOCKED`: blocks on holds locked by others.
    NoSkipLocked,
}

impl ExpiryControl {
    /// A short lowercase name for reports.
    pub fn name(self) -> &'static str {
        match self {
            ExpiryControl::Unlocked => "expire-unlocked",
            ExpiryControl::NoSkipLocked => "expire-no-skip-locked",
        }
    }

    /// Expires up to `limit` lapsed holds the broken way; returns how many it ended.
    pub fn expire_holds(self, ledger: &Ledger, limit: u32) -> Result<usize, LedgerError> {
        let mut conn = ledger.connection()?;
        let schema = conn.schema();
        let mut tx = conn.client().transaction()?;
        let claim = match self {
            ExpiryControl::Unlocked => {
                "SELECT id, from_account, amount FROM wallet_ledger.holds
                  WHERE state = 'pending' AND expires_at <= now() ORDER BY expires_at, id LIMIT $1"
            }
            ExpiryControl::NoSkipLocked => {
                "SELECT id, from_account, amount FROM wallet_ledger.holds
                  WHERE state = 'pending' AND expires_at <= now() ORDER BY expires_at, id LIMIT $1 FOR UPDATE"
            }
        };
        let claimed = tx.query(schema.qualify(claim).as_ref(), &[&i64::from(limit)])?;
        let mut accounts: Vec<i64> = claimed.iter().map(|r| r.get(1)).collect();
        accounts.sort_unstable();
        accounts.dedup();
        let lock = schema.qualify("SELECT 1 FROM wallet_ledger.lock_accounts($1, 0::smallint, 0)");
        tx.query(lock.as_ref(), &[&accounts])?;
        for row in &claimed {
            let (id, from, amount): (i64, i64, rust_decimal::Decimal) = (row.get(0), row.get(1), row.get(2));
            end_hold(&mut tx, &schema, id, from, amount)?;
        }
        tx.commit()?;
        Ok(claimed.len())
    }
}

/// Releases and marks one hold, trusting the claim: no check that it is still pending.
fn end_hold(
    tx: &mut impl GenericClient,
    schema: &SchemaName,
    id: i64,
    from: i64,
    amount: rust_decimal::Decimal,
) -> Result<(), LedgerError> {
    let release = schema.qualify("UPDATE wallet_ledger.accounts SET held = held - $2 WHERE id = $1");
    tx.execute(release.as_ref(), &[&from, &amount])?;
    let mark = schema.qualify("UPDATE wallet_ledger.holds SET state = 'expired', ended_at = now() WHERE id = $1");
    tx.execute(mark.as_ref(), &[&id])?;
    let event =
        schema.qualify("INSERT INTO wallet_ledger.hold_events (hold_id, event, amount) VALUES ($1, 'expired', $2)");
    tx.execute(event.as_ref(), &[&id, &amount])?;
    Ok(())
}
