-- $1 hold id, $2 lock mode, $3 lock timeout ms.
SELECT outcome, state FROM wallet_ledger.void($1, $2, $3)
