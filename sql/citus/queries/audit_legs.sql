-- @legs, Citus form: each transfer has exactly its two legs, -amount on from and +amount on to,
-- between existing accounts of one currency; and no entry names a transfer that does not exist.
-- A transfer's rows live on up to three shards (the transfer with its from account, each leg with
-- its account), which no single join can reach on a worker, so the three inputs are read as
-- materialized CTEs (Citus runs each as its own query and joins the results on the coordinator).
-- That ships one row per transfer and per entry to the coordinator: the audit of a large
-- ledger on Citus is a batch job. $1: the most rows to return.
WITH t AS MATERIALIZED (
    SELECT t.id, t.from_account, t.to_account, t.amount, fa.currency AS from_currency
      FROM wallet_ledger.transfers t JOIN wallet_ledger.accounts fa ON fa.id = t.from_account
), ta AS MATERIALIZED (
    SELECT a.id, a.currency FROM wallet_ledger.accounts a
), e AS MATERIALIZED (
    SELECT e.id, e.transfer_id, e.account_id, e.amount FROM wallet_ledger.entries e
)
SELECT id, legs, total FROM (
    SELECT t.id, count(e.id) AS legs, coalesce(sum(e.amount), 0) AS total
      FROM t
      LEFT JOIN ta ON ta.id = t.to_account
      LEFT JOIN e ON e.transfer_id = t.id
     GROUP BY t.id, t.from_account, t.to_account, t.amount, t.from_currency, ta.id, ta.currency
    HAVING ta.id IS NULL OR count(e.id) <> 2 OR coalesce(sum(e.amount), 0) <> 0 OR t.from_currency <> ta.currency
        OR count(*) FILTER (WHERE e.account_id = t.from_account AND e.amount = -t.amount) <> 1
        OR count(*) FILTER (WHERE e.account_id = t.to_account AND e.amount = t.amount) <> 1
    UNION ALL
    SELECT e.transfer_id, count(*), sum(e.amount)
      FROM e LEFT JOIN t ON t.id = e.transfer_id
     WHERE t.id IS NULL
     GROUP BY e.transfer_id
) v
 ORDER BY id LIMIT $1;
