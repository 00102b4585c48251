//! A throwaway embedded server disappears however its process ends: here the whole process
//! group is killed with SIGKILL (what a terminal's Ctrl-C does with SIGINT, harder), so nothing
//! in the process can clean up; the watchdog, in its own process group, must.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

fn server_dirs_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("wallet-ledger-{pid}-");
    std::fs::read_dir(std::env::temp_dir())
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    done()
}

#[test]
fn killing_the_whole_process_group_still_removes_the_server() {
    let out = std::env::temp_dir().join(format!("wl-cleanup-report-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_wallet-ledger"))
        .args(["bench", "--quick", "--out"])
        .arg(&out)
        .env_remove("DATABASE_URL")
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wallet-ledger bench");
    let pid = child.id();
    let started = wait_until(Duration::from_secs(60), || !server_dirs_of(pid).is_empty());
    assert!(started, "the bench never started its embedded server");
    let dirs = server_dirs_of(pid);
    thread::sleep(Duration::from_millis(500)); // let the server finish starting
    let status = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status().expect("run kill");
    assert!(status.success(), "kill of the process group failed");
    let _ = child.wait();
    let gone = wait_until(Duration::from_secs(20), || dirs.iter().all(|d| !d.exists()));
    let _ = std::fs::remove_dir_all(&out);
    assert!(gone, "the embedded server's directory survived its process: {dirs:?}");
}
