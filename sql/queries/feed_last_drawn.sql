-- The last position drawn by any session (0 before the first): read before feed_advance, in a
-- statement of its own, so that every transaction that drew a position up to it already had
-- its xid when feed_advance takes one.
SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END AS last_drawn
  FROM wallet_ledger.transfers_id_seq s
