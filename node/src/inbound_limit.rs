//! Holds each source address to a few incoming connections still in their
//! handshake, so that one host cannot take every handshake slot a node has.
//!
//! Who dialled in is known only once the noise handshake ends; until then a
//! connection is a socket from some address. The node keeps at most
//! [`MAX_PENDING_INCOMING`] such connections (`connection_limits`), and each is
//! dropped if its handshake does not end within the handshake timeout
//! ([`crate::network::GossipTiming::handshake_timeout`]). Without a limit per
//! source, one host that opens connections and sends nothing could hold every
//! slot, by opening a few each second, and no member could dial in. With
//! [`DEFAULT_HANDSHAKES_PER_ADDRESS`] per source it needs
//! `MAX_PENDING_INCOMING / DEFAULT_HANDSHAKES_PER_ADDRESS` sources. An IPv6
//! /56 counts as one source: a single customer of a provider is commonly given
//! a /64 or a /56, and a site a /48.
//!
//! Loopback addresses are not limited: every node of a local test network
//! dials from 127.0.0.1, and a local user has easier ways to stop a node. A
//! node behind a proxy that hides who dials (every connection from the
//! proxy's address) turns the limit off (`handshakes_per_address = 0` in its
//! configuration): one source would otherwise share four places among all
//! members.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, ListenFailure, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};

/// Incoming connections the node holds in their handshake at once, from all
/// sources together.
pub const MAX_PENDING_INCOMING: u32 = 64;

/// Incoming connections one source may hold in their handshake at once,
/// unless configured otherwise.
pub const DEFAULT_HANDSHAKES_PER_ADDRESS: usize = 4;

/// Where an incoming connection comes from, for counting: an IPv4 address,
/// or the /56 of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4([u8; 4]),
    V6([u8; 7]),
}

impl Source {
    /// The source of a connection from `addr`; `None` for loopback and for
    /// addresses without an IP (not limited here).
    fn of(addr: &Multiaddr) -> Option<Self> {
        let ip = addr.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
            Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
            _ => None,
        })?;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        if ip.is_loopback() {
            return None;
        }
        Some(match ip {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let octets = v6.octets();
                let mut prefix = [0u8; 7];
                prefix.copy_from_slice(&octets[..7]);
                Source::V6(prefix)
            }
        })
    }
}

/// Why an incoming connection was refused before its handshake.
#[derive(Debug, thiserror::Error)]
#[error(
    "{held} incoming connections from {source_addr} are already in their handshake; this one is refused (at most {held} per address)"
)]
pub(crate) struct TooManyFromSource {
    held: usize,
    source_addr: Multiaddr,
}

/// See the module documentation.
pub(crate) struct InboundLimit {
    /// Most handshakes one source may hold; 0: no limit.
    per_source: usize,
    /// Connections in their handshake, with their source.
    pending: HashMap<ConnectionId, Source>,
    /// How many each source holds.
    held: HashMap<Source, usize>,
}

impl InboundLimit {
    /// At most `per_source` handshakes at once from one source (0: no limit).
    pub(crate) fn new(per_source: usize) -> Self {
        Self {
            per_source,
            pending: HashMap::new(),
            held: HashMap::new(),
        }
    }
    /// Ends `connection`'s handshake, if it was counted.
    fn release(&mut self, connection: ConnectionId) {
        let Some(source) = self.pending.remove(&connection) else {
            return;
        };
        if let Some(held) = self.held.get_mut(&source) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.held.remove(&source);
            }
        }
    }
}

impl NetworkBehaviour for InboundLimit {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        if self.per_source == 0 {
            return Ok(());
        }
        let Some(source) = Source::of(remote) else {
            return Ok(());
        };
        let held = self.held.get(&source).copied().unwrap_or(0);
        if held >= self.per_source {
            tracing::debug!(%remote, held, "incoming connection refused: too many from this address in their handshake");
            return Err(ConnectionDenied::new(TooManyFromSource {
                held,
                source_addr: remote.clone(),
            }));
        }
        self.pending.insert(connection, source);
        *self.held.entry(source).or_insert(0) += 1;
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.release(connection);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            // A handshake that failed, timed out, or was refused by another
            // behaviour (before or after it ended).
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => self.release(connection_id),
            FromSwarm::ConnectionEstablished(established) => self.release(established.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use libp2p::swarm::ListenError;

    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn open(limit: &mut InboundLimit, connection: usize, remote: &str) -> bool {
        limit
            .handle_pending_inbound_connection(
                ConnectionId::new_unchecked(connection),
                &addr("/ip4/192.0.2.1/tcp/4001"),
                &addr(remote),
            )
            .is_ok()
    }

    fn fail(limit: &mut InboundLimit, connection: usize) {
        let local = addr("/ip4/192.0.2.1/tcp/4001");
        limit.on_swarm_event(FromSwarm::ListenFailure(ListenFailure {
            local_addr: &local,
            send_back_addr: &local,
            error: &ListenError::Aborted,
            connection_id: ConnectionId::new_unchecked(connection),
            peer_id: None,
        }));
    }

    #[test]
    fn one_source_holds_a_few_handshakes_and_others_are_not_affected() {
        let mut limit = InboundLimit::new(DEFAULT_HANDSHAKES_PER_ADDRESS);
        for c in 0..DEFAULT_HANDSHAKES_PER_ADDRESS {
            assert!(open(&mut limit, c, "/ip4/203.0.113.7/tcp/50000"));
        }
        assert!(
            !open(&mut limit, 100, "/ip4/203.0.113.7/tcp/50001"),
            "one more from the same address is refused"
        );
        assert!(
            open(&mut limit, 101, "/ip4/203.0.113.8/tcp/50000"),
            "another address is not affected"
        );
        fail(&mut limit, 0);
        assert!(
            open(&mut limit, 102, "/ip4/203.0.113.7/tcp/50002"),
            "a handshake that failed or timed out frees its place"
        );
        let established = limit.handle_established_inbound_connection(
            ConnectionId::new_unchecked(1),
            PeerId::random(),
            &addr("/ip4/192.0.2.1/tcp/4001"),
            &addr("/ip4/203.0.113.7/tcp/50000"),
        );
        assert!(established.is_ok());
        assert!(
            open(&mut limit, 103, "/ip4/203.0.113.7/tcp/50003"),
            "a handshake that ended frees its place"
        );
        assert!(!open(&mut limit, 104, "/ip4/203.0.113.7/udp/50004/quic-v1"));
        fail(&mut limit, 104);
        fail(&mut limit, 104);
        assert!(
            !open(&mut limit, 105, "/ip4/203.0.113.7/tcp/50005"),
            "the failure of a refused connection frees nothing"
        );
    }

    #[test]
    fn no_limit_when_configured_off() {
        let mut limit = InboundLimit::new(0);
        for c in 0..10 * DEFAULT_HANDSHAKES_PER_ADDRESS {
            assert!(open(&mut limit, c, "/ip4/203.0.113.7/tcp/50000"));
        }
    }

    #[test]
    fn an_ipv6_slash_56_is_one_source_and_loopback_is_not_limited() {
        let mut limit = InboundLimit::new(DEFAULT_HANDSHAKES_PER_ADDRESS);
        for c in 0..DEFAULT_HANDSHAKES_PER_ADDRESS {
            assert!(open(
                &mut limit,
                c,
                &format!("/ip6/2001:db8:0:1::{}/tcp/1", c + 1)
            ));
        }
        assert!(
            !open(&mut limit, 50, "/ip6/2001:db8:0:ff:ffff::1/tcp/1"),
            "another address in the same /56 counts with it"
        );
        assert!(open(&mut limit, 51, "/ip6/2001:db8:0:100::1/tcp/1"));
        for c in 0..3 * DEFAULT_HANDSHAKES_PER_ADDRESS {
            assert!(open(&mut limit, 60 + c, "/ip4/127.0.0.1/tcp/40000"));
            assert!(open(&mut limit, 90 + c, "/ip6/::1/tcp/40000"));
        }
        for c in 0..DEFAULT_HANDSHAKES_PER_ADDRESS {
            assert!(open(&mut limit, 120 + c, "/ip6/::ffff:198.51.100.4/tcp/1"));
        }
        assert!(
            !open(&mut limit, 130, "/ip4/198.51.100.4/tcp/2"),
            "an IPv4 address mapped into IPv6 is the same source"
        );
    }
}
