//! The checker: judges a [`RunLog`] against the final database state and lists every broken
//! property as a [`Finding`].
//!
//! What is checked is listed on [`check`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use postgres::IsolationLevel;
use rust_decimal::Decimal;

use super::controls::{is_deadlock, Control};
use super::model::{Floor, Party};
use super::runner::{KitError, Outcome, RunLog, Setup};
use crate::{AccountId, Audit, Ledger, LedgerError, Receipt, Violation};

/// The property a finding breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Property {
    /// Money was created or destroyed: balances of a currency no longer sum to what they did.
    Conservation,
    /// A bounded account went below its floor.
    Floors,
    /// The stored records disagree with each other (balance vs entries, versions, chain, legs).
    Integrity,
    /// An attempt is unaccounted for, got the wrong refusal, or the committed transfers are not
    /// the announced ones.
    Accounting,
    /// An attempt failed with a deadlock.
    Deadlock,
    /// An attempt failed with an error that is neither a success nor a typed refusal.
    UnexpectedError,
    /// No serial replay of the committed transfers explains the records and receipts.
    SerialEquivalence,
    /// A key was applied twice, or a replay did not return the first receipt.
    Idempotency,
}

/// One broken property, explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The property.
    pub property: Property,
    /// What was expected and what was found.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.property, self.detail)
    }
}

/// Counts of a run's outcomes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Attempts planned by the workload.
    pub attempts: usize,
    /// Successes that applied a transfer.
    pub applied: usize,
    /// Successes that replayed an earlier transfer (same idempotency key).
    pub replayed: usize,
    /// Typed refusals.
    pub refused: usize,
    /// Typed refusals by kind (`InsufficientFunds`, `SameAccount`, ...), to see what a run covered.
    pub refused_by: BTreeMap<&'static str, usize>,
    /// Deadlock errors.
    pub deadlocks: usize,
    /// Other errors.
    pub errors: usize,
    /// Transfers the run committed, as the database records them.
    pub committed: usize,
}

/// The checker's verdict on one run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The implementation that ran.
    pub control: Control,
    /// Outcome counts.
    pub stats: Stats,
    /// Every broken property found; empty when the run is clean.
    pub findings: Vec<Finding>,
    /// Properties not checked for this implementation (idempotency for the controls, which
    /// ignore keys).
    pub skipped: Vec<Property>,
    /// The ledger's own audit after the run.
    pub audit: Audit,
}

impl Report {
    /// No property broken.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// Whether some finding breaks `property`.
    pub fn caught(&self, property: Property) -> bool {
        self.findings.iter().any(|f| f.property == property)
    }

    /// The broken properties, each once.
    pub fn properties(&self) -> BTreeSet<Property> {
        self.findings.iter().map(|f| f.property).collect()
    }
}

/// How many findings `Display` lists before summarising the rest.
const SHOWN: usize = 25;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_verdict(f, self.control.name(), &self.stats, &self.findings)
    }
}

/// A report's text: `title`, the outcome counts, then `clean` or the broken properties and the
/// first [`SHOWN`] findings.
pub(super) fn write_verdict(f: &mut fmt::Formatter<'_>, title: &str, s: &Stats, findings: &[Finding]) -> fmt::Result {
    write!(
        f,
        "{title}: {} attempts: {} applied, {} replayed, {} refused, {} deadlocks, {} errors; {} committed",
        s.attempts, s.applied, s.replayed, s.refused, s.deadlocks, s.errors, s.committed
    )?;
    if findings.is_empty() {
        return write!(f, "; clean");
    }
    let broken: BTreeSet<Property> = findings.iter().map(|f| f.property).collect();
    write!(f, "; broken: {broken:?}")?;
    for finding in findings.iter().take(SHOWN) {
        write!(f, "\n  {finding}")?;
    }
    if findings.len() > SHOWN {
        write!(f, "\n  ... and {} more", findings.len() - SHOWN)?;
    }
    Ok(())
}

/// What an outcome was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Applied,
    Replayed,
    Refused,
    Deadlock,
    Unexpected,
}

/// The name of a typed refusal, `None` for anything else.
fn refusal(e: &LedgerError) -> Option<&'static str> {
    Some(match e {
        LedgerError::InsufficientFunds { .. } => "InsufficientFunds",
        LedgerError::AccountNotFound { .. } => "AccountNotFound",
        LedgerError::SameAccount { .. } => "SameAccount",
        LedgerError::CurrencyMismatch { .. } => "CurrencyMismatch",
        LedgerError::IdempotencyConflict { .. } => "IdempotencyConflict",
        LedgerError::InvalidAmount { .. } => "InvalidAmount",
        LedgerError::Unbalanced { .. } => "Unbalanced",
        // A posting naming one account in two legs (the posting form of a same-account transfer).
        LedgerError::InvalidInput { field: "posting legs", .. } => "PostingLegs",
        _ => return None,
    })
}

fn kind(result: &Result<Receipt, LedgerError>) -> Kind {
    match result {
        Ok(r) if r.replayed => Kind::Replayed,
        Ok(_) => Kind::Applied,
        Err(e) if is_deadlock(e) => Kind::Deadlock,
        Err(e) if refusal(e).is_some() => Kind::Refused,
        Err(_) => Kind::Unexpected,
    }
}

/// A committed transfer of the run.
#[derive(Debug, Clone)]
pub(super) struct Committed {
    pub(super) id: i64,
    pub(super) from: AccountId,
    pub(super) to: AccountId,
    pub(super) amount: Decimal,
    pub(super) key: Option<String>,
}

/// An entry of the run.
#[derive(Debug, Clone)]
pub(super) struct EntryRow {
    pub(super) transfer: i64,
    pub(super) account: AccountId,
    pub(super) amount: Decimal,
    pub(super) balance_after: Decimal,
    pub(super) version: i64,
}

/// A committed row of the run before its sides are known: a posting (from/to NULL) gets them
/// from its two legs.
struct RawTransfer {
    id: i64,
    from: Option<i64>,
    to: Option<i64>,
    amount: Decimal,
    key: Option<String>,
}

/// The database after the run, read in one snapshot.
pub(super) struct State {
    pub(super) transfers: BTreeMap<i64, Committed>,
    /// Per account, its entries of the run by version.
    pub(super) entries: BTreeMap<AccountId, Vec<EntryRow>>,
    /// Per transfer (or posting), its legs in entry order: account and signed amount.
    pub(super) legs: HashMap<i64, Vec<(AccountId, Decimal)>>,
    /// Balance of every account of the case.
    pub(super) balances: HashMap<AccountId, Decimal>,
}

pub(super) fn read_state(ledger: &Ledger, setup: &Setup) -> Result<State, KitError> {
    let mut conn = ledger.connection()?;
    let schema = conn.schema();
    let mut tx =
        conn.client().build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start()?;
    let watermark = setup.last_setup_transfer;
    let raw: Vec<RawTransfer> = tx
        .query(
            schema
                .qualify("SELECT id, from_account, to_account, amount, idempotency_key FROM wallet_ledger.transfers WHERE id > $1")
                .as_ref(),
            &[&watermark],
        )?
        .iter()
        .map(|r| RawTransfer { id: r.get(0), from: r.get(1), to: r.get(2), amount: r.get(3), key: r.get(4) })
        .collect();
    let mut entries: BTreeMap<AccountId, Vec<EntryRow>> = BTreeMap::new();
    let mut legs: HashMap<i64, Vec<(AccountId, Decimal)>> = HashMap::new();
    for r in tx.query(
        schema
            .qualify(
                "SELECT transfer_id, account_id, amount, balance_after, account_version FROM wallet_ledger.entries
                  WHERE transfer_id > $1 ORDER BY account_id, account_version",
            )
            .as_ref(),
        &[&watermark],
    )? {
        let e = EntryRow {
            transfer: r.get(0),
            account: AccountId(r.get(1)),
            amount: r.get(2),
            balance_after: r.get(3),
            version: r.get(4),
        };
        legs.entry(e.transfer).or_default().push((e.account, e.amount));
        entries.entry(e.account).or_default().push(e);
    }
    // A posting's sides are its debited and its credited leg; one with other legs than one of
    // each keeps sides that name no account, so every check flags it.
    let nobody = AccountId(i64::MIN);
    let transfers = raw
        .into_iter()
        .map(|t| {
            let (from, to) = match (t.from, t.to) {
                (Some(from), Some(to)) => (AccountId(from), AccountId(to)),
                _ => match legs.get(&t.id).map(Vec::as_slice) {
                    Some(&[(a, x), (b, y)]) if x < Decimal::ZERO && y == -x => (a, b),
                    Some(&[(a, x), (b, y)]) if y < Decimal::ZERO && x == -y => (b, a),
                    _ => (nobody, nobody),
                },
            };
            (t.id, Committed { id: t.id, from, to, amount: t.amount, key: t.key })
        })
        .collect();
    let ids: Vec<i64> = setup.accounts.iter().chain(&setup.issuers).map(|a| a.0).collect();
    let balances = tx
        .query(schema.qualify("SELECT id, balance FROM wallet_ledger.accounts WHERE id = ANY($1)").as_ref(), &[&ids])?
        .iter()
        .map(|r| (AccountId(r.get(0)), r.get(1)))
        .collect();
    tx.commit()?;
    Ok(State { transfers, entries, legs, balances })
}

/// An account of the case as the checker knows it.
#[derive(Debug, Clone)]
pub(super) struct Known {
    pub(super) name: String,
    pub(super) currency: usize,
    pub(super) floor: Floor,
    pub(super) opening: Decimal,
    pub(super) opening_version: i64,
}

/// Collects findings.
pub(super) struct Judge<'a> {
    pub(super) setup: &'a Setup,
    pub(super) known: HashMap<AccountId, Known>,
    pub(super) findings: Vec<Finding>,
}

impl<'a> Judge<'a> {
    /// A judge that knows the case's accounts and issuers, with their openings.
    pub(super) fn new(setup: &'a Setup) -> Judge<'a> {
        let mut known = HashMap::new();
        for (i, id) in setup.accounts.iter().enumerate() {
            let a = &setup.spec.accounts[i];
            let k = Known {
                name: format!("a{i}"),
                currency: a.currency,
                floor: a.floor,
                opening: setup.opening[i],
                opening_version: setup.opening_versions[i],
            };
            known.insert(*id, k);
        }
        for (c, id) in setup.issuers.iter().enumerate() {
            let (opening, opening_version) = setup.issuer_opening[c];
            let name = format!("issuer {}", setup.spec.currencies[c].code);
            known.insert(*id, Known { name, currency: c, floor: Floor::Unbounded, opening, opening_version });
        }
        Judge { setup, known, findings: Vec::new() }
    }

    pub(super) fn find(&mut self, property: Property, detail: String) {
        self.findings.push(Finding { property, detail });
    }

    pub(super) fn name(&self, id: AccountId) -> String {
        self.known.get(&id).map_or_else(|| format!("account {id}"), |k| format!("{} (id {id})", k.name))
    }

    fn label(&self, o: &Outcome) -> String {
        format!("t{}#{} {:?}", o.thread, o.position, o.op)
    }
}

/// Judges `run` against the final state of the database. Call it after [`run`](super::run)
/// returns, with nothing else writing to the ledger.
///
/// It reads the database in one `REPEATABLE READ` snapshot after the run and checks:
///
/// - **conservation and floors**: [`Ledger::verify`] is clean, and per currency the case's
///   accounts (issuers included) hold what they held before the run;
/// - **accounting**: every planned attempt has an outcome; each is a success or the typed
///   refusal the attempt calls for (same account, unknown account, currency mismatch,
///   insufficient funds with `available < requested` on a bounded account, idempotency
///   conflict); no deadlock, no other error; the committed transfers are exactly the ones the
///   successes announced;
/// - **serial equivalence**: the committed transfers, ordered as their entries record per
///   account, form a serial order (no cycle); replaying them in it from the opening balances
///   never breaks a floor and reproduces every entry's `balance_after`, every receipt's
///   `from_balance`/`to_balance` and every final balance;
/// - **idempotency** (implementations that honour keys): a key is applied at most once, its
///   successes all carry that transfer, exactly one of them is not a replay and every replay
///   returns the first receipt; a key nobody applied leaves no transfer; a conflict names the
///   transfer holding the key, whose content differs.
///
/// # Errors
/// Only when the database cannot be read; broken properties are [`Report::findings`].
pub fn check(ledger: &Ledger, setup: &Setup, run: &RunLog) -> Result<Report, KitError> {
    let audit = ledger.verify()?;
    let state = read_state(ledger, setup)?;
    let mut judge = Judge::new(setup);

    audit_findings(&mut judge, &audit);
    conservation(&mut judge, &state);
    let stats = accounting(&mut judge, run, &state);
    serial_equivalence(&mut judge, run, &state);
    let mut skipped = Vec::new();
    if run.control.honours_idempotency_keys() {
        idempotency(&mut judge, run, &state);
    } else {
        skipped.push(Property::Idempotency);
    }
    Ok(Report { control: run.control, stats, findings: judge.findings, skipped, audit })
}

pub(super) fn audit_findings(judge: &mut Judge<'_>, audit: &Audit) {
    for v in &audit.violations {
        let property = match v {
            Violation::Conservation { .. } => Property::Conservation,
            Violation::FloorBroken { .. } => Property::Floors,
            _ => Property::Integrity,
        };
        judge.find(property, format!("audit: {v}"));
    }
    if audit.truncated {
        judge.find(Property::Integrity, "audit: more violations than it lists".into());
    }
}

/// Per currency, the case's accounts hold in total what they held before the run; and every
/// bounded account is at or above its floor.
pub(super) fn conservation(judge: &mut Judge<'_>, state: &State) {
    let mut delta: BTreeMap<usize, Decimal> = BTreeMap::new();
    let mut broken = Vec::new();
    for (id, k) in &judge.known {
        let Some(balance) = state.balances.get(id) else {
            broken.push((Property::Accounting, format!("{} vanished from the database", k.name)));
            continue;
        };
        *delta.entry(k.currency).or_default() += *balance - k.opening;
        if k.floor.min_balance().is_some_and(|floor| *balance < floor) {
            broken.push((Property::Floors, format!("{} holds {balance}, below its floor", k.name)));
        }
    }
    for (currency, d) in delta {
        if !d.is_zero() {
            let code = &judge.setup.spec.currencies[currency].code;
            let what = if d > Decimal::ZERO { "created" } else { "destroyed" };
            broken
                .push((Property::Conservation, format!("{what} {} {code}: balances changed by {d} in total", d.abs())));
        }
    }
    for (property, detail) in broken {
        judge.find(property, detail);
    }
}

/// The refusal an attempt must get whatever the timing, if any.
fn static_refusal(judge: &Judge<'_>, o: &Outcome) -> Option<&'static str> {
    let spec = &judge.setup.spec;
    match (o.op.from, o.op.to) {
        (Party::Account(a), Party::Account(b)) if a == b => Some("SameAccount"),
        (Party::Unknown, _) | (_, Party::Unknown) => Some("AccountNotFound"),
        (Party::Account(a), Party::Account(b)) if spec.accounts[a].currency != spec.accounts[b].currency => {
            Some("CurrencyMismatch")
        }
        _ => None,
    }
}

fn accounting(judge: &mut Judge<'_>, run: &RunLog, state: &State) -> Stats {
    let mut stats = Stats { attempts: run.attempts, committed: state.transfers.len(), ..Stats::default() };
    if !run.panicked_threads.is_empty() {
        judge.find(Property::Accounting, format!("threads {:?} panicked before finishing", run.panicked_threads));
    }
    if run.outcomes.len() != run.attempts {
        judge.find(Property::Accounting, format!("{} attempts planned, {} outcomes", run.attempts, run.outcomes.len()));
    }
    // Which applied receipt claims each committed transfer.
    let mut claimed: HashMap<i64, String> = HashMap::new();
    for o in &run.outcomes {
        let label = judge.label(o);
        let k = kind(&o.result);
        match k {
            Kind::Applied => stats.applied += 1,
            Kind::Replayed => stats.replayed += 1,
            Kind::Refused => {
                stats.refused += 1;
                if let Err(e) = &o.result {
                    *stats.refused_by.entry(refusal(e).unwrap_or("?")).or_default() += 1;
                }
            }
            Kind::Deadlock => stats.deadlocks += 1,
            Kind::Unexpected => stats.errors += 1,
        }
        match (&o.result, k) {
            (Err(e), Kind::Deadlock) => judge.find(Property::Deadlock, format!("{label}: {e} ({e:?})")),
            (Err(e), Kind::Unexpected) => judge.find(Property::UnexpectedError, format!("{label}: {e} ({e:?})")),
            _ => {}
        }
        if matches!(k, Kind::Deadlock | Kind::Unexpected) {
            continue;
        }
        let posting = run.control == Control::Posting;
        match (static_refusal(judge, o), &o.result) {
            (Some("SameAccount"), Err(LedgerError::SameAccount { .. })) => {}
            // The posting forms: an account in two legs, legs unbalanced in each currency.
            (Some("SameAccount"), Err(LedgerError::InvalidInput { field: "posting legs", .. })) if posting => {}
            (Some("CurrencyMismatch"), Err(LedgerError::Unbalanced { .. })) if posting => {}
            // Across currencies a leg may also carry more decimal places than its account's
            // currency has, which the posting checks first.
            (Some("CurrencyMismatch"), Err(LedgerError::InvalidAmount { amount, .. }))
                if posting && *amount == o.op.amount => {}
            (Some("AccountNotFound"), Err(LedgerError::AccountNotFound { account }))
                if *account == judge.setup.unknown => {}
            (Some("CurrencyMismatch"), Err(LedgerError::CurrencyMismatch { .. })) => {}
            (Some(expected), got) => {
                judge.find(Property::Accounting, format!("{label}: must be refused with {expected}, got {got:?}"))
            }
            (None, Err(LedgerError::InsufficientFunds { account, available, requested })) => {
                let bounded = judge.known.get(account).is_some_and(|k| k.floor != Floor::Unbounded);
                if *account != o.transfer.from || !bounded || *requested != o.op.amount || *available >= *requested {
                    judge.find(
                        Property::Accounting,
                        format!("{label}: insufficient funds on {account} with {available} available for {requested}"),
                    );
                }
            }
            // Judged with the key, in `idempotency`.
            (None, Err(LedgerError::IdempotencyConflict { .. })) if o.op.key.is_some() => {}
            (None, Err(e)) => judge.find(Property::Accounting, format!("{label}: refused without cause: {e:?}")),
            (None, Ok(receipt)) => {
                let t = &o.transfer;
                if (receipt.from, receipt.to, receipt.amount) != (t.from, t.to, t.amount) {
                    judge.find(Property::Accounting, format!("{label}: receipt for another transfer: {receipt:?}"));
                }
                if receipt.replayed {
                    continue;
                }
                match state.transfers.get(&receipt.transfer_id.0) {
                    None => judge.find(
                        Property::Accounting,
                        format!("{label}: receipt names transfer {}, not committed by the run", receipt.transfer_id),
                    ),
                    Some(c) if (c.from, c.to, c.amount) != (t.from, t.to, t.amount) => judge.find(
                        Property::Accounting,
                        format!("{label}: committed transfer {} moved {} from {} to {}", c.id, c.amount, c.from, c.to),
                    ),
                    Some(_) => {}
                }
                if let Some(other) = claimed.insert(receipt.transfer_id.0, label.clone()) {
                    judge.find(
                        Property::Accounting,
                        format!("{label} and {other} were both told they applied transfer {}", receipt.transfer_id),
                    );
                }
            }
        }
    }
    let phantoms: Vec<i64> = state.transfers.keys().filter(|id| !claimed.contains_key(id)).copied().collect();
    if !phantoms.is_empty() {
        judge.find(Property::Accounting, format!("transfers committed without a success to show for it: {phantoms:?}"));
    }
    stats
}

/// The run's committed transfers (or postings) in the order their entries record per account:
/// each account's consecutive entries give an edge earlier -> later, and Kahn's algorithm takes
/// the lowest id first among the ready ones. Versions that are not consecutive from the
/// account's opening, and transfers ordered in a cycle, are findings.
pub(super) fn serial_order(judge: &mut Judge<'_>, state: &State) -> Vec<i64> {
    // Per-account order: each account's consecutive entries give an edge earlier -> later.
    let mut successors: HashMap<i64, BTreeSet<i64>> = HashMap::new();
    let mut indegree: BTreeMap<i64, usize> = state.transfers.keys().map(|id| (*id, 0)).collect();
    let mut unordered = Vec::new();
    for (account, entries) in &state.entries {
        let Some(k) = judge.known.get(account) else {
            unordered.push(format!("the run wrote entries on {account}, not an account of the case"));
            continue;
        };
        let versions: Vec<i64> = entries.iter().map(|e| e.version).collect();
        let expected: Vec<i64> = (1..=entries.len() as i64).map(|n| k.opening_version + n).collect();
        if versions != expected {
            unordered.push(format!("{} has entry versions {versions:?}, expected {expected:?}", k.name));
        }
        for pair in entries.windows(2) {
            let (a, b) = (pair[0].transfer, pair[1].transfer);
            if a != b && successors.entry(a).or_default().insert(b) {
                *indegree.entry(b).or_default() += 1;
            }
        }
    }
    for detail in unordered {
        judge.find(Property::SerialEquivalence, detail);
    }
    // Kahn's algorithm, lowest transfer id first among the ready ones.
    let mut ready: BTreeSet<i64> = indegree.iter().filter(|(_, d)| **d == 0).map(|(id, _)| *id).collect();
    let mut order = Vec::with_capacity(indegree.len());
    while let Some(id) = ready.pop_first() {
        order.push(id);
        for next in successors.get(&id).into_iter().flatten() {
            let d = indegree.get_mut(next).expect("every successor is a transfer of the run");
            *d -= 1;
            if *d == 0 {
                ready.insert(*next);
            }
        }
    }
    if order.len() < state.transfers.len() {
        let stuck: Vec<i64> = indegree.iter().filter(|(_, d)| **d > 0).map(|(id, _)| *id).take(10).collect();
        judge.find(
            Property::SerialEquivalence,
            format!(
                "no serial order: {} transfers are ordered in a cycle by their entries (e.g. {stuck:?})",
                state.transfers.len() - order.len()
            ),
        );
    }

    order
}

/// Orders the run's transfers as their entries record per account, replays them serially from
/// the opening balances, and compares with entries, receipts and final balances.
fn serial_equivalence(judge: &mut Judge<'_>, run: &RunLog, state: &State) {
    let order = serial_order(judge, state);
    let mut balances: HashMap<AccountId, Decimal> = judge.known.iter().map(|(id, k)| (*id, k.opening)).collect();
    let mut after: HashMap<i64, (Decimal, Decimal)> = HashMap::new();
    let entries_of: HashMap<(i64, AccountId), Decimal> =
        state.entries.values().flatten().map(|e| ((e.transfer, e.account), e.balance_after)).collect();
    for id in order {
        let t = &state.transfers[&id];
        let (Some(from_before), Some(to_before)) = (balances.get(&t.from).copied(), balances.get(&t.to).copied())
        else {
            judge.find(Property::SerialEquivalence, format!("transfer {id} moves money outside the case"));
            continue;
        };
        let (from_after, to_after) = (from_before - t.amount, to_before + t.amount);
        let floor = judge.known[&t.from].floor.min_balance();
        if floor.is_some_and(|floor| from_after < floor) {
            let (from, to) = (judge.name(t.from), judge.name(t.to));
            judge.find(
                Property::SerialEquivalence,
                format!("serially, transfer {id} ({from} -> {to} {}) would be refused: {from} holds {from_before}, floor {}", t.amount, floor.unwrap_or_default()),
            );
        }
        balances.insert(t.from, from_after);
        balances.insert(t.to, to_after);
        after.insert(id, (from_after, to_after));
        for (account, replayed) in [(t.from, from_after), (t.to, to_after)] {
            match entries_of.get(&(id, account)) {
                Some(recorded) if *recorded != replayed => {
                    let name = judge.name(account);
                    judge.find(
                        Property::SerialEquivalence,
                        format!("transfer {id}: the entry on {name} records balance_after {recorded}, serial replay gives {replayed}"),
                    );
                }
                Some(_) => {}
                None => judge.find(
                    Property::SerialEquivalence,
                    format!("transfer {id} has no entry on {}", judge.name(account)),
                ),
            }
        }
    }
    for o in &run.outcomes {
        let Ok(r) = &o.result else { continue };
        let Some((from_after, to_after)) = after.get(&r.transfer_id.0) else { continue };
        if (r.from_balance, r.to_balance) != (*from_after, *to_after) {
            let label = judge.label(o);
            judge.find(
                Property::SerialEquivalence,
                format!(
                    "{label}: receipt of transfer {} says {} / {}, serial replay gives {from_after} / {to_after}",
                    r.transfer_id, r.from_balance, r.to_balance
                ),
            );
        }
    }
    final_balances(judge, &balances, state);
}

/// Every account's balance in the database must be the one the serial replay ended with.
pub(super) fn final_balances(judge: &mut Judge<'_>, replayed: &HashMap<AccountId, Decimal>, state: &State) {
    let mut finals: Vec<(AccountId, Decimal, Decimal)> = replayed
        .iter()
        .filter_map(|(id, replayed)| state.balances.get(id).filter(|a| *a != replayed).map(|a| (*id, *a, *replayed)))
        .collect();
    finals.sort();
    for (id, actual, replayed) in finals {
        let name = judge.name(id);
        judge.find(Property::SerialEquivalence, format!("{name} holds {actual}, serial replay gives {replayed}"));
    }
}

/// A success under an idempotency key, as [`judge_key`] compares them.
pub(super) struct KeyedSuccess {
    /// The attempt, for findings.
    pub(super) label: String,
    /// The transfer (or posting) its receipt names.
    pub(super) transfer: i64,
    /// Whether the receipt says it was a replay.
    pub(super) replayed: bool,
    /// The balances the receipt reports, in an order that does not depend on the call.
    pub(super) balances: Vec<(AccountId, Decimal)>,
}

/// Per idempotency key, the committed transfers (or postings) of the run that hold it.
pub(super) fn key_holders(state: &State) -> HashMap<&str, Vec<i64>> {
    let mut holders: HashMap<&str, Vec<i64>> = HashMap::new();
    for c in state.transfers.values() {
        if let Some(key) = &c.key {
            holders.entry(key.as_str()).or_default().push(c.id);
        }
    }
    holders
}

/// Judges one key: held by at most one transfer, successes only if held, exactly one success
/// that was not a replay, every success naming the holder, every replay repeating the first
/// receipt. Returns the holder.
pub(super) fn judge_key(judge: &mut Judge<'_>, key: &str, held: &[i64], successes: &[KeyedSuccess]) -> Option<i64> {
    if held.len() > 1 {
        judge.find(Property::Idempotency, format!("key {key:?} applied {} times: transfers {held:?}", held.len()));
    }
    let Some(&holder) = held.first() else {
        if !successes.is_empty() {
            judge.find(Property::Idempotency, format!("key {key:?} succeeded but no transfer holds it"));
        }
        return None;
    };
    let firsts: Vec<&KeyedSuccess> = successes.iter().filter(|s| !s.replayed).collect();
    if firsts.len() != 1 {
        judge.find(
            Property::Idempotency,
            format!("key {key:?}: {} successes were not replays, expected exactly 1", firsts.len()),
        );
    }
    for s in successes {
        if s.transfer != holder {
            judge.find(
                Property::Idempotency,
                format!("{}: receipt names transfer {}, key {key:?} is held by {holder}", s.label, s.transfer),
            );
        }
        if let Some(first) = firsts.first().filter(|_| s.replayed) {
            if (s.transfer, &s.balances) != (first.transfer, &first.balances) {
                judge.find(
                    Property::Idempotency,
                    format!(
                        "{}: replay of transfer {} with balances {:?} differs from the first receipt ({}: transfer {}, {:?})",
                        s.label, s.transfer, s.balances, first.label, first.transfer, first.balances
                    ),
                );
            }
        }
    }
    Some(holder)
}

fn idempotency(judge: &mut Judge<'_>, run: &RunLog, state: &State) {
    let mut by_key: BTreeMap<&str, Vec<&Outcome>> = BTreeMap::new();
    for o in &run.outcomes {
        if let Some(key) = &o.transfer.idempotency_key {
            by_key.entry(key.as_str()).or_default().push(o);
        }
    }
    let holders = key_holders(state);
    for (key, outcomes) in by_key {
        let successes: Vec<KeyedSuccess> = outcomes
            .iter()
            .filter_map(|o| {
                o.result.as_ref().ok().map(|r| KeyedSuccess {
                    label: judge.label(o),
                    transfer: r.transfer_id.0,
                    replayed: r.replayed,
                    balances: vec![(r.from, r.from_balance), (r.to, r.to_balance)],
                })
            })
            .collect();
        let held = holders.get(key).map_or(&[][..], Vec::as_slice);
        let Some(holder) = judge_key(judge, key, held, &successes) else { continue };
        let holder = &state.transfers[&holder];
        for o in &outcomes {
            if let Err(LedgerError::IdempotencyConflict { existing, .. }) = &o.result {
                let same =
                    (o.transfer.from, o.transfer.to, o.transfer.amount) == (holder.from, holder.to, holder.amount);
                if *existing != crate::KeyHolder::Transfer(crate::TransferId(holder.id)) || same {
                    let label = judge.label(o);
                    judge.find(
                        Property::Idempotency,
                        format!("{label}: conflict with transfer {existing}, but key {key:?} is held by {} with the same content: {same}", holder.id),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::LedgerSpec;

    fn setup() -> Setup {
        Setup {
            spec: LedgerSpec { currencies: Vec::new(), accounts: Vec::new() },
            accounts: Vec::new(),
            issuers: Vec::new(),
            unknown: AccountId(0),
            opening: Vec::new(),
            opening_versions: Vec::new(),
            issuer_opening: Vec::new(),
            last_setup_transfer: 0,
            key_prefix: String::new(),
        }
    }

    fn success(label: &str, transfer: i64, replayed: bool, balance: i64) -> KeyedSuccess {
        KeyedSuccess { label: label.into(), transfer, replayed, balances: vec![(AccountId(1), Decimal::from(balance))] }
    }

    /// The idempotency check flags each way a key can be broken, and nothing in a clean case.
    #[test]
    fn judge_key_catches_every_broken_key() {
        let setup = setup();
        let judged = |held: &[i64], successes: &[KeyedSuccess]| {
            let mut judge = Judge::new(&setup);
            let holder = judge_key(&mut judge, "k", held, successes);
            (holder, judge.findings.len())
        };
        let clean = [success("a", 7, false, 5), success("b", 7, true, 5)];
        assert_eq!(judged(&[7], &clean), (Some(7), 0));
        assert_eq!(judged(&[7, 8], &clean).1, 1, "applied twice");
        assert_eq!(judged(&[], &clean), (None, 1), "a success without a holder");
        assert_eq!(judged(&[7], &[success("a", 7, false, 5), success("b", 7, false, 5)]).1, 1, "two firsts");
        assert_eq!(judged(&[7], &[success("a", 7, false, 5), success("b", 8, true, 5)]).1, 2, "names another");
        assert_eq!(judged(&[7], &[success("a", 7, false, 5), success("b", 7, true, 6)]).1, 1, "replay differs");
    }
}
