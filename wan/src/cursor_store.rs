//! Durable cursors: where this region is in each peer's log, one small file
//! per (database, source region) in the node's data directory.
//!
//! A cursor is written to a temporary file, synced, and renamed over the old
//! one, so a crash leaves the old cursor or the new one, never a torn mix; a
//! checksum catches anything else. A missing or damaged cursor reads as none,
//! which costs a full sync, never a lost delta. A cursor written late only
//! redelivers deltas, harmless by idempotence (D54).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::protocol::{Cursor, Source};

/// Magic and version at the start of a cursor file.
const MAGIC: &[u8; 4] = b"MWC1";
/// Bytes of a cursor file: magic, log id, offset, CRC-32 of the 20 before.
const FILE_BYTES: usize = 4 + 8 + 8 + 4;

/// Cursor files under one directory.
#[derive(Clone, Debug)]
pub struct CursorStore {
    dir: PathBuf,
}

impl CursorStore {
    /// Cursors under `dir` (created if absent).
    pub fn open(dir: &Path) -> io::Result<CursorStore> {
        fs::create_dir_all(dir)?;
        // Temporary files of writes a crash interrupted.
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("wan-cursor-") && name.contains(".tmp") {
                let _ = fs::remove_file(dir.join(&*name));
            }
        }
        Ok(CursorStore { dir: dir.to_owned() })
    }

    fn path(&self, database: &str, source: Source) -> PathBuf {
        // Hex keeps any database name a safe file name.
        let name: String = database.bytes().map(|b| format!("{b:02x}")).collect();
        match source.stream {
            0 => self.dir.join(format!("wan-cursor-{name}-{}", source.region)),
            stream => self.dir.join(format!("wan-cursor-{name}-{}-s{stream}", source.region)),
        }
    }

    /// The cursor into `source`'s log for `database`; `None` if there is
    /// none or it is damaged.
    pub fn load(&self, database: &str, source: Source) -> io::Result<Option<Cursor>> {
        let bytes = match fs::read(self.path(database, source)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if bytes.len() != FILE_BYTES || &bytes[..4] != MAGIC {
            return Ok(None);
        }
        let crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
        if crc32fast::hash(&bytes[..20]) != crc {
            return Ok(None);
        }
        let log_id = u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes"));
        let offset = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        Ok(Some(Cursor { log_id, offset }))
    }

    /// Persists a cursor (write, sync, rename, sync the directory).
    pub fn store(&self, database: &str, source: Source, cursor: Cursor) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(FILE_BYTES);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&cursor.log_id.to_le_bytes());
        bytes.extend_from_slice(&cursor.offset.to_le_bytes());
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let path = self.path(database, source);
        // A temporary name of its own per write: two writers of one cursor
        // (a stopping instance's and its successor's) never share a file.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let write = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp-{}-{write}", std::process::id()));
        {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        fs::File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_survive_reopening_and_damage_reads_as_none() {
        let dir = std::env::temp_dir().join(format!("meridian-wan-cursors-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = CursorStore::open(&dir).unwrap();
        let (two, three) = (Source::region(2), Source::region(3));
        let two_of_shard_1 = Source { region: 2, stream: 1 };
        assert_eq!(store.load("db/1", two).unwrap(), None);
        store.store("db/1", two, Cursor { log_id: 7, offset: 42 }).unwrap();
        store.store("db/1", three, Cursor { log_id: 8, offset: 1 }).unwrap();
        store.store("db/1", two, Cursor { log_id: 7, offset: 43 }).unwrap();
        store.store("db/1", two_of_shard_1, Cursor { log_id: 9, offset: 5 }).unwrap();
        let reopened = CursorStore::open(&dir).unwrap();
        assert_eq!(reopened.load("db/1", two).unwrap(), Some(Cursor { log_id: 7, offset: 43 }));
        assert_eq!(reopened.load("db/1", three).unwrap(), Some(Cursor { log_id: 8, offset: 1 }));
        assert_eq!(reopened.load("db/1", two_of_shard_1).unwrap(), Some(Cursor { log_id: 9, offset: 5 }));
        // A flipped bit: no cursor (a full sync), not a wrong one.
        let path = reopened.path("db/1", two);
        let mut bytes = fs::read(&path).unwrap();
        bytes[13] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert_eq!(reopened.load("db/1", two).unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
