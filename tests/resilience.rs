//! Library resilience under faults the torture run injects, each one pinned by a test that
//! fails without its fix.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rust_decimal_macros::dec;
use wallet_ledger::{Ledger, NewAccount, Transfer};
use wallet_ledger_embedded::embedded::EmbeddedServer;

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

/// Starts a server and a ledger with two funded wallets; the ledger gives up quickly once the
/// server is gone (two retries, 1 s checkout timeout).
fn crashable(combine: bool) -> (EmbeddedServer, String, Ledger, [wallet_ledger::AccountId; 3]) {
    let server = EmbeddedServer::start().expect("server");
    let url = server.create_database("outcome").expect("database");
    let builder = || Ledger::builder(&url).pool_size(20).max_retries(2).checkout_timeout(Duration::from_secs(1));
    // Set up without the combiner, so that the combiner's first batch waits for a full batch
    // (up to `max_wait`) and the test's transfers travel together.
    let setup = builder().build().expect("ledger");
    setup.define_currency("USD", 2).expect("currency");
    let issuer = setup.open_account(&NewAccount::new("USD").unbounded()).expect("issuer").id;
    let a = setup.open_account(&NewAccount::new("USD")).expect("a").id;
    let b = setup.open_account(&NewAccount::new("USD")).expect("b").id;
    setup.transfer(&Transfer::new(issuer, a, dec!(100.00))).expect("fund a");
    setup.transfer(&Transfer::new(issuer, b, dec!(100.00))).expect("fund b");
    let ledger = if combine {
        let config = wallet_ledger::CombineConfig { max_batch: 16, max_wait: Duration::from_millis(300) };
        builder().combine(config).build().expect("combined ledger")
    } else {
        setup
    };
    (server, url, ledger, [issuer, a, b])
}

/// Holds a row lock on `account` from another session, so that the ledger's next statement
/// touching it is sent and then waits inside the server.
fn hold_lock(url: &str, account: wallet_ledger::AccountId) -> postgres::Client {
    let mut blocker = postgres::Client::connect(url, postgres::NoTls).expect("blocker");
    blocker.batch_execute("BEGIN").expect("begin");
    blocker.execute("SELECT 1 FROM wallet_ledger.accounts WHERE id = $1 FOR UPDATE", &[&account.0]).expect("lock");
    blocker
}

/// Waits until `n` sessions of the test database wait for a row lock.
fn wait_for_lock_waiters(url: &str, n: i64) {
    let mut admin = postgres::Client::connect(url, postgres::NoTls).expect("admin");
    let started = Instant::now();
    loop {
        let waiting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .expect("activity")
            .get(0);
        if waiting >= n {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never saw {n} sessions waiting for a lock");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A batch whose connection dies while the statement runs, with the server gone for every
/// retry, may or may not have committed: the whole batch is `BatchOutcomeUnknown` naming every
/// item's key, in item order, and nothing else. Repeating the items with those keys once the
/// server is back applies each exactly once.
#[test]
fn a_batch_lost_in_flight_is_outcome_unknown_with_every_key_and_repeats_exactly_once() {
    let (server, url, ledger, [issuer, a, b]) = crashable(false);
    let items = vec![
        Transfer::new(a, b, dec!(10.00)).idempotency_key("lost-1"),
        Transfer::new(issuer, a, dec!(5.00)).idempotency_key("lost-2"),
        Transfer::new(b, issuer, dec!(1.00)),
    ];
    let _blocker = hold_lock(&url, a);
    let worker = {
        let (ledger, items) = (ledger.clone(), items.clone());
        thread::spawn(move || ledger.transfer_batch(&items))
    };
    wait_for_lock_waiters(&url, 1);
    server.crash().expect("crash");
    let err = worker.join().expect("no panic").expect_err("no answer from a crashed server");
    let keys = match &err {
        wallet_ledger::LedgerError::BatchOutcomeUnknown { idempotency_keys, .. } => idempotency_keys.clone(),
        other => panic!("expected BatchOutcomeUnknown, got {other:?}"),
    };
    assert_eq!(err.kind(), "batch_outcome_unknown");
    assert_eq!(keys.len(), 3, "one key per item: {keys:?}");
    assert_eq!(&keys[..2], ["lost-1", "lost-2"], "the callers' keys, in item order");
    assert!(!keys[2].is_empty(), "the keyless item's internal key is named too");

    server.restart().expect("restart");
    let again: Vec<Transfer> =
        items.iter().zip(&keys).map(|(t, key)| t.clone().idempotency_key(key.as_str())).collect();
    let results = ledger.transfer_batch(&again).expect("the batch, repeated");
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    // Repeating once more only replays.
    for r in ledger.transfer_batch(&again).expect("the batch, repeated twice") {
        assert!(r.expect("replayed").replayed);
    }
    assert_eq!(ledger.balance(a).expect("a"), dec!(95.00), "each item applied exactly once");
    assert_eq!(ledger.balance(b).expect("b"), dec!(109.00));
    let audit = ledger.verify().expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
}

/// The combiner's version: every caller of the lost batch gets `BatchOutcomeUnknown` naming
/// only its own key, and a repeat with that key applies it exactly once.
#[test]
fn a_combined_batch_lost_in_flight_tells_each_caller_its_own_key() {
    let (server, url, ledger, [issuer, a, b]) = crashable(true);
    let _blocker = hold_lock(&url, a);
    let transfers = [
        Transfer::new(a, b, dec!(10.00)).idempotency_key("c-lost-1"),
        Transfer::new(b, a, dec!(3.00)).idempotency_key("c-lost-2"),
        Transfer::new(issuer, a, dec!(7.00)).idempotency_key("c-lost-3"),
    ];
    let callers: Vec<_> = transfers
        .iter()
        .map(|t| {
            let (ledger, t) = (ledger.clone(), t.clone());
            thread::spawn(move || ledger.transfer(&t))
        })
        .collect();
    // The three queue within the first collector's wait and travel as one batch, which waits
    // on the held row inside the server.
    wait_for_lock_waiters(&url, 1);
    server.crash().expect("crash");
    for (caller, t) in callers.into_iter().zip(&transfers) {
        match caller.join().expect("no panic") {
            Err(wallet_ledger::LedgerError::BatchOutcomeUnknown { idempotency_keys, .. }) => {
                assert_eq!(idempotency_keys, [t.idempotency_key.clone().expect("keyed")], "only its own key");
            }
            other => panic!("expected an unknown outcome, got {other:?}"),
        }
    }
    server.restart().expect("restart");
    for t in &transfers {
        ledger.transfer(t).expect("repeated with its key");
    }
    assert_eq!(ledger.balance(a).expect("a"), dec!(100.00));
    assert_eq!(ledger.balance(b).expect("b"), dec!(107.00));
    let audit = ledger.verify().expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
}
