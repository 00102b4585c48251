-- The horizon, the
-- committed changes past it, and the age of the oldest open transaction that holds an xid
-- (other than this one): the kind of transaction that holds the horizon back.
SELECT s.horizon,
       (SELECT count(*) FROM wallet_ledger.transfers t WHERE t.id > s.horizon)
       + (SELECT count(*) FROM wallet_ledger.feed_events f WHERE f.position > s.horizon) AS held_back,
       (SELECT extract(epoch FROM clock_timestamp() - min(a.xact_start)) * 1000
          FROM pg_stat_activity a
         WHERE a.backend_xid IS NOT NULL AND a.pid <> pg_backend_pid())::float8 AS oldest_ms
  FROM wallet_ledger.feed_state s
