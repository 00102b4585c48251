-- $1 account id; $2, $3 the page's lower bound (entry created_at timestamptz, entry id bigint),
-- exclusive: the cursor entry or the period's start (as (from, i64::MAX)), whichever is later;
-- $4 to timestamptz (inclusive); $5 page size. An account's entries of a period, oldest
-- first: served by entries_account_time. The entries are read first and their transfers by id
-- after, the form Citus can run too (entries live with their account, transfers with their
-- from account). Takes no row lock.
WITH e AS MATERIALIZED (
    SELECT e.id, e.transfer_id, e.account_id, e.amount, e.balance_after, e.account_version, e.created_at
      FROM wallet_ledger.entries e
     WHERE e.account_id = $1 AND (e.created_at, e.id) > ($2::timestamptz, $3::bigint) AND e.created_at <= $4
     ORDER BY e.created_at, e.id
     LIMIT $5
), t AS MATERIALIZED (
    SELECT t.id, t.from_account, t.to_account, t.reverses, t.memo
      FROM wallet_ledger.transfers t
     WHERE t.id IN (SELECT transfer_id FROM e)
)
SELECT e.id, e.transfer_id, e.account_id,
       CASE WHEN e.account_id = t.from_account THEN t.to_account ELSE t.from_account END AS counterparty,
       e.amount, e.balance_after, e.account_version, t.reverses, t.memo, e.created_at
  FROM e JOIN t ON t.id = e.transfer_id
 ORDER BY e.created_at, e.id
