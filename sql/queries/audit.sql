-- The audit's checks, one statement each, all run in one REPEATABLE READ READ ONLY transaction
-- (one snapshot). Each returns only violations, computed in the server (aggregates and window
-- functions streamed over the tables), so the client receives nothing on a clean ledger.
-- $1 in each: the most rows to return.

-- @conservation: per currency, the balances sum to zero (money only enters through unbounded
-- accounts, which go negative by what they issued).
SELECT currency, sum(balance) AS actual
  FROM wallet_ledger.accounts GROUP BY currency HAVING sum(balance) <> 0
 ORDER BY currency LIMIT $1;

-- @balances: each balance equals the sum of its entries, each version their count.
SELECT a.id, a.balance, coalesce(e.total, 0) AS entries_total, a.version, coalesce(e.n, 0) AS entries_count
  FROM wallet_ledger.accounts a
  LEFT JOIN (SELECT account_id, sum(amount) AS total, count(*) AS n
               FROM wallet_ledger.entries GROUP BY account_id) e ON e.account_id = a.id
 WHERE a.balance <> coalesce(e.total, 0) OR a.version <> coalesce(e.n, 0)
 ORDER BY a.id LIMIT $1;

-- @chain: each account's entries are versions 1..n and each balance_after = previous + amount.
SELECT account_id, account_version, position, balance_after, previous + amount AS expected
  FROM (SELECT account_id, account_version, amount, balance_after,
               row_number() OVER w AS position,
               lag(balance_after, 1, 0::numeric) OVER w AS previous
          FROM wallet_ledger.entries
        WINDOW w AS (PARTITION BY account_id ORDER BY account_version)) chain
 WHERE account_version <> position OR balance_after <> previous + amount
 ORDER BY account_id, account_version LIMIT $1;

-- @legs: each transfer has exactly its two legs: -amount on from, +amount on to, same currency.
SELECT t.id, count(e.id) AS legs, coalesce(sum(e.amount), 0) AS total
  FROM wallet_ledger.transfers t
  JOIN wallet_ledger.accounts fa ON fa.id = t.from_account
  JOIN wallet_ledger.accounts ta ON ta.id = t.to_account
  LEFT JOIN wallet_ledger.entries e ON e.transfer_id = t.id
 GROUP BY t.id, fa.currency, ta.currency
HAVING count(e.id) <> 2 OR coalesce(sum(e.amount), 0) <> 0 OR fa.currency <> ta.currency
    OR count(*) FILTER (WHERE e.account_id = t.from_account AND e.amount = -t.amount) <> 1
    OR count(*) FILTER (WHERE e.account_id = t.to_account AND e.amount = t.amount) <> 1
 ORDER BY t.id LIMIT $1;

-- @postings: each posting (a transfer without from/to accounts) has at least two legs, on
-- distinct accounts, summing to zero in each currency, and its amount is the sum of its credits.
-- (Ordinary transfers are judged by @legs; transfers_shape keeps from/to both set or both NULL.)
SELECT t.id, p.currency, coalesce(p.legs, 0) AS legs, coalesce(p.total, 0) AS total
  FROM wallet_ledger.transfers t
  LEFT JOIN (SELECT e.transfer_id, a.currency, count(*) AS legs, sum(e.amount) AS total
               FROM wallet_ledger.entries e JOIN wallet_ledger.accounts a ON a.id = e.account_id
              GROUP BY e.transfer_id, a.currency) p ON p.transfer_id = t.id
  LEFT JOIN (SELECT e.transfer_id, count(*) AS legs, count(DISTINCT e.account_id) AS accounts,
                    coalesce(sum(e.amount) FILTER (WHERE e.amount > 0), 0) AS credits
               FROM wallet_ledger.entries e GROUP BY e.transfer_id) s ON s.transfer_id = t.id
 WHERE t.from_account IS NULL
   AND (p.transfer_id IS NULL OR p.total <> 0 OR s.legs < 2 OR s.legs <> s.accounts OR s.credits <> t.amount)
 ORDER BY t.id, p.currency LIMIT $1;

-- @floors: no bounded account's available balance (balance - held) below its floor.
SELECT id, balance - held AS available, min_balance FROM wallet_ledger.accounts
 WHERE min_balance IS NOT NULL AND balance - held < min_balance
 ORDER BY id LIMIT $1;

-- @held: each account's held amount equals the sum of its pending holds. (That no hold captured
-- more than it held, or without its transfer, is enforced by CHECK constraints on holds.)
SELECT a.id, a.held, coalesce(h.total, 0) AS pending_total
  FROM wallet_ledger.accounts a
  LEFT JOIN (SELECT from_account, sum(amount) AS total FROM wallet_ledger.holds
              WHERE state = 'pending' GROUP BY from_account) h ON h.from_account = a.id
 WHERE a.held <> coalesce(h.total, 0)
 ORDER BY a.id LIMIT $1;

-- @closed: a closed account holds nothing (accounts_closed_empty repeats it).
SELECT id, balance, held FROM wallet_ledger.accounts
 WHERE status = 'closed' AND (balance <> 0 OR held <> 0)
 ORDER BY id LIMIT $1;

-- @ceilings: no balance above its account's ceiling (accounts_ceiling repeats it).
SELECT id, balance, max_balance FROM wallet_ledger.accounts
 WHERE max_balance IS NOT NULL AND balance > max_balance
 ORDER BY id LIMIT $1;

-- @reversed: no transfer reversed beyond its amount, and each transfer's `reversed` is the sum
-- of the reversals pointing at it.
SELECT o.id, o.amount, o.reversed, coalesce(r.total, 0) AS reversals
  FROM wallet_ledger.transfers o
  LEFT JOIN (SELECT reverses, sum(amount) AS total FROM wallet_ledger.transfers
              WHERE reverses IS NOT NULL GROUP BY reverses) r ON r.reverses = o.id
 WHERE o.reversed > o.amount OR coalesce(r.total, 0) > o.amount OR o.reversed <> coalesce(r.total, 0)
 ORDER BY o.id LIMIT $1;

-- @reversals: every reversal points at an existing transfer between the same accounts in the
-- other direction: each of its legs is on an account of the original, with the opposite sign
-- (a transfer's reversal swaps from and to; a posting's negates its legs).
SELECT r.id, r.reverses
  FROM wallet_ledger.transfers r
  LEFT JOIN wallet_ledger.transfers o ON o.id = r.reverses
 WHERE r.reverses IS NOT NULL
   AND (o.id IS NULL
        OR (o.from_account IS NULL) <> (r.from_account IS NULL)
        OR r.from_account <> o.to_account OR r.to_account <> o.from_account
        OR EXISTS (SELECT 1 FROM wallet_ledger.entries e WHERE e.transfer_id = r.id
                      AND NOT EXISTS (SELECT 1 FROM wallet_ledger.entries oe
                                       WHERE oe.transfer_id = o.id AND oe.account_id = e.account_id
                                         AND sign(oe.amount) = -sign(e.amount))))
 ORDER BY r.id LIMIT $1;

-- @references: every row points at rows that exist: an entry at its account and its transfer,
-- a transfer at its accounts, a hold at its accounts and its capture's transfer, a hold event at
-- its hold. Since migration 12 no foreign key says so: the ledger's functions write references
-- only to rows they have just locked or inserted, a granted role cannot write these tables, and
-- the reference triggers refuse a bad row from anybody else. This check reports a row written
-- past all of them (triggers switched off by a superuser).
SELECT source, id, reference, missing
  FROM (SELECT 'entries' AS source, e.id, 'account_id' AS reference, e.account_id AS missing
          FROM wallet_ledger.entries e
         WHERE NOT EXISTS (SELECT 1 FROM wallet_ledger.accounts a WHERE a.id = e.account_id)
        UNION ALL
        SELECT 'entries', e.id, 'transfer_id', e.transfer_id
          FROM wallet_ledger.entries e
         WHERE NOT EXISTS (SELECT 1 FROM wallet_ledger.transfers t WHERE t.id = e.transfer_id)
        UNION ALL
        SELECT 'transfers', t.id, r.reference, r.missing
          FROM wallet_ledger.transfers t
         CROSS JOIN LATERAL (VALUES ('from_account', t.from_account), ('to_account', t.to_account)) r (reference, missing)
         WHERE r.missing IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM wallet_ledger.accounts a WHERE a.id = r.missing)
        UNION ALL
        SELECT 'holds', h.id, r.reference, r.missing
          FROM wallet_ledger.holds h
         CROSS JOIN LATERAL (VALUES ('from_account', h.from_account), ('to_account', h.to_account)) r (reference, missing)
         WHERE NOT EXISTS (SELECT 1 FROM wallet_ledger.accounts a WHERE a.id = r.missing)
        UNION ALL
        SELECT 'holds', h.id, 'transfer_id', h.transfer_id
          FROM wallet_ledger.holds h
         WHERE h.transfer_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM wallet_ledger.transfers t WHERE t.id = h.transfer_id)
        UNION ALL
        SELECT 'hold_events', v.id, 'hold_id', v.hold_id
          FROM wallet_ledger.hold_events v
         WHERE NOT EXISTS (SELECT 1 FROM wallet_ledger.holds h WHERE h.id = v.hold_id)) dangling
 ORDER BY source, id, reference LIMIT $1;

-- @counts
SELECT (SELECT count(*) FROM wallet_ledger.accounts) AS accounts,
       (SELECT count(*) FROM wallet_ledger.transfers) AS transfers,
       (SELECT count(*) FROM wallet_ledger.entries) AS entries;
