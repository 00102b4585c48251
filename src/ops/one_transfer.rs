//! One transfer as a plan, for every path that sends one: [`Ledger::transfer`](crate::Ledger::transfer)
//! alone or as a combined batch of one, a batch of one item, and the `_in` forms of both doors.

use postgres::types::Type;

use crate::error::LedgerError;
use crate::model::metadata::stored_metadata;
use crate::model::transfer::{internal_key, Receipt, Transfer};
use crate::plan::{keyed, params, Ctx, Plan, Sql};
use crate::protocol::{self, transfer::outcome, KEY_CONSTRAINT};

/// Checks `t` before anything is sent, and chooses its key: the caller's, or an internal one.
pub(crate) fn prepare(ctx: &Ctx, t: &Transfer) -> Result<String, LedgerError> {
    t.validate()?;
    if t.up_to_available {
        ctx.refuse_in_citus("a transfer up to the available balance")?;
    }
    ctx.refuse_metadata_on_citus("a transfer with metadata", t.metadata.as_ref())?;
    Ok(t.idempotency_key.clone().unwrap_or_else(internal_key))
}

/// The parameter types of `transfer()` (`from, to, amount, key, memo, lock_mode, timeout_ms`,
/// and `metadata` for the forms that take it).
const TYPES: [Type; 8] =
    [Type::INT8, Type::INT8, Type::NUMERIC, Type::TEXT, Type::TEXT, Type::INT2, Type::INT4, Type::JSONB];

/// One transfer, prepared (`key` from [`prepare`]): one call of `transfer()`.
pub(crate) fn plan(ctx: &Ctx, t: &Transfer, key: String) -> Plan<Receipt> {
    let (mode, timeout_ms) = protocol::lock_params(ctx.lock_wait);
    let count = protocol::transfer::parameter_count(t);
    let mut params = params![t.from.0, t.to.0, t.amount, key.clone(), t.memo.clone(), mode, timeout_ms];
    if count == 8 {
        params.push(Box::new(stored_metadata(t.metadata.as_ref()).cloned()));
    }
    let sql = Sql::typed(protocol::transfer::statement(t), params, &TYPES[..count]);
    let t = t.clone();
    keyed(sql, KEY_CONSTRAINT, key, t.amount, move |answer, key| {
        outcome(&t, key, &answer.row).map(|mut receipt| {
            // A replay of our own earlier, unanswered attempt is not a replay to the caller.
            receipt.replayed &= !answer.maybe_applied && t.idempotency_key.is_some();
            receipt
        })
    })
}
