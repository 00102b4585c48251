//! Library resilience under faults the torture run injects, each one pinned by a test that
//! fails without its fix.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rust_decimal_macros::dec;
use wallet_ledger::embedded::EmbeddedServer;
use wallet_ledger::{Ledger, NewAccount, Transfer};

/// PostgreSQL's warning case: a commit whose wait for the synchronous standby is cancelled
/// (here: its backend terminated) is committed locally but not replicated, and it is visible
/// at once. The library's retry with the same key finds it and would answer "applied"; if the
/// primary then died, the acknowledged transfer would be lost with it. So an answer that rests
/// on an earlier, unanswered attempt (or on a replay) must wait, like any commit, until the
/// standby has it.
#[test]
fn a_replay_is_acknowledged_only_once_the_synchronous_standby_has_it() {
    let primary = EmbeddedServer::start().expect("primary");
    let url = primary.create_database("resilience").expect("database");
    let ledger = Ledger::builder(&url).pool_size(4).build().expect("ledger");
    ledger.define_currency("USD", 2).expect("currency");
    let issuer = ledger.open_account(&NewAccount::new("USD").unbounded()).expect("issuer").id;
    let wallet = ledger.open_account(&NewAccount::new("USD")).expect("wallet").id;
    let standby = primary.start_standby().expect("standby");
    primary.require_synchronous_standby(Duration::from_secs(30)).expect("synchronous");

    // The standby goes away: every commit on the primary now waits for it.
    standby.crash().expect("stop the standby");
    let (tx, rx) = mpsc::channel();
    let worker = {
        let ledger = ledger.clone();
        thread::spawn(move || {
            let t = Transfer::new(issuer, wallet, dec!(10.00)).idempotency_key("sync-wait-1");
            let result = ledger.transfer(&t);
            tx.send(()).expect("send");
            result
        })
    };
    // Terminate the transfer's backend while its commit waits for the standby.
    let mut admin = postgres::Client::connect(&primary.url("postgres"), postgres::NoTls).expect("admin");
    let started = Instant::now();
    let pid: i32 = loop {
        let row = admin
            .query_opt("SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep' AND datname = 'resilience'", &[])
            .expect("activity");
        if let Some(row) = row {
            break row.get(0);
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the transfer never waited for the standby");
        thread::sleep(Duration::from_millis(10));
    };
    let terminated: bool = admin.query_one("SELECT pg_terminate_backend($1)", &[&pid]).expect("terminate").get(0);
    assert!(terminated);
    // Committed locally: the primary shows it...
    thread::sleep(Duration::from_millis(200));
    let local: i64 = admin
        .query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep' AND datname = 'resilience'", &[])
        .expect("activity")
        .get(0);
    let mut check = postgres::Client::connect(&url, postgres::NoTls).expect("check");
    let committed: i64 = check
        .query_one("SELECT count(*) FROM wallet_ledger.transfers WHERE idempotency_key = 'sync-wait-1'", &[])
        .expect("count")
        .get(0);
    assert_eq!(committed, 1, "the cancelled wait left the commit in place locally");
    // ...but the standby does not have it, so the call must not be answered yet.
    if rx.recv_timeout(Duration::from_millis(1500)).is_ok() {
        let result = worker.join().expect("no panic");
        panic!("the transfer was answered while the standby was down ({local} sessions waiting): {result:?}");
    }
    standby.restart().expect("restart the standby");
    rx.recv_timeout(Duration::from_secs(30)).expect("answered once the standby is back");
    let receipt = worker.join().expect("no panic").expect("applied");
    assert!(!receipt.replayed, "our own first attempt is not a replay to the caller");
    assert_eq!(receipt.to_balance, dec!(10.00));
    assert_eq!(ledger.balance(wallet).expect("balance"), dec!(10.00), "applied once");
    // Acknowledged only now that the standby has it (it flushed it; it may still be replaying).
    let mut on_standby = postgres::Client::connect(&standby.url("resilience"), postgres::NoTls).expect("standby");
    let started = Instant::now();
    loop {
        let n: i64 = on_standby
            .query_one("SELECT count(*) FROM wallet_ledger.transfers WHERE idempotency_key = 'sync-wait-1'", &[])
            .expect("count on the standby")
            .get(0);
        if n == 1 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the standby never showed the transfer");
        thread::sleep(Duration::from_millis(20));
    }
}
