//! The node's content-addressed artifact store: every model file this node holds, kept under
//! `<data dir>/artifacts/blobs/<blake3 hex>` and nowhere else.
//!
//! Registering a folder copies its files in; a fetched file is written to a temporary name
//! and moved in only once its bytes hash to the name it will have. Models load from a view
//! folder (`<data dir>/artifacts/models/<version hash>/`) of hard links to the blobs under the
//! artifact names the catalog lists. Peers read blobs only by hash ([`BlobStore::read`]); the
//! node's own files (identity key, swarm key, API token, store) are outside the store and have
//! no name a peer can give.
//!
//! A blob is hashed again before its bytes are first served, and again whenever its length
//! or modification time changes, so a file damaged on disk is refused rather than spread.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// Largest blob stored, hashed or served.
pub const MAX_BLOB_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Why a blob cannot be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("{0:?} is not a blake3 hash (64 lowercase hex characters)")]
    BadHash(String),
    #[error("blob {0} is not held here")]
    Missing(String),
    #[error("blob {hash} is damaged on this node: its bytes hash to {actual}")]
    Damaged { hash: String, actual: String },
    #[error("{what} is {len} bytes; at most {MAX_BLOB_BYTES} are stored")]
    TooLarge { what: String, len: u64 },
    #[error("blob {hash}: {source}")]
    Io {
        hash: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(hash: &str) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        hash: hash.to_string(),
        source,
    }
}

/// Whether `s` is a blake3 hash as the catalog writes it.
pub fn is_blob_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The blake3 of everything `reader` yields.
pub fn hash_reader(reader: &mut impl Read) -> std::io::Result<String> {
    let mut h = blake3::Hasher::new();
    std::io::copy(reader, &mut h)?;
    Ok(h.finalize().to_hex().to_string())
}

/// What a blob looked like when it was last hashed and found intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    len: u64,
    modified: Option<SystemTime>,
}

/// The store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct BlobStore {
    root: PathBuf,
    /// Blobs hashed and found intact, with what their file looked like then.
    verified: Mutex<HashMap<String, Seen>>,
}

impl BlobStore {
    /// Opens (creating) the store under `root`.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        for sub in ["blobs", "models", "incoming"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            verified: Mutex::new(HashMap::new()),
        })
    }

    fn checked<'a>(&self, hash: &'a str) -> Result<&'a str, BlobError> {
        if is_blob_hash(hash) {
            Ok(hash)
        } else {
            Err(BlobError::BadHash(hash.chars().take(80).collect()))
        }
    }

    fn path_of(&self, hash: &str) -> Result<PathBuf, BlobError> {
        Ok(self.root.join("blobs").join(self.checked(hash)?))
    }

    /// Whether blob `hash` is here (not whether it is intact).
    pub fn contains(&self, hash: &str) -> bool {
        self.path_of(hash).is_ok_and(|p| p.is_file())
    }

    /// A fresh file under `incoming/` for bytes on their way in.
    fn incoming(&self) -> std::io::Result<(std::fs::File, PathBuf)> {
        let name: u64 = rand::random();
        let path = self.root.join("incoming").join(format!("{name:016x}.part"));
        Ok((std::fs::File::create(&path)?, path))
    }

    /// Moves a fully written and synced `part` in as blob `hash`.
    fn commit(&self, part: &Path, hash: &str) -> Result<(), BlobError> {
        let dest = self.path_of(hash)?;
        if dest.is_file() {
            // Same bytes already held (content addressing): keep the one in place.
            let _ = std::fs::remove_file(part);
            return Ok(());
        }
        std::fs::rename(part, &dest).map_err(io(hash))?;
        sync_dir(&self.root.join("blobs")).map_err(io(hash))
    }

    /// Copies `source` in (hashing it on the way) and returns its hash.
    pub fn import(&self, source: &Path) -> Result<String, BlobError> {
        let what = source.display().to_string();
        let mut f = std::fs::File::open(source).map_err(io(&what))?;
        let len = f.metadata().map_err(io(&what))?.len();
        if len > MAX_BLOB_BYTES {
            return Err(BlobError::TooLarge { what, len });
        }
        let (mut out, part) = self.incoming().map_err(io(&what))?;
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(io(&what))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io(&what))?;
        }
        out.sync_all().map_err(io(&what))?;
        let hash = h.finalize().to_hex().to_string();
        self.commit(&part, &hash)?;
        Ok(hash)
    }

    /// Starts receiving blob `hash` of `len` bytes from a peer.
    pub fn receive(&self, hash: &str, len: u64) -> Result<Incoming, BlobError> {
        self.checked(hash)?;
        if len > MAX_BLOB_BYTES {
            return Err(BlobError::TooLarge {
                what: format!("blob {hash}"),
                len,
            });
        }
        let (file, path) = self.incoming().map_err(io(hash))?;
        file.set_len(len).map_err(io(hash))?;
        Ok(Incoming {
            hash: hash.to_string(),
            len,
            file,
            path,
        })
    }

    /// Checks that blob `hash` still hashes to its name, hashing it again only if its file
    /// changed since the last check.
    pub fn verify(&self, hash: &str) -> Result<u64, BlobError> {
        let path = self.path_of(hash)?;
        let meta = std::fs::metadata(&path).map_err(|_| BlobError::Missing(hash.to_string()))?;
        let seen = Seen {
            len: meta.len(),
            modified: meta.modified().ok(),
        };
        if self.lock().get(hash) == Some(&seen) && seen.modified.is_some() {
            return Ok(seen.len);
        }
        let mut f = std::fs::File::open(&path).map_err(io(hash))?;
        let actual = hash_reader(&mut f).map_err(io(hash))?;
        if actual != hash {
            self.lock().remove(hash);
            return Err(BlobError::Damaged {
                hash: hash.to_string(),
                actual,
            });
        }
        self.lock().insert(hash.to_string(), seen);
        Ok(seen.len)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes `offset .. offset + len` of blob `hash` after checking it is intact:
    /// `(blob length, bytes)`.
    pub fn read(&self, hash: &str, offset: u64, len: u32) -> Result<(u64, Vec<u8>), BlobError> {
        let total = self.verify(hash)?;
        let path = self.path_of(hash)?;
        let mut f = std::fs::File::open(path).map_err(io(hash))?;
        let len = u64::from(len).min(total.saturating_sub(offset));
        f.seek(SeekFrom::Start(offset)).map_err(io(hash))?;
        let mut bytes = vec![0u8; len as usize];
        f.read_exact(&mut bytes).map_err(io(hash))?;
        Ok((total, bytes))
    }

    /// The folder a model version loads from: `artifacts` (name → blob hash) linked under
    /// their names into `models/<version_hash>/`. Every blob must be here.
    pub fn view(
        &self,
        version_hash: &str,
        artifacts: &BTreeMap<String, String>,
    ) -> Result<PathBuf, BlobError> {
        let dir = self.root.join("models").join(self.checked(version_hash)?);
        std::fs::create_dir_all(&dir).map_err(io(version_hash))?;
        for (name, hash) in artifacts {
            // Names come from a validated catalog record (no `/`, no `..`); refuse anything
            // else rather than trust that here.
            if name.is_empty() || name.contains('/') || name.contains('\\') || name == ".." {
                return Err(BlobError::BadHash(format!("artifact name {name:?}")));
            }
            let blob = self.path_of(hash)?;
            if !blob.is_file() {
                return Err(BlobError::Missing(hash.clone()));
            }
            let link = dir.join(name);
            if same_file(&link, &blob) {
                continue;
            }
            let _ = std::fs::remove_file(&link);
            if std::fs::hard_link(&blob, &link).is_err() {
                std::fs::copy(&blob, &link).map_err(io(hash))?;
            }
        }
        Ok(dir)
    }

    /// Removes blob `hash` (it is damaged, say) so that it is fetched again.
    pub fn remove(&self, hash: &str) -> Result<(), BlobError> {
        let path = self.path_of(hash)?;
        self.lock().remove(hash);
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(hash)(e)),
        }
    }
}

#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &Path, _: &Path) -> bool {
    false
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// A blob being received in pieces, possibly out of order and from several peers at once.
#[derive(Debug)]
pub struct Incoming {
    hash: String,
    len: u64,
    file: std::fs::File,
    path: PathBuf,
}

impl Incoming {
    /// Writes `bytes` at `offset`.
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<(), BlobError> {
        let end = offset.saturating_add(bytes.len() as u64);
        if end > self.len {
            return Err(BlobError::TooLarge {
                what: format!("a piece ending at {end} of blob {}", self.hash),
                len: end,
            });
        }
        write_all_at(&self.file, bytes, offset).map_err(io(&self.hash))
    }

    /// Syncs the received bytes, checks they hash to the blob's name and moves them in; on a
    /// mismatch nothing is kept.
    pub fn finish(self, store: &BlobStore) -> Result<(), BlobError> {
        let checked = (|| -> Result<(), BlobError> {
            self.file.sync_all().map_err(io(&self.hash))?;
            let mut f = std::fs::File::open(&self.path).map_err(io(&self.hash))?;
            let actual = hash_reader(&mut f).map_err(io(&self.hash))?;
            if actual != self.hash {
                return Err(BlobError::Damaged {
                    hash: self.hash.clone(),
                    actual,
                });
            }
            Ok(())
        })();
        match checked {
            Ok(()) => store.commit(&self.path, &self.hash),
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                Err(e)
            }
        }
    }

    /// Gives up: the partial file is removed.
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(unix)]
fn write_all_at(f: &std::fs::File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.write_all_at(bytes, offset)
}

#[cfg(not(unix))]
fn write_all_at(f: &std::fs::File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    let mut done = 0;
    while done < bytes.len() {
        done += f.seek_write(&bytes[done..], offset + done as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(&dir.path().join("artifacts")).unwrap();
        (dir, s)
    }

    #[test]
    fn an_imported_file_is_held_under_its_hash_and_read_back_in_ranges() {
        let (dir, s) = store();
        let src = dir.path().join("weights.bin");
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &bytes).unwrap();
        let hash = s.import(&src).unwrap();
        assert_eq!(hash, blake3::hash(&bytes).to_hex().to_string());
        assert!(s.contains(&hash));
        let (total, piece) = s.read(&hash, 9_000, 4096).unwrap();
        assert_eq!(total, 10_000);
        assert_eq!(piece, &bytes[9_000..]);
        // A second import of the same bytes is the same blob.
        assert_eq!(s.import(&src).unwrap(), hash);
    }

    #[test]
    fn only_hashes_name_blobs() {
        let (_dir, s) = store();
        for bad in ["../identity.key", "/etc/passwd", "ABC", "", &"g".repeat(64)] {
            assert!(
                matches!(s.read(bad, 0, 10), Err(BlobError::BadHash(_))),
                "{bad:?} was accepted"
            );
        }
        let absent = "0".repeat(64);
        assert!(matches!(s.read(&absent, 0, 10), Err(BlobError::Missing(_))));
    }

    #[test]
    fn a_blob_damaged_on_disk_is_refused() {
        let (dir, s) = store();
        let src = dir.path().join("f");
        std::fs::write(&src, vec![7u8; 5000]).unwrap();
        let hash = s.import(&src).unwrap();
        s.read(&hash, 0, 10).unwrap();
        let blob = dir.path().join("artifacts/blobs").join(&hash);
        let mut damaged = std::fs::read(&blob).unwrap();
        damaged[100] ^= 1;
        // Same length; the modification time moves on (or the check runs anyway without one).
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&blob, damaged).unwrap();
        assert!(matches!(
            s.read(&hash, 0, 10),
            Err(BlobError::Damaged { .. })
        ));
    }

    #[test]
    fn received_pieces_in_any_order_are_kept_only_when_the_whole_hashes_right() {
        let (_dir, s) = store();
        let bytes: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
        let hash = blake3::hash(&bytes).to_hex().to_string();
        let rx = s.receive(&hash, 3000).unwrap();
        rx.write_at(2000, &bytes[2000..]).unwrap();
        rx.write_at(0, &bytes[..1000]).unwrap();
        rx.write_at(1000, &bytes[1000..2000]).unwrap();
        assert!(rx.write_at(2999, &[1, 2]).is_err(), "a piece past the end");
        rx.finish(&s).unwrap();
        assert_eq!(s.read(&hash, 0, 4000).unwrap().1, bytes);

        let other = "1".repeat(64);
        let rx = s.receive(&other, 3000).unwrap();
        rx.write_at(0, &bytes).unwrap();
        assert!(matches!(rx.finish(&s), Err(BlobError::Damaged { .. })));
        assert!(!s.contains(&other));
    }

    #[test]
    fn a_view_links_blobs_under_their_artifact_names() {
        let (dir, s) = store();
        let src = dir.path().join("config.json");
        std::fs::write(&src, b"{}").unwrap();
        let hash = s.import(&src).unwrap();
        let mut artifacts = BTreeMap::new();
        artifacts.insert("config.json".to_string(), hash.clone());
        let version = "a".repeat(64);
        let view = s.view(&version, &artifacts).unwrap();
        assert_eq!(std::fs::read(view.join("config.json")).unwrap(), b"{}");
        artifacts.insert("../escape".to_string(), hash);
        assert!(s.view(&version, &artifacts).is_err());
    }
}
