-- $1 account id, $2 from timestamptz (exclusive), $3 to timestamptz (inclusive). Whether the
-- account exists, its balances at both ends (NULL: no entry yet then) and the period's totals.
-- One statement, so every part reads the same snapshot: the visible entries of an account are
-- a prefix of its chain (an entry commits after the one before it), so opening + credits -
-- debits = closing holds whatever commits meanwhile. Served by entries_account_time (two
-- probes and one range); takes no row lock.
SELECT EXISTS (SELECT 1 FROM wallet_ledger.accounts a WHERE a.id = $1) AS found,
       (SELECT e.balance_after FROM wallet_ledger.entries e
         WHERE e.account_id = $1 AND e.created_at <= $2
         ORDER BY e.created_at DESC, e.id DESC LIMIT 1) AS opening,
       (SELECT e.balance_after FROM wallet_ledger.entries e
         WHERE e.account_id = $1 AND e.created_at <= $3
         ORDER BY e.created_at DESC, e.id DESC LIMIT 1) AS closing,
       s.debits, s.credits, s.entries
  FROM (SELECT COALESCE(sum(-e.amount) FILTER (WHERE e.amount < 0), 0) AS debits,
               COALESCE(sum(e.amount) FILTER (WHERE e.amount > 0), 0) AS credits,
               count(*) AS entries
          FROM wallet_ledger.entries e
         WHERE e.account_id = $1 AND e.created_at > $2 AND e.created_at <= $3) s
