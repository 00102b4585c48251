//! The checker: after the load, proves from the database and the clients' logs that nothing
//! was lost, created or applied twice.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Result;
use wallet_ledger::{Decimal, Ledger};

use super::faults::Faults;
use super::workload::{Attempt, Outcome, Setup, Snapshot};

/// Clients must be acknowledged again within this long of a restart or a promotion.
pub const RECOVERY_TARGET: Duration = Duration::from_secs(5);

/// One check and its verdict.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// How long clients took to be acknowledged again after a crash or failover.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub kind: &'static str,
    pub at: Duration,
    pub back_at: Duration,
    /// From the server being back to the first acknowledged transfer; `None` when there was none.
    pub first_ack_after: Option<Duration>,
}

/// Everything the checker found.
#[derive(Debug, Default)]
pub struct Verdict {
    pub checks: Vec<Check>,
    /// Logical transfers (keys) by final outcome.
    pub operations: BTreeMap<&'static str, u64>,
    /// Attempts by outcome.
    pub attempts: BTreeMap<&'static str, u64>,
    /// Failed attempts by reason.
    pub failures: BTreeMap<String, u64>,
    pub snapshots: BTreeMap<&'static str, u64>,
    pub recovery: Vec<Recovery>,
}

impl Verdict {
    /// Every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

/// A committed transfer of the run, as the database has it.
struct Row {
    id: i64,
    from: i64,
    to: i64,
    amount: Decimal,
    from_after: Option<Decimal>,
    to_after: Option<Decimal>,
}

/// What the checker needs besides the database.
pub struct Evidence<'a> {
    pub setup: &'a Setup,
    pub attempts: &'a [Attempt],
    pub snapshots: &'a [Snapshot],
    pub faults: &'a Faults,
    /// `deadlock detected` lines in the servers' logs (embedded servers only).
    pub deadlocks_in_logs: Option<usize>,
    pub panics: usize,
    /// When the last client stopped, since the load started.
    pub load_end: Duration,
}

/// Runs every check.
pub fn check(ledger: &Ledger, ev: &Evidence<'_>) -> Result<Verdict> {
    let mut v = Verdict::default();
    let push = |checks: &mut Vec<Check>, name, passed, detail: String| checks.push(Check { name, passed, detail });

    // 1. The audit.
    let audit = ledger.verify()?;
    let detail = if audit.is_clean() {
        format!("{} accounts, {} transfers, {} entries", audit.accounts, audit.transfers, audit.entries)
    } else {
        let first: Vec<String> = audit.violations.iter().take(5).map(ToString::to_string).collect();
        format!("{} violations: {}", audit.violations.len(), first.join("; "))
    };
    push(&mut v.checks, "audit clean", audit.is_clean(), detail);

    // 2. Snapshots during the load, and one after it.
    let bad: Vec<&String> =
        ev.snapshots.iter().filter_map(|s| if let Snapshot::Bad(d) = s { Some(d) } else { None }).collect();
    let good = ev.snapshots.iter().filter(|s| matches!(s, Snapshot::Good)).count();
    v.snapshots.insert("good", good as u64);
    v.snapshots.insert("bad", bad.len() as u64);
    v.snapshots.insert("failed", (ev.snapshots.len() - good - bad.len()) as u64);
    let detail = match bad.first() {
        None => format!("{good} snapshots summed to {} with no floor broken", ev.setup.expected_total()),
        Some(first) => format!("{} bad snapshots; first: {first}", bad.len()),
    };
    push(&mut v.checks, "every snapshot correct", bad.is_empty() && good > 0, detail);
    let ids: Vec<i64> = ev.setup.wallets.iter().map(|w| w.0 .0).collect();
    let (total, below): (Decimal, i64) = {
        let mut conn = ledger.connection()?;
        let row = conn.client().query_one(
            "SELECT coalesce(sum(balance), 0), count(*) FILTER (WHERE balance - held < min_balance)
               FROM wallet_ledger.accounts WHERE id = ANY($1)",
            &[&ids],
        )?;
        (row.get(0), row.get(1))
    };
    let expected = ev.setup.expected_total();
    push(
        &mut v.checks,
        "no cent created or lost",
        total == expected && below == 0,
        format!("wallets hold {total} at the end (funded {expected}), {below} below their floor"),
    );

    // 3. Every logical transfer against the database.
    let rows = run_transfers(ledger, &ev.setup.key_prefix())?;
    let mut ops: BTreeMap<&str, Vec<&Attempt>> = BTreeMap::new();
    for a in ev.attempts {
        ops.entry(a.key.as_str()).or_default().push(a);
        *v.attempts.entry(a.outcome.label()).or_default() += 1;
        if let Outcome::Failed(reason) = &a.outcome {
            *v.failures.entry(reason.clone()).or_default() += 1;
        }
    }
    let mut twice = Vec::new();
    let mut acked_missing = Vec::new();
    let mut acked_wrong = Vec::new();
    let mut refused_applied = Vec::new();
    let mut failed_applied = Vec::new();
    let mut ambiguous_wrong = Vec::new();
    let mut own_key_conflicts = Vec::new();
    for (key, attempts) in &ops {
        let found = rows.get(*key).map(Vec::as_slice).unwrap_or(&[]);
        if found.len() > 1 {
            twice.push(key.to_string());
        }
        let row = found.first();
        let first = attempts[0];
        let matches = |r: &Row| r.from == first.from.0 && r.to == first.to.0 && r.amount == first.amount;
        let acks: Vec<_> = attempts
            .iter()
            .filter_map(|a| if let Outcome::Acknowledged(r) = &a.outcome { Some(r) } else { None })
            .collect();
        let last = &attempts[attempts.len() - 1].outcome;
        let kind = if !acks.is_empty() {
            match row {
                None => acked_missing.push(key.to_string()),
                Some(r) => {
                    let faithful = acks.iter().all(|receipt| {
                        receipt.transfer_id.0 == r.id
                            && receipt.from.0 == r.from
                            && receipt.to.0 == r.to
                            && receipt.amount == r.amount
                            && Some(receipt.from_balance) == r.from_after
                            && Some(receipt.to_balance) == r.to_after
                    });
                    if !faithful {
                        acked_wrong.push(key.to_string());
                    }
                }
            }
            if acks.iter().any(|r| r.replayed) {
                "acknowledged (replay of an unanswered attempt)"
            } else {
                "acknowledged"
            }
        } else if let Outcome::Refused(reason) = last {
            if reason == "idempotency conflict" {
                own_key_conflicts.push(key.to_string());
            }
            if row.is_some() {
                refused_applied.push(key.to_string());
            }
            "refused"
        } else if attempts.iter().any(|a| matches!(a.outcome, Outcome::Ambiguous)) {
            match row {
                Some(r) if matches(r) => "ambiguous, resolved: applied once",
                Some(_) => {
                    ambiguous_wrong.push(key.to_string());
                    "ambiguous, resolved: applied with other content"
                }
                None => "ambiguous, resolved: not applied",
            }
        } else {
            if row.is_some() {
                failed_applied.push(key.to_string());
            }
            "failed (every attempt definitively)"
        };
        *v.operations.entry(kind).or_default() += 1;
    }
    let phantom: Vec<&String> = rows.keys().filter(|k| !ops.contains_key(k.as_str())).collect();
    let list = |keys: &[String]| keys.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    push(
        &mut v.checks,
        "no key applied twice",
        twice.is_empty(),
        format!("{} keys with more than one transfer {}", twice.len(), list(&twice)),
    );
    push(
        &mut v.checks,
        "every acknowledged transfer exists once, as its receipt says",
        acked_missing.is_empty() && acked_wrong.is_empty(),
        format!(
            "{} missing {}; {} differ from their receipt {}",
            acked_missing.len(),
            list(&acked_missing),
            acked_wrong.len(),
            list(&acked_wrong)
        ),
    );
    push(
        &mut v.checks,
        "nothing applied that was definitively refused or failed",
        refused_applied.is_empty() && failed_applied.is_empty() && own_key_conflicts.is_empty(),
        format!(
            "{} refused but applied {}; {} failed but applied {}; {} refused as a conflict with their own key {}",
            refused_applied.len(),
            list(&refused_applied),
            failed_applied.len(),
            list(&failed_applied),
            own_key_conflicts.len(),
            list(&own_key_conflicts)
        ),
    );
    push(
        &mut v.checks,
        "every ambiguous transfer applied once or not at all",
        ambiguous_wrong.is_empty(),
        format!("{} applied with other content {}", ambiguous_wrong.len(), list(&ambiguous_wrong)),
    );
    let phantom_list: Vec<String> = phantom.iter().take(5).map(|k| k.to_string()).collect();
    push(
        &mut v.checks,
        "no transfer no client sent",
        phantom.is_empty(),
        format!("{} transfers with the run's keys that no client sent {}", phantom.len(), phantom_list.join(", ")),
    );

    // 4. Deadlocks, panics, unexpected errors.
    let in_logs = ev.deadlocks_in_logs.unwrap_or(0);
    let logs = ev
        .deadlocks_in_logs
        .map_or("logs not readable (external server)".to_string(), |n| format!("{n} in the server logs"));
    push(
        &mut v.checks,
        "no deadlock",
        ev.faults.deadlocks_counted == 0 && in_logs == 0,
        format!("{} counted by pg_stat_database, {logs}", ev.faults.deadlocks_counted),
    );
    push(&mut v.checks, "no panic", ev.panics == 0, format!("{} threads panicked", ev.panics));
    let unexpected: Vec<(&String, &u64)> = v.failures.iter().filter(|(r, _)| r.starts_with("unexpected")).collect();
    let detail = match unexpected.first() {
        None => {
            "every failure was one a fault causes (pool timeout, lock or statement timeout, lost connection)".into()
        }
        Some((reason, n)) => format!("{} kinds, first ({n}x): {reason}", unexpected.len()),
    };
    push(&mut v.checks, "no unexpected error", unexpected.is_empty(), detail);
    let fault_errors = &ev.faults.errors;
    push(
        &mut v.checks,
        "every fault injected as planned",
        fault_errors.is_empty(),
        fault_errors
            .first()
            .map_or("no fault failed to inject".into(), |e| format!("{} errors, first: {e}", fault_errors.len())),
    );

    // 5. Recovery after each crash or failover.
    let mut acks: Vec<Duration> =
        ev.attempts.iter().filter(|a| matches!(a.outcome, Outcome::Acknowledged(_))).map(|a| a.at).collect();
    acks.sort();
    let mut slow = Vec::new();
    for e in &ev.faults.events {
        let first = acks.iter().find(|&&t| t > e.back_at).map(|&t| t - e.back_at);
        let judged = first.map_or(ev.load_end > e.back_at + RECOVERY_TARGET, |d| d > RECOVERY_TARGET);
        if judged {
            slow.push(format!("{} at {:.1} s", e.kind, e.at.as_secs_f64()));
        }
        v.recovery.push(Recovery { kind: e.kind, at: e.at, back_at: e.back_at, first_ack_after: first });
    }
    let worst = v.recovery.iter().filter_map(|r| r.first_ack_after).max();
    push(
        &mut v.checks,
        "clients resume within 5 s of a restart or failover",
        slow.is_empty(),
        format!(
            "{} events, slowest {}{}",
            v.recovery.len(),
            worst.map_or("n/a".into(), |d| format!("{:.2} s", d.as_secs_f64())),
            if slow.is_empty() { String::new() } else { format!("; too slow: {}", slow.join(", ")) }
        ),
    );
    Ok(v)
}

/// The run's transfers by key (a key could only map to several if the unique index failed).
fn run_transfers(ledger: &Ledger, prefix: &str) -> Result<HashMap<String, Vec<Row>>> {
    let mut conn = ledger.connection()?;
    let rows = conn.client().query(
        "SELECT t.idempotency_key, t.id, t.from_account, t.to_account, t.amount,
                max(e.balance_after) FILTER (WHERE e.account_id = t.from_account),
                max(e.balance_after) FILTER (WHERE e.account_id = t.to_account)
           FROM wallet_ledger.transfers t
           LEFT JOIN wallet_ledger.entries e ON e.transfer_id = t.id
          WHERE starts_with(t.idempotency_key, $1)
          GROUP BY t.id",
        &[&prefix],
    )?;
    let mut out: HashMap<String, Vec<Row>> = HashMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().push(Row {
            id: r.get(1),
            from: r.get(2),
            to: r.get(3),
            amount: r.get(4),
            from_after: r.get(5),
            to_after: r.get(6),
        });
    }
    Ok(out)
}
