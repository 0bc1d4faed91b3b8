//! A store's connections: one that writes, and a few readers handed out
//! without a lock that all calls share.
//!
//! Writes (and migrations) take the writer, one at a time. Reads take any
//! idle reader: a semaphore counts the idle ones (an atomic counter, no lock;
//! a caller waits on it only when every reader is busy, and then for whichever
//! is released first), and each reader sits behind its own mutex, taken with
//! `try_lock`. Holding a permit means at most `n - 1` readers are held by
//! others, so the scan finds a free one. Readers are scanned from the first,
//! so that a single caller keeps using the same warm connection.
//!
//! Readers never write, so turso runs them side by side under WAL, next to
//! the writer; each read statement, or each [`crate::engine::Engine::read`]
//! transaction, sees the last committed state when it starts.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use async_lock::{Mutex as AsyncMutex, MutexGuard, Semaphore, SemaphoreGuard};
use turso_core::{Database, IO};

use crate::engine::{Clock, Engine};
use crate::error::Result;

/// The writer and the readers of one database.
pub(crate) struct Pool {
    writer: AsyncMutex<Engine>,
    readers: Box<[AsyncMutex<Engine>]>,
    /// One permit per reader not in use.
    idle: Semaphore,
}

/// A reader, back in the pool when dropped.
pub(crate) struct ReadGuard<'a> {
    // Field order matters: the reader is unlocked before its permit is
    // returned, so that whoever gets the permit finds it free.
    engine: MutexGuard<'a, Engine>,
    _permit: SemaphoreGuard<'a>,
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
    pub(crate) writer: MutexGuard<'a, Engine>,
    readers: Vec<MutexGuard<'a, Engine>>,
    _permits: Vec<SemaphoreGuard<'a>>,
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
            idle: Semaphore::new(readers.len()),
            readers,
        })
    }

    /// How many readers there are.
    pub(crate) fn readers(&self) -> usize {
        self.readers.len()
    }

    /// The writer (write transactions, migrations), once the writes queued
    /// before are done.
    pub(crate) async fn writer(&self) -> MutexGuard<'_, Engine> {
        self.writer.lock().await
    }

    /// An idle reader, waiting for the first one released when all are busy.
    pub(crate) async fn reader(&self) -> ReadGuard<'_> {
        let permit = self.idle.acquire().await;
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
        let writer = self.writer.lock().await;
        let mut permits = Vec::with_capacity(self.readers.len());
        for _ in 0..self.readers.len() {
            permits.push(self.idle.acquire().await);
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
