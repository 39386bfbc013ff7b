//! mDNS/DNS-SD discovery on the local link, on top of the `mdns-sd` crate.
//!
//! [`Mdns::start`] registers our service (see [`super::record`]) and browses for others. The
//! `mdns-sd` daemon runs on its own thread and hands events over a flume channel; [`Mdns`]
//! turns them into verified [`DiscoveryEvent`]s. It never blocks unless asked to:
//! [`Mdns::try_recv`] is for polling on a timer (e.g. from a tokio interval), and
//! [`Mdns::recv_timeout`] / [`Mdns::recv_async`] wait for the next event.
//!
//! Advertisements that fail verification are refused: counted in [`DiscoveryStats::refused`]
//! and logged at debug level, never reported. Our own advertisement (seen through multicast
//! loopback) is ignored.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mdns_sd::{
    IfKind, Receiver, ResolvedService, ScopedIp, ServiceDaemon, ServiceEvent, ServiceInfo,
};

use crate::hashname::Hashname;

use super::record::{Advertisement, SERVICE_TYPE, instance_of, txt_properties};
use super::{DiscoveryError, DiscoveryEvent, PeerRecord};

/// Which network interfaces mDNS uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum InterfaceSelection {
    /// Every interface the host has (the `mdns-sd` default).
    #[default]
    All,
    /// Only the interfaces with these names (e.g. `["eth0"]`, or `["lo"]` in tests).
    Named(Vec<String>),
    /// Only the interfaces carrying these addresses.
    Addrs(Vec<IpAddr>),
}

/// Settings of [`Mdns::start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnsConfig {
    /// Interfaces to advertise and browse on.
    pub interfaces: InterfaceSelection,
    /// The mDNS UDP port: 5353 ([`mdns_sd::MDNS_PORT`]) on a real network; tests may use
    /// another so they neither disturb nor see the host's mDNS responder.
    pub mdns_port: u16,
    /// Addresses to advertise; empty means every address of the selected interfaces, kept up
    /// to date as they change.
    pub advertise_ips: Vec<IpAddr>,
}

impl Default for MdnsConfig {
    fn default() -> Self {
        MdnsConfig {
            interfaces: InterfaceSelection::All,
            mdns_port: mdns_sd::MDNS_PORT,
            advertise_ips: Vec::new(),
        }
    }
}

/// Counters of what [`Mdns`] received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiscoveryStats {
    /// `Found` events reported.
    pub found: u64,
    /// `Lost` events reported.
    pub lost: u64,
    /// Advertisements refused (malformed or failing verification).
    pub refused: u64,
    /// Times our own advertisement came back and was ignored.
    pub own: u64,
}

/// A running mDNS advertiser and browser for mesh peers.
pub struct Mdns {
    daemon: ServiceDaemon,
    events: Receiver<ServiceEvent>,
    own: Hashname,
    fullname: String,
    known: HashMap<Hashname, PeerRecord>,
    stats: DiscoveryStats,
    stopped: bool,
}

impl std::fmt::Debug for Mdns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mdns")
            .field("own", &self.own)
            .field("known", &self.known.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Mdns {
    /// Starts the `mdns-sd` daemon, registers `hashname` (whose X25519 key is `static_key`) as
    /// listening on UDP `port`, and browses for other mesh nodes.
    ///
    /// Fails with [`DiscoveryError::KeyMismatch`] if the key is not the hashname's, and with
    /// [`DiscoveryError::Mdns`] if the daemon cannot start. Socket problems (no multicast on
    /// any selected interface) are not errors here: `mdns-sd` opens its sockets on its own
    /// thread, and such a node simply finds nobody.
    pub fn start(
        hashname: Hashname,
        static_key: [u8; 32],
        port: u16,
        config: &MdnsConfig,
    ) -> Result<Mdns, DiscoveryError> {
        // Refuse to advertise a record that others would refuse.
        PeerRecord::verified(hashname, static_key, Vec::new())?;
        let daemon = ServiceDaemon::new_with_port(config.mdns_port)?;
        let result = Self::setup(&daemon, hashname, static_key, port, config);
        match result {
            Ok((events, fullname)) => Ok(Mdns {
                daemon,
                events,
                own: hashname,
                fullname,
                known: HashMap::new(),
                stats: DiscoveryStats::default(),
                stopped: false,
            }),
            Err(e) => {
                let _ = daemon.shutdown();
                Err(e)
            }
        }
    }

    fn setup(
        daemon: &ServiceDaemon,
        hashname: Hashname,
        static_key: [u8; 32],
        port: u16,
        config: &MdnsConfig,
    ) -> Result<(Receiver<ServiceEvent>, String), DiscoveryError> {
        match &config.interfaces {
            InterfaceSelection::All => {}
            InterfaceSelection::Named(names) => {
                daemon.disable_interface(IfKind::All)?;
                let kinds: Vec<IfKind> = names.iter().map(IfKind::from).collect();
                daemon.enable_interface(kinds)?;
            }
            InterfaceSelection::Addrs(addrs) => {
                daemon.disable_interface(IfKind::All)?;
                let kinds: Vec<IfKind> = addrs.iter().copied().map(IfKind::Addr).collect();
                daemon.enable_interface(kinds)?;
            }
        }
        let name = hashname.to_string();
        let host = format!("{name}.local.");
        let txt = txt_properties(&hashname, &static_key);
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            &name,
            &host,
            &config.advertise_ips[..],
            port,
            &txt[..],
        )?;
        let info = if config.advertise_ips.is_empty() {
            info.enable_addr_auto()
        } else {
            info
        };
        let fullname = info.get_fullname().to_owned();
        daemon.register(info)?;
        let events = daemon.browse(SERVICE_TYPE)?;
        Ok((events, fullname))
    }

    /// Our own hashname, as advertised.
    pub fn hashname(&self) -> Hashname {
        self.own
    }

    /// Counters of what was received so far.
    pub fn stats(&self) -> DiscoveryStats {
        self.stats
    }

    /// The peers currently known (found and not lost).
    pub fn peers(&self) -> impl Iterator<Item = &PeerRecord> {
        self.known.values()
    }

    /// The next discovery event if one is ready; never blocks. `None` when nothing is pending
    /// (or the daemon has stopped).
    pub fn try_recv(&mut self) -> Option<DiscoveryEvent> {
        while let Ok(ev) = self.events.try_recv() {
            if let Some(out) = self.handle(ev) {
                return Some(out);
            }
        }
        None
    }

    /// Waits up to `timeout` for the next discovery event.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<DiscoveryEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = self.events.recv_timeout(left).ok()?;
            if let Some(out) = self.handle(ev) {
                return Some(out);
            }
        }
    }

    /// Waits for the next discovery event without blocking a thread (any async runtime).
    /// `None` once the daemon has stopped.
    pub async fn recv_async(&mut self) -> Option<DiscoveryEvent> {
        loop {
            let ev = self.events.recv_async().await.ok()?;
            if let Some(out) = self.handle(ev) {
                return Some(out);
            }
        }
    }

    /// Turns one `mdns-sd` event into a discovery event, verifying it.
    fn handle(&mut self, ev: ServiceEvent) -> Option<DiscoveryEvent> {
        match ev {
            ServiceEvent::ServiceResolved(resolved) => {
                let ad = advertisement_of(&resolved);
                match ad.verify() {
                    Ok(record) if record.hashname == self.own => {
                        self.stats.own += 1;
                        None
                    }
                    Ok(record) => {
                        if self.known.get(&record.hashname) == Some(&record) {
                            return None;
                        }
                        tracing::debug!(peer = %record.hashname, addrs = ?record.addrs, "mDNS: found peer");
                        self.known.insert(record.hashname, record.clone());
                        self.stats.found += 1;
                        Some(DiscoveryEvent::Found(record))
                    }
                    Err(error) => {
                        self.stats.refused += 1;
                        tracing::debug!(fullname = %ad.fullname, %error, "mDNS: refused advertisement");
                        None
                    }
                }
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                let hashname: Hashname = instance_of(&fullname).ok()?.parse().ok()?;
                self.known.remove(&hashname)?;
                tracing::debug!(peer = %hashname, "mDNS: lost peer");
                self.stats.lost += 1;
                Some(DiscoveryEvent::Lost(hashname))
            }
            _ => None,
        }
    }

    /// Withdraws our advertisement (peers see it go) and stops the daemon. Idempotent; also
    /// done, without waiting, on drop.
    pub fn shutdown(&mut self) -> Result<(), DiscoveryError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        // Wait briefly for the goodbye packets to go out before the daemon exits.
        if let Ok(status) = self.daemon.unregister(&self.fullname) {
            let _ = status.recv_timeout(Duration::from_secs(2));
        }
        let status = self.daemon.shutdown()?;
        let _ = status.recv_timeout(Duration::from_secs(2));
        Ok(())
    }
}

impl Drop for Mdns {
    fn drop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            let _ = self.daemon.unregister(&self.fullname);
            let _ = self.daemon.shutdown();
        }
    }
}

/// The plain-data form of a resolved service.
fn advertisement_of(resolved: &ResolvedService) -> Advertisement {
    let mut ips = Vec::new();
    let mut scope_ids = Vec::new();
    for scoped in resolved.get_addresses() {
        let ip = scoped.to_ip_addr();
        let scope = match (scoped, ip) {
            (ScopedIp::V6(v6), IpAddr::V6(addr)) if addr.is_unicast_link_local() => {
                v6.scope_id().index
            }
            _ => 0,
        };
        ips.push(ip);
        scope_ids.push(scope);
    }
    let txt = resolved
        .get_properties()
        .iter()
        .map(|p| (p.key().to_owned(), p.val_str().to_owned()))
        .collect();
    Advertisement {
        fullname: resolved.get_fullname().to_owned(),
        port: resolved.get_port(),
        ips,
        scope_ids,
        txt,
    }
}
