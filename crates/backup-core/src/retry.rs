//! Retrying an operation with exponential backoff: [`retry`] until one
//! attempt succeeds (the storage retry layer, the daemon's job runs,
//! notification delivery, storing a capture piece), and the waits for
//! what should run until stopped and is started again when it fails
//! ([`Restarts`]: the capture followers' reconnections, the daemon's
//! capture loops).
//!
//! Whether an error is worth another attempt is the caller's
//! classification; for [`crate::Error`] it is always
//! [`crate::Error::is_retryable`].

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How often and how long to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts, the first included; 1 disables retries.
    pub max_attempts: u32,
    /// Delay before the first retry; doubles with each further retry.
    pub initial_backoff: Duration,
    /// Upper bound of one delay.
    pub max_backoff: Duration,
    /// No retry starts when it would begin later than this after the first
    /// attempt.
    pub max_elapsed: Duration,
    /// Whether delays are randomised ("equal jitter": between half and all
    /// of the computed delay), so that clients failing together do not
    /// retry in lockstep.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    /// 5 attempts, 200 ms doubling up to 5 s, no retry after 30 s (the
    /// storage retry layer's defaults).
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(30),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// A policy with `max_attempts` attempts and the default delays.
    pub fn with_max_attempts(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            ..RetryPolicy::default()
        }
    }

    /// Sets the delays: the first one, the largest one, and the time after
    /// which no retry starts.
    #[must_use]
    pub fn with_backoff(mut self, initial: Duration, max: Duration, max_elapsed: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self.max_elapsed = max_elapsed;
        self
    }

    /// Turns jitter on or off.
    #[must_use]
    pub fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// The delay before retry number `retry` (1 for the first retry):
    /// `initial_backoff × 2^(retry-1)`, capped at `max_backoff`, with
    /// jitter when enabled.
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        let base = self
            .initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        if !self.jitter {
            return base;
        }
        let mut random = [0u8; 4];
        crate::util::fill_random(&mut random);
        let fraction = f64::from(u32::from_le_bytes(random)) / f64::from(u32::MAX);
        base / 2 + base.mul_f64(fraction / 2.0)
    }
}

/// Why [`retry`] stopped without a success.
#[derive(Debug)]
pub struct GaveUp<E> {
    /// The last error.
    pub error: E,
    /// Attempts made.
    pub attempts: u32,
    /// Time since the first attempt started.
    pub elapsed: Duration,
    /// Whether the error was retryable (the attempts or the time ran out,
    /// or the wait was cancelled) rather than permanent.
    pub exhausted: bool,
}

/// Runs `attempt` (given the attempt number, from 1) until it succeeds,
/// fails with an error `retryable` rejects, or `policy` gives up. Before
/// each wait, `on_retry(attempt, &error, delay)` is called (for logging).
/// A cancelled `cancel` token ends a wait at once and gives up with the
/// last error. On success, returns the value and the attempts it took.
///
/// # Errors
///
/// [`GaveUp`] with the last error.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    cancel: Option<&CancellationToken>,
    mut attempt: F,
    retryable: impl Fn(&E) -> bool,
    mut on_retry: impl FnMut(u32, &E, Duration),
) -> Result<(T, u32), GaveUp<E>>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    let mut number = 1;
    loop {
        let error = match attempt(number).await {
            Ok(value) => return Ok((value, number)),
            Err(e) => e,
        };
        let give_up = |error, exhausted| GaveUp {
            error,
            attempts: number,
            elapsed: start.elapsed(),
            exhausted,
        };
        if !retryable(&error) {
            return Err(give_up(error, false));
        }
        let delay = policy.delay(number);
        if number >= policy.max_attempts || start.elapsed() + delay > policy.max_elapsed {
            return Err(give_up(error, true));
        }
        if cancel.is_some_and(CancellationToken::is_cancelled) {
            return Err(give_up(error, true));
        }
        on_retry(number, &error, delay);
        match cancel {
            Some(token) => {
                tokio::select! {
                    () = token.cancelled() => return Err(give_up(error, true)),
                    () = tokio::time::sleep(delay) => {}
                }
            }
            None => tokio::time::sleep(delay).await,
        }
        number += 1;
    }
}

/// A failed run, as [`Restarts::failed`] counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    /// Failures in a row, this one included: 1 is a new outage (the run
    /// before had worked for the `healthy_after` of [`Restarts::new`], or
    /// this is the first).
    pub failures: u32,
    /// The wait before the next start.
    pub delay: Duration,
}

/// The restarts of something that should run until stopped and is
/// started again when it fails (a capture follower's connection, the
/// daemon's capture loops): each loop is
///
/// ```text
/// loop {
///     restarts.started();
///     run ...; on success or cancellation, break
///     let r = restarts.failed();      // report r.delay, notify on r.failures == 1
///     if !Restarts::wait(r.delay, &cancel).await { break }
/// }
/// ```
///
/// Waits follow `policy`'s [`RetryPolicy::delay`] for the count of
/// failures in a row; the count starts over when a failed run had lasted
/// `healthy_after` or longer (it was working: this is a new outage).
/// `policy.max_attempts` and `policy.max_elapsed` do not apply: the
/// caller decides when to give up.
#[derive(Debug, Clone)]
pub struct Restarts {
    policy: RetryPolicy,
    healthy_after: Duration,
    failures: u32,
    started: Instant,
}

impl Restarts {
    /// Restarts with `policy`'s delays, a run of `healthy_after` counting
    /// as working.
    pub fn new(policy: RetryPolicy, healthy_after: Duration) -> Self {
        Restarts {
            policy,
            healthy_after,
            failures: 0,
            started: Instant::now(),
        }
    }

    /// Restarts waiting `first`, doubling up to `max` (no jitter), a run
    /// of `max` counting as working: the reconnections of a capture.
    pub fn doubling(first: Duration, max: Duration) -> Self {
        let policy = RetryPolicy::default()
            .with_backoff(first, max, Duration::ZERO)
            .with_jitter(false);
        Restarts::new(policy, max)
    }

    /// A run starts.
    pub fn started(&mut self) {
        self.started = Instant::now();
    }

    /// The run that started last failed: the count of failures in a row
    /// and the wait before the next start.
    pub fn failed(&mut self) -> Restart {
        if self.started.elapsed() >= self.healthy_after {
            self.failures = 0;
        }
        self.failures += 1;
        Restart {
            failures: self.failures,
            delay: self.policy.delay(self.failures),
        }
    }

    /// Waits `delay`; `false` when `cancel` fired first (stop, do not
    /// start again).
    pub async fn wait(delay: Duration, cancel: &CancellationToken) -> bool {
        tokio::select! {
            () = cancel.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::Error;

    fn quick(attempts: u32) -> RetryPolicy {
        RetryPolicy::with_max_attempts(attempts).with_backoff(
            Duration::from_millis(1),
            Duration::from_millis(4),
            Duration::from_secs(10),
        )
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let p = RetryPolicy::with_max_attempts(10)
            .with_backoff(
                Duration::from_millis(100),
                Duration::from_millis(500),
                Duration::from_secs(60),
            )
            .with_jitter(false);
        let d: Vec<u128> = (1..=5).map(|r| p.delay(r).as_millis()).collect();
        assert_eq!(d, [100, 200, 400, 500, 500]);
        let jittered = p.with_jitter(true).delay(2);
        assert!(jittered >= Duration::from_millis(100) && jittered <= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn retries_retryable_errors_until_success() {
        let calls = AtomicU32::new(0);
        let mut logged = Vec::new();
        let r = retry(
            &quick(5),
            None,
            |n| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 3 {
                        Err(Error::Transient {
                            backend: "t",
                            message: format!("try {n}"),
                        })
                    } else {
                        Ok(n * 10)
                    }
                }
            },
            Error::is_retryable,
            |n, _, _| logged.push(n),
        )
        .await
        .unwrap();
        assert_eq!(r, (30, 3));
        assert_eq!(logged, [1, 2]);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_errors_and_exhaustion_stop() {
        let permanent = retry(
            &quick(5),
            None,
            |_| async { Err::<(), _>(Error::WrongPassword) },
            Error::is_retryable,
            |_, _, _| {},
        )
        .await
        .unwrap_err();
        assert_eq!(permanent.attempts, 1);
        assert!(!permanent.exhausted);
        let exhausted = retry(
            &quick(3),
            None,
            |_| async { Err::<(), _>(Error::Locked("prune".into())) },
            Error::is_retryable,
            |_, _, _| {},
        )
        .await
        .unwrap_err();
        assert_eq!(exhausted.attempts, 3);
        assert!(exhausted.exhausted);
    }

    #[tokio::test]
    async fn cancellation_ends_the_wait() {
        let token = CancellationToken::new();
        let slow = RetryPolicy::with_max_attempts(5).with_backoff(
            Duration::from_secs(3600),
            Duration::from_secs(3600),
            Duration::from_secs(7200),
        );
        let t = token.clone();
        let r = retry(
            &slow,
            Some(&token),
            |_| async { Err::<(), _>(Error::Locked("x".into())) },
            Error::is_retryable,
            move |_, _, _| t.cancel(),
        )
        .await
        .unwrap_err();
        assert_eq!(r.attempts, 1);
        assert!(r.exhausted);
    }

    #[test]
    fn restarts_double_and_start_over_after_a_healthy_run() {
        let policy = RetryPolicy::default()
            .with_backoff(
                Duration::from_millis(100),
                Duration::from_millis(400),
                Duration::ZERO,
            )
            .with_jitter(false);
        let mut r = Restarts::new(policy.clone(), Duration::from_secs(3600));
        let seen: Vec<(u32, u128)> = (0..4)
            .map(|_| {
                r.started();
                let f = r.failed();
                (f.failures, f.delay.as_millis())
            })
            .collect();
        assert_eq!(seen, [(1, 100), (2, 200), (3, 400), (4, 400)]);
        let mut healthy = Restarts::new(policy, Duration::ZERO);
        for _ in 0..3 {
            healthy.started();
            assert_eq!(
                healthy.failed(),
                Restart {
                    failures: 1,
                    delay: Duration::from_millis(100)
                }
            );
        }
    }

    #[tokio::test]
    async fn cancellation_ends_a_restart_wait() {
        let token = CancellationToken::new();
        token.cancel();
        assert!(!Restarts::wait(Duration::from_secs(3600), &token).await);
        assert!(Restarts::wait(Duration::ZERO, &CancellationToken::new()).await);
    }
}
