//! Login throttling: after a few failed Logins for a name or from an
//! address, an exponential back-off during which attempts are refused unchecked
//! (docs/operations.md, "Brute force", has the rules).

use std::{
    hash::{BuildHasher as _, RandomState},
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use time::OffsetDateTime;

use crate::{
    domain::Username,
    store::{FailedLogins, Storage as _, Store, StoreError},
};

/// Which failures count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleMode {
    /// Per username and per client address.
    On,
    /// Per username only: for deployments where every Login arrives from a
    /// few gateways, whose addresses say nothing about the attacker.
    Username,
    /// No throttling.
    Off,
}

impl ThrottleMode {
    /// The flag's spelling of this mode, which [`FromStr`] reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Username => "username",
            Self::Off => "off",
        }
    }
}

impl FromStr for ThrottleMode {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        [Self::On, Self::Username, Self::Off]
            .into_iter()
            .find(|mode| mode.as_str() == raw)
            .ok_or_else(|| "must be on, username or off".to_owned())
    }
}

impl std::fmt::Display for ThrottleMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How failed Logins are throttled.
#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    /// Which failures count.
    pub mode: ThrottleMode,
    /// Failures allowed before the first back-off.
    pub free_failures: u32,
    /// The first back-off; each further failure doubles it.
    pub first_backoff: Duration,
    /// The longest back-off.
    pub max_backoff: Duration,
    /// Addresses remembered at most; the least used are forgotten first.
    pub max_addresses: usize,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            mode: ThrottleMode::Username,
            free_failures: 5,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(15 * 60),
            max_addresses: 100_000,
        }
    }
}

impl ThrottleSettings {
    /// How long a key's failures are remembered after its last one: an
    /// hour, or twice the longest back-off when that is longer.
    pub fn memory(&self) -> Duration {
        Duration::from_secs(3600).max(self.max_backoff.saturating_mul(2))
    }

    /// The back-off after `failures` failures in a row: none up to the
    /// free ones, then the first, doubled by each further failure.
    fn backoff(&self, failures: u32) -> Option<Duration> {
        let beyond = failures.checked_sub(self.free_failures)?;
        let doubled = self
            .first_backoff
            .checked_mul(1u32.checked_shl(beyond).unwrap_or(u32::MAX))
            .unwrap_or(Duration::MAX);
        Some(doubled.min(self.max_backoff))
    }

    /// The wait left when a back-off runs for `record` at `now`.
    fn backing_off(&self, record: Option<&FailedLogins>, now: OffsetDateTime) -> Option<Duration> {
        let until = record?.blocked_until.filter(|&until| until > now)?;
        Some(Duration::try_from(until - now).unwrap_or_default())
    }

    /// `record` with one more failure at `now` (failures older than
    /// [`Self::memory`] forgotten first), and the back-off it earns.
    fn failed(&self, record: Option<FailedLogins>, now: OffsetDateTime) -> FailedLogins {
        let remembered = record.filter(|r| {
            r.last_failed_at + self.memory() > now || self.backing_off(Some(r), now).is_some()
        });
        let failures = remembered.map_or(0, |r| r.failures).saturating_add(1);
        // Whole seconds, as every backend keeps them.
        let second = now.replace_nanosecond(0).unwrap_or(now);
        FailedLogins {
            failures,
            last_failed_at: second,
            blocked_until: self.blocked_until(failures, second),
        }
    }

    /// The end of the back-off after `failures` failures, the last at the
    /// whole second `last`: rounded up to the next whole second, never
    /// down.
    fn blocked_until(&self, failures: u32, last: OffsetDateTime) -> Option<OffsetDateTime> {
        self.backoff(failures)
            .map(|backoff| last + backoff + Duration::from_secs(1))
    }
}

/// How an admitted attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The password was right: the username's failures are cleared (the
    /// address's stay: one good password must not wipe the failures of a
    /// sprayer who owns one account).
    Succeeded,
    /// A wrong password, an unknown or disabled user: one more failure.
    Failed,
    /// No password was checked (overload, a database failure): nothing is
    /// counted.
    NotTried,
}

/// Stripes of name slots: names share a stripe when their hashes meet,
/// which only makes them wait for each other a little.
const NAME_STRIPES: usize = 1024;

/// The longest an attempt waits for its name's turn before it is refused
/// as overload: half a second, so that with the wait for a hashing thread
/// after it (at most a second, mostly far less) a Login is answered or
/// refused in about a second.
const MAX_TURN_WAIT: Duration = Duration::from_millis(500);

/// The failed-Login counts and back-offs. A Login goes through it in
/// three steps: [`LoginThrottle::begin`] (the name's turn, from memory),
/// [`Turn::admit`] (the name's failures, from the store) and
/// [`Attempt::settle`] (what the password check found).
#[derive(Debug)]
pub struct LoginThrottle {
    settings: ThrottleSettings,
    store: Store,
    addresses: Mutex<quick_cache::unsync::Cache<IpAddr, FailedLogins>>,
    /// Per stripe of names, one permit per free failure: a check takes one
    /// while its name has no failure on record, all of them otherwise.
    names: Box<[Arc<Semaphore>]>,
    hasher: RandomState,
}

/// A Login attempt that has its name's turn, from [`LoginThrottle::begin`]:
/// nothing has been read from the store yet.
#[derive(Debug)]
#[must_use = "a turn is admitted or given up"]
pub struct Turn<'a> {
    throttle: &'a LoginThrottle,
    /// `None` when throttling is off.
    name: Option<NameTurn>,
    address: Option<IpAddr>,
    waiting_since: tokio::time::Instant,
}

/// The canonical name, its stripe of slots and the slot taken.
#[derive(Debug)]
struct NameTurn {
    key: String,
    slots: Arc<Semaphore>,
    permit: OwnedSemaphorePermit,
}

/// An attempt admitted by [`Turn::admit`], to be settled. It holds its
/// name's turn (one of five, or all of them) until it is settled.
#[derive(Debug)]
#[must_use = "an attempt is settled once its outcome is known"]
pub struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    /// The canonical name, and whether it has failures to clear.
    username: Option<(String, bool)>,
    address: Option<IpAddr>,
    _turn: Option<OwnedSemaphorePermit>,
}

/// Why an attempt was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A back-off runs for this long yet.
    #[error("backing off after failed logins")]
    BackingOff(Duration),
    /// The name's turn did not come within half a second: too many
    /// attempts on it at once.
    #[error("too many attempts on one name at once")]
    Busy,
    /// The name's failures could not be read; the attempt is not made.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LoginThrottle {
    /// Throttling with `settings`, keeping username counts in `store`.
    pub fn new(settings: ThrottleSettings, store: Store) -> Self {
        let addresses = quick_cache::unsync::Cache::new(settings.max_addresses.max(1));
        Self {
            settings: settings.clone(),
            store,
            addresses: Mutex::new(addresses),
            names: (0..NAME_STRIPES)
                .map(|_| Arc::new(Semaphore::new(settings.free_failures.max(1) as usize)))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    /// Begins a Login attempt for `username` from `client`: waits for the
    /// name's turn, or refuses it while the address is backing off.
    ///
    /// # Errors
    /// [`Refusal::BackingOff`] during the address's back-off;
    /// [`Refusal::Busy`] when the turn does not come in time.
    pub async fn begin(
        &self,
        username: &Username,
        client: Option<IpAddr>,
    ) -> Result<Turn<'_>, Refusal> {
        let waiting_since = tokio::time::Instant::now();
        let mut turn = Turn {
            throttle: self,
            name: None,
            address: None,
            waiting_since,
        };
        if self.settings.mode == ThrottleMode::Off {
            return Ok(turn);
        }
        turn.address = client
            .filter(|_| self.settings.mode == ThrottleMode::On)
            .map(address_key);
        if let Some(address) = turn.address {
            let record = self.lock_addresses().get(&address).copied();
            if let Some(wait) = self
                .settings
                .backing_off(record.as_ref(), OffsetDateTime::now_utc())
            {
                tracing::info!(client = %address, "login refused: the address is backing off");
                return Err(Refusal::BackingOff(wait));
            }
        }

        let key = username.key();
        let slots = self.names[self.hasher.hash_one(&key) as usize % NAME_STRIPES].clone();
        let permit = take_turn(&slots, 1, waiting_since)
            .await
            .ok_or(Refusal::Busy)?;
        turn.name = Some(NameTurn { key, slots, permit });
        Ok(turn)
    }

    /// Counts one more failure from `address` (an address key).
    fn count_address_failure(&self, address: IpAddr, now: OffsetDateTime) {
        let mut table = self.lock_addresses();
        let record = self.settings.failed(table.get(&address).copied(), now);
        table.insert(address, record);
    }

    /// How many addresses are remembered now.
    #[cfg(test)]
    fn addresses_held(&self) -> usize {
        self.lock_addresses().len()
    }

    fn lock_addresses(
        &self,
    ) -> std::sync::MutexGuard<'_, quick_cache::unsync::Cache<IpAddr, FailedLogins>> {
        self.addresses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<'a> Turn<'a> {
    /// Admits the attempt, or refuses it while its name is backing off.
    ///
    /// # Errors
    /// [`Refusal::BackingOff`] during the name's back-off; [`Refusal::Busy`]
    /// when its turn alone does not come in time; [`Refusal::Store`] when
    /// its failures cannot be read.
    pub async fn admit(self) -> Result<Attempt<'a>, Refusal> {
        let Turn {
            throttle,
            name,
            address,
            waiting_since,
        } = self;
        let mut attempt = Attempt {
            throttle,
            username: None,
            address: None,
            _turn: None,
        };
        let Some(NameTurn {
            key,
            slots,
            permit: mut turn,
        }) = name
        else {
            return Ok(attempt);
        };
        let mut record = throttle.store.failed_logins(&key).await?;
        if record.is_some() {
            // Failures on record: one check at a time, each seeing the
            // failures before it. Let go first (two waiting for more while
            // holding one could wait for each other), then read afresh.
            drop(turn);
            let all = throttle.settings.free_failures.max(1);
            turn = take_turn(&slots, all, waiting_since)
                .await
                .ok_or(Refusal::Busy)?;
            record = throttle.store.failed_logins(&key).await?;
        }
        if let Some(wait) = throttle
            .settings
            .backing_off(record.as_ref(), OffsetDateTime::now_utc())
        {
            tracing::info!("login refused: the name is backing off");
            return Err(Refusal::BackingOff(wait));
        }
        attempt.username = Some((key, record.is_some()));
        attempt.address = address;
        attempt._turn = Some(turn);
        Ok(attempt)
    }
}

impl Attempt<'_> {
    /// Records how the attempt ended, then lets the next attempt on its
    /// name go. A failure to record it is logged.
    pub async fn settle(self, outcome: Settlement) {
        let Some((key, had_failures)) = &self.username else {
            return;
        };
        let throttle = self.throttle;
        let now = OffsetDateTime::now_utc();
        let recorded = match outcome {
            Settlement::NotTried => Ok(()),
            Settlement::Succeeded if !had_failures => Ok(()),
            Settlement::Succeeded => throttle.store.update_failed_logins(key, |_| None).await,
            Settlement::Failed => {
                if let Some(address) = self.address {
                    throttle.count_address_failure(address, now);
                }
                throttle
                    .store
                    .update_failed_logins(key, |record| Some(throttle.settings.failed(record, now)))
                    .await
            }
        };
        if let Err(err) = recorded {
            tracing::warn!(error = %err, "could not record the end of a login attempt");
        }
    }
}

/// `permits` of `slots`, waiting at most what is left of [`MAX_TURN_WAIT`]
/// since `since`. The semaphore serves waiters in order, so a check waiting
/// for all of them is not starved by checks that take one.
async fn take_turn(
    slots: &Arc<Semaphore>,
    permits: u32,
    since: tokio::time::Instant,
) -> Option<OwnedSemaphorePermit> {
    tokio::time::timeout_at(
        since + MAX_TURN_WAIT,
        slots.clone().acquire_many_owned(permits),
    )
    .await
    .ok()?
    .ok()
}

/// The key an address is counted under: an IPv4 address (IPv4-mapped IPv6
/// included) as it is, an IPv6 address by its /64, the smallest block one
/// subscriber is usually given.
fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !u128::from(u64::MAX);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn backoffs_start_after_the_free_failures_and_double_up_to_the_cap() {
        let settings = ThrottleSettings::default();
        let backoffs: Vec<_> = (1..=16).map(|n| settings.backoff(n)).collect();
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(backoffs[..4], [None, None, None, None]);
        assert_eq!(
            backoffs[4..11],
            [
                secs(1),
                secs(2),
                secs(4),
                secs(8),
                secs(16),
                secs(32),
                secs(64)
            ]
        );
        assert_eq!(backoffs[15], secs(900), "capped at 15 minutes");
        assert_eq!(settings.backoff(u32::MAX), secs(900), "no overflow");
    }

    #[test]
    fn the_fifth_failure_starts_a_backoff_and_each_further_one_doubles_it() {
        let settings = ThrottleSettings::default();
        let mut record = None;
        for n in 0..5 {
            assert_eq!(settings.backing_off(record.as_ref(), at(n)), None);
            record = Some(settings.failed(record, at(n)));
        }
        let fifth = record.unwrap();
        assert_eq!(fifth.failures, 5);
        // The fifth failure at second 4 blocks until second 4 + 1 + 1.
        assert_eq!(fifth.blocked_until, Some(at(6)));
        assert_eq!(
            settings.backing_off(record.as_ref(), at(5)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(settings.backing_off(record.as_ref(), at(6)), None);
        let sixth = settings.failed(record, at(6));
        assert_eq!(sixth.failures, 6);
        assert_eq!(sixth.blocked_until, Some(at(6 + 2 + 1)));
    }

    #[test]
    fn old_failures_are_forgotten() {
        let settings = ThrottleSettings::default();
        let old = FailedLogins {
            failures: 4,
            last_failed_at: at(0),
            blocked_until: None,
        };
        let hour = i64::try_from(settings.memory().as_secs()).unwrap();
        assert_eq!(settings.failed(Some(old), at(hour - 1)).failures, 5);
        assert_eq!(settings.failed(Some(old), at(hour + 1)).failures, 1);
    }

    #[test]
    fn addresses_are_counted_by_ipv4_address_and_ipv6_slash_64() {
        let key = |raw: &str| address_key(raw.parse().unwrap()).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:bbbb::9"), "2001:db8:1:2::");
    }

    #[tokio::test]
    async fn a_million_addresses_take_bounded_memory() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("authd.db").display());
        let store = Store::connect(&crate::store::DatabaseSettings::new(url.parse().unwrap()))
            .await
            .unwrap();
        let settings = ThrottleSettings {
            max_addresses: 10_000,
            ..ThrottleSettings::default()
        };
        let throttle = LoginThrottle::new(settings, store);
        let now = OffsetDateTime::now_utc();
        for n in 0..1_000_000u32 {
            throttle.count_address_failure(address_key(IpAddr::from(n.to_be_bytes())), now);
        }
        assert!(
            throttle.addresses_held() <= 10_000,
            "{}",
            throttle.addresses_held()
        );
    }
}
