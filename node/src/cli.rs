//! Every command-line type of `herald`, in one place.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Herald: signed security bulletins between trusted members, with no central server.
#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Herald: signed security bulletins between trusted members, with no central server."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a local network of nodes on 127.0.0.1 with a stream of sample
    /// bulletins, showing each bulletin reaching each node. Start here.
    Devnet(DevnetArgs),
    /// Create a node directory: keys, config.toml and the public member.json.
    Init(InitArgs),
    /// Produce the genesis registry with the other founders.
    #[command(subcommand)]
    Genesis(GenesisCommand),
    /// Create a whole local test network in one step (directories, keys, genesis).
    Testnet(TestnetArgs),
    /// Run the node in DIR until Ctrl-C (SIGINT) or SIGTERM.
    Run(DirArgs),
    /// Publish a bulletin through the running node; prints its id.
    Publish(Box<PublishArgs>),
    /// List bulletins held by the node, newest first.
    List(ListArgs),
    /// Show one bulletin.
    ///
    /// Control characters and bidirectional controls in what its author wrote
    /// are shown as \u{..} escapes, so that they cannot act on the terminal;
    /// the content is written exact to a file (`> FILE`), and in --json.
    Show(ShowArgs),
    /// Print each new bulletin as the running node takes it in, until
    /// Ctrl-C (after those created in the last --since, if given).
    Watch(WatchArgs),
    /// Show the running node's status: peers, pending gossip, last sync.
    Status(StatusArgs),
    /// Show or change the member registry (changes need the members' approvals).
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Write a bundle file of bulletins with the registry that verifies them.
    Export(ExportArgs),
    /// Verify and import a bundle file.
    Import(ImportArgs),
    /// Audit a bundle offline: verify its registry from the genesis hash and
    /// every bulletin in it, check its chains, and report who signed what.
    Audit(AuditArgs),
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// The bundle file.
    pub(crate) file: PathBuf,
    /// The network's genesis hash (64 hex digits; `genesis_hash` in a member's
    /// config.toml): the only thing the audit trusts.
    #[arg(long)]
    pub(crate) genesis_hash: String,
    /// The hash of the latest registry version you know the network reached
    /// (`herald registry show` on a member's node prints it): the bundle's
    /// registry history must include it, or it may leave out later updates
    /// such as revocations.
    #[arg(long)]
    pub(crate) registry_hash: Option<String>,
    /// Write each verified bulletin's provenance to this file, one JSON object
    /// per line (`-`: standard output).
    #[arg(long)]
    pub(crate) provenance: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The node directory.
    #[arg(long, default_value = ".")]
    pub(crate) dir: PathBuf,
    /// Only bulletins created in this last period (e.g. 24h, 7d).
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Only bulletins that came to this node in this last period (e.g. 24h),
    /// whenever made: what it took in since the last bundle carried out.
    #[arg(long)]
    pub(crate) arrived_since: Option<String>,
    /// Only this kind.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(herald_protocol::Kind::NAMES))]
    pub(crate) kind: Option<String>,
    /// Only this member (its name, or its member id).
    #[arg(long)]
    pub(crate) member: Option<String>,
    /// The bundle file to write.
    #[arg(long, short)]
    pub(crate) out: PathBuf,
    /// Replace the bundle file if it exists.
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The node directory.
    #[arg(long, default_value = ".")]
    pub(crate) dir: PathBuf,
    /// The bundle file.
    pub(crate) file: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct DirArgs {
    /// The node directory.
    #[arg(long, default_value = ".")]
    pub(crate) dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The node directory.
    #[arg(long, default_value = ".")]
    pub(crate) dir: PathBuf,
    /// Print JSON (the API's `/v1/status`) instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DevnetArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..=64))]
    pub(crate) nodes: u16,
    /// Milliseconds between sample bulletins.
    #[arg(long, default_value_t = 1500)]
    pub(crate) interval_ms: u64,
    /// Stop after this many bulletins have reached every node (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub(crate) count: u64,
    /// Port on 127.0.0.1 of the first member's local API and web page (0: any
    /// free port; the address is printed).
    #[arg(long, default_value_t = 0)]
    pub(crate) api_port: u16,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The node directory to create.
    #[arg(long)]
    pub(crate) dir: PathBuf,
    /// The member's name, e.g. CERT-EU.
    #[arg(long)]
    pub(crate) member: String,
    /// libp2p listen addresses.
    #[arg(long, default_values_t = ["/ip4/0.0.0.0/tcp/4001".to_string(), "/ip4/0.0.0.0/udp/4001/quic-v1".to_string()])]
    pub(crate) listen: Vec<String>,
    /// Local API address.
    #[arg(long, default_value = "127.0.0.1:7801")]
    pub(crate) api: SocketAddr,
    /// Seal the member key with the passphrase in this environment variable.
    #[arg(long)]
    pub(crate) passphrase_env: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum GenesisCommand {
    /// Propose a genesis from the founders' member.json files.
    Propose {
        /// Distinct members needed to approve later changes (more than half).
        #[arg(long)]
        threshold: u32,
        /// Where to write the proposal.
        #[arg(long, short)]
        out: PathBuf,
        /// The founders' member.json files.
        #[arg(required = true)]
        members: Vec<PathBuf>,
    },
    /// Add this node directory's approvals (member, signing and node keys) to a proposal.
    Approve {
        /// The node directory holding the keys.
        #[arg(long)]
        dir: PathBuf,
        /// The proposal file; rewritten with the approvals added.
        file: PathBuf,
        /// The member key's passphrase is in this environment variable.
        #[arg(long)]
        passphrase_env: Option<String>,
    },
    /// Check that a genesis is complete and print its hash.
    Verify {
        /// The genesis file.
        file: PathBuf,
    },
    /// Install a complete genesis into a node directory (file and hash in config.toml).
    Install {
        /// The node directory.
        #[arg(long)]
        dir: PathBuf,
        /// The genesis file.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub(crate) struct TestnetArgs {
    /// Where to create member-1 ... member-N.
    #[arg(long)]
    pub(crate) dir: PathBuf,
    /// How many members.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) nodes: u16,
    /// libp2p ports are BASE+i, API ports BASE+100+i.
    #[arg(long, default_value_t = 4000)]
    pub(crate) base_port: u16,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum KindArg {
    Advisory,
    Update,
    Incident,
    Metrics,
    Emergency,
    Product,
    Outreach,
    FollowUp,
    Withdrawal,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum SeverityArg {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum TlpArg {
    Clear,
    Green,
    Amber,
    #[value(name = "amber+strict")]
    AmberStrict,
    Red,
}

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The node directory (for the API address).
    #[arg(long, default_value = ".")]
    pub(crate) dir: PathBuf,
    /// What kind of bulletin (for a CSAF document: advisory unless given).
    #[arg(long, value_enum)]
    pub(crate) kind: Option<KindArg>,
    /// One-line title (for a CSAF document: its title unless given).
    #[arg(long)]
    pub(crate) title: Option<String>,
    /// Severity (for a CSAF document: from its highest CVSS score, or its
    /// aggregate severity, unless given).
    #[arg(long, value_enum)]
    pub(crate) severity: Option<SeverityArg>,
    /// Traffic Light Protocol label (for a CSAF document: its own label unless
    /// given; a label less strict than the document's is refused).
    #[arg(long, value_enum)]
    pub(crate) tlp: Option<TlpArg>,
    /// The content, from a file (a CSAF JSON file is carried byte for byte,
    /// and its CVE ids are added to the references).
    #[arg(long, conflicts_with = "body")]
    pub(crate) body_file: Option<PathBuf>,
    /// The content, inline.
    #[arg(long)]
    pub(crate) body: Option<String>,
    /// Media type of the content (default: from the file name, else text/markdown).
    #[arg(long)]
    pub(crate) content_type: Option<String>,
    /// Advisory status: under-investigation, confirmed, mitigated, fixed, not-affected.
    #[arg(long, default_value = "under-investigation")]
    pub(crate) status: String,
    /// Update stage: upcoming or released.
    #[arg(long, default_value = "released")]
    pub(crate) stage: String,
    /// Incident phase: detected, ongoing, contained, resolved.
    #[arg(long, default_value = "ongoing")]
    pub(crate) phase: String,
    /// Follow-up: the bulletin answered.
    #[arg(long)]
    pub(crate) on: Option<String>,
    /// Follow-up action: acknowledge, update, request-information, answer, close.
    #[arg(long, default_value = "acknowledge")]
    pub(crate) action: String,
    /// Withdrawal: the bulletin withdrawn.
    #[arg(long)]
    pub(crate) of: Option<String>,
    /// Withdrawal: why.
    #[arg(long)]
    pub(crate) reason: Option<String>,
    /// Metrics: a counter, NAME=VALUE (repeatable).
    #[arg(long = "metric")]
    pub(crate) metrics: Vec<String>,
    /// Metrics: the period's length, ending now (e.g. 24h, 7d).
    #[arg(long, default_value = "24h")]
    pub(crate) period: String,
    /// A CVE id (repeatable).
    #[arg(long = "cve")]
    pub(crate) cves: Vec<String>,
    /// A URL (repeatable).
    #[arg(long = "url")]
    pub(crate) urls: Vec<String>,
    /// Another bulletin's id (repeatable).
    #[arg(long = "ref")]
    pub(crate) refs: Vec<String>,
    /// An earlier bulletin of this member that this one replaces.
    #[arg(long)]
    pub(crate) supersedes: Option<String>,
    /// Expires after this long (e.g. 30d, 12h).
    #[arg(long)]
    pub(crate) expires_in: Option<String>,
    /// A member the bulletin is meant for, by name or member id (repeatable;
    /// default: all members).
    #[arg(long = "audience")]
    pub(crate) audience: Vec<String>,
    /// The store already holds the signing key's whole chain (restored from a
    /// bundle, say), or the key has never published: number on from what the
    /// store holds without checking with the peers first (only needed while
    /// the node has not checked its chain and no peer answers).
    #[arg(long)]
    pub(crate) new_chain: bool,
}

/// The filters `list` and `watch` share.
#[derive(Debug, Args)]
pub(crate) struct FilterArgs {
    /// Only this kind.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(herald_protocol::Kind::NAMES))]
    pub(crate) kind: Option<String>,
    /// Only this member (its name, or its member id).
    #[arg(long)]
    pub(crate) member: Option<String>,
    /// Only this TLP label.
    #[arg(long, value_enum)]
    pub(crate) tlp: Option<TlpArg>,
    /// Only this severity or higher.
    #[arg(long, value_enum)]
    pub(crate) min_severity: Option<SeverityArg>,
    /// Only bulletins whose title, references (CVE ids, URLs), withdrawal
    /// reason or text content contain this, letter case aside; `list` looks
    /// among the newest 100,000 the other filters let through (narrow with
    /// --since).
    #[arg(long)]
    pub(crate) text: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// The node directory.
    #[arg(long, default_value = ".")]
    pub(crate) dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) filters: FilterArgs,
    /// Only bulletins created in this last period (e.g. 24h, 7d).
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Only bulletins that came to this node in this last period (e.g. 24h),
    /// whenever they were made: those of a member back from a partition
    /// too. Lists the latest arrivals first.
    #[arg(long)]
    pub(crate) arrived_since: Option<String>,
    /// At most this many (from 1 to 10,000; `export` writes them all).
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: usize,
}

#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// The node directory.
    #[arg(long, default_value = ".")]
    pub(crate) dir: PathBuf,
    /// Print one JSON object per line.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) filters: FilterArgs,
    /// First print all those created in this last period (e.g. 24h, 7d),
    /// oldest first.
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// First print all that came to the node in this last period (e.g. 1h),
    /// whenever made, oldest arrival first: to miss nothing across a restart
    /// of the watch.
    #[arg(long, conflicts_with = "since")]
    pub(crate) arrived_since: Option<String>,
    /// When the node stops (or is not running yet), wait for it to run and
    /// carry on where this watch was: what came meanwhile is printed first,
    /// each bulletin once.
    #[arg(long)]
    pub(crate) reconnect: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The node directory.
    #[arg(long, default_value = ".")]
    pub(crate) dir: PathBuf,
    /// The bulletin id (hex).
    pub(crate) id: String,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RegistryCommand {
    /// Show the members, their keys and nodes, the threshold and the version.
    Show {
        /// The node directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Propose the next registry version; the file then goes round for approvals.
    Propose(Box<ProposeArgs>),
    /// Add this member's approval to a proposal (its member key, and proof of
    /// possession for the keys in the node directory or given with --key).
    Approve {
        /// The node directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The proposal file; rewritten with the approvals added.
        file: PathBuf,
        /// Another key file to prove possession of (a key the update adds).
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
        /// The member key's passphrase is in this environment variable.
        #[arg(long)]
        passphrase_env: Option<String>,
    },
    /// Apply an approved update at this node; it spreads to the others by gossip and sync.
    Submit {
        /// The node directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The approved update file.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ProposeArgs {
    /// The node directory (to read the current registry).
    #[arg(long, default_value = ".")]
    pub(crate) dir: PathBuf,
    /// Where to write the proposal.
    #[arg(long, short)]
    pub(crate) out: PathBuf,
    /// Admit the member described by this member.json (threshold).
    #[arg(long = "add-member")]
    pub(crate) add_members: Vec<PathBuf>,
    /// Remove this member (member id) from now on (threshold).
    #[arg(long = "remove-member")]
    pub(crate) remove_members: Vec<String>,
    /// Set the threshold (threshold).
    #[arg(long)]
    pub(crate) threshold: Option<u32>,
    /// Revoke this signing key (key id) ...
    #[arg(long = "revoke-signing-key", requires = "from_seq")]
    pub(crate) revoke: Option<String>,
    /// ... from this sequence number on: what it signed before stays valid.
    #[arg(long)]
    pub(crate) from_seq: Option<u64>,
    /// Generate a new signing key for this member into this file and add it.
    #[arg(long)]
    pub(crate) new_signing_key: Option<PathBuf>,
    /// Remove this node id from its member.
    #[arg(long = "remove-node")]
    pub(crate) remove_nodes: Vec<String>,
}
