//! Time: every entry's own timestamp, balances as of an instant, statements and the entries of
//! a period; the statement identity under concurrent writers, with a broken control it catches;
//! and the migration that stamps entries written before it.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use common::funded;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use wallet_ledger::limits::HISTORY_PAGE_MAX;
use wallet_ledger::{embedded, AccountId, EntryId, Ledger, LedgerError, Posting, Transfer};

const LATER: Duration = Duration::from_secs(3600);

#[test]
fn balances_as_of_and_statements_follow_the_entries() -> Result<()> {
    let (l, _, issuer, w) = funded("statement_basics", 2, dec!(0))?;
    let t0 = SystemTime::now() - Duration::from_secs(1);
    assert_eq!(l.balance_at(w[0], t0)?, dec!(0));
    let mut marks = Vec::new();
    for i in 1..=6 {
        l.transfer(&Transfer::new(issuer, w[0], Decimal::from(i)))?;
        if i % 2 == 0 {
            l.transfer(&Transfer::new(w[0], w[1], dec!(1)))?;
        }
        marks.push((l.history(w[0], None, 100)?.last().expect("entries").created_at, l.balance(w[0])?));
    }
    for (instant, balance) in &marks {
        assert_eq!(l.balance_at(w[0], *instant)?, *balance, "at or before the instant");
    }
    let entries = l.history(w[0], None, 100)?;
    for pair in entries.windows(2) {
        assert!(pair[0].created_at <= pair[1].created_at, "an account's times never go back");
    }
    // Statements over consecutive periods chain, and match the entries of each period.
    let cuts = [t0, marks[1].0, marks[3].0, SystemTime::now() + LATER];
    for period in cuts.windows(2) {
        let (from, to) = (period[0], period[1]);
        let s = l.statement(w[0], from, to)?;
        assert_eq!(s.opening_balance, l.balance_at(w[0], from)?);
        assert_eq!(s.closing_balance, l.balance_at(w[0], to)?);
        assert_eq!(s.opening_balance + s.total_credits - s.total_debits, s.closing_balance);
        let between = l.history_between(w[0], from, to, None, HISTORY_PAGE_MAX)?;
        assert_eq!(between.len() as u64, s.entry_count);
        assert!(between.iter().all(|e| e.created_at > from && e.created_at <= to));
        let credits: Decimal = between.iter().map(|e| e.amount).filter(|a| *a > dec!(0)).sum();
        assert_eq!(credits, s.total_credits);
        // Paged: the same entries, two at a time.
        let (mut paged, mut after) = (Vec::new(), None);
        loop {
            let page = l.history_between(w[0], from, to, after, 2)?;
            after = page.last().map(|e| e.id);
            let last = page.len() < 2;
            paged.extend(page);
            if last {
                break;
            }
        }
        assert_eq!(paged, between);
    }
    let whole = l.statement(w[0], t0, SystemTime::now() + LATER)?;
    assert_eq!((whole.opening_balance, whole.closing_balance), (dec!(0), l.balance(w[0])?));
    assert_eq!(whole.entry_count, entries.len() as u64);
    assert_eq!(whole.total_debits, dec!(3));
    Ok(())
}

#[test]
fn time_reads_refuse_what_they_cannot_answer() -> Result<()> {
    let (l, _, _, w) = funded("statement_refusals", 2, dec!(10.00))?;
    let ghost = AccountId(987_654);
    let now = SystemTime::now();
    refused!(l, l.balance_at(ghost, now), LedgerError::AccountNotFound { account } if account == ghost);
    refused!(l, l.statement(ghost, UNIX_EPOCH, now), LedgerError::AccountNotFound { .. });
    refused!(l, l.history_between(ghost, UNIX_EPOCH, now, None, 10), LedgerError::AccountNotFound { .. });
    refused!(l, l.statement(w[0], now, UNIX_EPOCH), LedgerError::InvalidInput { field: "to", .. });
    refused!(l, l.history_between(w[0], now, UNIX_EPOCH, None, 10), LedgerError::InvalidInput { field: "to", .. });
    refused!(l, l.history_between(w[0], UNIX_EPOCH, now, None, 0), LedgerError::InvalidInput { field: "limit", .. });
    let other = l.history(w[1], None, 1)?[0].id;
    refused!(
        l,
        l.history_between(w[0], UNIX_EPOCH, now, Some(other), 10),
        LedgerError::InvalidInput { field: "after", .. }
    );
    refused!(l, l.history_between(w[0], UNIX_EPOCH, now, Some(EntryId(987_654)), 10), LedgerError::InvalidInput { .. });
    // An account without entries in the period: an empty statement, not an error.
    let s = l.statement(w[0], UNIX_EPOCH, UNIX_EPOCH + Duration::from_secs(1))?;
    assert_eq!((s.opening_balance, s.closing_balance, s.entry_count), (dec!(0), dec!(0), 0));
    assert!(l.history_between(w[0], UNIX_EPOCH, UNIX_EPOCH, None, 10)?.is_empty());
    Ok(())
}

/// A statement as the library makes it, or as a broken control makes it: the closing balance
/// and the period's totals from two statements, that is two snapshots.
fn statement_parts(
    l: &Ledger,
    account: AccountId,
    from: SystemTime,
    to: SystemTime,
    broken: bool,
) -> Result<[Decimal; 4]> {
    if !broken {
        let s = l.statement(account, from, to)?;
        return Ok([s.opening_balance, s.total_credits, s.total_debits, s.closing_balance]);
    }
    let closing = l.balance_at(account, to)?;
    let s = l.statement(account, from, to)?;
    Ok([s.opening_balance, s.total_credits, s.total_debits, closing])
}

/// Writers on real threads and connections move money among a few hot accounts (transfers and
/// postings); readers take statements and balances as of random instants meanwhile. Returns
/// how many statements broke `opening + credits - debits = closing`, and how many were read.
fn race(l: &Ledger, issuer: AccountId, w: &[AccountId], broken: bool, run: Duration) -> Result<(u64, u64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let (violations, reads) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = SystemTime::now();
    thread::scope(|s| -> Result<()> {
        let mut writers = Vec::new();
        for t in 0..4usize {
            let (l, stop, w) = (l.clone(), stop.clone(), w.to_vec());
            writers.push(s.spawn(move || -> Result<()> {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) >> 1;
                    let (a, b) = (w[i % w.len()], w[(i / 7 + 1 + i % (w.len() - 1)) % w.len()]);
                    let amount = Decimal::new((i % 500) as i64 + 2, 2);
                    let result = if a == b {
                        Ok(())
                    } else if i % 5 == 0 {
                        l.post(&Posting::new().leg(a, -amount).leg(b, amount - dec!(0.01)).leg(issuer, dec!(0.01)))
                            .map(|_| ())
                    } else {
                        l.transfer(&Transfer::new(a, b, amount)).map(|_| ())
                    };
                    match result {
                        Ok(()) | Err(LedgerError::InsufficientFunds { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            }));
        }
        let mut readers = Vec::new();
        for t in 0..3usize {
            let (l, stop, w) = (l.clone(), stop.clone(), w.to_vec());
            let (violations, reads) = (violations.clone(), reads.clone());
            readers.push(s.spawn(move || -> Result<()> {
                let mut i = t + 11;
                while !stop.load(Ordering::Relaxed) {
                    i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) >> 1;
                    let account = w[i % w.len()];
                    let elapsed = start.elapsed().unwrap_or_default();
                    let from = start + elapsed.mul_f64((i % 1000) as f64 / 1000.0);
                    // An open end, so that transfers committing now fall inside the period.
                    let [opening, credits, debits, closing] = statement_parts(&l, account, from, from + LATER, broken)?;
                    reads.fetch_add(1, Ordering::Relaxed);
                    if opening + credits - debits != closing {
                        violations.fetch_add(1, Ordering::Relaxed);
                    }
                    // Not compared with the opening: a transfer whose time is before `from` can
                    // commit between the two reads (its time is taken before its commit).
                    l.balance_at(account, from)?;
                }
                Ok(())
            }));
        }
        thread::sleep(run);
        stop.store(true, Ordering::Relaxed);
        for h in writers.into_iter().chain(readers) {
            h.join().expect("no panic")?;
        }
        Ok(())
    })?;
    Ok((violations.load(Ordering::Relaxed), reads.load(Ordering::Relaxed)))
}

#[test]
fn statements_balance_under_concurrent_writers() -> Result<()> {
    let (l, _, issuer, w) = funded("statement_race", 4, dec!(50.00))?;
    let (violations, reads) = race(&l, issuer, &w, false, Duration::from_secs(4))?;
    assert!(reads > 50, "only {reads} statements read");
    eprintln!("{reads} statements read under concurrent writers, {violations} broken");
    assert_eq!(violations, 0, "{violations} of {reads} statements broke opening + credits - debits = closing");
    // Afterwards, every account's chain has times that never go back, and its statement
    // over everything ends at its balance.
    for account in w.iter().chain([&issuer]) {
        let entries = l.history(*account, None, HISTORY_PAGE_MAX)?;
        for pair in entries.windows(2) {
            assert!(pair[0].created_at <= pair[1].created_at, "account {account}: {:?} then {:?}", pair[0], pair[1]);
        }
        let s = l.statement(*account, UNIX_EPOCH, SystemTime::now() + LATER)?;
        assert_eq!(s.closing_balance, l.balance(*account)?);
        assert_eq!(s.entry_count, entries.len() as u64);
        // balance_at each entry's time is that entry's balance or a later one's at the same
        // instant; just before it, the previous entry's.
        for pair in entries.windows(2).step_by(7) {
            if pair[0].created_at < pair[1].created_at {
                assert_eq!(l.balance_at(*account, pair[0].created_at)?, pair[0].balance_after);
            }
        }
    }
    Ok(())
}

/// The control: a statement whose closing balance comes from another snapshot than its totals.
/// The race finds it out.
#[test]
fn a_statement_from_two_snapshots_is_caught() -> Result<()> {
    let (l, _, issuer, w) = funded("statement_control", 4, dec!(50.00))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut total = (0, 0);
    while Instant::now() < deadline {
        let (violations, reads) = race(&l, issuer, &w, true, Duration::from_secs(3))?;
        total = (total.0 + violations, total.1 + reads);
        if total.0 > 0 {
            eprintln!("control caught: {} of {} statements broken", total.0, total.1);
            return Ok(());
        }
    }
    panic!("the broken control went unnoticed in {} statements", total.1);
}

/// Entries written before migration 8 take their transfer's time; entries written after take
/// their own, and every function still works on the migrated schema.
#[test]
fn the_migration_stamps_existing_entries_with_their_transfers_time() -> Result<()> {
    let url = embedded::fresh_database("statement_migration")?;
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    let mut tx = client.transaction()?;
    tx.batch_execute(
        "CREATE SCHEMA wallet_ledger;
         CREATE TABLE wallet_ledger.schema_version (version integer PRIMARY KEY, name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now(), checksum text);",
    )?;
    for (version, name, sql) in wallet_ledger::schema::MIGRATIONS.iter().filter(|(v, _, _)| *v <= 6) {
        tx.batch_execute(sql)?;
        tx.execute("INSERT INTO wallet_ledger.schema_version (version, name) VALUES ($1, $2)", &[version, name])?;
    }
    tx.batch_execute(
        "INSERT INTO wallet_ledger.currencies VALUES ('USD', 2);
         INSERT INTO wallet_ledger.accounts (currency, min_balance) VALUES ('USD', NULL), ('USD', 0);",
    )?;
    tx.commit()?;
    for key in ["old-1", "old-2"] {
        client.query("SELECT * FROM wallet_ledger.transfer(1, 2, 1.00, $1, NULL, 0::smallint, 0)", &[&key])?;
    }
    // As if "old-2" had begun before "old-1" but waited for its lock: its transaction's time is
    // earlier although its entries come later in both chains.
    client.execute(
        "UPDATE wallet_ledger.transfers SET created_at = created_at - interval '1 second' WHERE idempotency_key = 'old-2'",
        &[],
    )?;
    let l = Ledger::connect(&url)?; // applies migration 8
    let times: Vec<(String, i64, SystemTime, SystemTime)> = client
        .query(
            "SELECT t.idempotency_key, e.account_version, e.created_at, t.created_at
               FROM wallet_ledger.entries e JOIN wallet_ledger.transfers t ON t.id = e.transfer_id
              WHERE e.account_id = 2 ORDER BY e.account_version",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(times[0].2, times[0].3, "an entry takes its transfer's time");
    assert_eq!(times[1].2, times[0].2, "raised to the earlier entry's: times never go back along a chain");
    let later = l.transfer(&Transfer::new(AccountId(1), AccountId(2), dec!(1.00)))?;
    let entries = l.history(AccountId(2), None, 10)?;
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[2].transfer_id, later.transfer_id);
    assert!(entries[1].created_at < entries[2].created_at);
    assert_eq!(l.balance_at(AccountId(2), entries[1].created_at)?, dec!(2.00));
    assert!(l.verify()?.is_clean());
    Ok(())
}
