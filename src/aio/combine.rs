//! Combining transfers across tasks: the synchronous door's [`Combiner`], its steps driven with
//! a `Notify` per waiting task instead of a parked thread. The batch itself runs in a task of
//! its own, so a caller whose future is dropped (a request timeout) never cancels a batch that
//! carries other callers' transfers; a caller that stops waiting leaves the queue unsent, or
//! has its result dropped when it comes.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::aio::Ledger;
use crate::combiner::{Batch, Collect, Combiner, Entry, Lanes, Turn, Wake};
use crate::driver::ledger::{accounts, batch_never_finished, Combined};
use crate::error::LedgerError;
use crate::model::transfer::{Receipt, Transfer};
use crate::plan::{Ctx, Plan};

type Shared = Combiner<Combined, Result<Receipt, LedgerError>>;

/// The plan of one combined batch: one result per queued transfer, in order.
pub(crate) type ApplyPlan = fn(&Ctx, &[Combined]) -> Plan<Vec<Result<Receipt, LedgerError>>>;

/// The combiners of an async ledger's transfers, one per lane (shared by its clones).
pub(crate) struct AsyncCombiner(Lanes<Arc<Shared>>);

impl AsyncCombiner {
    /// `lanes` adaptive combiners, as the synchronous door's default.
    pub(crate) fn new(lanes: usize) -> AsyncCombiner {
        AsyncCombiner(Lanes::new(lanes, || Arc::new(Combiner::adaptive(accounts, batch_never_finished))))
    }

    /// How many lanes there are.
    pub(crate) fn lanes(&self) -> usize {
        self.0.count()
    }

    /// `t` (validated, with its key) applied alone with `solo`'s plan, or in a batch with other
    /// tasks' transfers with `apply`'s plan (one result per item, in order).
    pub(crate) async fn submit(
        &self,
        ledger: &Ledger,
        t: Transfer,
        key: String,
        solo: fn(&Ctx, &Transfer, String) -> Plan<Receipt>,
        apply: ApplyPlan,
    ) -> Result<Receipt, LedgerError> {
        let lane = self.0.of([t.from.0, t.to.0]);
        let notify = Arc::new(Notify::new());
        let me: Arc<dyn Wake> = notify.clone();
        let ticket = match lane.enter((t, key), Arc::clone(&me)) {
            Entry::Solo((t, key), keys) => {
                let _done = SoloDone { combiner: lane, keys };
                return ledger.run(solo(&ledger.ctx(), &t, key)).await;
            }
            Entry::Queued(ticket) => ticket,
        };
        let mut waiting = Waiting { combiner: lane, ticket, collector: false, finished: false };
        loop {
            match lane.turn(ticket, &me) {
                Turn::Done(result) => {
                    waiting.finished = true;
                    return result;
                }
                Turn::Wait => notify.notified().await,
                Turn::Lead => {
                    waiting.collector = true;
                    let batch = loop {
                        match lane.collect() {
                            Collect::Wait(timeout) => {
                                // Woken early when enough callers queued; either way, ask again.
                                let _ = tokio::time::timeout(timeout, notify.notified()).await;
                            }
                            Collect::Take(batch) => break batch,
                        }
                    };
                    waiting.collector = false;
                    let (ledger, combiner) = (ledger.clone(), Arc::clone(lane));
                    tokio::spawn(async move {
                        let mut delivery = Delivery { combiner, batch: Some(batch) };
                        let items = delivery.batch.as_ref().map(Batch::items).unwrap_or_default();
                        let results = ledger.run(apply(&ledger.ctx(), &items)).await;
                        let n = items.len();
                        let results = results.unwrap_or_else(|e| {
                            let shared = Arc::new(e);
                            (0..n).map(|_| Err(LedgerError::BatchFailed { source: Arc::clone(&shared) })).collect()
                        });
                        delivery.deliver(Some(results));
                    });
                }
            }
        }
    }
}

/// Ends a solo call's place in flight however its future ends.
struct SoloDone<'a> {
    combiner: &'a Shared,
    keys: [i64; 2],
}

impl Drop for SoloDone<'_> {
    fn drop(&mut self) {
        self.combiner.solo_done(self.keys);
    }
}

/// A queued caller: when its future is dropped before its result came, it leaves the queue (or
/// has its result dropped), and hands the collector's role on.
struct Waiting<'a> {
    combiner: &'a Shared,
    ticket: u64,
    collector: bool,
    finished: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.combiner.abandon(self.ticket, self.collector);
        }
    }
}

/// A batch in flight: delivered with its results, or, if the task applying it ends without
/// them (a panic), with the failure value for every caller.
struct Delivery {
    combiner: Arc<Shared>,
    batch: Option<Batch<Combined>>,
}

impl Delivery {
    fn deliver(&mut self, results: Option<Vec<Result<Receipt, LedgerError>>>) {
        if let Some(batch) = self.batch.take() {
            self.combiner.deliver(batch, results, None);
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.deliver(None);
    }
}
