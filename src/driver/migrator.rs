//! The one migrator, for the core migrations and the Citus migrations alike.
//!
//! Rules:
//! - each set of migrations has its own version table and advisory lock; `migrate` takes the
//!   lock and applies what is missing in one transaction, so processes connecting at once apply
//!   each migration exactly once;
//! - every applied migration's checksum (`schema::checksum`, SHA-256 of its released text) is
//!   recorded with it; before anything is applied, and on every `check`, the checksums in the
//!   database are compared with this build's texts, and a difference is
//!   [`LedgerError::MigrationChanged`] naming the migration: released migrations never change;
//! - a migration recorded without a checksum (applied by a build before checksums existed)
//!   cannot be compared; `migrate` records this build's checksum for it.

use crate::plan::{query_one, Session};

use crate::citus::{statements, CITUS_MIGRATIONS, CITUS_MIGRATION_LOCK_KEY};
use crate::error::LedgerError;
use crate::model::lock_wait::LockWait;
use crate::schema::{checksum, version_table, SchemaName, MIGRATIONS, MIGRATION_LOCK_KEY};

/// What a builder settles on its first connection, the same for both doors: Citus mode (the
/// builder's setting, or detection) and the settings it refuses, then the schema migrated
/// (`migrate`) or checked.
pub(crate) fn setup(
    client: &mut dyn Session,
    schema: &SchemaName,
    migrate_schema: bool,
    citus: Option<bool>,
    tuned_combiner: bool,
    lock_wait: LockWait,
) -> Result<bool, LedgerError> {
    let citus = crate::citus::resolve(client, citus)?;
    check_citus_settings(citus, tuned_combiner, lock_wait)?;
    if migrate_schema {
        migrate(client, schema, &CORE)?;
        if citus {
            migrate(client, schema, &CITUS)?;
        }
    } else {
        check(client, schema, &CORE)?;
        if citus {
            check(client, schema, &CITUS)?;
        }
    }
    Ok(citus)
}

/// The settings Citus mode refuses, the same for both doors: a tuned combiner (its batches are
/// not supported there) and [`LockWait::Timeout`].
fn check_citus_settings(citus: bool, tuned_combiner: bool, lock_wait: LockWait) -> Result<(), LedgerError> {
    if citus && tuned_combiner {
        return Err(LedgerError::Unsupported {
            operation: "combine",
            reason: "the combiner applies transfers as batches, which Citus mode does not support yet",
        });
    }
    if citus && matches!(lock_wait, LockWait::Timeout(_)) {
        return Err(LedgerError::InvalidInput {
            field: "lock_wait",
            reason: "LockWait::Timeout is not supported on Citus (the wait happens on a worker, where the coordinator's lock_timeout does not apply): use Block or NoWait".into(),
        });
    }
    Ok(())
}

/// A set of migrations with its own version table.
pub(crate) struct MigrationSet {
    /// `(version, name, sql)`, versions consecutive from 1.
    migrations: &'static [(i32, &'static str, &'static str)],
    /// The version table in the ledger's schema.
    table: &'static str,
    lock_key: i64,
    /// Send each statement as its own message (Citus propagates some DDL to the shards with the
    /// text of the query that carried it, and a worker refuses several commands in one).
    one_statement_per_message: bool,
    /// How errors name the set, after the schema's name.
    label: &'static str,
}

/// The core migrations (`sql/`).
pub(crate) const CORE: MigrationSet = MigrationSet {
    migrations: MIGRATIONS,
    table: "schema_version",
    lock_key: MIGRATION_LOCK_KEY,
    one_statement_per_message: false,
    label: "",
};

/// The Citus migrations (`sql/citus/`), applied after the core ones.
pub(crate) const CITUS: MigrationSet = MigrationSet {
    migrations: CITUS_MIGRATIONS,
    table: "citus_schema_version",
    lock_key: CITUS_MIGRATION_LOCK_KEY,
    one_statement_per_message: true,
    label: " (Citus migrations)",
};

impl MigrationSet {
    /// The version this build writes and expects.
    fn latest(&self) -> i32 {
        self.migrations.last().map_or(0, |(version, _, _)| *version)
    }

    fn name(&self, schema: &SchemaName) -> String {
        format!("{schema}{}", self.label)
    }
}

/// `sql` (naming the default schema) for `schema`.
fn qualified(schema: &SchemaName, sql: String) -> String {
    schema.qualify(&sql).into_owned()
}

/// A migration as the version table records it.
struct Applied {
    version: i32,
    checksum: Option<String>,
}

/// Applies every migration of `set` the database does not have yet, after checking the ones it
/// has; a no-op when it is current. Returns how many were applied.
///
/// A database that is current is only read (no lock, no DDL), so a role that may not create or
/// change anything there (one given the ledger by `Ledger::grant_access`) connects with the
/// default `migrate(true)`.
pub(crate) fn migrate(client: &mut dyn Session, schema: &SchemaName, set: &MigrationSet) -> Result<usize, LedgerError> {
    if is_current(client, schema, set)? {
        return Ok(0);
    }
    client.batch_execute("BEGIN")?;
    match apply(client, schema, set) {
        Ok(count) => {
            client.batch_execute("COMMIT")?;
            Ok(count)
        }
        Err(e) => {
            // The error is the answer; a failed rollback leaves the connection broken, which
            // its pool notices.
            let _ = client.batch_execute("ROLLBACK");
            Err(e)
        }
    }
}

/// The body of [`migrate`]'s transaction.
fn apply(tx: &mut dyn Session, schema: &SchemaName, set: &MigrationSet) -> Result<usize, LedgerError> {
    tx.query("SELECT pg_advisory_xact_lock($1)", &[&set.lock_key])?;
    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))?;
    tx.batch_execute(&schema.qualify(&version_table(set.table)))?;
    let applied = read_applied(tx, schema, set)?;
    let current = compare(schema, set, &applied)?;
    let backfill = qualified(
        schema,
        format!("UPDATE wallet_ledger.{} SET checksum = $2 WHERE version = $1 AND checksum IS NULL", set.table),
    );
    for a in applied.iter().filter(|a| a.checksum.is_none()) {
        if let Some((_, _, sql)) = set.migrations.iter().find(|(v, _, _)| *v == a.version) {
            tx.query(&backfill, &[&a.version, &checksum(sql)])?;
        }
    }
    let record = qualified(
        schema,
        format!("INSERT INTO wallet_ledger.{} (version, name, checksum) VALUES ($1, $2, $3)", set.table),
    );
    let mut count = 0;
    for (version, name, sql) in set.migrations.iter().filter(|(v, _, _)| *v > current) {
        let qualified = schema.qualify(sql);
        if set.one_statement_per_message {
            for statement in statements(&qualified) {
                tx.batch_execute(statement)?;
            }
        } else {
            tx.batch_execute(&qualified)?;
        }
        tx.query(&record, &[version, name, &checksum(sql)])?;
        count += 1;
    }
    Ok(count)
}

/// Whether the database has every migration of `set`, each recorded with its (matching)
/// checksum: nothing for `migrate` to do. Reads only.
fn is_current(client: &mut dyn Session, schema: &SchemaName, set: &MigrationSet) -> Result<bool, LedgerError> {
    let applied = recorded(client, schema, set)?;
    let current = compare(schema, set, &applied)?;
    Ok(current == set.latest() && applied.iter().all(|a| a.checksum.is_some()))
}

/// The recorded migrations of `set`, none when its version table does not exist yet. Reads only.
fn recorded(client: &mut dyn Session, schema: &SchemaName, set: &MigrationSet) -> Result<Vec<Applied>, LedgerError> {
    let exists = qualified(schema, format!("SELECT to_regclass('wallet_ledger.{}') IS NOT NULL", set.table));
    let exists: bool = query_one(client, &exists, &[])?.try_get(0)?;
    if exists {
        read_applied(client, schema, set)
    } else {
        Ok(Vec::new())
    }
}

/// Checks, without changing anything, that the database has every migration of `set` this
/// build has, with the same texts.
pub(crate) fn check(client: &mut dyn Session, schema: &SchemaName, set: &MigrationSet) -> Result<(), LedgerError> {
    let applied = recorded(client, schema, set)?;
    let found = compare(schema, set, &applied)?;
    if found < set.latest() {
        return Err(LedgerError::SchemaOutdated { schema: set.name(schema), found, required: set.latest() });
    }
    Ok(())
}

/// The recorded migrations; the checksum is read through `to_jsonb` so that a table from
/// before the checksum column reads as having none.
fn read_applied(
    client: &mut dyn Session,
    schema: &SchemaName,
    set: &MigrationSet,
) -> Result<Vec<Applied>, LedgerError> {
    let sql = qualified(
        schema,
        format!("SELECT v.version, to_jsonb(v) ->> 'checksum' FROM wallet_ledger.{} v ORDER BY v.version", set.table),
    );
    client
        .query(&sql, &[])?
        .iter()
        .map(|row| Ok(Applied { version: row.try_get(0)?, checksum: row.try_get(1)? }))
        .collect()
}

/// The database's version of `set`, after checking that it is not newer than this build and
/// that every recorded checksum matches this build's text.
fn compare(schema: &SchemaName, set: &MigrationSet, applied: &[Applied]) -> Result<i32, LedgerError> {
    let current = applied.iter().map(|a| a.version).max().unwrap_or(0);
    if current > set.latest() {
        return Err(LedgerError::SchemaTooNew { found: current, supported: set.latest() });
    }
    for a in applied {
        let Some(recorded) = &a.checksum else { continue };
        let Some((version, name, sql)) = set.migrations.iter().find(|(v, _, _)| *v == a.version) else { continue };
        let expected = checksum(sql);
        if *recorded != expected {
            return Err(LedgerError::MigrationChanged {
                schema: set.name(schema),
                version: *version,
                name,
                applied: recorded.clone(),
                expected,
            });
        }
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The released text of migration `version` (what its checksum is taken of).
    fn sql_text(set: &MigrationSet, version: i32) -> &'static str {
        set.migrations.iter().find(|(v, _, _)| *v == version).map_or("", |(_, _, sql)| sql)
    }

    /// The checksum of every released migration. A migration, once released, never changes: a
    /// failure here means a released text was edited; put the change in a new migration.
    /// A new migration is added here when it is released.
    const RELEASED_CORE: &[(i32, &str)] = &[
        (1, "6d5031265d69f655459f4ff40a9d226ba60e87a73c39849817f9b2c326e062cb"),
        (2, "2ffffd8448b1ae67ba2db7e98e198d7e9174316832011b94d85a5aeef46e0f96"),
        (3, "63a2f7f99bc912855576ae5360003cf7dea823e43ee4b8d60c9bcbce327160d5"),
        (4, "7b6329ece3662c8a5570d9728c6ca047fd93101c29b1c0050187915676b89e6e"),
        (5, "b00f46c803e47aeef605585ec5a19642f3fb278f9bed54f5b5b0b46298362eca"),
        (6, "ccb4660a730dbb20dc8538e00059debd31a26c0eacff4bf77d679d4bfc490e56"),
        (7, "dcd54fa57643d19830c7c8b46b4128066f98168bdfb2698ab4de7b1a22dc44ba"),
        (8, "e1dff41b621a955736119ab5b1bd64d56884473f6997d0c329ba10a21b27e6b9"),
        (9, "c23ffc194b6188aee1b18cb64ff78ae649a37a443bc939c77c39b92c5c270473"),
        (10, "ef5328e57573aedff6c7d9eb6be549d839cd6cda28ad65dd36fdf57bc1a8ca5c"),
        (11, "b3f1156db02e6a371444eb778596dff5a5b58b7187f2d62f4ceb1df83f5e3082"),
        (12, "c965efcb92548e2a2d411ed986a315efc2457ba82c173f81e5df97e69270e80a"),
    ];
    const RELEASED_CITUS: &[(i32, &str)] = &[
        (1, "aaf188a7d129c888f09a08974db125b555be7e7a6cba8ba1de661b51bf03f820"),
        (2, "c1877f58b341cd34665eebef56b88cc8839a3942104820f68316fc559a2e383a"),
        (3, "0826857397c55ebc04765da039996b3cbc99085caad70e346ba0790e9d29e0ac"),
        (4, "3f138e2f7a9eb0789a1361a96433a1a8237e2dae83e027327f84bf34ac7e1add"),
    ];

    fn assert_released(set: &MigrationSet, released: &[(i32, &str)]) {
        for (i, (version, _, _)) in set.migrations.iter().enumerate() {
            assert_eq!(*version, i as i32 + 1, "versions are consecutive from 1");
        }
        for (version, expected) in released {
            let sql = sql_text(set, *version);
            assert!(!sql.is_empty(), "released migration {version} is missing");
            assert_eq!(checksum(sql), *expected, "released migration {version} of {} changed", set.table);
        }
    }

    #[test]
    fn released_migrations_never_change() {
        assert_released(&CORE, RELEASED_CORE);
        assert_released(&CITUS, RELEASED_CITUS);
    }

    #[test]
    fn checksums_are_sha256_hex() {
        assert_eq!(checksum(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(checksum("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
