//! An OpenSSL TLS connector for the ledger's connections (feature `tls`).
//!
//! The ledger takes any `postgres` TLS connector ([`LedgerBuilder::tls`](crate::LedgerBuilder::tls),
//! [`Ledger::from_pool`](crate::Ledger::from_pool)); this module only builds the common one:
//! OpenSSL, verifying the server's certificate and host name against the system's roots or a
//! CA file. Whether TLS is required is the connection string's `sslmode`: `require` refuses a
//! server without TLS, `prefer` (the default) uses it when the server offers it, `disable`
//! never does. PostgreSQL offers TLS on TCP connections only, never on Unix sockets.
//!
//! ```no_run
//! # fn main() -> Result<(), wallet_ledger::LedgerError> {
//! use wallet_ledger::Ledger;
//!
//! let tls = wallet_ledger::tls::connector(Some("/etc/payments/db-ca.pem".as_ref()))?;
//! let ledger = Ledger::builder("host=db.internal dbname=shop user=app sslmode=require").tls(tls).build()?;
//! # Ok(()) }
//! ```

use std::path::Path;

use openssl::ssl::{SslConnector, SslMethod};
pub use postgres_openssl::MakeTlsConnector;

use crate::error::LedgerError;

/// An OpenSSL connector that trusts the system's root certificates, plus those in the PEM file
/// `ca_file` when given (a private CA, or a self-signed server certificate).
///
/// # Errors
/// [`LedgerError::InvalidInput`] when OpenSSL cannot be set up or `ca_file` cannot be read as
/// PEM certificates (the message names the file, not its content).
pub fn connector(ca_file: Option<&Path>) -> Result<MakeTlsConnector, LedgerError> {
    let invalid = |what: &str, e: openssl::error::ErrorStack| LedgerError::InvalidInput {
        field: "TLS settings",
        reason: format!("{what}: {e}"),
    };
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(|e| invalid("OpenSSL setup", e))?;
    if let Some(path) = ca_file {
        builder.set_ca_file(path).map_err(|e| invalid(&format!("CA file {}", path.display()), e))?;
    }
    Ok(MakeTlsConnector::new(builder.build()))
}
