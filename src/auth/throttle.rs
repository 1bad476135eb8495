//! Login throttling: after a few failed Logins, an exponential back-off
//! during which further attempts are refused without checking the password
//! (the right one included).
//!
//! Failures are counted per canonical username, unknown names included, in
//! the store, so every instance on one database shares the count; and per
//! client address, in this process's memory, in a bounded table. Each
//! attempt is counted *before* its password is checked, so concurrent
//! guesses cannot slip past the limit; a success then clears the username's
//! count and takes the attempt back from the address's.

use std::{
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
    sync::Mutex,
    time::Duration,
};

use time::OffsetDateTime;

use crate::{
    domain::Username,
    store::{FailedLogins, Store, StoreError},
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

impl FromStr for ThrottleMode {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "on" => Ok(Self::On),
            "username" => Ok(Self::Username),
            "off" => Ok(Self::Off),
            _ => Err("must be on, username or off".to_owned()),
        }
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
            mode: ThrottleMode::On,
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

    /// Admits an attempt on a key whose record is `record` at `now`,
    /// counting it as a failure until it is settled; or refuses it while a
    /// back-off runs.
    fn admit(&self, record: Option<FailedLogins>, now: OffsetDateTime) -> Admission {
        let record = record.filter(|r| {
            let remembered_until = r.last_failed_at + self.memory();
            remembered_until > now || r.blocked_until.is_some_and(|until| until > now)
        });
        if let Some(until) = record.and_then(|r| r.blocked_until)
            && until > now
        {
            let wait = Duration::try_from(until - now).unwrap_or_default();
            return Admission::Refused(wait);
        }
        let failures = record.map_or(0, |r| r.failures).saturating_add(1);
        // Whole seconds, as every backend keeps them.
        let second = now.replace_nanosecond(0).unwrap_or(now);
        Admission::Counted(FailedLogins {
            failures,
            last_failed_at: second,
            blocked_until: self.blocked_until(failures, second),
        })
    }

    /// [`Self::admit`] as an update of the stored record: the counted record
    /// replaces it; a refusal leaves it as it was.
    fn count(
        &self,
        record: Option<FailedLogins>,
        now: OffsetDateTime,
    ) -> (Option<FailedLogins>, Admission) {
        match self.admit(record, now) {
            admitted @ Admission::Counted(counted) => (Some(counted), admitted),
            refused @ Admission::Refused(_) => (record, refused),
        }
    }

    /// The end of the back-off after `failures` failures, the last at the
    /// whole second `last`: rounded up to the next whole second, never
    /// down.
    fn blocked_until(&self, failures: u32, last: OffsetDateTime) -> Option<OffsetDateTime> {
        self.backoff(failures)
            .map(|backoff| last + backoff + Duration::from_secs(1))
    }

    /// Takes back one attempt that turned out not to be a failed guess:
    /// the record and its back-off are as if it had not been made, but for
    /// its time.
    fn take_back(&self, record: Option<FailedLogins>) -> Option<FailedLogins> {
        let mut record = record?;
        record.failures = record.failures.checked_sub(1).filter(|&n| n > 0)?;
        record.blocked_until = self.blocked_until(record.failures, record.last_failed_at);
        Some(record)
    }
}

/// What [`ThrottleSettings::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// Go ahead; the record counting this attempt is to be stored.
    Counted(FailedLogins),
    /// Refused: a back-off runs for this long yet.
    Refused(Duration),
}

/// How an admitted attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The password was right: the username's failures are cleared.
    Succeeded,
    /// A wrong password, an unknown or disabled user: the attempt stays
    /// counted.
    Failed,
    /// No password was checked (overload, a database failure): the attempt
    /// is taken back.
    NotTried,
}

/// An attempt was refused: a back-off runs for this long yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackingOff(pub Duration);

/// The failed-Login counts and back-offs.
#[derive(Debug)]
pub struct LoginThrottle {
    settings: ThrottleSettings,
    store: Store,
    addresses: Mutex<quick_cache::unsync::Cache<IpAddr, FailedLogins>>,
}

/// An attempt admitted by [`LoginThrottle::admit`], to be settled.
#[derive(Debug)]
#[must_use = "an attempt is settled once its outcome is known"]
pub struct Attempt {
    username: Option<String>,
    address: Option<IpAddr>,
}

impl LoginThrottle {
    /// Throttling with `settings`, keeping username counts in `store`.
    pub fn new(settings: ThrottleSettings, store: Store) -> Self {
        let addresses = quick_cache::unsync::Cache::new(settings.max_addresses.max(1));
        Self {
            settings,
            store,
            addresses: Mutex::new(addresses),
        }
    }

    /// Counts a Login attempt for `username` from `client`, or refuses it
    /// while either is backing off.
    ///
    /// # Errors
    /// `Ok(Err(BackingOff))` when refused; [`StoreError`] when the username's
    /// count cannot be read or written (the attempt is then not made).
    pub async fn admit(
        &self,
        username: &Username,
        client: Option<IpAddr>,
    ) -> Result<Result<Attempt, BackingOff>, StoreError> {
        let mut attempt = Attempt {
            username: None,
            address: None,
        };
        if self.settings.mode == ThrottleMode::Off {
            return Ok(Ok(attempt));
        }
        let now = OffsetDateTime::now_utc();
        if let Some(address) = client.filter(|_| self.settings.mode == ThrottleMode::On) {
            let address = address_key(address);
            match self.update_address(address, |record| self.settings.count(record, now)) {
                Admission::Refused(wait) => return Ok(Err(BackingOff(wait))),
                Admission::Counted(_) => attempt.address = Some(address),
            }
        }
        let key = username.key();
        let admission = self
            .store
            .update_failed_logins(&key, &mut |record| self.settings.count(record, now))
            .await;
        match admission {
            Ok(Admission::Counted(_)) => {
                attempt.username = Some(key);
                Ok(Ok(attempt))
            }
            Ok(Admission::Refused(wait)) => {
                self.settle(attempt, Settlement::NotTried).await;
                Ok(Err(BackingOff(wait)))
            }
            Err(err) => {
                self.settle(attempt, Settlement::NotTried).await;
                Err(err)
            }
        }
    }

    /// Records how an admitted attempt ended. A failure to record it is
    /// logged: the attempt then stays counted, which errs on the safe side.
    pub async fn settle(&self, attempt: Attempt, outcome: Settlement) {
        if outcome == Settlement::Failed {
            return;
        }
        if let Some(address) = attempt.address {
            self.update_address(address, |record| (self.settings.take_back(record), ()));
        }
        let Some(key) = attempt.username else {
            return;
        };
        let settled = self
            .store
            .update_failed_logins(&key, &mut |record| match outcome {
                Settlement::Succeeded => (None, ()),
                _ => (self.settings.take_back(record), ()),
            })
            .await;
        if let Err(err) = settled {
            tracing::warn!(error = %err, "could not record the end of a login attempt");
        }
    }

    /// How many addresses are remembered now.
    pub fn addresses_held(&self) -> usize {
        self.addresses.lock().map_or(0, |table| table.len())
    }

    /// Reads the record of `address` and replaces it with what `update`
    /// makes of it (`None` forgets it), under the table's lock.
    fn update_address<T>(
        &self,
        address: IpAddr,
        update: impl FnOnce(Option<FailedLogins>) -> (Option<FailedLogins>, T),
    ) -> T {
        let mut table = self
            .addresses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (record, answer) = update(table.get(&address).copied());
        match record {
            Some(record) => table.insert(address, record),
            None => {
                table.remove(&address);
            }
        }
        answer
    }
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

    fn counted(admission: Admission) -> FailedLogins {
        match admission {
            Admission::Counted(record) => record,
            Admission::Refused(wait) => panic!("refused for {wait:?}"),
        }
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
    fn an_attempt_during_a_backoff_is_refused_and_counts_nothing() {
        let settings = ThrottleSettings::default();
        let mut record = None;
        for n in 0..5 {
            record = Some(counted(settings.admit(record, at(n))));
        }
        let fifth = record.unwrap();
        assert_eq!(fifth.failures, 5);
        // The fifth failure at second 4 blocks until second 4 + 1 + 1.
        assert_eq!(fifth.blocked_until, Some(at(6)));
        assert_eq!(
            settings.admit(record, at(5)),
            Admission::Refused(Duration::from_secs(1))
        );
        let sixth = counted(settings.admit(record, at(6)));
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
        let hour = settings.memory().as_secs() as i64;
        assert_eq!(counted(settings.admit(Some(old), at(hour - 1))).failures, 5);
        assert_eq!(counted(settings.admit(Some(old), at(hour + 1))).failures, 1);
    }

    #[test]
    fn taking_an_attempt_back_restores_the_backoff_before_it() {
        let settings = ThrottleSettings::default();
        let sixth = FailedLogins {
            failures: 6,
            last_failed_at: at(0),
            blocked_until: Some(at(3)),
        };
        let back = settings.take_back(Some(sixth)).unwrap();
        assert_eq!((back.failures, back.blocked_until), (5, Some(at(2))));
        let back = settings.take_back(Some(back)).unwrap();
        assert_eq!((back.failures, back.blocked_until), (4, None));
        let first = FailedLogins {
            failures: 1,
            ..back
        };
        assert_eq!(settings.take_back(Some(first)), None);
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
        let throttle = LoginThrottle::new(settings.clone(), store);
        let now = OffsetDateTime::now_utc();
        for n in 0..1_000_000u32 {
            let address = IpAddr::from(n.to_be_bytes());
            throttle.update_address(address, |record| settings.count(record, now));
        }
        assert!(
            throttle.addresses_held() <= 10_000,
            "{}",
            throttle.addresses_held()
        );
    }
}
