//! A client connection's place under the connection limits: a permit of the listener's
//! `max_connections` and a slot under its address's `max_connections_per_ip`, held for as long
//! as the connection, or the tunnel or WebSocket it became, is open.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedSemaphorePermit;

use crate::observe::metrics::Active;

/// Open connections per client address on one listener.
#[derive(Debug, Default)]
pub struct PerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// What an open client connection holds: its place under `max_connections` and under its
/// address's cap. Tunnels and upgraded connections keep a clone, so a connection that becomes
/// a tunnel still counts until the tunnel closes.
pub struct ConnectionHold {
    _permit: OwnedSemaphorePermit,
    _slot: AddressSlot,
    _open: Active,
}

impl ConnectionHold {
    /// Holds `permit` and `slot` for one connection, counted open by `open`.
    pub fn new(permit: OwnedSemaphorePermit, slot: AddressSlot, open: Active) -> ConnectionHold {
        ConnectionHold { _permit: permit, _slot: slot, _open: open }
    }
}

impl std::fmt::Debug for ConnectionHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionHold")
    }
}

/// One counted connection; uncounts itself when dropped.
#[derive(Debug)]
pub struct AddressSlot {
    counts: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    /// Counts one more connection from `ip`, unless it already has `cap` (`None`: no cap).
    pub fn try_take(
        self: &Arc<Self>,
        ip: IpAddr,
        cap: Option<NonZeroUsize>,
    ) -> Option<AddressSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_insert(0);
        if cap.is_some_and(|cap| *count >= cap.get()) {
            return None;
        }
        *count += 1;
        Some(AddressSlot { counts: self.clone(), ip })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}
