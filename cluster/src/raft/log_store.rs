//! The durable Raft log and vote: one checked append-only file.
//!
//! Every change (appended entries, a vote, the commit point, a truncation, a
//! purge) is one record `[length u32 LE][crc32 u32 LE][JSON]`, written and
//! fsynced before openraft is told it is done, in the order openraft asked —
//! so vote and log writes stay serialized, as openraft requires. On open the
//! file is replayed into memory; a torn or corrupt tail (a record whose write
//! never finished, so was never acknowledged) is cut off. When purges have left
//! the file mostly dead records, it is rewritten whole to a temporary file and
//! renamed over the old one.
//!
//! The configuration log is small (a few records per operator action), so
//! the whole live log stays in memory and reads never touch the disk. File
//! writes run on tokio's blocking pool, off the workers that serve clients.
//! Without a data directory the log lives in memory only (a node started with
//! no `--data-dir`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, LogId, OptionalSend, RaftLogReader, StorageIOError, Vote};
use serde::{Deserialize, Serialize};

use super::{Entry, NodeId, StorageError, TypeConfig};

/// Largest record the log accepts, in bytes (a batch of appended entries).
/// Raft batches are bounded by `max_payload_entries`, and configuration
/// commands are small, so a larger length on disk means corruption.
const RECORD_BYTES_MAX: u32 = 64 * 1024 * 1024;
/// Rewrite the file once it holds this many records more than live entries.
const DEAD_RECORDS_MAX: usize = 1024;

#[derive(Serialize, Deserialize)]
enum Record {
    Vote(Vote<NodeId>),
    Committed(Option<LogId<NodeId>>),
    Append(Vec<Entry>),
    /// Removes entries from this index on.
    Truncate(u64),
    /// Removes entries up to and including this id.
    Purge(LogId<NodeId>),
}

#[derive(Default)]
struct LogData {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
    entries: BTreeMap<u64, Entry>,
}

impl LogData {
    fn replay(&mut self, record: Record) {
        match record {
            Record::Vote(vote) => self.vote = Some(vote),
            Record::Committed(committed) => self.committed = committed,
            Record::Append(entries) => {
                for entry in entries {
                    self.entries.insert(entry.log_id.index, entry);
                }
            }
            Record::Truncate(since) => {
                self.entries.split_off(&since);
            }
            Record::Purge(upto) => {
                self.entries = self.entries.split_off(&(upto.index + 1));
                self.last_purged = Some(upto);
            }
        }
    }
}

struct LogFile {
    path: PathBuf,
    file: File,
    records: usize,
}

struct Inner {
    data: LogData,
    file: Option<LogFile>,
}

impl Inner {
    /// Applies `record` in memory and, with a file, appends and fsyncs it.
    fn write(&mut self, record: Record) -> io::Result<()> {
        if let Some(file) = &mut self.file {
            let payload = serde_json::to_vec(&record).map_err(io::Error::other)?;
            file.file.write_all(&frame(&payload)?)?;
            file.file.sync_data()?;
            file.records += 1;
        }
        self.data.replay(record);
        Ok(())
    }

    /// Rewrites the file with only the live state when dead records pile up.
    fn maybe_compact(&mut self) -> io::Result<()> {
        let Some(file) = &mut self.file else { return Ok(()) };
        if file.records <= self.data.entries.len() + DEAD_RECORDS_MAX {
            return Ok(());
        }
        let mut bytes = Vec::new();
        let mut records = 0;
        let mut push = |record: &Record| -> io::Result<()> {
            bytes.extend(frame(&serde_json::to_vec(record).map_err(io::Error::other)?)?);
            records += 1;
            Ok(())
        };
        if let Some(vote) = self.data.vote {
            push(&Record::Vote(vote))?;
        }
        push(&Record::Committed(self.data.committed))?;
        if let Some(purged) = self.data.last_purged {
            push(&Record::Purge(purged))?;
        }
        let entries: Vec<Entry> = self.data.entries.values().cloned().collect();
        for chunk in entries.chunks(256) {
            push(&Record::Append(chunk.to_vec()))?;
        }
        let temporary = file.path.with_extension("tmp");
        write_synced(&temporary, &bytes)?;
        std::fs::rename(&temporary, &file.path)?;
        sync_dir(&file.path)?;
        file.file = OpenOptions::new().append(true).open(&file.path)?;
        file.records = records;
        Ok(())
    }
}

fn frame(payload: &[u8]) -> io::Result<Vec<u8>> {
    let len = u32::try_from(payload.len()).ok().filter(|&n| n <= RECORD_BYTES_MAX).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("log record of {} bytes is too large", payload.len()))
    })?;
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Writes `bytes` to `path` and fsyncs it.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Fsyncs the directory holding `path`, so a rename in it is durable.
pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// The Raft log store. Cheap to clone: clones share one log (openraft's log
/// reader is such a clone).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

impl LogStore {
    /// A log that lives in memory only.
    pub fn in_memory() -> LogStore {
        LogStore { inner: Arc::new(Mutex::new(Inner { data: LogData::default(), file: None })) }
    }

    /// Opens (or creates) the log file `raft-log` in `dir` and replays it.
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("raft-log");
        let mut bytes = Vec::new();
        if path.exists() {
            File::open(&path)?.read_to_end(&mut bytes)?;
        }
        let mut data = LogData::default();
        let mut offset = 0usize;
        let mut records = 0usize;
        while let Some(header) = bytes.get(offset..offset + 8) {
            let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
            if len > RECORD_BYTES_MAX {
                break;
            }
            let Some(payload) = bytes.get(offset + 8..offset + 8 + len as usize) else { break };
            if crc32fast::hash(payload) != crc {
                break;
            }
            let record: Record = serde_json::from_slice(payload)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
            data.replay(record);
            offset += 8 + len as usize;
            records += 1;
        }
        if offset < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                valid_bytes = offset,
                dropped_bytes = bytes.len() - offset,
                "the Raft log ends in a torn or corrupt record (an unfinished write); cutting it off"
            );
        }
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        file.set_len(offset as u64)?;
        file.sync_all()?;
        drop(file);
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok(LogStore { inner: Arc::new(Mutex::new(Inner { data, file: Some(LogFile { path, file, records }) })) })
    }

    /// Runs a write on the blocking pool (it fsyncs).
    async fn write(&self, record: Record) -> io::Result<()> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut inner = inner.lock().expect("a log writer panicked");
            inner.write(record)?;
            inner.maybe_compact()
        })
        .await
        .map_err(io::Error::other)?
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("a log writer panicked")
    }
}

fn error(e: io::Error) -> AnyError {
    AnyError::new(&e)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        let inner = self.lock();
        Ok(inner.data.entries.range((start, end)).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.lock();
        let last = inner.data.entries.values().next_back().map(|e| e.log_id).or(inner.data.last_purged);
        Ok(LogState { last_purged_log_id: inner.data.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.write(Record::Vote(*vote)).await.map_err(|e| StorageIOError::write_vote(error(e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.lock().data.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError> {
        self.write(Record::Committed(committed)).await.map_err(|e| StorageIOError::write(error(e)).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError> {
        Ok(self.lock().data.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let result = self.write(Record::Append(entries)).await;
        let reply = result.as_ref().map(|_| ()).map_err(|e| io::Error::new(e.kind(), e.to_string()));
        callback.log_io_completed(reply);
        result.map_err(|e| StorageIOError::write_logs(error(e)).into())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.write(Record::Truncate(log_id.index)).await.map_err(|e| StorageIOError::write_logs(error(e)).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.write(Record::Purge(log_id)).await.map_err(|e| StorageIOError::write_logs(error(e)).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Blank }
    }

    #[tokio::test]
    async fn the_log_and_vote_survive_a_reopen_and_a_torn_tail_is_cut() {
        let dir = std::env::temp_dir().join(format!("meridian-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = LogStore::open(&dir).unwrap();
            store.write(Record::Vote(Vote::new(3, 1))).await.unwrap();
            store.write(Record::Append((1..=5).map(entry).collect())).await.unwrap();
            store.write(Record::Truncate(4)).await.unwrap();
            store.write(Record::Purge(entry(1).log_id)).await.unwrap();
        }
        // A write that never finished: half a record at the end.
        let mut file = OpenOptions::new().append(true).open(dir.join("raft-log")).unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(file);

        let mut store = LogStore::open(&dir).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        let entries = store.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![2, 3]);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(1));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(3));
        // Appends after the cut land on a clean record boundary.
        store.write(Record::Append(vec![entry(4)])).await.unwrap();
        drop(store);
        let mut store = LogStore::open(&dir).unwrap();
        assert_eq!(store.try_get_log_entries(4..).await.unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn compaction_keeps_the_live_state() {
        let dir = std::env::temp_dir().join(format!("meridian-log-compact-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = LogStore::open(&dir).unwrap();
        for index in 1..=(DEAD_RECORDS_MAX as u64 + 50) {
            store.write(Record::Append(vec![entry(index)])).await.unwrap();
            if index > 10 {
                store.write(Record::Purge(entry(index - 10).log_id)).await.unwrap();
            }
        }
        let records = store.lock().file.as_ref().unwrap().records;
        assert!(records < DEAD_RECORDS_MAX, "the file was rewritten ({records} records)");
        drop(store);
        let mut store = LogStore::open(&dir).unwrap();
        assert_eq!(store.try_get_log_entries(..).await.unwrap().len(), 10);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
