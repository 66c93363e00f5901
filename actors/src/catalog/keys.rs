//! Seals on catalog entries: this node signs what it writes, and verifies what peers send.
//!
//! A node's id is the text of its libp2p peer id, which for an ed25519 identity *contains* the
//! public key (an identity multihash of the protobuf-encoded key). So a seal is checked against
//! the key the writer's id names, with no key exchange: a peer cannot write in another node's
//! name without that node's secret key. The decoding here follows the peer-id format exactly;
//! `node` checks it against libp2p's own encoding in a test.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use flotilla_protocol::catalog::entry::Seal;
use flotilla_protocol::catalog::{CatalogKey, Entry};
use flotilla_protocol::NodeId;

/// The identity multihash prefix and protobuf header of an ed25519 public key in a peer id:
/// multihash code 0 (identity), length 36; field 1 (key type) = 1 (Ed25519); field 2 (data),
/// 32 bytes.
const PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// This node's signing key and the id it writes under.
#[derive(Clone)]
pub struct Keys {
    me: NodeId,
    signing: SigningKey,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Keys").field("me", &self.me).finish()
    }
}

impl Keys {
    /// Keys from an ed25519 secret key (32 bytes); the node id is the peer id of its public key.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(secret);
        let me = node_id_of(&signing.verifying_key());
        Self { me, signing }
    }

    /// Keys derived from `seed` (tests and tools that need a stable identity without a file).
    pub fn from_seed(seed: &str) -> Self {
        Self::from_secret(blake3::hash(seed.as_bytes()).as_bytes())
    }

    /// The id this node writes under.
    pub fn me(&self) -> &NodeId {
        &self.me
    }

    /// Seals every part of `entry` that this node wrote (its id names the part's writer).
    /// Parts written by others keep their own seals.
    pub fn seal(&self, key: &CatalogKey, entry: &mut Entry) {
        #[cfg(feature = "testing")]
        if baseline::seals_off() {
            return;
        }
        match entry {
            Entry::Register(r) if r.hlc.node == self.me => {
                r.seal = self.sign(&r.sealed_bytes(key));
            }
            Entry::Register(_) => {}
            Entry::Job(j) => {
                if j.hlc.node == self.me {
                    j.head_seal = self.sign(&j.head_bytes(key));
                }
                if j.status_by == self.me {
                    j.status_seal = self.sign(&j.status_bytes(key));
                }
            }
        }
    }

    fn sign(&self, bytes: &[u8]) -> Seal {
        Seal(self.signing.sign(bytes).to_bytes().to_vec())
    }
}

/// The peer id text of an ed25519 public key.
pub fn node_id_of(key: &VerifyingKey) -> NodeId {
    let mut bytes = PEER_ID_PREFIX.to_vec();
    bytes.extend_from_slice(key.as_bytes());
    NodeId(bs58::encode(bytes).into_string())
}

/// The ed25519 public key a node id names, or why it names none.
pub fn verifying_key_of(node: &NodeId) -> Result<VerifyingKey, String> {
    let bytes = bs58::decode(node.as_str())
        .into_vec()
        .map_err(|e| format!("{node} is not a peer id: {e}"))?;
    let key: &[u8; 32] = bytes
        .strip_prefix(&PEER_ID_PREFIX[..])
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| format!("{node} is not the peer id of an ed25519 key"))?;
    VerifyingKey::from_bytes(key).map_err(|e| format!("{node} names an invalid key: {e}"))
}

/// Checks every seal of `entry`: each part must be signed by the node that part names as its
/// writer. The error says which part failed and why.
pub fn verify(key: &CatalogKey, entry: &Entry) -> Result<(), String> {
    verify_published(key, entry, None)
}

/// [`verify`] for an entry that arrived in a message `publisher` signed, as gossipsub's strict
/// mode checks every message against its source's key: the parts `publisher` wrote are
/// authentic already, so only the parts of other writers are checked.
pub fn verify_published(
    key: &CatalogKey,
    entry: &Entry,
    publisher: Option<&NodeId>,
) -> Result<(), String> {
    #[cfg(feature = "testing")]
    if baseline::seals_off() {
        return Ok(());
    }
    for (writer, bytes, seal) in entry.sealed_parts(key) {
        if Some(writer) == publisher {
            continue;
        }
        if seal.is_empty() {
            return Err(format!("the part written by {writer} is not sealed"));
        }
        let signature = Signature::from_slice(&seal.0)
            .map_err(|_| format!("the seal of {writer} is not a signature"))?;
        verifying_key_of(writer)?
            .verify_strict(&bytes, &signature)
            .map_err(|_| format!("the seal does not verify against {writer}'s key"))?;
    }
    Ok(())
}

/// The baseline of the seal benchmark: a process where catalogs neither seal nor verify, to
/// measure what seals cost. Only in builds with the `testing` feature (tests and benchmarks);
/// a node binary built on its own cannot turn seals off.
#[cfg(feature = "testing")]
pub mod baseline {
    use std::sync::atomic::{AtomicBool, Ordering};

    static SEALS_OFF: AtomicBool = AtomicBool::new(false);

    /// Turns sealing and seal checks off (or back on) for every catalog in this process.
    pub fn set_seals_off(off: bool) {
        SEALS_OFF.store(off, Ordering::SeqCst);
    }

    pub(super) fn seals_off() -> bool {
        SEALS_OFF.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_protocol::catalog::{JobRecord, Record};
    use flotilla_protocol::hlc::Hlc;
    use flotilla_protocol::jobs::JobStatus;

    fn hlc(node: &NodeId, ms: u64) -> Hlc {
        Hlc {
            physical_ms: ms,
            logical: 0,
            node: node.clone(),
        }
    }

    fn eviction(of: &NodeId, by: &NodeId) -> (CatalogKey, Record) {
        let r = Record::Eviction(flotilla_protocol::catalog::EvictionRecord {
            node: of.clone(),
            evicted_by: by.clone(),
            evicted_at_ms: 5,
        });
        (r.key(), r)
    }

    #[test]
    fn ids_round_trip_and_strangers_are_refused() {
        let k = Keys::from_seed("a");
        let vk = verifying_key_of(k.me()).unwrap();
        assert_eq!(node_id_of(&vk), *k.me());
        assert!(k.me().as_str().starts_with("12D3KooW"), "{}", k.me());
        assert!(verifying_key_of(&NodeId::from("n1")).is_err());
        assert!(verifying_key_of(&NodeId::from("")).is_err());
        // A valid base58 string of the wrong shape.
        assert!(verifying_key_of(&NodeId::from(
            "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
        ))
        .unwrap_err()
        .contains("ed25519"));
    }

    #[test]
    fn a_sealed_register_verifies_and_any_change_breaks_it() {
        let a = Keys::from_seed("a");
        let (key, record) = eviction(&NodeId::from("victim"), a.me());
        let mut e = Entry::write(hlc(a.me(), 10), record);
        assert!(verify(&key, &e).unwrap_err().contains("not sealed"));
        a.seal(&key, &mut e);
        verify(&key, &e).unwrap();
        // Another key, a later timestamp, a different value: all refused.
        let (other_key, _) = eviction(&NodeId::from("someone"), a.me());
        assert!(verify(&other_key, &e).is_err());
        let mut later = e.clone();
        if let Entry::Register(r) = &mut later {
            r.hlc.physical_ms += 1;
        }
        assert!(verify(&key, &later).is_err());
        let mut tombstone = e.clone();
        if let Entry::Register(r) = &mut tombstone {
            r.value = None;
        }
        assert!(verify(&key, &tombstone).is_err());
    }

    #[test]
    fn nobody_writes_in_another_nodes_name() {
        let (a, mallory) = (Keys::from_seed("a"), Keys::from_seed("mallory"));
        let (key, record) = eviction(&NodeId::from("victim"), a.me());
        // Mallory writes a record under a's name and seals it with its own key.
        let mut forged = Entry::write(hlc(a.me(), 10), record);
        mallory.seal(&key, &mut forged); // seals nothing: the part is not mallory's
        assert!(verify(&key, &forged).is_err());
        if let Entry::Register(f) = &mut forged {
            f.seal = mallory.sign(&f.sealed_bytes(&key));
        }
        assert!(verify(&key, &forged)
            .unwrap_err()
            .contains("does not verify"));
        // Published by a itself, the part needs no seal check; published by mallory, it does.
        verify_published(&key, &forged, Some(a.me())).unwrap();
        assert!(verify_published(&key, &forged, Some(mallory.me())).is_err());
    }

    fn job(owner: &NodeId, status: JobStatus, updated: u64) -> JobRecord {
        crate::catalog::fixtures::job("job-1", 1, owner.as_str(), status, updated)
    }

    #[test]
    fn a_job_keeps_a_valid_seal_for_each_part_through_merges() {
        let (a, b) = (Keys::from_seed("a"), Keys::from_seed("b"));
        let key = CatalogKey::job(&"job-1".into());
        let mut first = Entry::job(hlc(a.me(), 10), job(a.me(), JobStatus::Running, 10));
        a.seal(&key, &mut first);
        // b takes over (epoch 2) while a's terminal status is on the way.
        let mut takeover = job(b.me(), JobStatus::Running, 20);
        takeover.epoch = 2;
        let mut second = Entry::job(hlc(b.me(), 20), takeover);
        b.seal(&key, &mut second);
        let mut done = Entry::job(hlc(a.me(), 30), job(a.me(), JobStatus::Succeeded, 30));
        a.seal(&key, &mut done);
        let mut x = first.clone();
        x.merge(second.clone());
        x.merge(done.clone());
        let mut y = done;
        y.merge(second);
        y.merge(first);
        assert_eq!(x, y, "the merge does not depend on the order");
        let Entry::Job(j) = &x else { panic!() };
        assert_eq!((j.record.epoch, &j.hlc.node), (2, b.me()));
        assert_eq!(
            (j.record.status, &j.status_by),
            (JobStatus::Succeeded, a.me())
        );
        // The head is b's, the status a's, and both seals still verify.
        verify(&key, &x).unwrap();
        // A status changed by hand does not.
        let mut bumped = x.clone();
        if let Entry::Job(j) = &mut bumped {
            j.record.status = JobStatus::Cancelled;
        }
        assert!(verify(&key, &bumped).is_err());
    }
}
