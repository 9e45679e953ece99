//! Fuzz target: any bytes into the registry-update decoders (gossip, sync,
//! genesis files). No panic; whatever is accepted re-encodes to exactly the
//! bytes given, and its hash is the hash of its body bytes.
#![no_main]

use herald_protocol::{RegistryHash, RegistryUpdate, SignedRegistryUpdate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(signed) = SignedRegistryUpdate::from_bytes(data) {
        assert_eq!(signed.to_bytes(), data);
        assert_eq!(signed.hash(), RegistryHash::of_body(signed.body_bytes()));
        assert_eq!(
            signed.body().to_bytes().ok().as_deref(),
            Some(signed.body_bytes())
        );
    }
    if let Ok(update) = RegistryUpdate::from_bytes(data) {
        assert_eq!(update.to_bytes().ok().as_deref(), Some(data));
    }
});
