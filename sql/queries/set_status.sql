-- $1 account id, $2 action ('freeze', 'unfreeze', 'close'), $3 lock mode, $4 lock timeout ms.
-- One statement: the account's row lock, the check and the change in one implicit transaction.
-- external_id and metadata never change after opening: read beside the function's answer.
SELECT s.outcome, s.id, s.currency, s.balance, s.min_balance, s.max_balance, s.held, s.status, s.version,
       s.name, s.created_at, a.external_id, a.metadata
  FROM wallet_ledger.set_status($1, $2, $3, $4) s
  LEFT JOIN wallet_ledger.accounts a ON a.id = s.id
