//! `changes` and `consumers`: the change feed from a cursor, once or followed until stopped,
//! and the durable consumers' lag with the feed's own state. Thin wrappers over
//! `Ledger::changes`, `Ledger::consumers` and `Ledger::feed_status`.

use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use wallet_ledger::limits::FEED_PAGE_MAX;
use wallet_ledger::{Change, ConsumerLag, Decimal, FeedCursor, FeedStatus, Ledger};

use crate::reads::time;

/// How long `--follow` waits after a page that was not full before it asks again.
const POLL_PAUSE: Duration = Duration::from_millis(200);
/// How long `--follow` waits before it asks again after a retryable error (a lost connection,
/// a pool timeout).
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// The step of those waits: how soon a stop request is noticed.
const PAUSE_STEP: Duration = Duration::from_millis(50);

/// Arguments of `changes`.
#[derive(Args)]
pub struct ChangesArgs {
    /// Start after this cursor (fc_<position>, as printed with each change); default: the
    /// start of the feed
    #[arg(long, value_name = "CURSOR", value_parser = parse_feed_cursor)]
    after: Option<FeedCursor>,
    /// Start at the feed's horizon: only changes committed from now on
    #[arg(long, conflicts_with = "after")]
    from_now: bool,
    /// Changes read per page (every page is printed, until the feed is exhausted)
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = page_size())]
    limit: u32,
    /// Keep polling for new changes until Ctrl-C, SIGTERM or a closed stdout (noticed at the
    /// next change), then exit 0; the cursor to continue from is printed on stderr
    #[arg(long)]
    follow: bool,
    /// Print one JSON object per change, one per line (JSON lines)
    #[arg(long)]
    json: bool,
}

/// `--limit`: 1 ..= FEED_PAGE_MAX, or an argument error (exit 2).
fn page_size() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..=i64::from(FEED_PAGE_MAX))
}

/// Parses `--after`: a cursor the feed printed. A malformed one is an argument error (exit 2).
fn parse_feed_cursor(text: &str) -> Result<FeedCursor, String> {
    text.parse().map_err(|_| format!("{text:?} is not a feed cursor: fc_<position>, as printed with each change"))
}

/// One change for `changes --json`: amounts and balances as strings, the time as RFC 3339
/// with milliseconds.
#[derive(Serialize)]
pub struct ChangeJson {
    /// `fc_<position>`: pass it to `--after` to continue after this change.
    cursor: String,
    /// `transfer`, `posting`, `reversal`, `hold_placed`, `hold_captured`, `hold_voided`,
    /// `hold_expired`, `account_opened`, `status_changed` or `limits_changed`.
    kind: &'static str,
    transfer_id: Option<i64>,
    hold_id: Option<i64>,
    /// The transfer a reversal reverses.
    reverses: Option<i64>,
    /// Moved, held or released; `null` for an account change.
    amount: Option<String>,
    currency: String,
    legs: Vec<ChangeLegJson>,
    memo: Option<String>,
    metadata: Option<serde_json::Value>,
    idempotency_key: Option<String>,
    /// Account and hold changes: the account's status after the change; `null` for movements.
    status: Option<&'static str>,
    /// Account and hold changes: the account's floor after the change (`null`: unbounded, or a
    /// movement).
    min_balance: Option<String>,
    /// Account and hold changes: the account's ceiling after the change (`null`: none, or a
    /// movement).
    max_balance: Option<String>,
    at: String,
}

/// One account a change touched, after the change.
#[derive(Serialize)]
pub struct ChangeLegJson {
    account: i64,
    /// Signed: negative where money left; "0" for a hold or an account change.
    amount: String,
    balance: String,
    version: i64,
}

impl From<&Change> for ChangeJson {
    fn from(c: &Change) -> ChangeJson {
        ChangeJson {
            cursor: c.cursor.to_string(),
            kind: c.kind.as_str(),
            transfer_id: c.transfer.map(|t| t.0),
            hold_id: c.hold.map(|h| h.0),
            reverses: c.reverses.map(|t| t.0),
            amount: c.amount.map(|a| a.to_string()),
            currency: c.currency.clone(),
            legs: c
                .legs
                .iter()
                .map(|l| ChangeLegJson {
                    account: l.account.0,
                    amount: l.amount.to_string(),
                    balance: l.balance.to_string(),
                    version: l.version,
                })
                .collect(),
            memo: c.memo.clone(),
            metadata: c.metadata.clone(),
            idempotency_key: c.idempotency_key.clone(),
            status: c.status.map(|s| s.as_str()),
            min_balance: c.min_balance.map(|d| d.to_string()),
            max_balance: c.max_balance.map(|d| d.to_string()),
            at: time_ms(c.at),
        }
    }
}

/// `changes`: every change after the cursor, page by page; with `--follow`, then every new one
/// until stopped. A closed stdout (`| head`) ends it quietly with exit 0.
pub fn changes(ledger: &Ledger, args: ChangesArgs) -> Result<()> {
    match print_changes(ledger, &args) {
        Err(e) if is_closed_stdout(&e) => Ok(()),
        other => other,
    }
}

fn print_changes(ledger: &Ledger, args: &ChangesArgs) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    if args.follow {
        let on_signal = stop.clone();
        ctrlc::set_handler(move || on_signal.store(true, Ordering::SeqCst)).context("install Ctrl-C handler")?;
    }
    let mut cursor = match (args.after, args.from_now) {
        (Some(after), _) => after,
        (None, true) => {
            // `feed_status` reports the horizon the last read left; a read moves it over
            // everything committed until now first (one change, from the start: cheap).
            ledger.changes(None, 1)?;
            ledger.feed_status()?.horizon
        }
        (None, false) => FeedCursor::START,
    };
    let mut out = BufWriter::new(io::stdout().lock());
    while !stop.load(Ordering::SeqCst) {
        let page = match ledger.changes(Some(cursor), args.limit) {
            Ok(page) => page,
            Err(e) if args.follow && e.is_retryable() => {
                eprintln!("changes: {e}; trying again");
                pause(&stop, RETRY_PAUSE);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for change in &page.changes {
            if args.json {
                serde_json::to_writer(&mut out, &ChangeJson::from(change))?;
                writeln!(out)?;
            } else {
                writeln!(out, "{}", text_line(change))?;
            }
        }
        out.flush()?;
        cursor = page.next;
        if page.changes.len() == args.limit as usize {
            continue; // a full page: more may be waiting
        }
        if !args.follow {
            if !args.json {
                writeln!(out, "(end; continue with --after {cursor})")?;
                out.flush()?;
            }
            return Ok(());
        }
        pause(&stop, POLL_PAUSE);
    }
    eprintln!("changes: stopped; continue with --after {cursor}");
    Ok(())
}

/// Sleeps `total` in short steps, returning early once `stop` is set.
fn pause(stop: &AtomicBool, total: Duration) {
    let mut slept = Duration::ZERO;
    while slept < total && !stop.load(Ordering::SeqCst) {
        thread::sleep(PAUSE_STEP);
        slept += PAUSE_STEP;
    }
}

/// Whether `e` is a write to a stdout whose reader has gone (EPIPE: Rust ignores SIGPIPE).
fn is_closed_stdout(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let kind = match cause.downcast_ref::<io::Error>() {
            Some(io) => Some(io.kind()),
            None => cause.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind),
        };
        kind == Some(io::ErrorKind::BrokenPipe)
    })
}

/// One change as one line: cursor, time, kind, what it concerns, the accounts it touched with
/// their balances after it, the currency and the memo.
fn text_line(c: &Change) -> String {
    let subject = subject(c);
    let legs: Vec<String> = if c.kind.moves_money() {
        c.legs.iter().map(|l| format!("{}:{}->{}", l.account, l.amount, l.balance)).collect()
    } else {
        c.legs.iter().map(|l| format!("{} balance {}", l.account, l.balance)).collect()
    };
    let memo = c.memo.as_deref().map_or(String::new(), |m| format!("  {}", one_line(m)));
    let (cursor, at, kind) = (c.cursor.to_string(), time(c.at), c.kind.as_str());
    format!("{cursor:<10} {at:<20} {kind:<14} {subject}  {} {}{memo}", legs.join(" "), c.currency)
}

/// What a change concerns: the transfer, the hold, or the account and its state after it.
fn subject(c: &Change) -> String {
    let id = |v: Option<i64>| v.map_or("?".to_string(), |v| v.to_string());
    let amount = c.amount.map_or(String::new(), |a| format!(" {a}"));
    if c.kind.moves_money() {
        let mut s = format!("transfer {}{amount}", id(c.transfer.map(|t| t.0)));
        if let Some(original) = c.reverses {
            s.push_str(&format!(" reverses {original}"));
        }
        if let Some(hold) = c.hold {
            s.push_str(&format!(" captures hold {hold}"));
        }
        return s;
    }
    if let Some(hold) = c.hold {
        return format!("hold {hold}{amount}");
    }
    let account = id(c.legs.first().map(|l| l.account.0));
    let status = c.status.map_or("?", |s| s.as_str());
    let floor = c.min_balance.map_or("unbounded".to_string(), |d: Decimal| d.to_string());
    let ceiling = c.max_balance.map_or("none".to_string(), |d: Decimal| d.to_string());
    format!("account {account} {status} floor {floor} ceiling {ceiling}")
}

/// `text` with its control characters escaped, so that a memo or a name is one line.
fn one_line(text: &str) -> String {
    text.chars().map(|ch| if ch.is_control() { ch.escape_debug().to_string() } else { ch.to_string() }).collect()
}

fn time_ms(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A duration to the millisecond, e.g. `1s 250ms`.
fn age(d: Duration) -> String {
    let ms = Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    if ms.is_zero() {
        return "0s".to_string();
    }
    humantime::format_duration(ms).to_string()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `consumers --json`: the feed's state and every consumer.
#[derive(Serialize)]
struct ConsumersJson {
    feed: FeedStatusJson,
    consumers: Vec<ConsumerJson>,
}

/// The feed's state.
#[derive(Serialize)]
struct FeedStatusJson {
    /// Every change up to it is readable.
    horizon: String,
    /// The last position drawn by any writer, committed or not.
    last_drawn: String,
    /// Committed changes past the horizon, not yet readable.
    held_back: u64,
    /// The age of the oldest open transaction holding the horizon back; `null` when none.
    oldest_open_transaction_ms: Option<u64>,
}

/// One consumer and its lag.
#[derive(Serialize)]
struct ConsumerJson {
    name: String,
    /// The last change processed; `null` when none was.
    position: Option<String>,
    /// Changes processed, all time.
    delivered: u64,
    /// Committed changes after its position, not processed yet.
    lag_changes: u64,
    /// The age of the oldest of them (0 when there is none).
    lag_ms: u64,
    /// When it last advanced (RFC 3339); `null`: never.
    updated_at: Option<String>,
}

impl From<&FeedStatus> for FeedStatusJson {
    fn from(s: &FeedStatus) -> FeedStatusJson {
        FeedStatusJson {
            horizon: s.horizon.to_string(),
            last_drawn: s.last_drawn.to_string(),
            held_back: s.held_back,
            oldest_open_transaction_ms: s.oldest_open_transaction.map(millis),
        }
    }
}

impl From<&ConsumerLag> for ConsumerJson {
    fn from(c: &ConsumerLag) -> ConsumerJson {
        ConsumerJson {
            name: c.name.clone(),
            position: c.position.map(|p| p.to_string()),
            delivered: c.delivered,
            lag_changes: c.changes,
            lag_ms: millis(c.behind),
            updated_at: c.updated_at.map(time_ms),
        }
    }
}

/// `consumers`: the feed's state on one line, then every consumer with its position and lag.
pub fn consumers(ledger: &Ledger, json_out: bool) -> Result<()> {
    let status = ledger.feed_status()?;
    let consumers = ledger.consumers()?;
    if json_out {
        return crate::json::print(&ConsumersJson {
            feed: FeedStatusJson::from(&status),
            consumers: consumers.iter().map(ConsumerJson::from).collect(),
        });
    }
    let oldest = status.oldest_open_transaction.map_or("none".to_string(), age);
    println!(
        "feed: horizon {}, last drawn {}, {} held back, oldest open transaction {oldest}",
        status.horizon, status.last_drawn, status.held_back
    );
    println!("{:<24} {:>12} {:>10} {:>10} {:>12}  updated", "consumer", "position", "delivered", "lag", "lag age");
    for c in &consumers {
        let position = c.position.map_or("-".to_string(), |p| p.to_string());
        let updated = c.updated_at.map_or("never".to_string(), time);
        println!(
            "{:<24} {:>12} {:>10} {:>10} {:>12}  {updated}",
            one_line(&c.name),
            position,
            c.delivered,
            c.changes,
            age(c.behind)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_and_lines() {
        assert_eq!(parse_feed_cursor("fc_7").map(|c| c.to_string()), Ok("fc_7".to_string()));
        let refused = parse_feed_cursor("7").unwrap_err();
        assert!(refused.contains("is not a feed cursor"), "{refused}");
        assert_eq!(one_line("a\nb\tc é"), "a\\nb\\tc é");
        assert_eq!(age(Duration::from_micros(1_250_400)), "1s 250ms");
        assert_eq!(age(Duration::from_micros(400)), "0s");
    }

    #[test]
    fn a_closed_stdout_is_recognised_through_the_error_chain() {
        let pipe = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe)).context("print");
        assert!(is_closed_stdout(&pipe));
        let json = anyhow::Error::from(serde_json::Error::io(io::Error::from(io::ErrorKind::BrokenPipe)));
        assert!(is_closed_stdout(&json));
        assert!(!is_closed_stdout(&anyhow::anyhow!("something else")));
        assert!(!is_closed_stdout(&anyhow::Error::from(io::Error::from(io::ErrorKind::Other))));
    }
}
