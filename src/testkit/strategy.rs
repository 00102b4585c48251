//! proptest [`Strategy`]s for ledgers ([`ledger_spec`]), workloads ([`workload`]) and both
//! together ([`case`]), shaped by a [`Shape`].
//!
//! Everything shrinks toward a small, plain counterexample: fewer currencies, accounts, threads
//! and operations, floor 0, smaller amounts, and plain transfers instead of the unusual
//! attempts (same account, unknown account, repeated keys, overdrafts).

use std::ops::RangeInclusive;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;
use rust_decimal::Decimal;

use super::model::{AccountSpec, Case, CurrencySpec, Floor, LedgerSpec, Op, Party, Workload};

/// The currencies a generated ledger draws from, with their scales. A code always has the same
/// scale, so generated ledgers never conflict when several share one database.
pub const CURRENCIES: [(&str, u32); 3] = [("USD", 2), ("JPY", 0), ("BTC", 8)];

/// How many keyed transfers a workload's repeated idempotency keys (`k0`..`k3`) stand for.
pub const KEY_TEMPLATES: usize = 4;

/// The size and mix of generated cases. Amounts are in the smallest unit of the currency
/// (cents for USD), so one shape suits every scale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Accounts per ledger (the issuers come on top).
    pub accounts: RangeInclusive<usize>,
    /// Currencies per ledger, at most [`CURRENCIES`]`.len()`.
    pub currencies: RangeInclusive<usize>,
    /// Threads per workload.
    pub threads: RangeInclusive<usize>,
    /// Operations per thread.
    pub ops_per_thread: RangeInclusive<usize>,
    /// Opening balances, in smallest units.
    pub opening_units: RangeInclusive<i64>,
    /// Amounts of ordinary transfers, in smallest units.
    pub amount_units: RangeInclusive<i64>,
    /// Whether to mix in the unusual attempts: overdrafts, same-account and unknown-account
    /// transfers, repeated idempotency keys (replays and conflicts) and unique keys.
    pub unusual: bool,
    /// Whether ordinary transfers only go from a lower account index to a higher one. Accounts
    /// are opened in index order, so ids ascend with the index and every implementation, even
    /// one that locks in request order, then locks in id order: nothing can deadlock, lost
    /// updates still happen. Used to show a broken implementation losing money rather than
    /// deadlocking.
    pub forward_only: bool,
}

impl Shape {
    /// The general shape: 2 to 50 accounts in 1 to 3 currencies, 2 to 16 threads of 1 to 8
    /// operations, every kind of attempt.
    pub fn mixed() -> Shape {
        Shape {
            accounts: 2..=50,
            currencies: 1..=3,
            threads: 2..=16,
            ops_per_thread: 1..=8,
            opening_units: 0..=10_000,
            amount_units: 1..=2_000,
            unusual: true,
            forward_only: false,
        }
    }

    /// A hot spot: 2 or 3 accounts of one currency, 8 to 16 threads of 30 to 50 plain transfers
    /// in every direction, balances large enough that few are refused. Almost every transfer
    /// races another on the same rows: the shape that makes lost updates and lock-order
    /// deadlocks show up in every run.
    pub fn hot() -> Shape {
        Shape {
            accounts: 2..=3,
            currencies: 1..=1,
            threads: 8..=16,
            ops_per_thread: 30..=50,
            opening_units: 100_000..=1_000_000,
            amount_units: 1..=1_000,
            unusual: false,
            forward_only: false,
        }
    }

    /// [`hot`](Shape::hot) on 3 or 4 accounts with every transfer going forward (see
    /// [`forward_only`](Shape::forward_only)): transfers fan out from and into shared accounts,
    /// so a lost update on one side creates or destroys money, and no implementation deadlocks.
    pub fn hot_forward() -> Shape {
        Shape { accounts: 3..=4, forward_only: true, ..Shape::hot() }
    }

    /// The same shape with a different number of threads.
    pub fn threads(mut self, threads: RangeInclusive<usize>) -> Shape {
        self.threads = threads;
        self
    }

    /// The same shape with a different number of operations per thread.
    pub fn ops_per_thread(mut self, ops: RangeInclusive<usize>) -> Shape {
        self.ops_per_thread = ops;
        self
    }
}

/// A floor before it knows its currency's scale.
#[derive(Debug, Clone, Copy)]
enum FloorChoice {
    Zero,
    Credit(i64),
    Unbounded,
}

fn floor_choice() -> impl Strategy<Value = FloorChoice> {
    prop_oneof![
        6 => Just(FloorChoice::Zero),
        3 => (1..=5_000i64).prop_map(FloorChoice::Credit),
        1 => Just(FloorChoice::Unbounded),
    ]
}

/// Ledgers of `shape.accounts` accounts in `shape.currencies` currencies, each account with a
/// floor (0, negative or unbounded) and an opening balance.
///
/// ```
/// use proptest::strategy::{Strategy, ValueTree};
/// use proptest::test_runner::TestRunner;
/// use wallet_ledger::testkit::{ledger_spec, Shape};
///
/// let spec = ledger_spec(&Shape::mixed()).new_tree(&mut TestRunner::deterministic()).unwrap().current();
/// assert!((2..=50).contains(&spec.accounts.len()));
/// assert!(spec.accounts.iter().all(|a| a.opening >= 0.into()));
/// ```
pub fn ledger_spec(shape: &Shape) -> impl Strategy<Value = LedgerSpec> {
    let currencies = proptest::sample::subsequence(CURRENCIES.to_vec(), shape.currencies.clone());
    let account = (any::<Index>(), floor_choice(), shape.opening_units.clone());
    (currencies, proptest::collection::vec(account, shape.accounts.clone())).prop_map(|(currencies, accounts)| {
        let currencies: Vec<CurrencySpec> =
            currencies.into_iter().map(|(code, scale)| CurrencySpec { code: code.to_string(), scale }).collect();
        let accounts = accounts
            .into_iter()
            .map(|(currency, floor, opening)| {
                let currency = currency.index(currencies.len());
                let scale = currencies[currency].scale;
                let floor = match floor {
                    FloorChoice::Zero => Floor::Zero,
                    FloorChoice::Credit(units) => Floor::Credit(Decimal::new(-units, scale)),
                    FloorChoice::Unbounded => Floor::Unbounded,
                };
                AccountSpec { currency, floor, opening: Decimal::new(opening, scale) }
            })
            .collect();
        LedgerSpec { currencies, accounts }
    })
}

/// An attempt before it is resolved against the spec's accounts.
#[derive(Debug, Clone)]
enum Choice {
    /// From any account to (usually) another account of its currency.
    Plain {
        from: Index,
        to: Index,
        same_currency: bool,
        units: i64,
    },
    /// An amount larger than any opening balance.
    Overdraw {
        from: Index,
        to: Index,
        units: i64,
    },
    SameAccount {
        account: Index,
        units: i64,
    },
    UnknownFrom {
        to: Index,
        units: i64,
    },
    UnknownTo {
        from: Index,
        units: i64,
    },
    /// Key `k{template}` with the template's content: the first success applies, others replay.
    Replay {
        template: usize,
    },
    /// Key `k{template}` with a different amount: a conflict once the template is applied.
    Conflict {
        template: usize,
    },
    /// A plain transfer under a key no other attempt uses.
    UniqueKey {
        from: Index,
        to: Index,
        units: i64,
    },
}

fn choice(shape: &Shape) -> BoxedStrategy<Choice> {
    let units = shape.amount_units.clone();
    // Only the unusual mix sends some ordinary transfers across currencies (refused).
    let same_currency = if shape.unusual { 0.9 } else { 1.0 };
    let plain = (any::<Index>(), any::<Index>(), proptest::bool::weighted(same_currency), units.clone())
        .prop_map(|(from, to, same_currency, units)| Choice::Plain { from, to, same_currency, units });
    if !shape.unusual {
        return plain.boxed();
    }
    let big = (*shape.opening_units.end()).max(1)..=(*shape.opening_units.end()).max(1) * 4;
    prop_oneof![
        60 => plain,
        8 => (any::<Index>(), any::<Index>(), big).prop_map(|(from, to, units)| Choice::Overdraw { from, to, units }),
        4 => (any::<Index>(), units.clone()).prop_map(|(account, units)| Choice::SameAccount { account, units }),
        2 => (any::<Index>(), units.clone()).prop_map(|(to, units)| Choice::UnknownFrom { to, units }),
        2 => (any::<Index>(), units.clone()).prop_map(|(from, units)| Choice::UnknownTo { from, units }),
        14 => (0..KEY_TEMPLATES).prop_map(|template| Choice::Replay { template }),
        3 => (0..KEY_TEMPLATES).prop_map(|template| Choice::Conflict { template }),
        7 => (any::<Index>(), any::<Index>(), units).prop_map(|(from, to, units)| Choice::UniqueKey { from, to, units }),
    ]
    .boxed()
}

/// Resolves index choices against one spec.
struct Resolver {
    spec: Arc<LedgerSpec>,
    forward_only: bool,
}

impl Resolver {
    fn amount(&self, party: Party, units: i64) -> Decimal {
        let scale = match party {
            Party::Account(i) => self.spec.currency_of(i).scale,
            Party::Unknown => 0,
        };
        Decimal::new(units, scale)
    }

    fn account(&self, index: &Index) -> usize {
        index.index(self.spec.accounts.len())
    }

    /// Another account of `from`'s currency, or `from` itself when it is the only one.
    fn same_currency(&self, from: usize, to: &Index) -> usize {
        let currency = self.spec.accounts[from].currency;
        let others: Vec<usize> = (0..self.spec.accounts.len())
            .filter(|&i| i != from && self.spec.accounts[i].currency == currency)
            .collect();
        if others.is_empty() {
            from
        } else {
            *to.get(&others)
        }
    }

    fn transfer(&self, from: usize, to: usize, units: i64, key: Option<String>) -> Op {
        Op { from: Party::Account(from), to: Party::Account(to), amount: self.amount(Party::Account(from), units), key }
    }

    fn resolve(&self, choice: &Choice, templates: &[Op], thread: usize, position: usize) -> Op {
        match choice {
            Choice::Plain { from, to, same_currency, units } => {
                let from = self.account(from);
                let to = if *same_currency { self.same_currency(from, to) } else { self.account(to) };
                let (from, to) = if self.forward_only { (from.min(to), from.max(to)) } else { (from, to) };
                self.transfer(from, to, *units, None)
            }
            Choice::Overdraw { from, to, units } => {
                let from = self.account(from);
                let to = self.same_currency(from, to);
                self.transfer(from, to, *units, None)
            }
            Choice::SameAccount { account, units } => {
                let account = self.account(account);
                self.transfer(account, account, *units, None)
            }
            Choice::UnknownFrom { to, units } => {
                let to = Party::Account(self.account(to));
                Op { from: Party::Unknown, to, amount: self.amount(to, *units), key: None }
            }
            Choice::UnknownTo { from, units } => {
                let from = Party::Account(self.account(from));
                Op { from, to: Party::Unknown, amount: self.amount(from, *units), key: None }
            }
            Choice::Replay { template } => templates[*template].clone(),
            Choice::Conflict { template } => {
                let mut op = templates[*template].clone();
                let one_unit = self.amount(op.from, 1);
                op.amount += one_unit;
                op
            }
            Choice::UniqueKey { from, to, units } => {
                let from = self.account(from);
                let to = self.same_currency(from, to);
                self.transfer(from, to, *units, Some(format!("u{thread}-{position}")))
            }
        }
    }
}

/// A workload before it knows its ledger: per thread its choices, and the keyed templates.
type RawWorkload = (Vec<Vec<Choice>>, Vec<(Index, Index, i64)>);

fn raw_workload(shape: &Shape) -> impl Strategy<Value = RawWorkload> {
    let threads = proptest::collection::vec(
        proptest::collection::vec(choice(shape), shape.ops_per_thread.clone()),
        shape.threads.clone(),
    );
    let template = (any::<Index>(), any::<Index>(), shape.amount_units.clone());
    (threads, proptest::collection::vec(template, KEY_TEMPLATES))
}

impl Resolver {
    fn workload(&self, (threads, templates): &RawWorkload) -> Workload {
        let templates: Vec<Op> = templates
            .iter()
            .enumerate()
            .map(|(k, (from, to, units))| {
                let from = self.account(from);
                let to = self.same_currency(from, to);
                self.transfer(from, to, *units, Some(format!("k{k}")))
            })
            .collect();
        let threads = threads
            .iter()
            .enumerate()
            .map(|(t, choices)| choices.iter().enumerate().map(|(i, c)| self.resolve(c, &templates, t, i)).collect())
            .collect();
        Workload { threads }
    }
}

/// Workloads on `spec`: `shape.threads` threads, each with `shape.ops_per_thread` attempts.
///
/// With `shape.unusual`, about a third of the attempts are unusual: amounts larger than any
/// opening balance, transfers from an account to itself, to or from an id that names no account,
/// and keyed transfers: keys `k0`..`k3` each stand for one transfer content, repeated across
/// threads (the first success applies it, every other success must replay it) and sometimes sent
/// with another amount (an `IdempotencyConflict` once the first is applied).
pub fn workload(spec: &LedgerSpec, shape: &Shape) -> impl Strategy<Value = Workload> {
    let resolver = Resolver { spec: Arc::new(spec.clone()), forward_only: shape.forward_only };
    raw_workload(shape).prop_map(move |raw| resolver.workload(&raw))
}

/// A ledger and a workload on it, both of `shape`.
///
/// ```
/// use proptest::strategy::{Strategy, ValueTree};
/// use proptest::test_runner::TestRunner;
/// use wallet_ledger::testkit::{case, Shape};
///
/// let case = case(Shape::hot()).new_tree(&mut TestRunner::deterministic()).unwrap().current();
/// assert!(case.spec.accounts.len() <= 3);
/// assert!(case.workload.threads.len() >= 8);
/// ```
///
/// The workload is drawn independently of the ledger (accounts as [`Index`]es, resolved against
/// whatever number of accounts the ledger has), so both shrink: a counterexample loses accounts
/// and currencies as well as threads and attempts.
pub fn case(shape: Shape) -> impl Strategy<Value = Case> {
    let forward_only = shape.forward_only;
    // The workload first: proptest shrinks a tuple's elements in order, and threads and
    // attempts are what make a counterexample long (and each shrinking step slow).
    (raw_workload(&shape), ledger_spec(&shape)).prop_map(move |(raw, spec)| {
        let resolver = Resolver { spec: Arc::new(spec), forward_only };
        let workload = resolver.workload(&raw);
        let spec = Arc::try_unwrap(resolver.spec).unwrap_or_else(|shared| (*shared).clone());
        Case { spec, workload }
    })
}
