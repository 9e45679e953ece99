//! The Herald node: what each member runs.
//!
//! - [`store`]: sled store of bulletins, chains, indexes, registry history.
//! - [`validate`]: the cheap-to-dear decision on each bulletin from the network.
//! - [`network`]: libp2p behaviour (member-only connections, gossip with
//!   application validation, discovery) and the event loop that owns the swarm.
//! - [`tree`] and [`push`]: tree dissemination of bulletins (eager and lazy
//!   push) over libp2p streams.
//! - [`sync`]: catch-up sync after outages and partitions.
//! - `validators`: the tasks that check gossip beside the network's loop and
//!   stage what passes.
//! - `writer`: the thread that numbers and journals own bulletins and stores
//!   sync pages and bundles.
//! - `journal`: the file where own bulletins are made durable before they leave.
//! - `indexer`: the thread that folds staged gossip into the chains and
//!   indexes between messages, and flushes it.
//! - [`node`]: the [`Node`] handle that ties them together.
//! - [`events`]: the [`NodeEvent`]s a node reports.
//! - [`api`]: the local HTTP API used by the command line, and (`web`) the
//!   local web page served beside it; [`metrics`]: its Prometheus metrics.
//! - [`csaf`]: what a CSAF document says of itself that its bulletin repeats,
//!   and the rule that keeps its TLP label.
//! - [`bundle`]: bundle files carried by hand when no link exists.
//! - [`audit`]: the offline verification of a bundle from the genesis hash.
//! - [`config`]: the configuration file.
//! - [`setup`]: key generation, member descriptors, genesis, local networks;
//!   [`owner_only`]: the directories and files only the node's user reads.
//! - [`view`]: how bulletins and status are shown (JSON and text);
//!   [`terminal`]: others' text made safe to print on a terminal.
//! - [`devnet`]: a local network of nodes in one process, for a first look.

pub mod api;
pub mod audit;
pub mod bundle;
pub mod chain_check;
pub mod config;
pub mod csaf;
pub mod devnet;
pub mod events;
mod inbound_limit;
mod indexer;
mod journal;
pub mod metrics;
pub mod network;
pub mod node;
pub mod owner_only;
mod peer_gate;
pub mod push;
pub mod setup;
pub mod store;
pub mod sync;
pub mod terminal;
#[cfg(test)]
mod test_network;
pub mod tree;
pub mod validate;
mod validators;
pub mod view;
pub mod watch;
mod web;
mod writer;

pub use events::{NodeEvent, Origin};
pub use network::GossipTiming;
pub use node::{Draft, KeyPast, Node, NodeSettings, PublishError, StartError};
pub use store::{Query, Store, StoreError, Stored};
