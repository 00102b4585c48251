-- Migration 6: the batch and posting functions plan each statement once per session.
--
-- Their statements take arrays. With the default plan_cache_mode, PostgreSQL compared a custom
-- plan (made for each call's arrays) with the generic one on every call and kept choosing the
-- custom one, so every call planned about ten statements again: about 0.5 ms of server time
-- per call, as much as the whole work of a batch of five transfers, and the largest part of a
-- combined batch on a hot pair (docs/benchmarks.md). A generic plan does not know the arrays'
-- lengths, so sequential scans are turned off for these functions: the accounts touched are
-- always reached through their primary key, never by reading the whole table. (A custom plan
-- also chose a full scan of accounts to lock 200 of 10,000 rows, and a hash of the whole
-- table to update them: work that grew with the table, not with the batch.)
--
-- A SET clause applies to the function's own statements only and is undone when it returns,
-- so a caller's transaction (transfer_batch_in, post_in) keeps its own settings.
ALTER FUNCTION wallet_ledger.transfer_batch(bigint[], bigint[], numeric[], text[], text[], smallint, integer,
                                            bigint[], integer[], integer[])
    SET plan_cache_mode = force_generic_plan
    SET enable_seqscan = off;

ALTER FUNCTION wallet_ledger.post(bigint[], numeric[], text, text, smallint, integer)
    SET plan_cache_mode = force_generic_plan
    SET enable_seqscan = off;
