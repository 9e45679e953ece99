//! The node's configuration file (`DIR/config.toml`): one serde struct with
//! defaults that work, and the commented template `herald init` writes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Name of the configuration file inside a node directory.
pub const CONFIG_FILE: &str = "config.toml";

/// Largest configuration file read, in bytes.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who runs this node and where it listens.
    pub node: NodeSection,
    /// The local API for `herald publish`, `list` and `show`.
    #[serde(default)]
    pub api: ApiSection,
    /// The member registry this node trusts.
    pub registry: RegistrySection,
    /// Key files.
    #[serde(default)]
    pub keys: KeysSection,
}

/// `[node]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// The member's name, for logs.
    pub member: String,
    /// Store directory, relative to the node directory.
    #[serde(default = "default_data")]
    pub data: PathBuf,
    /// libp2p listen addresses.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Other members' nodes to dial at start, `/ip4/.../tcp/.../p2p/<peer id>`.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Find members' nodes on the local network by mDNS.
    #[serde(default = "default_true")]
    pub mdns: bool,
    /// Incoming connections one address may hold in their handshake at once;
    /// 0 for no limit (behind a proxy that hides who dials).
    #[serde(default = "default_handshakes_per_address")]
    pub handshakes_per_address: usize,
}

/// `[api]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Address of the local HTTP API; keep it on loopback.
    #[serde(default = "default_api")]
    pub listen: SocketAddr,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: default_api(),
        }
    }
}

/// `[registry]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    /// The genesis registry file, relative to the node directory.
    #[serde(default = "default_genesis")]
    pub genesis_file: PathBuf,
    /// The hash of the genesis registry, in hex: the root of trust. Empty until
    /// the founders have produced the genesis.
    #[serde(default)]
    pub genesis_hash: String,
}

/// `[keys]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeysSection {
    /// The member key (registry approvals only; may be kept offline).
    #[serde(default = "default_member_key")]
    pub member: PathBuf,
    /// The bulletin signing key.
    #[serde(default = "default_signing_key")]
    pub signing: PathBuf,
    /// The node's libp2p identity key.
    #[serde(default = "default_node_key")]
    pub node: PathBuf,
}

impl Default for KeysSection {
    fn default() -> Self {
        Self {
            member: default_member_key(),
            signing: default_signing_key(),
            node: default_node_key(),
        }
    }
}

fn default_data() -> PathBuf {
    PathBuf::from("store")
}
fn default_listen() -> Vec<String> {
    vec![
        "/ip4/0.0.0.0/tcp/4001".into(),
        "/ip4/0.0.0.0/udp/4001/quic-v1".into(),
    ]
}
fn default_true() -> bool {
    true
}
fn default_handshakes_per_address() -> usize {
    crate::network::DEFAULT_HANDSHAKES_PER_ADDRESS
}
fn default_api() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7801))
}
fn default_genesis() -> PathBuf {
    PathBuf::from("genesis.bin")
}
fn default_member_key() -> PathBuf {
    PathBuf::from("keys/member.key")
}
fn default_signing_key() -> PathBuf {
    PathBuf::from("keys/signing.key")
}
fn default_node_key() -> PathBuf {
    PathBuf::from("keys/node.key")
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source} (run `herald init --dir DIR --member NAME` first?)")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is too large to be a configuration.
    #[error("{0} is larger than 1 MiB; it is not a Herald configuration file")]
    TooLarge(PathBuf),
    /// The file is not valid TOML for this structure.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's explanation, with line and column.
        message: String,
    },
}

impl Config {
    /// A configuration for a new node with the defaults.
    pub fn new(member: &str) -> Self {
        Self {
            node: NodeSection {
                member: member.to_string(),
                data: default_data(),
                listen: default_listen(),
                bootstrap: Vec::new(),
                mdns: true,
                handshakes_per_address: default_handshakes_per_address(),
            },
            api: ApiSection::default(),
            registry: RegistrySection {
                genesis_file: default_genesis(),
                genesis_hash: String::new(),
            },
            keys: KeysSection::default(),
        }
    }

    /// Reads `DIR/config.toml`.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        use std::io::Read;
        let path = dir.join(CONFIG_FILE);
        let read_err = |source| ConfigError::Read {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(&path).map_err(read_err)?;
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge(path));
        }
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path,
            message: e.to_string(),
        })
    }

    /// The configuration as a commented TOML file, every option explained.
    pub fn to_commented_toml(&self) -> String {
        let list = |v: &[String]| {
            let items: Vec<String> = v.iter().map(|s| toml_string(s)).collect();
            format!("[{}]", items.join(", "))
        };
        let path = |p: &Path| toml_string(&p.display().to_string());
        format!(
            r#"# Herald node configuration. Paths are relative to this file's directory.

[node]
# This member's name, as in the registry; used in logs.
member = {member}
# Where the store (sled) lives.
data = {data}
# libp2p listen addresses: TCP and QUIC. Use /ip4/127.0.0.1/... to stay local.
listen = {listen}
# Members' nodes to dial at start, each with its peer id:
#   "/ip4/192.0.2.10/tcp/4001/p2p/12D3KooW..." or "/dns4/herald.example.org/tcp/4001/p2p/12D3KooW..."
bootstrap = {bootstrap}
# Find members' nodes on the local network by mDNS (for when the wider network is down).
mdns = {mdns}
# Incoming connections one address (an IPv6 /56) may hold in their handshake at once, so that
# one host cannot take every place. 0 turns the limit off: do so only behind a proxy that hides
# who dials, where every connection comes from the proxy's address.
handshakes_per_address = {handshakes_per_address}

[api]
# The local HTTP API used by `herald publish`, `list` and `show`. Keep it on loopback:
# anyone who reaches it can publish in this member's name.
listen = "{api}"

[registry]
# The genesis registry file the founders produced, and its hash: the root of trust.
# The node refuses to start if the file does not hash to this value.
genesis_file = {genesis_file}
genesis_hash = {genesis_hash}

[keys]
# The member key approves registry changes; the node does not need it to run,
# so it may be moved offline.
member = {member_key}
# The key that signs this member's bulletins.
signing = {signing}
# The node's libp2p identity.
node = {node_key}
"#,
            member = toml_string(&self.node.member),
            data = path(&self.node.data),
            listen = list(&self.node.listen),
            bootstrap = list(&self.node.bootstrap),
            mdns = self.node.mdns,
            handshakes_per_address = self.node.handshakes_per_address,
            api = self.api.listen,
            genesis_file = path(&self.registry.genesis_file),
            genesis_hash = toml_string(&self.registry.genesis_hash),
            member_key = path(&self.keys.member),
            signing = path(&self.keys.signing),
            node_key = path(&self.keys.node),
        )
    }
}

/// `text` as a TOML string, quoted and escaped as TOML reads it back (Rust's
/// `{:?}` writes escapes such as `\u{301}` that TOML does not read).
pub fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_commented_template_parses_back_to_the_same_config() {
        // Names a registry takes whose Rust escapes TOML does not read (a
        // combining accent, a soft hyphen, a zero-width space), quotes, and a
        // C1 control and DEL (which TOML strings must escape).
        for name in [
            "CERT-A",
            "Jose\u{301}",
            "soft\u{ad}hyphen",
            "zero\u{200b}width",
            "quote \" and \\ backslash",
            "it's",
            "'''",
            "\u{9b}\u{7f}",
        ] {
            let mut config = Config::new(name);
            config.node.bootstrap = vec![
                "/ip4/127.0.0.1/tcp/4002/p2p/12D3KooWabc".into(),
                format!("/dns4/{name}/tcp/4001"),
            ];
            config.registry.genesis_hash = "ab".repeat(32);
            let text = config.to_commented_toml();
            let back: Config = toml::from_str(&text).unwrap_or_else(|e| panic!("{name:?}: {e}\n{text}"));
            assert_eq!(back, config, "{name:?}");
        }
    }

    #[test]
    fn unknown_fields_are_named() {
        let text = Config::new("A").to_commented_toml().replace("mdns =", "mdsn =");
        let err = toml::from_str::<Config>(&text).unwrap_err().to_string();
        assert!(err.contains("mdsn"), "{err}");
    }
}
