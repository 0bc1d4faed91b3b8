//! Subscriptions to committed changes ([`Store::subscribe`]).
//!
//! Every write of a store goes through its one writing connection, and the
//! writer is handed back after each group commit, change-file import, pull
//! or migration (`crate::pool::WriterGuard`). While anyone is subscribed,
//! the hand-back compares the store's change sequence number with the last
//! one it saw; when it moved, every subscription gets a [`ChangeEvent`]
//! for the range: the paths that rows changed in it now have (files,
//! their versions and metadata, removed metadata keys), and the paths that
//! renames moved files away from. A path changed again later shows up in
//! the later event too. Chunk rows name no path.
//!
//! A subscriber that has not taken its event yet when the next one comes
//! gets both merged into one (the ranges joined, the paths united), so a
//! slow subscriber holds at most one event and loses nothing.
//!
//! In a store persisted in IndexedDB a commit is durable only once the
//! persist that follows it has committed, so there events are held and
//! delivered after that persist (`Store::durable`): a subscriber never
//! shows a write that a crash could still take back.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use event_listener::Event;
use serde::{Deserialize, Serialize};

use crate::changes::FileRow;
use crate::engine::{Engine, int, text};
use crate::error::Result;
use crate::lock;
use crate::store::Store;

/// The most paths one event lists; past it, [`ChangeEvent::truncated`].
pub const MAX_EVENT_PATHS: usize = 10_000;

/// A path of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChangedPath {
    /// The tenant whose path it is.
    pub tenant: String,
    /// The path.
    pub path: String,
}

/// What committed writes changed: the change sequence range `(after,
/// through]` and the paths whose rows changed in it, sorted by tenant and
/// path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Exclusive lower bound of the range.
    pub after: i64,
    /// Inclusive upper bound.
    pub through: i64,
    /// The paths changed (at most [`MAX_EVENT_PATHS`]).
    pub paths: Vec<ChangedPath>,
    /// Whether more paths changed than `paths` lists: read again whatever
    /// is shown.
    pub truncated: bool,
}

impl ChangeEvent {
    /// The paths of `tenant`, in order.
    pub fn paths_of<'a>(&'a self, tenant: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.paths
            .iter()
            .filter(move |p| p.tenant == tenant)
            .map(|p| p.path.as_str())
    }

    /// `next` folded into this one (it came later).
    fn merge(&mut self, next: ChangeEvent) {
        self.through = next.through;
        let mut all: BTreeSet<ChangedPath> = std::mem::take(&mut self.paths).into_iter().collect();
        all.extend(next.paths);
        self.truncated |= next.truncated || all.len() > MAX_EVENT_PATHS;
        self.paths = all.into_iter().take(MAX_EVENT_PATHS).collect();
    }
}

/// One subscription's side: the event not taken yet.
struct Slot {
    /// The change sequence number when it subscribed: events through it
    /// (held until durable meanwhile) are not its.
    from: i64,
    pending: Mutex<Option<ChangeEvent>>,
    closed: AtomicBool,
    wake: Event,
}

/// A store's subscriptions, and the change sequence number they have seen.
#[derive(Default)]
pub(crate) struct Watchers {
    /// Open subscriptions (a quick check for "nobody listens").
    open: AtomicUsize,
    /// Whether events wait until what they report is durable (IndexedDB,
    /// where a commit reaches disk only with the next persist: see
    /// [`Watchers::take_held`]).
    hold: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The change sequence number every open subscription has been told
    /// about (`None` while there are none).
    seen: Option<i64>,
    slots: Vec<Arc<Slot>>,
    /// Paths renames moved files from since the last event (tenant, path).
    moved_from: Vec<ChangedPath>,
    /// Whether a write (not committed yet) removed rows without saying
    /// which: the next event is marked truncated.
    everything: bool,
    /// What was committed but is not durable yet, while events are held.
    held: Option<ChangeEvent>,
}

impl State {
    /// Hands `event` to every open subscription.
    fn deliver(&self, event: &ChangeEvent) {
        for slot in self.slots.iter().filter(|s| event.through > s.from) {
            let mut pending = lock(&slot.pending);
            match pending.as_mut() {
                Some(earlier) => earlier.merge(event.clone()),
                None => *pending = Some(event.clone()),
            }
            drop(pending);
            slot.wake.notify_additional(1);
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
/// Events taken to be delivered once a persist that covers them succeeded
/// ([`Held::deliver`]); dropped undelivered (the persist failed, or its
/// caller went away), they are held again for the next one.
pub(crate) struct Held<'a> {
    watchers: &'a Watchers,
    event: Option<ChangeEvent>,
}

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
impl Held<'_> {
    /// What was taken is durable: every subscription gets it.
    pub(crate) fn deliver(mut self) {
        if let Some(event) = self.event.take() {
            lock(&self.watchers.state).deliver(&event);
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(mut event) = self.event.take() {
            let mut state = lock(&self.watchers.state);
            // Anything held since came later.
            if let Some(later) = state.held.take() {
                event.merge(later);
            }
            state.held = Some(event);
        }
    }
}

impl Watchers {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    /// From now on, events wait for [`Watchers::take_held`] and
    /// [`Held::deliver`]: for stores whose commits are durable only once
    /// persisted.
    pub(crate) fn hold_until_durable(&self) {
        self.hold.store(true, Ordering::Release);
    }

    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    /// The events held so far, to be delivered once a persist that starts
    /// after this call has succeeded.
    pub(crate) fn take_held(&self) -> Held<'_> {
        Held {
            watchers: self,
            event: lock(&self.state).held.take(),
        }
    }

    /// Notes that a write (not committed yet) moves `path` of `tenant`
    /// away: the next event lists it, if anyone listens.
    pub(crate) fn moved_from(&self, tenant: &str, path: &str) {
        if self.open.load(Ordering::Acquire) > 0 {
            lock(&self.state).moved_from.push(ChangedPath {
                tenant: tenant.to_string(),
                path: path.to_string(),
            });
        }
    }

    /// Notes that a write (not committed yet) removes rows it does not
    /// list (a discarded first pull): the next event is marked truncated,
    /// so that a subscriber reads everything again.
    pub(crate) fn changed_everything(&self) {
        if self.open.load(Ordering::Acquire) > 0 {
            lock(&self.state).everything = true;
        }
    }

    /// Ends every subscription: the store is gone (its pool dropped).
    pub(crate) fn close_all(&self) {
        let mut state = lock(&self.state);
        for slot in state.slots.drain(..) {
            if !slot.closed.swap(true, Ordering::AcqRel) {
                self.open.fetch_sub(1, Ordering::AcqRel);
            }
            slot.wake.notify(usize::MAX);
        }
    }

    /// Notes the paths that incoming file rows (an import, a pull) move
    /// files away from, if anyone listens: a rename made elsewhere.
    pub(crate) fn note_incoming(&self, e: &mut Engine, files: &[FileRow]) -> Result<()> {
        if self.open.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        for r in files {
            let here = e.query_one(
                "SELECT tenant_id, virtual_path FROM file_paths WHERE path_id = ?1",
                &[text(&r.path_id)],
                |row| Ok((row.text(0)?, row.text(1)?)),
            )?;
            if let Some((tenant, path)) = here
                && path != r.virtual_path
            {
                self.moved_from(&tenant, &path);
            }
        }
        Ok(())
    }

    /// Called with the writer as it is handed back: tells every
    /// subscription what was committed since the last time.
    pub(crate) fn after_writes(&self, e: &mut Engine) {
        if self.open.load(Ordering::Acquire) == 0 || e.in_transaction() {
            return;
        }
        let mut state = lock(&self.state);
        state.slots.retain(|s| !s.closed.load(Ordering::Acquire));
        let Some(seen) = state.seen else { return };
        // One read transaction: on the writing connection, turso 0.8.3
        // prepares every autocommit statement again, but not the
        // statements of a transaction.
        let read = e.read(|e| {
            let now = current_seq(e)?;
            if now <= seen {
                return Ok((now, None));
            }
            // The paths could not be read: say that everything may have.
            let found = changed_paths(e, seen, now).unwrap_or((Vec::new(), true));
            Ok((now, Some(found)))
        });
        let Ok((now, found)) = read else { return };
        let Some((paths, truncated)) = found else {
            // Nothing committed: what renames noted was rolled back.
            state.moved_from.clear();
            state.everything = false;
            return;
        };
        let mut event = ChangeEvent {
            after: seen,
            through: now,
            paths: Vec::new(),
            truncated: false,
        };
        event.merge(ChangeEvent {
            after: seen,
            through: now,
            paths: paths
                .into_iter()
                .chain(state.moved_from.drain(..))
                .collect(),
            truncated: truncated || std::mem::take(&mut state.everything),
        });
        state.seen = Some(now);
        if self.hold.load(Ordering::Acquire) {
            match state.held.as_mut() {
                Some(earlier) => earlier.merge(event),
                None => state.held = Some(event),
            }
        } else {
            state.deliver(&event);
        }
    }
}

fn current_seq(e: &mut Engine) -> Result<i64> {
    Ok(e.query_one(
        "SELECT change_seq FROM nexus_state WHERE id = 1",
        &[],
        |r| r.int(0),
    )?
    .unwrap_or(0))
}

/// Where the rows changed in `(?1, ?2]` are, one statement per table that
/// names a file, each at most one more than [`MAX_EVENT_PATHS`]. Four
/// statements and a sort cost a tenth of their `UNION` in turso 0.8.3
/// (about 25 us against 250 us after a lone put), which builds a temporary
/// B-tree on every run.
const CHANGED: [&str; 4] = [
    "SELECT tenant_id, virtual_path FROM file_paths WHERE change_seq > ?1 AND change_seq <= ?2 \
     LIMIT 10001",
    "SELECT f.tenant_id, f.virtual_path FROM version_history v JOIN file_paths f ON f.path_id = v.path_id \
     WHERE v.change_seq > ?1 AND v.change_seq <= ?2 LIMIT 10001",
    "SELECT f.tenant_id, f.virtual_path FROM file_metadata m JOIN file_paths f ON f.path_id = m.path_id \
     WHERE m.change_seq > ?1 AND m.change_seq <= ?2 LIMIT 10001",
    "SELECT f.tenant_id, f.virtual_path FROM tombstones t JOIN file_paths f ON f.path_id = t.key1 \
     WHERE t.table_name = 'file_metadata' AND t.change_seq > ?1 AND t.change_seq <= ?2 LIMIT 10001",
];

const _: () = assert!(MAX_EVENT_PATHS == 10_000, "the LIMITs above are one more");

/// The paths that rows changed in `(after, through]` have now, sorted, each
/// once; `true` when there may be more than [`MAX_EVENT_PATHS`] (then the
/// list is cut there).
fn changed_paths(e: &mut Engine, after: i64, through: i64) -> Result<(Vec<ChangedPath>, bool)> {
    let mut paths = Vec::new();
    let mut truncated = false;
    for sql in CHANGED {
        let found = e.query(sql, &[int(after), int(through)], |r| {
            Ok(ChangedPath {
                tenant: r.text(0)?,
                path: r.text(1)?,
            })
        })?;
        // A statement cut at its limit may have left out paths no other
        // one found.
        truncated |= found.len() > MAX_EVENT_PATHS;
        paths.extend(found);
    }
    paths.sort_unstable();
    paths.dedup();
    truncated |= paths.len() > MAX_EVENT_PATHS;
    paths.truncate(MAX_EVENT_PATHS);
    Ok((paths, truncated))
}

/// Committed changes of a store, as they come ([`Store::subscribe`]).
/// Dropping it (or [`Subscription::close`]) ends it.
pub struct Subscription {
    slot: Arc<Slot>,
    watchers: Arc<Watchers>,
}

impl Subscription {
    /// The next event: what was committed since the last one taken (merged,
    /// if several came meanwhile). `None` once closed.
    pub async fn next(&self) -> Option<ChangeEvent> {
        loop {
            let woken = self.slot.wake.listen();
            if self.slot.closed.load(Ordering::Acquire) {
                return None;
            }
            if let Some(event) = lock(&self.slot.pending).take() {
                return Some(event);
            }
            woken.await;
        }
    }

    /// The event waiting, if there is one, without waiting.
    pub fn try_next(&self) -> Option<ChangeEvent> {
        lock(&self.slot.pending).take()
    }

    /// Ends the subscription: a `next` waiting now or later returns `None`.
    /// The store's last handle dropped ends it too.
    pub fn close(&self) {
        if !self.slot.closed.swap(true, Ordering::AcqRel) {
            self.watchers.open.fetch_sub(1, Ordering::AcqRel);
            self.slot.wake.notify(usize::MAX);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("closed", &self.slot.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Store {
    /// Subscribes to committed changes: every write committed after this
    /// returns, by any handle of this store (every tenant), a change-file
    /// import or a pull, reaches the subscription as a [`ChangeEvent`] once
    /// committed. Handles of one store share its subscriptions' source; a
    /// second process writing the same file is not seen.
    pub async fn subscribe(&self) -> Result<Subscription> {
        let watchers = self.shared.pool.watchers.clone();
        // Under the writer, so that nothing commits between reading the
        // number and counting the subscription.
        let mut writer = self.writer().await;
        let now = current_seq(&mut writer)?;
        let slot = Arc::new(Slot {
            from: now,
            pending: Mutex::new(None),
            closed: AtomicBool::new(false),
            wake: Event::new(),
        });
        {
            let mut state = lock(&watchers.state);
            state.slots.retain(|s| !s.closed.load(Ordering::Acquire));
            if state.slots.is_empty() {
                state.seen = Some(now);
                state.moved_from.clear();
                state.held = None;
            }
            state.slots.push(slot.clone());
            watchers.open.fetch_add(1, Ordering::AcqRel);
        }
        drop(writer);
        Ok(Subscription { slot, watchers })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::{NewFile, Store};

    fn paths(e: &super::ChangeEvent, tenant: &str) -> Vec<String> {
        e.paths_of(tenant).map(str::to_string).collect()
    }

    /// Every kind of write reaches every subscription once committed, with
    /// its range and paths; events wait merged for a slow subscriber; a
    /// failed write tells nothing; a closed subscription ends; another
    /// store's import is seen too.
    #[test]
    fn subscriptions_see_committed_writes() {
        pollster::block_on(async {
            let store = Store::memory().await.unwrap();
            store
                .put(NewFile::new("/before", "local", "/b", 1))
                .await
                .unwrap();
            let sub = store.subscribe().await.unwrap();
            let other = store.subscribe().await.unwrap();
            assert!(sub.try_next().is_none(), "nothing before the first write");

            store
                .put(NewFile::new("/a/1", "local", "/1", 1))
                .await
                .unwrap();
            let e = sub.next().await.unwrap();
            assert_eq!(e.through, e.after + 1);
            assert_eq!(paths(&e, "default"), ["/a/1"]);
            assert!(!e.truncated);

            // Two writes before the subscriber looks: one merged event.
            store.set_metadata("/before", "k", &json!(1)).await.unwrap();
            store.rename("/a", "/z").await.unwrap();
            let e2 = sub.next().await.unwrap();
            assert_eq!((e2.after, e2.through), (e.through, e.through + 2));
            assert_eq!(paths(&e2, "default"), ["/a/1", "/before", "/z/1"]);

            // The other subscription got everything merged, from the start.
            let all = other.try_next().unwrap();
            assert_eq!((all.after, all.through), (e.after, e2.through));
            assert_eq!(paths(&all, "default"), ["/a/1", "/before", "/z/1"]);

            // Other tenants, deletes and metadata removals.
            let t = store.with_tenant("t2").unwrap();
            t.put(NewFile::new("/x", "local", "/x", 1)).await.unwrap();
            store.delete_metadata("/before", "k").await.unwrap();
            store.delete("/z/1").await.unwrap();
            let e3 = sub.next().await.unwrap();
            assert_eq!(paths(&e3, "t2"), ["/x"]);
            assert_eq!(paths(&e3, "default"), ["/before", "/z/1"]);

            // A write that fails commits nothing and tells nothing.
            assert!(store.rename("/missing", "/m").await.is_err());
            assert!(sub.try_next().is_none());

            // What another store's changes bring in, by an import.
            let b = Store::memory().await.unwrap();
            b.put(NewFile::new("/from-b", "local", "/fb", 1))
                .await
                .unwrap();
            let file = b.export_changes(0).await.unwrap();
            store.import_changes(&file).await.unwrap();
            let e4 = sub.next().await.unwrap();
            assert_eq!(paths(&e4, "default"), ["/from-b"]);
            // A rename made there: both paths.
            b.rename("/from-b", "/renamed-b").await.unwrap();
            let later = b.export_changes(file.changes.through).await.unwrap();
            store.import_changes(&later).await.unwrap();
            let e5 = sub.next().await.unwrap();
            assert_eq!(paths(&e5, "default"), ["/from-b", "/renamed-b"]);

            sub.close();
            assert!(sub.next().await.is_none());
            drop(other);
            // With nobody subscribed, writes go on; a new subscription
            // starts from now.
            store
                .put(NewFile::new("/later", "local", "/l", 1))
                .await
                .unwrap();
            let again = store.subscribe().await.unwrap();
            store
                .put(NewFile::new("/last", "local", "/l", 1))
                .await
                .unwrap();
            assert_eq!(paths(&again.next().await.unwrap(), "default"), ["/last"]);
            // The store's last handle gone: the subscription ends.
            drop((store, t, b));
            assert!(again.next().await.is_none());
        });
    }

    /// More paths than an event holds: cut at [`super::MAX_EVENT_PATHS`],
    /// sorted, each once, and marked truncated; one fewer fits whole.
    #[test]
    fn a_large_commit_is_cut_and_marked() {
        pollster::block_on(async {
            let store = Store::memory().await.unwrap();
            let sub = store.subscribe().await.unwrap();
            let files = |n: usize, dir: &str| -> Vec<NewFile> {
                (0..n)
                    .map(|i| NewFile::new(format!("/{dir}/{i:05}"), "local", "/p", 1))
                    .collect()
            };
            store
                .put_batch(&files(super::MAX_EVENT_PATHS + 1, "big"))
                .await
                .unwrap();
            let e = sub.next().await.unwrap();
            assert!(e.truncated);
            assert_eq!(e.paths.len(), super::MAX_EVENT_PATHS);
            assert_eq!(e.paths[0].path, "/big/00000");
            assert!(e.paths.windows(2).all(|w| w[0] < w[1]), "sorted, each once");

            store
                .put_batch(&files(super::MAX_EVENT_PATHS, "fits"))
                .await
                .unwrap();
            let e = sub.next().await.unwrap();
            assert!(!e.truncated);
            assert_eq!(e.paths.len(), super::MAX_EVENT_PATHS);
        });
    }
}
