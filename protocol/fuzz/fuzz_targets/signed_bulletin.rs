//! Fuzz target: any bytes into the signed-bulletin and bulletin-body decoders
//! (gossip, sync pages, bundles). No panic; whatever is accepted re-encodes to
//! exactly the bytes given, and its id is the hash of its body bytes.
#![no_main]

use herald_protocol::{BulletinBody, BulletinId, SignedBulletin};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(signed) = SignedBulletin::from_bytes(data) {
        assert_eq!(signed.as_bytes(), data);
        assert_eq!(signed.to_bytes(), data);
        assert_eq!(signed.id(), BulletinId::of_body(signed.body_bytes()));
        assert_eq!(
            signed.body().to_bytes().ok().as_deref(),
            Some(signed.body_bytes())
        );
    }
    if let Ok(body) = BulletinBody::from_bytes(data) {
        assert_eq!(body.to_bytes().ok().as_deref(), Some(data));
    }
});
