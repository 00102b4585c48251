//! [`Ledger::verify`]: a read-only check of every ledger invariant in one consistent snapshot.

use postgres::{IsolationLevel, Transaction};

use crate::citus;
use crate::driver::ledger::Ledger;
use crate::driver::pool::LedgerConnection;
use crate::error::LedgerError;
use crate::limits::AUDIT_VIOLATIONS_MAX;
use crate::model::audit::Audit;
use crate::protocol::audit::{statement, CHECKS, NOT_IN_CITUS};
use crate::protocol::Reply;

impl Ledger {
    /// Audits the whole ledger in one snapshot (`REPEATABLE READ, READ ONLY`), changing nothing:
    /// per currency the balances sum to zero; every balance equals the sum of its entries and
    /// every version their count; every account's entries form an unbroken chain; every transfer
    /// has exactly its two legs and every posting balanced legs; no bounded balance is below its
    /// floor.
    ///
    /// The checks run as aggregates in the server; only violations travel to the client.
    ///
    /// # Errors
    /// Database and pool errors only: violations are data, in [`Audit::violations`].
    pub fn verify(&self) -> Result<Audit, LedgerError> {
        let citus = self.inner.citus;
        self.idempotent(|conn| audit(conn, citus))
    }
}

/// In Citus mode the transaction first closes the writers' gate (see [`crate::citus`]): Citus
/// has no snapshot across workers, so the audit waits until no transfer is between its first
/// statement and the end of its commit on every worker, and keeps new ones waiting while it
/// reads. Each worker's snapshot is then taken with nothing in flight: one consistent state.
fn audit(conn: &mut LedgerConnection, citus: bool) -> Result<Audit, LedgerError> {
    let schema = conn.schema();
    let mut tx: Transaction<'_> =
        conn.client().build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start()?;
    if citus {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&citus::WRITER_GATE_KEY])?;
    }
    let mut audit = Audit::default();
    let limit = AUDIT_VIOLATIONS_MAX as i64 + 1;
    for (name, to_violations) in CHECKS {
        if citus && NOT_IN_CITUS.contains(name) {
            continue;
        }
        let sql = if citus && *name == "legs" { citus::AUDIT_LEGS } else { statement(name)? };
        let rows = tx.query(schema.qualify(sql).as_ref(), &[&limit])?;
        audit.truncated |= rows.len() > AUDIT_VIOLATIONS_MAX;
        for row in rows.iter().take(AUDIT_VIOLATIONS_MAX) {
            to_violations(&Reply::new(row, "audit"), &mut audit.violations)?;
        }
    }
    let counts = tx.query_one(schema.qualify(statement("counts")?).as_ref(), &[])?;
    let counts = Reply::new(&counts, "audit");
    (audit.accounts, audit.transfers, audit.entries) = (counts.at(0)?, counts.at(1)?, counts.at(2)?);
    tx.commit()?;
    Ok(audit)
}
