//! On-disk durability of a shard: an append-only journal of deltas and
//! periodic snapshots, in a data directory.
//!
//! ## Files
//!
//! - `journal-<g>.log`: frames appended in order. A frame is
//!   `[len: u32 LE][crc32 of payload: u32 LE][payload]`; the payload is
//!   `[HLC high-water: u64 LE][count: u32 LE]` then `count` deltas, each
//!   `[len: u32 LE][protobuf Delta]` (the same encoding the WAN and replica
//!   streams use). One frame is one group commit: every delta applied since
//!   the previous one.
//! - `snapshot-<g>.bin`: `MRDNSNAP`, a format version, the HLC high-water,
//!   the length and CRC-32 of the body, and the body — a protobuf
//!   `ShardSnapshot` (keys and causal context) covering every journal with a
//!   generation ≤ `g`.
//!
//! ## Recovery
//!
//! The newest snapshot is loaded (a corrupt one is an error: the node refuses
//! to start rather than silently lose data), then every journal with a
//! greater generation is replayed in order. Deltas are CRDT merges, so
//! replaying is idempotent and order-insensitive; the HLC is seeded above the
//! greatest high-water seen, so no new write can carry an older timestamp. A
//! torn or corrupt tail of the **last** journal — a crash in the middle of an
//! append — is truncated away with a warning (those writes were never
//! acknowledged: a reply is sent only after its frame is written); corruption
//! anywhere else is an error.
//!
//! ## Rewrite
//!
//! When the journal has grown past its minimum size ([`REWRITE_MIN_BYTES`] by
//! default, Redis's `auto-aof-rewrite-min-size`) and the files hold as much
//! superseded data as live data (see [`rewrite_due`]: `auto-aof-rewrite-percentage`
//! of it, 100 by default), the shard rotates to a new journal generation and
//! writes a snapshot of its state (to a temporary file, fsynced, renamed, the
//! directory fsynced), then deletes the journals and snapshots it covers. A
//! crash at any point leaves either the old snapshot and all journals, or the
//! new snapshot and the journals after it: both recover the same state.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use meridian_crdt::{Delta, Keyspace, ReplicaId};
#[cfg(test)]
use meridian_proto::convert::encode_delta;
use meridian_proto::convert::{decode_delta, decode_snapshot, encode_snapshot};

/// When an appended frame is forced to disk (Redis's `appendfsync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Before any reply to the writes it holds is sent: nothing acknowledged
    /// is lost on a crash or power loss.
    Always,
    /// Once a second: a power loss may lose the last second of acknowledged
    /// writes; a process crash loses nothing (the frame is in the OS).
    EverySec,
    /// Never explicitly: the OS decides.
    No,
}

impl Fsync {
    /// Parses `always`, `everysec` or `no` (case-insensitive).
    pub fn parse(text: &str) -> Option<Fsync> {
        match text.to_ascii_lowercase().as_str() {
            "always" => Some(Fsync::Always),
            "everysec" => Some(Fsync::EverySec),
            "no" => Some(Fsync::No),
            _ => None,
        }
    }

    /// The setting's name, as CONFIG GET reports it.
    pub fn name(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::EverySec => "everysec",
            Fsync::No => "no",
        }
    }
}

/// A sync in progress outside the journal's lock (see [`Journal::begin_sync`]).
pub struct PendingSync {
    file: File,
    seq: u64,
    path: PathBuf,
}

impl PendingSync {
    /// Forces the journal file's data to disk (may take long: call it with
    /// no lock held).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// No journal smaller than this is rewritten (`auto-aof-rewrite-min-size`).
pub const REWRITE_MIN_BYTES: u64 = 64 * 1024 * 1024;
/// The default `auto-aof-rewrite-percentage`: a rewrite once the estimated
/// superseded bytes reach this percentage of the estimated live bytes.
pub const REWRITE_PERCENTAGE: u64 = 100;
/// Whatever the estimate says, a journal this many times the size of the
/// last snapshot (or of the minimum, if larger) is rewritten: the bound on
/// how far a misleading estimate can let the files grow, and on how much of
/// the state recovery replays delta by delta instead of loading.
pub const REWRITE_BOUND_FACTOR: u64 = 8;

/// Whether a journal is due for a rewrite (D110). A rewrite pays for
/// itself only in the space and replay time of *superseded* data: a journal
/// of deltas that created new keys holds what a snapshot would hold, and
/// rewriting it (seconds of CPU and a full copy of the state at millions of
/// keys) gains nothing. So the files' live bytes are estimated as the last
/// snapshot plus the journal's share of key growth — the key count's change
/// since the snapshot, at the journal's mean bytes per delta — and the rest
/// of the journal counts as superseded (an overwrite, a delete, a field
/// added to an existing key: conservative, it rewrites sooner). Due when
///
/// - the journal is at least `min_bytes`, and
/// - superseded ≥ `percentage`% of live, or the journal is
///   [`REWRITE_BOUND_FACTOR`] × max(snapshot, `min_bytes`) or more.
///
/// With no key growth this is Redis's own rule (journal ≥ last snapshot at
/// 100%); with only new keys the journal is left alone until the bound.
/// `percentage` 0 turns automatic rewrites off, as in Redis.
pub fn rewrite_due(files: &RewriteInputs, keys: u64, min_bytes: u64, percentage: u64) -> bool {
    if percentage == 0 || files.journal_bytes < min_bytes {
        return false;
    }
    let bound = REWRITE_BOUND_FACTOR.saturating_mul(files.snapshot_bytes.max(min_bytes));
    if files.journal_bytes >= bound {
        return true;
    }
    let journal = i128::from(files.journal_bytes);
    let per_delta = journal / i128::from(files.journal_deltas.max(1));
    let growth = (i128::from(keys) - i128::from(files.snapshot_keys)) * per_delta;
    let total = i128::from(files.snapshot_bytes) + journal;
    let live = (i128::from(files.snapshot_bytes) + growth).clamp(0, total);
    let superseded = total - live;
    superseded * 100 >= live * i128::from(percentage)
}

/// What [`rewrite_due`] weighs of a journal and its last snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RewriteInputs {
    /// Bytes in the current journal file.
    pub journal_bytes: u64,
    /// Deltas in the current journal file.
    pub journal_deltas: u64,
    /// Size of the last snapshot written or loaded.
    pub snapshot_bytes: u64,
    /// Keys that snapshot holds.
    pub snapshot_keys: u64,
}
/// The largest frame or snapshot body accepted when reading (a larger length
/// field is corruption): 1 GiB more than the largest value a client may
/// write (`proto-max-bulk-len`, 512 MiB).
pub const RECORD_BYTES_MAX: u64 = 1536 * 1024 * 1024;

const SNAPSHOT_MAGIC: &[u8; 8] = b"MRDNSNAP";
const SNAPSHOT_VERSION: u32 = 1;

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    /// The state rebuilt from the snapshot and the journals.
    pub keyspace: Keyspace,
    /// The greatest HLC any recovered write carried (seed the clock above it).
    pub hlc_high_water: u64,
    /// Deltas replayed from journals.
    pub deltas_replayed: u64,
    /// Bytes cut from a torn journal tail (0 normally).
    pub truncated_bytes: u64,
}

/// The append side of a shard's journal.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    fsync: Fsync,
    generation: u64,
    file: File,
    /// Sizes of the current journal file and of the last snapshot.
    files: RewriteInputs,
    /// No rewrite below this journal size.
    rewrite_min_bytes: u64,
    /// `auto-aof-rewrite-percentage` (see [`rewrite_due`]).
    rewrite_percentage: u64,
    /// True if a frame was written since the last fsync.
    dirty: bool,
    /// Journal position (see `Keyspace::journal_seq`) written so far.
    written_seq: u64,
    /// Journal position forced to disk so far (equal to `written_seq` unless
    /// the policy defers fsync).
    synced_seq: u64,
    /// Deltas whose append failed, written first by the next append.
    retry: Vec<Bytes>,
    /// Set when a failed append could not be cut back: nothing more may be
    /// appended to this file (writes are refused until a restart).
    broken: Option<String>,
}

/// An error with the file it concerns.
fn context(path: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

fn invalid(text: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, text)
}

/// Files of one kind in `dir`, by generation, ascending.
fn generations(dir: &Path, prefix: &str, suffix: &str) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| context(dir, e))? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(generation) = name.strip_prefix(prefix).and_then(|rest| rest.strip_suffix(suffix))
            && let Ok(generation) = generation.parse::<u64>()
        {
            found.push((generation, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

fn journal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("journal-{generation:010}.log"))
}

fn snapshot_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("snapshot-{generation:010}.bin"))
}

/// Fsyncs a directory, so that a rename or a new file in it is durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| context(dir, e))
}

/// Encodes one frame holding `deltas`, already encoded one by one
/// ([`encode_delta`]).
pub fn encode_frame(deltas: &[Bytes], hlc_high_water: u64) -> Vec<u8> {
    let encoded: usize = deltas.iter().map(|d| 4 + d.len()).sum();
    let mut payload = Vec::with_capacity(12 + encoded);
    payload.extend_from_slice(&hlc_high_water.to_le_bytes());
    payload.extend_from_slice(&(deltas.len() as u32).to_le_bytes());
    for bytes in deltas {
        payload.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        payload.extend_from_slice(bytes);
    }
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// Decodes a frame's payload: its high-water and deltas.
fn decode_payload(payload: &[u8]) -> Result<(u64, Vec<Delta>), String> {
    let take = |at: usize, n: usize| payload.get(at..at + n).ok_or_else(|| "frame payload cut short".to_string());
    let hlc = u64::from_le_bytes(take(0, 8)?.try_into().expect("8 bytes"));
    let count = u32::from_le_bytes(take(8, 4)?.try_into().expect("4 bytes")) as usize;
    let mut at = 12;
    let mut deltas = Vec::with_capacity(count.min(payload.len() / 4));
    for _ in 0..count {
        let len = u32::from_le_bytes(take(at, 4)?.try_into().expect("4 bytes")) as usize;
        let bytes = take(at + 4, len)?;
        deltas.push(decode_delta(bytes).map_err(|e| format!("undecodable delta: {e}"))?);
        at += 4 + len;
    }
    if at != payload.len() {
        return Err("trailing bytes in frame".to_string());
    }
    Ok((hlc, deltas))
}

/// Reads the frames of one journal into `keyspace`: the good length of the
/// file, the deltas applied, the greatest high-water, and why reading
/// stopped early (`None` at a clean end).
fn replay(path: &Path, keyspace: &mut Keyspace) -> io::Result<(u64, u64, u64, Option<String>)> {
    replay_frames(BufReader::new(File::open(path).map_err(|e| context(path, e))?), keyspace)
}

/// Reads journal frames from `reader` into `keyspace` (what recovery does
/// with each journal file): the length of the good prefix, the deltas
/// applied, the greatest high-water, and why reading stopped early (`None`
/// at a clean end). Any bytes at all are safe to feed it: a bad frame stops
/// the reading, never a panic or an allocation beyond the bytes present
/// (the fuzz target `journal_frames` checks this).
pub fn replay_frames(mut reader: impl Read, keyspace: &mut Keyspace) -> io::Result<(u64, u64, u64, Option<String>)> {
    let (mut good, mut applied, mut hlc) = (0u64, 0u64, 0u64);
    loop {
        let mut header = [0u8; 8];
        match read_full(&mut reader, &mut header)? {
            0 => return Ok((good, applied, hlc, None)),
            8 => {}
            _ => return Ok((good, applied, hlc, Some("torn frame header".to_string()))),
        }
        let len = u64::from(u32::from_le_bytes(header[..4].try_into().expect("4 bytes")));
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len > RECORD_BYTES_MAX {
            return Ok((good, applied, hlc, Some(format!("frame length {len} is corrupt"))));
        }
        // Read what is there, up to `len`: a corrupt length never allocates
        // more than the bytes actually present.
        let mut payload = Vec::new();
        (&mut reader).take(len).read_to_end(&mut payload)?;
        if (payload.len() as u64) < len {
            return Ok((good, applied, hlc, Some("torn frame".to_string())));
        }
        if crc32fast::hash(&payload) != crc {
            return Ok((good, applied, hlc, Some("frame checksum mismatch".to_string())));
        }
        let (frame_hlc, deltas) = match decode_payload(&payload) {
            Ok(decoded) => decoded,
            Err(e) => return Ok((good, applied, hlc, Some(e))),
        };
        for delta in &deltas {
            keyspace.apply(delta);
        }
        applied += deltas.len() as u64;
        hlc = hlc.max(frame_hlc);
        good += 8 + len;
    }
}

/// Reads until `buf` is full or the end: the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Loads a snapshot file: the keyspace and its high-water.
fn load_snapshot(path: &Path, replica: ReplicaId) -> io::Result<(Keyspace, u64, u64)> {
    let bytes = fs::read(path).map_err(|e| context(path, e))?;
    let corrupt = |why: &str| invalid(format!("{}: snapshot is corrupt ({why}); refusing to start", path.display()));
    if bytes.len() < 32 || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(corrupt("bad header"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != SNAPSHOT_VERSION {
        return Err(corrupt(&format!("unknown version {version}")));
    }
    let hlc = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let len = u64::from_le_bytes(bytes[20..28].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(bytes[28..32].try_into().expect("4 bytes"));
    let body = &bytes[32..];
    if len != body.len() as u64 || crc32fast::hash(body) != crc {
        return Err(corrupt("length or checksum mismatch"));
    }
    let keyspace = decode_snapshot(replica, body).map_err(|e| corrupt(&format!("undecodable: {e}")))?;
    Ok((keyspace, hlc, bytes.len() as u64))
}

impl Journal {
    /// Opens (creating if needed) the data directory `dir` and recovers the
    /// shard's state from it. `prepare` configures the fresh keyspace before
    /// anything is replayed into it (e.g. its solo mode).
    pub fn open(
        dir: &Path,
        fsync: Fsync,
        replica: ReplicaId,
        prepare: impl Fn(&mut Keyspace),
    ) -> io::Result<(Journal, Recovered)> {
        fs::create_dir_all(dir).map_err(|e| context(dir, e))?;
        // Leftovers of a rewrite that crashed before its rename.
        for (_, path) in generations(dir, "snapshot-", ".tmp")? {
            let _ = fs::remove_file(path);
        }
        let snapshots = generations(dir, "snapshot-", ".bin")?;
        let (mut keyspace, mut hlc, covered, snapshot_bytes) = match snapshots.last() {
            Some((generation, path)) => {
                let (keyspace, hlc, bytes) = load_snapshot(path, replica)?;
                (keyspace, hlc, *generation, bytes)
            }
            None => (Keyspace::new(replica), 0, 0, 0),
        };
        prepare(&mut keyspace);
        let snapshot_keys = keyspace.len() as u64;
        let journals: Vec<(u64, PathBuf)> =
            generations(dir, "journal-", ".log")?.into_iter().filter(|(g, _)| *g > covered).collect();
        let (mut replayed, mut truncated) = (0u64, 0u64);
        let mut last = None;
        for (index, (generation, path)) in journals.iter().enumerate() {
            let (good, applied, frame_hlc, stopped) = replay(path, &mut keyspace)?;
            replayed += applied;
            hlc = hlc.max(frame_hlc);
            if let Some(why) = stopped {
                if index + 1 != journals.len() {
                    return Err(invalid(format!(
                        "{}: {why} at byte {good}, and later journals exist; refusing to start",
                        path.display()
                    )));
                }
                let length = fs::metadata(path)?.len();
                truncated = length - good;
                tracing::warn!(file = %path.display(), at = good, bytes = truncated, reason = %why,
                    "journal ends with an incomplete or corrupt frame (a crash during an append); truncating it");
                let file = OpenOptions::new().write(true).open(path).map_err(|e| context(path, e))?;
                file.set_len(good).map_err(|e| context(path, e))?;
                file.sync_all().map_err(|e| context(path, e))?;
            }
            last = Some((*generation, good, applied));
        }
        let (generation, journal_bytes, journal_deltas) = last.unwrap_or((covered + 1, 0, 0));
        let path = journal_path(dir, generation);
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| context(&path, e))?;
        sync_dir(dir)?;
        let seq = keyspace.journal_seq();
        let journal = Journal {
            dir: dir.to_path_buf(),
            fsync,
            generation,
            file,
            files: RewriteInputs { journal_bytes, journal_deltas, snapshot_bytes, snapshot_keys },
            rewrite_min_bytes: REWRITE_MIN_BYTES,
            rewrite_percentage: REWRITE_PERCENTAGE,
            dirty: false,
            written_seq: seq,
            synced_seq: seq,
            retry: Vec::new(),
            broken: None,
        };
        Ok((
            journal,
            Recovered { keyspace, hlc_high_water: hlc, deltas_replayed: replayed, truncated_bytes: truncated },
        ))
    }

    /// The fsync policy.
    pub fn fsync(&self) -> Fsync {
        self.fsync
    }

    /// Changes the fsync policy (CONFIG SET appendfsync).
    pub fn set_fsync(&mut self, fsync: Fsync) {
        self.fsync = fsync;
    }

    /// The journal size below which it is never rewritten
    /// (`auto-aof-rewrite-min-size`).
    pub fn rewrite_min_bytes(&self) -> u64 {
        self.rewrite_min_bytes
    }

    /// Changes the size below which the journal is never rewritten
    /// (CONFIG SET auto-aof-rewrite-min-size).
    pub fn set_rewrite_min_bytes(&mut self, bytes: u64) {
        self.rewrite_min_bytes = bytes;
    }

    /// `auto-aof-rewrite-percentage` (see [`rewrite_due`]).
    pub fn rewrite_percentage(&self) -> u64 {
        self.rewrite_percentage
    }

    /// CONFIG SET auto-aof-rewrite-percentage (0: no automatic rewrite).
    pub fn set_rewrite_percentage(&mut self, percentage: u64) {
        self.rewrite_percentage = percentage;
    }

    /// The journal position written to the file (see `Keyspace::journal_seq`).
    pub fn written_seq(&self) -> u64 {
        self.written_seq
    }

    /// The journal position forced to disk.
    pub fn synced_seq(&self) -> u64 {
        self.synced_seq
    }

    /// Appends one frame of `deltas` (each encoded by
    /// [`meridian_proto::convert::encode_delta`]), which bring the journal to
    /// position `upto`, and forces it to disk if the policy is
    /// [`Fsync::Always`]. On an error nothing counts as written (a partial
    /// frame is cut at recovery).
    pub fn append(&mut self, deltas: Vec<Bytes>, upto: u64, hlc_high_water: u64) -> io::Result<()> {
        let path = journal_path(&self.dir, self.generation);
        if let Some(why) = &self.broken {
            self.retry.extend(deltas);
            return Err(io::Error::other(format!(
                "{}: journal unusable since an earlier error: {why}",
                path.display()
            )));
        }
        let deltas = if self.retry.is_empty() {
            deltas
        } else {
            let mut all = std::mem::take(&mut self.retry);
            all.extend(deltas);
            all
        };
        if !deltas.is_empty() {
            let frame = encode_frame(&deltas, hlc_high_water);
            if let Err(error) = self.file.write_all(&frame) {
                // Keep the deltas for the next append, and cut what part of
                // the frame reached the file: a torn frame in the middle of
                // the journal would hide every later one at recovery.
                if let Err(cut) = self.file.set_len(self.files.journal_bytes) {
                    self.broken = Some(format!("{error}; cutting the partial frame failed: {cut}"));
                }
                self.retry = deltas;
                return Err(context(&path, error));
            }
            self.files.journal_bytes += frame.len() as u64;
            self.files.journal_deltas += deltas.len() as u64;
            self.dirty = true;
        }
        self.written_seq = upto;
        if self.fsync == Fsync::Always {
            self.sync()?;
        }
        Ok(())
    }

    /// Forces what was written to disk (the once-a-second fsync).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            let path = journal_path(&self.dir, self.generation);
            self.file.sync_data().map_err(|e| context(&path, e))?;
            self.dirty = false;
        }
        self.synced_seq = self.written_seq;
        Ok(())
    }

    /// Starts a sync to be done without holding the journal: a handle on the
    /// journal file and the position it will make durable, or None if
    /// nothing written is waiting for disk. Finish with [`Journal::end_sync`].
    pub fn begin_sync(&mut self) -> io::Result<Option<PendingSync>> {
        if !self.dirty {
            self.synced_seq = self.written_seq;
            return Ok(None);
        }
        let path = journal_path(&self.dir, self.generation);
        let file = self.file.try_clone().map_err(|e| context(&path, e))?;
        self.dirty = false;
        Ok(Some(PendingSync { file, seq: self.written_seq, path }))
    }

    /// Records the outcome of a sync begun with [`Journal::begin_sync`]. A
    /// failed one leaves the journal waiting for disk, to be retried.
    pub fn end_sync(&mut self, pending: &PendingSync, result: io::Result<()>) -> io::Result<()> {
        match result {
            Ok(()) => {
                self.synced_seq = self.synced_seq.max(pending.seq);
                Ok(())
            }
            Err(error) => {
                self.dirty = true;
                Err(context(&pending.path, error))
            }
        }
    }

    /// True when the journal holds enough superseded data to be replaced by
    /// a snapshot ([`rewrite_due`]), the shard now holding `keys` keys.
    pub fn needs_rewrite(&self, keys: u64) -> bool {
        rewrite_due(&self.files, keys, self.rewrite_min_bytes, self.rewrite_percentage)
    }

    /// Size of the current journal file.
    pub fn journal_bytes(&self) -> u64 {
        self.files.journal_bytes
    }

    /// Starts a rewrite: forces the current journal to disk and moves on to
    /// a new generation. Returns the generation the snapshot must cover —
    /// take the snapshot of the state *now*, with every delta up to here
    /// already appended.
    pub fn rotate(&mut self) -> io::Result<u64> {
        self.sync()?;
        let covered = self.generation;
        let next = covered + 1;
        let path = journal_path(&self.dir, next);
        self.file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| context(&path, e))?;
        sync_dir(&self.dir)?;
        self.generation = next;
        self.files.journal_bytes = 0;
        self.files.journal_deltas = 0;
        Ok(covered)
    }

    /// Finishes a rewrite: writes `keyspace`'s snapshot as covering
    /// generation `covered` (from [`Journal::rotate`]), durably, then deletes
    /// what it replaces.
    pub fn write_snapshot(&mut self, covered: u64, keyspace: &Keyspace, hlc_high_water: u64) -> io::Result<()> {
        let body = encode_snapshot(keyspace);
        let bytes = write_snapshot_file(&self.dir, covered, &body, hlc_high_water)?;
        self.set_snapshot(bytes, keyspace.len() as u64);
        Ok(())
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records the size and key count of a snapshot written with
    /// [`write_snapshot_file`] (outside the journal's lock), for the next
    /// rewrite decision.
    pub fn set_snapshot(&mut self, bytes: u64, keys: u64) {
        self.files.snapshot_bytes = bytes;
        self.files.snapshot_keys = keys;
    }

    /// True while appends fail (the disk is full, or the file broke).
    pub fn is_failing(&self) -> bool {
        !self.retry.is_empty() || self.broken.is_some()
    }
}

/// How much of a snapshot is written between two data syncs: Redis's
/// incremental fsync during a rewrite (`aof-rewrite-incremental-fsync`),
/// for the same reason (D98): one sync of a whole 100 MB file at the end
/// makes the filesystem commit it in one go, and the journal's appends,
/// which extend their file, wait for that commit.
pub const SNAPSHOT_SYNC_BYTES: usize = 4 << 20;

/// Writes a snapshot file for generation `covered` (temporary file, synced
/// every [`SNAPSHOT_SYNC_BYTES`] and at the end, rename, directory fsync)
/// and removes the snapshots and journals it covers. Returns its size.
pub fn write_snapshot_file(dir: &Path, covered: u64, body: &[u8], hlc_high_water: u64) -> io::Result<u64> {
    let final_path = snapshot_path(dir, covered);
    let tmp = dir.join(format!("snapshot-{covered:010}.tmp"));
    let mut file = File::create(&tmp).map_err(|e| context(&tmp, e))?;
    let mut header = Vec::with_capacity(32);
    header.extend_from_slice(SNAPSHOT_MAGIC);
    header.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    header.extend_from_slice(&hlc_high_water.to_le_bytes());
    header.extend_from_slice(&(body.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    let write_synced = |file: &mut File| {
        file.write_all(&header)?;
        for chunk in body.chunks(SNAPSHOT_SYNC_BYTES) {
            file.write_all(chunk)?;
            file.sync_data()?;
        }
        file.sync_all()
    };
    write_synced(&mut file).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        context(&tmp, e)
    })?;
    fs::rename(&tmp, &final_path).map_err(|e| context(&final_path, e))?;
    sync_dir(dir)?;
    for (generation, path) in generations(dir, "journal-", ".log")? {
        if generation <= covered {
            let _ = fs::remove_file(path);
        }
    }
    for (generation, path) in generations(dir, "snapshot-", ".bin")? {
        if generation < covered {
            let _ = fs::remove_file(path);
        }
    }
    Ok(header.len() as u64 + body.len() as u64)
}

#[cfg(test)]
mod tests {
    use meridian_crdt::keyspace::{End, ExpiryChange, Moment};

    use super::*;

    fn at(n: u64) -> Moment {
        Moment { hlc: meridian_crdt::clock::hlc_from_unix_ms(1_790_000_000_000 + n, 0), wall_ms: 1_790_000_000_000 + n }
    }

    fn journaled() -> Keyspace {
        let mut keyspace = Keyspace::new(ReplicaId(1));
        keyspace.set_journal(true);
        keyspace
    }

    fn open(dir: &Path) -> (Journal, Recovered) {
        Journal::open(dir, Fsync::Always, ReplicaId(1), |k| k.set_journal(true)).expect("opens")
    }

    /// Appends what the keyspace journaled.
    fn commit(journal: &mut Journal, keyspace: &mut Keyspace, hlc: u64) {
        let (deltas, upto) = keyspace.take_journal();
        journal.append(deltas.iter().map(|d| Bytes::from(encode_delta(d))).collect(), upto, hlc).expect("append");
    }

    fn without_journal(mut keyspace: Keyspace) -> Keyspace {
        keyspace.set_journal(false);
        keyspace
    }

    #[test]
    fn a_reopened_directory_has_every_committed_write() {
        let dir = tempdir();
        let (mut journal, recovered) = open(&dir);
        assert_eq!(recovered.deltas_replayed, 0);
        let mut keyspace = journaled();
        keyspace.set(b"a", b"1", ExpiryChange::Clear, at(1));
        keyspace.incr_by(b"n", 5, at(2)).unwrap();
        commit(&mut journal, &mut keyspace, at(2).hlc);
        keyspace.push(b"l", &[b"x", b"y"], End::Back, at(3)).unwrap();
        keyspace.delete(b"a", at(4));
        keyspace.sadd(b"s", &[b"m"], at(5)).unwrap();
        commit(&mut journal, &mut keyspace, at(5).hlc);
        drop(journal);

        let (_, recovered) = open(&dir);
        assert_eq!(recovered.deltas_replayed, 5);
        assert_eq!(recovered.hlc_high_water, at(5).hlc);
        assert_eq!(recovered.truncated_bytes, 0);
        assert_eq!(without_journal(recovered.keyspace), without_journal(keyspace));
    }

    /// The journal counts its bytes and deltas, and a reopened one the
    /// snapshot's keys, for the rewrite rule (D110): new keys are not due,
    /// overwrites are, and the decision survives a restart.
    #[test]
    fn the_rewrite_decision_follows_overwrites_and_survives_a_restart() {
        let dir = tempdir();
        let (mut journal, _) = open(&dir);
        journal.set_rewrite_min_bytes(1024);
        let mut keyspace = journaled();
        for i in 0..100u64 {
            keyspace.set(format!("key-{i}").as_bytes(), b"value", ExpiryChange::Clear, at(i + 1));
        }
        commit(&mut journal, &mut keyspace, at(100).hlc);
        assert_eq!(journal.files.journal_deltas, 100);
        assert!((1024..8 * 1024).contains(&journal.journal_bytes()), "{}", journal.journal_bytes());
        assert!(!journal.needs_rewrite(keyspace.len() as u64), "100 new keys: nothing superseded");
        assert!(journal.needs_rewrite(0), "unless they were deleted since");
        let covered = journal.rotate().unwrap();
        journal.write_snapshot(covered, &keyspace, at(100).hlc).unwrap();
        assert_eq!(journal.files.snapshot_keys, 100);
        // Overwrites up to half the snapshot's size: not due yet.
        let mut n = 0;
        while journal.journal_bytes() < journal.files.snapshot_bytes / 2 {
            keyspace.set(b"key-0", format!("value {n}").as_bytes(), ExpiryChange::Clear, at(200 + n));
            commit(&mut journal, &mut keyspace, at(200 + n).hlc);
            n += 1;
        }
        assert!(journal.journal_bytes() >= 1024);
        assert!(!journal.needs_rewrite(100), "{n} overwrites weigh less than the snapshot");
        drop(journal);

        let (mut journal, recovered) = open(&dir);
        journal.set_rewrite_min_bytes(1024);
        assert_eq!(journal.files.snapshot_keys, 100);
        assert_eq!(journal.files.journal_deltas, n);
        assert!(!journal.needs_rewrite(100));
        let mut keyspace = recovered.keyspace;
        while journal.journal_bytes() < journal.files.snapshot_bytes {
            keyspace.set(b"key-1", format!("value {n}").as_bytes(), ExpiryChange::Clear, at(200 + n));
            commit(&mut journal, &mut keyspace, at(200 + n).hlc);
            n += 1;
        }
        assert!(journal.needs_rewrite(100), "{n} overwrites outweigh the snapshot");
        assert!(!journal.needs_rewrite(100 + n), "unless each had added a key");
    }

    /// A snapshot of several sync chunks (`SNAPSHOT_SYNC_BYTES`) is whole.
    #[test]
    fn a_snapshot_written_in_synced_chunks_recovers_whole() {
        let dir = tempdir();
        let (mut journal, _) = open(&dir);
        let mut keyspace = journaled();
        let value = vec![b'v'; 64 << 10];
        for i in 0..160u64 {
            keyspace.set(format!("key-{i}").as_bytes(), &value, ExpiryChange::Clear, at(i + 1));
        }
        commit(&mut journal, &mut keyspace, at(160).hlc);
        let covered = journal.rotate().expect("rotate");
        journal.write_snapshot(covered, &keyspace, at(160).hlc).expect("snapshot");
        let size = std::fs::metadata(snapshot_path(&dir, covered)).expect("the snapshot").len();
        assert!(size > 2 * SNAPSHOT_SYNC_BYTES as u64, "{size} bytes");
        drop(journal);
        let (_, recovered) = open(&dir);
        assert_eq!(recovered.deltas_replayed, 0);
        assert_eq!(without_journal(recovered.keyspace), without_journal(keyspace));
    }

    #[test]
    fn a_torn_tail_is_cut_and_what_came_before_survives() {
        let dir = tempdir();
        let (mut journal, _) = open(&dir);
        let mut keyspace = journaled();
        keyspace.set(b"kept", b"1", ExpiryChange::Clear, at(1));
        commit(&mut journal, &mut keyspace, at(1).hlc);
        let good = journal.journal_bytes();
        let mut expected = Keyspace::new(ReplicaId(1));
        expected.set(b"kept", b"1", ExpiryChange::Clear, at(1));
        keyspace.set(b"torn", b"2", ExpiryChange::Clear, at(2));
        commit(&mut journal, &mut keyspace, at(2).hlc);
        drop(journal);
        // Cut the second frame in the middle, as a crash mid-append would.
        let path = journal_path(&dir, 1);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(good + 5).unwrap();
        drop(file);

        let (mut journal, recovered) = open(&dir);
        assert_eq!(recovered.truncated_bytes, 5);
        let mut more = recovered.keyspace;
        more.take_journal();
        assert_eq!(
            without_journal(Keyspace::restore(ReplicaId(1), more.context().clone(), &more.snapshot()).unwrap()),
            expected
        );

        assert_eq!(fs::metadata(&path).unwrap().len(), good, "the torn bytes are gone");
        // Appending goes on after the good frames.
        more.set(b"after", b"3", ExpiryChange::Clear, at(3));
        commit(&mut journal, &mut more, at(3).hlc);
        drop(journal);
        let (_, recovered) = open(&dir);
        assert!(recovered.keyspace.exists(b"after", at(3).wall_ms));
        assert!(recovered.keyspace.exists(b"kept", at(3).wall_ms));
        assert!(!recovered.keyspace.exists(b"torn", at(3).wall_ms));
    }

    #[test]
    fn a_flipped_bit_in_the_last_frame_is_cut_but_in_an_older_journal_is_an_error() {
        let dir = tempdir();
        let (mut journal, _) = open(&dir);
        let mut keyspace = journaled();
        keyspace.set(b"a", b"1", ExpiryChange::Clear, at(1));
        commit(&mut journal, &mut keyspace, at(1).hlc);
        drop(journal);
        let path = journal_path(&dir, 1);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let (_, recovered) = open(&dir);
        assert_eq!(recovered.truncated_bytes, bytes.len() as u64);
        assert!(!recovered.keyspace.exists(b"a", at(1).wall_ms));

        // Corruption followed by a later journal cannot be a torn append.
        fs::write(&path, &bytes).unwrap();
        fs::write(journal_path(&dir, 2), b"").unwrap();
        let error = Journal::open(&dir, Fsync::No, ReplicaId(1), |_| {}).unwrap_err();
        assert!(error.to_string().contains("refusing to start"), "{error}");
    }

    #[test]
    fn a_rewrite_replaces_journals_with_a_snapshot_and_recovers_the_same_state() {
        let dir = tempdir();
        let (mut journal, _) = open(&dir);
        let mut keyspace = journaled();
        for i in 0..100u64 {
            keyspace.set(format!("k{i}").as_bytes(), b"v", ExpiryChange::Clear, at(i));
            keyspace.push(b"list", &[format!("e{i}").as_bytes()], End::Back, at(i)).unwrap();
        }
        commit(&mut journal, &mut keyspace, at(100).hlc);
        let covered = journal.rotate().unwrap();
        assert_eq!(covered, 1);
        journal.write_snapshot(covered, &keyspace, at(100).hlc).unwrap();
        assert!(!journal_path(&dir, 1).exists(), "the covered journal is deleted");
        keyspace.delete(b"k7", at(200));
        commit(&mut journal, &mut keyspace, at(200).hlc);
        drop(journal);

        let (_, recovered) = open(&dir);
        assert_eq!(recovered.deltas_replayed, 1, "only the journal after the snapshot is replayed");
        assert_eq!(recovered.hlc_high_water, at(200).hlc);
        assert_eq!(without_journal(recovered.keyspace), without_journal(keyspace));
    }

    #[test]
    fn a_sync_outside_the_lock_advances_the_synced_position_only_when_it_succeeds() {
        let dir = tempdir();
        let (mut journal, _) = Journal::open(&dir, Fsync::EverySec, ReplicaId(1), |k| k.set_journal(true)).unwrap();
        let mut keyspace = journaled();
        keyspace.set(b"k", b"v", ExpiryChange::Clear, at(1));
        commit(&mut journal, &mut keyspace, at(1).hlc);
        let written = journal.written_seq();
        assert!(journal.synced_seq() < written);
        let pending = journal.begin_sync().unwrap().expect("something to sync");
        // Appends meanwhile are not covered by this sync.
        keyspace.set(b"k2", b"v", ExpiryChange::Clear, at(2));
        commit(&mut journal, &mut keyspace, at(2).hlc);
        let failed = journal.end_sync(&pending, Err(io::Error::other("disk gone")));
        assert!(failed.unwrap_err().to_string().contains("disk gone"));
        assert!(journal.synced_seq() < written, "a failed sync moves nothing");
        let pending = journal.begin_sync().unwrap().expect("still waiting for disk");
        let result = pending.sync();
        journal.end_sync(&pending, result).unwrap();
        assert_eq!(journal.synced_seq(), journal.written_seq());
        assert!(journal.begin_sync().unwrap().is_none(), "nothing left to sync");
    }

    #[test]
    fn a_corrupt_snapshot_refuses_to_start() {
        let dir = tempdir();
        let keyspace = Keyspace::new(ReplicaId(1));
        write_snapshot_file(&dir, 3, &encode_snapshot(&keyspace), 0).unwrap();
        let path = snapshot_path(&dir, 3);
        let mut bytes = fs::read(&path).unwrap();
        let at = 40.min(bytes.len() - 1);
        bytes[at] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let error = Journal::open(&dir, Fsync::No, ReplicaId(1), |_| {}).unwrap_err();
        assert!(error.to_string().contains("snapshot is corrupt"), "{error}");
    }

    #[test]
    fn frames_decode_only_what_was_encoded() {
        assert!(decode_payload(&[]).is_err());
        assert!(decode_payload(&[0; 12]).is_ok());
        let mut trailing = vec![0u8; 12];
        trailing.push(7);
        assert!(decode_payload(&trailing).is_err());
        let mut huge_count = vec![0u8; 8];
        huge_count.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_payload(&huge_count).is_err(), "a count beyond the payload is an error, not an allocation");
    }

    /// D110: the rewrite rule weighs superseded bytes against live ones.
    #[test]
    fn a_rewrite_is_due_for_superseded_data_not_for_new_keys() {
        const MB: u64 = 1 << 20;
        let files = |journal_mb: u64, deltas: u64, snapshot_mb: u64, snapshot_keys: u64| RewriteInputs {
            journal_bytes: journal_mb * MB,
            journal_deltas: deltas,
            snapshot_bytes: snapshot_mb * MB,
            snapshot_keys,
        };
        let min = 64 * MB;
        // Overwrites only (the key count unchanged): Redis's rule, journal
        // at least the snapshot's size and the minimum.
        assert!(!rewrite_due(&files(63, 1_000, 10, 100), 100, min, 100), "below the minimum");
        assert!(rewrite_due(&files(64, 1_000, 10, 100), 100, min, 100));
        assert!(!rewrite_due(&files(99, 1_000, 100, 100), 100, min, 100));
        assert!(rewrite_due(&files(100, 1_000, 100, 100), 100, min, 100));
        // Only new keys: nothing superseded, no rewrite below the bound of
        // 8 × max(snapshot, minimum).
        assert!(!rewrite_due(&files(500, 1_000_000, 100, 2_000_000), 3_000_000, min, 100));
        assert!(!rewrite_due(&files(511, 1_000_000, 0, 0), 1_000_000, min, 100));
        assert!(rewrite_due(&files(512, 1_000_000, 0, 0), 1_000_000, min, 100), "the bound");
        assert!(rewrite_due(&files(800, 1_000_000, 100, 0), 1_000_000, min, 100), "the bound");
        // Half new keys, half overwrites: half the journal superseded, never
        // as much as what is live (the files stay under twice the live
        // bytes); a quarter new keys: due once three quarters of the
        // journal outweigh the rest and the snapshot.
        assert!(!rewrite_due(&files(200, 1_000, 100, 1_000), 1_500, min, 100), "100 superseded, 200 live");
        assert!(!rewrite_due(&files(400, 1_000, 100, 1_000), 1_500, min, 100), "200 superseded, 300 live");
        assert!(!rewrite_due(&files(190, 1_000, 100, 1_000), 1_250, min, 100), "142 superseded, 147 live");
        assert!(rewrite_due(&files(400, 1_000, 100, 1_000), 1_250, min, 100), "300 superseded, 200 live");
        // Keys deleted: their snapshot share counts as superseded too.
        assert!(rewrite_due(&files(64, 1_000, 300, 10_000), 2_000, min, 100));
        // The percentage: 0 turns automatic rewrites off, 200 waits for
        // twice as much superseded as live.
        assert!(!rewrite_due(&files(4_000, 1_000, 100, 100), 100, min, 0));
        assert!(!rewrite_due(&files(150, 1_000, 100, 100), 100, min, 200));
        assert!(rewrite_due(&files(200, 1_000, 100, 100), 100, min, 200));
    }

    /// A fresh directory under the system temp dir, unique per test.
    fn tempdir() -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("meridian-journal-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
