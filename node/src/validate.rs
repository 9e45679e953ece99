//! Validation of bulletins arriving from the network, cheap to dear: size,
//! decoding, already held, signer standing, signature. Pure decisions over the
//! registry and the store; the network runs them off its polling loop.

use herald_keys::Registry;
use herald_protocol::{MAX_BULLETIN_BYTES, MemberId, SignedBulletin};

use crate::store::Store;

/// The outcome for one message.
#[derive(Debug)]
pub enum Verdict {
    /// Valid and new: forward it and store it.
    Accept(Box<SignedBulletin>, MemberId),
    /// Already held: do not forward again, no penalty.
    Duplicate,
    /// Invalid: drop it and count it against the sender.
    Reject(String),
}

/// Decides what to do with `data`, received from the network.
pub fn validate_bulletin(data: &[u8], registry: &Registry, store: &Store) -> Verdict {
    if data.len() > MAX_BULLETIN_BYTES {
        return Verdict::Reject(format!(
            "{} bytes, over the {MAX_BULLETIN_BYTES}-byte limit",
            data.len()
        ));
    }
    let bulletin = match SignedBulletin::from_bytes(data) {
        Ok(b) => b,
        Err(e) => return Verdict::Reject(format!("undecodable: {e}")),
    };
    match store.contains(&bulletin.id()) {
        Ok(true) => return Verdict::Duplicate,
        Ok(false) => {}
        // A store that cannot answer must not make us forward unchecked data,
        // nor blame the sender: treat it as a duplicate and let sync retry.
        Err(e) => {
            tracing::error!(error = %e, "store lookup failed during validation");
            return Verdict::Duplicate;
        }
    }
    match registry.check_bulletin(&bulletin) {
        Ok(member) => Verdict::Accept(Box::new(bulletin), member),
        Err(reason) => Verdict::Reject(reason.to_string()),
    }
}
