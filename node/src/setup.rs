//! Setting nodes up: a member's keys and configuration (`herald init`), the
//! public member descriptor founders exchange, the genesis registry they
//! propose and approve together, loading a node directory into
//! [`NodeSettings`], and whole local networks for testing.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use herald_keys::keyfile::{self, KdfParams, KeyFileError, KeyRole};
use herald_keys::{Registry, RegistryError, SecretKey};
use herald_protocol::{
    DecodeError, KeyId, MemberEntry, MemberId, NodeId, RegistryHash, RegistryOp, RegistryUpdate,
    RegistryVersion, SignedRegistryUpdate, Timestamp,
};
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::config::{CONFIG_FILE, Config, ConfigError};
use crate::network::{GossipTiming, peer_id_of};
use crate::node::{KeyPast, NodeSettings};

/// The public descriptor a member sends to the other founders.
pub const DESCRIPTOR_FILE: &str = "member.json";

/// Largest genesis or descriptor file read.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// A member's public half: what the registry needs to admit it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemberDescriptor {
    /// The member's name.
    pub name: String,
    /// Its member (governance) key.
    pub member_key: KeyId,
    /// Its bulletin signing keys.
    pub signing_keys: Vec<KeyId>,
    /// Its node ids.
    pub node_ids: Vec<NodeId>,
    /// Where its node may be reached, with `/p2p/<peer id>` (informational).
    #[serde(default)]
    pub addresses: Vec<String>,
}

impl MemberDescriptor {
    /// The registry entry for this member.
    pub fn entry(&self) -> MemberEntry {
        MemberEntry {
            id: MemberId::derive(&self.member_key),
            name: self.name.clone(),
            member_key: self.member_key,
            signing_keys: self.signing_keys.clone(),
            node_ids: self.node_ids.clone(),
        }
    }
}

/// Why setting up failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// File system trouble.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key file problem.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// A configuration problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The member name cannot enter a registry.
    #[error(
        "--member {name:?}: {reason}; choose another name (the one the other members will know this member by)"
    )]
    BadMemberName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Founders have not approved the genesis yet.
    #[error(
        "the genesis is not complete: still to approve it: {0} (each founder runs `herald genesis approve`)"
    )]
    GenesisIncomplete(String),
    /// The directory already holds a node.
    #[error("{0} already holds a Herald node (config.toml exists); choose another directory")]
    AlreadyInitialised(PathBuf),
    /// The directory holds a file `init` would write: left as it is.
    #[error(
        "{0} already exists (left from an earlier node here?); init writes only into a new node directory and removes nothing: move that file away, or choose another directory"
    )]
    WouldOverwrite(PathBuf),
    /// A descriptor or genesis file is malformed.
    #[error("{path}: {message}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The genesis does not verify.
    #[error("genesis: {0}")]
    Registry(#[from] RegistryError),
    /// The genesis cannot be encoded.
    #[error("genesis: {0}")]
    Encoding(#[from] DecodeError),
    /// The configuration has no genesis hash yet.
    #[error("{0}: genesis_hash is empty; install the genesis with `herald genesis install`")]
    NoGenesisHash(PathBuf),
    /// Randomness is unavailable.
    #[error("cannot generate a key: {0}")]
    Random(String),
    /// A local network's ports would run past the last port.
    #[error(
        "--base-port {base_port} with {nodes} members needs ports up to {needed}, past 65535: choose a base port of at most {highest_base}"
    )]
    PortRange {
        /// The base port given.
        base_port: u16,
        /// How many members.
        nodes: usize,
        /// The highest port the network would need.
        needed: usize,
        /// The highest base port that works for this many members.
        highest_base: u16,
    },
    /// A local network of too many members (or none).
    #[error(
        "a local network has 1 to {MAX_LOCAL_MEMBERS} members ({0} asked): its API ports are 100 above its libp2p ports"
    )]
    LocalNetworkSize(usize),
    /// A configured address does not parse.
    #[error("{config}: {what} {addr:?} is not a multiaddr: {reason}")]
    BadAddress {
        /// The config file.
        config: PathBuf,
        /// Which setting.
        what: &'static str,
        /// The value.
        addr: String,
        /// Why.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SetupError + '_ {
    move |source| SetupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a whole file of at most 4 MiB.
pub fn read_limited(path: &Path) -> Result<Vec<u8>, SetupError> {
    use std::io::Read;
    let file = fs::File::open(path).map_err(io_err(path))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(SetupError::BadFile {
            path: path.to_path_buf(),
            message: "larger than 4 MiB".into(),
        });
    }
    Ok(bytes)
}

/// Options for a new node directory.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The member's name.
    pub member: String,
    /// libp2p listen addresses.
    pub listen: Vec<String>,
    /// Local API address.
    pub api: SocketAddr,
    /// mDNS on or off.
    pub mdns: bool,
    /// Seal the member key with this passphrase.
    pub member_passphrase: Option<String>,
}

/// Creates a node directory: keys (member, signing, node), `config.toml` with
/// every option documented, and the public `member.json` descriptor. Nothing
/// is left behind if it fails: what it wrote is removed.
pub fn init_node_dir(dir: &Path, options: &InitOptions) -> Result<MemberDescriptor, SetupError> {
    if dir.join(CONFIG_FILE).exists() {
        return Err(SetupError::AlreadyInitialised(dir.to_path_buf()));
    }
    // Refused here, before anything is written, rather than by the founders'
    // genesis later.
    herald_protocol::check_member_name(&options.member).map_err(|e| SetupError::BadMemberName {
        name: options.member.clone(),
        reason: e,
    })?;
    let mut config = Config::new(&options.member);
    config.node.listen = options.listen.clone();
    config.node.mdns = options.mdns;
    config.api.listen = options.api;
    // The configuration must read back as it is before anything is written:
    // a directory with one that does not would be refused by every command,
    // and by `init` again.
    let config_text = config.to_commented_toml();
    match toml::from_str::<Config>(&config_text) {
        Ok(back) if back == config => {}
        Ok(_) => return Err(unreadable_config(dir, "it reads back as other settings".into())),
        Err(e) => return Err(unreadable_config(dir, e.to_string())),
    }
    // Every file it writes is new: what is there already (keys restored
    // before init is run again, say) is refused, not written over, and never
    // removed by the clean-up below.
    for file in [
        &config.keys.member,
        &config.keys.signing,
        &config.keys.node,
        Path::new(DESCRIPTOR_FILE),
    ] {
        let path = dir.join(file);
        if path.exists() {
            return Err(SetupError::WouldOverwrite(path));
        }
    }
    let mut written = Written::default();
    let made = write_node_dir(dir, &config, &config_text, options, &mut written)
        // What was written must be what every later command reads.
        .and_then(|descriptor| Config::load(dir).map(|_| descriptor).map_err(SetupError::from));
    if made.is_err() {
        written.remove();
    }
    made
}

/// The error of a configuration that would not read back.
fn unreadable_config(dir: &Path, reason: String) -> SetupError {
    SetupError::Config(ConfigError::Parse {
        path: dir.join(CONFIG_FILE),
        message: format!(
            "the configuration for these options would not read back ({reason}); nothing was written: choose another --member name, and report this"
        ),
    })
}

/// What `herald init` has created so far, to remove if it cannot finish.
#[derive(Default)]
struct Written {
    /// Directories it created, with all they hold, in the order created.
    dirs: Vec<PathBuf>,
    /// Files it wrote in directories that were there before.
    files: Vec<PathBuf>,
}

impl Written {
    /// Creates `dir` and its missing parents, its owner's only, noting the
    /// first one created.
    fn create_dir(&mut self, dir: &Path) -> Result<(), SetupError> {
        let first_missing = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .last()
            .map(Path::to_path_buf);
        crate::owner_only::create_dir_all(dir).map_err(io_err(dir))?;
        self.dirs.extend(first_missing);
        Ok(())
    }

    /// Notes `file`, written, unless a directory it created holds it.
    fn wrote(&mut self, file: PathBuf) {
        if !self.dirs.iter().any(|d| file.starts_with(d)) {
            self.files.push(file);
        }
    }

    /// Removes what was written (as far as it can: this is cleaning up
    /// after another error, which is the one reported).
    fn remove(self) {
        for file in &self.files {
            let _ = fs::remove_file(file);
        }
        for dir in self.dirs.iter().rev() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

fn write_node_dir(
    dir: &Path,
    config: &Config,
    config_text: &str,
    options: &InitOptions,
    written: &mut Written,
) -> Result<MemberDescriptor, SetupError> {
    // What the node holds is for its user alone (docs/SECURITY.md): a new
    // node directory, its keys and its store are its owner's only (0700).
    written.create_dir(dir)?;
    let keys_dir = dir.join("keys");
    written.create_dir(&keys_dir)?;
    set_owner_only_dir(&keys_dir)?;
    let generate = || SecretKey::generate().map_err(|e| SetupError::Random(e.to_string()));
    let member_key = generate()?;
    let signing_key = generate()?;
    let node_key = generate()?;
    let sealing = options
        .member_passphrase
        .as_deref()
        .map(|p| (p.as_bytes(), KdfParams::DEFAULT));
    let member_path = dir.join(&config.keys.member);
    written.wrote(member_path.clone());
    keyfile::write_key_file(&member_path, &member_key, KeyRole::Member, sealing)?;
    let signing_path = dir.join(&config.keys.signing);
    written.wrote(signing_path.clone());
    keyfile::write_key_file(&signing_path, &signing_key, KeyRole::Signing, None)?;
    let node_path = dir.join(&config.keys.node);
    written.wrote(node_path.clone());
    keyfile::write_key_file(&node_path, &node_key, KeyRole::Node, None)?;
    let store_dir = dir.join(&config.node.data);
    written.create_dir(&store_dir)?;
    written.wrote(crate::chain_check::unused_key_mark(&store_dir, &signing_key.id()));
    crate::chain_check::mark_key_unused(&store_dir, &signing_key.id()).map_err(io_err(&store_dir))?;
    let peer = peer_id_of(&node_key.public().node_id());
    let descriptor = MemberDescriptor {
        name: options.member.clone(),
        member_key: member_key.id(),
        signing_keys: vec![signing_key.id()],
        node_ids: vec![node_key.public().node_id()],
        addresses: match peer {
            Some(peer) => options.listen.iter().map(|a| format!("{a}/p2p/{peer}")).collect(),
            None => Vec::new(),
        },
    };
    written.wrote(dir.join(DESCRIPTOR_FILE));
    write_file(&dir.join(DESCRIPTOR_FILE), &descriptor_json(&descriptor))?;
    written.wrote(dir.join(CONFIG_FILE));
    write_file(&dir.join(CONFIG_FILE), config_text.as_bytes())?;
    Ok(descriptor)
}

fn descriptor_json(d: &MemberDescriptor) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(d).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

fn set_owner_only_dir(dir: &Path) -> Result<(), SetupError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))
}

/// Writes a file atomically (temporary file, flush, rename).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), SetupError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        use std::io::Write;
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// Reads a member descriptor.
pub fn read_descriptor(path: &Path) -> Result<MemberDescriptor, SetupError> {
    let bytes = read_limited(path)?;
    serde_json::from_slice(&bytes).map_err(|e| SetupError::BadFile {
        path: path.to_path_buf(),
        message: format!("not a member descriptor: {e}"),
    })
}

/// A genesis proposal admitting `members` with `threshold`, not yet approved.
pub fn propose_genesis(
    members: &[MemberDescriptor],
    threshold: u32,
    created: Timestamp,
) -> Result<SignedRegistryUpdate, SetupError> {
    let mut ops: Vec<RegistryOp> = members.iter().map(|m| RegistryOp::AddMember(m.entry())).collect();
    ops.push(RegistryOp::SetThreshold { threshold });
    // Refused now, not once every founder has approved it.
    Registry::check_genesis_ops(&ops)?;
    let body = RegistryUpdate {
        format: herald_protocol::registry::REGISTRY_FORMAT,
        version: RegistryVersion::GENESIS,
        prev: None,
        created,
        ops,
    };
    Ok(herald_keys::propose_update(&body)?)
}

/// Who must still approve `update` for the keys it adds (every key added
/// approves, proving possession): a member admitted, by name, whose keys have
/// not all approved, and each other key added that has not.
pub fn possession_waiting(update: &SignedRegistryUpdate) -> Vec<String> {
    let approved: std::collections::HashSet<[u8; 32]> =
        update.approvals().iter().map(|a| *a.key.as_bytes()).collect();
    let missing = |key: &[u8; 32]| !approved.contains(key);
    update
        .body()
        .ops
        .iter()
        .filter_map(|op| match op {
            RegistryOp::AddMember(m) => {
                let mut keys = std::iter::once(*m.member_key.as_bytes())
                    .chain(m.signing_keys.iter().map(|k| *k.as_bytes()))
                    .chain(m.node_ids.iter().map(|n| *n.as_bytes()));
                keys.any(|k| missing(&k)).then(|| m.name.clone())
            }
            RegistryOp::AddSigningKey { key, .. } => {
                missing(key.as_bytes()).then(|| format!("the new signing key {key}"))
            }
            RegistryOp::AddNode { node, .. } => {
                missing(node.as_bytes()).then(|| format!("the new node {node}"))
            }
            RegistryOp::RotateMemberKey { new_key, .. } => {
                missing(new_key.as_bytes()).then(|| format!("the new member key {new_key}"))
            }
            _ => None,
        })
        .collect()
}

/// Why `genesis` is not complete, saying who must still approve it if that
/// is what is missing.
pub fn genesis_incomplete(genesis: &SignedRegistryUpdate, file: &Path, error: &RegistryError) -> String {
    match possession_waiting(genesis)[..] {
        [] => error.to_string(),
        ref names => format!(
            "still to approve it: {} (each founder runs `herald genesis approve --dir THEIR_DIR {}`)",
            names.join(", "),
            file.display()
        ),
    }
}

/// Reads the genesis a node directory's configuration names.
pub fn read_installed_genesis(dir: &Path, config: &Config) -> Result<SignedRegistryUpdate, SetupError> {
    let path = dir.join(&config.registry.genesis_file);
    if !path.exists() {
        return Err(SetupError::BadFile {
            path,
            message: "the genesis file is missing; install the network's genesis with `herald genesis install --dir DIR FILE` (any member can send the file; its hash must be the genesis_hash in config.toml)".into(),
        });
    }
    read_update(&path)
}

/// Reads a (possibly partly approved) registry update file.
pub fn read_update(path: &Path) -> Result<SignedRegistryUpdate, SetupError> {
    let bytes = read_limited(path)?;
    SignedRegistryUpdate::from_bytes(&bytes).map_err(|e| SetupError::BadFile {
        path: path.to_path_buf(),
        message: format!("not a registry update: {e}"),
    })
}

/// Adds the approvals of every key in node directory `dir` that the update
/// admits or that governs (member key). Returns how many were added.
pub fn approve_with_dir(
    update: &mut SignedRegistryUpdate,
    dir: &Path,
    passphrase: Option<&str>,
) -> Result<usize, SetupError> {
    let config = Config::load(dir)?;
    let member = keyfile::read_key_file(
        &dir.join(&config.keys.member),
        KeyRole::Member,
        passphrase.map(str::as_bytes),
    )?;
    let signing = keyfile::read_key_file(&dir.join(&config.keys.signing), KeyRole::Signing, None)?;
    let node = keyfile::read_key_file(&dir.join(&config.keys.node), KeyRole::Node, None)?;
    let mut added = 0;
    for key in [&member, &signing, &node] {
        if update.approvals().iter().any(|a| a.key == key.id()) {
            continue;
        }
        let approval = herald_keys::approve(key, update);
        update.push_approval(approval)?;
        added += 1;
    }
    Ok(added)
}

/// Sets `genesis_hash` in `DIR/config.toml`, keeping the file's comments.
pub fn install_genesis(dir: &Path, genesis: &SignedRegistryUpdate) -> Result<RegistryHash, SetupError> {
    let hash = genesis.hash();
    let waiting = possession_waiting(genesis);
    if !waiting.is_empty() {
        return Err(SetupError::GenesisIncomplete(waiting.join(", ")));
    }
    Registry::from_genesis(genesis.clone(), hash)?;
    let config = Config::load(dir)?;
    write_file(&dir.join(&config.registry.genesis_file), &genesis.to_bytes())?;
    let path = dir.join(CONFIG_FILE);
    let text = String::from_utf8_lossy(&read_limited(&path)?).into_owned();
    let mut replaced = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("genesis_hash") {
                replaced = true;
                format!("genesis_hash = \"{hash}\"")
            } else {
                line.to_string()
            }
        })
        .collect();
    if !replaced {
        return Err(SetupError::BadFile {
            path,
            message: "no genesis_hash line in [registry]; add `genesis_hash = \"\"` there".into(),
        });
    }
    write_file(&path, (lines.join("\n") + "\n").as_bytes())?;
    // The edit must leave a configuration that still parses.
    Config::load(dir)?;
    Ok(hash)
}

/// Everything `herald run` needs from a node directory.
pub fn load_node_settings(dir: &Path) -> Result<(Config, NodeSettings), SetupError> {
    let config = Config::load(dir)?;
    let config_path = dir.join(CONFIG_FILE);
    if config.registry.genesis_hash.is_empty() {
        return Err(SetupError::NoGenesisHash(config_path));
    }
    let genesis_hash: RegistryHash =
        config
            .registry
            .genesis_hash
            .parse()
            .map_err(|e| SetupError::BadFile {
                path: config_path.clone(),
                message: format!("genesis_hash: {e}"),
            })?;
    let genesis = read_installed_genesis(dir, &config)?;
    let parse = |what: &'static str, list: &[String]| -> Result<Vec<Multiaddr>, SetupError> {
        list.iter()
            .map(|a| {
                a.parse()
                    .map_err(|e: libp2p::multiaddr::Error| SetupError::BadAddress {
                        config: config_path.clone(),
                        what,
                        addr: a.clone(),
                        reason: e.to_string(),
                    })
            })
            .collect()
    };
    let settings = NodeSettings {
        data_dir: dir.join(&config.node.data),
        genesis,
        genesis_hash,
        signing_key: keyfile::read_key_file(&dir.join(&config.keys.signing), KeyRole::Signing, None)?,
        node_key: keyfile::read_key_file(&dir.join(&config.keys.node), KeyRole::Node, None)?,
        listen: parse("listen address", &config.node.listen)?,
        bootstrap: parse("bootstrap address", &config.node.bootstrap)?,
        mdns: config.node.mdns,
        handshakes_per_address: config.node.handshakes_per_address,
        timing: GossipTiming::default(),
        key_past: KeyPast::Marked,
    };
    Ok((config, settings))
}

/// Most members of a local network: API ports are 100 above libp2p ports.
pub const MAX_LOCAL_MEMBERS: usize = 99;

/// The libp2p and API ports of each of `n` members of a local network from
/// `base_port`: `base_port + i` and `base_port + 100 + i`, all checked.
fn local_network_ports(n: usize, base_port: u16) -> Result<Vec<(u16, u16)>, SetupError> {
    if !(1..=MAX_LOCAL_MEMBERS).contains(&n) {
        return Err(SetupError::LocalNetworkSize(n));
    }
    let port = |offset: usize| u16::try_from(usize::from(base_port) + offset).ok();
    (1..=n)
        .map(|i| port(i).zip(port(100 + i)))
        .collect::<Option<Vec<_>>>()
        .ok_or(SetupError::PortRange {
            base_port,
            nodes: n,
            needed: usize::from(base_port) + 100 + n,
            highest_base: u16::try_from(usize::from(u16::MAX) - 100 - n).unwrap_or(0),
        })
}

/// A local network of `n` members on loopback: node directories
/// `base/member-1` ... `base/member-n`, one genesis approved by all, each node
/// bootstrapping to the ones before it. Ports: libp2p `base_port + i`, API
/// `base_port + 100 + i`.
pub fn create_local_network(base: &Path, n: usize, base_port: u16) -> Result<Vec<PathBuf>, SetupError> {
    // Every port is checked before anything is written.
    let ports = local_network_ports(n, base_port)?;
    let mut dirs = Vec::with_capacity(n);
    let mut descriptors = Vec::with_capacity(n);
    for (i, (port, api_port)) in (1..=n).zip(ports) {
        let dir = base.join(format!("member-{i}"));
        let options = InitOptions {
            member: format!("member-{i}"),
            listen: vec![format!("/ip4/127.0.0.1/tcp/{port}")],
            api: SocketAddr::from(([127, 0, 0, 1], api_port)),
            mdns: false,
            member_passphrase: None,
        };
        descriptors.push(init_node_dir(&dir, &options)?);
        dirs.push(dir);
    }
    let threshold = (n / 2 + 1) as u32;
    let mut genesis = propose_genesis(&descriptors, threshold, crate::node::now())?;
    for dir in &dirs {
        approve_with_dir(&mut genesis, dir, None)?;
    }
    for (i, dir) in dirs.iter().enumerate() {
        install_genesis(dir, &genesis)?;
        // Each node dials every node before it: a connected network.
        let bootstrap: Vec<String> = descriptors[..i]
            .iter()
            .flat_map(|d| d.addresses.clone())
            .collect();
        if !bootstrap.is_empty() {
            let path = dir.join(CONFIG_FILE);
            let text = String::from_utf8_lossy(&read_limited(&path)?).into_owned();
            let list: Vec<String> = bootstrap.iter().map(|a| crate::config::toml_string(a)).collect();
            let text = text.replace("bootstrap = []", &format!("bootstrap = [{}]", list.join(", ")));
            write_file(&path, text.as_bytes())?;
            Config::load(dir)?;
        }
    }
    Ok(dirs)
}
