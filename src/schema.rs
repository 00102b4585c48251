//! Schema migrations: numbered SQL files from `sql/`, embedded in the binary, applied in one
//! transaction under an advisory lock so that processes connecting at once apply each exactly once.

use postgres::Client;

use crate::error::LedgerError;

/// `(version, name, sql)`, in order. Released migrations never change; fixes are new migrations.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "core", include_str!("../sql/0001_core.sql")),
    (2, "transfer function", include_str!("../sql/0002_transfer.sql")),
    (3, "holds", include_str!("../sql/0003_holds.sql")),
    (4, "batches and postings", include_str!("../sql/0004_batch.sql")),
];

/// The schema version this build writes and expects.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Advisory lock key that serializes migrations across processes ("wallet_l" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x7761_6c6c_6574_5f6c;

const VERSION_TABLE: &str = "CREATE SCHEMA IF NOT EXISTS wallet_ledger;
CREATE TABLE IF NOT EXISTS wallet_ledger.schema_version (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);";

/// Applies every migration the database does not have yet; a no-op when it is current.
/// Returns how many were applied.
pub(crate) fn migrate(client: &mut Client) -> Result<usize, LedgerError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])?;
    tx.batch_execute(VERSION_TABLE)?;
    let current = current_version(&mut tx)?;
    if current > SCHEMA_VERSION {
        return Err(LedgerError::SchemaTooNew { found: current, supported: SCHEMA_VERSION });
    }
    let mut applied = 0;
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
        tx.batch_execute(sql)?;
        tx.execute("INSERT INTO wallet_ledger.schema_version (version, name) VALUES ($1, $2)", &[version, name])?;
        applied += 1;
    }
    tx.commit()?;
    Ok(applied)
}

/// Checks, without changing anything, that the database is at this build's schema version.
pub(crate) fn check_version(client: &mut Client) -> Result<(), LedgerError> {
    let exists: bool = client.query_one("SELECT to_regclass('wallet_ledger.schema_version') IS NOT NULL", &[])?.get(0);
    let found = if exists { current_version(client)? } else { 0 };
    if found > SCHEMA_VERSION {
        return Err(LedgerError::SchemaTooNew { found, supported: SCHEMA_VERSION });
    }
    if found < SCHEMA_VERSION {
        return Err(LedgerError::InvalidInput {
            field: "database schema",
            reason: format!("version {found}, this build needs {SCHEMA_VERSION}: run the migrations"),
        });
    }
    Ok(())
}

fn current_version(client: &mut impl postgres::GenericClient) -> Result<i32, LedgerError> {
    let row = client.query_one("SELECT coalesce(max(version), 0) FROM wallet_ledger.schema_version", &[])?;
    Ok(row.get(0))
}

/// Every migration's SQL in order, as one script, for a backend's own migration tool.
pub fn migration_script() -> String {
    let mut script = String::from(VERSION_TABLE);
    for (version, name, sql) in MIGRATIONS {
        script.push_str(&format!("\n\n-- wallet-ledger migration {version}: {name}\n{sql}"));
        script.push_str(&format!(
            "\nINSERT INTO wallet_ledger.schema_version (version, name) VALUES ({version}, '{name}');\n"
        ));
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, (version, _, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i32 + 1);
        }
    }
}
