//! The checker of operation runs: the transfer checker's properties, with a serial replay whose
//! model has, per account, a status, a floor and a ceiling besides the balance, and per payment
//! the amount reversed so far.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Instant;

use postgres::IsolationLevel;
use rust_decimal::Decimal;

use super::super::checker::{
    audit_findings, judge_key, key_holders, read_state, write_verdict, Judge, KeyedSuccess, State,
};
use super::super::controls::is_deadlock;
use super::super::runner::KitError;
use super::super::{Finding, Property, Stats};
use super::{Action, Answer, OpControl, OperationOutcome, OperationRun, OperationSetup};
use crate::{AccountId, AccountStatus, Audit, Ledger, LedgerError, Violation};

/// The account rule a finding is about, when it is about one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// A frozen account paid.
    Frozen,
    /// A closed account moved, or was closed with money.
    Closed,
    /// A floor was broken, or an `InsufficientFunds` had no cause.
    Floor,
    /// A ceiling was broken, or a `BalanceLimitExceeded` had no cause.
    Ceiling,
    /// A limit change the account broke was applied, or a `LimitBreached` had no cause.
    LimitChange,
    /// A transfer was reversed beyond its amount, a reversal moved the wrong amount or the wrong
    /// way, or a `ReversalExceedsOriginal` had no cause.
    Reversal,
    /// A sweep moved other than `min(asked, available)`, or was refused with something available.
    Sweep,
}

/// The checker's verdict on one operations run.
#[derive(Debug, Clone)]
pub struct OperationReport {
    /// The implementation that ran.
    pub control: OpControl,
    /// Outcome counts (skipped reversals are not attempts made).
    pub stats: Stats,
    /// Per kind of action (`transfer`, `reverse`, ...): how many went through, how many were
    /// refused, how many were skipped.
    pub by_kind: BTreeMap<&'static str, [usize; 3]>,
    /// Every broken property found; empty when the run is clean.
    pub findings: Vec<Finding>,
    /// The account rules some finding is about.
    pub rules: BTreeSet<Rule>,
    /// The ledger's own audit after the run.
    pub audit: Audit,
}

impl OperationReport {
    /// No property broken.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// Whether some finding breaks `property`.
    pub fn caught(&self, property: Property) -> bool {
        self.findings.iter().any(|f| f.property == property)
    }

    /// Whether some finding is about `rule`.
    pub fn caught_rule(&self, rule: Rule) -> bool {
        self.rules.contains(&rule)
    }
}

impl fmt::Display for OperationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_verdict(f, &format!("operations, {}", self.control.name()), &self.stats, &self.findings)?;
        if !self.rules.is_empty() {
            write!(f, "\n  rules: {:?}", self.rules)?;
        }
        Ok(())
    }
}

/// The model of one account.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Acct {
    balance: Decimal,
    floor: Option<Decimal>,
    ceiling: Option<Decimal>,
    status: AccountStatus,
}

impl Acct {
    fn available(&self) -> Option<Decimal> {
        self.floor.map(|f| self.balance - f)
    }
}

/// An event of the serial order: a committed transfer (by id) or a state change (by outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Event {
    Move(i64),
    Change(usize),
}

/// When an event's call ran, and its place in an account's (or payment's) timeline: the state
/// before it is `timeline[place]`.
#[derive(Debug, Clone, Copy)]
struct Placed {
    began: Instant,
    ended: Instant,
    place: usize,
}

struct Verdict<'a> {
    judge: Judge<'a>,
    rules: BTreeSet<Rule>,
}

impl Verdict<'_> {
    fn find(&mut self, property: Property, rule: Option<Rule>, detail: String) {
        if let Some(rule) = rule {
            self.rules.insert(rule);
        }
        self.judge.find(property, detail);
    }
}

/// What the database holds besides [`State`]: each account's status and limits, each run
/// transfer's `reverses` and `reversed`.
struct Extra {
    accounts: HashMap<AccountId, (AccountStatus, Option<Decimal>, Option<Decimal>)>,
    reverses: HashMap<i64, (Option<i64>, Decimal)>,
}

fn read_extra(ledger: &Ledger, setup: &OperationSetup) -> Result<Extra, KitError> {
    let mut conn = ledger.connection()?;
    let accounts_sql = conn
        .sql("SELECT id, status, min_balance, max_balance FROM wallet_ledger.accounts WHERE id = ANY($1)")
        .into_owned();
    let transfers_sql =
        conn.sql("SELECT id, reverses, reversed FROM wallet_ledger.transfers WHERE id > $1").into_owned();
    let mut tx =
        conn.client().build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start()?;
    let ids: Vec<i64> = setup.setup.accounts.iter().map(|a| a.0).collect();
    let mut accounts = HashMap::new();
    for r in tx.query(&accounts_sql, &[&ids])? {
        let status = match r.try_get::<_, String>(1)?.as_str() {
            "frozen" => AccountStatus::Frozen,
            "closed" => AccountStatus::Closed,
            _ => AccountStatus::Open,
        };
        accounts.insert(AccountId(r.try_get(0)?), (status, r.try_get(2)?, r.try_get(3)?));
    }
    let mut reverses = HashMap::new();
    for r in tx.query(&transfers_sql, &[&setup.setup.last_setup_transfer])? {
        reverses.insert(r.try_get::<_, i64>(0)?, (r.try_get(1)?, r.try_get(2)?));
    }
    tx.commit()?;
    Ok(Extra { accounts, reverses })
}

/// Judges an operations run against the final database, with nothing else writing. See
/// `docs/testing.md` ("Operations") for what is checked and why the order it replays in is
/// the one the database fixed:
///
/// - **conservation**: the audit is clean (conservation, floors, ceilings, closed accounts
///   empty, no over-reversal, reversals pointing back) and the case's accounts hold in total
///   what they held before;
/// - **accounting**: every action made has an outcome; each is a success or a typed refusal its
///   kind can get; each committed transfer was announced by exactly one success, with the
///   accounts (and, but for sweeps and whole reversals, the amount) asked for;
/// - **serial equivalence**: the committed transfers and the state changes, in the order the
///   accounts' entry versions and the versions the changes answered with give, replay on a model
///   with statuses, floors, ceilings and reversed totals: no debit from a frozen or closed
///   account, no credit to a closed one, no floor or ceiling broken, sweeps move
///   `min(asked, available)`, reversals move back along their payment and at most what is left
///   (all of it when no amount is asked), every entry's `balance_after`, every receipt and every
///   changed account's answer as replayed, and the final balances, statuses, limits and reversed
///   totals as replayed; each refusal's reason held on the model at some point of the account's
///   timeline that the call's real time allows;
/// - **idempotency**: each payment key is held by at most one transfer, applied by exactly one
///   success, and every replay returns the first receipt.
///
/// # Errors
/// Only when the database cannot be read.
pub fn check_operations(
    ledger: &Ledger,
    setup: &OperationSetup,
    run: &OperationRun,
) -> Result<OperationReport, KitError> {
    let audit = ledger.verify()?;
    let state = read_state(ledger, &setup.setup)?;
    let extra = read_extra(ledger, setup)?;
    let mut v = Verdict { judge: Judge::new(&setup.setup), rules: BTreeSet::new() };
    audit_findings(&mut v.judge, &audit);
    for violation in &audit.violations {
        let rule = match violation {
            Violation::FloorBroken { .. } => Rule::Floor,
            Violation::CeilingBroken { .. } => Rule::Ceiling,
            Violation::ClosedNotEmpty { .. } => Rule::Closed,
            Violation::OverReversed { .. } | Violation::ReversalMismatch { .. } => Rule::Reversal,
            _ => continue,
        };
        v.rules.insert(rule);
    }
    conservation(&mut v, &state);
    let (stats, by_kind, claims) = accounting(&mut v, setup, run, &state);
    Replay::run(&mut v, setup, run, &state, &extra, &claims);
    idempotency(&mut v, setup, run, &state);
    Ok(OperationReport { control: run.control, stats, by_kind, findings: v.judge.findings, rules: v.rules, audit })
}

fn label(o: &OperationOutcome) -> String {
    format!("t{}#{} {:?}", o.thread, o.position, o.action)
}

fn conservation(v: &mut Verdict<'_>, state: &State) {
    let mut delta = Decimal::ZERO;
    let mut missing = Vec::new();
    for (id, k) in &v.judge.known {
        match state.balances.get(id) {
            Some(balance) => delta += *balance - k.opening,
            None => missing.push(k.name.clone()),
        }
    }
    for name in missing {
        v.find(Property::Accounting, None, format!("{name} vanished from the database"));
    }
    if !delta.is_zero() {
        v.find(Property::Conservation, None, format!("balances changed by {delta} in total"));
    }
}

/// The debited and credited account of a money-moving action as sent, and the amount asked
/// (`None` for a whole reversal).
fn sides(
    setup: &OperationSetup,
    o: &OperationOutcome,
    state: &State,
) -> Option<(AccountId, AccountId, Option<Decimal>)> {
    let id = |i: usize| setup.setup.accounts[i];
    match &o.action {
        Action::Transfer { from, to, amount } | Action::Sweep { from, to, amount } => {
            Some((id(*from), id(*to), Some(*amount)))
        }
        Action::Pay(j) => setup.payments.get(*j).map(|p| (id(p.from), id(p.to), Some(p.amount))),
        Action::Reverse { amount, .. } => {
            let original = state.transfers.get(&o.target?.0)?;
            Some((original.to, original.from, *amount))
        }
        _ => None,
    }
}

/// Which outcome announced each committed transfer.
type Claims = HashMap<i64, usize>;

fn accounting(
    v: &mut Verdict<'_>,
    setup: &OperationSetup,
    run: &OperationRun,
    state: &State,
) -> (Stats, BTreeMap<&'static str, [usize; 3]>, Claims) {
    let mut stats = Stats { attempts: run.attempts, committed: state.transfers.len(), ..Stats::default() };
    let mut by_kind: BTreeMap<&'static str, [usize; 3]> = BTreeMap::new();
    if !run.panicked_threads.is_empty() {
        v.find(Property::Accounting, None, format!("threads {:?} panicked before finishing", run.panicked_threads));
    }
    if run.outcomes.len() != run.attempts {
        v.find(
            Property::Accounting,
            None,
            format!("{} actions planned, {} outcomes", run.attempts, run.outcomes.len()),
        );
    }
    let mut claims: Claims = HashMap::new();
    for (index, o) in run.outcomes.iter().enumerate() {
        let label = label(o);
        let counts = by_kind.entry(o.action.kind()).or_default();
        match &o.answer {
            Answer::Skipped => counts[2] += 1,
            Answer::Changed(_) => {
                counts[0] += 1;
                stats.applied += 1;
            }
            Answer::Moved(r) if r.replayed => {
                counts[0] += 1;
                stats.replayed += 1;
            }
            Answer::Moved(r) => {
                counts[0] += 1;
                stats.applied += 1;
                let Some((from, to, asked)) = sides(setup, o, state) else {
                    v.find(Property::Accounting, None, format!("{label}: applied, but names nothing committed"));
                    continue;
                };
                let amount_ok = match (&o.action, asked) {
                    (Action::Sweep { .. }, Some(asked)) => r.amount > Decimal::ZERO && r.amount <= asked,
                    (_, Some(asked)) => r.amount == asked,
                    (_, None) => r.amount > Decimal::ZERO,
                };
                if (r.from, r.to) != (from, to) || !amount_ok {
                    v.find(Property::Accounting, None, format!("{label}: receipt for another transfer: {r:?}"));
                }
                match state.transfers.get(&r.transfer_id.0) {
                    None => v.find(
                        Property::Accounting,
                        None,
                        format!("{label}: receipt names transfer {}, not committed by the run", r.transfer_id),
                    ),
                    Some(c) if (c.from, c.to, c.amount) != (r.from, r.to, r.amount) => v.find(
                        Property::Accounting,
                        None,
                        format!("{label}: committed transfer {} moved {} from {} to {}", c.id, c.amount, c.from, c.to),
                    ),
                    Some(_) => {}
                }
                if let Some(other) = claims.insert(r.transfer_id.0, index) {
                    let other = label_of(run, other);
                    v.find(
                        Property::Accounting,
                        None,
                        format!("{label} and {other} were both told they applied transfer {}", r.transfer_id),
                    );
                }
            }
            Answer::Failed(e) => {
                if is_deadlock(e) {
                    stats.deadlocks += 1;
                    v.find(Property::Deadlock, None, format!("{label}: {e} ({e:?})"));
                } else if let Some(name) = refusal(e) {
                    counts[1] += 1;
                    stats.refused += 1;
                    *stats.refused_by.entry(name).or_default() += 1;
                } else {
                    stats.errors += 1;
                    v.find(Property::UnexpectedError, None, format!("{label}: {e} ({e:?})"));
                }
            }
        }
    }
    let phantoms: Vec<i64> = state.transfers.keys().filter(|id| !claims.contains_key(id)).copied().collect();
    if !phantoms.is_empty() {
        v.find(
            Property::Accounting,
            None,
            format!("transfers committed without a success to show for it: {phantoms:?}"),
        );
    }
    (stats, by_kind, claims)
}

fn label_of(run: &OperationRun, index: usize) -> String {
    run.outcomes.get(index).map_or_else(|| format!("outcome {index}"), label)
}

/// The typed refusals an operations run can meet.
fn refusal(e: &LedgerError) -> Option<&'static str> {
    Some(match e {
        LedgerError::InsufficientFunds { .. } => "InsufficientFunds",
        LedgerError::AccountFrozen { .. } => "AccountFrozen",
        LedgerError::AccountClosed { .. } => "AccountClosed",
        LedgerError::AccountNotEmpty { .. } => "AccountNotEmpty",
        LedgerError::BalanceLimitExceeded { .. } => "BalanceLimitExceeded",
        LedgerError::LimitBreached { .. } => "LimitBreached",
        LedgerError::ReversalExceedsOriginal { .. } => "ReversalExceedsOriginal",
        LedgerError::TransferNotFound { .. } => "TransferNotFound",
        LedgerError::IdempotencyConflict { .. } => "IdempotencyConflict",
        _ => return None,
    })
}

/// The serial replay.
struct Replay {
    /// Per account, the model's states: `[0]` at the opening, then one after each event on it.
    timeline: HashMap<AccountId, Vec<Acct>>,
    /// Per account, the events on it with a call to time them.
    placed: HashMap<AccountId, Vec<Placed>>,
    /// Per reversed transfer, what was left to reverse: `[0]` its amount, then after each
    /// reversal of it.
    remaining: HashMap<i64, Vec<Decimal>>,
    /// Per reversed transfer, its reversals with a call to time them.
    reversals: HashMap<i64, Vec<Placed>>,
}

impl Replay {
    fn run(
        v: &mut Verdict<'_>,
        setup: &OperationSetup,
        run: &OperationRun,
        state: &State,
        extra: &Extra,
        claims: &Claims,
    ) {
        let order = order(v, run, state);
        let mut replay = Replay {
            timeline: HashMap::new(),
            placed: HashMap::new(),
            remaining: HashMap::new(),
            reversals: HashMap::new(),
        };
        for (i, id) in setup.setup.accounts.iter().enumerate() {
            let opening = Acct {
                balance: setup.setup.opening[i],
                floor: setup.setup.spec.accounts[i].floor.min_balance(),
                ceiling: setup.ceilings.get(i).copied().flatten(),
                status: AccountStatus::Open,
            };
            replay.timeline.insert(*id, vec![opening]);
        }
        for (c, id) in setup.setup.issuers.iter().enumerate() {
            let balance = setup.setup.issuer_opening[c].0;
            replay
                .timeline
                .insert(*id, vec![Acct { balance, floor: None, ceiling: None, status: AccountStatus::Open }]);
        }
        let entries_of: HashMap<(i64, AccountId), Decimal> =
            state.entries.values().flatten().map(|e| ((e.transfer, e.account), e.balance_after)).collect();
        let mut after: HashMap<i64, (Decimal, Decimal)> = HashMap::new();
        for event in order {
            match event {
                Event::Move(id) => {
                    if let Some(balances) = replay.apply_move(v, run, state, extra, claims, &entries_of, id) {
                        after.insert(id, balances);
                    }
                }
                Event::Change(index) => replay.apply_change(v, run, index),
            }
        }
        // Receipts, replays included.
        for o in &run.outcomes {
            let Answer::Moved(r) = &o.answer else { continue };
            let Some((from_after, to_after)) = after.get(&r.transfer_id.0) else { continue };
            if (r.from_balance, r.to_balance) != (*from_after, *to_after) {
                v.find(
                    Property::SerialEquivalence,
                    None,
                    format!(
                        "{}: receipt of transfer {} says {} / {}, serial replay gives {from_after} / {to_after}",
                        label(o),
                        r.transfer_id,
                        r.from_balance,
                        r.to_balance
                    ),
                );
            }
        }
        replay.finals(v, state, extra);
        replay.refusals(v, setup, run, state);
    }

    fn now(&self, account: AccountId) -> Option<&Acct> {
        self.timeline.get(&account).and_then(|t| t.last())
    }

    fn push(&mut self, account: AccountId, next: Acct, placed: Option<(Instant, Instant)>) {
        let Some(timeline) = self.timeline.get_mut(&account) else { return };
        let place = timeline.len() - 1;
        timeline.push(next);
        if let Some((began, ended)) = placed {
            self.placed.entry(account).or_default().push(Placed { began, ended, place });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_move(
        &mut self,
        v: &mut Verdict<'_>,
        run: &OperationRun,
        state: &State,
        extra: &Extra,
        claims: &Claims,
        entries_of: &HashMap<(i64, AccountId), Decimal>,
        id: i64,
    ) -> Option<(Decimal, Decimal)> {
        let t = state.transfers.get(&id)?;
        let (Some(from), Some(to)) = (self.now(t.from).cloned(), self.now(t.to).cloned()) else {
            v.find(Property::SerialEquivalence, None, format!("transfer {id} moves money outside the case"));
            return None;
        };
        let claimer = claims.get(&id).and_then(|i| run.outcomes.get(*i));
        let what = claimer.map_or_else(|| format!("transfer {id}"), |o| format!("{} (transfer {id})", label(o)));
        let (from_name, to_name) = (v.judge.name(t.from), v.judge.name(t.to));
        match from.status {
            AccountStatus::Open => {}
            AccountStatus::Frozen => v.find(
                Property::SerialEquivalence,
                Some(Rule::Frozen),
                format!("serially, {what} debits {from_name} while it is frozen"),
            ),
            _ => v.find(
                Property::SerialEquivalence,
                Some(Rule::Closed),
                format!("serially, {what} debits {from_name} while it is closed"),
            ),
        }
        if to.status == AccountStatus::Closed {
            v.find(
                Property::SerialEquivalence,
                Some(Rule::Closed),
                format!("serially, {what} credits {to_name} while it is closed"),
            );
        }
        if let Some(floor) = from.floor.filter(|f| from.balance - t.amount < *f) {
            v.find(
                Property::SerialEquivalence,
                Some(Rule::Floor),
                format!(
                    "serially, {what} would be refused: {from_name} holds {}, floor {floor}, {} asked",
                    from.balance, t.amount
                ),
            );
        }
        if let Some(ceiling) = to.ceiling.filter(|c| to.balance + t.amount > *c) {
            v.find(
                Property::SerialEquivalence,
                Some(Rule::Ceiling),
                format!(
                    "serially, {what} would be refused: {to_name} holds {}, ceiling {ceiling}, {} credited",
                    to.balance, t.amount
                ),
            );
        }
        let reverses = extra.reverses.get(&id).and_then(|(r, _)| *r);
        match claimer.map(|o| (&o.action, o.target)) {
            Some((Action::Sweep { amount: asked, .. }, _)) => {
                let expected = from.available().map_or(*asked, |a| a.min(*asked));
                if t.amount != expected {
                    v.find(
                        Property::SerialEquivalence,
                        Some(Rule::Sweep),
                        format!(
                            "serially, {what} moves {} but min(asked {asked}, available {:?}) is {expected}",
                            t.amount,
                            from.available()
                        ),
                    );
                }
            }
            Some((Action::Reverse { amount: asked, .. }, Some(target))) => {
                if reverses != Some(target.0) {
                    v.find(
                        Property::SerialEquivalence,
                        Some(Rule::Reversal),
                        format!("{what} reverses {target} but records reverses = {reverses:?}"),
                    );
                }
                self.reverse(v, state, &what, target.0, t.amount, *asked, claimer);
            }
            _ if reverses.is_some() => v.find(
                Property::SerialEquivalence,
                Some(Rule::Reversal),
                format!("{what} records reverses = {reverses:?}, but no reversal announced it"),
            ),
            _ => {}
        }
        let times = claimer.map(|o| (o.began, o.ended));
        let (from_after, to_after) = (from.balance - t.amount, to.balance + t.amount);
        self.push(t.from, Acct { balance: from_after, ..from }, times);
        self.push(t.to, Acct { balance: to_after, ..to }, times);
        for (account, replayed) in [(t.from, from_after), (t.to, to_after)] {
            match entries_of.get(&(id, account)) {
                Some(recorded) if *recorded != replayed => {
                    let name = v.judge.name(account);
                    v.find(
                        Property::SerialEquivalence,
                        None,
                        format!("{what}: the entry on {name} records balance_after {recorded}, serial replay gives {replayed}"),
                    );
                }
                Some(_) => {}
                None => {
                    let name = v.judge.name(account);
                    v.find(Property::SerialEquivalence, None, format!("{what} has no entry on {name}"));
                }
            }
        }
        Some((from_after, to_after))
    }

    /// A reversal of `original` moving `moved` (asked: `asked`, `None` = all that is left).
    #[allow(clippy::too_many_arguments)]
    fn reverse(
        &mut self,
        v: &mut Verdict<'_>,
        state: &State,
        what: &str,
        original: i64,
        moved: Decimal,
        asked: Option<Decimal>,
        claimer: Option<&OperationOutcome>,
    ) {
        let Some(o) = state.transfers.get(&original) else {
            v.find(
                Property::SerialEquivalence,
                Some(Rule::Reversal),
                format!("{what} reverses {original}, not a transfer of the run"),
            );
            return;
        };
        let timeline = self.remaining.entry(original).or_insert_with(|| vec![o.amount]);
        let left = timeline.last().copied().unwrap_or(o.amount);
        if moved > left {
            v.find(
                Property::SerialEquivalence,
                Some(Rule::Reversal),
                format!("serially, {what} reverses {moved} of transfer {original}, only {left} is left"),
            );
        }
        if asked.is_none() && moved != left {
            v.find(
                Property::SerialEquivalence,
                Some(Rule::Reversal),
                format!("serially, {what} reverses all of transfer {original} with {moved}, {left} is left"),
            );
        }
        let place = timeline.len() - 1;
        timeline.push(left - moved);
        if let Some(c) = claimer {
            self.reversals.entry(original).or_default().push(Placed { began: c.began, ended: c.ended, place });
        }
    }

    fn apply_change(&mut self, v: &mut Verdict<'_>, run: &OperationRun, index: usize) {
        let Some(o) = run.outcomes.get(index) else { return };
        let Answer::Changed(answer) = &o.answer else { return };
        let Some(now) = self.now(answer.id).cloned() else { return };
        let what = label(o);
        let mut next = now.clone();
        let closed = now.status == AccountStatus::Closed;
        let wrong = |v: &mut Verdict<'_>, rule: Rule, why: &str| {
            v.find(
                Property::SerialEquivalence,
                Some(rule),
                format!("serially, {what} would be refused: {why} ({now:?})"),
            );
        };
        match &o.action {
            Action::Freeze(_) | Action::Unfreeze(_) if closed => wrong(v, Rule::Closed, "the account is closed"),
            Action::Freeze(_) => next.status = AccountStatus::Frozen,
            Action::Unfreeze(_) => next.status = AccountStatus::Open,
            Action::Close(_) => {
                if !closed && !now.balance.is_zero() {
                    wrong(v, Rule::Closed, "the account is not empty");
                }
                next.status = AccountStatus::Closed;
            }
            Action::SetMin(_, floor) => {
                if closed {
                    wrong(v, Rule::Closed, "the account is closed");
                } else if floor.is_some_and(|f| now.balance < f) {
                    wrong(v, Rule::LimitChange, "the balance is below the new floor");
                }
                next.floor = *floor;
            }
            Action::SetMax(_, ceiling) => {
                if closed {
                    wrong(v, Rule::Closed, "the account is closed");
                } else if ceiling.is_some_and(|c| now.balance > c) {
                    wrong(v, Rule::LimitChange, "the balance is above the new ceiling");
                }
                next.ceiling = *ceiling;
            }
            _ => return,
        }
        let reported = Acct {
            balance: answer.balance,
            floor: answer.min_balance,
            ceiling: answer.max_balance,
            status: answer.status,
        };
        if reported != next {
            v.find(
                Property::SerialEquivalence,
                None,
                format!("{what} answers {reported:?}, serial replay gives {next:?}"),
            );
        }
        self.push(answer.id, next, Some((o.began, o.ended)));
    }

    fn finals(&self, v: &mut Verdict<'_>, state: &State, extra: &Extra) {
        let mut accounts: Vec<&AccountId> = self.timeline.keys().collect();
        accounts.sort();
        for id in accounts {
            let Some(model) = self.now(*id) else { continue };
            let name = v.judge.name(*id);
            if let Some(actual) = state.balances.get(id).filter(|b| **b != model.balance) {
                v.find(
                    Property::SerialEquivalence,
                    None,
                    format!("{name} holds {actual}, serial replay gives {}", model.balance),
                );
            }
            if let Some((status, floor, ceiling)) = extra.accounts.get(id) {
                if (*status, *floor, *ceiling) != (model.status, model.floor, model.ceiling) {
                    v.find(
                        Property::SerialEquivalence,
                        None,
                        format!(
                            "{name} ends {status:?} floor {floor:?} ceiling {ceiling:?}, serial replay gives {:?} floor {:?} ceiling {:?}",
                            model.status, model.floor, model.ceiling
                        ),
                    );
                }
            }
        }
        for (id, timeline) in &self.remaining {
            let (Some(t), Some(left)) = (state.transfers.get(id), timeline.last()) else { continue };
            let reversed = extra.reverses.get(id).map_or(Decimal::ZERO, |(_, r)| *r);
            if reversed != t.amount - left {
                v.find(
                    Property::SerialEquivalence,
                    Some(Rule::Reversal),
                    format!("transfer {id} records {reversed} reversed, its reversals replay to {}", t.amount - left),
                );
            }
        }
    }

    /// The places of `timeline` a call running from `began` to `ended` can have seen: after
    /// every event on it that returned before the call began, before every event on it that
    /// began after the call returned.
    fn window(placed: Option<&Vec<Placed>>, len: usize, began: Instant, ended: Instant) -> (usize, usize) {
        let (mut lo, mut hi) = (0, len.saturating_sub(1));
        for p in placed.into_iter().flatten() {
            if p.ended < began {
                lo = lo.max(p.place + 1);
            }
            if p.began > ended {
                hi = hi.min(p.place);
            }
        }
        (lo, hi)
    }

    /// Whether `holds` held at some place of `account`'s timeline the call can have seen.
    fn held(&self, account: AccountId, o: &OperationOutcome, holds: impl Fn(&Acct) -> bool) -> Option<bool> {
        let timeline = self.timeline.get(&account)?;
        let (lo, hi) = Self::window(self.placed.get(&account), timeline.len(), o.began, o.ended);
        Some(lo <= hi && timeline.get(lo..=hi).is_some_and(|states| states.iter().any(holds)))
    }

    fn refusals(&self, v: &mut Verdict<'_>, setup: &OperationSetup, run: &OperationRun, state: &State) {
        for o in &run.outcomes {
            let Answer::Failed(e) = &o.answer else { continue };
            if refusal(e).is_none() {
                continue;
            }
            let what = label(o);
            let changed = o.action.changed_account().map(|i| setup.setup.accounts[i]);
            let sides = sides(setup, o, state);
            let sweep = matches!(o.action, Action::Sweep { .. });
            // (rule, whether the reason held on the model somewhere in the call's window)
            let judged: Option<(Option<Rule>, Option<bool>)> = match (e, changed, sides) {
                (LedgerError::AccountClosed { account }, Some(a), _) if *account == a => {
                    Some((Some(Rule::Closed), self.held(a, o, |s| s.status == AccountStatus::Closed)))
                }
                (LedgerError::AccountNotEmpty { account, balance, .. }, Some(a), _)
                    if *account == a && matches!(o.action, Action::Close(_)) =>
                {
                    let holds =
                        |s: &Acct| s.status != AccountStatus::Closed && s.balance == *balance && !balance.is_zero();
                    Some((Some(Rule::Closed), self.held(a, o, holds)))
                }
                (LedgerError::LimitBreached { account, balance, min_balance, max_balance, .. }, Some(a), _)
                    if *account == a =>
                {
                    let holds = |s: &Acct| {
                        let (floor, ceiling) = match &o.action {
                            Action::SetMin(_, f) => (*f, s.ceiling),
                            Action::SetMax(_, c) => (s.floor, *c),
                            _ => return false,
                        };
                        s.status != AccountStatus::Closed
                            && s.balance == *balance
                            && (floor, ceiling) == (*min_balance, *max_balance)
                            && (floor.is_some_and(|f| s.balance < f) || ceiling.is_some_and(|c| s.balance > c))
                    };
                    Some((Some(Rule::LimitChange), self.held(a, o, holds)))
                }
                (LedgerError::AccountFrozen { account }, None, Some((from, _, _))) if *account == from => {
                    Some((Some(Rule::Frozen), self.held(from, o, |s| s.status == AccountStatus::Frozen)))
                }
                (LedgerError::AccountClosed { account }, None, Some((from, to, _)))
                    if *account == from || *account == to =>
                {
                    Some((Some(Rule::Closed), self.held(*account, o, |s| s.status == AccountStatus::Closed)))
                }
                (LedgerError::InsufficientFunds { account, available, requested }, None, Some((from, _, asked)))
                    if *account == from && asked.is_none_or(|a| a == *requested) =>
                {
                    let holds = |s: &Acct| {
                        s.status == AccountStatus::Open
                            && s.available() == Some(*available)
                            && *available < *requested
                            && (!sweep || *available <= Decimal::ZERO)
                    };
                    let rule = if sweep { Rule::Sweep } else { Rule::Floor };
                    Some((Some(rule), self.held(from, o, holds)))
                }
                (LedgerError::BalanceLimitExceeded { account, max_balance, requested }, None, Some((_, to, _)))
                    if *account == to =>
                {
                    // A sweep or a whole reversal decides its amount on the payer's side; the
                    // refusal names what was asked, so only the ceiling itself is compared.
                    let exact = matches!(
                        o.action,
                        Action::Transfer { .. } | Action::Pay(_) | Action::Reverse { amount: Some(_), .. }
                    );
                    let holds = |s: &Acct| {
                        s.status != AccountStatus::Closed
                            && s.ceiling == Some(*max_balance)
                            && (!exact || s.balance + *requested > *max_balance)
                    };
                    Some((Some(Rule::Ceiling), self.held(to, o, holds)))
                }
                (LedgerError::ReversalExceedsOriginal { transfer, reversible }, None, _)
                    if o.target == Some(*transfer) && matches!(o.action, Action::Reverse { .. }) =>
                {
                    let asked = match o.action {
                        Action::Reverse { amount, .. } => amount,
                        _ => None,
                    };
                    let original = state.transfers.get(&transfer.0).map(|t| t.amount);
                    let timeline = self.remaining.get(&transfer.0).cloned().or_else(|| original.map(|a| vec![a]));
                    let held = timeline.map(|timeline| {
                        let (lo, hi) = Self::window(self.reversals.get(&transfer.0), timeline.len(), o.began, o.ended);
                        lo <= hi
                            && timeline.get(lo..=hi).is_some_and(|left| {
                                left.iter()
                                    .any(|l| *l == *reversible && asked.map_or(l.is_zero(), |a| a > *l || l.is_zero()))
                            })
                    });
                    Some((Some(Rule::Reversal), held))
                }
                _ => None,
            };
            match judged {
                None => v.find(Property::Accounting, None, format!("{what}: refused without cause: {e:?}")),
                Some((rule, Some(false))) => v.find(
                    Property::SerialEquivalence,
                    rule,
                    format!("{what}: refused with {e:?}, but at no point of the account's serial history its call can have seen is that so"),
                ),
                Some((_, None)) => v.find(Property::SerialEquivalence, None, format!("{what}: {e:?} names nothing of the case")),
                Some((_, Some(true))) => {}
            }
        }
    }
}

/// The serial order: the committed transfers and the applied state changes, with an edge
/// between consecutive events of each account: entries by version, and a change answering with
/// version `n` after the entry of version `n` and before that of `n + 1`; changes of one account
/// at one version in the order their calls ran (one issuer per account: its program order).
fn order(v: &mut Verdict<'_>, run: &OperationRun, state: &State) -> Vec<Event> {
    let mut changes: HashMap<AccountId, Vec<(i64, Instant, usize)>> = HashMap::new();
    for (index, o) in run.outcomes.iter().enumerate() {
        if let Answer::Changed(a) = &o.answer {
            changes.entry(a.id).or_default().push((a.version, o.began, index));
        }
    }
    let mut successors: HashMap<Event, BTreeSet<Event>> = HashMap::new();
    let mut indegree: BTreeMap<Event, usize> = state.transfers.keys().map(|id| (Event::Move(*id), 0)).collect();
    for list in changes.values() {
        for (_, _, index) in list {
            indegree.insert(Event::Change(*index), 0);
        }
    }
    let mut accounts: BTreeSet<AccountId> = state.entries.keys().copied().collect();
    accounts.extend(changes.keys().copied());
    let mut unordered = Vec::new();
    for account in accounts {
        let Some(k) = v.judge.known.get(&account) else {
            unordered.push(format!("the run wrote on {account}, not an account of the case"));
            continue;
        };
        let entries = state.entries.get(&account).map_or(&[][..], Vec::as_slice);
        let versions: Vec<i64> = entries.iter().map(|e| e.version).collect();
        let expected: Vec<i64> = (1..=entries.len() as i64).map(|n| k.opening_version + n).collect();
        if versions != expected {
            unordered.push(format!("{} has entry versions {versions:?}, expected {expected:?}", k.name));
        }
        let mut list = changes.remove(&account).unwrap_or_default();
        list.sort();
        let mut sequence = Vec::with_capacity(entries.len() + list.len());
        let mut pending = list.into_iter().peekable();
        let last = k.opening_version + entries.len() as i64;
        let mut at = k.opening_version;
        let mut entry = entries.iter().peekable();
        loop {
            while let Some((version, _, index)) = pending.next_if(|(version, _, _)| *version <= at) {
                if version < k.opening_version {
                    unordered.push(format!("{} changed at version {version}, before the run", k.name));
                }
                sequence.push(Event::Change(index));
            }
            match entry.next() {
                Some(e) => {
                    sequence.push(Event::Move(e.transfer));
                    at += 1;
                }
                None => break,
            }
        }
        for (version, _, index) in pending {
            unordered.push(format!("{} changed at version {version}, beyond its last entry {last}", k.name));
            sequence.push(Event::Change(index));
        }
        for pair in sequence.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a != b && successors.entry(a).or_default().insert(b) {
                *indegree.entry(b).or_default() += 1;
            }
        }
    }
    for detail in unordered {
        v.find(Property::SerialEquivalence, None, detail);
    }
    let mut ready: BTreeSet<Event> = indegree.iter().filter(|(_, d)| **d == 0).map(|(e, _)| *e).collect();
    let mut order = Vec::with_capacity(indegree.len());
    while let Some(event) = ready.pop_first() {
        order.push(event);
        for next in successors.get(&event).into_iter().flatten() {
            if let Some(d) = indegree.get_mut(next) {
                *d -= 1;
                if *d == 0 {
                    ready.insert(*next);
                }
            }
        }
    }
    if order.len() < indegree.len() {
        let stuck: Vec<Event> = indegree.iter().filter(|(_, d)| **d > 0).map(|(e, _)| *e).take(10).collect();
        v.find(
            Property::SerialEquivalence,
            None,
            format!("no serial order: {} events are ordered in a cycle (e.g. {stuck:?})", indegree.len() - order.len()),
        );
    }
    order
}

fn idempotency(v: &mut Verdict<'_>, setup: &OperationSetup, run: &OperationRun, state: &State) {
    let holders = key_holders(state);
    for j in 0..setup.payments.len() {
        let key = setup.setup.key(&format!("pay{j}"));
        let successes: Vec<KeyedSuccess> = run
            .outcomes
            .iter()
            .filter(|o| o.action == Action::Pay(j))
            .filter_map(|o| match &o.answer {
                Answer::Moved(r) => Some(KeyedSuccess {
                    label: label(o),
                    transfer: r.transfer_id.0,
                    replayed: r.replayed,
                    balances: vec![(r.from, r.from_balance), (r.to, r.to_balance)],
                }),
                _ => None,
            })
            .collect();
        for o in run.outcomes.iter().filter(|o| o.action == Action::Pay(j)) {
            if let Answer::Failed(e @ LedgerError::IdempotencyConflict { .. }) = &o.answer {
                v.find(
                    Property::Idempotency,
                    None,
                    format!("{}: payment {j} always carries one content: {e:?}", label(o)),
                );
            }
        }
        judge_key(&mut v.judge, &key, holders.get(key.as_str()).map_or(&[][..], Vec::as_slice), &successes);
    }
}
