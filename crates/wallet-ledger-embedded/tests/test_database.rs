//! `TestDatabase` on a server the test does not own (an embedded server standing in for a
//! user's `DATABASE_URL`): the database exists while the guard lives and is gone after it drops,
//! even with a session still open on it; on the process's own embedded server nothing is dropped.
//!
//! One test in this binary, because it sets `DATABASE_URL` for the process.

use wallet_ledger_embedded::{EmbeddedServer, TestDatabase};

fn exists(admin: &mut postgres::Client, name: &str) -> bool {
    admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).expect("query pg_database").is_some()
}

#[test]
fn databases_on_a_users_server_are_dropped_with_the_guard() {
    let users_server = EmbeddedServer::start().expect("start the stand-in for the user's server");
    let admin_url = users_server.url("postgres");
    let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls).expect("connect");

    // Through an explicit maintenance connection.
    let database = TestDatabase::on_server(&admin_url, "guard_explicit").expect("create");
    let name = database.name().to_string();
    assert!(exists(&mut admin, &name), "{name} was not created");
    let mut session = postgres::Client::connect(database.url(), postgres::NoTls).expect("connect to the test database");
    session.batch_execute("CREATE TABLE t (x int)").expect("use it");
    drop(database);
    assert!(!exists(&mut admin, &name), "{name} is still there after the guard dropped");

    // Through DATABASE_URL, as the tests' helpers create theirs.
    std::env::set_var("DATABASE_URL", &admin_url);
    let database = TestDatabase::new("guard_env").expect("create on DATABASE_URL");
    let name = database.name().to_string();
    assert!(exists(&mut admin, &name), "{name} was not created on DATABASE_URL's server");
    drop(database);
    assert!(!exists(&mut admin, &name), "{name} is still on DATABASE_URL's server");

    // `keep` leaves it, as `fresh_database` does.
    let kept = TestDatabase::new("guard_keep").expect("create on DATABASE_URL");
    let name = kept.name().to_string();
    let url = kept.keep();
    assert!(url.contains(&name));
    assert!(exists(&mut admin, &name), "a kept database was dropped");
    std::env::remove_var("DATABASE_URL");
}
