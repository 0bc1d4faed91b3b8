//! Which transaction ids this process knows to be on disk: the newest id of
//! its own commits that were durable when acknowledged.

use std::sync::atomic::{AtomicI64, Ordering};

/// The newest transaction id (`xid8`) of this process's own commits that
/// were durable when PostgreSQL acknowledged them (`synchronous_commit`
/// `on` or `remote_apply`: flushed, and on the synchronous standbys if
/// any). Such a commit of id `X` puts on disk every commit that came
/// before it, and after a crash PostgreSQL hands out only ids above `X`.
///
/// A change-feed page makes its bound durable before handing it out
/// (`nexus_pg::read_tenant_page`) by committing a transaction of its own
/// with an id above every id of the page; one of these commits with an id
/// at or above the page's next id (given out after the page's bound was
/// read) has done it already. Shared by a sync server's pushes, which
/// note their commits ([`Durable::note`]), and its pulls, which ask
/// ([`Durable::covers`]).
#[derive(Debug, Default)]
pub struct Durable(AtomicI64);

/// The select-list expression that gives a transaction's id (its `xid8`,
/// as `int8`; one is given to it if it has none) when its commit will be
/// durable when acknowledged, else `NULL`: read in the transaction, and
/// passed to [`Durable::note`] once its commit is acknowledged. A string
/// literal, so that callers can `concat!` it into a statement they run.
#[macro_export]
macro_rules! durable_xid {
    () => {
        "CASE WHEN current_setting('synchronous_commit') IN ('on', 'remote_apply') \
         THEN pg_current_xact_id()::text::int8 END"
    };
}

impl Durable {
    /// Notes the acknowledged commit of the transaction `xid`, read in it
    /// with [`durable_xid!`](crate::durable_xid).
    pub fn note(&self, xid: i64) {
        self.0.fetch_max(xid, Ordering::AcqRel);
    }

    /// Whether a commit noted here is durable and has an id at or above
    /// `next` (an id not yet given out when it was read).
    pub fn covers(&self, next: i64) -> bool {
        self.0.load(Ordering::Acquire) >= next
    }
}

#[cfg(test)]
mod tests {
    use super::Durable;

    #[test]
    fn the_newest_noted_commit_counts() {
        let d = Durable::default();
        assert!(!d.covers(1), "nothing noted");
        d.note(10);
        d.note(7);
        assert!(d.covers(10) && d.covers(3));
        assert!(!d.covers(11), "an id given out after the newest commit");
    }
}
