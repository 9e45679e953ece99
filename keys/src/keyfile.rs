//! Key files: a small versioned binary format holding one secret key, written
//! atomically with owner-only permissions, optionally sealed with a passphrase
//! (Argon2id + XChaCha20-Poly1305), and closed by a checksum so that damage and
//! a wrong passphrase are told apart.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! magic      8   "HRLDKEY\0"
//! version    2   1
//! role       1   0 member, 1 signing, 2 node
//! public    32   the Ed25519 public key
//! sealing    1   0 none, 1 argon2id-xchacha20poly1305
//!   none:    seed 32
//!   sealed:  m_cost_kib 4, t_cost 4, p_cost 4, salt 16, nonce 24, sealed seed 48
//! checksum  32   SHA-256 of everything above
//! ```
//! The sealed seed's associated data is everything from `magic` to `nonce`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::key::SecretKey;

const MAGIC: &[u8; 8] = b"HRLDKEY\0";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 8 + 2 + 1 + 32 + 1;
const PLAIN_LEN: usize = HEADER_LEN + 32 + 32;
const SEALED_LEN: usize = HEADER_LEN + 12 + 16 + 24 + 48 + 32;
/// Files longer than this are not key files and are not read further.
const MAX_FILE_LEN: u64 = 4096;

/// What a key is for. A key file records it so that keys are not mixed up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRole {
    /// The member's governance key.
    Member,
    /// A bulletin signing key.
    Signing,
    /// A node's libp2p identity key.
    Node,
}

impl KeyRole {
    fn to_byte(self) -> u8 {
        match self {
            KeyRole::Member => 0,
            KeyRole::Signing => 1,
            KeyRole::Node => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(KeyRole::Member),
            1 => Some(KeyRole::Signing),
            2 => Some(KeyRole::Node),
            _ => None,
        }
    }
}

/// Argon2id cost parameters for sealing a key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// 64 MiB, 3 passes, 1 lane: the OWASP-recommended floor for Argon2id, and
    /// under a second on a small server.
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };

    /// Cheap parameters for tests only.
    pub const INSECURE_FOR_TESTS: KdfParams = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    fn within_reading_bounds(&self) -> bool {
        // A hostile file must not make us allocate gigabytes or spin for hours.
        (8..=4 * 1024 * 1024).contains(&self.m_cost_kib)
            && (1..=16).contains(&self.t_cost)
            && (1..=16).contains(&self.p_cost)
    }
}

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file system said no.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Refusing to overwrite a key.
    #[error("{0}: a file is already there; refusing to overwrite a key (move it away first)")]
    AlreadyExists(PathBuf),
    /// The file does not start like a Herald key file.
    #[error("{0}: not a Herald key file")]
    NotAKeyFile(PathBuf),
    /// Written by a newer Herald.
    #[error("{path}: key file version {version} is not supported; upgrade Herald")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        version: u16,
    },
    /// The checksum or the structure does not match: the file was damaged.
    #[error("{0}: the key file is damaged ({1}); restore it from a backup")]
    Damaged(PathBuf, &'static str),
    /// The key in the file has another role than the one asked for.
    #[error("{path}: this is a {found:?} key, not a {expected:?} key; check the file name")]
    WrongRole {
        /// The file.
        path: PathBuf,
        /// The role asked for.
        expected: KeyRole,
        /// The role in the file.
        found: KeyRole,
    },
    /// The file is sealed and no passphrase was given.
    #[error(
        "{0}: the key file is protected by a passphrase; put it in an environment variable and name that variable with --passphrase-env (for example HERALD_MEMBER_PASSPHRASE)"
    )]
    PassphraseRequired(PathBuf),
    /// The passphrase does not open the file.
    #[error("{0}: wrong passphrase")]
    WrongPassphrase(PathBuf),
    /// Others can read the file.
    #[error("{path}: permissions {mode:o} let others read this secret key; run `chmod 600 {path}`")]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// Key derivation or sealing failed (bad parameters, randomness unavailable).
    #[error("cannot seal or open the key: {0}")]
    Crypto(String),
}

/// Writes `key` to a new file at `path`, readable by the owner only, sealed with
/// `passphrase` if one is given. Never overwrites an existing file.
pub fn write_key_file(
    path: &Path,
    key: &SecretKey,
    role: KeyRole,
    passphrase: Option<(&[u8], KdfParams)>,
) -> Result<(), KeyFileError> {
    if path.exists() {
        return Err(KeyFileError::AlreadyExists(path.to_path_buf()));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(SEALED_LEN));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(role.to_byte());
    out.extend_from_slice(&key.public().to_bytes());
    let seed = key.to_seed();
    match passphrase {
        None => {
            out.push(0);
            out.extend_from_slice(seed.as_ref());
        }
        Some((pass, params)) => {
            out.push(1);
            out.extend_from_slice(&params.m_cost_kib.to_le_bytes());
            out.extend_from_slice(&params.t_cost.to_le_bytes());
            out.extend_from_slice(&params.p_cost.to_le_bytes());
            let mut salt = [0u8; 16];
            let mut nonce = [0u8; 24];
            getrandom::fill(&mut salt).map_err(|e| KeyFileError::Crypto(e.to_string()))?;
            getrandom::fill(&mut nonce).map_err(|e| KeyFileError::Crypto(e.to_string()))?;
            out.extend_from_slice(&salt);
            out.extend_from_slice(&nonce);
            let cipher = cipher_for(pass, &salt, params)?;
            let sealed = cipher
                .encrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: seed.as_ref(),
                        aad: &out,
                    },
                )
                .map_err(|_| KeyFileError::Crypto("sealing failed".into()))?;
            out.extend_from_slice(&sealed);
        }
    }
    let checksum = Sha256::digest(&out[..]);
    out.extend_from_slice(&checksum);
    write_atomically(path, &out)
}

/// Reads the key of `role` from the file at `path`, opening it with
/// `passphrase` if it is sealed.
pub fn read_key_file(
    path: &Path,
    role: KeyRole,
    passphrase: Option<&[u8]>,
) -> Result<SecretKey, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mode = file.metadata().map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_path_buf(),
            mode: mode & 0o777,
        });
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_FILE_LEN + 1).read_to_end(&mut bytes).map_err(io)?;
    parse_key_file(path, &bytes, role, passphrase)
}

/// The public key a key file holds, read without its passphrase.
pub fn read_public_key(path: &Path) -> Result<(KeyRole, crate::PublicKey), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_FILE_LEN + 1).read_to_end(&mut bytes).map_err(io)?;
    let (role, public, _) = parse_header(path, &bytes)?;
    Ok((role, public))
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<(KeyRole, crate::PublicKey, u8), KeyFileError> {
    let damaged = |why| KeyFileError::Damaged(path.to_path_buf(), why);
    if bytes.len() < 10 || &bytes[..8] != MAGIC {
        return Err(KeyFileError::NotAKeyFile(path.to_path_buf()));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(KeyFileError::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
        });
    }
    if bytes.len() != PLAIN_LEN && bytes.len() != SEALED_LEN {
        return Err(damaged("wrong length"));
    }
    let (content, checksum) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(content).as_slice() != checksum {
        return Err(damaged("checksum mismatch"));
    }
    let role = KeyRole::from_byte(bytes[10]).ok_or(damaged("unknown role"))?;
    let mut public = [0u8; 32];
    public.copy_from_slice(&bytes[11..43]);
    let public = crate::PublicKey::from_bytes(&public).map_err(|_| damaged("invalid public key"))?;
    let sealing = bytes[43];
    let expected_len = match sealing {
        0 => PLAIN_LEN,
        1 => SEALED_LEN,
        _ => return Err(damaged("unknown sealing")),
    };
    if bytes.len() != expected_len {
        return Err(damaged("wrong length"));
    }
    Ok((role, public, sealing))
}

fn parse_key_file(
    path: &Path,
    bytes: &[u8],
    role: KeyRole,
    passphrase: Option<&[u8]>,
) -> Result<SecretKey, KeyFileError> {
    let damaged = |why| KeyFileError::Damaged(path.to_path_buf(), why);
    let (found, public, sealing) = parse_header(path, bytes)?;
    if found != role {
        return Err(KeyFileError::WrongRole {
            path: path.to_path_buf(),
            expected: role,
            found,
        });
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    if sealing == 0 {
        seed.copy_from_slice(&bytes[HEADER_LEN..HEADER_LEN + 32]);
    } else {
        let pass = passphrase.ok_or_else(|| KeyFileError::PassphraseRequired(path.to_path_buf()))?;
        let u32_at = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let params = KdfParams {
            m_cost_kib: u32_at(HEADER_LEN),
            t_cost: u32_at(HEADER_LEN + 4),
            p_cost: u32_at(HEADER_LEN + 8),
        };
        if !params.within_reading_bounds() {
            return Err(damaged("key derivation parameters out of bounds"));
        }
        let salt = &bytes[HEADER_LEN + 12..HEADER_LEN + 28];
        let nonce_end = HEADER_LEN + 52;
        let nonce = &bytes[HEADER_LEN + 28..nonce_end];
        let sealed = &bytes[nonce_end..nonce_end + 48];
        let cipher = cipher_for(pass, salt, params)?;
        let opened = Zeroizing::new(
            cipher
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: &bytes[..nonce_end],
                    },
                )
                .map_err(|_| KeyFileError::WrongPassphrase(path.to_path_buf()))?,
        );
        seed.copy_from_slice(&opened);
    }
    let key = SecretKey::from_seed(&seed);
    if key.public() != public {
        return Err(damaged("secret and public key do not match"));
    }
    Ok(key)
}

fn cipher_for(pass: &[u8], salt: &[u8], params: KdfParams) -> Result<XChaCha20Poly1305, KeyFileError> {
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(32))
            .map_err(|e| KeyFileError::Crypto(e.to_string()))?,
    );
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(pass, salt, key.as_mut())
        .map_err(|e| KeyFileError::Crypto(e.to_string()))?;
    XChaCha20Poly1305::new_from_slice(key.as_ref()).map_err(|e| KeyFileError::Crypto(e.to_string()))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder,
/// owner-only, flushed to disk, renamed into place, and the folder flushed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn plain_round_trip_and_owner_only() {
        let d = dir();
        let path = d.path().join("signing.key");
        let key = SecretKey::from_seed(&[3u8; 32]);
        write_key_file(&path, &key, KeyRole::Signing, None).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = read_key_file(&path, KeyRole::Signing, None).unwrap();
        assert_eq!(back.public(), key.public());
        assert_eq!(read_public_key(&path).unwrap(), (KeyRole::Signing, key.public()));
    }

    #[test]
    fn never_overwrites() {
        let d = dir();
        let path = d.path().join("k");
        let key = SecretKey::from_seed(&[3u8; 32]);
        write_key_file(&path, &key, KeyRole::Node, None).unwrap();
        assert!(matches!(
            write_key_file(&path, &key, KeyRole::Node, None),
            Err(KeyFileError::AlreadyExists(_))
        ));
    }

    #[test]
    fn sealed_round_trip_wrong_and_missing_passphrase() {
        let d = dir();
        let path = d.path().join("member.key");
        let key = SecretKey::from_seed(&[9u8; 32]);
        write_key_file(
            &path,
            &key,
            KeyRole::Member,
            Some((b"correct horse", KdfParams::INSECURE_FOR_TESTS)),
        )
        .unwrap();
        let back = read_key_file(&path, KeyRole::Member, Some(b"correct horse")).unwrap();
        assert_eq!(back.public(), key.public());
        assert!(matches!(
            read_key_file(&path, KeyRole::Member, Some(b"wrong")),
            Err(KeyFileError::WrongPassphrase(_))
        ));
        assert!(matches!(
            read_key_file(&path, KeyRole::Member, None),
            Err(KeyFileError::PassphraseRequired(_))
        ));
        // The file never contains the seed in the clear.
        let raw = fs::read(&path).unwrap();
        assert!(!raw.windows(32).any(|w| w == [9u8; 32]));
    }

    #[test]
    fn wrong_role_is_named() {
        let d = dir();
        let path = d.path().join("node.key");
        write_key_file(&path, &SecretKey::from_seed(&[1u8; 32]), KeyRole::Node, None).unwrap();
        assert!(matches!(
            read_key_file(&path, KeyRole::Signing, None),
            Err(KeyFileError::WrongRole { .. })
        ));
    }

    #[test]
    fn every_single_byte_corruption_is_caught() {
        let d = dir();
        for (name, pass) in [("plain", None), ("sealed", Some(&b"pw"[..]))] {
            let path = d.path().join(name);
            let key = SecretKey::from_seed(&[5u8; 32]);
            write_key_file(
                &path,
                &key,
                KeyRole::Signing,
                pass.map(|p| (p, KdfParams::INSECURE_FOR_TESTS)),
            )
            .unwrap();
            let good = fs::read(&path).unwrap();
            for i in 0..good.len() {
                let mut bad = good.clone();
                bad[i] ^= 0x01;
                let result = parse_key_file(&path, &bad, KeyRole::Signing, pass);
                assert!(result.is_err(), "{name}: flipping byte {i} went unnoticed");
            }
            // Truncated and extended files too.
            assert!(parse_key_file(&path, &good[..good.len() - 1], KeyRole::Signing, pass).is_err());
            let mut longer = good.clone();
            longer.push(0);
            assert!(parse_key_file(&path, &longer, KeyRole::Signing, pass).is_err());
        }
    }

    #[test]
    fn group_readable_files_are_refused() {
        let d = dir();
        let path = d.path().join("k");
        write_key_file(&path, &SecretKey::from_seed(&[2u8; 32]), KeyRole::Signing, None).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_key_file(&path, KeyRole::Signing, None),
            Err(KeyFileError::TooOpen { .. })
        ));
    }
}
