//! [`Ledger::grant_access`] and [`Ledger::revoke_access`]: the privilege guard's grants. The
//! ledger's functions run as the schema's owner (migration 12), so a role given the ledger here
//! moves money only through them: it can read every table and call every function, and insert
//! only the columns a new currency or account is made of (and its own feed consumers), never a
//! balance, a transfer, an entry or a hold.

use crate::driver::ledger::Ledger;
use crate::error::LedgerError;
use crate::plan::Ctx;
use crate::schema::SchemaName;

/// The grants, for a schema and a role both already quoted as identifiers. The column lists are
/// exactly what `define_currency`, `open_account` and the feed's consumers write; everything
/// else (`id`, `balance`, `held`, `version`, `status`, `created_at`) keeps its default.
fn grants(schema: &str, role: &str) -> String {
    format!(
        "GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role};
GRANT SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role};
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO {role};
GRANT INSERT (code, scale) ON {schema}.currencies TO {role};
GRANT INSERT (currency, min_balance, name, max_balance, external_id, metadata) ON {schema}.accounts TO {role};
GRANT INSERT (name), UPDATE (position, delivered, updated_at) ON {schema}.feed_consumers TO {role};"
    )
}

fn revokes(schema: &str, role: &str) -> String {
    format!(
        "REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role};
REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {role};
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {schema} FROM {role};
REVOKE ALL ON SCHEMA {schema} FROM {role};"
    )
}

/// PostgreSQL answers a GRANT by a role that holds no grant option with a warning and grants
/// nothing; this makes that an error (42501) before any grant is tried.
const OWNER_ONLY: &str = "DO $do$
BEGIN
    IF NOT pg_has_role(current_user,
                       (SELECT c.relowner FROM pg_class c WHERE c.oid = 'wallet_ledger.accounts'::regclass), 'USAGE') THEN
        RAISE EXCEPTION 'only the owner of the ledger''s tables (or a member of its role) can grant or revoke access to it'
            USING ERRCODE = '42501';
    END IF;
END
$do$";

/// A role name as a quoted identifier; `InvalidInput` for an empty, over-long or NUL-bearing one.
fn quoted_role(role: &str) -> Result<String, LedgerError> {
    if role.is_empty() || role.len() > 63 || role.contains('\0') {
        return Err(LedgerError::InvalidInput {
            field: "role",
            reason: "a role name is 1 to 63 bytes without NUL".into(),
        });
    }
    Ok(format!("\"{}\"", role.replace('"', "\"\"")))
}

impl Ledger {
    /// Lets the existing PostgreSQL role `role` use this ledger, and only through its
    /// functions: it may read every table of the ledger's schema and call its functions (every
    /// operation of [`Ledger`], `_in` forms included), define currencies, open accounts and run
    /// feed consumers, but an `INSERT`, `UPDATE` or `DELETE` of its own on balances, transfers,
    /// entries or holds is refused by PostgreSQL (`permission denied`). This is the database's
    /// second line behind the ledger's rules: run the application as such a role, and nothing
    /// but the ledger's functions can write money (`docs/design.md`, "The write guard").
    ///
    /// Run it as the role that migrated the ledger (its functions run as that owner), after
    /// migrating, and again after a later migration adds functions or tables. Idempotent.
    /// The owner itself and superusers are not bound by privileges; their direct writes still
    /// meet the reference check the foreign keys made, and [`Ledger::verify`] reports a row
    /// written past it that points at nothing.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), wallet_ledger::LedgerError> {
    /// use wallet_ledger::Ledger;
    /// // as the owner, at deploy time:
    /// let owner = Ledger::connect("postgres://ledger_owner@db/payments")?;
    /// owner.grant_access("payments_app")?;
    /// // the application, as its own role, never migrating:
    /// let ledger = Ledger::builder("postgres://payments_app@db/payments").migrate(false).build()?;
    /// # let _ = ledger; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`LedgerError::InvalidInput`] for an empty or over-long role name;
    /// [`LedgerError::Unsupported`] in Citus mode; [`LedgerError::Database`] when the role does
    /// not exist or this connection's role may not grant (it is not the ledger's owner).
    pub fn grant_access(&self, role: &str) -> Result<(), LedgerError> {
        self.scripts(&access_scripts(&self.ctx(), &self.inner.schema, "grant_access", role, grants)?)
    }

    /// Takes back what [`Ledger::grant_access`] gave `role` (every privilege it holds on the
    /// ledger's schema, its tables, sequences and functions). Idempotent.
    ///
    /// # Errors
    /// As [`Ledger::grant_access`].
    pub fn revoke_access(&self, role: &str) -> Result<(), LedgerError> {
        self.scripts(&access_scripts(&self.ctx(), &self.inner.schema, "revoke_access", role, revokes)?)
    }
}

/// What `operation` sends for `role`, in one transaction: the owner check, then the grants or
/// revokes `statements` writes for the schema and the role (both quoted as identifiers).
/// [`LedgerError::Unsupported`] in Citus mode; [`LedgerError::InvalidInput`] for a bad role name.
fn access_scripts(
    ctx: &Ctx,
    schema: &SchemaName,
    operation: &'static str,
    role: &str,
    statements: fn(&str, &str) -> String,
) -> Result<[String; 2], LedgerError> {
    ctx.refuse_guard_on_citus(operation)?;
    let role = quoted_role(role)?;
    Ok([schema.qualify(OWNER_ONLY).into_owned(), statements(&format!("\"{}\"", schema.as_str()), &role)])
}

#[cfg(feature = "aio")]
impl crate::aio::Ledger {
    /// [`Ledger::grant_access`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::grant_access`].
    pub async fn grant_access(&self, role: &str) -> Result<(), LedgerError> {
        self.scripts(&access_scripts(&self.ctx(), &self.inner.schema, "grant_access", role, grants)?).await
    }

    /// [`Ledger::revoke_access`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::revoke_access`].
    pub async fn revoke_access(&self, role: &str) -> Result<(), LedgerError> {
        self.scripts(&access_scripts(&self.ctx(), &self.inner.schema, "revoke_access", role, revokes)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::quoted_role;

    #[test]
    fn role_names_are_quoted_identifiers() {
        assert_eq!(quoted_role("app").unwrap(), "\"app\"");
        assert_eq!(quoted_role("we\"ird").unwrap(), "\"we\"\"ird\"");
        assert!(quoted_role("").is_err());
        assert!(quoted_role(&"x".repeat(64)).is_err());
        assert!(quoted_role("a\0b").is_err());
    }
}
