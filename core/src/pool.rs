//! A store's connections: one that writes, and a few readers handed out
//! without a lock that all calls share.
//!
//! Writes go through a queue in front of the writer: whoever takes the
//! writer while writes are queued runs them all in one transaction
//! ([`crate::group_commit`]); migrations and change-file imports take the
//! writer for themselves ([`Pool::writer`], [`Pool::exclusive`]). Reads take any
//! idle reader. An atomic counter holds the number of idle readers (a
//! permit is one decrement; no lock), and each reader sits behind its own
//! mutex, taken with `try_lock`: holding a permit means at most `n - 1`
//! readers are held by others, so the scan finds a free one. Readers are
//! scanned from the first, so that a caller alone keeps using the same warm
//! connection. A caller that finds no idle reader waits for whichever is
//! released first (an [`Event`]; every release wakes one more waiter).
//!
//! Newcomers may take a reader ahead of callers already waiting (a woken
//! waiter is slower than a thread that is running), which keeps the readers
//! busy; so that no caller waits for ever behind a stream of others, a
//! waiter that has lost [`LOSSES`] times in a row marks itself starving,
//! and while one is, newcomers queue too, only starving waiters take
//! readers, and each release wakes one of them (they wait on an event of
//! their own). Counted in losses, not time: there is no clock in a browser.
//!
//! Readers never write, so turso runs them side by side under WAL, next to
//! the writer; each read statement, or each [`crate::engine::Engine::read`]
//! transaction, sees the last committed state when it starts.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_lock::{Mutex as AsyncMutex, MutexGuard};
use event_listener::Event;
use turso_core::{Database, IO};

use crate::engine::{Clock, Engine, Seq};
use crate::error::Result;
use crate::group_commit::{Queued, Request, run_group};
use crate::watch::Watchers;

/// How many times a waiter may be woken and find every reader taken again
/// before newcomers have to queue behind it.
const LOSSES: u32 = 4;

/// The writer and the readers of one database.
pub(crate) struct Pool {
    writer: AsyncMutex<Engine>,
    /// Writes waiting for the next group, in arrival order.
    queue: Mutex<VecDeque<Arc<dyn Queued>>>,
    readers: Box<[AsyncMutex<Engine>]>,
    /// Readers not handed out.
    idle: AtomicUsize,
    /// Waiters that lost [`LOSSES`] times; while there are any, only they
    /// take readers.
    starving: AtomicUsize,
    /// Notified (one more waiter each time) when a reader is handed back
    /// and no waiter is starving.
    released: Event,
    /// The same for starving waiters, while there are any.
    released_to_starving: Event,
    /// Subscriptions to committed changes, told when the writer is handed back.
    pub(crate) watchers: Arc<Watchers>,
}

/// The writer, held alone; handed back when dropped, which wakes the caller
/// of the first queued write (to lead the next group).
pub(crate) struct WriterGuard<'a> {
    engine: Option<MutexGuard<'a, Engine>>,
    pool: &'a Pool,
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.as_mut() {
            self.pool.watchers.after_writes(engine);
        }
        // Unlocked before the next leader is woken, so that it finds it free.
        drop(self.engine.take());
        self.pool.wake_first();
    }
}

impl Deref for WriterGuard<'_> {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        self.engine.as_ref().expect("held until dropped")
    }
}

impl DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut Engine {
        self.engine.as_mut().expect("held until dropped")
    }
}

/// Gives up a caller's write when its future is dropped before the write
/// was taken into a group.
struct Abandon<'a, T: Send + 'static>(&'a Pool, &'a Request<T>);

impl<T: Send + 'static> Drop for Abandon<'_, T> {
    fn drop(&mut self) {
        if self.1.abandon() {
            // It may have been woken to lead: pass that on.
            self.0.wake_first();
        }
    }
}

/// The right to take one reader; handed back when dropped.
struct Permit<'a>(&'a Pool);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        // SeqCst here and in `Starving::drop`: each side writes one counter
        // and then reads the other, and one of them must see the other's
        // write, or an idle reader could be left with no waiter woken.
        self.0.idle.fetch_add(1, Ordering::SeqCst);
        if self.0.starving.load(Ordering::SeqCst) > 0 {
            self.0.released_to_starving.notify_additional(1);
        } else {
            self.0.released.notify_additional(1);
        }
    }
}

/// A waiter's mark as starving, removed when it is dropped (taken a reader,
/// or given up: its future dropped).
struct Starving<'a> {
    pool: &'a Pool,
    marked: bool,
}

impl Drop for Starving<'_> {
    fn drop(&mut self) {
        if self.marked && self.pool.starving.fetch_sub(1, Ordering::SeqCst) == 1 {
            // The last one: whoever queued behind it may take idle readers.
            let idle = self.pool.idle.load(Ordering::SeqCst);
            if idle > 0 {
                self.pool.released.notify_additional(idle);
            }
        }
    }
}

/// A reader, back in the pool when dropped.
pub(crate) struct ReadGuard<'a> {
    // Field order matters: the reader is unlocked before its permit is
    // returned, so that whoever gets the permit finds it free.
    engine: MutexGuard<'a, Engine>,
    _permit: Permit<'a>,
}

impl Deref for ReadGuard<'_> {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        &self.engine
    }
}

impl DerefMut for ReadGuard<'_> {
    fn deref_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }
}

/// The writer and every reader: nothing else runs on the database while it
/// lives (migrations).
pub(crate) struct Exclusive<'a> {
    pub(crate) writer: WriterGuard<'a>,
    readers: Vec<MutexGuard<'a, Engine>>,
    _permits: Vec<Permit<'a>>,
}

impl Exclusive<'_> {
    /// Replaces every connection with a fresh one, after the schema changed.
    pub(crate) fn reconnect(&mut self) -> Result<()> {
        self.writer.reconnect()?;
        for r in &mut self.readers {
            r.reconnect()?;
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Nothing will be committed any more: subscriptions end.
        self.watchers.close_all();
    }
}

impl Pool {
    /// Connects the writer and `readers` readers (at least one) to `db`.
    pub(crate) fn connect(
        db: &Arc<Database>,
        io: Arc<dyn IO>,
        location: &str,
        busy_timeout: Duration,
        readers: usize,
    ) -> Result<Pool> {
        let clock = Arc::new(Clock::new());
        let connect = || {
            Engine::connect(
                db,
                io.clone(),
                clock.clone(),
                location.to_string(),
                busy_timeout,
            )
        };
        let writer = AsyncMutex::new(connect()?);
        let readers = (0..readers.max(1))
            .map(|_| connect().map(AsyncMutex::new))
            .collect::<Result<Box<[_]>>>()?;
        Ok(Pool {
            writer,
            queue: Mutex::new(VecDeque::new()),
            idle: AtomicUsize::new(readers.len()),
            starving: AtomicUsize::new(0),
            released: Event::new(),
            released_to_starving: Event::new(),
            watchers: Arc::default(),
            readers,
        })
    }

    /// How many readers there are.
    pub(crate) fn readers(&self) -> usize {
        self.readers.len()
    }

    /// The writer for the caller alone (migrations, change-file imports,
    /// raw queries), once the group running now is done; queued writes wait
    /// until it is dropped.
    pub(crate) async fn writer(&self) -> WriterGuard<'_> {
        WriterGuard {
            engine: Some(self.writer.lock().await),
            pool: self,
        }
    }

    /// Runs `f` as one write: in the next group to start, with the change
    /// sequence number it takes there; returns once that group's
    /// transaction committed (or `f` failed). See [`crate::group_commit`].
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnMut(&mut Engine, Seq) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let request = Request::new(Box::new(f));
        self.queue_lock().push_back(request.clone());
        let _abandon = Abandon(self, &request);
        loop {
            // Listen before looking, so that a wake in between is not lost.
            let woken = request.listen();
            if let Some(result) = request.result() {
                return result;
            }
            if let Some(engine) = self.writer.try_lock() {
                let mut writer = WriterGuard {
                    engine: Some(engine),
                    pool: self,
                };
                self.run_queued(&mut writer);
                // Dropping the writer wakes the next leader.
                continue;
            }
            // Woken with the result, or when the writer is handed back
            // while this write is first in the queue.
            woken.await;
        }
    }

    /// Wakes the caller of the first write still queued, so that it takes
    /// the writer and leads the next group (after the writer was handed
    /// back, or that caller gave up).
    fn wake_first(&self) {
        let mut queue = self.queue_lock();
        while let Some(first) = queue.front() {
            if first.abandoned() {
                queue.pop_front();
            } else {
                first.wake();
                return;
            }
        }
    }

    /// How many writes wait in the queue (for tests).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queue_lock().len()
    }

    fn queue_lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<dyn Queued>>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leads one group: the queued writes whose callers are still there,
    /// including those queued while it runs, up to [`crate::group_commit::MAX_GROUP`].
    fn run_queued(&self, writer: &mut Engine) {
        run_group(writer, || {
            loop {
                let queued = self.queue_lock().pop_front()?;
                if let Some(member) = queued.take() {
                    return Some(member);
                }
            }
        });
    }

    /// Takes a permit if one is idle.
    fn try_take(&self) -> Option<Permit<'_>> {
        self.idle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .ok()
            .map(|_| Permit(self))
    }

    /// A permit, waiting for the first one handed back when none is idle.
    async fn permit(&self) -> Permit<'_> {
        if self.starving.load(Ordering::SeqCst) == 0
            && let Some(permit) = self.try_take()
        {
            return permit;
        }
        let mut me = Starving {
            pool: self,
            marked: false,
        };
        let mut losses = 0;
        loop {
            // Listen before looking, so that a release in between wakes us.
            let released = if me.marked {
                self.released_to_starving.listen()
            } else {
                self.released.listen()
            };
            if (me.marked || self.starving.load(Ordering::SeqCst) == 0)
                && let Some(permit) = self.try_take()
            {
                return permit;
            }
            released.await;
            losses += 1;
            if losses >= LOSSES && !me.marked {
                me.marked = true;
                self.starving.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// An idle reader, waiting for the first one released when all are busy.
    pub(crate) async fn reader(&self) -> ReadGuard<'_> {
        let permit = self.permit().await;
        loop {
            for r in self.readers.iter() {
                if let Some(engine) = r.try_lock() {
                    return ReadGuard {
                        engine,
                        _permit: permit,
                    };
                }
            }
            // Another holder of a permit is between taking a reader and
            // releasing it; one is free by now or in a moment.
            std::hint::spin_loop();
        }
    }

    /// The writer and every reader, once the calls running now are done.
    pub(crate) async fn exclusive(&self) -> Exclusive<'_> {
        // Writer first, then readers: the order every caller uses (no read
        // waits for the writer while holding a reader).
        let writer = self.writer().await;
        let mut permits = Vec::with_capacity(self.readers.len());
        for _ in 0..self.readers.len() {
            permits.push(self.permit().await);
        }
        let mut readers = Vec::with_capacity(self.readers.len());
        for r in self.readers.iter() {
            readers.push(r.lock().await);
        }
        Exclusive {
            writer,
            readers,
            _permits: permits,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use crate::Store;

    /// Every reader handed back wakes one more waiter: two readers released
    /// at once let two waiters in, even when the first has not run yet
    /// (a notification that only wakes "one waiter if none is awake" would
    /// leave the second asleep next to an idle reader).
    #[test]
    fn two_readers_released_at_once_wake_two_waiters() {
        let store = pollster::block_on(Store::builder().memory().readers(2).open()).unwrap();
        let pool = &store.shared.pool;
        let a = pollster::block_on(pool.reader());
        let b = pollster::block_on(pool.reader());
        let inside = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let _reader = pollster::block_on(pool.reader());
                    inside.fetch_add(1, Ordering::AcqRel);
                    // Hold it until the other waiter is in too.
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while inside.load(Ordering::Acquire) < 2 {
                        assert!(Instant::now() < deadline, "the second waiter was not woken");
                        std::thread::yield_now();
                    }
                });
            }
            // Let both waiters go to sleep, then release both readers.
            std::thread::sleep(Duration::from_millis(50));
            drop(a);
            drop(b);
        });
        assert_eq!(inside.load(Ordering::Acquire), 2);
        assert_eq!(pool.idle.load(Ordering::Acquire), 2);
    }

    /// The exclusive hold takes the writer and every reader, and gives them
    /// back.
    #[test]
    fn exclusive_takes_everything_and_gives_it_back() {
        let store = pollster::block_on(Store::builder().memory().readers(3).open()).unwrap();
        let pool = &store.shared.pool;
        {
            let all = pollster::block_on(pool.exclusive());
            assert_eq!(all.readers.len(), 3);
            assert_eq!(pool.idle.load(Ordering::Acquire), 0);
            assert!(pool.writer.try_lock().is_none());
        }
        assert_eq!(pool.idle.load(Ordering::Acquire), 3);
        assert!(pool.writer.try_lock().is_some());
        let r = pollster::block_on(pool.reader());
        drop(r);
        assert_eq!(pool.starving.load(Ordering::Acquire), 0);
    }
}
