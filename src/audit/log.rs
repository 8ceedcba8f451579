//! The audit log on disk: append-only JSON Lines segments with a hash chain and signed
//! checkpoints.
//!
//! Owns the file format, crash recovery, appending with fsync, and verification. Layout under
//! `<dataDir>/audit/`:
//!
//! - `segment-<first seq, 20 digits>.jsonl` — one record per line:
//!   `{"prevHash": <hex SHA-256 of the previous line>, "seq": n, ...event}`. The first record
//!   of the log has a `prevHash` of 64 zeros. `seq` increases by exactly one per record across
//!   segments, so an edited, deleted, inserted or reordered record breaks the chain at the next
//!   record. A segment is closed when it reaches `audit.segmentMaxBytes`.
//! - `checkpoints.jsonl` — every `audit.checkpointEvery` records and at shutdown:
//!   `{"seq", "hash", "time", "kid", "sig"}`, the Ed25519 signature (by the gateway's token
//!   signing key) of `actgate-audit-checkpoint:v1:<seq>:<hash>`. A log that ends before a
//!   checkpoint's `seq`, or whose record there hashes differently, was truncated or rewritten.
//!   `actgate audit checkpoint` exports one to keep elsewhere, out of an intruder's reach.
//!
//! The segment being written is kept zero-filled ahead of its end ([`ZERO_AHEAD`]): a
//! commit then overwrites blocks that already exist instead of growing the file, so its
//! `fdatasync` flushes data only, without a journal commit for the new size — what PostgreSQL
//! does for its WAL, and on ext4 the larger part of a batch's cost (measured: 150–230 → 60–70 µs
//! of system time per commit). The log's end is its first NUL byte (a JSON line never holds
//! one), every reader stops there, and a segment is cut back to its end when it is closed
//! (rotation, shutdown), so a closed segment is plain JSON Lines.
//!
//! A crash can leave a torn tail: a last line cut short, or — in the zero-filled part, whose
//! blocks the disk may persist in any order before the commit's `fdatasync` returns — records
//! after a run of NULs. On open it is detected, copied aside (`<segment>.torn-<unix ms>`), cut
//! off, and reported. A complete line that does not parse, before the end, is corruption, and
//! actgate refuses to start on it.

use std::borrow::BorrowMut;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AuditEvent;

/// The `prevHash` of the first record.
pub const GENESIS: [u8; 32] = [0u8; 32];
/// Checkpoint file name.
pub const CHECKPOINTS: &str = "checkpoints.jsonl";
/// How far past its end the segment being written is kept zero-filled. Extending it costs one
/// size change (a journal commit) per this many bytes instead of one per commit.
pub const ZERO_AHEAD: u64 = 1 << 20;
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
/// Most records one commit appends (the writer's batch limit). Only the last commit can be
/// torn by a crash — every earlier one was synced before the next began — so a torn tail
/// holding a record numbered further than this past the last intact one is not a crash.
pub const MAX_COMMIT_RECORDS: usize = 4096;

/// One line of a segment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Hex SHA-256 of the previous line's bytes.
    pub prev_hash: String,
    /// The event (its `seq` is the record's position).
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// A signed statement of the log's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Sequence number of the record it covers.
    pub seq: u64,
    /// Hex SHA-256 of that record's line.
    pub hash: String,
    /// When it was made (RFC 3339).
    pub time: String,
    /// Signing key id.
    pub kid: String,
    /// Hex Ed25519 signature of [`Checkpoint::message`].
    pub sig: String,
}

impl Checkpoint {
    /// The signed bytes.
    pub fn message(seq: u64, hash: &str) -> String {
        format!("actgate-audit-checkpoint:v1:{seq}:{hash}")
    }

    /// Signs the head `(seq, hash)` with a 64-byte Ed25519 secret key.
    pub fn sign(seq: u64, hash: &str, kid: &str, secret: &[u8]) -> Option<Checkpoint> {
        let sk = ed25519_compact::SecretKey::from_slice(secret).ok()?;
        let sig = sk.sign(Self::message(seq, hash), None);
        Some(Checkpoint {
            seq,
            hash: hash.to_string(),
            time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            kid: kid.to_string(),
            sig: hex::encode(sig.as_ref()),
        })
    }

    /// Whether the signature is valid under the 32-byte public key.
    pub fn verify(&self, public: &[u8]) -> bool {
        let (Ok(pk), Ok(sig)) = (
            ed25519_compact::PublicKey::from_slice(public),
            hex::decode(&self.sig)
                .map_err(|_| ())
                .and_then(|b| ed25519_compact::Signature::from_slice(&b).map_err(|_| ())),
        ) else {
            return false;
        };
        pk.verify(Self::message(self.seq, &self.hash), &sig).is_ok()
    }
}

/// Hash of one line (without its newline).
pub fn line_hash(line: &[u8]) -> [u8; 32] {
    Sha256::digest(line).into()
}

/// Segment files of `dir`, in log order.
pub fn segments(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("segment-") && n.ends_with(".jsonl"))
            })
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    out.sort();
    Ok(out)
}

/// The first sequence number a segment's name declares.
fn first_seq(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_prefix("segment-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

fn segment_name(first_seq: u64) -> String {
    format!("segment-{first_seq:020}.jsonl")
}

/// Where a record's line is: its segment (by first seq), byte offset and length (without
/// the newline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinePos {
    /// First seq of the segment (its file name).
    pub segment: u64,
    /// Byte offset of the line in the segment.
    pub offset: u64,
    /// Length of the line, newline excluded.
    pub len: u32,
}

/// The file of the segment whose first seq is `first`.
pub fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(segment_name(first))
}

/// What opening the log found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes of a torn last line that were cut off (and copied aside).
    pub torn_bytes: u64,
    /// Where the torn bytes were copied.
    pub torn_copy: Option<PathBuf>,
}

/// An open log, positioned at its end.
pub struct LogFile {
    dir: PathBuf,
    file: File,
    /// First seq of the segment being appended to (its name).
    segment: u64,
    /// Where the next line goes: the end of the records.
    len: u64,
    /// The file's size: `len..zeroed` holds only NUL bytes.
    zeroed: u64,
    /// After a failed commit that could not be undone: how far its bytes may reach, for the
    /// next zero-filling to cover (0: nothing to scrub).
    scrub_to: u64,
    max_len: u64,
    /// Sequence number of the last record (0 when empty).
    pub last_seq: u64,
    /// Hash of the last record's line (GENESIS when empty).
    pub last_hash: [u8; 32],
}

/// Why the log could not be opened or appended to.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A complete line that is not a record, before the end of the last segment.
    #[error(
        "{path}: line {line} is not an audit record; the log is damaged (run `actgate audit verify`)"
    )]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

impl LogFile {
    /// Opens the log in `dir` (created 0700 if absent), repairing a torn last line.
    pub fn open(dir: &Path, max_len: u64) -> Result<(LogFile, Recovery), LogError> {
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(io_at(dir))?;
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_at(dir))?;
        }
        let segs = segments(dir).map_err(io_at(dir))?;
        let mut recovery = Recovery::default();
        let Some(last) = segs.last().cloned() else {
            let path = dir.join(segment_name(1));
            let file = open_segment(&path)?;
            sync_dir(dir)?;
            return Ok((
                LogFile {
                    dir: dir.to_path_buf(),
                    file,
                    segment: 1,
                    len: 0,
                    zeroed: 0,
                    scrub_to: 0,
                    max_len,
                    last_seq: 0,
                    last_hash: GENESIS,
                },
                recovery,
            ));
        };
        let mut bytes = Vec::new();
        File::open(&last)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io_at(&last))?;
        // The records end at the first NUL (the zero-filled part begins there).
        let end = data_end(&bytes);
        // Walk complete lines; the first one that does not parse must be the tail.
        let mut good_end = 0usize;
        let mut last_line: Option<(u64, [u8; 32])> = None;
        let mut line_no = 0usize;
        let mut pos = 0usize;
        while pos < end {
            let Some(nl) = bytes[pos..end].iter().position(|b| *b == b'\n') else {
                break;
            };
            let line = &bytes[pos..pos + nl];
            line_no += 1;
            match serde_json::from_slice::<Record>(line) {
                Ok(rec) => {
                    last_line = Some((rec.event.seq, line_hash(line)));
                    pos += nl + 1;
                    good_end = pos;
                }
                Err(_) => {
                    // Torn only if nothing after it (up to the end) parses either.
                    let rest = &bytes[pos + nl + 1..end];
                    let later_record = rest
                        .split(|b| *b == b'\n')
                        .any(|l| serde_json::from_slice::<Record>(l).is_ok());
                    if later_record {
                        return Err(LogError::Corrupt {
                            path: last.clone(),
                            line: line_no,
                        });
                    }
                    break;
                }
            }
        }
        let (last_seq, last_hash) = match last_line {
            Some(l) => l,
            // An empty last segment: the head is the previous segment's last record.
            None => match segs.len() {
                1 => (0, GENESIS),
                n => last_record(&segs[n - 2])?.unwrap_or((0, GENESIS)),
            },
        };
        // Past the records only NULs may follow; anything else is a torn tail (a line cut
        // short, or records the disk kept beyond a run of NULs the crash left unwritten).
        let torn_end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        let mut zeroed = bytes.len() as u64;
        if good_end < torn_end {
            let torn = &bytes[good_end..torn_end];
            // A crash tears only the last commit: a record in the tail from before the last
            // intact one, or further past it than one commit holds, means the log was damaged
            // (a NUL written into it) — refuse, never cut committed records away as a repair.
            for piece in torn.split(|b| *b == b'\n' || *b == 0) {
                if let Ok(rec) = serde_json::from_slice::<Record>(piece) {
                    let seq = rec.event.seq;
                    if seq <= last_seq || seq > last_seq + MAX_COMMIT_RECORDS as u64 {
                        // Named by where the damage begins: the first line of the tail.
                        return Err(LogError::Corrupt {
                            path: last.clone(),
                            line: bytes[..good_end].iter().filter(|b| **b == b'\n').count() + 1,
                        });
                    }
                }
            }
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let copy = last.with_extension(format!("jsonl.torn-{stamp}"));
            // The copy is on disk before the segment is cut.
            File::create(&copy)
                .and_then(|mut f| f.write_all(torn).and_then(|()| f.sync_all()))
                .map_err(io_at(&copy))?;
            sync_dir(dir)?;
            let f = OpenOptions::new()
                .write(true)
                .open(&last)
                .map_err(io_at(&last))?;
            f.set_len(good_end as u64).map_err(io_at(&last))?;
            f.sync_all().map_err(io_at(&last))?;
            recovery.torn_bytes = torn.len() as u64;
            recovery.torn_copy = Some(copy);
            zeroed = good_end as u64;
        }
        let file = open_segment(&last)?;
        let segment = first_seq(&last).ok_or_else(|| LogError::Corrupt {
            path: last.clone(),
            line: 0,
        })?;
        Ok((
            LogFile {
                dir: dir.to_path_buf(),
                file,
                segment,
                len: good_end as u64,
                zeroed,
                scrub_to: 0,
                max_len,
                last_seq,
                last_hash,
            },
            recovery,
        ))
    }

    /// Appends events (assigning their `seq`), then fsyncs. On error the file is cut back to
    /// where it was and the head is unchanged, so a retry appends the same records again.
    pub fn append<E: BorrowMut<AuditEvent>>(
        &mut self,
        events: &mut [E],
    ) -> Result<Vec<LinePos>, LogError> {
        if self.len >= self.max_len {
            self.rotate()?;
        }
        let mut buf = Vec::with_capacity(events.len() * 768);
        let mut positions = Vec::with_capacity(events.len());
        let mut seq = self.last_seq;
        let mut hash = self.last_hash;
        let mut hex = [0u8; 64];
        for e in events.iter_mut() {
            let e = e.borrow_mut();
            seq += 1;
            e.seq = seq;
            let start = buf.len();
            for (i, b) in hash.iter().enumerate() {
                hex[2 * i] = HEX_DIGITS[usize::from(b >> 4)];
                hex[2 * i + 1] = HEX_DIGITS[usize::from(b & 0xf)];
            }
            super::line::write_line(&mut buf, &hex, e).map_err(|e| LogError::Io {
                path: self.dir.clone(),
                source: io::Error::other(e),
            })?;
            hash = line_hash(&buf[start..]);
            positions.push(LinePos {
                segment: self.segment,
                offset: self.len + start as u64,
                len: (buf.len() - start) as u32,
            });
            buf.push(b'\n');
        }
        let end = self.len + buf.len() as u64;
        let zeroed_before = self.zeroed;
        let result = self.file.write_all_at(&buf, self.len).and_then(|()| {
            // Zero-filling ahead is an optimisation: where it fails (a full disk) the records
            // are committed without it.
            let _ = self.zero_ahead(end);
            self.file.sync_data()
        });
        if let Err(source) = result {
            self.roll_back(zeroed_before, end);
            return Err(LogError::Io {
                path: self.dir.clone(),
                source,
            });
        }
        self.len = end;
        self.last_seq = seq;
        self.last_hash = hash;
        Ok(positions)
    }

    /// Keeps the file zero-filled up to [`ZERO_AHEAD`] past `end` (never past the segment's
    /// size limit, except to hold `end` itself), in the same commit as the records.
    fn zero_ahead(&mut self, end: u64) -> io::Result<()> {
        if end <= self.zeroed {
            return Ok(());
        }
        self.zeroed = end;
        let target = (end + ZERO_AHEAD)
            .min(self.max_len.max(end))
            .max(std::mem::take(&mut self.scrub_to));
        fill_zeros(&self.file, &mut self.zeroed, target)
    }

    /// Undoes a failed commit: what it wrote is zeroed again and the file keeps the size it
    /// had (so a full disk does not get back the space the zero-filled part holds, only to
    /// lose it again at the next commit). If even that fails, the file is cut to its records.
    fn roll_back(&mut self, zeroed_before: u64, failed_end: u64) {
        let keep = zeroed_before.max(self.len);
        let mut at = self.len;
        let restored = self
            .file
            .set_len(keep)
            .and_then(|()| fill_zeros(&self.file, &mut at, keep));
        self.zeroed = keep;
        if restored.is_err() {
            let _ = self.file.set_len(self.len);
            self.zeroed = self.len;
            // If even the cut failed, the failed commit's bytes may still be there: the next
            // zero-filling covers them.
            self.scrub_to = self.scrub_to.max(failed_end);
        }
        // What was undone is on disk as undone, so a crash now cannot bring the failed
        // commit's records back.
        let _ = self.file.sync_data();
    }

    /// Cuts the segment back to its records (dropping the zero-filled part) and syncs it.
    fn close_segment(&mut self) -> Result<(), LogError> {
        let path = segment_path(&self.dir, self.segment);
        if self.zeroed > self.len {
            self.file.set_len(self.len).map_err(io_at(&path))?;
            self.zeroed = self.len;
        }
        self.file.sync_all().map_err(io_at(&path))
    }

    fn rotate(&mut self) -> Result<(), LogError> {
        self.close_segment()?;
        let path = self.dir.join(segment_name(self.last_seq + 1));
        self.file = open_segment(&path)?;
        sync_dir(&self.dir)?;
        self.segment = self.last_seq + 1;
        self.len = 0;
        self.zeroed = 0;
        Ok(())
    }

    /// Closes the log at shutdown: the segment being written is cut back to its records, so
    /// every segment at rest is plain JSON Lines. (A log dropped without it — a crash — opens
    /// just as well.)
    pub fn finish(mut self) -> Result<(), LogError> {
        self.close_segment()
    }

    /// The directory the log is in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends a checkpoint of the current head to `checkpoints.jsonl` and fsyncs it.
    pub fn checkpoint(&self, kid: &str, secret: &[u8]) -> Result<Option<Checkpoint>, LogError> {
        if self.last_seq == 0 {
            return Ok(None);
        }
        let Some(cp) = Checkpoint::sign(self.last_seq, &hex::encode(self.last_hash), kid, secret)
        else {
            return Ok(None);
        };
        let path = self.dir.join(CHECKPOINTS);
        let mut f = open_append(&path)?;
        let mut line = serde_json::to_vec(&cp).map_err(|e| LogError::Io {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        line.push(b'\n');
        f.write_all(&line)
            .and_then(|()| f.sync_data())
            .map_err(io_at(&path))?;
        Ok(Some(cp))
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn open_append(path: &Path) -> Result<File, LogError> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io_at(path))
}

/// A segment, opened for writing at explicit offsets (its end is not the file's end).
fn open_segment(path: &Path) -> Result<File, LogError> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io_at(path))
}

/// Writes zeros from `*at` up to `to`, moving `*at` past each chunk written (so after an
/// error it says how far the zeros reach).
fn fill_zeros(file: &File, at: &mut u64, to: u64) -> io::Result<()> {
    while *at < to {
        let n = (to - *at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], *at)?;
        *at += n as u64;
    }
    Ok(())
}

/// Where a segment's records end: at its first NUL byte, where the zero-filled part begins.
pub fn data_end(bytes: &[u8]) -> usize {
    bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len())
}

/// Reads the next line (without its newline) into `line`. False at the end of the records:
/// the end of the file, a NUL (the zero-filled part), or a last line not yet complete — so a
/// reader never reads through the zero-filled part looking for a newline.
fn next_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<bool> {
    line.clear();
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(false);
        }
        match buf.iter().position(|b| *b == b'\n' || *b == 0) {
            Some(i) if buf[i] == b'\n' => {
                line.extend_from_slice(&buf[..i]);
                reader.consume(i + 1);
                return Ok(true);
            }
            Some(_) => return Ok(false),
            None => {
                let n = buf.len();
                line.extend_from_slice(buf);
                reader.consume(n);
            }
        }
    }
}

/// The (seq, hash) of the last complete record of a segment.
fn last_record(path: &Path) -> Result<Option<(u64, [u8; 32])>, LogError> {
    let f = File::open(path).map_err(io_at(path))?;
    let mut last = None;
    let (mut reader, mut line) = (BufReader::new(f), Vec::new());
    while next_line(&mut reader, &mut line).map_err(io_at(path))? {
        if let Ok(rec) = serde_json::from_slice::<Record>(&line) {
            last = Some((rec.event.seq, line_hash(&line)));
        }
    }
    Ok(last)
}

/// The (seq, hash) of the log's last complete record, or `None` for an empty log.
pub fn head(dir: &Path) -> io::Result<Option<(u64, [u8; 32])>> {
    let segs = segments(dir)?;
    for seg in segs.iter().rev() {
        match last_record(seg) {
            Ok(Some(h)) => return Ok(Some(h)),
            Ok(None) => continue,
            Err(LogError::Io { source, .. }) => return Err(source),
            Err(e) => return Err(io::Error::other(e.to_string())),
        }
    }
    Ok(None)
}

/// Reads every record with `seq > after`, in order, calling `f` for each (for re-indexing and
/// `audit tail`). Stops at the first line that is not a record.
pub fn read_from(dir: &Path, after: u64, mut f: impl FnMut(Record)) -> io::Result<()> {
    read_with_positions(dir, after, |r, _| f(r))
}

/// [`read_from`], with each record's place in its segment.
pub fn read_with_positions(
    dir: &Path,
    after: u64,
    mut f: impl FnMut(Record, LinePos),
) -> io::Result<()> {
    let segs = segments(dir)?;
    for (i, seg) in segs.iter().enumerate() {
        // Skip segments that end before `after`: the next one starts at or before after + 1.
        if segs
            .get(i + 1)
            .and_then(|next| first_seq(next))
            .is_some_and(|first| first <= after + 1)
        {
            continue;
        }
        let Some(segment) = first_seq(seg) else {
            continue;
        };
        let file = File::open(seg)?;
        let mut offset = 0u64;
        let (mut reader, mut line) = (BufReader::new(file), Vec::new());
        let last = i + 1 == segs.len();
        loop {
            if !next_line(&mut reader, &mut line)? {
                // A NUL (or an incomplete line) anywhere but in the segment being written
                // ends the log here, as a line that is not a record does: no gap is skipped.
                if !last && (!line.is_empty() || !reader.fill_buf()?.is_empty()) {
                    return Ok(());
                }
                break;
            }
            let Ok(rec) = serde_json::from_slice::<Record>(&line) else {
                return Ok(());
            };
            let pos = LinePos {
                segment,
                offset,
                len: line.len() as u32,
            };
            offset += line.len() as u64 + 1;
            if rec.event.seq > after {
                f(rec, pos);
            }
        }
    }
    Ok(())
}

/// The result of verifying a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records checked.
    pub records: u64,
    /// Segments checked.
    pub segments: usize,
    /// Checkpoints whose signature and hash matched.
    pub checkpoints: usize,
    /// Last sequence number.
    pub last_seq: u64,
    /// Hash of the last record.
    pub head: String,
}

/// The first thing wrong with a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when the problem is a line.
    pub line: Option<usize>,
    /// The sequence number expected or found there.
    pub seq: Option<u64>,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ", line {l}")?;
        }
        if let Some(s) = self.seq {
            write!(f, ", seq {s}")?;
        }
        write!(f, ": {}", self.what)
    }
}

struct SegmentProblem {
    broken: Broken,
    /// An end that a commit in progress can show for a moment.
    torn: bool,
}

/// A segment's bytes up to its records' end, refused when anything but NULs follows that end
/// or when its last line is incomplete.
fn read_segment_checked(
    seg: &Path,
    last: bool,
    expected_seq: u64,
) -> Result<Vec<u8>, SegmentProblem> {
    let mut bytes = Vec::new();
    File::open(seg)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| SegmentProblem {
            broken: Broken {
                file: seg.to_path_buf(),
                line: None,
                seq: None,
                what: e.to_string(),
            },
            torn: false,
        })?;
    // The records end at the first NUL; past it only the zero-filled part of the segment
    // being written may follow.
    let end = data_end(&bytes);
    if bytes[end..].iter().any(|b| *b != 0) {
        return Err(SegmentProblem {
            broken: Broken {
                file: seg.to_path_buf(),
                line: Some(bytes[..end].split(|b| *b == b'\n').count()),
                seq: Some(expected_seq),
                what: if last {
                    "bytes after a run of NULs: a torn tail (actgate repairs it when it next \
                     opens the log) or records hidden past the end"
                        .into()
                } else {
                    "bytes after a run of NULs in a closed segment: the log was altered".into()
                },
            },
            torn: last,
        });
    }
    bytes.truncate(end);
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        return Err(SegmentProblem {
            broken: Broken {
                file: seg.to_path_buf(),
                line: Some(bytes.split(|b| *b == b'\n').count()),
                seq: Some(expected_seq),
                what: "the last line is incomplete (torn write or truncation)".into(),
            },
            torn: last,
        });
    }
    Ok(bytes)
}

/// Walks every segment checking the chain, then every checkpoint (the log's own and
/// `extra`, e.g. an exported one) against the log and the public keys (`kid → key`).
pub fn verify(
    dir: &Path,
    keys: &dyn Fn(&str) -> Option<Vec<u8>>,
    extra: &[Checkpoint],
) -> Result<Verified, Broken> {
    let segs = segments(dir).map_err(|e| Broken {
        file: dir.to_path_buf(),
        line: None,
        seq: None,
        what: e.to_string(),
    })?;
    let mut expected_seq = 1u64;
    let mut prev = GENESIS;
    let mut hashes: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
    let mut want_checkpoints: Vec<Checkpoint> = Vec::new();
    let cp_path = dir.join(CHECKPOINTS);
    if let Ok(f) = File::open(&cp_path) {
        for (i, line) in BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| Broken {
                file: cp_path.clone(),
                line: Some(i + 1),
                seq: None,
                what: e.to_string(),
            })?;
            let cp: Checkpoint = serde_json::from_str(&line).map_err(|_| Broken {
                file: cp_path.clone(),
                line: Some(i + 1),
                seq: None,
                what: "not a checkpoint".into(),
            })?;
            want_checkpoints.push(cp);
        }
    }
    want_checkpoints.extend(extra.iter().cloned());
    let wanted: std::collections::HashSet<u64> = want_checkpoints.iter().map(|c| c.seq).collect();
    for (i, seg) in segs.iter().enumerate() {
        let first = first_seq(seg);
        let last = i + 1 == segs.len();
        // The segment being written may be mid-commit while it is read (its zero-filled part
        // overwritten between two reads of one pass): what looks torn there is read again
        // before it is reported.
        let mut tries = if last { 5 } else { 1 };
        let bytes = loop {
            tries -= 1;
            match read_segment_checked(seg, last, expected_seq) {
                Err(broken) if broken.torn && tries > 0 => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(broken) => return Err(broken.broken),
                Ok(bytes) => break bytes,
            }
        };
        if first != Some(expected_seq) && !(bytes.is_empty() && i == segs.len() - 1) {
            return Err(Broken {
                file: seg.clone(),
                line: None,
                seq: Some(expected_seq),
                what: format!(
                    "segment should start at seq {expected_seq}; a segment is missing or renamed"
                ),
            });
        }
        let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        // The text ends with a newline, so the last piece is empty.
        for (n, line) in lines[..lines.len() - 1].iter().enumerate() {
            let line: &[u8] = line;
            let at = |what: String| Broken {
                file: seg.clone(),
                line: Some(n + 1),
                seq: Some(expected_seq),
                what,
            };
            let rec: Record =
                serde_json::from_slice(line).map_err(|_| at("not an audit record".into()))?;
            if rec.event.seq != expected_seq {
                return Err(at(format!(
                    "seq is {}, expected {expected_seq}: a record was deleted, inserted or reordered",
                    rec.event.seq
                )));
            }
            if rec.prev_hash != hex::encode(prev) {
                return Err(at(
                    "prevHash does not match the previous record: a record before this one was edited or removed"
                        .into(),
                ));
            }
            prev = line_hash(line);
            if wanted.contains(&expected_seq) {
                hashes.insert(expected_seq, hex::encode(prev));
            }
            expected_seq += 1;
        }
    }
    let last_seq = expected_seq - 1;
    let mut checkpoints = 0;
    for cp in &want_checkpoints {
        let bad = |what: String| Broken {
            file: cp_path.clone(),
            line: None,
            seq: Some(cp.seq),
            what,
        };
        let Some(public) = keys(&cp.kid) else {
            return Err(bad(format!("checkpoint signed by unknown key {}", cp.kid)));
        };
        if !cp.verify(&public) {
            return Err(bad("checkpoint signature is invalid".into()));
        }
        match hashes.get(&cp.seq) {
            None => {
                return Err(bad(format!(
                    "the log ends at seq {last_seq} but a signed checkpoint covers seq {}: records were truncated",
                    cp.seq
                )));
            }
            Some(h) if *h != cp.hash => {
                return Err(bad("the record at this checkpoint was rewritten".into()));
            }
            Some(_) => checkpoints += 1,
        }
    }
    Ok(Verified {
        records: last_seq,
        segments: segs.len(),
        checkpoints,
        last_seq,
        head: hex::encode(prev),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cursor reads every record once, in order, across segment rotations, whatever the
    /// batch size and whenever it reads between appends.
    #[test]
    fn the_cursor_reads_every_record_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        // Small segments: a rotation every few records.
        let (mut log, _) = LogFile::open(dir.path(), 600).unwrap();
        let mut cursor = LogCursor::after(dir.path(), 0).unwrap();
        let mut seen = Vec::new();
        for round in 0..40u64 {
            log.append(&mut events(round % 4 + 1)).unwrap();
            for (rec, line) in cursor.read((round % 3 + 1) as usize).unwrap() {
                assert_eq!(line_hash(&line).len(), 32);
                seen.push(rec.event.seq);
            }
        }
        loop {
            let more = cursor.read(5).unwrap();
            if more.is_empty() {
                break;
            }
            seen.extend(more.iter().map(|(r, _)| r.event.seq));
        }
        assert!(segments(dir.path()).unwrap().len() > 5, "it rotated");
        let want: Vec<u64> = (1..=log.last_seq).collect();
        assert_eq!(seen, want);
        // Resuming after any seq starts right after it.
        let mut again = LogCursor::after(dir.path(), 17).unwrap();
        assert_eq!(again.read(1).unwrap()[0].0.event.seq, 18);
    }

    fn events(n: u64) -> Vec<AuditEvent> {
        (0..n)
            .map(|i| {
                AuditEvent::refusal(
                    format!("aud_{i}"),
                    super::super::Source::Proxy,
                    "t",
                    "req",
                    "no_route",
                    "m".into(),
                )
            })
            .collect()
    }

    /// A log in 8 KiB segments holding `rounds` commits of three records each.
    fn small_segments(dir: &Path, rounds: usize) -> LogFile {
        let (mut log, _) = LogFile::open(dir, 8192).unwrap();
        for _ in 0..rounds {
            log.append(&mut events(3)).unwrap();
        }
        log
    }

    fn seqs(dir: &Path) -> Vec<u64> {
        let mut out = Vec::new();
        read_from(dir, 0, |r| out.push(r.event.seq)).unwrap();
        out
    }

    fn no_keys(_: &str) -> Option<Vec<u8>> {
        None
    }

    /// The segment being written is zero-filled ahead of its records; every reader stops at
    /// its end, a log left that way (a crash) reopens where its records end, and closing cuts
    /// it back to plain JSON Lines.
    #[test]
    fn the_zero_filled_tail_is_read_as_the_end_and_cut_when_the_log_closes() {
        let dir = tempfile::tempdir().unwrap();
        let seg = dir.path().join(segment_name(1));
        let (mut log, _) = LogFile::open(dir.path(), 64 << 20).unwrap();
        log.append(&mut events(3)).unwrap();
        let size = fs::metadata(&seg).unwrap().len();
        assert_eq!(size, log.len + ZERO_AHEAD, "zero-filled a megabyte ahead");
        let bytes = fs::read(&seg).unwrap();
        assert_eq!(data_end(&bytes) as u64, log.len);
        assert!(bytes[log.len as usize..].iter().all(|b| *b == 0));
        // Readers see the records and nothing of the zeros.
        assert_eq!(seqs(dir.path()), [1, 2, 3]);
        assert_eq!(head(dir.path()).unwrap().unwrap().0, 3);
        assert_eq!(verify(dir.path(), &no_keys, &[]).unwrap().records, 3);
        let mut cursor = LogCursor::after(dir.path(), 1).unwrap();
        let read: Vec<u64> = cursor
            .read(10)
            .unwrap()
            .iter()
            .map(|(r, _)| r.event.seq)
            .collect();
        assert_eq!(read, [2, 3]);
        assert!(cursor.read(10).unwrap().is_empty());
        // Dropped without closing (a crash): it reopens at the end of its records.
        drop(log);
        let (mut log, recovery) = LogFile::open(dir.path(), 64 << 20).unwrap();
        assert_eq!(recovery, Recovery::default(), "nothing torn");
        log.append(&mut events(2)).unwrap();
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            size,
            "the zeros were reused"
        );
        assert_eq!(cursor.read(10).unwrap().len(), 2, "the cursor follows");
        let len = log.len;
        log.finish().unwrap();
        let bytes = fs::read(&seg).unwrap();
        assert_eq!(bytes.len() as u64, len, "closed: cut back to its records");
        assert!(!bytes.contains(&0) && bytes.ends_with(b"\n"));
        assert_eq!(verify(dir.path(), &no_keys, &[]).unwrap().records, 5);
    }

    /// A segment is closed without its zeros when the log rotates; only the last one has them.
    #[test]
    fn a_rotated_segment_is_plain_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let _log = small_segments(dir.path(), 40);
        let segs = segments(dir.path()).unwrap();
        assert!(segs.len() > 3, "it rotated");
        for seg in &segs[..segs.len() - 1] {
            let bytes = fs::read(seg).unwrap();
            assert!(!bytes.contains(&0), "{}", seg.display());
        }
        let last = fs::read(segs.last().unwrap()).unwrap();
        assert_eq!(
            last.len(),
            8192,
            "zero-filled up to the segment limit, not a megabyte"
        );
        assert_eq!(seqs(dir.path()), (1..=120).collect::<Vec<_>>());
        assert_eq!(verify(dir.path(), &no_keys, &[]).unwrap().records, 120);
    }

    /// After a crash the disk may have kept part of a commit: a line cut short, or records
    /// beyond a run of zeros. Either is a torn tail: copied aside, cut off, and the log goes
    /// on from its last intact record. `verify` refuses such a tail until then.
    #[test]
    fn a_torn_tail_in_the_zero_filled_part_is_cut_off_and_kept() {
        for torn in [
            &b"{\"prevHash\":\"00\",\"seq\":4,\"ki"[..],
            &b"\0\0\0{\"seq\":5}\n"[..],
        ] {
            let dir = tempfile::tempdir().unwrap();
            let seg = dir.path().join(segment_name(1));
            let (mut log, _) = LogFile::open(dir.path(), 64 << 20).unwrap();
            log.append(&mut events(3)).unwrap();
            let len = log.len;
            drop(log);
            let f = OpenOptions::new().write(true).open(&seg).unwrap();
            f.write_all_at(torn, len).unwrap();
            assert!(
                verify(dir.path(), &no_keys, &[]).is_err(),
                "torn before repair"
            );
            let (mut log, recovery) = LogFile::open(dir.path(), 64 << 20).unwrap();
            assert_eq!(recovery.torn_bytes, torn.len() as u64);
            let kept = fs::read(recovery.torn_copy.unwrap()).unwrap();
            assert_eq!(kept, torn);
            log.append(&mut events(1)).unwrap();
            assert_eq!(seqs(dir.path()), [1, 2, 3, 4]);
            assert_eq!(verify(dir.path(), &no_keys, &[]).unwrap().records, 4);
        }
    }

    /// A NUL written into committed records is damage, not a crash: the start refuses,
    /// naming the line, instead of cutting the records after it away as a torn tail. Only
    /// within the last commit's reach (a crash's) is it repaired — copied aside first.
    #[test]
    fn a_nul_among_committed_records_refuses_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let seg = dir.path().join(segment_name(1));
        let (mut log, _) = LogFile::open(dir.path(), 64 << 20).unwrap();
        for _ in 0..6 {
            log.append(&mut events(1000)).unwrap();
        }
        drop(log);
        let bytes = fs::read(&seg).unwrap();
        let line_start = |n: usize| {
            bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .nth(n - 2)
                .unwrap()
                .0
                + 1
        };
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(b"\0", line_start(10) as u64).unwrap();
        match LogFile::open(dir.path(), 64 << 20) {
            Err(LogError::Corrupt { line, .. }) => assert_eq!(line, 10),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened a log with 5,990 records hidden behind a NUL"),
        }
        assert_eq!(
            fs::read(&seg).unwrap().len(),
            bytes.len(),
            "nothing was cut"
        );
        // The same NUL within the last commit's reach is what a crash leaves: repaired.
        f.write_all_at(
            &bytes[line_start(10)..line_start(10) + 1],
            line_start(10) as u64,
        )
        .unwrap();
        f.write_all_at(b"\0", line_start(5990) as u64).unwrap();
        let (_, recovery) = LogFile::open(dir.path(), 64 << 20).unwrap();
        assert!(recovery.torn_copy.is_some());
        assert_eq!(seqs(dir.path()).len(), 5989);
    }

    /// A NUL inside a closed segment ends what readers read there: no gap is skipped over.
    #[test]
    fn readers_stop_at_a_nul_in_a_closed_segment() {
        let dir = tempfile::tempdir().unwrap();
        small_segments(dir.path(), 20).finish().unwrap();
        let first = &segments(dir.path()).unwrap()[0];
        let f = OpenOptions::new().write(true).open(first).unwrap();
        f.write_all_at(b"\0", 0).unwrap();
        assert_eq!(seqs(dir.path()), Vec::<u64>::new());
        let broken = verify(dir.path(), &no_keys, &[]).unwrap_err();
        assert!(broken.what.contains("closed segment"), "{broken}");
    }

    /// A line is exactly what serde writes for a [`Record`] (the format readers parse).
    #[test]
    fn lines_are_records_as_serde_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = LogFile::open(dir.path(), 1 << 20).unwrap();
        let mut e = AuditEvent::refusal(
            "aud_1".into(),
            super::super::Source::Mcp,
            "t \"quoted\" ü",
            "req",
            "no_route",
            "a message\nwith a newline".into(),
        );
        e.arguments = Some(serde_json::json!({"q": [1, 2]}));
        let mut events = vec![e.clone(), e];
        let pos = log.append(&mut events).unwrap();
        let bytes = std::fs::read(dir.path().join(segment_name(1))).unwrap();
        let mut prev = GENESIS;
        for (ev, p) in events.iter().zip(pos) {
            let line = &bytes[p.offset as usize..p.offset as usize + p.len as usize];
            let want = serde_json::to_vec(&Record {
                prev_hash: hex::encode(prev),
                event: ev.clone(),
            })
            .unwrap();
            assert_eq!(
                std::str::from_utf8(line).unwrap(),
                std::str::from_utf8(&want).unwrap()
            );
            prev = line_hash(line);
        }
    }
}

/// Reads a log forward from a position, a batch at a time, with each record's line as
/// written (for shipping index rows to the shared store, whose hashes must be of the exact
/// bytes). Only complete lines are read: a line still being written is left for next time.
#[derive(Debug, Clone)]
pub struct LogCursor {
    dir: PathBuf,
    /// First seq of the segment being read (0: none yet).
    segment: u64,
    /// Byte offset of the next line in it.
    offset: u64,
    /// The seq the next record must have.
    pub next_seq: u64,
}

impl LogCursor {
    /// A cursor at the first record with `seq > after`.
    pub fn after(dir: &Path, after: u64) -> io::Result<LogCursor> {
        let mut cursor = LogCursor {
            dir: dir.to_path_buf(),
            segment: 0,
            offset: 0,
            next_seq: after + 1,
        };
        let segs = segments(dir)?;
        // The last segment starting at or before the wanted seq holds it (or it is not
        // written yet).
        let Some(seg) = segs
            .iter()
            .filter_map(|s| first_seq(s))
            .filter(|first| *first <= after + 1)
            .max()
        else {
            return Ok(cursor);
        };
        cursor.segment = seg;
        let mut reader = BufReader::new(File::open(segment_path(dir, seg))?);
        let mut line = Vec::new();
        while next_line(&mut reader, &mut line)? {
            let Ok(rec) = serde_json::from_slice::<Record>(&line) else {
                break;
            };
            if rec.event.seq > after {
                break;
            }
            cursor.offset += line.len() as u64 + 1;
        }
        Ok(cursor)
    }

    /// Up to `max` records from the cursor on, each with its line (without the newline);
    /// moves past them. Empty when nothing new is complete. A gap in the seqs is an error.
    pub fn read(&mut self, max: usize) -> io::Result<Vec<(Record, Vec<u8>)>> {
        let mut out = Vec::new();
        loop {
            if self.segment == 0 {
                match self.next_segment()? {
                    Some(s) => {
                        self.segment = s;
                        self.offset = 0;
                    }
                    None => return Ok(out),
                }
            }
            // Whether a newer segment exists *before* this pass: the writer opens it only after
            // it has finished this one, so a pass that starts after that sees this one whole.
            let newer = self.next_segment()?;
            self.read_segment(max, &mut out)?;
            if out.len() >= max {
                return Ok(out);
            }
            match newer {
                Some(s) if s > self.segment => {
                    // This segment was complete when the pass began and is now read to its end.
                    if s != self.next_seq {
                        return Err(io::Error::other(format!(
                            "{}: the next segment starts at seq {s}, expected {}: records are missing",
                            self.dir.display(),
                            self.next_seq
                        )));
                    }
                    self.segment = s;
                    self.offset = 0;
                }
                _ => return Ok(out),
            }
        }
    }

    fn read_segment(&mut self, max: usize, out: &mut Vec<(Record, Vec<u8>)>) -> io::Result<()> {
        let path = segment_path(&self.dir, self.segment);
        let mut file = File::open(&path)?;
        file.seek(io::SeekFrom::Start(self.offset))?;
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        while out.len() < max {
            if !next_line(&mut reader, &mut line)? {
                return Ok(());
            }
            let n = line.len() + 1;
            let body = &line[..];
            let rec: Record = serde_json::from_slice(body).map_err(|e| {
                io::Error::other(format!(
                    "{}: not an audit record at byte {}: {e}",
                    path.display(),
                    self.offset
                ))
            })?;
            self.offset += n as u64;
            if rec.event.seq < self.next_seq {
                continue;
            }
            if rec.event.seq != self.next_seq {
                return Err(io::Error::other(format!(
                    "{}: seq {} follows seq {}: records are missing",
                    path.display(),
                    rec.event.seq,
                    self.next_seq - 1
                )));
            }
            self.next_seq = rec.event.seq + 1;
            out.push((rec, body.to_vec()));
        }
        Ok(())
    }

    fn next_segment(&self) -> io::Result<Option<u64>> {
        Ok(segments(&self.dir)?
            .iter()
            .filter_map(|s| first_seq(s))
            .filter(|first| *first > self.segment)
            .min())
    }
}
