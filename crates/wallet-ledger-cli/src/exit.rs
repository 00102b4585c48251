//! The tool's exit codes, one place: what a script may rely on.

use std::process::ExitCode;

/// The help text's exit code table (also in the README).
pub const TABLE: &str = "\
Exit codes:
  0  success
  1  the operation was refused or failed (one line on stderr), or `server status` found no
     running server
  2  bad arguments (unknown command or flag, an amount that is not a decimal, an id that is not
     an integer)
  3  an invariant of the ledger is broken: `verify` found violations, a `bench` run of the
     ledger's own modes deadlocked or left an unclean audit, or a `torture` check failed";

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Success,
    /// Exit 1: refused, failed, or not there.
    Failure,
    /// Exit 3: the ledger broke an invariant.
    Violation,
}

impl Outcome {
    /// The process exit code (2, bad arguments, is clap's own).
    pub fn code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::Failure => 1,
            Outcome::Violation => 3,
        }
    }

    /// `Success` when the checks passed, otherwise `Violation`.
    pub fn checked(passed: bool) -> Outcome {
        if passed {
            Outcome::Success
        } else {
            Outcome::Violation
        }
    }
}

impl From<Outcome> for ExitCode {
    fn from(outcome: Outcome) -> ExitCode {
        ExitCode::from(outcome.code())
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome;

    #[test]
    fn codes() {
        assert_eq!(Outcome::Success.code(), 0);
        assert_eq!(Outcome::Failure.code(), 1);
        assert_eq!(Outcome::Violation.code(), 3);
        assert_eq!(Outcome::checked(true), Outcome::Success);
        assert_eq!(Outcome::checked(false), Outcome::Violation);
    }
}
