//! Pooled connections that carry their own prepared statements.
//!
//! The transfer path runs one prepared statement per call; preparing it again on every checkout
//! would add a round trip per transfer. Each pooled connection therefore keeps the statements it
//! has prepared, keyed by their SQL text.

use std::collections::HashMap;

use postgres::{Client, NoTls, Statement};
use r2d2::ManageConnection;
use r2d2_postgres::PostgresConnectionManager;

/// A pooled connection: the client plus its prepared statements.
pub struct LedgerConnection {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl LedgerConnection {
    /// The statement for `sql`, prepared on this connection the first time it is asked for and
    /// kept for the connection's life, so each later use costs one round trip.
    ///
    /// # Errors
    /// When the server cannot prepare it (bad SQL, lost connection).
    pub fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    /// The underlying client, for statements that need no caching.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// The r2d2 manager of [`LedgerConnection`]s, wrapping `r2d2_postgres`'s manager.
#[derive(Debug)]
pub struct LedgerConnectionManager {
    inner: PostgresConnectionManager<NoTls>,
}

impl LedgerConnectionManager {
    pub(crate) fn new(config: postgres::Config) -> Self {
        LedgerConnectionManager { inner: PostgresConnectionManager::new(config, NoTls) }
    }
}

impl ManageConnection for LedgerConnectionManager {
    type Connection = LedgerConnection;
    type Error = postgres::Error;

    fn connect(&self) -> Result<LedgerConnection, postgres::Error> {
        let client = self.inner.connect()?;
        Ok(LedgerConnection { client, statements: HashMap::new() })
    }

    fn is_valid(&self, conn: &mut LedgerConnection) -> Result<(), postgres::Error> {
        conn.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut LedgerConnection) -> bool {
        conn.client.is_closed()
    }
}
