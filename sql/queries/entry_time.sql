-- $1 entry id, $2 account id: the entry's time, if it is an entry of that account (the cursor
-- of history_between).
SELECT created_at FROM wallet_ledger.entries WHERE id = $1 AND account_id = $2
