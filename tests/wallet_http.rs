//! The HTTP example (`examples/wallet_http.rs`) served on a loopback port and spoken to over
//! real HTTP/1.1: each request is written by hand on its own `TcpStream` and its answer parsed
//! from the bytes, so what is checked is what a client on the wire gets. A retried request is
//! the same bytes sent again.

#[path = "../examples/wallet_http.rs"]
mod wallet_http;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{json, Value};
use wallet_ledger::{AccountId, Decimal, LedgerError};
use wallet_ledger_embedded::TestDatabase;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The example's router serving a fresh database on 127.0.0.1, port chosen by the system.
struct Service {
    // Dropped first: the server stops before its database goes.
    _runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    _database: TestDatabase,
}

impl Service {
    fn start(prefix: &str) -> Result<Service, Box<dyn std::error::Error>> {
        let database = TestDatabase::new(prefix)?;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let addr = runtime.block_on(async {
            let ledger = wallet_http::open_ledger(database.url()).await?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            tokio::spawn(async move { axum::serve(listener, wallet_http::router(ledger)).await });
            Ok::<_, Box<dyn std::error::Error>>(addr)
        })?;
        Ok(Service { _runtime: runtime, addr, _database: database })
    }

    /// One HTTP/1.1 request on a new connection (`Connection: close`), its answer read to the end.
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&Value>) -> Answer {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.addr);
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() {
            request.push_str("Content-Type: application/json\r\n");
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        let mut stream = TcpStream::connect(self.addr).expect("connect to the service");
        stream.set_read_timeout(Some(Duration::from_secs(60))).expect("set a read timeout");
        stream.write_all(request.as_bytes()).expect("send the request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read the answer");
        Answer::parse(&raw)
    }

    fn get(&self, path: &str) -> Answer {
        self.send("GET", path, &[], None)
    }

    fn post(&self, path: &str, body: &Value) -> Answer {
        self.send("POST", path, &[], Some(body))
    }

    fn transfer(&self, key: &str, body: &Value) -> Answer {
        self.send("POST", "/transfers", &[("Idempotency-Key", key)], Some(body))
    }

    /// Opens an account and returns its id (`unbounded`: no floor).
    fn open(&self, currency: &str, unbounded: bool) -> AccountId {
        let answer = self.post("/accounts", &json!({ "currency": currency, "unbounded": unbounded }));
        assert_eq!(answer.status, 201, "{answer:?}");
        AccountId(answer.body["id"].as_i64().expect("an account id"))
    }

    fn balance(&self, account: AccountId) -> Decimal {
        let answer = self.get(&format!("/accounts/{account}/balance"));
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body["account"], json!(account.0), "{answer:?}");
        decimal(&answer.body["balance"])
    }

    fn history(&self, account: AccountId) -> Vec<Value> {
        let answer = self.get(&format!("/accounts/{account}/history"));
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.body["entries"].as_array().expect("entries").clone()
    }
}

/// An HTTP answer as it came over the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Names in lower case.
    headers: Vec<(String, String)>,
    body: Value,
}

impl Answer {
    fn parse(raw: &[u8]) -> Answer {
        let text = std::str::from_utf8(raw).expect("a UTF-8 answer");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("a status line");
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
        let status = parts.next().and_then(|code| code.parse().ok()).expect("a status code");
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(':').expect("a header line");
                (name.trim().to_ascii_lowercase(), value.trim().to_string())
            })
            .collect();
        let answer = Answer { status, headers, body: Value::Null };
        let length: usize = answer.header("content-length").and_then(|n| n.parse().ok()).expect("a Content-Length");
        assert_eq!(body.len(), length, "the body is as long as announced");
        let body = if body.is_empty() { Value::Null } else { serde_json::from_str(body).expect("a JSON body") };
        Answer { body, ..answer }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, value)| value.as_str())
    }

    /// Asserts an error answer: `status`, JSON `{"error": kind, "message": ...}`.
    fn assert_error(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.body["error"], kind, "{self:?}");
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{self:?}");
    }
}

/// A decimal string of a JSON body (amounts are never JSON numbers).
fn decimal(value: &Value) -> Decimal {
    value.as_str().unwrap_or_else(|| panic!("{value} is not a decimal string")).parse().expect("a decimal")
}

#[test]
fn transfers_over_http_are_paid_once_and_refusals_move_nothing() -> TestResult {
    let service = Service::start("wallet_http_transfers")?;
    let bank = service.open("EUR", true);
    let alice = service.open("EUR", false);
    let bob = service.open("EUR", false);

    // A top-up: 201 with the receipt, amounts as decimal strings.
    let top_up = json!({ "from": bank.0, "to": alice.0, "amount": "25.00", "memo": "top-up" });
    let first = service.transfer("top-up-1", &top_up);
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(first.header("idempotent-replayed"), None, "{first:?}");
    assert_eq!(first.body["replayed"], false);
    assert_eq!((first.body["from"].as_i64(), first.body["to"].as_i64()), (Some(bank.0), Some(alice.0)));
    assert_eq!(decimal(&first.body["amount"]), Decimal::new(2500, 2));
    assert_eq!(decimal(&first.body["to_balance"]), Decimal::new(2500, 2));
    let transfer_id = first.body["transfer_id"].as_i64().expect("a transfer id");

    // The client retries the same request: answered from the first, nothing paid again.
    let retried = service.transfer("top-up-1", &top_up);
    assert_eq!(retried.status, 200, "{retried:?}");
    assert_eq!(retried.header("idempotent-replayed"), Some("true"), "{retried:?}");
    assert_eq!(retried.body["replayed"], true);
    assert_eq!(retried.body["transfer_id"].as_i64(), Some(transfer_id));
    assert_eq!(decimal(&retried.body["to_balance"]), Decimal::new(2500, 2), "the first call's balance");
    assert_eq!(service.balance(alice), Decimal::new(2500, 2));
    assert_eq!(service.balance(bank), Decimal::new(-2500, 2));

    // The same key for another amount: a conflict, nothing moved.
    let other = json!({ "from": bank.0, "to": alice.0, "amount": "30.00", "memo": "top-up" });
    service.transfer("top-up-1", &other).assert_error(409, "idempotency_conflict");
    assert_eq!(service.balance(alice), Decimal::new(2500, 2));

    // A payment within the balance, then one beyond it: refused with the reason, nothing moved.
    let pay = service.transfer("pay-1", &json!({ "from": alice.0, "to": bob.0, "amount": "10.50" }));
    assert_eq!(pay.status, 201, "{pay:?}");
    assert_eq!(decimal(&pay.body["from_balance"]), Decimal::new(1450, 2));
    let too_much = service.transfer("pay-2", &json!({ "from": alice.0, "to": bob.0, "amount": "14.51" }));
    too_much.assert_error(422, "insufficient_funds");
    assert_eq!(service.balance(alice), Decimal::new(1450, 2));
    assert_eq!(service.balance(bob), Decimal::new(1050, 2));

    // No key: refused before anything is sent to the ledger, though the transfer is valid.
    let keyless =
        service.send("POST", "/transfers", &[], Some(&json!({ "from": alice.0, "to": bob.0, "amount": "1.00" })));
    keyless.assert_error(400, "missing_idempotency_key");
    assert_eq!(service.balance(alice), Decimal::new(1450, 2));

    // Alice's history: her two entries, oldest first, the retry and the refusals absent.
    let entries = service.history(alice);
    let amounts: Vec<Decimal> = entries.iter().map(|e| decimal(&e["amount"])).collect();
    assert_eq!(amounts, [Decimal::new(2500, 2), Decimal::new(-1050, 2)], "{entries:?}");
    let after: Vec<Decimal> = entries.iter().map(|e| decimal(&e["balance_after"])).collect();
    assert_eq!(after, [Decimal::new(2500, 2), Decimal::new(1450, 2)], "{entries:?}");
    assert_eq!(entries[0]["transfer_id"].as_i64(), Some(transfer_id));
    assert_eq!(entries[0]["memo"], "top-up");
    let ids: Vec<i64> = entries.iter().map(|e| e["id"].as_i64().expect("an entry id")).collect();
    assert!(ids[0] < ids[1], "{ids:?}");

    let whole = service.get(&format!("/accounts/{alice}/history"));
    assert_eq!(whole.body["next"], Value::Null, "a short page is the last: {whole:?}");

    // Paged: one entry a page, `next` leading from the first to the second and then the end.
    let page = service.get(&format!("/accounts/{alice}/history?limit=1"));
    assert_eq!(page.body["entries"].as_array().map(|e| e.len()), Some(1), "{page:?}");
    assert_eq!(page.body["next"].as_i64(), Some(ids[0]), "{page:?}");
    let page = service.get(&format!("/accounts/{alice}/history?after={}&limit=1", ids[0]));
    assert_eq!(page.body["entries"][0]["id"].as_i64(), Some(ids[1]), "{page:?}");
    let page = service.get(&format!("/accounts/{alice}/history?after={}&limit=1", ids[1]));
    assert_eq!((page.body["entries"].as_array().map(Vec::len), &page.body["next"]), (Some(0), &Value::Null));
    Ok(())
}

#[test]
fn bad_requests_get_the_status_that_says_why() -> TestResult {
    let service = Service::start("wallet_http_refusals")?;
    let bank = service.open("EUR", true);
    let alice = service.open("EUR", false);
    let dollars = service.open("USD", false);
    let unknown = AccountId(alice.0 + 1_000_000);

    service.get(&format!("/accounts/{unknown}/balance")).assert_error(404, "account_not_found");
    service.get(&format!("/accounts/{unknown}/history")).assert_error(404, "account_not_found");
    let to_nobody = json!({ "from": bank.0, "to": unknown.0, "amount": "1.00" });
    service.transfer("to-nobody", &to_nobody).assert_error(404, "account_not_found");

    let refused = [
        (json!({ "from": bank.0, "to": dollars.0, "amount": "1.00" }), "currency_mismatch"),
        (json!({ "from": bank.0, "to": bank.0, "amount": "1.00" }), "same_account"),
        (json!({ "from": bank.0, "to": alice.0, "amount": "0.001" }), "invalid_amount"),
        (json!({ "from": bank.0, "to": alice.0, "amount": "-1.00" }), "invalid_amount"),
    ];
    for (n, (body, kind)) in refused.iter().enumerate() {
        service.transfer(&format!("refused-{n}"), body).assert_error(422, kind);
    }
    // An amount as a JSON number is refused by the body's parser (it could be a float).
    let number = service.transfer("number", &json!({ "from": bank.0, "to": alice.0, "amount": 1.1 }));
    number.assert_error(422, "invalid_request");
    service.post("/accounts", &json!({ "currency": "XXX" })).assert_error(422, "unknown_currency");
    let both = json!({ "currency": "EUR", "unbounded": true, "min_balance": "-5.00" });
    service.post("/accounts", &both).assert_error(400, "invalid_input");
    service.get(&format!("/accounts/{alice}/history?limit=0")).assert_error(400, "invalid_input");
    service.get("/accounts/alice/balance").assert_error(400, "invalid_request");
    assert_eq!(service.balance(bank), Decimal::ZERO, "no refusal moved money");
    assert_eq!(service.balance(alice), Decimal::ZERO, "no refusal moved money");

    // A floor given as a decimal string is the account's.
    let overdraft = service.post("/accounts", &json!({ "currency": "EUR", "min_balance": "-5.00" }));
    assert_eq!(overdraft.status, 201, "{overdraft:?}");
    assert_eq!(decimal(&overdraft.body["min_balance"]), Decimal::new(-500, 2));
    Ok(())
}

/// The answers to failures an HTTP test cannot provoke: a temporary one asks for a retry, an
/// unexpected one says nothing of its cause, a failed combined batch answers as its cause.
#[test]
fn ledger_failures_map_to_statuses_without_internals() {
    let answer = |error: LedgerError| {
        let api = wallet_http::ApiError::from(error);
        let response = api.into_response();
        let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap_or("").to_string());
        (response.status(), retry_after)
    };

    let pool = wallet_http::ApiError::from(LedgerError::AsyncPool("secret-host:5432 timed out".into()));
    assert_eq!((pool.status, pool.kind), (StatusCode::SERVICE_UNAVAILABLE, "pool"));
    assert!(!pool.message.contains("secret-host"), "{pool:?}");
    assert_eq!(answer(LedgerError::AsyncPool("timed out".into())), (StatusCode::SERVICE_UNAVAILABLE, Some("1".into())));

    let defect = wallet_http::ApiError::from(LedgerError::UnexpectedRow {
        function: "transfer",
        detail: "column password=hunter2 missing".into(),
    });
    assert_eq!((defect.status, defect.kind), (StatusCode::INTERNAL_SERVER_ERROR, "unexpected_row"));
    assert!(!defect.message.contains("hunter2"), "{defect:?}");
    assert_eq!(
        answer(LedgerError::SchemaTooNew { found: 99, supported: 1 }),
        (StatusCode::INTERNAL_SERVER_ERROR, None)
    );

    let cause = LedgerError::AccountNotFound { account: AccountId(7) };
    let batch = wallet_http::ApiError::from(LedgerError::BatchFailed { source: Arc::new(cause) });
    assert_eq!((batch.status, batch.kind), (StatusCode::NOT_FOUND, "account_not_found"));
}
