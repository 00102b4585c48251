//! Citus mode: the same ledger on a Citus cluster (distributed PostgreSQL).
//!
//! When the database has the `citus` extension (or [`LedgerBuilder::citus`] says so), the
//! ledger applies, after the core migrations, its Citus migrations (`sql/citus/`): they
//! distribute the tables (accounts by id, with their transfers and entries co-located;
//! currencies as a reference table; idempotency keys in tables distributed by key) and replace
//! the functions whose statements Citus cannot run as written: the transfer locks each account
//! with its own single-shard `WHERE id = $1 FOR NO KEY UPDATE`, in ascending id order, inside one
//! function call on the coordinator. The core migrations are never changed for Citus; the Citus
//! migrations have their own version table (`citus_schema_version`).
//!
//! What differs on Citus: [`LockWait::Timeout`](crate::LockWait::Timeout) is refused at build
//! (the lock wait happens on a worker, where the coordinator's `lock_timeout` does not apply),
//! and [`Ledger::verify`](crate::Ledger::verify) closes a writers' gate while it reads, because
//! Citus has no snapshot across workers. `docs/citus.md` has the design and the measurements.
//!
//! [`LedgerBuilder::citus`]: crate::LedgerBuilder::citus

use crate::plan::{one_row, Session};

use crate::error::LedgerError;
use crate::schema::SchemaName;

/// `(version, name, sql)` of the Citus migrations, applied in order after the core ones.
/// Released migrations never change; fixes are new migrations.
pub const CITUS_MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "distribute", include_str!("../sql/citus/0001_distribute.sql")),
    (2, "key_gate", include_str!("../sql/citus/0002_key_gate.sql")),
    (3, "Citus forms after core migration 7", include_str!("../sql/citus/0003_after_operations.sql")),
    (4, "lock_accounts after core migration 9", include_str!("../sql/citus/0004_after_lean_checks.sql")),
];

/// The Citus schema version this build writes and expects.
pub const CITUS_SCHEMA_VERSION: i32 = CITUS_MIGRATIONS[CITUS_MIGRATIONS.len() - 1].0;

/// The coordinator-local advisory lock every balance-changing function takes in shared mode
/// (`wallet_ledger.writer_gate()`) and the audit in exclusive mode ("wallet_a" in ASCII).
pub(crate) const WRITER_GATE_KEY: i64 = 0x7761_6c6c_6574_5f61;

/// Advisory lock key that serializes Citus migrations across processes ("wallet_c").
pub(crate) const CITUS_MIGRATION_LOCK_KEY: i64 = 0x7761_6c6c_6574_5f63;

/// Whether the connected database has the Citus extension.
pub(crate) fn installed(client: &mut dyn Session) -> Result<bool, LedgerError> {
    let rows = client.query("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')", &[])?;
    let row = one_row(rows)?;
    Ok(row.try_get(0)?)
}

/// Decides Citus mode: the builder's setting, or detection. Asking for it on a database
/// without the extension is an error.
pub(crate) fn resolve(client: &mut dyn Session, wanted: Option<bool>) -> Result<bool, LedgerError> {
    let present = installed(client)?;
    match wanted {
        Some(true) if !present => Err(LedgerError::InvalidInput {
            field: "citus",
            reason: "Citus mode was asked for, but the database has no citus extension (CREATE EXTENSION citus on the coordinator, with its workers added)".into(),
        }),
        Some(on) => Ok(on),
        None => Ok(present),
    }
}

/// The Citus migrations as one script for `schema`, for a backend's own migration tool: run it
/// once, in one transaction, after [`migration_script_for`](crate::schema::migration_script_for),
/// on the coordinator (with its workers added); then build the ledger with `migrate(false)`.
///
/// ```
/// use wallet_ledger::{citus, schema::SchemaName};
///
/// let sql = citus::migration_script_for(&SchemaName::default());
/// assert!(sql.contains("create_distributed_table('wallet_ledger.accounts', 'id')"));
/// ```
pub fn migration_script_for(schema: &SchemaName) -> String {
    crate::schema::script(schema, "citus_schema_version", CITUS_MIGRATIONS, "wallet-ledger Citus migration")
}

/// `sql` split into its statements, at each `;` outside comments, quotes and dollar quotes.
pub(crate) fn statements(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let (mut out, mut start, mut i) = (Vec::new(), 0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n);
            }
            b'\'' | b'"' => {
                let quote = bytes[i];
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += 1;
                }
            }
            b'$' => {
                let tag_end = sql[i + 1..].find('$').map(|n| i + 1 + n);
                let tag = tag_end.map(|end| &sql[i..=end]);
                if let Some(tag) =
                    tag.filter(|t| t[1..t.len() - 1].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                {
                    let body = i + tag.len();
                    i = sql[body..].find(tag).map_or(bytes.len(), |n| body + n + tag.len() - 1);
                }
            }
            b';' => {
                let statement = sql[start..=i].trim();
                if !statement.is_empty() {
                    out.push(statement);
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let rest = sql[start.min(sql.len())..].trim();
    if !rest.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with("--")) {
        out.push(rest);
    }
    out
}

/// An account's history in the form Citus can run (`sql/citus/queries/history.sql`).
pub(crate) const HISTORY: &str = include_str!("../sql/citus/queries/history.sql");

/// A transfer record by a caller's key, in the form Citus can run (`sql/citus/queries/transfer_by_key.sql`
/// with the common tail `sql/queries/transfer_records.sql`).
pub(crate) const TRANSFER_BY_KEY: &str = concat!(
    include_str!("../sql/citus/queries/transfer_by_key.sql"),
    include_str!("../sql/queries/transfer_records.sql")
);

/// The audit's legs check in the form Citus can run (`sql/citus/queries/audit_legs.sql`).
pub(crate) const AUDIT_LEGS: &str = include_str!("../sql/citus/queries/audit_legs.sql");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, (version, _, _)) in CITUS_MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i32 + 1);
        }
    }

    #[test]
    fn statements_split_outside_quotes_and_function_bodies() {
        let sql = "-- a; comment\nSELECT 'x;y';\nCREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $fn$ BEGIN RETURN 1; END $fn$;\n-- tail;\n";
        let parts = statements(sql);
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert!(parts[0].ends_with("SELECT 'x;y';"));
        assert!(parts[1].starts_with("CREATE FUNCTION") && parts[1].ends_with("$fn$;"));
        let migration = statements(CITUS_MIGRATIONS[0].2);
        assert!(migration.iter().all(|s| s.ends_with(';')));
        assert_eq!(migration.iter().filter(|s| s.contains("CREATE OR REPLACE FUNCTION")).count(), 6);
    }

    #[test]
    fn gate_key_matches_the_sql() {
        assert!(CITUS_MIGRATIONS[0].2.contains(&WRITER_GATE_KEY.to_string()));
    }
}
