//! Checks for the change feed, and a broken feed reader they must catch.
//!
//! A feed test runs writers and readers at once, keeps what each reader was given in a
//! [`FeedLog`], lets the readers drain the feed once the writers have stopped, and gives the
//! logs to [`check_feed`], which compares them with what the database committed:
//!
//! - [`FeedProperty::ExactlyOnce`]: no reader got a change twice;
//! - [`FeedProperty::NothingLost`]: every reader got every committed change (every transfer
//!   and every account or hold event in the ledger's tables);
//! - [`FeedProperty::NoRollback`]: no reader got a change that is not committed, nor a transfer
//!   the writers know they rolled back;
//! - [`FeedProperty::InOrder`]: each reader got changes in feed order, and each account's money
//!   movements in its version order with no version missing between them.
//!
//! [`FeedReader::IdOrder`] is the broken control: the outbox many backends write by hand, which
//! reads rows by id past the last id seen, with no regard for rows whose transactions are still
//! open. A transfer that drew a lower id and commits later is skipped for good; the checker
//! reports it as [`FeedProperty::NothingLost`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use rust_decimal::Decimal;

use crate::{AccountId, Change, ChangeKind, ChangeLeg, ChangePage, FeedCursor, Ledger, LedgerError, TransferId};

/// A property of the feed ([`check_feed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeedProperty {
    /// No change delivered twice to one reader.
    ExactlyOnce,
    /// Every committed change delivered.
    NothingLost,
    /// No uncommitted or rolled-back change delivered.
    NoRollback,
    /// Feed order, and each account's version order without gaps.
    InOrder,
}

/// One broken property, with what shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedFinding {
    /// The property.
    pub property: FeedProperty,
    /// The reader (its [`FeedLog::reader`]).
    pub reader: String,
    /// What was seen.
    pub detail: String,
}

impl fmt::Display for FeedFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} broken for {}: {}", self.property, self.reader, self.detail)
    }
}

/// What one reader was given, in the order it was given.
#[derive(Debug, Clone, Default)]
pub struct FeedLog {
    /// The reader's name, for findings.
    pub reader: String,
    /// The changes, in delivery order.
    pub delivered: Vec<Change>,
}

impl FeedLog {
    /// An empty log for `reader`.
    pub fn new(reader: impl Into<String>) -> FeedLog {
        FeedLog { reader: reader.into(), delivered: Vec::new() }
    }
}

/// How a test reads the feed: the ledger's own [`Ledger::changes`], or the broken control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeedReader {
    /// [`Ledger::changes`].
    Ledger,
    /// Transfers by id past the last id seen, without the horizon: loses a transfer whose
    /// transaction drew its id before a later one committed.
    IdOrder,
}

impl FeedReader {
    /// The next page after `after`, at most `limit` changes.
    ///
    /// # Errors
    /// The ledger's errors.
    pub fn changes(self, ledger: &Ledger, after: Option<FeedCursor>, limit: u32) -> Result<ChangePage, LedgerError> {
        match self {
            FeedReader::Ledger => ledger.changes(after, limit),
            FeedReader::IdOrder => id_order_page(ledger, after.unwrap_or(FeedCursor::START), limit),
        }
    }
}

/// The control's page: what is committed past the cursor's position, by position, whatever is
/// still open below it. Each change is read back in brief: its kind (transfers as
/// [`ChangeKind::Transfer`]), its legs with their versions, its time.
fn id_order_page(ledger: &Ledger, after: FeedCursor, limit: u32) -> Result<ChangePage, LedgerError> {
    let mut conn = ledger.connection()?;
    let sql = conn.sql(
        "WITH p AS (
             SELECT position, kind FROM (
                 SELECT id AS position, 'transfer' AS kind FROM wallet_ledger.transfers WHERE id > $1
                 UNION ALL
                 SELECT position, kind FROM wallet_ledger.feed_events WHERE position > $1) q
              ORDER BY position LIMIT $2)
         SELECT p.position, p.kind,
                COALESCE(array_agg(e.account_id ORDER BY e.account_id) FILTER (WHERE e.id IS NOT NULL), '{}') AS accounts,
                COALESCE(array_agg(e.amount ORDER BY e.account_id) FILTER (WHERE e.id IS NOT NULL), '{}') AS amounts,
                COALESCE(array_agg(e.balance_after ORDER BY e.account_id) FILTER (WHERE e.id IS NOT NULL), '{}') AS balances,
                COALESCE(array_agg(e.account_version ORDER BY e.account_id) FILTER (WHERE e.id IS NOT NULL), '{}') AS versions,
                clock_timestamp() AS at
           FROM p LEFT JOIN wallet_ledger.entries e ON p.kind = 'transfer' AND e.transfer_id = p.position
          GROUP BY p.position, p.kind
          ORDER BY p.position",
    );
    let rows = conn.client().query(sql.as_ref(), &[&after.position(), &i64::from(limit)])?;
    let mut changes = Vec::with_capacity(rows.len());
    for row in rows {
        let position: i64 = row.try_get("position")?;
        let kind: String = row.try_get("kind")?;
        let accounts: Vec<i64> = row.try_get("accounts")?;
        let amounts: Vec<Decimal> = row.try_get("amounts")?;
        let balances: Vec<Decimal> = row.try_get("balances")?;
        let versions: Vec<i64> = row.try_get("versions")?;
        let legs = accounts
            .into_iter()
            .zip(amounts)
            .zip(balances)
            .zip(versions)
            .map(|(((account, amount), balance), version)| ChangeLeg {
                account: AccountId(account),
                amount,
                balance,
                version,
            })
            .collect();
        changes.push(Change {
            cursor: FeedCursor(position),
            kind: ChangeKind::parse(&kind).unwrap_or(ChangeKind::Transfer),
            transfer: (kind == "transfer").then_some(TransferId(position)),
            hold: None,
            reverses: None,
            amount: None,
            currency: String::new(),
            legs,
            memo: None,
            metadata: None,
            idempotency_key: None,
            status: None,
            min_balance: None,
            max_balance: None,
            at: row.try_get("at")?,
        });
    }
    let next = changes.last().map_or(after, |c| c.cursor);
    Ok(ChangePage { changes, next })
}

/// Checks the readers' logs against what the database committed. Call it once the writers have
/// stopped and every reader has drained the feed. `rolled_back` lists transfers the writers
/// know they rolled back (their ids came back from `transfer_in` before the rollback).
///
/// # Errors
/// The database's errors while reading what was committed.
pub fn check_feed(
    ledger: &Ledger,
    logs: &[FeedLog],
    rolled_back: &[TransferId],
) -> Result<Vec<FeedFinding>, LedgerError> {
    let mut conn = ledger.connection()?;
    let sql =
        conn.sql("SELECT id FROM wallet_ledger.transfers UNION ALL SELECT position FROM wallet_ledger.feed_events");
    let committed: BTreeSet<i64> =
        conn.client().query(sql.as_ref(), &[])?.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
    drop(conn);
    let rolled_back: HashSet<i64> = rolled_back.iter().map(|t| t.0).collect();
    let mut findings = Vec::new();
    for log in logs {
        let finding = |property, detail: String| FeedFinding { property, reader: log.reader.clone(), detail };
        let mut seen = HashSet::new();
        let mut last = None;
        let mut versions: HashMap<AccountId, i64> = HashMap::new();
        for change in &log.delivered {
            let position = change.cursor.position();
            if !seen.insert(position) {
                findings.push(finding(FeedProperty::ExactlyOnce, format!("position {position} delivered again")));
            }
            if !committed.contains(&position) || change.transfer.is_some_and(|t| rolled_back.contains(&t.0)) {
                findings.push(finding(FeedProperty::NoRollback, format!("position {position} is not committed")));
            }
            if last.is_some_and(|l| l >= position) {
                findings
                    .push(finding(FeedProperty::InOrder, format!("position {position} after {}", last.unwrap_or(0))));
            }
            last = Some(position);
            if change.kind.moves_money() {
                for leg in &change.legs {
                    if let Some(previous) = versions.insert(leg.account, leg.version) {
                        if leg.version != previous + 1 {
                            findings.push(finding(
                                FeedProperty::InOrder,
                                format!("account {} at version {} after {previous}", leg.account.0, leg.version),
                            ));
                        }
                    }
                }
            }
        }
        let missing: Vec<i64> = committed.iter().filter(|p| !seen.contains(p)).copied().collect();
        if !missing.is_empty() {
            let shown: Vec<String> = missing.iter().take(10).map(i64::to_string).collect();
            findings.push(finding(
                FeedProperty::NothingLost,
                format!("{} committed changes never delivered (positions {}...)", missing.len(), shown.join(", ")),
            ));
        }
    }
    Ok(findings)
}
