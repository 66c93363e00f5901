//! The node's persistent ed25519 identity: `<data dir>/identity.key`, mode 0600.

use std::io::Write;
use std::path::Path;

use libp2p::identity::Keypair;

/// File name of the key inside the data dir.
pub const KEY_FILE: &str = "identity.key";

/// Loads the key from `data_dir`, or creates and saves a new one.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Keypair> {
    let path = data_dir.join(KEY_FILE);
    if path.exists() {
        let bytes = std::fs::read(&path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        return Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| anyhow::anyhow!("{} is not a valid identity key: {e}", path.display()));
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", data_dir.display()))?;
    let key = Keypair::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| anyhow::anyhow!("cannot encode identity key: {e}"))?;
    // Write to a temporary file with restrictive permissions, then rename, so a crash never
    // leaves a half-written key behind.
    let tmp = data_dir.join(format!("{KEY_FILE}.tmp"));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&tmp)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(key)
}

/// The keys the catalog seals this node's writes with: the identity's own ed25519 key, so
/// the id peers check a seal against is this node's peer id.
pub fn catalog_keys(key: &Keypair) -> anyhow::Result<flotilla_actors::catalog::Keys> {
    let ed = key
        .clone()
        .try_into_ed25519()
        .map_err(|_| anyhow::anyhow!("the identity key is not ed25519"))?;
    let secret: [u8; 32] = ed
        .secret()
        .as_ref()
        .try_into()
        .map_err(|_| anyhow::anyhow!("an ed25519 secret key has 32 bytes"))?;
    let keys = flotilla_actors::catalog::Keys::from_secret(&secret);
    let peer_id = key.public().to_peer_id().to_string();
    anyhow::ensure!(
        keys.me().as_str() == peer_id,
        "catalog keys name {} but the peer id is {peer_id}",
        keys.me()
    );
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_keys_write_under_the_peer_id_and_peers_verify_them() {
        for _ in 0..8 {
            let key = Keypair::generate_ed25519();
            let keys = catalog_keys(&key).unwrap();
            assert_eq!(keys.me().as_str(), key.public().to_peer_id().to_string());
            // The catalog's decoding of a peer id gives back libp2p's public key.
            let vk = flotilla_actors::catalog::keys::verifying_key_of(keys.me()).unwrap();
            let libp2p_pk = key.public().try_into_ed25519().unwrap().to_bytes();
            assert_eq!(vk.to_bytes(), libp2p_pk);
        }
    }

    #[test]
    fn key_persists_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn corrupt_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), b"garbage").unwrap();
        let e = load_or_create(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a valid identity key"), "{e}");
    }
}
