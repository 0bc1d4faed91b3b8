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

/// Sources kept per tenant; past this, the tenant's are forgotten at once
/// (a few of its pulls then read their own rows again), and no other
/// tenant's.
const SOURCES_PER_TENANT: usize = 1_000;

/// Sources kept in all; past this, those of the tenant that has the most
/// are forgotten.
const SOURCES: usize = 10_000;

/// By tenant, then source, their transactions not yet pulled past.
#[derive(Default)]
pub(crate) struct OwnTransactions(Mutex<Tenants>);

#[derive(Default)]
struct Tenants {
    by_tenant: HashMap<String, HashMap<String, Vec<OwnTransaction>>>,
    /// Sources in all the tenants' maps.
    sources: usize,
}

impl Tenants {
    /// Forgets every source of `tenant`'s.
    fn forget(&mut self, tenant: &str) {
        if let Some(sources) = self.by_tenant.remove(tenant) {
            self.sources -= sources.len();
        }
    }
}

impl OwnTransactions {
    /// Notes a push of `source` for `tenant` whose transaction wrote only
    /// its rows.
    pub(crate) fn note(&self, tenant: &str, source: &str, id: OwnTransaction) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let known = all
            .by_tenant
            .get(tenant)
            .is_some_and(|s| s.contains_key(source));
        if !known {
            if all.by_tenant.get(tenant).map_or(0, HashMap::len) >= SOURCES_PER_TENANT {
                all.forget(tenant);
            } else if all.sources >= SOURCES {
                let most = all
                    .by_tenant
                    .iter()
                    .max_by_key(|(_, s)| s.len())
                    .map(|(t, _)| t.clone());
                if let Some(most) = most {
                    all.forget(&most);
                }
            }
            all.sources += 1;
        }
        let ids = all
            .by_tenant
            .entry(tenant.to_string())
            .or_default()
            .entry(source.to_string())
            .or_default();
        if ids.len() == PER_SOURCE {
            ids.remove(0);
        }
        ids.push(id);
    }

    /// The transactions of `source`'s that its pulls of `tenant` may leave
    /// out.
    pub(crate) fn of(&self, tenant: &str, source: &str) -> Vec<OwnTransaction> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.by_tenant
            .get(tenant)
            .and_then(|s| s.get(source))
            .cloned()
            .unwrap_or_default()
    }

    /// Forgets `source`'s transactions up to `through`, which its pull has
    /// passed (through the transaction before it when the page ends inside
    /// it: `within`).
    pub(crate) fn passed(&self, tenant: &str, source: &str, through: i64, within: bool) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sources) = all.by_tenant.get_mut(tenant) else {
            return;
        };
        let Some(ids) = sources.get_mut(source) else {
            return;
        };
        ids.retain(|t| t.id > through || (within && t.id == through));
        if ids.is_empty() {
            sources.remove(source);
            if sources.is_empty() {
                all.by_tenant.remove(tenant);
            }
            all.sources -= 1;
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
    }

    #[test]
    fn a_tenant_with_many_sources_forgets_only_its_own() {
        let own = OwnTransactions::default();
        own.note("victim", "a", t(1));
        for s in 0..SOURCES_PER_TENANT {
            own.note("noisy", &format!("s{s}"), t(2));
        }
        assert_eq!(ids(own.of("noisy", "s0")), [2]);
        own.note("noisy", "one-more", t(3));
        assert!(ids(own.of("noisy", "s0")).is_empty(), "its own forgotten");
        assert_eq!(ids(own.of("noisy", "one-more")), [3]);
        assert_eq!(ids(own.of("victim", "a")), [1], "another tenant's stay");
        // Past the bound of all sources, the tenant with the most goes.
        let tenants = SOURCES / (SOURCES_PER_TENANT - 1) + 1;
        for n in 0..tenants {
            for s in 0..(SOURCES_PER_TENANT - 1) {
                own.note(&format!("n{n}"), &format!("s{s}"), t(4));
            }
        }
        own.note("n-last", "s", t(5));
        assert_eq!(ids(own.of("victim", "a")), [1], "the smallest stays");
        assert_eq!(ids(own.of("n-last", "s")), [5]);
        let all = own.0.lock().unwrap();
        let counted: usize = all.by_tenant.values().map(HashMap::len).sum();
        assert_eq!(all.sources, counted);
        assert!(all.sources <= SOURCES);
    }

    #[test]
    fn pulled_past_sources_are_no_longer_counted() {
        let own = OwnTransactions::default();
        own.note("t", "a", t(1));
        own.note("t", "b", t(2));
        own.passed("t", "a", 1, false);
        own.passed("t", "x", 1, false);
        own.passed("u", "a", 1, false);
        let all = own.0.lock().unwrap();
        assert_eq!(all.sources, 1);
        assert_eq!(all.by_tenant["t"].len(), 1);
    }
}
