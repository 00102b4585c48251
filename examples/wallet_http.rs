//! A small wallet HTTP service on the async door ([`wallet_ledger::aio::Ledger`]) with axum:
//! open accounts, move money with an `Idempotency-Key` header, read balances and history. It
//! shows the two things an HTTP front of a ledger must get right: a client's retry is answered
//! from the first request instead of paying twice, and every [`LedgerError`] becomes the HTTP
//! status a client can act on (refusals are 4xx with the reason, temporary failures 503 with
//! what to do, defects 500 without internals).
//!
//! ```sh
//! cargo run --example wallet_http --features aio,serde                    # 127.0.0.1:3000
//! cargo run --example wallet_http --features aio,serde -- --listen 127.0.0.1:8080
//! ```
//!
//! The ledger is `DATABASE_URL`'s database, or a new database on a throwaway local PostgreSQL
//! when it is unset. The address is `--listen ADDR`, else `LISTEN`, else `127.0.0.1:3000`.
//! The currencies of [`CURRENCIES`] are defined at start. Amounts are decimal strings both ways
//! (a JSON number is refused: a float cannot carry a decimal amount exactly).
//!
//! | Request | Answer |
//! |---|---|
//! | `POST /accounts` `{"currency": "EUR", "min_balance"?: "-50.00", "unbounded"?: true, "name"?: "alice"}` | 201, the account |
//! | `POST /transfers` (header `Idempotency-Key`) `{"from": 1, "to": 2, "amount": "12.50", "memo"?: "..."}` | 201, the receipt; 200 with `Idempotent-Replayed: true` when the key already paid this transfer |
//! | `GET /accounts/{id}/balance` | 200, `{"account": 1, "balance": "12.50"}` |
//! | `GET /accounts/{id}/history?after=&limit=` | 200, `{"entries": [...], "next": 17}`, oldest first; `next` (the last entry's id, `null` on a short page) is the `after` of the next page |
//!
//! Errors are `{"error": kind, "message": text}`, `kind` being [`LedgerError::kind`] for the
//! ledger's: 400 for a malformed request (no `Idempotency-Key`, JSON that does not parse, a bad
//! path or query, [`LedgerError::InvalidInput`]), 404 for an unknown account, 409 for a key
//! already used for another transfer, 422 for a body of the wrong shape or a refusal
//! (insufficient funds, currency mismatch, same account, invalid amount, ...), 503 with
//! `Retry-After` for a temporary failure (repeat the request; with the same key when the outcome
//! is unknown) and 500 for anything else, its details in the log only.
//!
//! ```sh
//! curl -s localhost:3000/accounts -H 'content-type: application/json' -d '{"currency": "EUR", "unbounded": true}'
//! curl -s localhost:3000/accounts -H 'content-type: application/json' -d '{"currency": "EUR"}'
//! curl -si localhost:3000/transfers -H 'content-type: application/json' -H 'idempotency-key: top-up-1' \
//!      -d '{"from": 1, "to": 2, "amount": "25.00"}'
//! curl -s localhost:3000/accounts/2/history
//! ```
//!
//! `tests/wallet_http.rs` serves [`router`] on a loopback port and talks HTTP/1.1 to it.

use std::net::SocketAddr;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use wallet_ledger::{aio, AccountId, Decimal, EntryId, LedgerError, NewAccount, Transfer};

/// The currencies the service defines at start: code and decimal places.
pub const CURRENCIES: [(&str, u32); 2] = [("EUR", 2), ("USD", 2)];

/// The request header that makes a transfer safe to retry (required).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The response header, `true`, on a transfer answered from an earlier request with its key.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// History page size when `limit` is not given.
pub const HISTORY_LIMIT_DEFAULT: u32 = 100;

/// Connects to the ledger at `url` (migrations run on connect) and defines [`CURRENCIES`].
///
/// # Errors
/// As [`aio::Ledger::connect`] and [`aio::Ledger::define_currency`].
pub async fn open_ledger(url: &str) -> Result<aio::Ledger, LedgerError> {
    let ledger = aio::Ledger::connect(url).await?;
    for (code, scale) in CURRENCIES {
        ledger.define_currency(code, scale).await?;
    }
    Ok(ledger)
}

/// The service's routes on `ledger`.
pub fn router(ledger: aio::Ledger) -> Router {
    Router::new()
        .route("/accounts", post(open_account))
        .route("/transfers", post(transfer))
        .route("/accounts/{id}/balance", get(balance))
        .route("/accounts/{id}/history", get(history))
        .with_state(ledger)
}

/// The body of `POST /accounts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAccount {
    pub currency: String,
    /// The floor; 0 when absent.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub min_balance: Option<Decimal>,
    /// No floor at all: a system account money enters through. Not with `min_balance`.
    #[serde(default)]
    pub unbounded: bool,
    #[serde(default)]
    pub name: Option<String>,
}

/// The body of `POST /transfers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    pub from: AccountId,
    pub to: AccountId,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    #[serde(default)]
    pub memo: Option<String>,
}

/// The query of `GET /accounts/{id}/history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub after: Option<EntryId>,
    pub limit: Option<u32>,
}

async fn open_account(
    State(ledger): State<aio::Ledger>,
    body: Result<Json<OpenAccount>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    let mut new = NewAccount::new(&request.currency);
    match (request.min_balance, request.unbounded) {
        (Some(_), true) => {
            return Err(ApiError::bad_request("invalid_input", "min_balance and unbounded exclude each other"))
        }
        (Some(floor), false) => new = new.min_balance(floor),
        (None, true) => new = new.unbounded(),
        (None, false) => {}
    }
    if let Some(name) = request.name {
        new = new.name(name);
    }
    let account = ledger.open_account(&new).await?;
    Ok((StatusCode::CREATED, Json(account)).into_response())
}

async fn transfer(
    State(ledger): State<aio::Ledger>,
    headers: HeaderMap,
    body: Result<Json<TransferRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    // The key is read before the body: a request without one is refused whatever it carries.
    let key = match headers.get(IDEMPOTENCY_KEY).map(HeaderValue::to_str) {
        None => return Err(ApiError::bad_request("missing_idempotency_key", "the Idempotency-Key header is required")),
        Some(Ok(key)) if !key.trim().is_empty() => key.to_string(),
        Some(_) => {
            return Err(ApiError::bad_request("invalid_input", "Idempotency-Key must be non-empty visible ASCII"))
        }
    };
    let Json(request) = body?;
    let mut transfer = Transfer::new(request.from, request.to, request.amount).idempotency_key(key);
    if let Some(memo) = request.memo {
        transfer = transfer.memo(memo);
    }
    let receipt = ledger.transfer(&transfer).await?;
    if receipt.replayed {
        let replayed = [(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"))];
        Ok((StatusCode::OK, replayed, Json(receipt)).into_response())
    } else {
        Ok((StatusCode::CREATED, Json(receipt)).into_response())
    }
}

async fn balance(
    State(ledger): State<aio::Ledger>,
    id: Result<Path<AccountId>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let balance = ledger.balance(id).await?;
    Ok(Json(json!({ "account": id, "balance": balance })).into_response())
}

async fn history(
    State(ledger): State<aio::Ledger>,
    id: Result<Path<AccountId>, PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (Path(id), Query(query)) = (id?, query?);
    let limit = query.limit.unwrap_or(HISTORY_LIMIT_DEFAULT);
    let entries = ledger.history(id, query.after, limit).await?;
    let next = if entries.len() == limit as usize { entries.last().map(|entry| entry.id) } else { None };
    Ok(Json(json!({ "entries": entries, "next": next })).into_response())
}

/// An error answer: `status` with the body `{"error": kind, "message": message}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    fn bad_request(kind: &'static str, message: &str) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, kind, message: message.to_string() }
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> ApiError {
        // A combined batch that failed as a whole failed for its cause: answer as the cause.
        let mut cause = &error;
        while let LedgerError::BatchFailed { source } = cause {
            cause = source;
        }
        let (status, message) = match cause {
            LedgerError::InvalidInput { .. } => (StatusCode::BAD_REQUEST, cause.to_string()),
            LedgerError::AccountNotFound { .. } | LedgerError::TransferNotFound { .. } => {
                (StatusCode::NOT_FOUND, cause.to_string())
            }
            LedgerError::IdempotencyConflict { .. }
            | LedgerError::CurrencyConflict { .. }
            | LedgerError::ExternalIdTaken { .. } => (StatusCode::CONFLICT, cause.to_string()),
            LedgerError::InsufficientFunds { .. }
            | LedgerError::CurrencyMismatch { .. }
            | LedgerError::SameAccount { .. }
            | LedgerError::InvalidAmount { .. }
            | LedgerError::UnknownCurrency { .. }
            | LedgerError::AccountFrozen { .. }
            | LedgerError::AccountClosed { .. }
            | LedgerError::BalanceLimitExceeded { .. } => (StatusCode::UNPROCESSABLE_ENTITY, cause.to_string()),
            // The transfer may or may not have committed: only its key can tell.
            LedgerError::OutcomeUnknown { .. } | LedgerError::BatchOutcomeUnknown { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the outcome is unknown: repeat the request with the same Idempotency-Key, which either \
                 answers from the committed transfer or applies it once"
                    .to_string(),
            ),
            // Lock waits refused by policy, pool timeouts, lost connections, serialization
            // failures: nothing was applied, and the same request may succeed.
            e if e.is_retryable() => {
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable: repeat the request".to_string())
            }
            // A defect or a misconfiguration. The details go to the log only; none of them
            // holds the connection string, but they are not the client's business.
            e => {
                eprintln!("wallet_http: internal error ({}): {}", e.kind(), error_chain(e));
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".to_string())
            }
        };
        ApiError { status, kind: cause.kind(), message }
    }
}

/// `e` and its causes, joined with ": ".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// A malformed body keeps axum's status (400 bad JSON, 415 no JSON content type, 422 wrong
/// fields) and its explanation.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        ApiError { status: rejection.status(), kind: "invalid_request", message: rejection.body_text() }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError { status: rejection.status(), kind: "invalid_request", message: rejection.body_text() }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError { status: rejection.status(), kind: "invalid_request", message: rejection.body_text() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.kind, "message": self.message }));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            (self.status, [(header::RETRY_AFTER, HeaderValue::from_static("1"))], body).into_response()
        } else {
            (self.status, body).into_response()
        }
    }
}

/// `--listen ADDR`, else `LISTEN`, else 127.0.0.1:3000.
#[allow(dead_code)] // as `main`
fn listen_address() -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut listen = std::env::var("LISTEN").ok().filter(|value| !value.is_empty());
    while let Some(arg) = args.next() {
        match (arg.as_str(), arg.strip_prefix("--listen=")) {
            (_, Some(value)) => listen = Some(value.to_string()),
            ("--listen", None) => listen = Some(args.next().ok_or("--listen needs an address")?),
            _ => return Err(format!("unknown argument {arg:?} (usage: wallet_http [--listen ADDR])").into()),
        }
    }
    let listen = listen.as_deref().unwrap_or("127.0.0.1:3000");
    Ok(listen.parse().map_err(|e| format!("listen address {listen:?}: {e}"))?)
}

#[allow(dead_code)] // a module of tests/wallet_http.rs too, where `main` is unused
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = listen_address()?;
    // Resolved before the runtime starts: the embedded server's setup is synchronous.
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => wallet_ledger_embedded::fresh_database("wallet_http")?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let ledger = open_ledger(&url).await?;
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!("wallet_http: listening on http://{}", listener.local_addr()?);
        axum::serve(listener, router(ledger)).await?;
        Ok(())
    })
}
