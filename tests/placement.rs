//! Embedding: the ledger in a schema of the backend's choice, on the backend's own pool, with
//! migrations applied by the backend's own tool, and over TLS.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;
use rust_decimal_macros::dec;
use wallet_ledger::schema::{migration_script_for, SchemaName, SCHEMA_VERSION};
use wallet_ledger::{Hold, Ledger, LedgerError, NewAccount, Transfer};
use wallet_ledger_embedded::embedded;

fn pool(url: &str, size: u32) -> Result<r2d2::Pool<PostgresConnectionManager<NoTls>>> {
    let manager = PostgresConnectionManager::new(url.parse()?, NoTls);
    Ok(r2d2::Pool::builder().max_size(size).connection_timeout(Duration::from_secs(10)).build(manager)?)
}

fn schemas(client: &mut postgres::Client) -> Result<Vec<String>> {
    let rows = client.query(
        "SELECT nspname::text FROM pg_namespace WHERE nspname NOT LIKE 'pg_%' AND nspname <> 'information_schema' ORDER BY 1",
        &[],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Every operation of the ledger, so that a statement still naming `wallet_ledger` fails.
fn exercise(ledger: &Ledger) -> Result<()> {
    ledger.define_currency("USD", 2)?;
    let issuer = ledger.open_account(&NewAccount::new("USD").unbounded())?.id;
    let a = ledger.open_account(&NewAccount::new("USD"))?.id;
    let b = ledger.open_account(&NewAccount::new("USD"))?.id;
    ledger.transfer(&Transfer::new(issuer, a, dec!(50)).idempotency_key("fund"))?;
    assert!(ledger.transfer(&Transfer::new(issuer, a, dec!(50)).idempotency_key("fund"))?.replayed);
    let hold = ledger.hold(&Hold::new(a, b, dec!(20)))?.hold_id;
    ledger.capture(hold, Some(dec!(5)))?;
    assert_eq!(ledger.available(a)?, dec!(45));
    assert_eq!(ledger.history(a, None, 10)?.len(), 2);
    assert_eq!(ledger.open_holds(a, 10)?.len(), 0);
    assert_eq!(ledger.expire_holds(10)?, 0);
    let mut conn = ledger.connection()?;
    let mut tx = conn.client().transaction()?;
    ledger.transfer_in(&mut tx, &Transfer::new(a, b, dec!(1)))?;
    tx.commit()?;
    drop(conn);
    assert_eq!(ledger.balance(b)?, dec!(6));
    let audit = ledger.verify()?;
    assert!(audit.is_clean(), "{audit:?}");
    assert_eq!(audit.transfers, 3);
    Ok(())
}

#[test]
fn a_custom_schema_holds_everything_and_leaves_the_backends_tables_alone() -> Result<()> {
    let url = common::database("placement_schema")?;
    let mut client = postgres::Client::connect(&url, NoTls)?;
    // The backend's own tables, with the names the ledger uses.
    client.batch_execute(
        "CREATE TABLE public.accounts (id bigint PRIMARY KEY, owner text);
         CREATE TABLE public.transfers (id bigint PRIMARY KEY);
         INSERT INTO public.accounts VALUES (1, 'backend');",
    )?;
    let ledger = Ledger::builder(&url).schema("shop_ledger").build()?;
    assert_eq!(ledger.schema(), "shop_ledger");
    exercise(&ledger)?;
    assert_eq!(schemas(&mut client)?, ["public", "shop_ledger"]);
    let owners: Vec<String> =
        client.query("SELECT owner FROM public.accounts", &[])?.iter().map(|r| r.get(0)).collect();
    assert_eq!(owners, ["backend"]);
    let n: i64 = client.query_one("SELECT count(*) FROM shop_ledger.transfers", &[])?.get(0);
    assert_eq!(n, 3);
    Ok(())
}

#[test]
fn two_schemas_on_one_shared_pool_stay_apart() -> Result<()> {
    let url = common::database("placement_two")?;
    // One connection: both ledgers and their statement caches live on the same session.
    let shared = pool(&url, 1)?;
    let first = Ledger::with_pool(shared.clone()).schema("ledger_a").build()?;
    let second = Ledger::with_pool(shared.clone()).schema("ledger_b").build()?;
    exercise(&first)?;
    exercise(&second)?;
    first.define_currency("EUR", 2)?;
    let eur = first.open_account(&NewAccount::new("EUR"))?;
    assert!(matches!(second.account(eur.id), Err(LedgerError::AccountNotFound { .. })));
    assert!(matches!(second.open_account(&NewAccount::new("EUR")), Err(LedgerError::UnknownCurrency { .. })));
    // The backend still uses the same pool.
    let mut own = shared.get()?;
    let n: i64 = own.query_one("SELECT count(*) FROM ledger_a.accounts", &[])?.get(0);
    assert_eq!(n, 4);
    Ok(())
}

#[test]
fn a_backends_migration_tool_applies_the_script_and_the_ledger_only_checks() -> Result<()> {
    let url = common::database("placement_script")?;
    let shared = pool(&url, 4)?;
    let name = SchemaName::new("payments")?;
    // Not migrated yet, and told not to: a typed error naming the schema, nothing created.
    let e = Ledger::with_pool(shared.clone()).schema("payments").migrate(false).build().unwrap_err();
    assert!(
        matches!(&e, LedgerError::SchemaOutdated { schema, found: 0, required } if schema == "payments" && *required == SCHEMA_VERSION),
        "{e:?}"
    );
    let mut client = postgres::Client::connect(&url, NoTls)?;
    assert_eq!(schemas(&mut client)?, ["public"]);
    // The backend's tool runs the script in its own transaction.
    let mut tx = client.transaction()?;
    tx.batch_execute(&migration_script_for(&name))?;
    tx.commit()?;
    let ledger = Ledger::with_pool(shared.clone()).schema("payments").migrate(false).build()?;
    exercise(&ledger)?;
    assert_eq!(schemas(&mut client)?, ["payments", "public"]);
    // A version this build does not know: refused whether or not it may migrate.
    client.execute("INSERT INTO payments.schema_version (version, name) VALUES (999, 'future')", &[])?;
    for migrate in [false, true] {
        let e = Ledger::with_pool(shared.clone()).schema("payments").migrate(migrate).build().unwrap_err();
        assert!(matches!(e, LedgerError::SchemaTooNew { found: 999, .. }), "{e:?}");
    }
    Ok(())
}

#[test]
fn a_bad_schema_name_is_refused_before_connecting() {
    for bad in ["", "Shop", "x; DROP TABLE y", "pg_ledger", "1ledger"] {
        let e = Ledger::builder("host=/nonexistent dbname=x").schema(bad).build().unwrap_err();
        assert!(matches!(e, LedgerError::InvalidInput { field: "schema name", .. }), "{bad}: {e:?}");
    }
}

#[test]
fn from_pool_shares_the_backends_pool_and_counts_pool_waits() -> Result<()> {
    let url = common::database("placement_pool")?;
    let shared = pool(&url, 1)?;
    let ledger = Ledger::from_pool(shared.clone())?;
    ledger.define_currency("USD", 2)?;
    let issuer = ledger.open_account(&NewAccount::new("USD").unbounded())?.id;
    let a = ledger.open_account(&NewAccount::new("USD"))?.id;
    // Checkouts that opened a connection were waits too; count from here.
    let before = ledger.stats();
    // The backend holds the only connection for a while; the ledger's call waits for it.
    let held = shared.get()?;
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        drop(held);
    });
    ledger.transfer(&Transfer::new(issuer, a, dec!(1)))?;
    releaser.join().expect("releaser");
    let stats = ledger.stats();
    assert_eq!(stats.pool_waits - before.pool_waits, 1, "{stats:?}");
    assert!(stats.pool_wait_micros - before.pool_wait_micros >= 150_000, "{stats:?}");
    assert_eq!(stats.succeeded - before.succeeded, 1);
    Ok(())
}

/// A self-signed certificate for `127.0.0.1` and `localhost`, and its key, as PEM.
fn self_signed() -> Result<(Vec<u8>, Vec<u8>)> {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
    use openssl::x509::{X509NameBuilder, X509};

    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", "localhost")?;
    let name = name.build();
    let mut cert = X509::builder()?;
    cert.set_version(2)?;
    let serial = BigNum::from_u32(1)?.to_asn1_integer()?;
    cert.set_serial_number(&serial)?;
    cert.set_subject_name(&name)?;
    cert.set_issuer_name(&name)?;
    cert.set_pubkey(&key)?;
    cert.set_not_before(&*Asn1Time::days_from_now(0)?)?;
    cert.set_not_after(&*Asn1Time::days_from_now(2)?)?;
    cert.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    let san = SubjectAlternativeName::new().ip("127.0.0.1").dns("localhost").build(&cert.x509v3_context(None, None))?;
    cert.append_extension(san)?;
    cert.sign(&key, MessageDigest::sha256())?;
    Ok((cert.build().to_pem()?, key.private_key_to_pem_pkcs8()?))
}

fn connector(ca_pem: &[u8]) -> Result<postgres_openssl::MakeTlsConnector> {
    let mut builder = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())?;
    builder.cert_store_mut().add_cert(openssl::x509::X509::from_pem(ca_pem)?)?;
    Ok(postgres_openssl::MakeTlsConnector::new(builder.build()))
}

/// Whether the ledger's own connection is encrypted, by the server's account.
fn encrypted(ledger: &Ledger) -> Result<bool> {
    let mut conn = ledger.connection()?;
    Ok(conn.client().query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])?.get(0))
}

#[test]
fn tls_to_the_database_with_a_self_signed_certificate() -> Result<()> {
    let (cert, key) = self_signed()?;
    let server = embedded::EmbeddedServer::start_tls(&cert, &key).context("TLS server")?;
    server.create_database("tls")?;
    let url = server.tcp_url("tls").expect("a TLS server listens on TCP");
    assert!(url.contains("sslmode=require"));

    // The builder with a connector trusting the certificate: everything works, encrypted.
    let ledger = Ledger::builder(&url).pool_size(2).tls(connector(&cert)?).build()?;
    exercise(&ledger)?;
    assert!(encrypted(&ledger)?);

    // The caller's own TLS pool.
    let manager = PostgresConnectionManager::new(url.parse()?, connector(&cert)?);
    let tls_pool = r2d2::Pool::builder().max_size(2).build(manager)?;
    let on_pool = Ledger::from_pool(tls_pool)?;
    assert_eq!(on_pool.verify()?.transfers, 3);
    assert!(encrypted(&on_pool)?);

    // The async door with the same connector: encrypted too.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let ledger = wallet_ledger::aio::Ledger::builder(&url).pool_size(2).tls(connector(&cert)?).build().await?;
        assert_eq!(ledger.verify().await?.transfers, 3);
        let conn = ledger.connection().await?;
        let ssl: bool = conn.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await?.get(0);
        assert!(ssl);
        // Without a connector, sslmode=require is refused by the client.
        let quick = Duration::from_secs(2);
        let e = wallet_ledger::aio::Ledger::builder(&url).checkout_timeout(quick).build().await.unwrap_err();
        assert!(matches!(e, LedgerError::AsyncPool(_) | LedgerError::Database(_)), "{e:?}");
        Ok::<_, anyhow::Error>(())
    })?;

    // sslmode=require without a TLS connector: refused by the client, never sent in clear.
    let quick = Duration::from_secs(2); // a failing connect is retried until the checkout times out
    let e = Ledger::builder(&url).checkout_timeout(quick).build().unwrap_err();
    assert!(matches!(e, LedgerError::Pool(_) | LedgerError::Database(_)), "{e:?}");
    // A connector that does not trust the certificate: the handshake fails.
    let untrusting = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())?.build();
    let untrusting = postgres_openssl::MakeTlsConnector::new(untrusting);
    let e = Ledger::builder(&url).checkout_timeout(quick).tls(untrusting).build().unwrap_err();
    assert!(matches!(e, LedgerError::Pool(_) | LedgerError::Database(_)), "{e:?}");
    // Plain TCP: the server rejects it (hostnossl ... reject).
    let plain = url.replace("sslmode=require", "sslmode=disable");
    let e = Ledger::builder(&plain).checkout_timeout(quick).build().unwrap_err();
    let chain = format!("{:?}", anyhow::Error::from(e));
    assert!(chain.contains("no encryption"), "{chain}");
    Ok(())
}

#[cfg(feature = "tls")]
#[test]
fn the_tls_feature_builds_a_connector_from_a_ca_file() -> Result<()> {
    let (cert, key) = self_signed()?;
    let server = embedded::EmbeddedServer::start_tls(&cert, &key)?;
    server.create_database("tls_feature")?;
    let url = server.tcp_url("tls_feature").expect("TCP");
    let dir = tempdir()?;
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &cert)?;
    let ledger = Ledger::builder(&url).pool_size(1).tls(wallet_ledger::tls::connector(Some(&ca))?).build()?;
    assert!(encrypted(&ledger)?);
    // The system's roots alone do not trust a self-signed certificate.
    let system_roots = wallet_ledger::tls::connector(None)?;
    let e = Ledger::builder(&url).checkout_timeout(Duration::from_secs(2)).tls(system_roots).build().unwrap_err();
    assert!(matches!(e, LedgerError::Pool(_) | LedgerError::Database(_)), "{e:?}");
    let Err(missing) = wallet_ledger::tls::connector(Some(&dir.join("missing.pem"))) else {
        panic!("a missing CA file was accepted");
    };
    assert!(matches!(missing, LedgerError::InvalidInput { field: "TLS settings", .. }), "{missing:?}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[cfg(feature = "tls")]
fn tempdir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("wallet-ledger-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[test]
fn stats_count_operations_by_outcome() -> Result<()> {
    let (ledger, _url, _issuer, wallets) = common::funded("observability_stats", 2, dec!(5))?;
    let before = ledger.stats();
    ledger.transfer(&Transfer::new(wallets[0], wallets[1], dec!(1)))?;
    let _ = ledger.transfer(&Transfer::new(wallets[0], wallets[1], dec!(100)));
    let after = ledger.stats();
    assert_eq!(after.succeeded - before.succeeded, 1);
    assert_eq!(after.refused - before.refused, 1);
    assert_eq!(after.failed, before.failed);
    Ok(())
}

#[test]
fn a_transfer_that_waits_for_a_row_lock_is_counted_as_a_lock_wait() -> Result<()> {
    let (ledger, url, _issuer, wallets) = common::funded("lock_waits", 2, dec!(10))?;
    let (a, b) = (wallets[0], wallets[1]);
    let before = ledger.stats();
    // Uncontended: no wait counted.
    ledger.transfer(&Transfer::new(a, b, dec!(1)))?;
    assert_eq!(ledger.stats().lock_waits, before.lock_waits);
    // Another transaction holds b's row for 300 ms; the transfer waits for it.
    let mut other = postgres::Client::connect(&url, NoTls)?;
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || -> Result<()> {
        let mut tx = other.transaction()?;
        tx.execute("SELECT 1 FROM wallet_ledger.accounts WHERE id = $1 FOR NO KEY UPDATE", &[&b.0])?;
        locked_tx.send(())?;
        std::thread::sleep(Duration::from_millis(300));
        tx.commit()?;
        Ok(())
    });
    locked_rx.recv()?;
    ledger.transfer(&Transfer::new(a, b, dec!(1)))?;
    holder.join().expect("holder thread")?;
    let after = ledger.stats();
    assert_eq!(after.lock_waits - before.lock_waits, 1, "{after:?}");
    let waited = after.lock_wait_micros - before.lock_wait_micros;
    assert!((200_000..5_000_000).contains(&waited), "waited {waited} µs: {after:?}");
    // The caller's-transaction form reports it too: uncontended, then behind a held lock. The
    // first call on a new connection also plans the lock statement (the reason for
    // LOCK_WAIT_THRESHOLD), which under a loaded CI machine took over 5 ms and was counted: the
    // connection is warmed by one call before the uncontended one is measured.
    let mut client = postgres::Client::connect(&url, NoTls)?;
    let mut tx = client.transaction()?;
    ledger.transfer_in(&mut tx, &Transfer::new(b, a, dec!(1)))?;
    tx.commit()?;
    let after = ledger.stats();
    let mut tx = client.transaction()?;
    ledger.transfer_in(&mut tx, &Transfer::new(b, a, dec!(1)))?;
    tx.commit()?;
    assert_eq!(ledger.stats().lock_waits, after.lock_waits, "an uncontended transfer_in waited");
    let mut other = postgres::Client::connect(&url, NoTls)?;
    let mut holding = other.transaction()?;
    holding.execute("SELECT 1 FROM wallet_ledger.accounts WHERE id = $1 FOR NO KEY UPDATE", &[&a.0])?;
    let waiter = std::thread::spawn(move || -> Result<wallet_ledger::Stats> {
        let mut tx = client.transaction()?;
        ledger.transfer_in(&mut tx, &Transfer::new(b, a, dec!(1)))?;
        tx.commit()?;
        Ok(ledger.stats())
    });
    std::thread::sleep(Duration::from_millis(200));
    holding.commit()?;
    let last = waiter.join().expect("waiter thread")?;
    assert_eq!(last.lock_waits - after.lock_waits, 1, "{last:?}");
    Ok(())
}
