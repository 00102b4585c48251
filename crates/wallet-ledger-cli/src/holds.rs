//! `hold`, `holds list` and `expire`: thin wrappers over the library's holds API.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use wallet_ledger::{AccountId, Hold, Ledger};

use wallet_ledger::Decimal;

use crate::parse_amount;

/// Arguments of `hold`.
#[derive(Args)]
pub struct HoldArgs {
    /// Account the amount is reserved on
    from: i64,
    /// Account a capture pays
    to: i64,
    /// Amount to reserve
    #[arg(value_parser = parse_amount)]
    amount: Decimal,
    /// How long until the hold lapses, e.g. 30s, 15m, 7d
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    expires_in: Duration,
    /// Idempotency key
    #[arg(long)]
    key: Option<String>,
    /// Memo
    #[arg(long)]
    memo: Option<String>,
    /// Metadata stored with the hold and its capture: a JSON object, e.g. '{"booking":"B-1"}'
    #[arg(long, value_parser = crate::parse_metadata)]
    metadata: Option<serde_json::Value>,
}

/// `holds ...`
#[derive(Subcommand)]
pub enum HoldsCommand {
    /// The pending holds on an account
    List {
        /// Account id
        account: i64,
        /// Most holds to show
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print the holds as JSON
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `expire`.
#[derive(Args)]
pub struct ExpireArgs {
    /// Concurrent workers (each claims holds with FOR UPDATE SKIP LOCKED)
    #[arg(long, default_value_t = 1)]
    workers: u32,
    /// Keep running, one pass per worker at this interval, until Ctrl-C (e.g. 1s); without it, one pass
    #[arg(long, value_parser = parse_duration)]
    every: Option<Duration>,
    /// Most holds one worker releases per transaction
    #[arg(long, default_value_t = 1000)]
    batch: u32,
}

pub fn hold(ledger: &Ledger, args: HoldArgs) -> Result<()> {
    let mut h = Hold::new(AccountId(args.from), AccountId(args.to), args.amount).expires_in(args.expires_in);
    if let Some(key) = args.key {
        h = h.idempotency_key(key);
    }
    if let Some(memo) = args.memo {
        h = h.memo(memo);
    }
    if let Some(metadata) = args.metadata {
        h = h.metadata(metadata);
    }
    let r = ledger.hold(&h)?;
    let replay = if r.replayed { " (replayed: created earlier with this key)" } else { "" };
    println!("hold {} pending, expires {}{replay}", r.hold_id, seconds_from_now(r.expires_at));
    println!("  available {}: {}", args.from, ledger.available(AccountId(args.from))?);
    Ok(())
}

pub fn list(ledger: &Ledger, command: HoldsCommand) -> Result<()> {
    let HoldsCommand::List { account, limit, json } = command;
    let holds = ledger.open_holds(AccountId(account), limit)?;
    if json {
        let available = ledger.available(AccountId(account))?.to_string();
        let holds = holds.iter().map(crate::json::HoldJson::from).collect();
        return crate::json::print(&crate::json::HoldsJson { account, available, holds });
    }
    println!("{:>10} {:>10} {:>16} {:>14}  memo", "hold", "to", "amount", "expires");
    for h in &holds {
        let memo = h.memo.as_deref().unwrap_or("");
        println!("{:>10} {:>10} {:>16} {:>14}  {memo}", h.id, h.to, h.amount, seconds_from_now(h.expires_at));
    }
    println!("available: {}", ledger.available(AccountId(account))?);
    Ok(())
}

/// One pass, or `workers` threads each running a pass every `every` until Ctrl-C / SIGTERM;
/// a pass in flight finishes (its transaction commits) before the process exits.
pub fn expire(ledger: &Ledger, args: ExpireArgs) -> Result<()> {
    let Some(every) = args.every else {
        let mut total = 0;
        loop {
            let n = ledger.expire_holds(args.batch)?;
            total += n;
            if n < args.batch as usize {
                break;
            }
        }
        println!("expired {total} holds");
        return Ok(());
    };
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = stop.clone();
    ctrlc::set_handler(move || on_signal.store(true, Ordering::SeqCst)).context("install Ctrl-C handler")?;
    eprintln!("expire: {} workers, every {every:?}; Ctrl-C to stop", args.workers);
    let workers: Vec<_> = (0..args.workers)
        .map(|_| {
            let (ledger, stop) = (ledger.clone(), stop.clone());
            thread::spawn(move || worker(&ledger, &stop, every, args.batch))
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.join().map_err(|_| anyhow::anyhow!("expiry worker panicked"))??;
    }
    println!("stopped: expired {total} holds");
    Ok(())
}

fn worker(ledger: &Ledger, stop: &AtomicBool, every: Duration, batch: u32) -> Result<usize> {
    let mut total = 0;
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let n = ledger.expire_holds(batch)?;
        total += n;
        if n > 0 {
            eprintln!("expired {n}");
        }
        if n < batch as usize {
            // Sleep in short steps so Ctrl-C is honoured promptly.
            while started.elapsed() < every && !stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(50).min(every));
            }
        }
    }
    Ok(total)
}

fn seconds_from_now(t: std::time::SystemTime) -> String {
    match t.duration_since(std::time::SystemTime::now()) {
        Ok(d) => format!("in {}s", d.as_secs()),
        Err(_) => "lapsed".into(),
    }
}

/// `90`, `90s`, `15m`, `2h`, `7d`, `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a duration like 30s, 15m, 7d"))?;
    let seconds = |s: u64| Duration::from_secs(n.saturating_mul(s));
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(seconds(1)),
        "m" => Ok(seconds(60)),
        "h" => Ok(seconds(3600)),
        "d" => Ok(seconds(86400)),
        _ => Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h, d)")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_duration("7 days").is_err());
        assert!(parse_duration("m").is_err());
    }
}
