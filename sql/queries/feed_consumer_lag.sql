-- $1 a consumer's name, or NULL for every consumer. One row per consumer (a name never used
-- reads as a consumer at the start of the feed): its position, changes delivered, committed
-- changes after its position (transfers by primary key, events by primary key) and the age of
-- the first of them.
WITH c AS (
    SELECT k.name, k.position, k.delivered, k.updated_at
      FROM wallet_ledger.feed_consumers k
     WHERE $1::text IS NULL OR k.name = $1::text
    UNION ALL
    SELECT $1::text, 0::bigint, 0::bigint, NULL::timestamptz
     WHERE $1::text IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM wallet_ledger.feed_consumers k WHERE k.name = $1::text)
)
SELECT c.name, c.position, c.delivered, c.updated_at,
       (SELECT count(*) FROM wallet_ledger.transfers t WHERE t.id > c.position)
       + (SELECT count(*) FROM wallet_ledger.feed_events f WHERE f.position > c.position) AS changes,
       COALESCE(extract(epoch FROM clock_timestamp() - LEAST(
           (SELECT e.created_at FROM wallet_ledger.entries e
             WHERE e.transfer_id = (SELECT min(t.id) FROM wallet_ledger.transfers t WHERE t.id > c.position)
             LIMIT 1),
           (SELECT f.at FROM wallet_ledger.feed_events f WHERE f.position > c.position
             ORDER BY f.position LIMIT 1))) * 1000, 0)::float8 AS behind_ms
  FROM c
 ORDER BY c.name
