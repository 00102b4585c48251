//! Pooled connections that carry their own prepared statements, on any `r2d2_postgres` pool.
//!
//! The ledger runs on a plain `r2d2::Pool<PostgresConnectionManager<T>>`, its own or the
//! caller's, with any TLS connector `T`. The transfer path runs one prepared statement per call;
//! preparing it again on every checkout would add a round trip per transfer, so each pooled
//! connection keeps the statements the ledger prepared on it in the connection's r2d2
//! extensions, where they live and die with the connection.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::tls::{MakeTlsConnect, TlsConnect};
use postgres::{Client, Socket, Statement};
use r2d2::{ManageConnection, Pool, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;

use crate::driver::async_guard::refuse_on_runtime_thread;
use crate::error::LedgerError;
use crate::schema::SchemaName;

/// Statements prepared on one connection, per schema and SQL text (by address: the texts are
/// `'static` literals, so the address names the text without hashing it).
#[derive(Default)]
struct StatementCache(HashMap<(usize, usize, Arc<str>), Statement>);

/// A pool of some TLS type, behind one object type so that [`Ledger`](crate::Ledger) needs no
/// type parameter.
pub(crate) trait Source: Send + Sync {
    fn get(&self) -> Result<Box<dyn PooledAny>, r2d2::Error>;
    fn max_size(&self) -> u32;
}

/// One checked-out connection of some pool, whatever its TLS type, with the statements the
/// ledger prepared on it.
pub(crate) trait PooledAny: Send {
    fn client(&mut self) -> &mut Client;
    fn statement(&mut self, schema: &SchemaName, sql: &'static str) -> Result<Statement, postgres::Error>;
}

impl<M: ManageConnection<Connection = Client>> PooledAny for PooledConnection<M> {
    fn client(&mut self) -> &mut Client {
        self
    }

    fn statement(&mut self, schema: &SchemaName, sql: &'static str) -> Result<Statement, postgres::Error> {
        let key = (sql.as_ptr() as usize, sql.len(), schema.shared());
        let cached = PooledConnection::extensions(self).get::<StatementCache>().and_then(|c| c.0.get(&key));
        if let Some(statement) = cached {
            return Ok(statement.clone());
        }
        let statement = self.prepare(&schema.qualify(sql))?;
        let extensions = PooledConnection::extensions_mut(self);
        match extensions.get_mut::<StatementCache>() {
            Some(cache) => {
                cache.0.insert(key, statement.clone());
            }
            None => {
                let mut cache = StatementCache::default();
                cache.0.insert(key, statement.clone());
                extensions.insert(cache);
            }
        }
        Ok(statement)
    }
}

impl<M: ManageConnection<Connection = Client>> Source for Pool<M> {
    fn get(&self) -> Result<Box<dyn PooledAny>, r2d2::Error> {
        Ok(Box::new(Pool::get(self)?))
    }

    fn max_size(&self) -> u32 {
        Pool::max_size(self)
    }
}

/// A pooled connection checked out by the ledger: the client, the statements the ledger
/// prepared on it, and the schema the ledger's SQL is rewritten for; [`client`](Self::client)
/// gives the [`postgres::Client`]. Returned to its pool on drop.
pub struct LedgerConnection {
    inner: Box<dyn PooledAny>,
    schema: SchemaName,
}

impl LedgerConnection {
    /// Every pooled call passes here first: on a thread that drives an async runtime it is
    /// [`LedgerError::AsyncRuntime`], before the pool or the `postgres` client blocks.
    pub(crate) fn checkout(source: &dyn Source, schema: &SchemaName) -> Result<(Self, Duration), LedgerError> {
        refuse_on_runtime_thread()?;
        let started = Instant::now();
        let inner = source.get()?;
        Ok((LedgerConnection { inner, schema: schema.clone() }, started.elapsed()))
    }

    /// The statement for `sql`, prepared on this connection the first time it is asked for and
    /// kept for the connection's life, so each later use costs one round trip. `sql` names the
    /// ledger's schema as `wallet_ledger.`, rewritten for the schema the ledger was built with.
    ///
    /// # Errors
    /// When the server cannot prepare it (bad SQL, lost connection).
    pub fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        self.inner.statement(&self.schema, sql)
    }

    /// `sql` with the schema prefix `wallet_ledger.` rewritten for this ledger's schema, for
    /// statements that are not worth preparing.
    pub fn sql<'a>(&self, sql: &'a str) -> Cow<'a, str> {
        self.schema.qualify(sql)
    }

    /// The schema this connection's ledger uses (the test kit's direct reads).
    #[cfg_attr(not(feature = "testkit"), allow(dead_code))]
    pub(crate) fn schema(&self) -> SchemaName {
        self.schema.clone()
    }

    /// The underlying client.
    pub fn client(&mut self) -> &mut Client {
        self.inner.client()
    }
}

/// The manager of a pool the ledger opens itself: `r2d2_postgres`'s, with connection errors
/// that keep the server's message. r2d2 reports a checkout timeout with the last connection
/// error's `Display`, which for a `postgres::Error` is only "db error"; a refused TLS handshake
/// or a `pg_hba.conf` rejection should say why.
#[derive(Debug)]
pub(crate) struct Manager<T>(pub(crate) PostgresConnectionManager<T>);

/// A connection error whose `Display` includes its causes.
#[derive(Debug)]
pub(crate) struct ConnectError(postgres::Error);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::error::chain(&self.0))
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl<T> ManageConnection for Manager<T>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::TlsConnect: Send,
    T::Stream: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    type Connection = Client;
    type Error = ConnectError;

    fn connect(&self) -> Result<Client, ConnectError> {
        self.0.connect().map_err(ConnectError)
    }

    fn is_valid(&self, client: &mut Client) -> Result<(), ConnectError> {
        self.0.is_valid(client).map_err(ConnectError)
    }

    fn has_broken(&self, client: &mut Client) -> bool {
        self.0.has_broken(client)
    }
}
