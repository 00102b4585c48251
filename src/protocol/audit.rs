//! The audit's statements (`sql/queries/audit.sql`) and the decoding of its rows into
//! violations.

use rust_decimal::Decimal;

use crate::error::LedgerError;
use crate::model::audit::Violation;
use crate::protocol::{unexpected, Reply};
use crate::values::{AccountId, TransferId};

const SCRIPT: &str = include_str!("../../sql/queries/audit.sql");

/// The audit's statement `name`, split out of the script by its `-- @name` marker.
pub(crate) fn statement(name: &str) -> Result<&'static str, LedgerError> {
    let marker = format!("-- @{name}");
    let start = SCRIPT.find(&marker).ok_or_else(|| unexpected("audit", format!("audit.sql has no section {name}")))?;
    let rest = &SCRIPT[start..];
    let end = rest[marker.len()..].find("-- @").map_or(rest.len(), |i| i + marker.len());
    Ok(&rest[..end])
}

/// A check: its section in `audit.sql`, and how one of its rows becomes violations.
pub(crate) type Check = (&'static str, fn(&Reply<'_>, &mut Vec<Violation>) -> Result<(), LedgerError>);

/// Every check, in the order the audit runs them.
pub(crate) const CHECKS: &[Check] = &[
    ("conservation", |row, out| {
        out.push(Violation::Conservation { currency: row.at(0)?, expected: Decimal::ZERO, actual: row.at(1)? });
        Ok(())
    }),
    ("balances", |row, out| {
        let account = AccountId(row.at(0)?);
        let (balance, total): (Decimal, Decimal) = (row.at(1)?, row.at(2)?);
        let (version, count): (i64, i64) = (row.at(3)?, row.at(4)?);
        if balance != total {
            out.push(Violation::BalanceMismatch { account, expected: total, actual: balance });
        }
        if version != count {
            out.push(Violation::VersionMismatch { account, expected: count, actual: version });
        }
        Ok(())
    }),
    ("chain", |row, out| {
        out.push(Violation::ChainBroken {
            account: AccountId(row.at(0)?),
            version: row.at(1)?,
            position: row.at(2)?,
            actual: row.at(3)?,
            expected: row.at(4)?,
        });
        Ok(())
    }),
    ("legs", |row, out| {
        out.push(Violation::TransferLegs { transfer: TransferId(row.at(0)?), legs: row.at(1)?, sum: row.at(2)? });
        Ok(())
    }),
    ("postings", |row, out| {
        out.push(Violation::PostingLegs {
            transfer: TransferId(row.at(0)?),
            currency: row.at(1)?,
            legs: row.at(2)?,
            sum: row.at(3)?,
        });
        Ok(())
    }),
    ("held", |row, out| {
        out.push(Violation::HeldMismatch { account: AccountId(row.at(0)?), actual: row.at(1)?, expected: row.at(2)? });
        Ok(())
    }),
    ("floors", |row, out| {
        out.push(Violation::FloorBroken { account: AccountId(row.at(0)?), balance: row.at(1)?, floor: row.at(2)? });
        Ok(())
    }),
    ("closed", |row, out| {
        out.push(Violation::ClosedNotEmpty { account: AccountId(row.at(0)?), balance: row.at(1)?, held: row.at(2)? });
        Ok(())
    }),
    ("ceilings", |row, out| {
        out.push(Violation::CeilingBroken { account: AccountId(row.at(0)?), balance: row.at(1)?, ceiling: row.at(2)? });
        Ok(())
    }),
    ("reversed", |row, out| {
        out.push(Violation::OverReversed {
            transfer: TransferId(row.at(0)?),
            amount: row.at(1)?,
            reversed: row.at(2)?,
            reversals: row.at(3)?,
        });
        Ok(())
    }),
    ("reversals", |row, out| {
        out.push(Violation::ReversalMismatch { reversal: TransferId(row.at(0)?), transfer: TransferId(row.at(1)?) });
        Ok(())
    }),
    ("references", |row, out| {
        out.push(Violation::DanglingReference {
            table: row.at(0)?,
            row: row.at(1)?,
            reference: row.at(2)?,
            missing: row.at(3)?,
        });
        Ok(())
    }),
];

/// Checks that join transfers by id alone, which Citus cannot run across shards (transfers are
/// distributed by their from account). Their subject cannot arise there: Citus mode refuses
/// reversals.
///
/// `references` joins entries to transfers and holds to transfers across shards too; Citus
/// mode keeps no privilege guard, and its distribution dropped the foreign keys this check
/// stands in for (docs/citus.md).
pub(crate) const NOT_IN_CITUS: &[&str] = &["reversed", "reversals", "references"];

#[cfg(test)]
mod tests {
    use super::{statement, CHECKS};

    #[test]
    fn every_check_has_its_own_statement() {
        let names = CHECKS.iter().map(|(name, _)| *name).chain(["counts"]);
        for name in names {
            let sql = statement(name).unwrap();
            assert!(sql.starts_with(&format!("-- @{name}")));
            assert_eq!(sql.matches("-- @").count(), 1, "{name} runs into the next section");
            assert!(sql.contains("SELECT"));
        }
        assert!(statement("nonexistent").is_err());
    }
}
