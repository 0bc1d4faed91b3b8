//! Trying again what failed for a reason that has nothing to do with the
//! call itself, a bounded number of times, with exponential backoff.

use std::time::Duration;

/// How often and how patiently to try again.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// The pause after the first failure; doubled after each further one.
    pub first: Duration,
    /// The longest pause.
    pub max: Duration,
}

impl Default for Backoff {
    /// 4 attempts, pauses of 50, 100 and 200 ms: enough to ride out a
    /// terminated backend or a server restart's first moments.
    fn default() -> Self {
        Backoff {
            attempts: 4,
            first: Duration::from_millis(50),
            max: Duration::from_secs(10),
        }
    }
}

/// Runs `attempt` until it succeeds, fails with an error that `may_retry`
/// rejects, or the attempts are used up; returns its last result and the
/// number of attempts made.
pub async fn retry<T, E, Fut>(
    backoff: Backoff,
    may_retry: impl Fn(&E) -> bool,
    mut attempt: impl FnMut() -> Fut,
) -> (Result<T, E>, u32)
where
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut n = 0;
    let mut pause = backoff.first;
    loop {
        n += 1;
        match attempt().await {
            Err(e) if n < backoff.attempts.max(1) && may_retry(&e) => {
                tokio::time::sleep(pause).await;
                pause = pause.saturating_mul(2).min(backoff.max);
            }
            result => return (result, n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retries_only_what_it_may_and_only_so_often() {
        let backoff = Backoff {
            first: Duration::from_millis(1),
            ..Backoff::default()
        };
        let calls = std::cell::Cell::new(0);
        let (r, n) = retry(
            backoff,
            |e: &&str| *e == "again",
            || {
                calls.set(calls.get() + 1);
                let c = calls.get();
                async move { if c < 3 { Err("again") } else { Ok(c) } }
            },
        )
        .await;
        assert_eq!((r, n), (Ok(3), 3));
        let (r, n) = retry(
            backoff,
            |e: &&str| *e == "again",
            || async { Err::<(), _>("again") },
        )
        .await;
        assert_eq!((r, n), (Err("again"), 4));
        let (r, n) = retry(
            backoff,
            |e: &&str| *e == "again",
            || async { Err::<(), _>("no") },
        )
        .await;
        assert_eq!((r, n), (Err("no"), 1));
    }
}
