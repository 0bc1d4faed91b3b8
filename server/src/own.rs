//! The transactions of recent pushes that wrote only their source's own
//! rows ([`nexus_sync::PushApplied::own_transaction`]), so that the source's
//! next pull passes over them unread (`nexus_pg::read_tenant_page`'s
//! `leave_out`): a store pulls back every transaction it pushed, and would
//! leave all of their rows out anyway.
//!
//! Only a saving: a transaction this server does not know of (pushed
//! through another server, or before a restart, or forgotten here), or
//! one the database server ran before it restarted or failed over (its id
//! may name another transaction now: `nexus_pg::OwnTransaction::started`),
//! is read as before, and its puller leaves its own rows out itself.

use std::collections::HashMap;
use std::sync::Mutex;

use nexus_pg::OwnTransaction;

/// Transactions kept per source (the oldest go first): a source pulls
/// after each push, so it rarely has more than one waiting.
const PER_SOURCE: usize = 16;

/// Sources kept; past this, all are forgotten at once (a few pulls then
/// read their own rows again).
const SOURCES: usize = 10_000;

/// By tenant and source, their transactions not yet pulled past.
#[derive(Default)]
pub(crate) struct OwnTransactions(Mutex<HashMap<(String, String), Vec<OwnTransaction>>>);

impl OwnTransactions {
    /// Notes a push of `source` for `tenant` whose transaction wrote only
    /// its rows.
    pub(crate) fn note(&self, tenant: &str, source: &str, id: OwnTransaction) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = (tenant.to_string(), source.to_string());
        if map.len() >= SOURCES && !map.contains_key(&key) {
            map.clear();
        }
        let ids = map.entry(key).or_default();
        if ids.len() == PER_SOURCE {
            ids.remove(0);
        }
        ids.push(id);
    }

    /// The transactions of `source`'s that its pulls of `tenant` may leave
    /// out.
    pub(crate) fn of(&self, tenant: &str, source: &str) -> Vec<OwnTransaction> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(tenant.to_string(), source.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// Forgets `source`'s transactions up to `through`, which its pull has
    /// passed (through the transaction before it when the page ends inside
    /// it: `within`).
    pub(crate) fn passed(&self, tenant: &str, source: &str, through: i64, within: bool) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = (tenant.to_string(), source.to_string());
        if let Some(ids) = map.get_mut(&key) {
            ids.retain(|t| t.id > through || (within && t.id == through));
            if ids.is_empty() {
                map.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: i64) -> OwnTransaction {
        OwnTransaction {
            id,
            started: 1,
            rows: 1,
        }
    }

    fn ids(v: Vec<OwnTransaction>) -> Vec<i64> {
        v.into_iter().map(|t| t.id).collect()
    }

    #[test]
    fn a_source_s_transactions_are_kept_until_pulled_past() {
        let own = OwnTransactions::default();
        own.note("t", "a", t(10));
        own.note("t", "a", t(12));
        own.note("t", "b", t(11));
        own.note("u", "a", t(13));
        assert_eq!(ids(own.of("t", "a")), [10, 12]);
        assert_eq!(ids(own.of("u", "a")), [13]);
        assert!(ids(own.of("t", "c")).is_empty());
        // A page ending inside transaction 12 passed 10, not 12.
        own.passed("t", "a", 12, true);
        assert_eq!(ids(own.of("t", "a")), [12]);
        own.passed("t", "a", 12, false);
        assert!(ids(own.of("t", "a")).is_empty());
        assert_eq!(ids(own.of("t", "b")), [11], "another source's stay");
    }

    #[test]
    fn what_is_kept_is_bounded() {
        let own = OwnTransactions::default();
        for id in 0..(PER_SOURCE as i64 + 5) {
            own.note("t", "a", t(id));
        }
        let kept = ids(own.of("t", "a"));
        assert_eq!(kept.len(), PER_SOURCE);
        assert_eq!(kept[0], 5, "the oldest go first");
        for s in 0..SOURCES {
            own.note("t", &format!("s{s}"), t(1));
        }
        assert!(
            ids(own.of("t", "a")).is_empty(),
            "all forgotten past the bound"
        );
        assert_eq!(ids(own.of("t", &format!("s{}", SOURCES - 1))), [1]);
    }
}
