-- $1 account id, $2 instant timestamptz. Whether the account exists, and its balance after its
-- last entry at or before the instant (NULL: no entry yet then). Served by
-- entries_account_time, read backwards from the instant: one index probe. One statement, so
-- one snapshot; takes no row lock.
SELECT EXISTS (SELECT 1 FROM wallet_ledger.accounts a WHERE a.id = $1) AS found,
       (SELECT e.balance_after
          FROM wallet_ledger.entries e
         WHERE e.account_id = $1 AND e.created_at <= $2
         ORDER BY e.created_at DESC, e.id DESC
         LIMIT 1) AS balance
