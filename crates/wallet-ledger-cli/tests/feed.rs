//! The change feed on the command line: `changes --json` prints every change once, in feed
//! order, across pages, and `--after` resumes where a printed cursor says; a bad cursor or page
//! size is an argument error (exit 2); `changes --follow` prints a change made while it runs
//! and ends with exit 0 on SIGINT, SIGTERM or a closed stdout; `consumers` shows a library
//! consumer's position and lag after the feed's state.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rust_decimal_macros::dec;
use serde_json::{json, Value};
use wallet_ledger::{Change, FeedCursor, Hold, Ledger, Transfer};

fn cli(url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wallet-ledger"))
        .arg("--database-url")
        .arg(url)
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("the binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `changes --json` with `args`: its JSON lines, parsed; the command must succeed.
fn json_lines(url: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["changes", "--json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = cli(url, &all);
    assert_eq!(code, Some(0), "{args:?}: {stderr}");
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect()
}

/// Every change readable now, through the library.
fn all_changes(ledger: &Ledger) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = ledger.changes(cursor, 100)?;
        if page.changes.is_empty() {
            return Ok(out);
        }
        cursor = Some(page.next);
        out.extend(page.changes);
    }
}

fn cursors(lines: &[Value]) -> Vec<String> {
    lines.iter().map(|l| l["cursor"].as_str().expect("a cursor string").to_string()).collect()
}

#[test]
fn changes_prints_every_change_once_in_order_and_resumes_after_a_cursor() -> Result<()> {
    let (ledger, url, issuer, w) = common::funded("cli_feed_changes", 2, dec!(100.00))?;
    let paid = ledger.transfer(
        &Transfer::new(w[0], w[1], dec!(12.50)).memo("order 7").idempotency_key("order-7").metadata(json!({"o": 7})),
    )?;
    let hold = ledger.hold(&Hold::new(w[1], w[0], dec!(3.00)))?;
    ledger.capture(hold.hold_id, Some(dec!(2.00)))?;
    ledger.freeze(w[0])?;
    for _ in 0..3 {
        ledger.transfer(&Transfer::new(issuer, w[1], dec!(1.00)))?;
    }
    let expected = all_changes(&ledger)?;
    assert_eq!(expected.len(), 12, "5 from funding; payment, hold, capture, freeze; 3 transfers");

    // Pages of 4: every change once, in the library's order.
    let lines = json_lines(&url, &["--limit", "4"]);
    let want: Vec<String> = expected.iter().map(|c| c.cursor.to_string()).collect();
    assert_eq!(cursors(&lines), want);
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().expect("kind")).collect();
    assert_eq!(kinds, expected.iter().map(|c| c.kind.as_str()).collect::<Vec<_>>());

    let t = lines.iter().find(|l| l["transfer_id"] == paid.transfer_id.0).expect("the payment is in the feed");
    assert_eq!(t["kind"], "transfer");
    assert_eq!((&t["amount"], &t["currency"], &t["memo"]), (&json!("12.50"), &json!("USD"), &json!("order 7")));
    assert_eq!((&t["idempotency_key"], &t["metadata"]), (&json!("order-7"), &json!({"o": 7})));
    assert_eq!(t["legs"][0], json!({"account": w[0].0, "amount": "-12.50", "balance": "87.50", "version": 2}));
    assert_eq!(t["legs"][1]["balance"], "112.50");
    assert!(t["at"].as_str().is_some_and(|at| at.ends_with('Z')), "{t}");
    let captured = lines.iter().find(|l| l["kind"] == "hold_captured").expect("the capture");
    assert_eq!((&captured["hold_id"], &captured["amount"]), (&json!(hold.hold_id.0), &json!("2.00")));
    let frozen = lines.iter().find(|l| l["kind"] == "status_changed").expect("the freeze");
    assert_eq!((&frozen["status"], &frozen["legs"][0]["account"]), (&json!("frozen"), &json!(w[0].0)));

    // Resume after the 6th printed cursor: exactly the rest; after the last: nothing.
    let rest = json_lines(&url, &["--after", &want[5]]);
    assert_eq!(cursors(&rest), want[6..]);
    assert!(json_lines(&url, &["--after", &want[11]]).is_empty());

    // Text: one line per change, then where to continue.
    let (code, text, stderr) = cli(&url, &["changes", "--after", &want[5], "--limit", "2"]);
    assert_eq!(code, Some(0), "{stderr}");
    let text_lines: Vec<&str> = text.lines().collect();
    assert_eq!(text_lines.len(), 7, "{text}");
    for (line, cursor) in text_lines.iter().zip(&want[6..]) {
        assert!(line.starts_with(&format!("{cursor} ")), "{line:?} does not start with {cursor}");
    }
    assert_eq!(text_lines[6], format!("(end; continue with --after {})", want[11]));
    let (_, all_text, _) = cli(&url, &["changes"]);
    let payment =
        format!("transfer {} 12.50  {}:-12.50->87.50 {}:12.50->112.50 USD  order 7", paid.transfer_id, w[0], w[1]);
    assert!(all_text.contains(&payment), "{payment:?} not in:\n{all_text}");

    for bad in [["--after", "42"], ["--after", "fc_x"], ["--after", "fc_-1"], ["--limit", "0"], ["--limit", "10001"]] {
        let (code, stdout, stderr) = cli(&url, &["changes", bad[0], bad[1]]);
        assert_eq!(code, Some(2), "{bad:?}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
    }
    let (_, _, stderr) = cli(&url, &["changes", "--after", "42"]);
    assert!(stderr.contains("\"42\" is not a feed cursor"), "{stderr}");
    Ok(())
}

/// The child's stdout lines, as they come.
fn lines_of(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (send, receive) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if send.send(line).is_err() {
                return;
            }
        }
    });
    receive
}

fn follow(url: &str, args: &[&str]) -> Result<Child> {
    Command::new(env!("CARGO_BIN_EXE_wallet-ledger"))
        .args(["--database-url", url, "changes", "--follow", "--json"])
        .args(args)
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start changes --follow")
}

/// Waits for the child to exit (at most `limit`); kills it and fails when it does not.
fn exits_within(child: &mut Child, limit: Duration) -> Result<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    anyhow::bail!("still running after {limit:?}")
}

fn signal(child: &Child, name: &str) -> Result<()> {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status()?;
    anyhow::ensure!(status.success(), "kill -{name} failed");
    Ok(())
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
    }
    text
}

const ARRIVES: Duration = Duration::from_secs(15);

#[test]
fn follow_prints_a_new_change_and_stops_cleanly_on_a_signal() -> Result<()> {
    let (ledger, url, _issuer, w) = common::funded("cli_feed_follow", 2, dec!(100.00))?;
    for signal_name in ["INT", "TERM"] {
        let last = all_changes(&ledger)?.last().expect("changes").cursor;
        let mut child = follow(&url, &["--after", &last.to_string(), "--limit", "2"])?;
        let lines = lines_of(&mut child);
        let receipt = ledger.transfer(&Transfer::new(w[0], w[1], dec!(1.00)))?;
        let line: Value = serde_json::from_str(&lines.recv_timeout(ARRIVES).context("the change never arrived")?)?;
        assert_eq!((&line["kind"], &line["transfer_id"]), (&json!("transfer"), &json!(receipt.transfer_id.0)));
        let cursor: FeedCursor = line["cursor"].as_str().expect("cursor").parse()?;
        assert!(cursor > last, "{line}");
        signal(&child, signal_name)?;
        let status = exits_within(&mut child, Duration::from_secs(10))?;
        assert_eq!(status.code(), Some(0), "SIG{signal_name}: {status:?}");
        let stderr = stderr_of(&mut child);
        assert!(stderr.contains(&format!("stopped; continue with --after {cursor}")), "SIG{signal_name}: {stderr}");
    }
    Ok(())
}

#[test]
fn follow_ends_with_exit_0_when_its_reader_goes_away() -> Result<()> {
    let (ledger, url, _issuer, w) = common::funded("cli_feed_pipe", 2, dec!(100.00))?;
    let mut child = follow(&url, &["--from-now"])?;
    let lines = lines_of(&mut child);
    // --from-now: only changes committed after it started. It may start after the first of
    // these transfers, so transfer until one arrives.
    let before = all_changes(&ledger)?.last().expect("changes").cursor;
    let start = Instant::now();
    let first = loop {
        anyhow::ensure!(start.elapsed() < ARRIVES, "no change arrived");
        ledger.transfer(&Transfer::new(w[0], w[1], dec!(1.00)))?;
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(500)) {
            break serde_json::from_str::<Value>(&line)?;
        }
    };
    let first_cursor: FeedCursor = first["cursor"].as_str().expect("cursor").parse()?;
    assert!(first_cursor > before, "--from-now printed {first_cursor}, not after {before}");
    assert_eq!(first["kind"], "transfer");

    drop(lines); // the reader thread ends at its next line, closing the pipe
    let mut status = None;
    let start = Instant::now();
    while status.is_none() && start.elapsed() < ARRIVES {
        ledger.transfer(&Transfer::new(w[0], w[1], dec!(1.00)))?;
        thread::sleep(Duration::from_millis(100));
        status = child.try_wait()?;
    }
    let status = match status {
        Some(status) => status,
        None => exits_within(&mut child, Duration::from_secs(5))?,
    };
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(0), "{status:?}: {stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
    Ok(())
}

#[test]
fn consumers_show_a_library_consumers_position_and_lag() -> Result<()> {
    let (ledger, url, _issuer, w) = common::funded("cli_feed_consumers", 2, dec!(100.00))?;
    let (code, stdout, stderr) = cli(&url, &["consumers", "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let none: Value = serde_json::from_str(&stdout)?;
    assert_eq!(none["consumers"], json!([]));

    assert_eq!(ledger.consume("totals", 3, |_, _| Ok(()))?, 3);
    assert_eq!(ledger.consume("mirror", 100, |_, _| Ok(()))?, 5);
    ledger.transfer(&Transfer::new(w[0], w[1], dec!(1.00)))?;
    let changes = all_changes(&ledger)?;

    let (code, stdout, stderr) = cli(&url, &["consumers", "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let listed: Value = serde_json::from_str(&stdout)?;
    let feed = &listed["feed"];
    assert_eq!(feed["horizon"], changes[5].cursor.to_string(), "{feed}");
    assert_eq!(feed["held_back"], 0, "{feed}");
    let last_drawn: FeedCursor = feed["last_drawn"].as_str().expect("last_drawn").parse()?;
    assert!(last_drawn >= changes[5].cursor, "{feed}");
    assert!(feed.get("oldest_open_transaction_ms").is_some(), "{feed}");
    let consumers = listed["consumers"].as_array().expect("consumers");
    let names: Vec<&str> = consumers.iter().map(|c| c["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["mirror", "totals"]);
    let (mirror, totals) = (&consumers[0], &consumers[1]);
    assert_eq!(totals["position"], changes[2].cursor.to_string());
    assert_eq!((&totals["delivered"], &totals["lag_changes"]), (&json!(3), &json!(3)));
    assert!(totals["lag_ms"].as_u64().is_some_and(|ms| ms > 0), "{totals}");
    assert!(totals["updated_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{totals}");
    assert_eq!((&mirror["delivered"], &mirror["lag_changes"]), (&json!(5), &json!(1)));

    let (code, text, stderr) = cli(&url, &["consumers"]);
    assert_eq!(code, Some(0), "{stderr}");
    let first = text.lines().next().unwrap_or("");
    assert!(first.starts_with(&format!("feed: horizon {}", changes[5].cursor)), "{text}");
    let row = text.lines().find(|l| l.starts_with("totals ")).with_context(|| format!("no totals row:\n{text}"))?;
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(fields[1..4], [changes[2].cursor.to_string().as_str(), "3", "3"], "{row}");
    Ok(())
}
