//! Fuzz target: any bytes into the catch-up protocol's response decoder (what
//! any connected peer may answer). No panic; whatever is accepted is within its
//! limits and re-encodes to exactly the bytes given.
#![no_main]

use herald_protocol::sync::SyncResponse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = SyncResponse::from_bytes(data) {
        assert_eq!(response.to_bytes(), data);
    }
});
