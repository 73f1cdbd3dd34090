//! Login throttling: after too many wrong passwords within a window, for one username or from one
//! address, further attempts are refused with 429 and `Retry-After` before any password is
//! checked, until the oldest failure leaves the window. Guessing then costs hours, not seconds,
//! and the server spends no argon2 time on it. Kept in memory: a restart forgets, which only
//! gives a guesser one more window.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys kept at most per map; beyond it, keys with no failure left in the window are dropped.
const MAX_KEYS: usize = 100_000;

#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub per_user: usize,
    pub per_address: usize,
    pub window: Duration,
}

#[derive(Default)]
struct Failures {
    users: HashMap<String, VecDeque<Instant>>,
    addresses: HashMap<IpAddr, VecDeque<Instant>>,
}

pub struct LoginThrottle {
    policy: Policy,
    failures: Mutex<Failures>,
}

/// Which limit a refused or failed attempt reached.
#[derive(Debug, PartialEq, Eq)]
pub enum Limited {
    User,
    Address,
}

impl LoginThrottle {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            failures: Mutex::default(),
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Before checking a password: how long the caller must wait, if either limit is reached.
    pub fn wait(&self, username: &str, address: Option<IpAddr>) -> Option<(Limited, Duration)> {
        let now = Instant::now();
        let mut failures = self.lock();
        let window = self.policy.window;
        if let Some(wait) = failures
            .users
            .get_mut(&key(username))
            .and_then(|f| wait_for(f, self.policy.per_user, window, now))
        {
            return Some((Limited::User, wait));
        }
        let address = address?;
        failures
            .addresses
            .get_mut(&address)
            .and_then(|f| wait_for(f, self.policy.per_address, window, now))
            .map(|wait| (Limited::Address, wait))
    }

    /// Counts a wrong password; says which limit this failure reached, if one (once per lock,
    /// which is when it is audited).
    pub fn failed(&self, username: &str, address: Option<IpAddr>) -> Option<Limited> {
        let now = Instant::now();
        let window = self.policy.window;
        let mut guard = self.lock();
        let failures = &mut *guard;
        let user = record(&mut failures.users, key(username), window, now);
        let mut reached = (user == self.policy.per_user).then_some(Limited::User);
        if let Some(address) = address {
            let count = record(&mut failures.addresses, address, window, now);
            if count == self.policy.per_address && reached.is_none() {
                reached = Some(Limited::Address);
            }
        }
        reached
    }

    /// A right password clears its username's failures (not its address's: a shared address
    /// may hold a guesser beside the person who just logged in).
    pub fn succeeded(&self, username: &str) {
        self.lock().users.remove(&key(username));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        // Counting failures cannot leave the maps inconsistent, so a poisoned lock is taken over.
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Usernames are compared as stored, but case-folded here so that `Admin` and `admin` share one
/// count whichever of them exists.
fn key(username: &str) -> String {
    username.to_lowercase()
}

fn expire(failures: &mut VecDeque<Instant>, window: Duration, now: Instant) {
    while failures
        .front()
        .is_some_and(|at| now.duration_since(*at) >= window)
    {
        failures.pop_front();
    }
}

fn wait_for(
    failures: &mut VecDeque<Instant>,
    limit: usize,
    window: Duration,
    now: Instant,
) -> Option<Duration> {
    expire(failures, window, now);
    if failures.len() < limit {
        return None;
    }
    // The attempt may be made once the oldest failure that keeps the count at the limit leaves.
    let oldest = failures[failures.len() - limit];
    Some(window.saturating_sub(now.duration_since(oldest)))
}

fn record<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, VecDeque<Instant>>,
    key: K,
    window: Duration,
    now: Instant,
) -> usize {
    if map.len() >= MAX_KEYS {
        map.retain(|_, f| {
            expire(f, window, now);
            !f.is_empty()
        });
    }
    let failures = map.entry(key).or_default();
    expire(failures, window, now);
    failures.push_back(now);
    failures.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(window: Duration) -> LoginThrottle {
        LoginThrottle::new(Policy {
            per_user: 3,
            per_address: 5,
            window,
        })
    }

    #[test]
    fn a_user_is_held_back_after_the_limit_and_once_audited() {
        let t = throttle(Duration::from_secs(60));
        let here: Option<IpAddr> = Some([10, 0, 0, 1].into());
        assert_eq!(t.failed("wang", here), None);
        assert_eq!(t.failed("Wang", here), None);
        assert!(t.wait("wang", here).is_none());
        assert_eq!(t.failed("wang", here), Some(Limited::User));
        let (which, wait) = t.wait("WANG", None).unwrap();
        assert_eq!(which, Limited::User);
        assert!(wait > Duration::from_secs(59) && wait <= Duration::from_secs(60));
        // Another user from the same address is not held back until the address's own limit.
        assert!(t.wait("li", here).is_none());
        assert_eq!(t.failed("li", here), None);
        assert_eq!(t.failed("li", here), Some(Limited::Address));
        assert_eq!(t.wait("zhao", here).unwrap().0, Limited::Address);
        assert!(t.wait("zhao", Some([10, 0, 0, 2].into())).is_none());
    }

    #[test]
    fn failures_leave_the_window_and_success_clears_the_user() {
        let t = throttle(Duration::from_millis(50));
        for _ in 0..3 {
            t.failed("wang", None);
        }
        assert!(t.wait("wang", None).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(t.wait("wang", None).is_none());
        for _ in 0..2 {
            t.failed("wang", None);
        }
        t.succeeded("wang");
        assert_eq!(t.failed("wang", None), None);
    }
}
