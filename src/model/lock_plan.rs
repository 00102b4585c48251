//! The one lock order of the library: every account a transaction touches, once, ascending id.
//!
//! Two transactions that both lock in ascending id order can never wait on each other in a
//! cycle: the one holding the lower contested id never waits for a higher id held by the other
//! and then for a lower one. With every path of the library using this order, a deadlock between
//! ledger operations is impossible, whatever the direction of the transfers.

use crate::values::AccountId;

/// The accounts to lock, sorted ascending and without duplicates.
///
/// ```
/// use wallet_ledger::{AccountId, LockPlan};
///
/// let plan = LockPlan::new([AccountId(9), AccountId(2), AccountId(9), AccountId(5)]);
/// assert_eq!(plan.ids(), &[AccountId(2), AccountId(5), AccountId(9)]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockPlan {
    ids: Vec<AccountId>,
}

impl LockPlan {
    /// The plan for any set of account ids, in any order, duplicates allowed.
    pub fn new(ids: impl IntoIterator<Item = AccountId>) -> Self {
        let mut ids: Vec<AccountId> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        LockPlan { ids }
    }

    /// The ids in locking order.
    pub fn ids(&self) -> &[AccountId] {
        &self.ids
    }

    /// The ids as `bigint[]` for a `WHERE id = ANY($1) ORDER BY id FOR UPDATE` statement.
    pub fn as_i64(&self) -> Vec<i64> {
        self.ids.iter().map(|id| id.0).collect()
    }

    /// Whether the plan locks this account.
    pub fn contains(&self, id: AccountId) -> bool {
        self.ids.binary_search(&id).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sorted_deduplicated_and_complete(raw in proptest::collection::vec(any::<i64>(), 0..40)) {
            let plan = LockPlan::new(raw.iter().copied().map(AccountId));
            let ids = plan.as_i64();
            prop_assert!(ids.windows(2).all(|w| w[0] < w[1]));
            for id in &raw {
                prop_assert!(plan.contains(AccountId(*id)));
            }
            let mut distinct = raw.clone();
            distinct.sort_unstable();
            distinct.dedup();
            prop_assert_eq!(ids, distinct);
        }
    }

    #[test]
    fn opposite_directions_give_the_same_plan() {
        let ab = LockPlan::new([AccountId(7), AccountId(3)]);
        let ba = LockPlan::new([AccountId(3), AccountId(7)]);
        assert_eq!(ab, ba);
    }
}
