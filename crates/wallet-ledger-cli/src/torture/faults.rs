//! The fault thread: terminates client backends, crashes and restarts the server, fails over to
//! the standby, pauses a backend that holds row locks; and counts the server's deadlocks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};
use wallet_ledger_embedded::cluster::Signal;
use wallet_ledger_embedded::embedded::EmbeddedServer;

use super::workload::{error_chain, Rng};

/// The `application_name` of the workload's connections: the faults target only these.
pub const APPLICATION: &str = "wl-torture";

/// Which faults, how often.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Terminate a client backend this often.
    pub terminate_every: Option<Duration>,
    /// Crash and restart the server this often.
    pub crash_every: Option<Duration>,
    /// Pause (SIGSTOP) a backend holding row locks this often ...
    pub pause_every: Option<Duration>,
    /// ... for this long.
    pub pause_for: Duration,
    /// Kill the primary and promote the standby this far into the load.
    pub failover_at: Option<Duration>,
    /// No crash and no failover this close to the end of the load, so that recovery is measured.
    pub quiet_tail: Duration,
}

/// A crash or a failover, and when the server was back.
#[derive(Debug, Clone)]
pub struct Event {
    /// `crash` or `failover`.
    pub kind: &'static str,
    /// When the fault was injected, since the load started.
    pub at: Duration,
    /// When the server accepted connections again (restart or promotion done).
    pub back_at: Duration,
}

/// Everything the fault thread did.
#[derive(Debug, Default)]
pub struct Faults {
    pub events: Vec<Event>,
    pub terminated: u64,
    /// Terminated while running a statement (the transfer in flight: possibly committed).
    pub terminated_active: u64,
    /// Terminated while the commit waited for the synchronous standby: committed locally, not
    /// acknowledged (PostgreSQL warns about exactly this).
    pub terminated_sync_wait: u64,
    pub pauses: u64,
    /// Paused backends that had written (held an xid, so row locks).
    pub pauses_holding_locks: u64,
    /// Most sessions seen waiting for a paused backend's locks.
    pub pause_waiters_max: i64,
    /// The server's deadlock counter summed over every server lifetime.
    pub deadlocks_counted: i64,
    /// Faults that could not be injected, with why.
    pub errors: Vec<String>,
}

/// Live count of injected faults, for the progress bar.
#[derive(Default)]
pub struct LiveFaults {
    pub injected: AtomicU64,
}

/// The servers the faults act on.
pub struct Servers<'a> {
    /// The (first) primary, when the tool started it.
    pub primary: Option<&'a EmbeddedServer>,
    /// The synchronous standby (`--failover`).
    pub standby: Option<&'a EmbeddedServer>,
    /// Admin connection string (`postgres` database; multi-host with a standby).
    pub admin_url: String,
    /// The workload's database.
    pub dbname: String,
}

struct Admin<'a> {
    servers: &'a Servers<'a>,
    client: Option<Client>,
    /// The deadlock counter when this server lifetime's counting began.
    baseline: Option<i64>,
}

impl Admin<'_> {
    fn client(&mut self) -> Result<&mut Client, String> {
        if !matches!(&self.client, Some(c) if !c.is_closed()) {
            let client = Client::connect(&self.servers.admin_url, NoTls).map_err(|e| error_chain(&e))?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("just connected"))
    }

    fn query<T>(&mut self, f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>) -> Result<T, String> {
        let client = self.client()?;
        let result = f(client).map_err(|e| error_chain(&e));
        if result.is_err() {
            self.client = None;
        }
        result
    }

    fn deadlocks(&mut self) -> Result<i64, String> {
        let db = self.servers.dbname.clone();
        self.query(|c| {
            c.batch_execute("SELECT pg_stat_clear_snapshot()")?;
            let row = c.query_opt("SELECT deadlocks FROM pg_stat_database WHERE datname = $1", &[&db])?;
            Ok(row.map_or(0, |r| r.get(0)))
        })
    }

    /// Adds this server lifetime's deadlocks to `faults` and closes the books on it.
    fn count_deadlocks(&mut self, faults: &mut Faults) {
        match (self.baseline.take(), self.deadlocks()) {
            (Some(base), Ok(now)) => faults.deadlocks_counted += (now - base).max(0),
            (_, Err(e)) => faults.errors.push(format!("read the deadlock counter: {e}")),
            (None, Ok(_)) => {}
        }
    }

    fn client_backends(&mut self) -> Result<Vec<(i32, String, String, bool)>, String> {
        let db = self.servers.dbname.clone();
        self.query(|c| {
            let rows = c.query(
                "SELECT pid, coalesce(state, ''), coalesce(wait_event, ''), backend_xid IS NOT NULL
                   FROM pg_stat_activity
                  WHERE datname = $1 AND application_name = $2 AND pid <> pg_backend_pid()",
                &[&db, &APPLICATION],
            )?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
        })
    }
}

/// Runs the faults of `plan` until `deadline` (or `stop`), then counts the deadlocks.
pub fn run(
    plan: &Plan,
    servers: &Servers<'_>,
    seed: u64,
    start: Instant,
    deadline: Instant,
    stop: &AtomicBool,
    live: &LiveFaults,
) -> Faults {
    let mut faults = Faults::default();
    let mut admin = Admin { servers, client: None, baseline: None };
    match admin.deadlocks() {
        Ok(d) => admin.baseline = Some(d),
        Err(e) => faults.errors.push(format!("read the deadlock counter: {e}")),
    }
    let mut rng = Rng::new(seed, 999);
    let mut current = servers.primary;
    let mut next_terminate = plan.terminate_every.map(|d| start + d);
    let mut next_crash = plan.crash_every.map(|d| start + d);
    let mut next_pause = plan.pause_every.map(|d| start + d);
    let mut failover = plan.failover_at.map(|d| start + d);
    let quiet_from = deadline.checked_sub(plan.quiet_tail).unwrap_or(start);
    loop {
        let due = [next_terminate, next_crash, next_pause, failover].into_iter().flatten().min();
        let Some(due) = due else { break };
        while Instant::now() < due.min(deadline) && !stop.load(Ordering::Relaxed) {
            thread::sleep((due - Instant::now().min(due)).min(Duration::from_millis(20)));
        }
        let now = Instant::now();
        if now >= deadline || stop.load(Ordering::Relaxed) {
            break;
        }
        if failover.is_some_and(|t| t <= now) {
            failover = None;
            if now < quiet_from {
                if let (Some(primary), Some(standby)) = (servers.primary, servers.standby) {
                    admin.count_deadlocks(&mut faults);
                    admin.client = None;
                    let at = start.elapsed();
                    let result = primary.crash().and_then(|_| standby.promote());
                    match result {
                        Ok(()) => {
                            faults.events.push(Event { kind: "failover", at, back_at: start.elapsed() });
                            // No crash on top of the failover before its recovery could show.
                            next_crash = next_crash.map(|t| t.max(Instant::now() + plan.quiet_tail));
                            current = Some(standby);
                            admin.baseline = admin.deadlocks().ok();
                        }
                        Err(e) => faults.errors.push(format!("failover: {}", error_chain(&e))),
                    }
                    live.injected.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else if next_crash.is_some_and(|t| t <= now) {
            next_crash = plan.crash_every.map(|d| now + d);
            if let Some(server) = current.filter(|_| now < quiet_from) {
                admin.count_deadlocks(&mut faults);
                admin.client = None;
                let at = start.elapsed();
                match server.crash().and_then(|_| server.restart()) {
                    Ok(()) => {
                        faults.events.push(Event { kind: "crash", at, back_at: start.elapsed() });
                        // Crash recovery discards the statistics: the counter starts again.
                        admin.baseline = admin.deadlocks().ok();
                    }
                    Err(e) => faults.errors.push(format!("crash and restart: {}", error_chain(&e))),
                }
                live.injected.fetch_add(1, Ordering::Relaxed);
            }
        } else if next_terminate.is_some_and(|t| t <= now) {
            next_terminate = plan.terminate_every.map(|d| now + d);
            terminate(&mut admin, &mut rng, &mut faults, live);
        } else if next_pause.is_some_and(|t| t <= now) {
            next_pause = plan.pause_every.map(|d| now + d);
            if let Some(server) = current {
                pause(server, &mut admin, plan.pause_for, &mut faults, live);
            }
        }
    }
    admin.count_deadlocks(&mut faults);
    faults
}

/// Terminates one client backend: preferably one waiting for the synchronous standby, else
/// (three times in four) one running a statement, else any.
fn terminate(admin: &mut Admin<'_>, rng: &mut Rng, faults: &mut Faults, live: &LiveFaults) {
    let backends = match admin.client_backends() {
        Ok(b) if !b.is_empty() => b,
        Ok(_) => return,
        Err(_) => return, // the server is down or restarting: nothing to terminate
    };
    let sync_wait: Vec<_> = backends.iter().filter(|b| b.2 == "SyncRep").collect();
    let active: Vec<_> = backends.iter().filter(|b| b.1 == "active").collect();
    let target = if !sync_wait.is_empty() {
        sync_wait[rng.below(sync_wait.len() as u64) as usize]
    } else if !active.is_empty() && rng.below(4) != 0 {
        active[rng.below(active.len() as u64) as usize]
    } else {
        &backends[rng.below(backends.len() as u64) as usize]
    };
    let pid = target.0;
    match admin.query(|c| c.query_one("SELECT pg_terminate_backend($1)", &[&pid]).map(|r| r.get::<_, bool>(0))) {
        Ok(true) => {
            faults.terminated += 1;
            faults.terminated_active += u64::from(target.1 == "active");
            faults.terminated_sync_wait += u64::from(target.2 == "SyncRep");
            live.injected.fetch_add(1, Ordering::Relaxed);
        }
        Ok(false) => {} // it had exited already
        Err(e) => faults.errors.push(format!("terminate: {e}")),
    }
}

/// Pauses a backend that is running a transfer and has written (so holds its row locks) with
/// SIGSTOP for `pause_for`, then resumes it with SIGCONT. The resume is sent by its own timer
/// thread, so nothing this thread waits for can keep the backend stopped.
fn pause(server: &EmbeddedServer, admin: &mut Admin<'_>, pause_for: Duration, faults: &mut Faults, live: &LiveFaults) {
    let mut target = None;
    for _ in 0..50 {
        match admin.client_backends() {
            Ok(backends) => {
                if let Some(b) = backends.iter().find(|b| b.1 == "active" && b.3) {
                    target = Some((b.0, true));
                    break;
                }
                if target.is_none() {
                    target = backends.first().map(|b| (b.0, false));
                }
            }
            Err(_) => return,
        }
        thread::sleep(Duration::from_millis(2));
    }
    let Some((pid, holds_locks)) = target else { return };
    if let Err(e) = server.signal(pid, Signal::Stop) {
        let e = error_chain(&e);
        // The backend exited between its selection and the signal: nothing was paused.
        if !e.contains("No such process") {
            faults.errors.push(format!("pause: SIGSTOP {pid}: {e}"));
        }
        return;
    }
    thread::scope(|scope| {
        let resume = scope.spawn(|| {
            thread::sleep(pause_for);
            server.signal(pid, Signal::Cont)
        });
        thread::sleep(pause_for / 2);
        let waiters = admin.query(|c| {
            c.query_one("SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", &[&pid])
                .map(|r| r.get::<_, i64>(0))
        });
        faults.pause_waiters_max = faults.pause_waiters_max.max(waiters.unwrap_or(0));
        match resume.join() {
            Ok(Ok(())) => {}
            // Stopped as it was exiting (a zombie takes the signal): gone by the resume.
            Ok(Err(e)) if error_chain(&e).contains("No such process") => {}
            Ok(Err(e)) => faults.errors.push(format!("pause: SIGCONT {pid}: {}", error_chain(&e))),
            Err(_) => faults.errors.push("pause: the resume thread panicked".into()),
        }
    });
    faults.pauses += 1;
    faults.pauses_holding_locks += u64::from(holds_locks);
    live.injected.fetch_add(1, Ordering::Relaxed);
}

/// Occurrences of `deadlock detected` in a server's log (survives crashes, unlike the counter).
pub fn deadlocks_in_log(server: &EmbeddedServer) -> usize {
    std::fs::read_to_string(server.log_path()).map(|log| log.matches("deadlock detected").count()).unwrap_or(0)
}
