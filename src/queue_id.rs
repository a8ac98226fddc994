//! Queue identifiers: sortable by arrival, from a fixed alphabet, never a path from raw input.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Crockford's base32 alphabet: no I, L, O or U, so an id read aloud or off a screen is
/// unambiguous, and ASCII order equals numeric order, so ids sort by arrival.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// 11 characters of microseconds since the epoch (55 bits: good for 1,100 years).
const TIME_CHARS: usize = 11;
/// 5 characters (25 bits) of randomness, so two processes never pick the same id.
const RANDOM_CHARS: usize = 5;
/// Total length of an id.
pub const QUEUE_ID_LEN: usize = TIME_CHARS + RANDOM_CHARS;

/// A string that is not a queue id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input:?} is not a queue id (expected {QUEUE_ID_LEN} characters of 0-9 and A-Z without I, L, O, U)"
)]
pub struct QueueIdError {
    /// The refused input (truncated to 64 characters).
    pub input: String,
}

/// The identifier of one queued message, e.g. `0PC4F8X1RZ3A7KQ2`.
///
/// Ids are generated from the arrival time in microseconds plus randomness, so ids sort by
/// arrival, and parsed strictly: a string from a user or a file name becomes a `QueueId` only if it
/// is exactly 16 characters of the alphabet, so it can never name a path outside the spool.
///
/// ```
/// use postrider::QueueId;
/// let a = QueueId::generate();
/// let b = QueueId::generate();
/// assert!(a < b);
/// assert_eq!(a.as_str().parse::<QueueId>()?, a);
/// assert!("../../etc/passwd".parse::<QueueId>().is_err());
/// # Ok::<(), postrider::QueueIdError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId([u8; QUEUE_ID_LEN]);

static LAST_MICROS: AtomicU64 = AtomicU64::new(0);

impl QueueId {
    /// A new id for a message arriving now. Ids from one process strictly increase.
    pub fn generate() -> QueueId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        // Strictly increasing within the process even if the clock stalls or steps back.
        let mut prev = LAST_MICROS.load(Ordering::Relaxed);
        let micros = loop {
            let next = now.max(prev + 1);
            match LAST_MICROS.compare_exchange_weak(
                prev,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break next,
                Err(p) => prev = p,
            }
        };
        QueueId::from_parts(micros, rand::random::<u32>())
    }

    fn from_parts(micros: u64, random: u32) -> QueueId {
        let mut out = [0u8; QUEUE_ID_LEN];
        for (i, slot) in out[..TIME_CHARS].iter_mut().enumerate() {
            let shift = 5 * (TIME_CHARS - 1 - i);
            *slot = ALPHABET[((micros >> shift) & 31) as usize];
        }
        for (i, slot) in out[TIME_CHARS..].iter_mut().enumerate() {
            let shift = 5 * (RANDOM_CHARS - 1 - i);
            *slot = ALPHABET[((random >> shift) & 31) as usize];
        }
        QueueId(out)
    }

    /// Parses an id; lower case is accepted (people retype ids from `mailq`).
    pub fn parse(input: &str) -> Result<QueueId, QueueIdError> {
        let bytes = input.as_bytes();
        if bytes.len() != QUEUE_ID_LEN {
            return Err(QueueIdError {
                input: input.chars().take(64).collect(),
            });
        }
        let mut out = [0u8; QUEUE_ID_LEN];
        for (slot, &b) in out.iter_mut().zip(bytes) {
            let up = b.to_ascii_uppercase();
            if !ALPHABET.contains(&up) {
                return Err(QueueIdError {
                    input: input.chars().take(64).collect(),
                });
            }
            *slot = up;
        }
        Ok(QueueId(out))
    }

    /// The id as text (also a safe file name).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("invariant: queue ids hold only ASCII")
    }

    /// When the id was generated (to the microsecond).
    pub fn timestamp(&self) -> SystemTime {
        let micros = self.0[..TIME_CHARS].iter().fold(0u64, |acc, &c| {
            let v = ALPHABET.iter().position(|&a| a == c).unwrap_or(0) as u64;
            (acc << 5) | v
        });
        UNIX_EPOCH + Duration::from_micros(micros)
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({})", self.as_str())
    }
}

impl FromStr for QueueId {
    type Err = QueueIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QueueId::parse(s)
    }
}

impl Serialize for QueueId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for QueueId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        QueueId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_strictly_increase() {
        let ids: Vec<QueueId> = (0..10_000).map(|_| QueueId::generate()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn ids_round_trip_and_accept_lower_case() {
        let id = QueueId::generate();
        assert_eq!(QueueId::parse(id.as_str()).unwrap(), id);
        assert_eq!(
            QueueId::parse(&id.as_str().to_ascii_lowercase()).unwrap(),
            id
        );
    }

    #[test]
    fn anything_that_could_be_a_path_is_refused() {
        for bad in [
            "",
            "../../etc/passwd",
            "0PC4F8X1RZ3A7KQ",
            "0PC4F8X1RZ3A7KQ22",
            "0PC4F8X1RZ3A7KQ/",
            "0PC4F8X1RZ3A7KQI",
            "0PC4F8X1RZ3A7KQ.",
        ] {
            assert!(QueueId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_timestamp_is_recovered_to_the_microsecond() {
        let micros = 1_795_000_000_123_456u64;
        let id = QueueId::from_parts(micros, 7);
        assert_eq!(id.timestamp(), UNIX_EPOCH + Duration::from_micros(micros));
    }

    #[test]
    fn order_of_ids_is_order_of_time() {
        let a = QueueId::from_parts(1_000, u32::MAX);
        let b = QueueId::from_parts(1_001, 0);
        assert!(a < b);
        assert!(a.as_str() < b.as_str());
    }
}
