//! Hostile input on the command line: memos with invalid UTF-8, hostile idempotency keys,
//! amounts of 30 digits or 29 decimal places, negative zero, scientific notation. Each value is
//! stored exactly or refused with an error line and an exit code (1, or 2 for arguments clap
//! refuses); nothing panics; a password in a connection string is never echoed.

#[macro_use]
#[path = "../../../tests/common/mod.rs"]
mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;
use std::str::FromStr;

use common::{funded, snapshot};
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

/// Strings a caller could send: empty, NUL bytes, SQL, quotes, multi-byte characters, and
/// lengths around every limit.
fn hostile_text() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("\0".to_string()),
        Just("'; DROP TABLE wallet_ledger.accounts; --".to_string()),
        Just("\\x00\\'\"$1 %s {}".to_string()),
        Just("~".to_string()),
        Just("é€😀\u{202e}\u{feff}".to_string()),
        "[a-z]{1,8}",
        any::<String>(),
    ];
    let composed = prop::collection::vec(pieces, 0..6).prop_map(|v| v.concat());
    let long = (0usize..3, prop::sample::select(vec![255usize, 256, 257, 1023, 1024, 1025, 5000]))
        .prop_map(|(c, n)| ["a", "é", "\0"][c].repeat(n).chars().take(n).collect::<String>());
    prop_oneof![3 => composed, 1 => long]
}

fn cli(args: &[&OsStr]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wallet-ledger")).args(args).output().expect("the binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// The command line with hostile memos, keys (invalid UTF-8 among them) and amounts: exit 0
    /// with the value stored exactly, 1 with an error line, or 2 for arguments clap refuses;
    /// never a panic.
    #[test]
    fn cli_transfer(memo in prop::collection::vec(any::<u8>(), 0..40), key in hostile_text(),
                    amount in prop_oneof![
                        Just("123456789012345678901234567890".to_string()),
                        Just("0.00000000000000000000000000001".to_string()),
                        Just("-0".to_string()), Just("-0.00".to_string()), Just("1e5".to_string()),
                        Just("NaN".to_string()), Just("1.00".to_string()), "[0-9]{1,31}(\\.[0-9]{1,29})?",
                    ]) {
        // A NUL byte cannot reach a process through argv (the OS ends each argument at one).
        let memo: Vec<u8> = memo.into_iter().filter(|&b| b != 0).collect();
        let key = key.replace('\0', "");
        let (l, url, _, w) = funded("hostile_cli", 2, dec!(1000.00)).expect("ledger");
        let before = snapshot(&l).expect("snapshot");
        let (from, to) = (w[0].0.to_string(), w[1].0.to_string());
        let args: Vec<&OsStr> = vec![
            OsStr::new("--database-url"), OsStr::new(url.as_str()), OsStr::new("transfer"), OsStr::new(&from), OsStr::new(&to),
            OsStr::new(&amount), OsStr::new("--memo"), OsStr::from_bytes(&memo), OsStr::new("--key"), OsStr::new(&key),
        ];
        let (code, stdout, stderr) = cli(&args);
        prop_assert!(!stderr.contains("panicked"), "{}", stderr);
        let memo_text = std::str::from_utf8(&memo).ok();
        match code {
            Some(0) => {
                let memo_text = memo_text.expect("exit 0 only for UTF-8");
                let parsed = Decimal::from_str(&amount).expect("exit 0 only for a decimal");
                let mut conn = l.connection().expect("connection");
                let row = conn.client().query_one(
                    "SELECT memo, amount FROM wallet_ledger.transfers WHERE idempotency_key = $1", &[&key],
                ).expect("the transfer is stored under its key");
                prop_assert_eq!(row.get::<_, Option<String>>(0).unwrap_or_default(), memo_text);
                prop_assert_eq!(row.get::<_, Decimal>(1), parsed);
                prop_assert!(stdout.contains("transfer "), "{}", stdout);
            }
            Some(1) | Some(2) => {
                prop_assert!(stderr.starts_with("error") || stderr.contains("error:"), "{}", stderr);
                prop_assert_eq!(before, snapshot(&l).expect("snapshot"));
            }
            other => prop_assert!(false, "exit {:?}: {}", other, stderr),
        }
    }
}

/// A password in a connection string appears in no line the command line prints, whether the
/// string is malformed or the server unreachable.
#[test]
fn passwords_are_never_echoed() {
    let secret = "Sup3rSecretPw";
    let urls = [
        format!("postgresql://ledger:{secret}@/wallet?host=/nonexistent-dir-for-wl-test"),
        format!("host=/nonexistent-dir-for-wl-test user=ledger password={secret} dbname=wallet"),
        format!("postgresql://ledger:{secret}@[not a host/wallet"),
        format!("host=/nonexistent password='{secret}' bad_option_xyz=1"),
    ];
    // The command line: a malformed string fails at once; an unreachable server after the
    // pool's 30 s checkout timeout, so only one of those.
    for url in [&urls[2], &urls[3], &urls[1]] {
        let args: Vec<&OsStr> = ["--database-url", url.as_str(), "verify"].into_iter().map(OsStr::new).collect();
        let (code, stdout, stderr) = cli(&args);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.starts_with("error:"), "{stderr}");
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "echoed: {stdout} {stderr}");
    }
}
