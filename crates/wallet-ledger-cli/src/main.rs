//! `wallet-ledger`: the command-line face of the library. It parses arguments into typed values,
//! calls the library, prints, and maps errors to exit codes; it holds no SQL and no rule.
//!
//! Exit codes: see [`exit::TABLE`] (also printed by `--help` and listed in the README).

mod bench;
mod exit;
mod feed;
mod holds;
mod json;
mod reads;
mod torture;

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use exit::Outcome;
use wallet_ledger::{AccountId, Decimal, EntryId, Ledger, NewAccount, Reversal, Transfer, TransferId};
use wallet_ledger_embedded::embedded::EmbeddedServer;

#[derive(Parser)]
#[command(name = "wallet-ledger", version, about = "Deadlock-free wallet transfers on PostgreSQL")]
#[command(after_help = exit::TABLE)]
struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

/// Where the ledger lives.
#[derive(Args, Clone)]
pub struct Target {
    /// PostgreSQL connection string; without it, a local server under --data-dir is used
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Directory of the local server used when no database URL is given (created on first use)
    #[arg(long, global = true, default_value = ".wallet-ledger")]
    pub data_dir: PathBuf,
    /// PostgreSQL schema holding the ledger's tables and functions
    #[arg(long, env = "WALLET_LEDGER_SCHEMA", global = true, default_value = "wallet_ledger")]
    pub schema: String,
    /// Connect with TLS, trusting the system's roots and this CA file (PEM); the connection
    /// string's sslmode decides whether TLS is required (sslmode=require)
    #[arg(long, env = "PGSSLROOTCERT", global = true)]
    pub ssl_root_cert: Option<PathBuf>,
    /// Connect with TLS, trusting the system's root certificates only
    #[arg(long, global = true, conflicts_with = "ssl_root_cert")]
    pub tls: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending schema migrations (or print them all with --print)
    Migrate {
        /// Print every migration as one SQL script instead of applying it
        #[arg(long)]
        print: bool,
    },
    /// Currencies
    #[command(subcommand)]
    Currency(CurrencyCommand),
    /// Accounts
    #[command(subcommand)]
    Account(AccountCommand),
    /// Move money from one account to another
    Transfer {
        /// Debited account id
        from: i64,
        /// Credited account id
        to: i64,
        /// Amount, e.g. 12.50
        #[arg(value_parser = parse_amount)]
        amount: Decimal,
        /// Idempotency key: repeating the command with it never pays twice
        #[arg(long)]
        key: Option<String>,
        /// Memo stored with the transfer
        #[arg(long)]
        memo: Option<String>,
        /// Move the amount or, when less is available above the floor, all that is (a sweep);
        /// the receipt says what moved
        #[arg(long)]
        up_to_available: bool,
        /// Metadata stored with the transfer: a JSON object, e.g. '{"order_id":1234}'
        #[arg(long, value_parser = parse_metadata)]
        metadata: Option<serde_json::Value>,
        /// Print the receipt as JSON
        #[arg(long)]
        json: bool,
    },
    /// Reverse a transfer (a refund): a new transfer in the opposite direction, in full or in
    /// part; the total reversed never exceeds the original
    Reverse {
        /// The transfer to reverse
        transfer: i64,
        /// How much (default: all that is left to reverse)
        #[arg(long, value_parser = parse_amount)]
        amount: Option<Decimal>,
        /// Idempotency key: repeating the command with it never refunds twice
        #[arg(long)]
        key: Option<String>,
        /// Memo stored with the reversal
        #[arg(long)]
        memo: Option<String>,
        /// Metadata stored with the reversal: a JSON object, e.g. '{"ticket":"T-7"}'
        #[arg(long, value_parser = parse_metadata)]
        metadata: Option<serde_json::Value>,
        /// Print the receipt as JSON
        #[arg(long)]
        json: bool,
    },
    /// Freeze an account: every debit is refused until it is unfrozen; credits go through
    Freeze(AccountArg),
    /// Unfreeze a frozen account
    Unfreeze(AccountArg),
    /// Close an account for good (needs a zero balance and nothing held)
    Close(AccountArg),
    /// Show or change an account's limits: the floor (lowest balance) and the ceiling
    /// (highest balance); a change the current balance already breaks is refused
    Limits {
        /// Account id
        account: i64,
        /// New floor, zero or negative
        #[arg(long, allow_hyphen_values = true, conflicts_with = "unbounded", value_parser = parse_amount)]
        min: Option<Decimal>,
        /// Remove the floor (a system account)
        #[arg(long)]
        unbounded: bool,
        /// New ceiling, zero or positive
        #[arg(long, conflicts_with = "no_max", value_parser = parse_amount)]
        max: Option<Decimal>,
        /// Remove the ceiling
        #[arg(long)]
        no_max: bool,
        /// Print the account as JSON
        #[arg(long)]
        json: bool,
    },
    /// Accounts by filter
    #[command(subcommand)]
    Accounts(reads::AccountsCommand),
    /// Transfers by filter, or one by id or key
    #[command(subcommand)]
    Transfers(reads::TransfersCommand),
    /// An account's statement for a period: opening and closing balance, debits, credits and
    /// its entries (--json, --csv)
    Statement(reads::StatementArgs),
    /// An account's balance, now or at an instant in the past (--at, RFC 3339)
    Balance {
        /// Account id
        account: i64,
        /// The instant, e.g. 2026-12-01T00:00:00Z (default: now)
        #[arg(long, value_parser = reads::parse_time)]
        at: Option<std::time::SystemTime>,
        /// Print the balance as JSON
        #[arg(long)]
        json: bool,
    },
    /// An account's entries, oldest first
    History {
        /// Account id
        account: i64,
        /// Start after this entry id (the last id of the previous page)
        #[arg(long)]
        after: Option<i64>,
        /// Most entries to show
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print the entries as JSON
        #[arg(long)]
        json: bool,
    },
    /// The change feed: every committed transfer, posting, reversal, hold and account change
    /// after a cursor, in feed order, one line each (--json: JSON lines); --follow waits for more
    Changes(feed::ChangesArgs),
    /// The change feed's durable consumers with their position and lag, after the feed's state
    /// (horizon, changes held back, the oldest open transaction)
    Consumers {
        /// Print the feed's state and the consumers as JSON
        #[arg(long)]
        json: bool,
    },
    /// Reserve an amount for a later capture (card authorization)
    Hold(holds::HoldArgs),
    /// Capture a pending hold, in full or in part
    Capture {
        /// Hold id
        hold: i64,
        /// Amount to capture (default: all of it); the rest is released
        #[arg(value_parser = parse_amount)]
        amount: Option<Decimal>,
    },
    /// Release a pending hold without moving money
    Void {
        /// Hold id
        hold: i64,
    },
    /// Holds of an account
    #[command(subcommand)]
    Holds(holds::HoldsCommand),
    /// Release lapsed holds, once or as a long-running set of workers
    Expire(holds::ExpireArgs),
    /// Let a PostgreSQL role use the ledger only through its functions (run as the owner)
    #[command(subcommand)]
    Access(AccessCommand),
    /// Audit the whole ledger; exit code 3 when any invariant is broken
    Verify {
        /// Print the audit as JSON
        #[arg(long)]
        json: bool,
    },
    /// The local server under --data-dir
    #[command(subcommand)]
    Server(ServerCommand),
    /// Throughput under contention, beside pgbench on the same server
    Bench(bench::BenchArgs),
    /// A bank workload under injected faults (killed backends, crashes, failover), then proof
    /// that nothing was lost, created or applied twice; exit code 3 on any violation
    Torture(torture::TortureArgs),
}

/// One account, for the status commands.
#[derive(Args)]
struct AccountArg {
    /// Account id
    account: i64,
    /// Print the account as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum AccessCommand {
    /// Give an existing role the ledger: read everything, call every function, open accounts
    /// and define currencies, run feed consumers; every direct write of money stays refused
    Grant {
        /// The role, e.g. payments_app
        role: String,
    },
    /// Take back everything `access grant` gave the role
    Revoke {
        /// The role
        role: String,
    },
}

#[derive(Subcommand)]
enum CurrencyCommand {
    /// Define a currency and its number of decimal places (idempotent)
    Define {
        /// Code, e.g. USD
        code: String,
        /// Decimal places, e.g. 2
        scale: u32,
    },
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Open an account (balance 0, floor 0 unless told otherwise)
    Open {
        /// Currency code
        #[arg(long)]
        currency: String,
        /// Display name
        #[arg(long)]
        name: Option<String>,
        /// Floor (lowest balance allowed), zero or negative
        #[arg(long, allow_hyphen_values = true, conflicts_with = "unbounded", value_parser = parse_amount)]
        min_balance: Option<Decimal>,
        /// No floor: a system/issuer account
        #[arg(long)]
        unbounded: bool,
        /// Ceiling (highest balance allowed), e.g. a regulatory cap on an e-money wallet
        #[arg(long, value_parser = parse_amount)]
        max_balance: Option<Decimal>,
        /// Your own id for the account (unique), to find it again with `account find`
        #[arg(long)]
        external_id: Option<String>,
        /// Your own data about the account, a JSON object, e.g. '{"user_id":42}'
        #[arg(long, value_parser = parse_metadata)]
        metadata: Option<serde_json::Value>,
    },
    /// Find an account by the external id it was opened with (exit code 1 when none has it)
    Find {
        /// The external id
        #[arg(long)]
        external_id: String,
        /// Print the account as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show an account
    Show {
        /// Account id
        id: i64,
        /// Print the account as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ServerCommand {
    /// Whether the local server is running, and its connection string; never starts it
    /// (exit code 1 when it is not running)
    Status,
    /// Stop the local server
    Stop,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            Outcome::Failure.into()
        }
    }
}

fn chain(e: &anyhow::Error) -> String {
    e.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Migrate { print: true } => {
            let schema = wallet_ledger::schema::SchemaName::new(&cli.target.schema)?;
            print!("{}", wallet_ledger::schema::migration_script_for(&schema));
        }
        Command::Migrate { print: false } => {
            open(&cli.target)?;
            println!("schema at version {}", wallet_ledger::schema::SCHEMA_VERSION);
        }
        Command::Currency(CurrencyCommand::Define { code, scale }) => {
            open(&cli.target)?.define_currency(&code, scale)?;
            println!("currency {code} (scale {scale})");
        }
        Command::Account(AccountCommand::Open {
            currency,
            name,
            min_balance,
            unbounded,
            max_balance,
            external_id,
            metadata,
        }) => {
            let mut new = NewAccount::new(&currency);
            if let Some(name) = name {
                new = new.name(name);
            }
            if let Some(floor) = min_balance {
                new = new.min_balance(floor);
            }
            if unbounded {
                new = new.unbounded();
            }
            if let Some(ceiling) = max_balance {
                new = new.max_balance(ceiling);
            }
            if let Some(external_id) = external_id {
                new = new.external_id(external_id);
            }
            if let Some(metadata) = metadata {
                new = new.metadata(metadata);
            }
            print_account(&open(&cli.target)?.open_account(&new)?);
        }
        Command::Account(AccountCommand::Find { external_id, json }) => {
            reads::find_account(&open(&cli.target)?, &external_id, json)?;
        }
        Command::Accounts(reads::AccountsCommand::List(args)) => reads::list_accounts(&open(&cli.target)?, args)?,
        Command::Transfers(reads::TransfersCommand::List(args)) => reads::list_transfers(&open(&cli.target)?, args)?,
        Command::Transfers(reads::TransfersCommand::Show { id, key, json }) => {
            reads::show_transfer(&open(&cli.target)?, id, key.as_deref(), json)?;
        }
        Command::Statement(args) => reads::statement(&open(&cli.target)?, args)?,
        Command::Balance { account, at, json } => reads::balance(&open(&cli.target)?, account, at, json)?,
        Command::Account(AccountCommand::Show { id, json }) => {
            show_account(&open(&cli.target)?.account(AccountId(id))?, json)?;
        }
        Command::Transfer { from, to, amount, key, memo, up_to_available, metadata, json } => {
            let mut t = Transfer::new(AccountId(from), AccountId(to), amount);
            if let Some(key) = key {
                t = t.idempotency_key(key);
            }
            if let Some(memo) = memo {
                t = t.memo(memo);
            }
            if up_to_available {
                t = t.up_to_available();
            }
            if let Some(metadata) = metadata {
                t = t.metadata(metadata);
            }
            print_receipt("transfer", &open(&cli.target)?.transfer(&t)?, json)?;
        }
        Command::Reverse { transfer, amount, key, memo, metadata, json } => {
            let mut r = Reversal::of(TransferId(transfer));
            if let Some(amount) = amount {
                r = r.amount(amount);
            }
            if let Some(key) = key {
                r = r.idempotency_key(key);
            }
            if let Some(memo) = memo {
                r = r.memo(memo);
            }
            if let Some(metadata) = metadata {
                r = r.metadata(metadata);
            }
            print_receipt(&format!("reversal of transfer {transfer}:"), &open(&cli.target)?.reverse(&r)?, json)?;
        }
        Command::Freeze(AccountArg { account, json }) => {
            show_account(&open(&cli.target)?.freeze(AccountId(account))?, json)?;
        }
        Command::Unfreeze(AccountArg { account, json }) => {
            show_account(&open(&cli.target)?.unfreeze(AccountId(account))?, json)?;
        }
        Command::Close(AccountArg { account, json }) => {
            show_account(&open(&cli.target)?.close(AccountId(account))?, json)?;
        }
        Command::Limits { account, min, unbounded, max, no_max, json } => {
            let ledger = open(&cli.target)?;
            let id = AccountId(account);
            let mut shown = None;
            if min.is_some() || unbounded {
                shown = Some(ledger.set_min_balance(id, min)?);
            }
            if max.is_some() || no_max {
                shown = Some(ledger.set_max_balance(id, max)?);
            }
            let shown = match shown {
                Some(account) => account,
                None => ledger.account(id)?,
            };
            show_account(&shown, json)?;
        }
        Command::History { account, after, limit, json } => {
            let entries = open(&cli.target)?.history(AccountId(account), after.map(EntryId), limit)?;
            if json {
                let entries = entries.iter().map(json::EntryJson::from).collect();
                json::print(&json::HistoryJson { account, entries })?;
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:>10} {:>10} {:>12} {:>16} {:>16}  memo",
                "entry", "transfer", "counterparty", "amount", "balance"
            );
            for e in &entries {
                let counterparty = e.counterparty.map_or("-".to_string(), |c| c.to_string());
                let memo = e.memo.as_deref().unwrap_or("");
                println!(
                    "{:>10} {:>10} {:>12} {:>16} {:>16}  {memo}",
                    e.id, e.transfer_id, counterparty, e.amount, e.balance_after
                );
            }
        }
        Command::Changes(args) => feed::changes(&open(&cli.target)?, args)?,
        Command::Consumers { json } => feed::consumers(&open(&cli.target)?, json)?,
        Command::Hold(args) => holds::hold(&open(&cli.target)?, args)?,
        Command::Capture { hold, amount } => {
            let r = open(&cli.target)?.capture(wallet_ledger::HoldId(hold), amount)?;
            println!("hold {hold} captured: transfer {} of {} from {} to {}", r.transfer_id, r.amount, r.from, r.to);
            println!("  balance {}: {}", r.from, r.from_balance);
            println!("  balance {}: {}", r.to, r.to_balance);
        }
        Command::Void { hold } => {
            open(&cli.target)?.void(wallet_ledger::HoldId(hold))?;
            println!("hold {hold} voided");
        }
        Command::Holds(command) => holds::list(&open(&cli.target)?, command)?,
        Command::Expire(args) => holds::expire(&open(&cli.target)?, args)?,
        Command::Access(AccessCommand::Grant { role }) => {
            open(&cli.target)?.grant_access(&role)?;
            println!("granted: {role} may use the ledger through its functions only");
        }
        Command::Access(AccessCommand::Revoke { role }) => {
            open(&cli.target)?.revoke_access(&role)?;
            println!("revoked: {role} has no access to the ledger");
        }
        Command::Verify { json } => return verify(&open(&cli.target)?, json),
        Command::Server(command) => return server(&cli.target, command),
        Command::Bench(args) => return bench::run(args, &cli.target),
        Command::Torture(args) => return torture::run(args, &cli.target),
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(ledger: &Ledger, json: bool) -> Result<ExitCode> {
    let audit = ledger.verify()?;
    if json {
        json::print(&json::AuditJson::from(&audit))?;
        return Ok(Outcome::checked(audit.is_clean()).into());
    }
    println!("checked {} accounts, {} transfers, {} entries", audit.accounts, audit.transfers, audit.entries);
    if audit.is_clean() {
        println!("clean: money is conserved, every balance matches its entries, no floor is broken");
        return Ok(ExitCode::SUCCESS);
    }
    for v in &audit.violations {
        println!("violation: {v}");
    }
    let more = if audit.truncated { " (list truncated)" } else { "" };
    println!("NOT CLEAN: {} violations{more}", audit.violations.len());
    Ok(Outcome::Violation.into())
}

fn server(target: &Target, command: ServerCommand) -> Result<ExitCode> {
    let dir = &target.data_dir;
    match command {
        ServerCommand::Status => return server_status(dir),
        ServerCommand::Stop => {
            if dir.join("data").join("PG_VERSION").exists() {
                EmbeddedServer::open(dir)?.stop()?;
                println!("stopped");
            } else {
                println!("no local server in {}", dir.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reports whether the local server in `dir` runs; creates and starts nothing. Exit code 1
/// when it does not run.
fn server_status(dir: &std::path::Path) -> Result<ExitCode> {
    let existing = EmbeddedServer::existing(dir).with_context(|| format!("local server in {}", dir.display()))?;
    match existing {
        Some(server) if server.is_running() => {
            println!("running in {}: {}", server.dir().display(), server.url("wallet_ledger"));
            Ok(ExitCode::SUCCESS)
        }
        Some(server) => {
            println!("not running: the local server in {} is stopped", server.dir().display());
            Ok(Outcome::Failure.into())
        }
        None => {
            println!("not running: no local server in {}", dir.display());
            Ok(Outcome::Failure.into())
        }
    }
}

/// The ledger at --database-url, or on the persistent local server (started on demand).
fn open(target: &Target) -> Result<Ledger> {
    let url = match &target.database_url {
        Some(url) => url.clone(),
        None => EmbeddedServer::open(&target.data_dir)
            .with_context(|| format!("local server in {}", target.data_dir.display()))?
            .create_database("wallet_ledger")?,
    };
    let mut builder = Ledger::builder(&url).schema(&target.schema);
    if target.tls || target.ssl_root_cert.is_some() {
        builder = builder.tls(wallet_ledger::tls::connector(target.ssl_root_cert.as_deref())?);
    }
    Ok(builder.build()?)
}

/// clap's value parser for amounts: a refused amount is an argument error (exit code 2).
pub(crate) fn parse_amount(text: &str) -> Result<Decimal, String> {
    Decimal::from_str(text).map_err(|e| format!("{text:?} is not a decimal amount like 12.50 ({e})"))
}

fn print_account(a: &wallet_ledger::Account) {
    let floor = a.min_balance.map_or("unbounded".to_string(), |f| f.to_string());
    let ceiling = a.max_balance.map_or("none".to_string(), |c| c.to_string());
    let name = a.name.as_deref().unwrap_or("");
    let external = a.external_id.as_deref().map_or(String::new(), |id| format!(" (external id {id})"));
    println!("account {} {name}{external}", a.id);
    println!(
        "  {}  currency {}  balance {}  held {}  floor {floor}  ceiling {ceiling}  version {}",
        a.status, a.currency, a.balance, a.held, a.version
    );
}

/// Parses `--metadata`: a JSON object.
pub(crate) fn parse_metadata(text: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) if value.is_object() => Ok(value),
        Ok(_) => Err(format!("{text:?} is not a JSON object")),
        Err(e) => Err(format!("{text:?} is not JSON ({e})")),
    }
}

/// An account as text, or as JSON with `json`.
pub(crate) fn show_account(a: &wallet_ledger::Account, json: bool) -> Result<()> {
    if json {
        return json::print(&json::AccountJson::from(a));
    }
    print_account(a);
    Ok(())
}

/// A receipt of a transfer or reversal (`what` starts the line), as text or JSON.
fn print_receipt(what: &str, r: &wallet_ledger::Receipt, json: bool) -> Result<()> {
    if json {
        return json::print(&json::ReceiptJson::from(r));
    }
    let replay = if r.replayed { " (replayed: already applied earlier with this key)" } else { "" };
    println!("{what} {}: {} from {} to {}{replay}", r.transfer_id, r.amount, r.from, r.to);
    println!("  balance {}: {}", r.from, r.from_balance);
    println!("  balance {}: {}", r.to, r.to_balance);
    Ok(())
}
