//! `wallet_ledger.post()`: its statement, parameters and the decoding of its answer.

use postgres::Row;
use rust_decimal::Decimal;

use crate::error::{KeyHolder, LedgerError};
use crate::model::metadata::stored_metadata;
use crate::model::posting::{Posting, PostingReceipt};
use crate::protocol::{account_rule, Outcome, Reply};
use crate::values::{AccountId, TransferId};

/// Applies a posting; parameters `(accounts[], amounts[], key, memo, lock_mode, timeout_ms)`.
pub(crate) const SQL: &str = include_str!("../../sql/queries/post.sql");
/// A posting with metadata: the parameters of [`SQL`] and `metadata` (jsonb).
pub(crate) const METADATA_SQL: &str = include_str!("../../sql/queries/post_metadata.sql");

/// The statement for `posting` and how many parameters it takes: [`METADATA_SQL`] and 7 (the
/// last, `metadata`) when it has metadata, else [`SQL`] and 6.
pub(crate) fn statement(posting: &Posting) -> (&'static str, usize) {
    if stored_metadata(posting.metadata.as_ref()).is_some() {
        (METADATA_SQL, 7)
    } else {
        (SQL, 6)
    }
}

/// The legs as the function takes them: parallel arrays of accounts and signed amounts.
pub(crate) fn arrays(posting: &Posting) -> (Vec<i64>, Vec<Decimal>) {
    posting.legs.iter().map(|(account, amount)| (account.0, *amount)).unzip()
}

/// Turns `post()`'s answer into a receipt or a typed refusal.
pub(crate) fn posting_outcome(posting: &Posting, key: &str, row: &Row) -> Result<PostingReceipt, LedgerError> {
    let reply = Reply::new(row, "post");
    let account = || reply.get("account").map(AccountId);
    let leg =
        |account: AccountId| posting.legs.iter().find(|(a, _)| *a == account).map(|(_, d)| *d).unwrap_or_default();
    let receipt = |replayed| -> Result<PostingReceipt, LedgerError> {
        let balances: Vec<Decimal> = reply.get("balances")?;
        if balances.len() != posting.legs.len() {
            return Err(reply.malformed(format!("{} balances for {} legs", balances.len(), posting.legs.len())));
        }
        Ok(PostingReceipt {
            transfer_id: TransferId(reply.get("transfer_id")?),
            balances: posting.legs.iter().map(|(a, _)| *a).zip(balances).collect(),
            replayed,
        })
    };
    match reply.outcome()? {
        Outcome::Ok => receipt(false),
        Outcome::Replayed => receipt(true),
        Outcome::IdempotencyConflict => Err(LedgerError::IdempotencyConflict {
            key: key.to_string(),
            existing: KeyHolder::Transfer(TransferId(reply.get("transfer_id")?)),
        }),
        Outcome::AccountNotFound => Err(LedgerError::AccountNotFound { account: account()? }),
        Outcome::InvalidScale => {
            let amount = leg(account()?);
            let scale: i16 = reply.get("currency_scale")?;
            let currency: String = reply.get("currency")?;
            Err(LedgerError::InvalidAmount {
                amount,
                reason: format!("more than {scale} decimal places, the scale of {currency}"),
            })
        }
        Outcome::Unbalanced => {
            Err(LedgerError::Unbalanced { currency: reply.get("currency")?, sum: reply.get("amount_sum")? })
        }
        Outcome::InsufficientFunds => {
            let account = account()?;
            Err(LedgerError::InsufficientFunds {
                account,
                available: reply.get("available")?,
                requested: -leg(account),
            })
        }
        other => Err(account_rule(&reply, other, leg(account()?))),
    }
}
