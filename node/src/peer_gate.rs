//! The discovery gate: lets Kademlia dial new members only while the node has
//! fewer connections than it wants ([`TARGET_PEERS`]), counting its discovery
//! dials under way (a query dials several peers at once), so that discovery
//! tops a node up to a few connections instead of connecting it to every
//! member it hears of.
//!
//! Kademlia (libp2p 0.57) bootstraps each time a peer enters a routing table of
//! fewer than 20 entries, and every bootstrap query dials the peers it learns.
//! In a network of tens of members that connects every node to nearly every
//! other one: a noise handshake, identify exchange and sync session per pair,
//! for connections the bulletins' tree does not need. The routing table
//! stays fully populated; only the dials are held back. Dials the node makes on
//! purpose (configured bootstrap peers, `Node::dial`) always pass, and so do
//! dials by address alone (mDNS finds on the LAN). Connections to those wanted
//! peers are kept open even when idle, and the network loop redials them when
//! they drop, so members crowding a node's connections cannot push out the
//! paths its operator chose. Below the target, the loop also runs a Kademlia
//! bootstrap every 30 s.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, DialFailure,
    FromSwarm, NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};

/// Connections a node seeks through discovery: enough that it stays connected
/// when any three of its peers go away. Links beyond it cost heartbeats,
/// announcements and sync sessions without making delivery faster; members
/// that dial in add to them.
pub(crate) const TARGET_PEERS: usize = 4;

/// Why a dial was held back.
#[derive(Debug, thiserror::Error)]
#[error(
    "the node has {connected} connections and {underway} discovery dials under way, enough for gossip; discovery dials wait"
)]
pub(crate) struct EnoughPeers {
    connected: usize,
    underway: usize,
}

/// See the module documentation.
pub(crate) struct PeerGate {
    target: usize,
    connected: HashSet<PeerId>,
    /// Discovery dials let through and not yet connected or failed, by
    /// connection, with the peer each is to: they count towards the target,
    /// so that a query dialling several peers at once does not overshoot it.
    dialling: HashMap<ConnectionId, PeerId>,
    /// Peers the node dials on purpose, whatever the count.
    wanted: HashSet<PeerId>,
}

impl PeerGate {
    pub(crate) fn new(target: usize) -> Self {
        Self {
            target,
            connected: HashSet::new(),
            dialling: HashMap::new(),
            wanted: HashSet::new(),
        }
    }

    /// Lets dials to `peer` through regardless of the connection count.
    pub(crate) fn want(&mut self, peer: PeerId) {
        self.wanted.insert(peer);
    }

    /// Whether the node is below its target and discovery should run.
    pub(crate) fn wants_more(&self) -> bool {
        self.connected.len() < self.target
    }

    /// Discovery dials under way, to distinct peers not yet connected.
    fn underway(&self) -> usize {
        self.dialling
            .values()
            .filter(|peer| !self.connected.contains(peer))
            .collect::<HashSet<_>>()
            .len()
    }
}

/// The gate's part of each connection: no protocol, only whether the
/// connection stays open while idle (for wanted peers).
pub(crate) struct KeepAlive(bool);

impl ConnectionHandler for KeepAlive {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<DeniedUpgrade> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.0
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, (), Infallible>> {
        Poll::Pending
    }

    fn on_connection_event(&mut self, _: ConnectionEvent<DeniedUpgrade, DeniedUpgrade>) {}
}

impl NetworkBehaviour for PeerGate {
    type ConnectionHandler = KeepAlive;
    type ToSwarm = Infallible;

    fn handle_pending_outbound_connection(
        &mut self,
        connection: ConnectionId,
        maybe_peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let Some(peer) = maybe_peer else {
            return Ok(vec![]);
        };
        if self.wanted.contains(&peer) || self.connected.contains(&peer) {
            return Ok(vec![]);
        }
        // Below the target, counting the discovery dials under way.
        let underway = self.underway();
        if self.connected.len() + underway >= self.target {
            return Err(ConnectionDenied::new(EnoughPeers {
                connected: self.connected.len(),
                underway,
            }));
        }
        self.dialling.insert(connection, peer);
        Ok(vec![])
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(KeepAlive(self.wanted.contains(&peer)))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(KeepAlive(self.wanted.contains(&peer)))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(established) => {
                self.dialling.remove(&established.connection_id);
                self.connected.insert(established.peer_id);
            }
            FromSwarm::DialFailure(DialFailure { connection_id, .. }) => {
                self.dialling.remove(&connection_id);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                remaining_established: 0,
                ..
            }) => {
                self.connected.remove(&peer_id);
            }
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
    use libp2p::core::ConnectedPoint;
    use libp2p::swarm::behaviour::ConnectionEstablished;

    use super::*;

    fn dial(gate: &mut PeerGate, peer: PeerId) -> bool {
        dial_as(gate, peer, 0)
    }

    fn dial_as(gate: &mut PeerGate, peer: PeerId, connection: usize) -> bool {
        gate.handle_pending_outbound_connection(
            ConnectionId::new_unchecked(connection),
            Some(peer),
            &[],
            Endpoint::Dialer,
        )
        .is_ok()
    }

    fn connect(gate: &mut PeerGate, peer: PeerId, endpoint: &ConnectedPoint) {
        connect_as(gate, peer, endpoint, 1);
    }

    fn connect_as(gate: &mut PeerGate, peer: PeerId, endpoint: &ConnectedPoint, connection: usize) {
        gate.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
            peer_id: peer,
            connection_id: ConnectionId::new_unchecked(connection),
            endpoint,
            failed_addresses: &[],
            other_established: 0,
        }));
    }

    fn dial_failed(gate: &mut PeerGate, peer: PeerId, connection: usize) {
        gate.on_swarm_event(FromSwarm::DialFailure(DialFailure {
            peer_id: Some(peer),
            error: &libp2p::swarm::DialError::Aborted,
            connection_id: ConnectionId::new_unchecked(connection),
        }));
    }

    fn close(gate: &mut PeerGate, peer: PeerId, endpoint: &ConnectedPoint, remaining: usize) {
        gate.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id: peer,
            connection_id: ConnectionId::new_unchecked(1),
            endpoint,
            cause: None,
            remaining_established: remaining,
        }));
    }

    #[test]
    fn discovery_dials_stop_at_the_target_and_resume_below_it() {
        let endpoint = ConnectedPoint::Listener {
            local_addr: "/ip4/127.0.0.1/tcp/1"
                .parse()
                .unwrap_or_else(|_| Multiaddr::empty()),
            send_back_addr: "/ip4/127.0.0.1/tcp/2"
                .parse()
                .unwrap_or_else(|_| Multiaddr::empty()),
        };
        let mut gate = PeerGate::new(2);
        let (a, b, c, bootstrap) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        gate.want(bootstrap);
        assert!(dial(&mut gate, c), "below the target, discovery dials pass");
        dial_failed(&mut gate, c, 0);
        connect(&mut gate, a, &endpoint);
        connect(&mut gate, b, &endpoint);
        assert!(!gate.wants_more());
        assert!(!dial(&mut gate, c), "at the target, a new peer is held back");
        assert!(
            dial(&mut gate, a),
            "a peer already connected may get a second connection"
        );
        assert!(dial(&mut gate, bootstrap), "peers dialled on purpose always pass");
        assert!(
            gate.handle_pending_outbound_connection(
                ConnectionId::new_unchecked(0),
                None,
                &[],
                Endpoint::Dialer
            )
            .is_ok(),
            "a dial by address alone (no peer id) passes"
        );
        let local: Multiaddr = "/ip4/127.0.0.1/tcp/1"
            .parse()
            .unwrap_or_else(|_| Multiaddr::empty());
        let keeps = |gate: &mut PeerGate, peer| {
            gate.handle_established_inbound_connection(ConnectionId::new_unchecked(2), peer, &local, &local)
                .is_ok_and(|handler| handler.connection_keep_alive())
        };
        assert!(
            keeps(&mut gate, bootstrap),
            "a wanted peer's connection stays open while idle"
        );
        assert!(!keeps(&mut gate, c), "others close when idle, as libp2p decides");
        close(&mut gate, b, &endpoint, 1);
        assert!(!dial(&mut gate, c), "b still has a connection");
        close(&mut gate, b, &endpoint, 0);
        assert!(gate.wants_more());
        assert!(dial(&mut gate, c), "below the target again, discovery resumes");
    }

    #[test]
    fn discovery_dials_under_way_count_towards_the_target() {
        let dialer = ConnectedPoint::Dialer {
            address: "/ip4/127.0.0.1/tcp/3"
                .parse()
                .unwrap_or_else(|_| Multiaddr::empty()),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        };
        let mut gate = PeerGate::new(2);
        let (a, b, c, d) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        assert!(dial_as(&mut gate, a, 10));
        assert!(dial_as(&mut gate, b, 11));
        assert!(
            !dial_as(&mut gate, c, 12),
            "two dials under way fill a target of two, though nothing is connected yet"
        );
        dial_failed(&mut gate, a, 10);
        assert!(dial_as(&mut gate, c, 13), "a failed dial frees its place");
        connect_as(&mut gate, b, &dialer, 11);
        assert!(
            !dial_as(&mut gate, d, 14),
            "one connected and one under way still fill the target"
        );
        assert!(
            dial_as(&mut gate, b, 15),
            "a second dial to a connected peer is not discovery"
        );
        assert!(
            !dial_as(&mut gate, c, 16),
            "a second dial to a peer being dialled is held back like any other at the target"
        );
    }
}
