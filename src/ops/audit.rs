//! [`Ledger::verify`]: a read-only check of every ledger invariant in one consistent snapshot.

use postgres::{IsolationLevel, Row};

use crate::citus;
use crate::driver::ledger::Ledger;
use crate::error::LedgerError;
use crate::limits::AUDIT_VIOLATIONS_MAX;
use crate::model::audit::Audit;
use crate::plan::{one_row, params, try_plan, Ctx, Plan, Sql, TxStatements};
use crate::protocol::audit::{statement, Check, CHECKS, NOT_IN_CITUS};
use crate::protocol::{unexpected, Reply};

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
        self.run(verify_plan(&self.ctx()))
    }
}

/// Takes the writers' gate (Citus mode); parameter `(key)`.
const WRITER_GATE: &str = "SELECT pg_advisory_xact_lock($1)";

/// The audit: every check and the counts in one `REPEATABLE READ, READ ONLY` transaction.
///
/// In Citus mode the transaction first closes the writers' gate (see [`crate::citus`]): Citus
/// has no snapshot across workers, so the audit waits until no transfer is between its first
/// statement and the end of its commit on every worker, and keeps new ones waiting while it
/// reads. Each worker's snapshot is then taken with nothing in flight: one consistent state.
pub(crate) fn verify_plan(ctx: &Ctx) -> Plan<Audit> {
    let citus = ctx.citus;
    let checks: Vec<Check> =
        CHECKS.iter().copied().filter(|(name, _)| !(citus && NOT_IN_CITUS.contains(name))).collect();
    let limit = AUDIT_VIOLATIONS_MAX as i64 + 1;
    let mut statements = Vec::with_capacity(checks.len() + 2);
    if citus {
        statements.push(Sql::new(WRITER_GATE, params![citus::WRITER_GATE_KEY]));
    }
    for (name, _) in &checks {
        let sql = if citus && *name == "legs" { citus::AUDIT_LEGS } else { try_plan!(statement(name)) };
        statements.push(Sql::new(sql, params![limit]));
    }
    statements.push(Sql::new(try_plan!(statement("counts")), params![]));
    let tx = TxStatements { isolation: IsolationLevel::RepeatableRead, read_only: true, statements };
    Plan::transaction(tx, move |answers| {
        // the gate's answer, in Citus mode, says nothing
        let answers = answers.into_iter().skip(usize::from(citus));
        Plan::done(audit(&checks, answers))
    })
}

/// The audit of the checks' rows (in the order of `checks`) and then the counts' row.
fn audit(checks: &[Check], mut answers: impl Iterator<Item = Vec<Row>>) -> Result<Audit, LedgerError> {
    let mut next = move || answers.next().ok_or_else(|| unexpected("audit", "fewer answers than statements"));
    let mut audit = Audit::default();
    for (_, to_violations) in checks {
        let rows = next()?;
        audit.truncated |= rows.len() > AUDIT_VIOLATIONS_MAX;
        for row in rows.iter().take(AUDIT_VIOLATIONS_MAX) {
            to_violations(&Reply::new(row, "audit"), &mut audit.violations)?;
        }
    }
    let counts = one_row(next()?)?;
    let counts = Reply::new(&counts, "audit");
    (audit.accounts, audit.transfers, audit.entries) = (counts.at(0)?, counts.at(1)?, counts.at(2)?);
    Ok(audit)
}

#[cfg(feature = "aio")]
impl crate::aio::Ledger {
    /// [`Ledger::verify`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::verify`].
    pub async fn verify(&self) -> Result<Audit, LedgerError> {
        self.run(verify_plan(&self.ctx())).await
    }
}
