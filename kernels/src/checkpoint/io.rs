//! Atomic writes and verified reads of checkpoint files.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use super::manifest::{FileEntry, MANIFEST_FILE};
use crate::error::{Error, Result};

/// Makes a completed rename durable: on Linux the directory entry lives in the directory's own
/// data, which needs its own fsync.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Writes `bytes` to `dir/name` through a temporary file, fsync and rename, and returns its entry.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<FileEntry> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
    sync_dir(dir)?;
    Ok(FileEntry {
        bytes: bytes.len() as u64,
        blake3: blake3::hash(bytes).to_hex().to_string(),
    })
}

/// Removes an existing manifest (durably) so that a partly rewritten checkpoint cannot load.
pub(crate) fn remove_manifest(dir: &Path) -> Result<()> {
    let path = dir.join(MANIFEST_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Reads `dir/name`, checking its size before reading it whole and its hash after.
pub(crate) fn read_verified(dir: &Path, name: &str, entry: &FileEntry) -> Result<Vec<u8>> {
    let path = dir.join(name);
    let corrupt = |reason: String| Error::CorruptFile {
        file: name.to_string(),
        reason,
    };
    let f = File::open(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => corrupt("missing".into()),
        _ => Error::io(&path, e),
    })?;
    let len = f.metadata().map_err(|e| Error::io(&path, e))?.len();
    if len != entry.bytes {
        let what = if len < entry.bytes {
            "truncated"
        } else {
            "too long"
        };
        return Err(corrupt(format!(
            "{what}: {len} bytes, manifest says {}",
            entry.bytes
        )));
    }
    let cap = usize::try_from(len).map_err(|_| corrupt("too large for this platform".into()))?;
    let mut bytes = Vec::with_capacity(cap);
    f.take(len)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(&path, e))?;
    let hash = blake3::hash(&bytes).to_hex().to_string();
    if hash != entry.blake3 {
        return Err(corrupt(format!(
            "blake3 {hash} does not match the manifest's {}",
            entry.blake3
        )));
    }
    Ok(bytes)
}
