//! The event names each host is known to send, besides the normalised kinds: `--check` warns
//! about a `match.event` outside its provider's list, since it is most often a typo. Each
//! host's list is in its adapter.

use super::{adapter, Adapter, DETECTION_ORDER};
use crate::event::{EventKind, Provider};

/// Whether `name` is an event name `provider` is known to send (any host when `None`).
pub fn known_event(provider: Option<Provider>, name: &str) -> bool {
    let knows =
        |a: &Adapter| a.events.contains(&name) || a.event_prefixes.iter().any(|x| name.starts_with(x));
    EventKind::from_name(name).is_some()
        || match provider {
            Some(p) => knows(adapter(p)),
            None => DETECTION_ORDER.iter().any(|a| knows(a)),
        }
}
