-- Migration 4: batches of transfers and multi-leg postings, each one implicit transaction and
-- one round trip, with every account involved locked once, in ascending id order, by one
-- statement (the lock statement of lock_accounts(), aggregated into arrays).
--
-- A posting is a transfer row without from_account/to_account (both NULL) and with N entries,
-- one per account, summing to zero per currency; its amount is the sum of its credit legs.
-- An ordinary transfer keeps both columns. Existing rows all have both (they were NOT NULL), so
-- the shape constraint is added NOT VALID (no table scan under an exclusive lock) and holds for
-- every new or updated row.
ALTER TABLE wallet_ledger.transfers
    ALTER COLUMN from_account DROP NOT NULL,
    ALTER COLUMN to_account DROP NOT NULL,
    ADD CONSTRAINT transfers_shape CHECK ((from_account IS NULL) = (to_account IS NULL)) NOT VALID;

-- transfer_batch: the items are parallel arrays (p_from[i], p_to[i], p_amount[i], p_key[i],
-- p_memo[i]); every item carries a key (the library gives keyless items an internal one).
-- p_union: every account id of the items, sorted ascending, each once; p_fpos[i] / p_tpos[i]:
-- the 1-based position of p_from[i] / p_to[i] in p_union (computed by the caller, so that no
-- statement here has to join item arrays with account arrays: with a generic plan such a join
-- of two function scans can become a nested loop, quadratic in the batch size).
-- Items are decided in order, in memory, against the locked balances as the earlier accepted
-- items left them; then every accepted item is written by three set-based statements.
-- Per item (arrays indexed like the input):
--   outcomes: ok, replayed, idempotency_conflict, account_not_found (accounts[i]),
--             currency_mismatch (from_currencies, to_currencies), invalid_scale
--             (currency_scales, from_currencies), insufficient_funds (accounts, availables),
--             overflow (a balance would outgrow accounts_balance_magnitude)
--   transfer_ids: the applied, replayed or conflicting transfer.
-- Idempotency per item: a key already committed answers like transfer() (replayed or
-- conflict); a key used by an earlier item of this batch that was applied or replayed answers
-- the same way against that item; a key whose earlier items were all refused is free (a
-- refusal does not consume a key).
-- A refusal of one item writes nothing for it and leaves the others alone.
CREATE FUNCTION wallet_ledger.transfer_batch(
    p_from bigint[], p_to bigint[], p_amount numeric[], p_key text[], p_memo text[],
    p_lock_mode smallint, p_lock_timeout_ms integer,
    p_union bigint[], p_fpos integer[], p_tpos integer[],
    OUT outcomes text[], OUT transfer_ids bigint[], OUT from_balances numeric[], OUT to_balances numeric[],
    OUT accounts bigint[], OUT availables numeric[], OUT from_currencies text[], OUT to_currencies text[],
    OUT currency_scales smallint[])
LANGUAGE plpgsql AS $fn$
DECLARE
    n          integer := coalesce(cardinality(p_from), 0);
    r          record;
    v_i        integer;
    v_j        integer;
    v_f        integer;
    v_t        integer;
    v_amount   numeric;
    v_saved    text;
    v_seq      regclass;
    -- committed keys, per item
    v_db_id    bigint[];
    v_db_same  boolean[];
    v_db_fbal  numeric[];
    v_db_tbal  numeric[];
    -- keys inside the batch: the first item with each key, and the item holding it now
    v_first    integer[];
    v_holder   integer[];
    -- the locked accounts, sorted by id; positions of each item's accounts among them
    v_ids      bigint[];
    v_bal      numeric[];
    v_held     numeric[];
    v_min      numeric[];
    v_ver      bigint[];
    v_cur      text[];
    v_scale    smallint[];
    v_lim      numeric[];
    v_touched  boolean[];
    v_fpos     integer[];
    v_tpos     integer[];
    v_need     bigint[];
    v_map      integer[];
    -- what is written: transfers and entries
    v_tids     bigint[];
    w_id       bigint[] := '{}';
    w_from     bigint[] := '{}';
    w_to       bigint[] := '{}';
    w_amount   numeric[] := '{}';
    w_key      text[] := '{}';
    w_memo     text[] := '{}';
    e_tid      bigint[] := '{}';
    e_acc      bigint[] := '{}';
    e_amt      numeric[] := '{}';
    e_bal      numeric[] := '{}';
    e_ver      bigint[] := '{}';
    v_accepted integer := 0;
    -- the fast path: every item accepted, decided set-based
    v_simple   boolean := true;
    v_ok       boolean;
    f_amount   numeric[];
    f_from_bal numeric[];
    f_to_bal   numeric[];
    f_item     bigint[];
    a_id       bigint[];
    a_bal      numeric[];
    a_ver      bigint[];
BEGIN
    outcomes := array_fill(NULL::text, ARRAY[n]);
    transfer_ids := array_fill(NULL::bigint, ARRAY[n]);
    from_balances := array_fill(NULL::numeric, ARRAY[n]);
    to_balances := array_fill(NULL::numeric, ARRAY[n]);
    accounts := array_fill(NULL::bigint, ARRAY[n]);
    availables := array_fill(NULL::numeric, ARRAY[n]);
    from_currencies := array_fill(NULL::text, ARRAY[n]);
    to_currencies := array_fill(NULL::text, ARRAY[n]);
    currency_scales := array_fill(NULL::smallint, ARRAY[n]);
    IF n = 0 THEN
        RETURN;
    END IF;
    v_db_id := array_fill(NULL::bigint, ARRAY[n]);
    v_db_same := array_fill(NULL::boolean, ARRAY[n]);
    v_db_fbal := array_fill(NULL::numeric, ARRAY[n]);
    v_db_tbal := array_fill(NULL::numeric, ARRAY[n]);
    v_holder := array_fill(NULL::integer, ARRAY[n]);

    -- Idempotency, one statement for every key: the committed transfers holding any of them
    -- (one probe of the key's unique index per item: OFFSET 0 keeps the lateral subquery a
    -- parameterized index scan, never a scan of the whole table, whatever its estimates).
    FOR r IN SELECT k.i, tr.id,
                    coalesce(tr.from_account = p_from[k.i] AND tr.to_account = p_to[k.i]
                             AND tr.amount = p_amount[k.i] AND tr.memo IS NOT DISTINCT FROM p_memo[k.i], false) AS same,
                    (SELECT e.balance_after FROM wallet_ledger.entries e
                      WHERE e.transfer_id = tr.id AND e.account_id = tr.from_account) AS fbal,
                    (SELECT e.balance_after FROM wallet_ledger.entries e
                      WHERE e.transfer_id = tr.id AND e.account_id = tr.to_account) AS tbal
               FROM unnest(p_key) WITH ORDINALITY AS k(key, i),
                    LATERAL (SELECT * FROM wallet_ledger.transfers t WHERE t.idempotency_key = k.key OFFSET 0) tr LOOP
        v_db_id[r.i] := r.id;
        v_simple := false;
        v_db_same[r.i] := r.same;
        v_db_fbal[r.i] := r.fbal;
        v_db_tbal[r.i] := r.tbal;
    END LOOP;

    -- The first item of each key, for keys repeated inside the batch.
    SELECT array_agg(keys.first ORDER BY keys.i), v_simple AND bool_and(keys.first = keys.i) INTO v_first, v_simple
      FROM (SELECT k.i, min(k.i) OVER (PARTITION BY k.key) AS first
              FROM unnest(p_key) WITH ORDINALITY AS k(key, i)) keys;

    -- Every account of the batch, each once (those of items a committed key answers included:
    -- a lock more, never a lock out of order).
    v_need := p_union;
    IF cardinality(v_need) > 0 THEN
        -- The lock statement of lock_accounts(), written out and aggregated: every account once,
        -- ascending id (the sort is below the row-locking node), FOR NO KEY UPDATE.
        IF p_lock_mode = 2 THEN
            v_saved := current_setting('lock_timeout');
            PERFORM set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true);
        END IF;
        IF p_lock_mode = 1 THEN
            SELECT array_agg(l.id ORDER BY l.id), array_agg(l.balance ORDER BY l.id), array_agg(l.held ORDER BY l.id),
                   array_agg(l.min_balance ORDER BY l.id), array_agg(l.version ORDER BY l.id),
                   array_agg(l.currency ORDER BY l.id), array_agg(l.scale ORDER BY l.id),
                   array_agg(1e28 / power(10::numeric, l.scale) ORDER BY l.id)
              INTO v_ids, v_bal, v_held, v_min, v_ver, v_cur, v_scale, v_lim
              FROM (SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale
                      FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
                     WHERE a.id = ANY (v_need) ORDER BY a.id FOR NO KEY UPDATE OF a NOWAIT) l;
        ELSE
            SELECT array_agg(l.id ORDER BY l.id), array_agg(l.balance ORDER BY l.id), array_agg(l.held ORDER BY l.id),
                   array_agg(l.min_balance ORDER BY l.id), array_agg(l.version ORDER BY l.id),
                   array_agg(l.currency ORDER BY l.id), array_agg(l.scale ORDER BY l.id),
                   array_agg(1e28 / power(10::numeric, l.scale) ORDER BY l.id)
              INTO v_ids, v_bal, v_held, v_min, v_ver, v_cur, v_scale, v_lim
              FROM (SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale
                      FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
                     WHERE a.id = ANY (v_need) ORDER BY a.id FOR NO KEY UPDATE OF a) l;
        END IF;
        IF p_lock_mode = 2 THEN
            PERFORM set_config('lock_timeout', v_saved, true);
        END IF;
        v_touched := array_fill(false, ARRAY[coalesce(cardinality(v_ids), 0)]);
        -- Each item's accounts as positions in the locked arrays (NULL: no such account). When
        -- every id exists the caller's positions are those; otherwise map them with one merge of
        -- the two sorted lists.
        IF coalesce(cardinality(v_ids), 0) = cardinality(p_union) THEN
            v_fpos := p_fpos;
            v_tpos := p_tpos;
        ELSE
            v_map := array_fill(NULL::integer, ARRAY[cardinality(p_union)]);
            v_j := 1;
            FOR v_i IN 1 .. cardinality(p_union) LOOP
                IF v_j <= coalesce(cardinality(v_ids), 0) AND v_ids[v_j] = p_union[v_i] THEN
                    v_map[v_i] := v_j;
                    v_j := v_j + 1;
                END IF;
            END LOOP;
            v_fpos := array_fill(NULL::integer, ARRAY[n]);
            v_tpos := array_fill(NULL::integer, ARRAY[n]);
            FOR v_i IN 1 .. n LOOP
                v_fpos[v_i] := v_map[p_fpos[v_i]];
                v_tpos[v_i] := v_map[p_tpos[v_i]];
            END LOOP;
        END IF;
    END IF;

    -- The fast path, for the common batch: no key committed or repeated, and every item accepted.
    -- Then every item's balances follow from running sums per account (a window over the legs
    -- in item order), so the whole batch is decided by one statement instead of a plpgsql loop.
    -- Any item that would be refused (unknown account, currency, scale, floor, overflow) sends
    -- the batch to the loop below, which decides item by item; both give the same results when
    -- every item is accepted.
    v_seq := pg_get_serial_sequence('wallet_ledger.transfers', 'id')::regclass;
    IF v_simple AND v_ids IS NOT NULL THEN
        WITH items AS (
            SELECT u.i, u.fp, u.tp, round(u.amount, v_scale[u.fp]) AS amount,
                   v_cur[u.fp] = v_cur[u.tp] AND min_scale(u.amount) <= v_scale[u.fp] AS valid
              FROM unnest(p_amount, v_fpos, v_tpos) WITH ORDINALITY AS u(amount, fp, tp, i)
             WHERE u.fp IS NOT NULL AND u.tp IS NOT NULL),
        legs AS (
            SELECT it.i, 0 AS side, it.fp AS pos, -it.amount AS delta FROM items it
            UNION ALL
            SELECT it.i, 1, it.tp, it.amount FROM items it),
        run AS (
            SELECT l.i, l.side, l.pos, l.delta,
                   v_bal[l.pos] + sum(l.delta) OVER w AS after,
                   v_ver[l.pos] + row_number() OVER w AS version,
                   v_held[l.pos] AS held, v_min[l.pos] AS floor, v_lim[l.pos] AS lim
              FROM legs l
            WINDOW w AS (PARTITION BY l.pos ORDER BY l.i, l.side ROWS UNBOUNDED PRECEDING)),
        last AS (
            SELECT DISTINCT ON (q.pos) q.pos, q.after, q.version FROM run q ORDER BY q.pos, q.i DESC, q.side DESC)
        SELECT (SELECT count(*) FROM items it WHERE it.valid) = n
               AND NOT EXISTS (SELECT 1 FROM run q
                                WHERE (q.side = 0 AND q.floor IS NOT NULL AND q.after - q.held < q.floor)
                                   OR (abs(q.after) >= q.lim
                                       AND abs(q.after) * power(10::numeric, scale(q.after)) >= 1e28)),
               (SELECT array_agg(it.amount ORDER BY it.i) FROM items it),
               (SELECT array_agg(q.after ORDER BY q.i) FROM run q WHERE q.side = 0),
               (SELECT array_agg(q.after ORDER BY q.i) FROM run q WHERE q.side = 1),
               (SELECT array_agg(q.i ORDER BY q.i, q.side) FROM run q),
               (SELECT array_agg(v_ids[q.pos] ORDER BY q.i, q.side) FROM run q),
               (SELECT array_agg(q.delta ORDER BY q.i, q.side) FROM run q),
               (SELECT array_agg(q.after ORDER BY q.i, q.side) FROM run q),
               (SELECT array_agg(q.version ORDER BY q.i, q.side) FROM run q),
               (SELECT array_agg(v_ids[l.pos]) FROM last l),
               (SELECT array_agg(l.after) FROM last l),
               (SELECT array_agg(l.version) FROM last l)
          INTO v_ok, f_amount, f_from_bal, f_to_bal, f_item, e_acc, e_amt, e_bal, e_ver, a_id, a_bal, a_ver;
        IF v_ok THEN
            -- Ids in item order, drawn only now that every item is accepted.
            SELECT array_agg(nextval(v_seq) ORDER BY g) INTO v_tids FROM generate_series(1, n) g;
            INSERT INTO wallet_ledger.transfers (id, from_account, to_account, amount, idempotency_key, memo)
            OVERRIDING SYSTEM VALUE
            SELECT * FROM unnest(v_tids, p_from, p_to, f_amount, p_key, p_memo);
            INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version)
            SELECT v_tids[x.item], x.acc, x.amount, x.after, x.version
              FROM unnest(f_item, e_acc, e_amt, e_bal, e_ver) AS x(item, acc, amount, after, version);
            UPDATE wallet_ledger.accounts ac SET balance = x.after, version = x.version
              FROM unnest(a_id, a_bal, a_ver) AS x(id, after, version)
             WHERE ac.id = x.id;
            outcomes := array_fill('ok'::text, ARRAY[n]);
            transfer_ids := v_tids;
            from_balances := f_from_bal;
            to_balances := f_to_bal;
            RETURN;
        END IF;
        e_acc := '{}'; e_amt := '{}'; e_bal := '{}'; e_ver := '{}';
    END IF;

    -- Transfer ids are drawn from the identity's sequence as items are accepted (in item order),
    -- so that later items can name earlier ones (replays and conflicts inside the batch).

    -- Decide every item, in order, in memory.
    FOR v_i IN 1 .. n LOOP
        IF v_db_id[v_i] IS NOT NULL THEN
            transfer_ids[v_i] := v_db_id[v_i];
            IF v_db_same[v_i] THEN
                outcomes[v_i] := 'replayed';
                from_balances[v_i] := v_db_fbal[v_i];
                to_balances[v_i] := v_db_tbal[v_i];
            ELSE
                outcomes[v_i] := 'idempotency_conflict';
            END IF;
            CONTINUE;
        END IF;
        v_j := v_holder[v_first[v_i]];
        IF v_j IS NOT NULL THEN
            transfer_ids[v_i] := transfer_ids[v_j];
            IF p_from[v_j] = p_from[v_i] AND p_to[v_j] = p_to[v_i] AND p_amount[v_j] = p_amount[v_i]
               AND p_memo[v_j] IS NOT DISTINCT FROM p_memo[v_i] THEN
                outcomes[v_i] := 'replayed';
                from_balances[v_i] := from_balances[v_j];
                to_balances[v_i] := to_balances[v_j];
            ELSE
                outcomes[v_i] := 'idempotency_conflict';
            END IF;
            CONTINUE;
        END IF;
        v_f := v_fpos[v_i];
        v_t := v_tpos[v_i];
        IF v_f IS NULL THEN
            outcomes[v_i] := 'account_not_found'; accounts[v_i] := p_from[v_i]; CONTINUE;
        END IF;
        IF v_t IS NULL THEN
            outcomes[v_i] := 'account_not_found'; accounts[v_i] := p_to[v_i]; CONTINUE;
        END IF;
        from_currencies[v_i] := v_cur[v_f];
        to_currencies[v_i] := v_cur[v_t];
        currency_scales[v_i] := v_scale[v_f];
        IF v_cur[v_f] <> v_cur[v_t] THEN
            outcomes[v_i] := 'currency_mismatch'; CONTINUE;
        END IF;
        IF min_scale(p_amount[v_i]) > v_scale[v_f] THEN
            outcomes[v_i] := 'invalid_scale'; CONTINUE;
        END IF;
        v_amount := round(p_amount[v_i], v_scale[v_f]);
        IF v_min[v_f] IS NOT NULL AND v_bal[v_f] - v_held[v_f] - v_amount < v_min[v_f] THEN
            outcomes[v_i] := 'insufficient_funds'; accounts[v_i] := p_from[v_i];
            availables[v_i] := v_bal[v_f] - v_held[v_f] - v_min[v_f];
            CONTINUE;
        END IF;

        -- The accounts_balance_magnitude CHECK, judged here per item so that one item too large
        -- is refused alone (a balance's scale never exceeds its currency's, so below v_lim
        -- the exact test cannot fail).
        IF (abs(v_bal[v_f] - v_amount) >= v_lim[v_f]
            AND abs(v_bal[v_f] - v_amount) * power(10::numeric, scale(v_bal[v_f] - v_amount)) >= 1e28)
           OR (abs(v_bal[v_t] + v_amount) >= v_lim[v_t]
            AND abs(v_bal[v_t] + v_amount) * power(10::numeric, scale(v_bal[v_t] + v_amount)) >= 1e28) THEN
            outcomes[v_i] := 'overflow'; CONTINUE;
        END IF;

        -- Accepted: move the money in memory and record what to write.
        v_accepted := v_accepted + 1;
        outcomes[v_i] := 'ok';
        transfer_ids[v_i] := nextval(v_seq);
        v_holder[v_first[v_i]] := v_i;
        v_bal[v_f] := v_bal[v_f] - v_amount;
        v_ver[v_f] := v_ver[v_f] + 1;
        v_bal[v_t] := v_bal[v_t] + v_amount;
        v_ver[v_t] := v_ver[v_t] + 1;
        v_touched[v_f] := true;
        v_touched[v_t] := true;
        from_balances[v_i] := v_bal[v_f];
        to_balances[v_i] := v_bal[v_t];
        w_id[v_accepted] := transfer_ids[v_i];
        w_from[v_accepted] := p_from[v_i];
        w_to[v_accepted] := p_to[v_i];
        w_amount[v_accepted] := v_amount;
        w_key[v_accepted] := p_key[v_i];
        w_memo[v_accepted] := p_memo[v_i];
        e_tid[2 * v_accepted - 1] := transfer_ids[v_i];
        e_acc[2 * v_accepted - 1] := p_from[v_i];
        e_amt[2 * v_accepted - 1] := -v_amount;
        e_bal[2 * v_accepted - 1] := v_bal[v_f];
        e_ver[2 * v_accepted - 1] := v_ver[v_f];
        e_tid[2 * v_accepted] := transfer_ids[v_i];
        e_acc[2 * v_accepted] := p_to[v_i];
        e_amt[2 * v_accepted] := v_amount;
        e_bal[2 * v_accepted] := v_bal[v_t];
        e_ver[2 * v_accepted] := v_ver[v_t];
    END LOOP;

    IF v_accepted = 0 THEN
        RETURN;
    END IF;

    -- Apply, set-based: every row written here is locked by this transaction.
    INSERT INTO wallet_ledger.transfers (id, from_account, to_account, amount, idempotency_key, memo)
    OVERRIDING SYSTEM VALUE
    SELECT * FROM unnest(w_id, w_from, w_to, w_amount, w_key, w_memo);

    INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version)
    SELECT * FROM unnest(e_tid, e_acc, e_amt, e_bal, e_ver);

    UPDATE wallet_ledger.accounts a SET balance = u.balance, version = u.version
      FROM unnest(v_ids, v_bal, v_ver, v_touched) AS u(id, balance, version, touched)
     WHERE a.id = u.id AND u.touched;
END
$fn$;

-- post: one multi-leg posting. p_accounts[v_i] receives p_amounts[v_i] (signed, non-zero; every
-- account at most once: the library refuses an account named twice, and so does this function).
-- Outcomes: ok, replayed, idempotency_conflict, account_not_found (account),
-- invalid_scale (account, currency, currency_scale), unbalanced (currency, amount_sum),
-- insufficient_funds (account, available). A refusal writes nothing.
-- balances: each leg's account balance after the posting, in leg order.
-- Replay: a committed key whose transfer is a posting with the same memo and exactly these legs
-- (as sets of (account, amount)); anything else under the key is a conflict.
CREATE FUNCTION wallet_ledger.post(
    p_accounts bigint[], p_amounts numeric[], p_key text, p_memo text,
    p_lock_mode smallint, p_lock_timeout_ms integer,
    OUT outcome text, OUT transfer_id bigint, OUT balances numeric[], OUT account bigint,
    OUT available numeric, OUT currency text, OUT amount_sum numeric, OUT currency_scale smallint)
LANGUAGE plpgsql AS $fn$
DECLARE
    n         integer := coalesce(cardinality(p_accounts), 0);
    v_i       integer;
    v_k       integer;
    v_prev    wallet_ledger.transfers%ROWTYPE;
    v_saved   text;
    v_ids     bigint[];
    v_bal     numeric[];
    v_held    numeric[];
    v_min     numeric[];
    v_ver     bigint[];
    v_cur     text[];
    v_scale   smallint[];
    v_pos     bigint[];
    v_amounts numeric[] := '{}';
    v_after   numeric[] := '{}';
    v_version bigint[] := '{}';
    v_credits numeric := 0;
BEGIN
    IF n < 2 OR (SELECT count(DISTINCT x) FROM unnest(p_accounts) x) <> n THEN
        RAISE EXCEPTION 'wallet_ledger.post: at least two legs on distinct accounts' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO v_prev FROM wallet_ledger.transfers tr WHERE tr.idempotency_key = p_key;
    IF FOUND THEN
        transfer_id := v_prev.id;
        IF v_prev.from_account IS NULL AND v_prev.memo IS NOT DISTINCT FROM p_memo
           AND (SELECT count(*) FROM wallet_ledger.entries e WHERE e.transfer_id = v_prev.id) = n
           AND NOT EXISTS (SELECT 1 FROM unnest(p_accounts, p_amounts) AS l(id, amount)
                            WHERE NOT EXISTS (SELECT 1 FROM wallet_ledger.entries e
                                               WHERE e.transfer_id = v_prev.id AND e.account_id = l.id
                                                 AND e.amount = l.amount)) THEN
            outcome := 'replayed';
            SELECT array_agg(e.balance_after ORDER BY l.i) INTO balances
              FROM unnest(p_accounts) WITH ORDINALITY AS l(id, i)
              JOIN wallet_ledger.entries e ON e.transfer_id = v_prev.id AND e.account_id = l.id;
        ELSE
            outcome := 'idempotency_conflict';
        END IF;
        RETURN;
    END IF;

    -- The lock statement of lock_accounts(), written out and aggregated: every leg's account
    -- once, ascending id, FOR NO KEY UPDATE.
    IF p_lock_mode = 2 THEN
        v_saved := current_setting('lock_timeout');
        PERFORM set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true);
    END IF;
    IF p_lock_mode = 1 THEN
        SELECT array_agg(l.id ORDER BY l.id), array_agg(l.balance ORDER BY l.id), array_agg(l.held ORDER BY l.id),
               array_agg(l.min_balance ORDER BY l.id), array_agg(l.version ORDER BY l.id),
               array_agg(l.currency ORDER BY l.id), array_agg(l.scale ORDER BY l.id)
          INTO v_ids, v_bal, v_held, v_min, v_ver, v_cur, v_scale
          FROM (SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale
                  FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
                 WHERE a.id = ANY (p_accounts) ORDER BY a.id FOR NO KEY UPDATE OF a NOWAIT) l;
    ELSE
        SELECT array_agg(l.id ORDER BY l.id), array_agg(l.balance ORDER BY l.id), array_agg(l.held ORDER BY l.id),
               array_agg(l.min_balance ORDER BY l.id), array_agg(l.version ORDER BY l.id),
               array_agg(l.currency ORDER BY l.id), array_agg(l.scale ORDER BY l.id)
          INTO v_ids, v_bal, v_held, v_min, v_ver, v_cur, v_scale
          FROM (SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale
                  FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
                 WHERE a.id = ANY (p_accounts) ORDER BY a.id FOR NO KEY UPDATE OF a) l;
    END IF;
    IF p_lock_mode = 2 THEN
        PERFORM set_config('lock_timeout', v_saved, true);
    END IF;
    SELECT array_agg(p.pos ORDER BY u.i) INTO v_pos
      FROM unnest(p_accounts) WITH ORDINALITY AS u(id, i)
      LEFT JOIN unnest(v_ids) WITH ORDINALITY AS p(id, pos) ON p.id = u.id;

    -- Checks, on the locked values, all before any write.
    FOR v_i IN 1 .. n LOOP
        IF v_pos[v_i] IS NULL THEN
            outcome := 'account_not_found'; account := p_accounts[v_i]; RETURN;
        END IF;
    END LOOP;
    FOR v_i IN 1 .. n LOOP
        v_k := v_pos[v_i];
        IF min_scale(p_amounts[v_i]) > v_scale[v_k] THEN
            outcome := 'invalid_scale'; account := p_accounts[v_i]; currency := v_cur[v_k];
            currency_scale := v_scale[v_k];
            RETURN;
        END IF;
        v_amounts[v_i] := round(p_amounts[v_i], v_scale[v_k]);
    END LOOP;
    SELECT s.currency, s.total INTO currency, amount_sum
      FROM (SELECT v_cur[l.pos] AS currency, sum(l.amount) AS total
              FROM unnest(v_pos, v_amounts) AS l(pos, amount) GROUP BY 1) s
     WHERE s.total <> 0 ORDER BY s.currency LIMIT 1;
    IF FOUND THEN
        outcome := 'unbalanced'; RETURN;
    END IF;
    currency := NULL;
    FOR v_i IN 1 .. n LOOP
        v_k := v_pos[v_i];
        IF v_amounts[v_i] < 0 AND v_min[v_k] IS NOT NULL AND v_bal[v_k] - v_held[v_k] + v_amounts[v_i] < v_min[v_k] THEN
            outcome := 'insufficient_funds'; account := p_accounts[v_i];
            available := v_bal[v_k] - v_held[v_k] - v_min[v_k];
            RETURN;
        END IF;
        v_after[v_i] := v_bal[v_k] + v_amounts[v_i];
        v_version[v_i] := v_ver[v_k] + 1;
        IF v_amounts[v_i] > 0 THEN
            v_credits := v_credits + v_amounts[v_i];
        END IF;
    END LOOP;

    -- Writes: one transfer row without from/to, one entry per leg, each account once.
    INSERT INTO wallet_ledger.transfers (from_account, to_account, amount, idempotency_key, memo)
    VALUES (NULL, NULL, v_credits, p_key, p_memo) RETURNING id INTO transfer_id;
    INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version)
    SELECT transfer_id, l.id, l.amount, l.after, l.version
      FROM unnest(p_accounts, v_amounts, v_after, v_version) AS l(id, amount, after, version);
    UPDATE wallet_ledger.accounts a SET balance = l.after, version = l.version
      FROM unnest(p_accounts, v_after, v_version) AS l(id, after, version)
     WHERE a.id = l.id;
    balances := v_after;
    outcome := 'ok';
END
$fn$;
