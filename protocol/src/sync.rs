//! The catch-up protocol's messages and the pure decisions around them.
//!
//! Two nodes compare per-key chain summaries and each pulls what it lacks, in
//! bounded pages. A round starts with [`SyncRequest::Hello`] carrying one
//! digest of everything the asker holds; a peer in step answers
//! [`SyncResponse::InStep`] (one small round trip). Otherwise the peer answers
//! with its [`ChainSummary`]s, the asker computes exactly which numbers it lacks
//! ([`plan_wants`]), fetches registry updates first if it is behind, then pulls
//! the missing bulletins page by page.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use sha2::{Digest, Sha256};

use crate::codec::{self, DecodeError};
use crate::ids::{KeyId, RegistryHash, RegistryVersion, Seq};

/// Largest sync request, in bytes.
pub const MAX_SYNC_REQUEST_BYTES: usize = 512 * 1024;
/// Largest sync response, in bytes: one page of bulletins and its framing.
pub const MAX_SYNC_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Payload bytes a server puts in one page (below the response limit).
pub const PAGE_BUDGET_BYTES: usize = 4 * 1024 * 1024;
/// Most bulletins in one page.
pub const MAX_PAGE_BULLETINS: usize = 4096;
/// Most chains summarised in one answer.
pub const MAX_CHAINS: usize = 4096;
/// Most registry updates in one answer.
pub const MAX_REGISTRY_UPDATES: usize = 64;
/// Most ranges asked for in one request.
pub const MAX_RANGES: usize = 16 * 1024;

/// Bytes of decoding slack for in-memory list sizes (see the codec).
const CLAIM_SLACK: usize = 1024 * 1024;

/// What a node holds of one signing key's chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct ChainSummary {
    /// The key.
    pub key: KeyId,
    /// Every number from 1 to this one is held.
    pub contiguous: Seq,
    /// The highest number held.
    pub highest: Seq,
    /// How many numbers are held.
    pub count: u64,
    /// XOR of SHA-256(key || seq) over the numbers held: equal sets give equal
    /// fingerprints whatever the order they arrived in.
    pub fingerprint: [u8; 32],
    /// How many extra bodies (equivocation evidence) are held for the key.
    pub evidence: u32,
}

impl ChainSummary {
    /// An empty chain.
    pub fn empty(key: KeyId) -> Self {
        Self {
            key,
            contiguous: Seq(0),
            highest: Seq(0),
            count: 0,
            fingerprint: [0; 32],
            evidence: 0,
        }
    }

    /// Whether the two summaries describe the same held set.
    pub fn same_set(&self, other: &ChainSummary) -> bool {
        self.highest == other.highest && self.count == other.count && self.fingerprint == other.fingerprint
    }
}

/// The fingerprint contribution of one held number.
pub fn seq_fingerprint(key: &KeyId, seq: Seq) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update(seq.0.to_be_bytes());
    h.finalize().into()
}

/// XORs `b` into `a`.
pub fn xor_into(a: &mut [u8; 32], b: &[u8; 32]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

/// One digest of a whole set of chain summaries (sorted by key) and the
/// registry version: equal digests mean nothing to exchange.
pub fn state_digest(registry: (RegistryVersion, RegistryHash), chains: &[ChainSummary]) -> [u8; 32] {
    let mut sorted: Vec<&ChainSummary> = chains.iter().filter(|c| c.count > 0 || c.evidence > 0).collect();
    sorted.sort_by_key(|c| c.key);
    let mut h = Sha256::new();
    h.update(b"herald/v1/sync-digest\0");
    h.update(registry.0.0.to_be_bytes());
    h.update(registry.1.as_bytes());
    for c in sorted {
        h.update(codec::encode(c));
    }
    h.finalize().into()
}

/// An inclusive range of sequence numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct SeqRange {
    /// First number.
    pub from: Seq,
    /// Last number (inclusive).
    pub to: Seq,
}

/// What the asker wants of one chain.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Want {
    /// The key.
    pub key: KeyId,
    /// Numbers wanted, ascending, not overlapping.
    pub ranges: Vec<SeqRange>,
    /// Also send every extra body held for this key (equivocation evidence).
    pub evidence: bool,
}

/// A request of the catch-up protocol.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum SyncRequest {
    /// Round one: the asker's registry version and digest of everything held.
    Hello {
        /// The asker's registry version.
        registry_version: RegistryVersion,
        /// [`state_digest`] of the asker's holdings.
        digest: [u8; 32],
    },
    /// Registry updates from this version on (wire bytes of each).
    Registry {
        /// First version wanted.
        from: RegistryVersion,
    },
    /// Bulletins in these ranges, up to one page.
    Fetch {
        /// What is wanted, by chain.
        wants: Vec<Want>,
    },
    /// The next page of the answerer's summary: its chains with keys above
    /// `after`, in key order, at most [`MAX_CHAINS`]. Asked after a
    /// `Summary` that came full.
    Chains {
        /// The last key of the page before.
        after: KeyId,
    },
}

/// A response of the catch-up protocol.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum SyncResponse {
    /// The digests match: nothing to exchange.
    InStep,
    /// The answerer's holdings, chain by chain.
    Summary {
        /// Its registry version.
        registry_version: RegistryVersion,
        /// Its registry hash at that version.
        registry_hash: RegistryHash,
        /// The chains it holds anything of, in key order: all of them, or
        /// the first [`MAX_CHAINS`] (a full summary; `Chains` asks for the
        /// next page).
        chains: Vec<ChainSummary>,
    },
    /// Registry updates, in version order.
    Registry {
        /// Signed update wire bytes.
        updates: Vec<Vec<u8>>,
    },
    /// A page of signed bulletins (wire bytes), in the order asked.
    Page {
        /// The bulletins.
        bulletins: Vec<Vec<u8>>,
        /// Whether everything asked for that the answerer holds is in this page.
        complete: bool,
    },
    /// The request cannot be served (e.g. another network); the reason.
    Refused {
        /// Why.
        reason: String,
    },
}

impl SyncRequest {
    /// The canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a request with the request limit, checking its bounds.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let request: Self = codec::decode_canonical::<
            Self,
            MAX_SYNC_REQUEST_BYTES,
            { MAX_SYNC_REQUEST_BYTES + CLAIM_SLACK },
        >(bytes)?;
        if let SyncRequest::Fetch { wants } = &request {
            let ranges: usize = wants.iter().map(|w| w.ranges.len()).sum();
            if wants.len() > MAX_CHAINS || ranges > MAX_RANGES {
                return Err(DecodeError::Invalid(format!(
                    "fetch of {} chains and {ranges} ranges; at most {MAX_CHAINS} and {MAX_RANGES}",
                    wants.len()
                )));
            }
            for w in wants {
                if !w.ranges.iter().all(|r| r.from.0 >= 1 && r.from <= r.to)
                    || !w.ranges.windows(2).all(|p| p[0].to < p[1].from)
                {
                    return Err(DecodeError::Invalid(
                        "fetch ranges must be ascending and disjoint".into(),
                    ));
                }
            }
        }
        Ok(request)
    }
}

impl SyncResponse {
    /// The canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a response with the response limit, checking its bounds.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let response: Self = codec::decode_canonical::<
            Self,
            MAX_SYNC_RESPONSE_BYTES,
            { MAX_SYNC_RESPONSE_BYTES + CLAIM_SLACK },
        >(bytes)?;
        let over = match &response {
            SyncResponse::Summary { chains, .. } => chains.len() > MAX_CHAINS,
            SyncResponse::Registry { updates } => updates.len() > MAX_REGISTRY_UPDATES,
            SyncResponse::Page { bulletins, .. } => bulletins.len() > MAX_PAGE_BULLETINS,
            SyncResponse::Refused { reason } => reason.len() > 1024,
            SyncResponse::InStep => false,
        };
        if over {
            return Err(DecodeError::Invalid("sync response over its item limit".into()));
        }
        Ok(response)
    }
}

/// What to fetch from a peer, given both sides' summaries and a way to list
/// the numbers this node lacks below its highest (its holes) for a key.
///
/// For every chain where the peer's held set differs from ours and the peer
/// holds numbers we may lack: our holes up to the peer's highest, then
/// everything above our highest up to the peer's. Evidence is asked for where
/// the peer holds more of it.
pub fn plan_wants(
    ours: &[ChainSummary],
    theirs: &[ChainSummary],
    mut holes: impl FnMut(&KeyId, Seq, Seq) -> Vec<SeqRange>,
) -> Vec<Want> {
    let ours: BTreeMap<KeyId, &ChainSummary> = ours.iter().map(|c| (c.key, c)).collect();
    let mut wants = Vec::new();
    for peer in theirs {
        let empty = ChainSummary::empty(peer.key);
        let mine = ours.get(&peer.key).copied().unwrap_or(&empty);
        let evidence = peer.evidence > mine.evidence;
        let mut ranges = Vec::new();
        if !mine.same_set(peer) && peer.count > 0 {
            // Holes of ours that the peer's range covers.
            let upto = mine.highest.min(peer.highest);
            if mine.contiguous < upto {
                ranges.extend(holes(&peer.key, Seq(mine.contiguous.0 + 1), upto));
            }
            if peer.highest > mine.highest {
                ranges.push(SeqRange {
                    from: Seq(mine.highest.0 + 1),
                    to: peer.highest,
                });
            }
        }
        if !ranges.is_empty() || evidence {
            wants.push(Want {
                key: peer.key,
                ranges,
                evidence,
            });
        }
    }
    wants
}

/// Removes from `wants` the numbers already received, keeping ranges disjoint
/// and ascending; drops chains with nothing left (evidence requests are
/// answered in the first page that covers the chain, so they are dropped once
/// any bulletin of the chain arrived).
pub fn remaining_wants(wants: &[Want], received: &BTreeMap<KeyId, Vec<Seq>>) -> Vec<Want> {
    let mut out = Vec::new();
    for w in wants {
        let got = received.get(&w.key);
        let mut ranges = Vec::new();
        for r in &w.ranges {
            // u128: the number after u64::MAX must not wrap.
            let mut from = u128::from(r.from.0);
            let mut seqs: Vec<u64> = got
                .map(|g| {
                    g.iter()
                        .map(|s| s.0)
                        .filter(|s| *s >= r.from.0 && *s <= r.to.0)
                        .collect()
                })
                .unwrap_or_default();
            seqs.sort_unstable();
            seqs.dedup();
            for s in seqs {
                if u128::from(s) > from {
                    ranges.push(SeqRange {
                        from: Seq(from as u64),
                        to: Seq(s - 1),
                    });
                }
                from = u128::from(s) + 1;
            }
            if from <= u128::from(r.to.0) {
                ranges.push(SeqRange {
                    from: Seq(from as u64),
                    to: r.to,
                });
            }
        }
        let evidence = w.evidence && got.is_none();
        if !ranges.is_empty() || evidence {
            out.push(Want {
                key: w.key,
                ranges,
                evidence,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> KeyId {
        KeyId::from_bytes([b; 32])
    }

    fn summary(k: u8, held: &[u64]) -> ChainSummary {
        let mut c = ChainSummary::empty(key(k));
        for s in held {
            c.count += 1;
            c.highest = c.highest.max(Seq(*s));
            xor_into(&mut c.fingerprint, &seq_fingerprint(&key(k), Seq(*s)));
        }
        while held.contains(&(c.contiguous.0 + 1)) {
            c.contiguous = Seq(c.contiguous.0 + 1);
        }
        c
    }

    fn holes_of(held: &[u64]) -> impl FnMut(&KeyId, Seq, Seq) -> Vec<SeqRange> + '_ {
        move |_, from, to| {
            (from.0..=to.0)
                .filter(|s| !held.contains(s))
                .map(|s| SeqRange {
                    from: Seq(s),
                    to: Seq(s),
                })
                .collect()
        }
    }

    #[test]
    fn in_step_nodes_want_nothing_and_share_a_digest() {
        let a = vec![summary(1, &[1, 2, 3]), summary(2, &[1])];
        let b = vec![summary(2, &[1]), summary(1, &[1, 2, 3])];
        let reg = (RegistryVersion(1), RegistryHash::from_bytes([9; 32]));
        assert_eq!(state_digest(reg, &a), state_digest(reg, &b));
        assert!(plan_wants(&a, &b, holes_of(&[])).is_empty());
    }

    #[test]
    fn fingerprints_tell_different_holes_apart() {
        // Same contiguous, highest and count, different holes.
        let a = summary(1, &[1, 2, 4, 6]);
        let b = summary(1, &[1, 2, 5, 6]);
        assert_eq!(
            (a.contiguous, a.highest, a.count),
            (b.contiguous, b.highest, b.count)
        );
        assert!(!a.same_set(&b));
        let wants = plan_wants(&[a], &[b], holes_of(&[1, 2, 4, 6]));
        assert_eq!(
            wants[0].ranges,
            vec![
                SeqRange {
                    from: Seq(3),
                    to: Seq(3)
                },
                SeqRange {
                    from: Seq(5),
                    to: Seq(5)
                }
            ]
        );
    }

    #[test]
    fn a_node_behind_wants_the_tail() {
        let wants = plan_wants(
            &[summary(1, &[1, 2])],
            &[summary(1, &[1, 2, 3, 4]), summary(2, &[1])],
            holes_of(&[1, 2]),
        );
        assert_eq!(wants.len(), 2);
        assert_eq!(
            wants[0].ranges,
            vec![SeqRange {
                from: Seq(3),
                to: Seq(4)
            }]
        );
        assert_eq!(
            wants[1].ranges,
            vec![SeqRange {
                from: Seq(1),
                to: Seq(1)
            }]
        );
    }

    #[test]
    fn remaining_wants_cut_out_what_arrived() {
        let wants = vec![Want {
            key: key(1),
            ranges: vec![SeqRange {
                from: Seq(1),
                to: Seq(10),
            }],
            evidence: false,
        }];
        let mut got = BTreeMap::new();
        got.insert(key(1), vec![Seq(1), Seq(2), Seq(5), Seq(10)]);
        let left = remaining_wants(&wants, &got);
        assert_eq!(
            left[0].ranges,
            vec![
                SeqRange {
                    from: Seq(3),
                    to: Seq(4)
                },
                SeqRange {
                    from: Seq(6),
                    to: Seq(9)
                }
            ]
        );
        got.insert(key(1), (1..=10).map(Seq).collect());
        assert!(remaining_wants(&wants, &got).is_empty());
    }

    #[test]
    fn requests_and_responses_round_trip_and_refuse_bad_ranges() {
        let request = SyncRequest::Fetch {
            wants: vec![Want {
                key: key(1),
                ranges: vec![SeqRange {
                    from: Seq(1),
                    to: Seq(3),
                }],
                evidence: true,
            }],
        };
        assert_eq!(SyncRequest::from_bytes(&request.to_bytes()), Ok(request));
        let bad = SyncRequest::Fetch {
            wants: vec![Want {
                key: key(1),
                ranges: vec![SeqRange {
                    from: Seq(5),
                    to: Seq(3),
                }],
                evidence: false,
            }],
        };
        assert!(SyncRequest::from_bytes(&bad.to_bytes()).is_err());
        let page = SyncResponse::Page {
            bulletins: vec![vec![1, 2, 3]],
            complete: true,
        };
        assert_eq!(SyncResponse::from_bytes(&page.to_bytes()), Ok(page));
        let mut hostile = vec![4u8, 0, 0, 0];
        hostile.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(SyncResponse::from_bytes(&hostile).is_err());
    }
}
