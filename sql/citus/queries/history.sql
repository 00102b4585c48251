-- History, Citus form. $1 account id, $2 account_version to start after, $3 page size.
-- The page of entries is one shard's (entries live with their account); their transfers live
-- with each transfer's from account, so for the entries where this account was credited they
-- are on other shards: the page is read first, then its transfers by id on every shard (served
-- by transfers_id), and the two joined on the coordinator. Oldest first.
WITH e AS MATERIALIZED (
    SELECT e.id, e.transfer_id, e.account_id, e.amount, e.balance_after, e.account_version, e.created_at
      FROM wallet_ledger.entries e
     WHERE e.account_id = $1 AND e.account_version > $2
     ORDER BY e.account_version
     LIMIT $3
), t AS MATERIALIZED (
    SELECT t.id, t.from_account, t.to_account, t.reverses, t.memo
      FROM wallet_ledger.transfers t
     WHERE t.id IN (SELECT transfer_id FROM e)
)
SELECT e.id, e.transfer_id, e.account_id,
       CASE WHEN e.account_id = t.from_account THEN t.to_account ELSE t.from_account END AS counterparty,
       e.amount, e.balance_after, e.account_version, t.reverses, t.memo, e.created_at
  FROM e JOIN t ON t.id = e.transfer_id
 ORDER BY e.account_version
