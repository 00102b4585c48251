//! The ledger's schema: its name, the numbered migrations from `sql/` embedded in the binary,
//! and the script form of them for a backend's own migration tool. The migrator that applies
//! and checks them is `driver::migrator`.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use crate::error::LedgerError;

/// `(version, name, sql)`, in order. Released migrations never change; fixes are new migrations.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "core", include_str!("../sql/0001_core.sql")),
    (2, "transfer function", include_str!("../sql/0002_transfer.sql")),
    (3, "holds", include_str!("../sql/0003_holds.sql")),
    (4, "batches and postings", include_str!("../sql/0004_batch.sql")),
    (5, "transfer reports its lock wait", include_str!("../sql/0005_lock_wait.sql")),
    (6, "generic plans for batches and postings", include_str!("../sql/0006_generic_plans.sql")),
    (7, "account states, limits and reversals", include_str!("../sql/0007_operations.sql")),
    (8, "reads", include_str!("../sql/0008_reads.sql")),
    (9, "cheaper checks on the hot path", include_str!("../sql/0009_lean_checks.sql")),
    (10, "metadata on money movements", include_str!("../sql/0010_movement_metadata.sql")),
    (11, "change feed", include_str!("../sql/0011_feed.sql")),
    (12, "the functions are the only write path", include_str!("../sql/0012_function_guard.sql")),
    (13, "less fixed work per batch call", include_str!("../sql/0013_small_batches.sql")),
    (14, "less work per batched item", include_str!("../sql/0014_batch_items.sql")),
];

/// The schema version this build writes and expects.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Advisory lock key that serializes migrations across processes ("wallet_l" in ASCII).
pub(crate) const MIGRATION_LOCK_KEY: i64 = 0x7761_6c6c_6574_5f6c;

/// The version table of a set of migrations, `wallet_ledger.<table>`: one row per applied
/// migration, with the checksum of its text. The `ALTER` adds the checksum column to a table
/// created before checksums were recorded.
pub(crate) fn version_table(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS wallet_ledger.{table} (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    checksum   text
);
ALTER TABLE wallet_ledger.{table} ADD COLUMN IF NOT EXISTS checksum text;"
    )
}

/// The checksum recorded for a migration: SHA-256 of its text as released (before the schema
/// name is substituted), in lowercase hex.
pub(crate) fn checksum(sql: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(sql.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// `migrations` as one script for `schema`, each followed by the row that records it in
/// `table`; `title` names them in the script's comments.
pub(crate) fn script(schema: &SchemaName, table: &str, migrations: &[(i32, &str, &str)], title: &str) -> String {
    let mut script = schema.qualify(&version_table(table)).into_owned();
    for (version, name, sql) in migrations {
        script.push_str(&format!("\n\n-- {title} {version}: {name}\n{}", schema.qualify(sql)));
        let record = format!(
            "INSERT INTO wallet_ledger.{table} (version, name, checksum) VALUES ({version}, '{name}', '{}');",
            checksum(sql)
        );
        script.push_str(&format!("\n{}\n", schema.qualify(&record)));
    }
    script
}

/// Every migration's SQL in order, as one script, for a backend's own migration tool, for the
/// default schema `wallet_ledger`. See [`migration_script_for`].
pub fn migration_script() -> String {
    migration_script_for(&SchemaName::default())
}

/// Every migration's SQL in order, as one script creating everything in `schema`, for a
/// backend's own migration tool (run it once, in one transaction; then build the ledger with
/// `migrate(false)`, and it checks the version at connect).
///
/// ```
/// use wallet_ledger::schema::{migration_script_for, SchemaName};
///
/// let sql = migration_script_for(&SchemaName::new("payments_ledger")?);
/// assert!(sql.contains(r#"CREATE TABLE "payments_ledger".accounts"#));
/// assert!(!sql.contains("wallet_ledger."));
/// # Ok::<(), wallet_ledger::LedgerError>(())
/// ```
pub fn migration_script_for(schema: &SchemaName) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\";\n{}",
        script(schema, "schema_version", MIGRATIONS, "wallet-ledger migration")
    )
}

/// The PostgreSQL schema that holds the ledger's tables and functions (default `wallet_ledger`),
/// so they never collide with a backend's own.
///
/// A name is 1 to 63 bytes of `a-z`, `0-9` and `_`, not starting with a digit or `pg_`. The
/// ledger's SQL names its schema as `wallet_ledger.`; every text is rewritten for the chosen
/// name, quoted, when it is prepared (once per pooled connection) or migrated.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SchemaName(Arc<str>);

impl SchemaName {
    /// The default schema name.
    pub const DEFAULT: &'static str = "wallet_ledger";

    /// Checks `name`.
    ///
    /// # Errors
    /// [`LedgerError::InvalidInput`] for a name outside the rule above.
    pub fn new(name: &str) -> Result<SchemaName, LedgerError> {
        let valid_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        let starts_well = name.bytes().next().is_some_and(|b| !b.is_ascii_digit());
        if !valid_chars || !starts_well || name.len() > 63 || name.starts_with("pg_") {
            return Err(LedgerError::InvalidInput {
                field: "schema name",
                reason: "1 to 63 bytes of a-z, 0-9 and _, not starting with a digit or pg_".into(),
            });
        }
        Ok(SchemaName(name.into()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn shared(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }

    /// `sql` with every `wallet_ledger.` prefix (a schema-qualified name in the ledger's SQL)
    /// replaced by this schema, quoted. Borrowed, unchanged, for the default schema.
    pub fn qualify<'a>(&self, sql: &'a str) -> Cow<'a, str> {
        const PREFIX: &str = "wallet_ledger.";
        if &*self.0 == Self::DEFAULT {
            return Cow::Borrowed(sql);
        }
        let mut out = String::with_capacity(sql.len() + 16);
        let mut rest = sql;
        while let Some(at) = rest.find(PREFIX) {
            // only a whole identifier: not the tail of `my_wallet_ledger.`
            let boundary = !rest[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '"');
            out.push_str(&rest[..at]);
            if boundary {
                out.push_str(&format!("\"{}\".", self.0));
            } else {
                out.push_str(PREFIX);
            }
            rest = &rest[at + PREFIX.len()..];
        }
        out.push_str(rest);
        Cow::Owned(out)
    }
}

impl Default for SchemaName {
    fn default() -> Self {
        SchemaName(Self::DEFAULT.into())
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualify_rewrites_whole_prefixes_only() {
        let s = SchemaName::new("shop").unwrap();
        assert_eq!(
            s.qualify("SELECT wallet_ledger.f(x) FROM wallet_ledger.accounts, my_wallet_ledger.t, 'wallet_ledger.c'"),
            r#"SELECT "shop".f(x) FROM "shop".accounts, my_wallet_ledger.t, '"shop".c'"#
        );
        let default = SchemaName::default();
        assert!(matches!(default.qualify("SELECT wallet_ledger.f()"), Cow::Borrowed(_)));
    }

    #[test]
    fn schema_names_are_checked() {
        for good in ["a", "wallet_ledger", "_x9", &"a".repeat(63)] {
            assert!(SchemaName::new(good).is_ok(), "{good}");
        }
        for bad in ["", "9a", "A", "a-b", "a b", "pg_x", "x\"; DROP", "é", &"a".repeat(64)] {
            assert!(SchemaName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, (version, _, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i32 + 1);
        }
    }
}
