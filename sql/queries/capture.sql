-- $1 hold id, $2 amount (NULL = all of it), $3 lock mode, $4 lock timeout ms.
SELECT outcome, state, transfer_id, from_account, to_account, amount, from_balance, to_balance, available,
       currency_scale, hold_amount
  FROM wallet_ledger.capture($1, $2, $3, $4)
