//! The compact index of idle messages: what the scheduler keeps of a message it is not working
//! on, so that a queue of 100,000 costs a few hundred octets a message, not a copy of each
//! envelope and state.
//!
//! Per message: when it is due, whether it is held, its size, and what a flush filter asks
//! about (the sender and the domains of the pending recipients, as numbers into a table of
//! interned strings: a large queue names few distinct domains). Everything else is read from
//! the spool when the message's attempt starts, which the scheduler does anyway (another
//! process may have changed it).
//!
//! With a spool that hands out due work itself ([`Scheduling::Batches`]), the index holds only
//! the messages this engine must come back to by id: those whose outcome it could not write.
//!
//! [`Scheduling::Batches`]: crate::spool::Scheduling::Batches

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use crate::address::Domain;
use crate::engine::admin::FlushFilter;
use crate::envelope::Envelope;
use crate::queue_id::QueueId;
use crate::spool::{MessageState, RecipientStatus};

/// What a flush filter needs to know of a message, as numbers into [`Symbols`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Keys {
    sender: u32,
    domains: Domains,
}

/// The distinct domains of a message's pending recipients; one, without a heap allocation, in
/// the common case.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Domains {
    None,
    One(u32),
    Many(Box<[u32]>),
}

impl Domains {
    fn as_slice(&self) -> &[u32] {
        match self {
            Domains::None => &[],
            Domains::One(d) => std::slice::from_ref(d),
            Domains::Many(ds) => ds,
        }
    }
}

/// Interned senders (lower-cased) and domains. Entries are never dropped: a queue names few
/// distinct ones, and forgetting them would need a count per entry.
#[derive(Default)]
pub(super) struct Symbols {
    senders: Vec<Box<str>>,
    sender_ids: HashMap<Box<str>, u32>,
    domains: Vec<Domain>,
    domain_ids: HashMap<Domain, u32>,
}

impl Symbols {
    fn sender(&mut self, sender: String) -> u32 {
        if let Some(&id) = self.sender_ids.get(sender.as_str()) {
            return id;
        }
        let id = self.senders.len() as u32;
        let sender: Box<str> = sender.into();
        self.senders.push(sender.clone());
        self.sender_ids.insert(sender, id);
        id
    }

    fn domain(&mut self, domain: &Domain) -> u32 {
        if let Some(&id) = self.domain_ids.get(domain) {
            return id;
        }
        let id = self.domains.len() as u32;
        self.domains.push(domain.clone());
        self.domain_ids.insert(domain.clone(), id);
        id
    }

    /// The keys of a message in `state`.
    pub(super) fn keys(&mut self, envelope: &Envelope, state: &MessageState) -> Keys {
        let sender = self.sender(envelope.sender.to_string().to_ascii_lowercase());
        let mut ids: Vec<u32> = envelope
            .recipients
            .iter()
            .zip(&state.recipients)
            .filter(|(_, s)| s.status == RecipientStatus::Pending)
            .map(|(r, _)| self.domain(r.address.domain()))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let domains = match ids.as_slice() {
            [] => Domains::None,
            [one] => Domains::One(*one),
            _ => Domains::Many(ids.into_boxed_slice()),
        };
        Keys { sender, domains }
    }

    /// True when `filter` selects the message with these keys.
    pub(super) fn matches(&self, filter: &FlushFilter, id: QueueId, keys: &Keys) -> bool {
        match filter {
            FlushFilter::All => true,
            FlushFilter::Id(want) => id == *want,
            FlushFilter::RecipientDomain(d) => keys
                .domains
                .as_slice()
                .iter()
                .any(|&i| self.domains[i as usize].is_within(d)),
            FlushFilter::SenderContains(text) => {
                self.senders[keys.sender as usize].contains(&text.to_ascii_lowercase())
            }
        }
    }
}

/// A message the scheduler is not working on.
#[derive(Debug)]
pub(super) struct Idle {
    pub next_attempt: SystemTime,
    pub held: bool,
    /// A flush asked for its next attempt: ignore host status.
    pub forced: bool,
    /// Body size in octets (for the queue-size gauge).
    pub size: u64,
    /// The scan generation at which the index learned of it.
    pub generation: u64,
    pub keys: Keys,
    /// A state the spool does not have yet (its write failed): written before the next attempt.
    pub unsaved: Option<Box<MessageState>>,
}

impl Idle {
    pub(super) fn new(
        symbols: &mut Symbols,
        envelope: &Envelope,
        state: &MessageState,
        generation: u64,
    ) -> Idle {
        Idle {
            next_attempt: state.next_attempt,
            held: state.held,
            forced: false,
            size: state.size,
            generation,
            keys: symbols.keys(envelope, state),
            unsaved: None,
        }
    }
}

/// The idle messages, by id and by due time (held ones only by id).
#[derive(Default)]
pub(super) struct IdleIndex {
    entries: HashMap<QueueId, Idle>,
    due: BTreeSet<(SystemTime, QueueId)>,
    pub symbols: Symbols,
    bytes: u64,
}

impl IdleIndex {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Octets of the bodies of the indexed messages.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(super) fn contains(&self, id: &QueueId) -> bool {
        self.entries.contains_key(id)
    }

    pub(super) fn get(&self, id: &QueueId) -> Option<&Idle> {
        self.entries.get(id)
    }

    /// Adds (or replaces) a message.
    pub(super) fn insert(&mut self, id: QueueId, idle: Idle) {
        self.remove(&id);
        if !idle.held {
            self.due.insert((idle.next_attempt, id));
        }
        self.bytes += idle.size;
        self.entries.insert(id, idle);
    }

    /// Adds a message read from the spool.
    pub(super) fn learn(
        &mut self,
        id: QueueId,
        envelope: &Envelope,
        state: &MessageState,
        generation: u64,
    ) {
        let idle = Idle::new(&mut self.symbols, envelope, state, generation);
        self.insert(id, idle);
    }

    pub(super) fn remove(&mut self, id: &QueueId) -> Option<Idle> {
        let idle = self.entries.remove(id)?;
        self.due.remove(&(idle.next_attempt, *id));
        self.bytes -= idle.size;
        Some(idle)
    }

    /// The earliest due time of an unheld message.
    pub(super) fn first_due(&self) -> Option<SystemTime> {
        self.due.first().map(|(t, _)| *t)
    }

    /// Takes out the earliest message due by `now`.
    pub(super) fn pop_due(&mut self, now: SystemTime) -> Option<(QueueId, Idle)> {
        let &(t, id) = self.due.first()?;
        if t > now {
            return None;
        }
        self.remove(&id).map(|idle| (id, idle))
    }

    /// Makes a message due at `at`, ignoring host status when `forced`.
    pub(super) fn make_due(&mut self, id: &QueueId, at: SystemTime, forced: bool) {
        if let Some(mut idle) = self.remove(id) {
            idle.next_attempt = at;
            idle.forced |= forced;
            self.insert(*id, idle);
        }
    }

    /// Ids of the messages `filter` selects.
    pub(super) fn matching(&self, filter: &FlushFilter) -> Vec<QueueId> {
        if let FlushFilter::Id(id) = filter {
            return self.entries.get(id).map(|_| *id).into_iter().collect();
        }
        self.entries
            .iter()
            .filter(|(id, idle)| self.symbols.matches(filter, **id, &idle.keys))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Takes in what a scan found of a message: a new message, or a change another process
    /// made to one it knows (held, released, partly delivered). Unsaved entries keep their
    /// own state: it is newer than the spool's. A flush's "due now" lives only here, so a
    /// flushed message keeps its earlier due time over the spool's.
    pub(super) fn update(&mut self, id: QueueId, envelope: &Envelope, state: &MessageState) {
        let Some(known) = self.entries.get(&id) else {
            return;
        };
        if known.unsaved.is_some() {
            return;
        }
        let (generation, forced) = (known.generation, known.forced);
        let next_attempt = if forced {
            known.next_attempt.min(state.next_attempt)
        } else {
            state.next_attempt
        };
        let keys = self.symbols.keys(envelope, state);
        if known.next_attempt == next_attempt && known.held == state.held && known.keys == keys {
            return;
        }
        let mut idle = Idle::new(&mut self.symbols, envelope, state, generation);
        idle.forced = forced;
        idle.next_attempt = next_attempt;
        self.insert(id, idle);
    }

    /// Idle messages known before scan `generation` began and not found by it: another process
    /// removed them.
    pub(super) fn gone(
        &self,
        generation: u64,
        found: &std::collections::HashSet<QueueId>,
    ) -> Vec<QueueId> {
        self.entries
            .iter()
            .filter(|(id, idle)| {
                idle.generation < generation && idle.unsaved.is_none() && !found.contains(id)
            })
            .map(|(id, _)| *id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::{Address, ReversePath};
    use std::time::Duration;

    fn message(sender: &str, to: &[&str]) -> (Envelope, MessageState) {
        let env = Envelope::new(
            ReversePath::parse(sender).unwrap(),
            to.iter().map(|a| Address::parse(a).unwrap()),
        );
        let state = MessageState::new(&env, 100, SystemTime::UNIX_EPOCH);
        (env, state)
    }

    #[test]
    fn a_flush_filter_selects_by_pending_domain_and_sender_from_the_compact_keys() {
        let mut index = IdleIndex::default();
        let (env, mut state) = message("PBX@Example.com", &["a@x.example", "b@sub.y.example"]);
        state.recipients[0].status = RecipientStatus::Delivered;
        let id = QueueId::generate();
        index.learn(id, &env, &state, 0);
        let domain = |d: &str| FlushFilter::RecipientDomain(Domain::parse(d).unwrap());
        assert_eq!(index.matching(&domain("y.example")), vec![id]);
        assert!(
            index.matching(&domain("x.example")).is_empty(),
            "delivered recipients do not count"
        );
        assert_eq!(
            index.matching(&FlushFilter::SenderContains("pbx@EXAMPLE".into())),
            vec![id]
        );
        assert!(
            index
                .matching(&FlushFilter::SenderContains("cron".into()))
                .is_empty()
        );
        assert_eq!(index.matching(&FlushFilter::Id(id)), vec![id]);
    }

    #[test]
    fn held_messages_are_indexed_but_never_due() {
        let mut index = IdleIndex::default();
        let (env, mut state) = message("a@b.example", &["c@d.example"]);
        state.held = true;
        let held = QueueId::generate();
        index.learn(held, &env, &state, 0);
        state.held = false;
        state.next_attempt = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        let later = QueueId::generate();
        index.learn(later, &env, &state, 0);
        assert_eq!(index.len(), 2);
        assert_eq!(index.bytes(), 200);
        assert_eq!(index.first_due(), Some(state.next_attempt));
        assert!(index.pop_due(SystemTime::UNIX_EPOCH).is_none());
        let (id, _) = index
            .pop_due(SystemTime::UNIX_EPOCH + Duration::from_secs(10))
            .unwrap();
        assert_eq!(id, later);
        assert!(index.pop_due(SystemTime::now()).is_none());
        assert!(index.remove(&held).is_some());
        assert_eq!(index.bytes(), 0);
    }

    #[test]
    fn a_rescan_does_not_undo_a_flush_of_a_message_still_waiting_its_turn() {
        let mut index = IdleIndex::default();
        let (env, mut state) = message("a@b.example", &["c@d.example"]);
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(3600);
        state.next_attempt = later;
        let id = QueueId::generate();
        index.learn(id, &env, &state, 0);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        index.make_due(&id, now, true);
        // The spool still says "in an hour": the flush was not written there.
        index.update(id, &env, &state);
        assert_eq!(index.first_due(), Some(now));
        assert!(index.get(&id).is_some_and(|i| i.forced));
        // A change another process made is still taken.
        state.held = true;
        index.update(id, &env, &state);
        assert!(index.get(&id).is_some_and(|i| i.held));
        assert_eq!(index.first_due(), None);
        // Without a flush the spool's due time wins.
        let other = QueueId::generate();
        state.held = false;
        state.next_attempt = now;
        index.learn(other, &env, &state, 0);
        state.next_attempt = later;
        index.update(other, &env, &state);
        assert_eq!(index.get(&other).map(|i| i.next_attempt), Some(later));
    }
}
