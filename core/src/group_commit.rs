//! Group commit: writes that arrive while a transaction is being written
//! join the next one, which commits them all with one sync.
//!
//! A caller puts its write (a closure over the writing connection and a
//! change sequence number) in the pool's queue and then, until its result
//! is there, tries to take the writer. Whoever takes it while the queue is
//! not empty leads a group ([`run_group`]): it opens a transaction and runs
//! the queued writes in order, taking the ones queued meanwhile too, until
//! the queue is empty or [`MAX_GROUP`] were taken; then one `COMMIT` (one
//! sync); then it hands the writer back and wakes the caller of the first
//! write still queued, to lead the next group (`crate::pool`). Each caller
//! is woken when its result is there. Nothing waits for company: a write
//! alone runs at once, in a group of one, as before group commit.
//!
//! Each write takes a change sequence number of its own, so the numbers of
//! a group are consecutive in queue order, every row keeps the number of the
//! one write that stamped it, and sequence order stays commit order (a group
//! commits all its numbers at once, after every earlier group). Each write
//! after the first of a transaction runs inside a savepoint: when it fails
//! it is rolled back to it, number included, and fails alone. If an error
//! ended the whole transaction, the writes before it are run again in a new
//! one (that is why a write is `FnMut`); their first results are dropped.
//! Each caller gets its result only after the transaction holding its write
//! committed; when the commit fails, every write of the group fails. A
//! write that failed alone gets its error after that commit too: its
//! failure may come from the writes before it in the group (a
//! precondition that an earlier write of the group made false), and a
//! caller told before those are committed would read the state it failed
//! against, not the one after (a compare-and-swap loop would spin until
//! the commit).
//!
//! A caller that gives up (drops its future) before its write was taken
//! leaves it unapplied; once taken, the write is applied and its result
//! dropped. Writes own what they use (`'static`): the leader may run a
//! write after its caller is gone.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use event_listener::{Event, EventListener};

use crate::engine::{BEGIN_WRITE, Engine, Seq};
use crate::error::{Error, Result, one_line};
use crate::lock;

/// The most writes one transaction takes from the queue.
pub(crate) const MAX_GROUP: usize = 256;

/// A write: runs in the caller's transaction with its change sequence number.
pub(crate) type WriteFn<T> = Box<dyn FnMut(&mut Engine, Seq) -> Result<T> + Send>;

enum State<T> {
    /// In the queue.
    Queued(WriteFn<T>),
    /// Given up by its caller before it was taken: never applied.
    Abandoned,
    /// Taken by a leader.
    Taken,
    /// Its transaction ended (or it failed alone).
    Done(Result<T>),
    /// The caller has its result.
    Collected,
}

/// One caller's write and, later, its result.
pub(crate) struct Request<T> {
    state: Mutex<State<T>>,
    /// Wakes the caller: its result is there, or the writer was handed back
    /// while its write was first in the queue.
    wake: Event,
}

impl<T: Send + 'static> Request<T> {
    pub(crate) fn new(f: WriteFn<T>) -> Arc<Self> {
        Arc::new(Request {
            state: Mutex::new(State::Queued(f)),
            wake: Event::new(),
        })
    }

    /// Listens for [`Request::wake`]; listen before looking at the state.
    pub(crate) fn listen(&self) -> EventListener {
        self.wake.listen()
    }

    /// The result, once there is one (taken out: `Some` once).
    pub(crate) fn result(&self) -> Option<Result<T>> {
        let mut state = lock(&self.state);
        if !matches!(*state, State::Done(_)) {
            return None;
        }
        match std::mem::replace(&mut *state, State::Collected) {
            State::Done(result) => Some(result),
            _ => unreachable!("checked above"),
        }
    }

    /// The caller gives up: the write is not applied unless already taken.
    /// Returns whether it was still queued.
    pub(crate) fn abandon(&self) -> bool {
        let mut state = lock(&self.state);
        let queued = matches!(*state, State::Queued(_));
        if queued {
            *state = State::Abandoned;
        }
        queued
    }
}

impl<T> Request<T> {
    fn complete(&self, result: Result<T>) {
        *lock(&self.state) = State::Done(result);
        self.wake.notify_additional(1);
    }
}

/// A request in the queue, whatever its result type.
pub(crate) trait Queued: Send + Sync {
    /// Takes the write out of its request to run it; `None` when its caller
    /// gave up.
    fn take(self: Arc<Self>) -> Option<Box<dyn Member>>;
    /// Whether its caller gave up.
    fn abandoned(&self) -> bool;
    /// Wakes its caller (to lead the next group).
    fn wake(&self);
}

impl<T: Send + 'static> Queued for Request<T> {
    fn abandoned(&self) -> bool {
        matches!(*lock(&self.state), State::Abandoned)
    }

    fn wake(&self) {
        self.wake.notify_additional(1);
    }

    fn take(self: Arc<Self>) -> Option<Box<dyn Member>> {
        let f = {
            let mut state = lock(&self.state);
            match std::mem::replace(&mut *state, State::Taken) {
                State::Queued(f) => f,
                other => {
                    *state = other;
                    return None;
                }
            }
        };
        Some(Box::new(Taken {
            request: self,
            f,
            value: None,
            finished: false,
        }))
    }
}

/// A write taken into a group.
pub(crate) trait Member: Send {
    /// Runs the write; keeps its value until [`Member::finish`].
    fn run(&mut self, e: &mut Engine, seq: Seq) -> Result<()>;
    /// Its transaction was rolled back: the value kept is void.
    fn forget(&mut self);
    /// Hands the caller its result: the value kept when `outcome` is `Ok`
    /// (its transaction committed), else the error.
    fn finish(&mut self, outcome: Result<()>);
}

struct Taken<T> {
    request: Arc<Request<T>>,
    f: WriteFn<T>,
    value: Option<T>,
    finished: bool,
}

impl<T: Send + 'static> Member for Taken<T> {
    fn run(&mut self, e: &mut Engine, seq: Seq) -> Result<()> {
        let f = &mut self.f;
        let value = catch_unwind(AssertUnwindSafe(|| f(e, seq))).unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_string());
            Err(Error::engine_message(
                "running a write",
                format!("it panicked: {what}"),
            ))
        })?;
        self.value = Some(value);
        Ok(())
    }

    fn forget(&mut self) {
        self.value = None;
    }

    fn finish(&mut self, outcome: Result<()>) {
        self.finished = true;
        let result = match outcome {
            Ok(()) => self.value.take().ok_or_else(|| {
                Error::engine_message("committing a write", "the write did not run")
            }),
            Err(e) => Err(e),
        };
        self.request.complete(result);
    }
}

impl<T> Drop for Taken<T> {
    fn drop(&mut self) {
        // Only when the leader unwinds: its caller must not wait for ever.
        if !self.finished {
            self.request.complete(Err(Error::engine_message(
                "running a group of writes",
                "the group stopped before this write was committed",
            )));
        }
    }
}

/// `err` for one more caller: the same kind, the same message.
fn copy_of(context: &'static str, err: &Error) -> Error {
    match err {
        Error::Busy { location, waited } => Error::Busy {
            location: location.clone(),
            waited: *waited,
        },
        other => Error::engine_message(context, one_line(other)),
    }
}

/// Every member fails with `err` (the first gets it, the others a copy).
fn fail_all(members: Vec<Box<dyn Member>>, context: &'static str, err: Error) {
    let mut members = members.into_iter();
    let Some(mut first) = members.next() else {
        return;
    };
    for mut m in members {
        m.finish(Err(copy_of(context, &err)));
    }
    first.finish(Err(err));
}

const SAVEPOINT: &str = "SAVEPOINT nexus_write";
const RELEASE: &str = "RELEASE nexus_write";
const ROLLBACK_TO: &str = "ROLLBACK TO nexus_write";

/// One write of a group: its savepoint (when earlier writes of the
/// transaction must survive its failure), its change sequence number, the
/// write.
fn run_one(e: &mut Engine, m: &mut dyn Member, savepoint: bool) -> Result<()> {
    if savepoint {
        e.execute(SAVEPOINT, &[])?;
    }
    let seq = e.next_seq()?;
    m.run(e, seq)?;
    if savepoint {
        e.execute(RELEASE, &[])?;
    }
    Ok(())
}

/// Undoes the write of the current savepoint, keeping the transaction.
fn undo(e: &mut Engine) -> Result<()> {
    e.execute(ROLLBACK_TO, &[])?;
    e.execute(RELEASE, &[])?;
    Ok(())
}

/// Runs one group in one write transaction and finishes every write it
/// took: writes come from `next` (the queue, in order) until it has none or
/// [`MAX_GROUP`] were taken, so that writes queued while the group runs
/// still join it; then one `COMMIT`. The writes that failed alone are
/// finished last. See the module documentation.
pub(crate) fn run_group(e: &mut Engine, next: impl FnMut() -> Option<Box<dyn Member>>) {
    let mut failed = Vec::new();
    commit_group(e, next, &mut failed);
    for (mut member, err) in failed {
        member.finish(Err(err));
    }
}

/// [`run_group`] but for the writes that failed alone, which it leaves in
/// `failed` with their errors.
fn commit_group(
    e: &mut Engine,
    mut next: impl FnMut() -> Option<Box<dyn Member>>,
    failed: &mut Vec<(Box<dyn Member>, Error)>,
) {
    // A transaction left open by a leader that panicked.
    e.rollback_if_open();
    let mut taken = 0;
    // Run in the open transaction, in order.
    let mut ran: Vec<Box<dyn Member>> = Vec::new();
    // To run again: their transaction ended with a later write's error.
    let mut again: VecDeque<Box<dyn Member>> = VecDeque::new();
    let mut open = false;
    loop {
        let member = again.pop_front().or_else(|| {
            (taken < MAX_GROUP).then(&mut next).flatten().inspect(|_| {
                taken += 1;
            })
        });
        let Some(mut member) = member else { break };
        if !open {
            if let Err(err) = e.execute(BEGIN_WRITE, &[]) {
                e.rollback_if_open();
                fail_all(
                    std::iter::once(member).chain(again).collect(),
                    "starting a write transaction",
                    err,
                );
                return;
            }
            open = true;
        }
        // The first write of a transaction needs no savepoint: its error
        // rolls back nothing else.
        let savepoint = !ran.is_empty();
        let Err(err) = run_one(e, &mut *member, savepoint) else {
            ran.push(member);
            continue;
        };
        if savepoint && e.in_transaction() && undo(e).is_ok() {
            // Only this write is undone; the group goes on without it.
            failed.push((member, err));
            continue;
        }
        // The transaction is gone, with the writes before this one: run them
        // again, in a new transaction, without it.
        e.rollback_if_open();
        open = false;
        failed.push((member, err));
        for mut m in ran.drain(..).rev() {
            m.forget();
            again.push_front(m);
        }
    }
    if !open {
        return;
    }
    match e.execute("COMMIT", &[]) {
        Ok(_) => ran.iter_mut().for_each(|m| m.finish(Ok(()))),
        Err(err) => {
            e.rollback_if_open();
            fail_all(ran, "committing a group of writes", err);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::engine::{int, text};
    use crate::error::Error;
    use crate::{NewFile, Precondition, Store};

    fn open(dir: &tempfile::TempDir) -> Store {
        pollster::block_on(Store::open(dir.path().join("g.db"))).unwrap()
    }

    fn wait_for_queue(store: &Store, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while store.shared.pool.queued() < n {
            assert!(Instant::now() < deadline, "the writes were not queued");
            std::thread::yield_now();
        }
    }

    fn change_seq(store: &Store) -> i64 {
        pollster::block_on(store.stats()).unwrap().change_seq
    }

    /// Writes queued while the writer is held run as one group when it is
    /// handed back: the ones that fail (a broken precondition, an SQL
    /// constraint error after an earlier statement of the write changed a
    /// row, a panic, an error that ends the whole transaction) fail alone,
    /// the others are committed with consecutive sequence numbers in queue
    /// order, and every caller gets its own result.
    #[test]
    fn a_failing_write_fails_alone_in_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        pollster::block_on(store.put(NewFile::new("/exists", "local", "/d", 1))).unwrap();
        let before = change_seq(&store);
        let held = pollster::block_on(store.shared.pool.writer());
        std::thread::scope(|s| {
            let mut handles = Vec::new();
            for i in 0..8 {
                let store = &store;
                handles.push(s.spawn(move || {
                    pollster::block_on(async move {
                        match i {
                            // A precondition that does not hold, first in
                            // the transaction (no savepoint).
                            0 => store
                                .put_if(
                                    NewFile::new("/exists", "local", "/other", 2),
                                    Precondition::Absent,
                                )
                                .await
                                .map(|r| r.path),
                            // A statement that fails in the engine after
                            // an earlier statement of the same write
                            // changed a row.
                            3 => store
                                .write(|e, seq| {
                                    e.execute(
                                        "UPDATE file_paths SET size_bytes = 99, change_seq = ?1 \
                                         WHERE virtual_path = '/exists'",
                                        &[int(seq)],
                                    )?;
                                    let id: String = e
                                        .query_one(
                                            "SELECT path_id FROM file_paths WHERE virtual_path = '/exists'",
                                            &[],
                                            |r| r.text(0),
                                        )?
                                        .unwrap();
                                    e.execute(
                                        "INSERT INTO file_paths (path_id, tenant_id, virtual_path, backend_id, \
                                         physical_path, size_bytes, created_at, updated_at, change_seq) \
                                         VALUES (?1, 'default', '/dup', 'local', '/d', 1, 0, 0, ?2)",
                                        &[text(&id), int(seq)],
                                    )?;
                                    Ok("unreachable".to_string())
                                })
                                .await,
                            5 => store
                                .write(|_, _| -> crate::Result<String> { panic!("on purpose") })
                                .await,
                            // An error after which no transaction is open:
                            // the writes before it are run again.
                            6 => store
                                .write(|e, _| -> crate::Result<String> {
                                    e.execute("ROLLBACK", &[])?;
                                    Err(Error::invalid("test", "6", "ends the transaction"))
                                })
                                .await,
                            _ => store
                                .put(NewFile::new(format!("/g{i}"), "local", "/d", i))
                                .await
                                .map(|r| r.path),
                        }
                    })
                }));
                // One at a time, so that the queue holds them in this order.
                wait_for_queue(store, i as usize + 1);
            }
            drop(held);
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            for (i, r) in results.iter().enumerate() {
                match i {
                    0 => assert!(matches!(r, Err(Error::Conflict { .. })), "{r:?}"),
                    3 => assert!(matches!(r, Err(Error::Engine { .. })), "{r:?}"),
                    5 => assert!(
                        r.as_ref().unwrap_err().to_string().contains("on purpose"),
                        "{r:?}"
                    ),
                    6 => assert!(
                        matches!(r, Err(Error::InvalidArgument { name: "test", .. })),
                        "{r:?}"
                    ),
                    _ => assert_eq!(r.as_ref().unwrap(), &format!("/g{i}")),
                }
            }
        });
        // Four puts committed, one number each, consecutive in queue order.
        assert_eq!(change_seq(&store), before + 4);
        let exists = pollster::block_on(store.get("/exists")).unwrap().unwrap();
        assert_eq!((exists.size, exists.physical_path.as_str()), (1, "/d"));
        assert!(pollster::block_on(store.get("/dup")).unwrap().is_none());
        let mut seqs = Vec::new();
        for i in [1, 2, 4, 7] {
            let rows = pollster::block_on(store.debug_query(&format!(
                "SELECT change_seq FROM file_paths WHERE virtual_path = '/g{i}'"
            )))
            .unwrap();
            seqs.push(rows[0][0].clone().unwrap().parse::<i64>().unwrap());
        }
        assert_eq!(seqs, (1..=4).map(|k| before + k).collect::<Vec<_>>());
        let integrity = pollster::block_on(store.debug_query("PRAGMA integrity_check")).unwrap();
        assert_eq!(integrity, vec![vec![Some("ok".to_string())]]);
    }

    /// A write whose caller gave up before it was taken is not applied.
    #[test]
    fn an_abandoned_write_is_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let held = pollster::block_on(store.shared.pool.writer());
        let mut gone = Box::pin(store.put(NewFile::new("/gone", "local", "/d", 1)));
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(gone.as_mut().poll(&mut cx).is_pending());
        assert_eq!(store.shared.pool.queued(), 1);
        drop(gone);
        drop(held);
        pollster::block_on(store.put(NewFile::new("/kept", "local", "/d", 1))).unwrap();
        assert!(pollster::block_on(store.get("/gone")).unwrap().is_none());
        assert!(pollster::block_on(store.get("/kept")).unwrap().is_some());
        assert_eq!(change_seq(&store), 1);
    }

    /// When the caller woken to lead the next group gives up instead, the
    /// next queued caller is woken and leads.
    #[test]
    fn a_caller_that_gives_up_passes_the_lead_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let held = pollster::block_on(store.shared.pool.writer());
        let mut first = Box::pin(store.put(NewFile::new("/first", "local", "/d", 1)));
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(first.as_mut().poll(&mut cx).is_pending());
        let second = {
            let store = store.clone();
            std::thread::spawn(move || {
                pollster::block_on(store.put(NewFile::new("/second", "local", "/d", 1)))
            })
        };
        wait_for_queue(&store, 2);
        // Wakes the first caller, which is never polled again.
        drop(held);
        std::thread::sleep(Duration::from_millis(20));
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !second.is_finished() {
            assert!(
                Instant::now() < deadline,
                "nobody led after the first gave up"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        second.join().unwrap().unwrap();
        // The second caller may have taken the writer itself between
        // queueing and the release, and led a group that took the first
        // write while it was still queued (then it is applied, as a taken
        // write is); either way each applied write has its own number.
        let first_applied = pollster::block_on(store.get("/first")).unwrap().is_some();
        assert_eq!(change_seq(&store), if first_applied { 2 } else { 1 });
    }
}
