//! The discovery gate: lets Kademlia dial new members only while the node has
//! fewer connections than it wants ([`TARGET_PEERS`]), so that discovery tops
//! a node up to a few connections instead of connecting it to every member it
//! hears of.
//!
//! Kademlia (libp2p 0.57) bootstraps each time a peer enters a routing table of
//! fewer than 20 entries, and every bootstrap query dials the peers it learns.
//! In a network of tens of members that connects every node to nearly every
//! other one: a noise handshake, identify exchange and sync session per pair,
//! for connections the gossip mesh (6 peers) does not need. The routing table
//! stays fully populated; only the dials are held back. Dials the node makes on
//! purpose (configured bootstrap peers, `Node::dial`) always pass, and so do
//! dials by address alone (mDNS finds on the LAN). Connections to those wanted
//! peers are kept open even when idle, and the network loop redials them when
//! they drop, so members crowding a node's connections cannot push out the
//! paths its operator chose. Below the target, the loop also runs a Kademlia
//! bootstrap every 30 s.

use std::collections::HashSet;
use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};

/// Connections a node seeks through discovery: enough that it stays connected
/// when any three of its peers go away. Every connection carries a copy of
/// each message, so more of them cost CPU on every message without making
/// delivery faster; the gossip mesh (6) fills from these and from the members
/// that dial in.
pub(crate) const TARGET_PEERS: usize = 4;

/// Why a dial was held back.
#[derive(Debug, thiserror::Error)]
#[error("the node has {connected} connections, enough for its gossip mesh; discovery dials wait")]
pub(crate) struct EnoughPeers {
    connected: usize,
}

/// See the module documentation.
pub(crate) struct PeerGate {
    target: usize,
    connected: HashSet<PeerId>,
    /// Peers the node dials on purpose, whatever the count.
    wanted: HashSet<PeerId>,
}

impl PeerGate {
    pub(crate) fn new(target: usize) -> Self {
        Self {
            target,
            connected: HashSet::new(),
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
        _: ConnectionId,
        maybe_peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        match maybe_peer {
            Some(peer)
                if !self.wants_more() && !self.wanted.contains(&peer) && !self.connected.contains(&peer) =>
            {
                Err(ConnectionDenied::new(EnoughPeers {
                    connected: self.connected.len(),
                }))
            }
            _ => Ok(vec![]),
        }
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
                self.connected.insert(established.peer_id);
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
        gate.handle_pending_outbound_connection(
            ConnectionId::new_unchecked(0),
            Some(peer),
            &[],
            Endpoint::Dialer,
        )
        .is_ok()
    }

    fn connect(gate: &mut PeerGate, peer: PeerId, endpoint: &ConnectedPoint) {
        gate.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
            peer_id: peer,
            connection_id: ConnectionId::new_unchecked(1),
            endpoint,
            failed_addresses: &[],
            other_established: 0,
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
}
