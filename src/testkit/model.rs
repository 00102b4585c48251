//! The plain data a property test generates: a ledger to build ([`LedgerSpec`]) and the
//! concurrent work to run on it ([`Workload`]). Accounts are named by their index in the spec,
//! not by database id, so that a generated case means the same thing on any database and
//! prints as a readable counterexample.

use std::fmt;

use rust_decimal::Decimal;

/// A currency to define: its code and number of decimal places.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrencySpec {
    /// The code, e.g. `USD`.
    pub code: String,
    /// Decimal places, e.g. 2.
    pub scale: u32,
}

/// The floor of an account: the lowest balance the ledger must allow it to reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    /// Floor 0: a plain wallet, never overdrawn.
    Zero,
    /// A negative floor: a credit line down to this (negative) value.
    Credit(Decimal),
    /// No floor: a system account that may go arbitrarily negative.
    Unbounded,
}

impl Floor {
    /// The floor as [`NewAccount::min_balance`](crate::NewAccount::min_balance) takes it (`None` = unbounded).
    pub fn min_balance(self) -> Option<Decimal> {
        match self {
            Floor::Zero => Some(Decimal::ZERO),
            Floor::Credit(floor) => Some(floor),
            Floor::Unbounded => None,
        }
    }
}

/// One account of a generated ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSpec {
    /// Index into [`LedgerSpec::currencies`].
    pub currency: usize,
    /// Its floor.
    pub floor: Floor,
    /// Its balance when the workload starts. Accounts open at zero; the runner funds this with a
    /// transfer from the currency's unbounded issuer account.
    pub opening: Decimal,
}

/// A ledger to build: currencies, and accounts with floors and opening balances.
///
/// Every currency also gets an unbounded issuer account when the spec is built (see
/// [`Setup::create`](super::Setup::create)); it funds the opening balances and takes no part in
/// the workload.
#[derive(Clone, PartialEq, Eq)]
pub struct LedgerSpec {
    /// The currencies; accounts refer to them by index.
    pub currencies: Vec<CurrencySpec>,
    /// The accounts; operations refer to them by index.
    pub accounts: Vec<AccountSpec>,
}

impl LedgerSpec {
    /// The currency of account `index`.
    pub fn currency_of(&self, index: usize) -> &CurrencySpec {
        &self.currencies[self.accounts[index].currency]
    }
}

impl fmt::Debug for LedgerSpec {
    /// One line per account (`a3: USD floor 0 opening 12.50`), so that a shrunk counterexample
    /// reads at a glance.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "LedgerSpec {{")?;
        for (i, a) in self.accounts.iter().enumerate() {
            let floor = match a.floor {
                Floor::Zero => "0".to_string(),
                Floor::Credit(d) => d.to_string(),
                Floor::Unbounded => "unbounded".to_string(),
            };
            let code = self.currencies.get(a.currency).map_or("?", |c| c.code.as_str());
            writeln!(f, "    a{i}: {code} floor {floor} opening {}", a.opening)?;
        }
        write!(f, "}}")
    }
}

/// One side of an operation: an account of the spec, or an id that names no account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The account with this index in [`LedgerSpec::accounts`].
    Account(usize),
    /// An account id that does not exist: the ledger must refuse with `AccountNotFound`.
    Unknown,
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Party::Account(i) => write!(f, "a{i}"),
            Party::Unknown => f.write_str("unknown"),
        }
    }
}

/// One transfer attempt of a workload.
#[derive(Clone, PartialEq, Eq)]
pub struct Op {
    /// The debited side.
    pub from: Party,
    /// The credited side.
    pub to: Party,
    /// The amount, at the scale of the currency involved.
    pub amount: Decimal,
    /// The idempotency key, if any (the runner prefixes it to keep cases apart on one database).
    pub key: Option<String>,
}

impl fmt::Debug for Op {
    /// `a1->a0 12.50 key=k2`: one short line per attempt.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{} {}", self.from, self.to, self.amount)?;
        if let Some(key) = &self.key {
            write!(f, " key={key}")?;
        }
        Ok(())
    }
}

/// The work of one run: one list of operations per thread, each run in order by its thread,
/// all threads started together.
#[derive(Clone, PartialEq, Eq)]
pub struct Workload {
    /// Per thread, its operations in order.
    pub threads: Vec<Vec<Op>>,
}

impl Workload {
    /// How many operations the workload attempts in total.
    pub fn attempts(&self) -> usize {
        self.threads.iter().map(Vec::len).sum()
    }
}

impl fmt::Debug for Workload {
    /// One line per thread: `t0: [a0->a1 5.00, a1->a0 2.00 key=k0]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Workload {{")?;
        for (i, ops) in self.threads.iter().enumerate() {
            writeln!(f, "    t{i}: {ops:?}")?;
        }
        write!(f, "}}")
    }
}

/// A generated test case: a ledger and the workload to run on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The ledger to build.
    pub spec: LedgerSpec,
    /// The work to run on it.
    pub workload: Workload,
}
