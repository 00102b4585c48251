//! The template database every point starts from: the schema, one currency, an unbounded
//! issuer, and `--accounts` wallets (floor 0) funded by transfers from the issuer.

use std::thread;

use anyhow::{ensure, Context, Result};
use wallet_ledger::{Ledger, NewAccount};

use super::db::Server;

/// Currency of every bench account.
pub const CURRENCY: &str = "USD";
/// What each wallet is funded with: enough that random 1.00 transfers are never refused.
const FUNDING: &str = "1000000.00";
/// Threads opening accounts through the library.
const SETUP_THREADS: usize = 4;

/// The wallets of the template: ids `first .. first + count`.
#[derive(Debug, Clone, Copy)]
pub struct Accounts {
    /// The lowest wallet id.
    pub first: i64,
    /// How many wallets.
    pub count: usize,
}

/// Creates the template database `name` with `count` funded wallets and checks its audit.
///
/// Accounts are opened through `Ledger::open_account` (a few threads). Funding runs the
/// library's own `wallet_ledger.transfer` function once per wallet inside one server-side
/// statement, the same function `Ledger::transfer` calls, without a round trip per wallet.
pub fn build_template(server: &mut Server, name: &str, count: usize) -> Result<Accounts> {
    let url = server.create(name, None)?;
    let ledger = Ledger::builder(&url).pool_size(SETUP_THREADS as u32).build().context("migrate the template")?;
    ledger.define_currency(CURRENCY, 2)?;
    let issuer = ledger.open_account(&NewAccount::new(CURRENCY).name("issuer").unbounded())?.id;
    open_wallets(&ledger, count)?;
    let mut conn = ledger.connection()?;
    let client = conn.client();
    let row = client.query_one(
        "SELECT min(id), max(id), count(*) FROM wallet_ledger.accounts WHERE min_balance IS NOT NULL",
        &[],
    )?;
    let (first, last, opened): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    ensure!(opened as usize == count && last - first + 1 == opened, "wallet ids are not contiguous");
    let funded: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM wallet_ledger.accounts a CROSS JOIN LATERAL wallet_ledger.transfer(
                   $1, a.id, {FUNDING}, 'bench-setup-' || a.id, NULL, 0::smallint, 0) t
                  WHERE a.min_balance IS NOT NULL AND t.outcome = 'ok'"
            ),
            &[&issuer.0],
        )
        .context("fund the wallets")?
        .get(0);
    ensure!(funded as usize == count, "funded {funded} of {count} wallets");
    hold_history(client, issuer.0, count)?;
    client.batch_execute("VACUUM ANALYZE").context("vacuum the template")?;
    drop(conn);
    let audit = ledger.verify()?;
    ensure!(audit.is_clean(), "the template ledger is not clean: {:?}", audit.violations.first());
    drop(ledger);
    server.wait_idle(name)?;
    Ok(Accounts { first, count })
}

/// Gives every wallet one ended hold (1.00 held for the issuer, then voided), through the
/// library's own `wallet_ledger.hold` and `wallet_ledger.void` functions: a ledger in use has a
/// history of holds. Without it the holds tables start empty, and the hold functions' plans,
/// cached per connection when a point starts, would scan those tables instead of using their
/// indexes for the whole point (until an autoanalyze, which a 5 s point never sees).
fn hold_history(client: &mut postgres::Client, issuer: i64, count: usize) -> Result<()> {
    let sql = "SELECT count(*) FROM wallet_ledger.accounts a
                 CROSS JOIN LATERAL wallet_ledger.hold(a.id, $1, 1.00, 3600000, 'bench-history-' || a.id,
                                                       NULL, 0::smallint, 0) h
                 CROSS JOIN LATERAL wallet_ledger.void(h.hold_id, 0::smallint, 0) v
                WHERE a.min_balance IS NOT NULL AND a.id >= $2 AND a.id < $3 AND v.outcome = 'ok'";
    let first: i64 =
        client.query_one("SELECT min(id) FROM wallet_ledger.accounts WHERE min_balance IS NOT NULL", &[])?.get(0);
    // A few first, analyzed, so the rest is planned for a table that is not empty.
    let split = first + HISTORY_FIRST.min(count) as i64;
    let mut ended = 0;
    for (from, to) in [(first, split), (split, first + count as i64)] {
        ended += client.query_one(sql, &[&issuer, &from, &to]).context("make the hold history")?.get::<_, i64>(0);
        client.batch_execute("ANALYZE wallet_ledger.holds, wallet_ledger.hold_events").context("analyze the holds")?;
    }
    ensure!(ended as usize == count, "ended {ended} of {count} history holds");
    Ok(())
}

/// Wallets whose history holds are made (and analyzed) before the others'.
const HISTORY_FIRST: usize = 200;

/// Opens `count` wallets (floor 0) through the library, in a few threads.
fn open_wallets(ledger: &Ledger, count: usize) -> Result<()> {
    thread::scope(|scope| {
        let workers: Vec<_> = (0..SETUP_THREADS)
            .map(|w| {
                scope.spawn(move || -> Result<()> {
                    for i in (w..count).step_by(SETUP_THREADS) {
                        ledger.open_account(&NewAccount::new(CURRENCY).name(format!("w{i}")))?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().expect("setup thread panicked"))
    })
    .context("open the wallets")
}
