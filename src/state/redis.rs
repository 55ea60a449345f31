//! Counters in Redis, shared by every sluice instance that points at the same server.
//!
//! A counter is one key per window, `{prefix}{name}:{window}:{index}`, expiring a minute after
//! its window ends. An admission runs one Lua script (atomic on the server: Redis runs
//! scripts one at a time) that reads every counter of the request, and adds the costs only
//! if all pass. Charges are `INCRBY` + `EXPIRE` pairs in one `MULTI`/`EXEC` pipeline;
//! cooldowns are keys set with `PX`. Every operation is one round trip, bounded by the
//! configured timeout; the connection is made lazily and remade in the background, so a
//! Redis that is down at start-up or goes away later costs a timeout, never a hang.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, Script};

use crate::state::counter::{Admission, Charge, Check, Counters, StateError, UnixTime, Window};

/// How long a window's key outlives the window, so an instance whose clock is slightly behind
/// still finds the counter it is adding to.
const KEY_GRACE_SECONDS: u64 = 60;

/// Checks every counter, then adds the costs when all pass.
/// KEYS: the counters. ARGV: for each counter, its cost, limit and expiry in seconds.
/// Returns 0 when admitted, else the (1-based) number of the first counter that refused.
const ADMIT: &str = r"
for i = 1, #KEYS do
  local cost = tonumber(ARGV[i * 3 - 2])
  local limit = tonumber(ARGV[i * 3 - 1])
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  local need = cost
  if need < 1 then need = 1 end
  if current + need > limit then return i end
end
for i = 1, #KEYS do
  local cost = tonumber(ARGV[i * 3 - 2])
  if cost > 0 then
    redis.call('INCRBY', KEYS[i], cost)
    redis.call('EXPIRE', KEYS[i], tonumber(ARGV[i * 3]))
  end
end
return 0
";

/// Counters in one Redis server.
pub struct RedisCounters {
    connection: ConnectionManager,
    address: String,
    prefix: String,
    timeout: Duration,
    admit: Script,
}

impl std::fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCounters")
            .field("address", &self.address)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisCounters {
    /// Counters in the Redis server at `url` (`redis://[:password@]host:port[/db]`), with
    /// keys starting with `prefix`, each operation allowed `timeout`. Nothing is connected
    /// yet: the first operation connects.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<RedisCounters, StateError> {
        let redacted = || url.split('@').next_back().unwrap_or_default().to_owned();
        let client =
            Client::open(url).map_err(|source| StateError::Url { address: redacted(), source })?;
        let address = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Reconnection is retried on the next operation; a failed one must not queue
            // retries behind it.
            .set_number_of_retries(1)
            .set_max_delay(timeout);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|source| StateError::Url { address: address.clone(), source })?;
        Ok(RedisCounters {
            connection,
            address,
            prefix: prefix.to_owned(),
            timeout,
            admit: Script::new(ADMIT),
        })
    }

    /// `host:port` of the server, for logs (never the password).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The key of counter `name` in the window of `now`, and its expiry in seconds.
    fn counter_key(&self, name: &str, window: Window, now: UnixTime) -> (String, u64) {
        let key = format!("{}{name}:{}:{}", self.prefix, window.as_str(), window.index(now));
        (key, window.remaining(now).as_secs() + 1 + KEY_GRACE_SECONDS)
    }

    fn cooling_key(&self, name: &str) -> String {
        format!("{}cool:{name}", self.prefix)
    }

    /// Runs `operation` within the timeout, naming the server in its error.
    async fn bounded<T>(
        &self,
        operation: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StateError> {
        match tokio::time::timeout(self.timeout, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(StateError::Redis { address: self.address.clone(), source }),
            Err(_) => {
                Err(StateError::Timeout { address: self.address.clone(), timeout: self.timeout })
            }
        }
    }
}

impl Counters for RedisCounters {
    async fn admit(&self, checks: &[Check<'_>], now: UnixTime) -> Result<Admission, StateError> {
        if checks.is_empty() {
            return Ok(Admission::Admitted);
        }
        let mut invocation = self.admit.prepare_invoke();
        for check in checks {
            let (key, expiry) = self.counter_key(check.name, check.window, now);
            invocation.key(key).arg(check.cost).arg(check.limit).arg(expiry);
        }
        let mut connection = self.connection.clone();
        let refused: usize = self.bounded(invocation.invoke_async(&mut connection)).await?;
        Ok(match refused.checked_sub(1).and_then(|index| checks.get(index).map(|c| (index, c))) {
            None => Admission::Admitted,
            Some((index, check)) => {
                Admission::Refused { check: index, retry_after: check.window.remaining(now) }
            }
        })
    }

    async fn charge(&self, charges: &[Charge<'_>], now: UnixTime) -> Result<(), StateError> {
        let mut pipeline = ::redis::pipe();
        pipeline.atomic();
        for charge in charges.iter().filter(|charge| charge.amount > 0) {
            let (key, expiry) = self.counter_key(charge.name, charge.window, now);
            pipeline.incr(&key, charge.amount).ignore().expire(&key, expiry as i64).ignore();
        }
        if charges.iter().all(|charge| charge.amount == 0) {
            return Ok(());
        }
        let mut connection = self.connection.clone();
        self.bounded(pipeline.query_async::<()>(&mut connection)).await
    }

    async fn cool(&self, name: &str, period: Duration, _now: UnixTime) -> Result<(), StateError> {
        let millis = u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut command = ::redis::cmd("SET");
        command.arg(self.cooling_key(name)).arg(1).arg("PX").arg(millis);
        let mut connection = self.connection.clone();
        self.bounded(command.query_async::<()>(&mut connection)).await
    }

    async fn cooling(
        &self,
        names: &[&str],
        _now: UnixTime,
    ) -> Result<Vec<Option<Duration>>, StateError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipeline = ::redis::pipe();
        for name in names {
            pipeline.pttl(self.cooling_key(name));
        }
        let mut connection = self.connection.clone();
        let left: Vec<i64> = self.bounded(pipeline.query_async(&mut connection)).await?;
        // PTTL is -2 for a missing key, -1 for one without expiry (never set by sluice).
        Ok(left
            .into_iter()
            .map(|ms| u64::try_from(ms).ok().filter(|ms| *ms > 0).map(Duration::from_millis))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_name_the_window_and_expire_after_it() {
        let counters =
            RedisCounters::new("redis://127.0.0.1:1/", "sl:", Duration::from_millis(50)).unwrap();
        let now = UnixTime(1_700_000_020_000); // 40 s into a minute
        let (key, expiry) = counters.counter_key("key:a:tokens", Window::Minute, now);
        assert_eq!(key, format!("sl:key:a:tokens:minute:{}", 1_700_000_020 / 60));
        assert_eq!(expiry, 20 + 1 + KEY_GRACE_SECONDS);
        assert_eq!(counters.address(), "127.0.0.1:1");
    }

    #[tokio::test]
    async fn passwords_never_reach_the_address() {
        let counters =
            RedisCounters::new("redis://:hunter2@10.0.0.1:6379/0", "", Duration::from_secs(1))
                .unwrap();
        assert_eq!(counters.address(), "10.0.0.1:6379");
        assert!(!format!("{counters:?}").contains("hunter2"));
        let err = RedisCounters::new("http://:hunter2@x", "", Duration::from_secs(1)).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
    }
}
