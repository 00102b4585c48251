//! A consumer of the change feed: each merchant's daily total (sales less refunds), kept in the
//! backend's own table `merchant_daily_totals`, exactly once. `Ledger::consume` hands each page
//! of changes to a handler together with a transaction; the handler's upserts commit in that
//! transaction with the consumer's new position, or not at all. A handler that fails (here a
//! simulated crash before the commit) leaves both where they were, and the same changes come
//! again: nothing is lost, nothing is counted twice.
//!
//! ```sh
//! cargo run --example merchant_daily_totals     # DATABASE_URL, or a throwaway local PostgreSQL
//! ```
//!
//! `tests/examples.rs` runs [`run`] and checks the totals against the ledger's entries.

use std::time::Duration;

use postgres::Transaction;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use wallet_ledger::{AccountId, Change, HandlerError, Hold, Ledger, LedgerError, NewAccount, Reversal, Transfer};

/// The consumer's name: its position in the feed is stored under it.
pub const CONSUMER: &str = "merchant-daily-totals";

/// Changes handed to the handler at once.
const PAGE: u32 = 100;

/// The backend's own tables: which accounts are merchants, and the totals the consumer keeps.
const BACKEND_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS merchants (
    account bigint PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS merchant_daily_totals (
    merchant bigint  NOT NULL REFERENCES merchants (account),
    day      date    NOT NULL,          -- UTC
    total    numeric NOT NULL,
    PRIMARY KEY (merchant, day)
);";

/// Adds one merchant's share of a change to its day's total; nothing for an account that is
/// not a merchant. $1 account, $2 the change's time, $3 the signed amount of its leg.
const ADD_TO_TOTAL: &str = "
INSERT INTO merchant_daily_totals (merchant, day, total)
SELECT m.account, ($2::timestamptz AT TIME ZONE 'UTC')::date, $3
  FROM merchants m
 WHERE m.account = $1
ON CONFLICT (merchant, day) DO UPDATE SET total = merchant_daily_totals.total + EXCLUDED.total";

/// The handler: every leg of every movement (transfers, postings, refunds, captures) adds its
/// signed amount to its account's day, if that account is a merchant. Holds and account changes
/// move no money and are skipped. Runs in the consumer's transaction: no commit here.
pub fn add_to_totals(tx: &mut Transaction<'_>, changes: &[Change]) -> Result<(), HandlerError> {
    for change in changes.iter().filter(|c| c.kind.moves_money()) {
        for leg in &change.legs {
            tx.execute(ADD_TO_TOTAL, &[&leg.account.0, &change.at, &leg.amount])?;
        }
    }
    Ok(())
}

/// Processes every change waiting for the consumer, page by page; returns how many there were.
/// (Several workers may run this at once: each page goes to one of them.)
pub fn catch_up(ledger: &Ledger) -> Result<usize, LedgerError> {
    let mut processed = 0;
    loop {
        let n = ledger.consume(CONSUMER, PAGE, add_to_totals)?;
        if n == 0 {
            return Ok(processed);
        }
        processed += n;
    }
}

/// One row of `merchant_daily_totals`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DailyTotal {
    pub merchant: AccountId,
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub total: Decimal,
}

/// The consumer's table, by merchant and day.
pub fn totals(client: &mut postgres::Client) -> Result<Vec<DailyTotal>, postgres::Error> {
    let rows =
        client.query("SELECT merchant, day::text, total FROM merchant_daily_totals ORDER BY merchant, day", &[])?;
    Ok(rows.iter().map(|r| DailyTotal { merchant: AccountId(r.get(0)), day: r.get(1), total: r.get(2) }).collect())
}

/// What a run ended with, for the test that runs this example.
#[derive(Debug)]
pub struct Outcome {
    /// The merchants' accounts.
    pub merchants: Vec<AccountId>,
    /// The table at the end.
    pub totals: Vec<DailyTotal>,
    /// The crashed handler's error, as `consume` returned it.
    pub crash: LedgerError,
    /// The table right after the crash: what the first, lost, attempt left behind.
    pub totals_after_crash: Vec<DailyTotal>,
    /// Changes processed after the crash (the crashed page among them).
    pub processed: usize,
    /// Changes not yet processed at the end.
    pub lag: u64,
}

/// The story, on the database at `url`.
pub fn run(url: &str) -> Result<Outcome, Box<dyn std::error::Error>> {
    let ledger = Ledger::connect(url)?;
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    client.batch_execute(BACKEND_SCHEMA)?;
    ledger.define_currency("EUR", 2)?;
    let bank = ledger.open_account(&NewAccount::new("EUR").name("bank").unbounded())?.id;
    let [alice, bob] = ["alice", "bob"].map(|name| ledger.open_account(&NewAccount::new("EUR").name(name)));
    let (alice, bob) = (alice?.id, bob?.id);
    let [bakery, books] = ["bakery", "books"].map(|name| ledger.open_account(&NewAccount::new("EUR").name(name)));
    let (bakery, books) = (bakery?.id, books?.id);
    for merchant in [bakery, books] {
        client.execute("INSERT INTO merchants (account) VALUES ($1)", &[&merchant.0])?;
    }
    ledger.transfer(&Transfer::new(bank, alice, dec!(200.00)))?;
    ledger.transfer(&Transfer::new(bank, bob, dec!(200.00)))?;

    // The morning: sales, a card payment captured below its authorization, money between
    // friends (no merchant: not counted).
    ledger.transfer(&Transfer::new(alice, bakery, dec!(4.20)).memo("croissants"))?;
    ledger.transfer(&Transfer::new(bob, bakery, dec!(12.00)))?;
    let book = ledger.transfer(&Transfer::new(alice, books, dec!(35.00)))?;
    let card = ledger.hold(&Hold::new(bob, books, dec!(60.00)).expires_in(Duration::from_secs(3600)))?;
    ledger.capture(card.hold_id, Some(dec!(48.50)))?;
    ledger.transfer(&Transfer::new(alice, bob, dec!(10.00)))?;

    // The consumer crashes after its upserts, before the commit: its writes and its position
    // roll back together.
    let crash = match ledger.consume(CONSUMER, PAGE, |tx, changes| {
        add_to_totals(tx, changes)?;
        Err("simulated crash before commit".into())
    }) {
        Err(e) => e,
        Ok(n) => return Err(format!("the crashing handler committed {n} changes").into()),
    };
    let totals_after_crash = totals(&mut client)?;
    println!("crashed: {crash}; totals kept: {}", totals_after_crash.len());

    // Restarted, it processes the same changes again, once.
    let mut processed = catch_up(&ledger)?;
    println!("processed {processed} changes");

    // The afternoon: a partial refund and one more sale, processed on the next pass.
    ledger.reverse(&Reversal::of(book.transfer_id).amount(dec!(15.00)))?;
    ledger.transfer(&Transfer::new(bob, bakery, dec!(3.10)))?;
    processed += catch_up(&ledger)?;
    processed += catch_up(&ledger)?; // nothing new: nothing counted again

    let totals = totals(&mut client)?;
    for t in &totals {
        println!("merchant {} on {}: {}", t.merchant, t.day, t.total);
    }
    Ok(Outcome {
        merchants: vec![bakery, books],
        totals,
        crash,
        totals_after_crash,
        processed,
        lag: ledger.consumer_lag(CONSUMER)?.changes,
    })
}

#[allow(dead_code)] // a module of tests/examples.rs too, where `main` is unused
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = wallet_ledger_embedded::embedded::fresh_database("merchant_daily_totals")?;
    run(&url)?;
    Ok(())
}
