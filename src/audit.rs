//! The audit: a read-only check of every ledger invariant in one consistent snapshot.

use std::fmt;

use postgres::{IsolationLevel, Transaction};
use rust_decimal::Decimal;

use crate::account::AccountId;
use crate::error::LedgerError;
use crate::ledger::Ledger;
use crate::limits::AUDIT_VIOLATIONS_MAX;
use crate::pool::LedgerConnection;
use crate::transfer::TransferId;

/// One broken invariant, with what was expected and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A currency's balances do not sum to zero: money was created or destroyed.
    Conservation {
        /// The currency.
        currency: String,
        /// What the balances should sum to (zero).
        expected: Decimal,
        /// What they sum to.
        actual: Decimal,
    },
    /// An account's balance differs from the sum of its entries.
    BalanceMismatch {
        /// The account.
        account: AccountId,
        /// The sum of its entries.
        expected: Decimal,
        /// Its stored balance.
        actual: Decimal,
    },
    /// An account's version differs from the number of its entries.
    VersionMismatch {
        /// The account.
        account: AccountId,
        /// The number of its entries.
        expected: i64,
        /// Its stored version.
        actual: i64,
    },
    /// An account's entries do not form an unbroken chain: a version is missing or repeated, or
    /// a `balance_after` is not the previous one plus the amount.
    ChainBroken {
        /// The account.
        account: AccountId,
        /// The version of the offending entry.
        version: i64,
        /// Its position in the chain (what the version should be).
        position: i64,
        /// Previous balance_after plus this amount.
        expected: Decimal,
        /// The stored balance_after.
        actual: Decimal,
    },
    /// A transfer does not have exactly its two legs (−amount on the debited account, +amount on
    /// the credited one, same currency).
    TransferLegs {
        /// The transfer.
        transfer: TransferId,
        /// How many entries it has.
        legs: i64,
        /// What they sum to (should be zero).
        sum: Decimal,
    },
    /// A posting (a transfer with N legs, see [`Posting`](crate::Posting)) whose legs in a
    /// currency do not sum to zero, or that has fewer than two legs, two legs on one account, or
    /// an amount other than the sum of its credits.
    PostingLegs {
        /// The posting's transfer.
        transfer: TransferId,
        /// The currency whose legs are listed (`None`: the posting has no legs at all).
        currency: Option<String>,
        /// Its legs in that currency.
        legs: i64,
        /// What they sum to (should be zero).
        sum: Decimal,
    },
    /// A bounded account's available balance (balance minus held) is below its floor.
    FloorBroken {
        /// The account.
        account: AccountId,
        /// Its floor.
        floor: Decimal,
        /// Its available balance.
        balance: Decimal,
    },
    /// An account's `held` differs from the sum of its pending holds.
    HeldMismatch {
        /// The account.
        account: AccountId,
        /// The sum of its pending holds.
        expected: Decimal,
        /// Its stored `held`.
        actual: Decimal,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Conservation { currency, expected, actual } => {
                write!(f, "conservation: {currency} balances sum to {actual}, expected {expected}")
            }
            Violation::BalanceMismatch { account, expected, actual } => {
                write!(f, "balance: account {account} holds {actual}, its entries sum to {expected}")
            }
            Violation::VersionMismatch { account, expected, actual } => {
                write!(f, "version: account {account} is at version {actual}, it has {expected} entries")
            }
            Violation::ChainBroken { account, version, position, expected, actual } => write!(
                f,
                "chain: account {account} entry version {version} at position {position} has balance_after {actual}, expected {expected}"
            ),
            Violation::TransferLegs { transfer, legs, sum } => {
                write!(f, "legs: transfer {transfer} has {legs} legs summing to {sum}")
            }
            Violation::PostingLegs { transfer, currency, legs, sum } => write!(
                f,
                "posting: transfer {transfer} has {legs} legs in {} summing to {sum} (or its legs or amount are malformed)",
                currency.as_deref().unwrap_or("no currency")
            ),
            Violation::FloorBroken { account, floor, balance } => {
                write!(f, "floor: account {account} has {balance} available, below its floor {floor}")
            }
            Violation::HeldMismatch { account, expected, actual } => {
                write!(f, "held: account {account} holds {actual} for holds, its pending holds sum to {expected}")
            }
        }
    }
}

/// The result of [`Ledger::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Audit {
    /// Every violation found (at most 10,000 per check; see `truncated`).
    pub violations: Vec<Violation>,
    /// Whether a check had more violations than it listed.
    pub truncated: bool,
    /// Accounts checked.
    pub accounts: i64,
    /// Transfers checked.
    pub transfers: i64,
    /// Entries checked.
    pub entries: i64,
}

impl Audit {
    /// No violation found.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The audit's statements, split out of `sql/queries/audit.sql` by their `-- @name` markers.
fn statement(name: &str) -> &'static str {
    let script = include_str!("../sql/queries/audit.sql");
    let marker = format!("-- @{name}");
    let start = script.find(&marker).expect("audit.sql has a section for every check");
    let rest = &script[start..];
    let end = rest[marker.len()..].find("-- @").map_or(rest.len(), |i| i + marker.len());
    &rest[..end]
}

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

/// A check: its section in `audit.sql`, and how one of its rows becomes violations.
type Check = (&'static str, fn(&postgres::Row, &mut Vec<Violation>));

const CHECKS: &[Check] = &[
    ("conservation", |row, out| {
        out.push(Violation::Conservation { currency: row.get(0), expected: Decimal::ZERO, actual: row.get(1) })
    }),
    ("balances", |row, out| {
        let account = AccountId(row.get(0));
        let (balance, total): (Decimal, Decimal) = (row.get(1), row.get(2));
        let (version, count): (i64, i64) = (row.get(3), row.get(4));
        if balance != total {
            out.push(Violation::BalanceMismatch { account, expected: total, actual: balance });
        }
        if version != count {
            out.push(Violation::VersionMismatch { account, expected: count, actual: version });
        }
    }),
    ("chain", |row, out| {
        out.push(Violation::ChainBroken {
            account: AccountId(row.get(0)),
            version: row.get(1),
            position: row.get(2),
            actual: row.get(3),
            expected: row.get(4),
        })
    }),
    ("legs", |row, out| {
        out.push(Violation::TransferLegs { transfer: TransferId(row.get(0)), legs: row.get(1), sum: row.get(2) })
    }),
    ("postings", |row, out| {
        out.push(Violation::PostingLegs {
            transfer: TransferId(row.get(0)),
            currency: row.get(1),
            legs: row.get(2),
            sum: row.get(3),
        })
    }),
    ("held", |row, out| {
        out.push(Violation::HeldMismatch { account: AccountId(row.get(0)), actual: row.get(1), expected: row.get(2) })
    }),
    ("floors", |row, out| {
        out.push(Violation::FloorBroken { account: AccountId(row.get(0)), balance: row.get(1), floor: row.get(2) })
    }),
];

/// In Citus mode the transaction first closes the writers' gate (see [`crate::citus`]): Citus
/// has no snapshot across workers, so the audit waits until no transfer is between its first
/// statement and the end of its commit on every worker, and keeps new ones waiting while it
/// reads. Each worker's snapshot is then taken with nothing in flight: one consistent state.
fn audit(conn: &mut LedgerConnection, citus: bool) -> Result<Audit, LedgerError> {
    let schema = conn.schema();
    let mut tx: Transaction<'_> =
        conn.client().build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start()?;
    if citus {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&crate::citus::WRITER_GATE_KEY])?;
    }
    let mut audit = Audit::default();
    let limit = AUDIT_VIOLATIONS_MAX as i64 + 1;
    for (name, to_violations) in CHECKS {
        let sql = if citus && *name == "legs" { crate::citus::AUDIT_LEGS } else { statement(name) };
        let rows = tx.query(schema.qualify(sql).as_ref(), &[&limit])?;
        audit.truncated |= rows.len() > AUDIT_VIOLATIONS_MAX;
        for row in rows.iter().take(AUDIT_VIOLATIONS_MAX) {
            to_violations(row, &mut audit.violations);
        }
    }
    let counts = tx.query_one(schema.qualify(statement("counts")).as_ref(), &[])?;
    (audit.accounts, audit.transfers, audit.entries) = (counts.get(0), counts.get(1), counts.get(2));
    tx.commit()?;
    Ok(audit)
}

#[cfg(test)]
mod tests {
    use super::statement;

    #[test]
    fn every_check_has_its_own_statement() {
        for name in ["conservation", "balances", "chain", "legs", "postings", "floors", "held", "counts"] {
            let sql = statement(name);
            assert!(sql.starts_with(&format!("-- @{name}")));
            assert_eq!(sql.matches("-- @").count(), 1, "{name} runs into the next section");
            assert!(sql.contains("SELECT"));
        }
    }
}
