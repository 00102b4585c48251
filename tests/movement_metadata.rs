//! Metadata on money movements (issue 17, phase B): stored with transfers, batches, combined
//! transfers, postings, holds (and their captures), reversals and sweeps, read back through
//! `TransferRecord::metadata`, part of each call's idempotency comparison, refused before any
//! SQL when malformed, and backed by the database's own domain.

#[macro_use]
mod common;

use std::time::Duration;

use anyhow::Result;
use common::{funded, snapshot};
use rust_decimal_macros::dec;
use serde_json::{json, Value};
use wallet_ledger::limits::METADATA_BYTES_MAX;
use wallet_ledger::{
    CombineConfig, Hold, Ledger, LedgerError, Posting, Reversal, Transfer, TransferFilter, TransferId,
};

/// The metadata the ledger has for a transfer.
fn metadata_of(l: &Ledger, id: TransferId) -> Result<Value> {
    Ok(l.find_transfer(id)?.expect("committed").metadata)
}

/// Whether the stored column is NULL (a movement without metadata carries no value).
fn stored_null(l: &Ledger, id: TransferId) -> Result<bool> {
    let mut conn = l.connection()?;
    let row =
        conn.client().query_one("SELECT metadata IS NULL FROM wallet_ledger.transfers WHERE id = $1", &[&id.0])?;
    Ok(row.get(0))
}

fn holds(l: &Ledger) -> Result<i64> {
    let mut conn = l.connection()?;
    Ok(conn.client().query_one("SELECT count(*) FROM wallet_ledger.holds", &[])?.get(0))
}

#[test]
fn a_transfer_keeps_its_metadata_and_one_without_has_none() -> Result<()> {
    let (l, _, _, w) = funded("mm_transfer", 2, dec!(100.00))?;
    let meta = json!({"order_id": 1234, "channel": "web", "items": [1, 2], "nested": {"x": null}});
    let r = l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)).metadata(meta.clone()))?;
    assert_eq!(metadata_of(&l, r.transfer_id)?, meta);
    assert!(!stored_null(&l, r.transfer_id)?);

    let plain = l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)))?;
    assert_eq!(metadata_of(&l, plain.transfer_id)?, json!({}));
    assert!(stored_null(&l, plain.transfer_id)?, "a transfer without metadata stores NULL");
    let empty = l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)).metadata(json!({})))?;
    assert_eq!(metadata_of(&l, empty.transfer_id)?, json!({}));
    assert!(stored_null(&l, empty.transfer_id)?, "{{}} is stored as none");

    // Inside the caller's transaction too.
    let mut conn = l.connection()?;
    let mut tx = conn.client().transaction()?;
    let inside = l.transfer_in(&mut tx, &Transfer::new(w[1], w[0], dec!(2.00)).metadata(json!({"in": "tx"})))?;
    tx.commit()?;
    drop(conn);
    assert_eq!(metadata_of(&l, inside.transfer_id)?, json!({"in": "tx"}));
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn batches_and_the_combiner_keep_each_items_metadata() -> Result<()> {
    let (l, url, _, w) = funded("mm_batch", 3, dec!(100.00))?;
    let items = vec![
        Transfer::new(w[0], w[1], dec!(1.00)).metadata(json!({"item": 0})),
        Transfer::new(w[1], w[2], dec!(2.00)),
        Transfer::new(w[2], w[0], dec!(3.00)).metadata(json!({"item": 2})).idempotency_key("batch-2"),
    ];
    let receipts: Vec<_> = l.transfer_batch(&items)?.into_iter().collect::<Result<_, _>>()?;
    assert_eq!(metadata_of(&l, receipts[0].transfer_id)?, json!({"item": 0}));
    assert_eq!(metadata_of(&l, receipts[1].transfer_id)?, json!({}));
    assert!(stored_null(&l, receipts[1].transfer_id)?);
    assert_eq!(metadata_of(&l, receipts[2].transfer_id)?, json!({"item": 2}));

    // A refused item beside applied ones, and in-batch key repeats.
    let items = vec![
        Transfer::new(w[0], w[1], dec!(1000.00)).metadata(json!({"refused": true})),
        Transfer::new(w[0], w[1], dec!(1.00)).metadata(json!({"loop": 1})).idempotency_key("loop-1"),
        Transfer::new(w[0], w[1], dec!(1.00)).metadata(json!({"loop": 1})).idempotency_key("loop-1"),
        Transfer::new(w[0], w[1], dec!(1.00)).metadata(json!({"loop": 2})).idempotency_key("loop-1"),
        Transfer::new(w[2], w[0], dec!(3.00)).metadata(json!({"item": 2})).idempotency_key("batch-2"),
        Transfer::new(w[2], w[0], dec!(3.00)).metadata(json!({"item": 3})).idempotency_key("batch-2"),
    ];
    let results = l.transfer_batch(&items)?;
    assert!(matches!(results[0], Err(LedgerError::InsufficientFunds { .. })), "{:?}", results[0]);
    let applied = results[1].as_ref().expect("applied");
    assert!(!applied.replayed);
    assert_eq!(metadata_of(&l, applied.transfer_id)?, json!({"loop": 1}));
    assert!(results[2].as_ref().is_ok_and(|r| r.replayed && r.transfer_id == applied.transfer_id));
    assert!(matches!(results[3], Err(LedgerError::IdempotencyConflict { .. })), "{:?}", results[3]);
    assert!(results[4].as_ref().is_ok_and(|r| r.replayed && r.transfer_id == receipts[2].transfer_id));
    assert!(matches!(results[5], Err(LedgerError::IdempotencyConflict { .. })), "{:?}", results[5]);

    // Inside a caller's transaction.
    let mut conn = l.connection()?;
    let mut tx = conn.client().transaction()?;
    let inside = l.transfer_batch_in(
        &mut tx,
        &[
            Transfer::new(w[0], w[1], dec!(1.00)).metadata(json!({"batch_in": 1})),
            Transfer::new(w[1], w[0], dec!(1.00)),
        ],
    )?;
    tx.commit()?;
    drop(conn);
    let first = inside[0].as_ref().expect("applied").transfer_id;
    assert_eq!(metadata_of(&l, first)?, json!({"batch_in": 1}));

    // The combiner: concurrent callers, each with its own metadata.
    let combined = Ledger::builder(url.as_str())
        .pool_size(8)
        .combine(CombineConfig { max_batch: 16, max_wait: Duration::from_millis(2) })
        .build()?;
    let ids: Vec<(usize, TransferId)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let combined = &combined;
                let (from, to) = (w[i % 3], w[(i + 1) % 3]);
                s.spawn(move || {
                    let t = Transfer::new(from, to, dec!(0.50)).metadata(json!({"caller": i}));
                    combined.transfer(&t).map(|r| (i, r.transfer_id))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("no panic")).collect::<Result<Vec<_>, _>>()
    })?;
    for (i, id) in ids {
        assert_eq!(metadata_of(&l, id)?, json!({"caller": i}));
    }
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn postings_holds_captures_reversals_and_sweeps_keep_their_metadata() -> Result<()> {
    let (l, _, issuer, w) = funded("mm_paths", 3, dec!(100.00))?;
    // Posting, alone and in a caller's transaction.
    let posting = Posting::new().leg(w[0], dec!(-3.00)).leg(w[1], dec!(1.00)).leg(w[2], dec!(2.00));
    let p = l.post(&posting.clone().metadata(json!({"split": "3-way"})))?;
    assert_eq!(metadata_of(&l, p.transfer_id)?, json!({"split": "3-way"}));
    let plain = l.post(&posting)?;
    assert_eq!(metadata_of(&l, plain.transfer_id)?, json!({}));
    let mut conn = l.connection()?;
    let mut tx = conn.client().transaction()?;
    let inside = l.post_in(&mut tx, &posting.clone().metadata(json!({"post_in": true})))?;
    tx.commit()?;
    drop(conn);
    assert_eq!(metadata_of(&l, inside.transfer_id)?, json!({"post_in": true}));

    // A hold's metadata goes to its capture's transfer.
    let h = l.hold(&Hold::new(w[0], w[1], dec!(10.00)).metadata(json!({"booking": "B-1"})))?;
    let captured = l.capture(h.hold_id, Some(dec!(4.00)))?;
    assert_eq!(metadata_of(&l, captured.transfer_id)?, json!({"booking": "B-1"}));
    let plain_hold = l.hold(&Hold::new(w[0], w[1], dec!(1.00)))?;
    let plain_capture = l.capture(plain_hold.hold_id, None)?;
    assert_eq!(metadata_of(&l, plain_capture.transfer_id)?, json!({}));
    let mut conn = l.connection()?;
    let mut tx = conn.client().transaction()?;
    let h_in = l.hold_in(&mut tx, &Hold::new(w[1], w[2], dec!(2.00)).metadata(json!({"hold_in": 1})))?;
    let c_in = l.capture_in(&mut tx, h_in.hold_id, None)?;
    tx.commit()?;
    drop(conn);
    assert_eq!(metadata_of(&l, c_in.transfer_id)?, json!({"hold_in": 1}));

    // A reversal has its own metadata; the original keeps its own.
    let paid = l.transfer(&Transfer::new(issuer, w[2], dec!(20.00)).metadata(json!({"order": 9})))?;
    let refund = l.reverse(&Reversal::of(paid.transfer_id).amount(dec!(5.00)).metadata(json!({"refund_of": 9})))?;
    assert_eq!(metadata_of(&l, refund.transfer_id)?, json!({"refund_of": 9}));
    assert_eq!(metadata_of(&l, paid.transfer_id)?, json!({"order": 9}));
    let rest = l.reverse(&Reversal::of(paid.transfer_id))?;
    assert_eq!(metadata_of(&l, rest.transfer_id)?, json!({}));
    let posting_refund = l.reverse(&Reversal::of(p.transfer_id).metadata(json!({"undo": "split"})))?;
    assert_eq!(metadata_of(&l, posting_refund.transfer_id)?, json!({"undo": "split"}));
    let again = l.transfer(&Transfer::new(issuer, w[2], dec!(1.00)))?;
    let mut conn = l.connection()?;
    let mut tx = conn.client().transaction()?;
    let r_in = l.reverse_in(&mut tx, &Reversal::of(again.transfer_id).metadata(json!({"reverse_in": 1})))?;
    tx.commit()?;
    drop(conn);
    assert_eq!(metadata_of(&l, r_in.transfer_id)?, json!({"reverse_in": 1}));

    // A sweep, alone and in a batch.
    let sweep =
        l.transfer(&Transfer::new(w[1], w[0], dec!(1000.00)).up_to_available().metadata(json!({"sweep": 1})))?;
    assert_eq!(metadata_of(&l, sweep.transfer_id)?, json!({"sweep": 1}));
    assert_eq!(l.available(w[1])?, dec!(0));
    let swept = l.transfer_batch(&[
        Transfer::new(w[2], w[1], dec!(1000.00)).up_to_available().metadata(json!({"sweep": 2})),
        Transfer::new(w[0], w[1], dec!(1.00)),
    ])?;
    let swept = swept[0].as_ref().expect("applied");
    assert_eq!(metadata_of(&l, swept.transfer_id)?, json!({"sweep": 2}));
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn other_metadata_under_a_key_is_a_conflict_and_the_same_replays() -> Result<()> {
    let (l, _, issuer, w) = funded("mm_idempotency", 3, dec!(100.00))?;
    let conflict = |e: &LedgerError| matches!(e, LedgerError::IdempotencyConflict { .. });

    // Transfers.
    let t = Transfer::new(w[0], w[1], dec!(1.00)).idempotency_key("t-1").metadata(json!({"a": 1, "b": [1, 2]}));
    let first = l.transfer(&t)?;
    // The same object, keys in another order: the same jsonb.
    let same = Transfer::new(w[0], w[1], dec!(1.00)).idempotency_key("t-1").metadata(json!({"b": [1, 2], "a": 1}));
    let replay = l.transfer(&same)?;
    assert!(replay.replayed);
    assert_eq!(replay.transfer_id, first.transfer_id);
    for other in [
        Transfer::new(w[0], w[1], dec!(1.00)).idempotency_key("t-1").metadata(json!({"a": 2, "b": [1, 2]})),
        Transfer::new(w[0], w[1], dec!(1.00)).idempotency_key("t-1"),
        Transfer::new(w[0], w[1], dec!(1.00)).idempotency_key("t-1").metadata(json!({})),
    ] {
        let e = refused!(l, l.transfer(&other), LedgerError::IdempotencyConflict { .. });
        assert!(conflict(&e));
    }
    // A key committed without metadata: none and {} replay it, any metadata conflicts.
    let plain = l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)).idempotency_key("t-2"))?;
    assert!(l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)).idempotency_key("t-2"))?.replayed);
    let empty = l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)).idempotency_key("t-2").metadata(json!({})))?;
    assert!(empty.replayed && empty.transfer_id == plain.transfer_id);
    refused!(
        l,
        l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)).idempotency_key("t-2").metadata(json!({"x": 1}))),
        LedgerError::IdempotencyConflict { .. }
    );
    // The same through transfer_in.
    let mut conn = l.connection()?;
    let mut tx = conn.client().transaction()?;
    assert!(l.transfer_in(&mut tx, &same)?.replayed);
    let e = l.transfer_in(&mut tx, &Transfer::new(w[0], w[1], dec!(1.00)).idempotency_key("t-1")).unwrap_err();
    assert!(conflict(&e), "{e:?}");
    tx.rollback()?;
    drop(conn);

    // Postings.
    let posting = Posting::new().leg(w[0], dec!(-2.00)).leg(w[1], dec!(2.00)).idempotency_key("p-1");
    let p = l.post(&posting.clone().metadata(json!({"p": 1})))?;
    assert!(l.post(&posting.clone().metadata(json!({"p": 1})))?.replayed);
    refused!(l, l.post(&posting.clone().metadata(json!({"p": 2}))), LedgerError::IdempotencyConflict { .. });
    refused!(l, l.post(&posting), LedgerError::IdempotencyConflict { .. });
    let plain_posting = Posting::new().leg(w[0], dec!(-2.00)).leg(w[1], dec!(2.00)).idempotency_key("p-2");
    l.post(&plain_posting)?;
    refused!(l, l.post(&plain_posting.clone().metadata(json!({"p": 1}))), LedgerError::IdempotencyConflict { .. });

    // Holds.
    let hold = Hold::new(w[2], w[0], dec!(5.00)).idempotency_key("h-1");
    let h = l.hold(&hold.clone().metadata(json!({"h": 1})))?;
    let replayed = l.hold(&hold.clone().metadata(json!({"h": 1})))?;
    assert!(replayed.replayed && replayed.hold_id == h.hold_id);
    let n = holds(&l)?;
    refused!(l, l.hold(&hold.clone().metadata(json!({"h": 2}))), LedgerError::IdempotencyConflict { .. });
    refused!(l, l.hold(&hold), LedgerError::IdempotencyConflict { .. });
    let plain_hold = Hold::new(w[2], w[0], dec!(5.00)).idempotency_key("h-2");
    l.hold(&plain_hold)?;
    refused!(l, l.hold(&plain_hold.clone().metadata(json!({"h": 1}))), LedgerError::IdempotencyConflict { .. });
    assert_eq!(holds(&l)?, n + 1);

    // Reversals.
    let paid = l.transfer(&Transfer::new(issuer, w[2], dec!(10.00)))?;
    let reversal = Reversal::of(paid.transfer_id).amount(dec!(1.00)).idempotency_key("r-1");
    let r = l.reverse(&reversal.clone().metadata(json!({"r": 1})))?;
    let again = l.reverse(&reversal.clone().metadata(json!({"r": 1})))?;
    assert!(again.replayed && again.transfer_id == r.transfer_id);
    refused!(l, l.reverse(&reversal.clone().metadata(json!({"r": 2}))), LedgerError::IdempotencyConflict { .. });
    refused!(l, l.reverse(&reversal), LedgerError::IdempotencyConflict { .. });

    // Sweeps.
    let sweep = Transfer::new(w[1], w[0], dec!(1.00)).up_to_available().idempotency_key("s-1");
    let s = l.transfer(&sweep.clone().metadata(json!({"s": 1})))?;
    let again = l.transfer(&sweep.clone().metadata(json!({"s": 1})))?;
    assert!(again.replayed && again.transfer_id == s.transfer_id);
    refused!(l, l.transfer(&sweep.clone().metadata(json!({"s": 2}))), LedgerError::IdempotencyConflict { .. });
    refused!(l, l.transfer(&sweep), LedgerError::IdempotencyConflict { .. });

    // Batch items against committed keys.
    let results = l.transfer_batch(&[
        Transfer::new(w[0], w[1], dec!(1.00)).idempotency_key("t-1").metadata(json!({"a": 1, "b": [1, 2]})),
        Transfer::new(w[0], w[1], dec!(1.00)).idempotency_key("t-1").metadata(json!({"a": 3})),
    ])?;
    assert!(results[0].as_ref().is_ok_and(|r| r.replayed && r.transfer_id == first.transfer_id));
    assert!(results[1].as_ref().is_err_and(conflict), "{:?}", results[1]);
    let _ = p;
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn malformed_metadata_is_refused_before_anything_is_sent() -> Result<()> {
    let (l, _, _, w) = funded("mm_malformed", 2, dec!(100.00))?;
    let paid = l.transfer(&Transfer::new(w[0], w[1], dec!(10.00)))?;
    let over = json!({ "k": "x".repeat(METADATA_BYTES_MAX) });
    let bad = [json!(null), json!(1), json!("x"), json!([1, 2]), json!(true), json!({"k": "nul\u{0}"}), over];
    let n = holds(&l)?;
    for m in bad {
        let invalid =
            |r: &Result<_, LedgerError>| matches!(r, Err(LedgerError::InvalidInput { field: "metadata", .. }));
        let r = l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)).metadata(m.clone()));
        assert!(invalid(&r), "{m}: {r:?}");
        refused!(
            l,
            l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)).metadata(m.clone()).up_to_available()),
            LedgerError::InvalidInput { field: "metadata", .. }
        );
        refused!(
            l,
            l.post(&Posting::new().leg(w[0], dec!(-1)).leg(w[1], dec!(1)).metadata(m.clone())),
            LedgerError::InvalidInput { field: "metadata", .. }
        );
        refused!(
            l,
            l.hold(&Hold::new(w[0], w[1], dec!(1.00)).metadata(m.clone())),
            LedgerError::InvalidInput { field: "metadata", .. }
        );
        refused!(
            l,
            l.reverse(&Reversal::of(paid.transfer_id).metadata(m.clone())),
            LedgerError::InvalidInput { field: "metadata", .. }
        );
        let before = snapshot(&l)?;
        let results = l.transfer_batch(&[
            Transfer::new(w[0], w[1], dec!(1.00)).metadata(m.clone()),
            Transfer::new(w[1], w[0], dec!(1.00)).metadata(m.clone()),
        ])?;
        assert!(results.iter().all(|r| matches!(r, Err(LedgerError::InvalidInput { field: "metadata", .. }))));
        assert_eq!(before, snapshot(&l)?);
    }
    assert_eq!(holds(&l)?, n);
    // Within the bound as compact JSON, over it in PostgreSQL's text form (a space after the
    // colon): the database's domain refuses it, with the same error, nothing changed.
    let compact_at_limit = json!({ "k": "x".repeat(METADATA_BYTES_MAX - 8) });
    refused!(
        l,
        l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)).metadata(compact_at_limit.clone())),
        LedgerError::InvalidInput { field: "metadata", .. }
    );
    refused!(
        l,
        l.hold(&Hold::new(w[0], w[1], dec!(1.00)).metadata(compact_at_limit.clone())),
        LedgerError::InvalidInput { field: "metadata", .. }
    );
    refused!(
        l,
        l.post(&Posting::new().leg(w[0], dec!(-1)).leg(w[1], dec!(1)).metadata(compact_at_limit)),
        LedgerError::InvalidInput { field: "metadata", .. }
    );
    assert_eq!(holds(&l)?, n);
    // Just within the bound in both forms.
    let fits = json!({ "k": "x".repeat(METADATA_BYTES_MAX - 9) });
    let r = l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)).metadata(fits.clone()))?;
    assert_eq!(metadata_of(&l, r.transfer_id)?, fits);
    Ok(())
}

/// The domain holds for writes that do not come through the library.
#[test]
fn the_database_refuses_bad_direct_writes() -> Result<()> {
    let (l, _, _, w) = funded("mm_direct", 2, dec!(100.00))?;
    let t = l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)).metadata(json!({"ok": true})))?;
    let h = l.hold(&Hold::new(w[0], w[1], dec!(1.00)))?;
    let mut conn = l.connection()?;
    let client = conn.client();
    let cases: [(&str, i64, &str); 6] = [
        ("UPDATE wallet_ledger.transfers SET metadata = '[1]' WHERE id = $1", t.transfer_id.0, "transfers_metadata_object"),
        ("UPDATE wallet_ledger.transfers SET metadata = '\"x\"' WHERE id = $1", t.transfer_id.0, "transfers_metadata_object"),
        (
            "UPDATE wallet_ledger.transfers SET metadata = jsonb_build_object('k', repeat('x', 9000)) WHERE id = $1",
            t.transfer_id.0,
            "transfers_metadata_size",
        ),
        ("UPDATE wallet_ledger.holds SET metadata = '[1]' WHERE id = $1", h.hold_id.0, "holds_metadata_object"),
        (
            "UPDATE wallet_ledger.holds SET metadata = jsonb_build_object('k', repeat('x', 9000)) WHERE id = $1",
            h.hold_id.0,
            "holds_metadata_size",
        ),
        (
            "SELECT * FROM wallet_ledger.transfer($1::bigint, $1::bigint + 1, 1.00, 'direct', NULL, 0::smallint, 0, '[1]'::jsonb)",
            w[0].0,
            "transfers_metadata_object",
        ),
    ];
    for (sql, id, constraint) in cases {
        let err = client.execute(sql, &[&id]).expect_err(sql);
        let db = err.as_db_error().expect("a database error");
        assert_eq!(db.constraint(), Some(constraint), "{sql}: {db}");
    }
    // NULL is "none" and allowed.
    client.execute("UPDATE wallet_ledger.transfers SET metadata = NULL WHERE id = $1", &[&t.transfer_id.0])?;
    drop(conn);
    assert_eq!(metadata_of(&l, t.transfer_id)?, json!({}));
    Ok(())
}

#[test]
fn transfers_are_found_by_metadata_page_by_page() -> Result<()> {
    let (l, _, _, w) = funded("mm_filter", 3, dec!(100.00))?;
    let mut order_7 = Vec::new();
    for i in 0..7 {
        let meta = json!({"order": if i % 2 == 0 { 7 } else { 8 }, "i": i});
        let r = l.transfer(&Transfer::new(w[i % 3], w[(i + 1) % 3], dec!(1.00)).metadata(meta))?;
        if i % 2 == 0 {
            order_7.push(r.transfer_id);
        }
        l.transfer(&Transfer::new(w[0], w[1], dec!(0.01)))?; // without metadata
    }
    let paid = l.transfer(&Transfer::new(w[2], w[0], dec!(3.00)).metadata(json!({"order": 7, "i": 99})))?;
    let refund =
        l.reverse(&Reversal::of(paid.transfer_id).amount(dec!(1.00)).metadata(json!({"order": 7, "refund": true})))?;
    order_7.push(paid.transfer_id);
    order_7.push(refund.transfer_id);

    // All transfers of order 7, two per page.
    let mut found = Vec::new();
    let mut filter = TransferFilter::new().metadata(json!({"order": 7})).limit(2);
    loop {
        let page = l.list_transfers(&filter)?;
        assert!(page.items.len() <= 2);
        assert!(page.items.iter().all(|t| t.metadata["order"] == json!(7)));
        found.extend(page.items.iter().map(|t| t.id));
        match page.next {
            Some(next) => {
                assert_eq!(page.items.len(), 2);
                filter = filter.after(next.to_string().parse()?);
            }
            None => break,
        }
    }
    assert_eq!(found, order_7);
    // Combined with reversals, and with one account.
    let refunds = l.list_transfers(&TransferFilter::new().metadata(json!({"order": 7})).reversals(true))?;
    assert_eq!(refunds.items.iter().map(|t| t.id).collect::<Vec<_>>(), vec![refund.transfer_id]);
    let not_refunds = l.list_transfers(&TransferFilter::new().metadata(json!({"order": 7})).reversals(false))?;
    assert_eq!(not_refunds.items.len(), order_7.len() - 1);
    let nested = l.list_transfers(&TransferFilter::new().metadata(json!({"order": 7, "i": 4})))?;
    assert_eq!(nested.items.len(), 1);
    let of_w2 = l.list_transfers(&TransferFilter::new().account(w[2]).metadata(json!({"order": 7})).limit(1))?;
    assert_eq!(of_w2.items.len(), 1);
    assert!(of_w2.items[0].legs.iter().any(|(a, _)| *a == w[2]));
    let mut all_w2 = Vec::new();
    let mut filter = TransferFilter::new().account(w[2]).metadata(json!({"order": 7})).limit(1);
    loop {
        let page = l.list_transfers(&filter)?;
        all_w2.extend(page.items.iter().map(|t| t.id));
        match page.next {
            Some(next) => filter = filter.after(next),
            None => break,
        }
    }
    let expected: Vec<TransferId> = order_7
        .iter()
        .copied()
        .filter(|id| l.find_transfer(*id).ok().flatten().is_some_and(|t| t.legs.iter().any(|(a, _)| *a == w[2])))
        .collect();
    assert_eq!(all_w2, expected);
    assert!(!expected.is_empty());
    // Nothing matches: an empty page without a cursor. {} matches every transfer.
    let none = l.list_transfers(&TransferFilter::new().metadata(json!({"order": 9})))?;
    assert!(none.items.is_empty() && none.next.is_none());
    let every = l.list_transfers(&TransferFilter::new().metadata(json!({})).limit(1000))?;
    assert_eq!(every.items.len(), l.list_transfers(&TransferFilter::new().limit(1000))?.items.len());
    // A malformed filter is refused.
    let e = l.list_transfers(&TransferFilter::new().metadata(json!([1]))).unwrap_err();
    assert!(matches!(e, LedgerError::InvalidInput { field: "metadata filter", .. }), "{e:?}");
    Ok(())
}
