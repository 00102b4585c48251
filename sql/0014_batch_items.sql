-- Migration 14: transfer_batch() does less work per item (docs/benchmarks.md, "The batch
-- function's work per item (migration 14)").
--
-- Migration 13's function, with the same results for every input, and three changes:
--   - each item is first judged by one test that is true only when every check would pass;
--     an item it does not pass goes through the checks one by one, in the same order as
--     before, which give its refusal (or accept it: a sweep, a balance near the magnitude
--     bound);
--   - what is written is read back from the results (the accepted items' ids, accounts,
--     amounts and balances) instead of being copied into arrays of its own item by item;
--     from_currencies, to_currencies and currency_scales are filled for the two refusals that
--     report them (currency_mismatch, invalid_scale), as migration 4 documents them;
--   - the accounts are updated by the row versions the lock loop read (their ctid): this
--     function holds their locks, so no other transaction can have replaced those versions,
--     and nothing in it writes them before this update.
-- CREATE OR REPLACE resets a function's settings, so those of migrations 6 and 12 are stated
-- again: generic plans, no sequential scans, SECURITY DEFINER with the pinned search_path.
-- Not in Citus mode: batches are refused there (docs/citus.md).
DO $do$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;
    EXECUTE $sql$
CREATE OR REPLACE FUNCTION wallet_ledger.transfer_batch(
    p_from bigint[], p_to bigint[], p_amount numeric[], p_key text[], p_memo text[],
    p_lock_mode smallint, p_lock_timeout_ms integer,
    p_union bigint[], p_fpos integer[], p_tpos integer[], p_up_to boolean[], p_metadata jsonb[],
    OUT outcomes text[], OUT transfer_ids bigint[], OUT from_balances numeric[], OUT to_balances numeric[],
    OUT accounts bigint[], OUT availables numeric[], OUT from_currencies text[], OUT to_currencies text[],
    OUT currency_scales smallint[], OUT amounts numeric[])
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
    v_k        integer := 0;
    -- committed keys, per item
    v_db_id    bigint[];
    v_db_same  boolean[];
    v_db_fbal  numeric[];
    v_db_tbal  numeric[];
    v_db_amt   numeric[];
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
    v_st       text[];
    v_max      numeric[];
    v_fpos     integer[];
    v_tpos     integer[];
    v_need     bigint[];
    v_map      integer[];
    -- the accounts' versions when locked; each accepted item's two new versions
    v_ver0     bigint[];
    v_tid      tid[];
    v_fver     bigint[];
    v_tver     bigint[];
    v_accepted boolean := false;
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
    amounts := array_fill(NULL::numeric, ARRAY[n]);
    IF n = 0 THEN
        RETURN;
    END IF;
    v_db_id := array_fill(NULL::bigint, ARRAY[n]);
    v_db_same := array_fill(NULL::boolean, ARRAY[n]);
    v_db_fbal := array_fill(NULL::numeric, ARRAY[n]);
    v_db_tbal := array_fill(NULL::numeric, ARRAY[n]);
    v_db_amt := array_fill(NULL::numeric, ARRAY[n]);
    v_holder := array_fill(NULL::integer, ARRAY[n]);
    v_fver := array_fill(NULL::bigint, ARRAY[n]);
    v_tver := array_fill(NULL::bigint, ARRAY[n]);

    -- Idempotency, one statement for every key: the committed transfers holding any of them
    -- (one probe of the key's unique index per item: OFFSET 0 keeps the lateral subquery a
    -- parameterized index scan, never a scan of the whole table, whatever its estimates).
    FOR r IN SELECT k.i, tr.id,
                    coalesce(tr.from_account = p_from[k.i] AND tr.to_account = p_to[k.i]
                             AND (tr.amount = p_amount[k.i] OR (p_up_to[k.i] AND tr.amount <= p_amount[k.i]))
                             AND tr.reverses IS NULL AND tr.memo IS NOT DISTINCT FROM p_memo[k.i]
                             AND coalesce(tr.metadata::jsonb, '{}') = coalesce(p_metadata[k.i], '{}'), false) AS same,
                    tr.amount,
                    (SELECT e.balance_after FROM wallet_ledger.entries e
                      WHERE e.transfer_id = tr.id AND e.account_id = tr.from_account) AS fbal,
                    (SELECT e.balance_after FROM wallet_ledger.entries e
                      WHERE e.transfer_id = tr.id AND e.account_id = tr.to_account) AS tbal
               FROM unnest(p_key) WITH ORDINALITY AS k(key, i),
                    LATERAL (SELECT * FROM wallet_ledger.transfers t WHERE t.idempotency_key = k.key OFFSET 0) tr LOOP
        v_db_id[r.i] := r.id;
        v_db_same[r.i] := r.same;
        v_db_fbal[r.i] := r.fbal;
        v_db_tbal[r.i] := r.tbal;
        v_db_amt[r.i] := r.amount;
    END LOOP;

    -- The first item of each key, for keys repeated inside the batch.
    SELECT array_agg(keys.first ORDER BY keys.i) INTO v_first
      FROM (SELECT k.i, min(k.i) OVER (PARTITION BY k.key) AS first
              FROM unnest(p_key) WITH ORDINALITY AS k(key, i)) keys;

    -- Every account of the batch, each once (those of items a committed key answers included:
    -- a lock more, never a lock out of order).
    v_need := p_union;
    IF cardinality(v_need) > 0 THEN
        -- The lock statement of lock_accounts(), written out: every account once, ascending id
        -- (the sort is below the row-locking node, so rows are locked in that order as the loop
        -- reads them), FOR NO KEY UPDATE; the loop fills the arrays in the same order.
        IF p_lock_mode = 2 THEN
            v_saved := current_setting('lock_timeout');
            PERFORM set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true);
        END IF;
        IF p_lock_mode = 1 THEN
            FOR r IN SELECT a.ctid, a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale, a.status, a.max_balance
                       FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
                      WHERE a.id = ANY (v_need) ORDER BY a.id FOR NO KEY UPDATE OF a NOWAIT LOOP
                v_k := v_k + 1;
                v_tid[v_k] := r.ctid; v_ids[v_k] := r.id; v_bal[v_k] := r.balance; v_held[v_k] := r.held; v_min[v_k] := r.min_balance;
                v_ver[v_k] := r.version; v_cur[v_k] := r.currency; v_scale[v_k] := r.scale;
                v_lim[v_k] := 1e28 / power(10::numeric, r.scale); v_st[v_k] := r.status; v_max[v_k] := r.max_balance;
            END LOOP;
        ELSE
            FOR r IN SELECT a.ctid, a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale, a.status, a.max_balance
                       FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
                      WHERE a.id = ANY (v_need) ORDER BY a.id FOR NO KEY UPDATE OF a LOOP
                v_k := v_k + 1;
                v_tid[v_k] := r.ctid; v_ids[v_k] := r.id; v_bal[v_k] := r.balance; v_held[v_k] := r.held; v_min[v_k] := r.min_balance;
                v_ver[v_k] := r.version; v_cur[v_k] := r.currency; v_scale[v_k] := r.scale;
                v_lim[v_k] := 1e28 / power(10::numeric, r.scale); v_st[v_k] := r.status; v_max[v_k] := r.max_balance;
            END LOOP;
        END IF;
        IF p_lock_mode = 2 THEN
            PERFORM set_config('lock_timeout', v_saved, true);
        END IF;
        v_ver0 := v_ver;
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

    -- Transfer ids are drawn from the identity's sequence (named: the feed's default names it
    -- too) as items are accepted, in item order, so that later items can name earlier ones
    -- (replays and conflicts inside the batch).
    v_seq := 'wallet_ledger.transfers_id_seq'::regclass;

    -- Decide every item, in order, in memory.
    FOR v_i IN 1 .. n LOOP
        v_f := v_fpos[v_i];
        v_t := v_tpos[v_i];
        v_amount := round(p_amount[v_i], v_scale[v_f]);
        -- The common case in one test, true only when every check below would pass (a NULL,
        -- such as an account not found, makes it false): a new key, both accounts usable, one
        -- currency, the amount at its scale, the floor (so an up-to item it passes needs no
        -- sweep and moves what it asks), the ceiling, and both balances below the magnitude
        -- where the exact overflow test is needed.
        IF v_db_id[v_i] IS NULL AND v_holder[v_first[v_i]] IS NULL
           AND v_st[v_f] = 'open' AND v_st[v_t] <> 'closed' AND v_cur[v_f] = v_cur[v_t]
           AND min_scale(p_amount[v_i]) <= v_scale[v_f]
           AND (v_min[v_f] IS NULL OR v_bal[v_f] - v_held[v_f] - v_amount >= v_min[v_f])
           AND (v_max[v_t] IS NULL OR v_bal[v_t] + v_amount <= v_max[v_t])
           AND abs(v_bal[v_f] - v_amount) < v_lim[v_f] AND abs(v_bal[v_t] + v_amount) < v_lim[v_t] THEN
            NULL;
        ELSE
            IF v_db_id[v_i] IS NOT NULL THEN
                transfer_ids[v_i] := v_db_id[v_i];
                IF v_db_same[v_i] THEN
                    outcomes[v_i] := 'replayed';
                    amounts[v_i] := v_db_amt[v_i];
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
                   AND p_up_to[v_j] = p_up_to[v_i] AND p_memo[v_j] IS NOT DISTINCT FROM p_memo[v_i]
                   AND coalesce(p_metadata[v_j], '{}') = coalesce(p_metadata[v_i], '{}') THEN
                    outcomes[v_i] := 'replayed';
                    amounts[v_i] := amounts[v_j];
                    from_balances[v_i] := from_balances[v_j];
                    to_balances[v_i] := to_balances[v_j];
                ELSE
                    outcomes[v_i] := 'idempotency_conflict';
                END IF;
                CONTINUE;
            END IF;
            IF v_f IS NULL THEN
                outcomes[v_i] := 'account_not_found'; accounts[v_i] := p_from[v_i]; CONTINUE;
            END IF;
            IF v_t IS NULL THEN
                outcomes[v_i] := 'account_not_found'; accounts[v_i] := p_to[v_i]; CONTINUE;
            END IF;
            IF v_st[v_f] <> 'open' THEN
                outcomes[v_i] := CASE WHEN v_st[v_f] = 'frozen' THEN 'account_frozen' ELSE 'account_closed' END;
                accounts[v_i] := p_from[v_i]; CONTINUE;
            END IF;
            IF v_st[v_t] = 'closed' THEN
                outcomes[v_i] := 'account_closed'; accounts[v_i] := p_to[v_i]; CONTINUE;
            END IF;
            IF v_cur[v_f] <> v_cur[v_t] THEN
                outcomes[v_i] := 'currency_mismatch';
                from_currencies[v_i] := v_cur[v_f]; to_currencies[v_i] := v_cur[v_t]; CONTINUE;
            END IF;
            IF min_scale(p_amount[v_i]) > v_scale[v_f] THEN
                outcomes[v_i] := 'invalid_scale';
                from_currencies[v_i] := v_cur[v_f]; currency_scales[v_i] := v_scale[v_f]; CONTINUE;
            END IF;
            IF p_up_to[v_i] AND v_min[v_f] IS NOT NULL AND v_bal[v_f] - v_held[v_f] - v_amount < v_min[v_f]
               AND v_bal[v_f] - v_held[v_f] - v_min[v_f] > 0 THEN
                v_amount := v_bal[v_f] - v_held[v_f] - v_min[v_f]; -- a sweep: all that is available
            END IF;
            IF v_min[v_f] IS NOT NULL AND v_bal[v_f] - v_held[v_f] - v_amount < v_min[v_f] THEN
                outcomes[v_i] := 'insufficient_funds'; accounts[v_i] := p_from[v_i];
                availables[v_i] := v_bal[v_f] - v_held[v_f] - v_min[v_f];
                CONTINUE;
            END IF;
            IF v_max[v_t] IS NOT NULL AND v_bal[v_t] + v_amount > v_max[v_t] THEN
                outcomes[v_i] := 'balance_limit_exceeded'; accounts[v_i] := p_to[v_i];
                availables[v_i] := v_max[v_t]; -- the ceiling
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
        END IF;

        -- Accepted: move the money in memory; what is written is read back from the results.
        v_accepted := true;
        outcomes[v_i] := 'ok';
        amounts[v_i] := v_amount;
        transfer_ids[v_i] := nextval(v_seq);
        v_holder[v_first[v_i]] := v_i;
        v_bal[v_f] := v_bal[v_f] - v_amount;
        v_ver[v_f] := v_ver[v_f] + 1;
        v_bal[v_t] := v_bal[v_t] + v_amount;
        v_ver[v_t] := v_ver[v_t] + 1;
        from_balances[v_i] := v_bal[v_f];
        to_balances[v_i] := v_bal[v_t];
        v_fver[v_i] := v_ver[v_f];
        v_tver[v_i] := v_ver[v_t];
    END LOOP;

    IF NOT v_accepted THEN
        RETURN;
    END IF;

    -- Apply, set-based: every row written here is locked by this transaction.
    INSERT INTO wallet_ledger.transfers (id, from_account, to_account, amount, idempotency_key, memo, metadata)
    OVERRIDING SYSTEM VALUE
    SELECT t.id, t.from_account, t.to_account, t.amount, t.key, t.memo, t.metadata
      FROM unnest(transfer_ids, p_from, p_to, amounts, p_key, p_memo, p_metadata, outcomes)
           AS t(id, from_account, to_account, amount, key, memo, metadata, outcome)
     WHERE t.outcome = 'ok';

    INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version)
    SELECT t.id, e.account_id, e.amount, e.balance_after, e.account_version
      FROM unnest(transfer_ids, p_from, p_to, amounts, from_balances, to_balances, v_fver, v_tver, outcomes)
           AS t(id, from_account, to_account, amount, from_balance, to_balance, from_version, to_version, outcome)
           CROSS JOIN LATERAL (VALUES (t.from_account, -t.amount, t.from_balance, t.from_version),
                                      (t.to_account, t.amount, t.to_balance, t.to_version))
           AS e(account_id, amount, balance_after, account_version)
     WHERE t.outcome = 'ok';

    UPDATE wallet_ledger.accounts a SET balance = u.balance, version = u.version
      FROM unnest(v_tid, v_bal, v_ver, v_ver0) AS u(tid, balance, version, locked_version)
     WHERE a.ctid = u.tid AND u.version <> u.locked_version;
END
$fn$;
    $sql$;
    ALTER FUNCTION wallet_ledger.transfer_batch(bigint[], bigint[], numeric[], text[], text[], smallint, integer,
                                                bigint[], integer[], integer[], boolean[], jsonb[])
        SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        SET plan_cache_mode = force_generic_plan
        SET enable_seqscan = off;
END
$do$;
