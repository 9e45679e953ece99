//! Fuzz target: any bytes into the catch-up protocol's request decoder (what
//! any connected peer may ask). No panic; whatever is accepted is within its
//! limits and re-encodes to exactly the bytes given.
#![no_main]

use herald_protocol::sync::SyncRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = SyncRequest::from_bytes(data) {
        assert_eq!(request.to_bytes(), data);
    }
});
