//! `wallet_ledger.transfer_batch()`: the batch's parameter arrays (validated items, keys, the
//! lock order) and the decoding of its per-item answer.

use std::collections::HashSet;

use postgres::Row;
use rust_decimal::Decimal;
use serde_json::Value;

use crate::error::{KeyHolder, LedgerError};
use crate::limits::BATCH_ITEMS_MAX;
use crate::model::lock_plan::LockPlan;
use crate::model::metadata::stored_metadata;
use crate::model::transfer::{internal_key, Receipt, Transfer};
use crate::protocol::{unexpected, Outcome, Reply};
use crate::values::{AccountId, TransferId};

/// Applies a batch; parameters `(from[], to[], amount[], key[], memo[], lock_mode, timeout_ms,
/// union[], from_pos[], to_pos[], up_to[], metadata[])`.
pub(crate) const SQL: &str = include_str!("../../sql/queries/transfer_batch.sql");

const FUNCTION: &str = "transfer_batch";

/// The items of a batch as the function takes them: only the items that passed validation, as
/// parallel arrays, and where each one came from.
pub(crate) struct Arrays {
    /// Index in the caller's slice of each sent item.
    pub(crate) sent: Vec<usize>,
    pub(crate) from: Vec<i64>,
    pub(crate) to: Vec<i64>,
    pub(crate) amount: Vec<Decimal>,
    pub(crate) key: Vec<String>,
    pub(crate) memo: Vec<Option<String>>,
    /// Each item a sweep?
    pub(crate) up_to: Vec<bool>,
    /// Each item's metadata (`None`: none).
    pub(crate) metadata: Vec<Option<Value>>,
    /// Every account id once, ascending: the lock order.
    pub(crate) union: Vec<i64>,
    /// Each item's `from` and `to` as 1-based positions in `union`.
    pub(crate) from_pos: Vec<i32>,
    pub(crate) to_pos: Vec<i32>,
}

/// A batch ready to send: the arrays, and the results so far (validation refusals).
pub(crate) struct Prepared {
    pub(crate) items: Vec<Transfer>,
    pub(crate) arrays: Arrays,
    pub(crate) results: Vec<Option<Result<Receipt, LedgerError>>>,
}

impl Prepared {
    /// Validates every item (refusals become that item's result), and gives each sent item its
    /// key: `keys[i]` when given (the combiner's), else the caller's, else a new internal one.
    pub(crate) fn new(items: &[Transfer], keys: Option<&[String]>) -> Result<Self, LedgerError> {
        if items.len() > BATCH_ITEMS_MAX {
            return Err(LedgerError::BatchTooLarge { items: items.len(), max: BATCH_ITEMS_MAX });
        }
        let n = items.len();
        let mut arrays = Arrays {
            sent: Vec::with_capacity(n),
            from: Vec::with_capacity(n),
            to: Vec::with_capacity(n),
            amount: Vec::with_capacity(n),
            key: Vec::with_capacity(n),
            memo: Vec::with_capacity(n),
            up_to: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            union: Vec::new(),
            from_pos: Vec::new(),
            to_pos: Vec::new(),
        };
        let mut results = Vec::with_capacity(n);
        for (i, t) in items.iter().enumerate() {
            if let Err(e) = t.validate() {
                results.push(Some(Err(e)));
                continue;
            }
            results.push(None);
            let key = match (keys, &t.idempotency_key) {
                (Some(keys), _) => keys[i].clone(),
                (None, Some(key)) => key.clone(),
                (None, None) => internal_key(),
            };
            arrays.sent.push(i);
            arrays.from.push(t.from.0);
            arrays.to.push(t.to.0);
            arrays.amount.push(t.amount);
            arrays.key.push(key);
            arrays.memo.push(t.memo.clone());
            arrays.up_to.push(t.up_to_available);
            arrays.metadata.push(stored_metadata(t.metadata.as_ref()).cloned());
        }
        let plan = LockPlan::new(arrays.from.iter().chain(&arrays.to).map(|id| AccountId(*id)));
        arrays.union = plan.as_i64();
        let position = |id: &i64| arrays.union.binary_search(id).map_or(0, |p| p as i32 + 1);
        arrays.from_pos = arrays.from.iter().map(position).collect();
        arrays.to_pos = arrays.to.iter().map(position).collect();
        Ok(Prepared { items: items.to_vec(), arrays, results })
    }

    /// Whether anything is left to send.
    pub(crate) fn is_empty(&self) -> bool {
        self.arrays.sent.is_empty()
    }

    /// The keys of the sent items, in item order.
    pub(crate) fn keys(&self) -> Vec<String> {
        self.arrays.key.clone()
    }

    /// Every item's result, from the function's row (`None` when nothing was sent).
    pub(crate) fn finish(mut self, row: Option<&Row>, maybe_applied: bool) -> Vec<Result<Receipt, LedgerError>> {
        if let Some(row) = row {
            let col = match Columns::read(row, self.arrays.sent.len()) {
                Ok(col) => col,
                Err(e) => return self.unreadable(&e),
            };
            // Keys some earlier item of this batch applied or replayed.
            let mut held: HashSet<&str> = HashSet::new();
            for (j, &i) in self.arrays.sent.iter().enumerate() {
                let t = &self.items[i];
                let key = self.arrays.key[j].as_str();
                let mut result = col.outcome(j, t, key);
                if let Ok(receipt) = &mut result {
                    // A repeat of a key inside the batch is a replay to the caller. The first item
                    // of a key replaying an earlier, unanswered attempt of this call is not (as
                    // for single transfers); an internal key only ever replays our own attempt.
                    let repeat = !held.insert(key);
                    receipt.replayed &= repeat || !maybe_applied && t.idempotency_key.is_some();
                }
                self.results[i] = Some(result);
            }
        }
        self.results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(unexpected(FUNCTION, "an item was left without an outcome"))))
            .collect()
    }

    /// Every sent item's result when the answer could not be read: the defect, for each.
    fn unreadable(mut self, e: &LedgerError) -> Vec<Result<Receipt, LedgerError>> {
        let detail = match e {
            LedgerError::UnexpectedRow { detail, .. } => detail.clone(),
            other => other.to_string(),
        };
        for &i in &self.arrays.sent {
            self.results[i] = Some(Err(unexpected(FUNCTION, detail.clone())));
        }
        self.finish(None, false)
    }
}

/// The function's result arrays.
struct Columns {
    outcomes: Vec<String>,
    transfer_ids: Vec<Option<i64>>,
    from_balances: Vec<Option<Decimal>>,
    to_balances: Vec<Option<Decimal>>,
    accounts: Vec<Option<i64>>,
    availables: Vec<Option<Decimal>>,
    from_currencies: Vec<Option<String>>,
    to_currencies: Vec<Option<String>>,
    currency_scales: Vec<Option<i16>>,
    amounts: Vec<Option<Decimal>>,
}

impl Columns {
    /// The result arrays, each with one element per sent item.
    fn read(row: &Row, items: usize) -> Result<Columns, LedgerError> {
        let reply = Reply::new(row, FUNCTION);
        let col = Columns {
            outcomes: reply.get("outcomes")?,
            transfer_ids: reply.get("transfer_ids")?,
            from_balances: reply.get("from_balances")?,
            to_balances: reply.get("to_balances")?,
            accounts: reply.get("accounts")?,
            availables: reply.get("availables")?,
            from_currencies: reply.get("from_currencies")?,
            to_currencies: reply.get("to_currencies")?,
            currency_scales: reply.get("currency_scales")?,
            amounts: reply.get("amounts")?,
        };
        let lengths = [
            col.outcomes.len(),
            col.transfer_ids.len(),
            col.from_balances.len(),
            col.to_balances.len(),
            col.accounts.len(),
            col.availables.len(),
            col.from_currencies.len(),
            col.to_currencies.len(),
            col.currency_scales.len(),
            col.amounts.len(),
        ];
        if lengths.iter().any(|&n| n != items) {
            return Err(reply.malformed(format!("result arrays of lengths {lengths:?} for {items} items")));
        }
        Ok(col)
    }

    /// Item `j`'s `value`, which its outcome requires.
    fn required<T>(&self, j: usize, value: Option<T>, what: &str) -> Result<T, LedgerError> {
        value.ok_or_else(|| unexpected(FUNCTION, format!("item {j}: {what} is NULL for outcome {}", self.outcomes[j])))
    }

    /// Item `j`'s receipt or typed refusal, as `protocol::transfer::outcome` maps a single one.
    fn outcome(&self, j: usize, t: &Transfer, key: &str) -> Result<Receipt, LedgerError> {
        let transfer_id = || self.required(j, self.transfer_ids[j], "transfer id").map(TransferId);
        let receipt = |replayed| -> Result<Receipt, LedgerError> {
            Ok(Receipt {
                transfer_id: transfer_id()?,
                from: t.from,
                to: t.to,
                amount: self.required(j, self.amounts[j], "amount")?,
                from_balance: self.required(j, self.from_balances[j], "from balance")?,
                to_balance: self.required(j, self.to_balances[j], "to balance")?,
                replayed,
            })
        };
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let outcome = Outcome::parse(&self.outcomes[j])
            .ok_or_else(|| unexpected(FUNCTION, format!("item {j}: unknown outcome {:?}", self.outcomes[j])))?;
        match outcome {
            Outcome::Ok => receipt(false),
            Outcome::Replayed => receipt(true),
            Outcome::IdempotencyConflict => Err(LedgerError::IdempotencyConflict {
                key: key.to_string(),
                existing: KeyHolder::Transfer(transfer_id()?),
            }),
            Outcome::AccountNotFound => {
                Err(LedgerError::AccountNotFound { account: AccountId(self.required(j, self.accounts[j], "account")?) })
            }
            Outcome::CurrencyMismatch => Err(LedgerError::CurrencyMismatch {
                from: t.from,
                from_currency: text(&self.from_currencies[j]),
                to: t.to,
                to_currency: text(&self.to_currencies[j]),
            }),
            Outcome::InvalidScale => Err(LedgerError::InvalidAmount {
                amount: t.amount,
                reason: format!(
                    "more than {} decimal places, the scale of {}",
                    self.currency_scales[j].unwrap_or_default(),
                    text(&self.from_currencies[j])
                ),
            }),
            Outcome::InsufficientFunds => Err(LedgerError::InsufficientFunds {
                account: AccountId(self.required(j, self.accounts[j], "account")?),
                available: self.required(j, self.availables[j], "available")?,
                requested: t.amount,
            }),
            Outcome::Overflow => Err(LedgerError::InvalidAmount {
                amount: t.amount,
                reason: "the resulting balance would exceed the largest the ledger can represent".into(),
            }),
            Outcome::AccountFrozen => {
                Err(LedgerError::AccountFrozen { account: AccountId(self.required(j, self.accounts[j], "account")?) })
            }
            Outcome::AccountClosed => {
                Err(LedgerError::AccountClosed { account: AccountId(self.required(j, self.accounts[j], "account")?) })
            }
            Outcome::BalanceLimitExceeded => Err(LedgerError::BalanceLimitExceeded {
                account: AccountId(self.required(j, self.accounts[j], "account")?),
                max_balance: self.required(j, self.availables[j], "available")?,
                requested: t.amount,
            }),
            other => Err(unexpected(
                FUNCTION,
                format!("item {j}: outcome {:?} is not one this function gives", other.as_str()),
            )),
        }
    }
}
