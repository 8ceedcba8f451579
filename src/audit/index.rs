//! The audit query index behind `GET /v1/audit`: a secondary, column-per-field copy of what
//! the filters read, pointing into the log for everything else.
//!
//! The log ([`super::log`]) is the record; this index only answers "which records match" fast,
//! and costs the writer a few appends per batch instead of a database transaction. It lives
//! in `<dataDir>/audit-index/`, one file per column, one fixed-width entry per log record
//! (entry `i` is seq `base + i`):
//!
//! | column | width | holds |
//! |---|---|---|
//! | `time` | 8 | Unix ms |
//! | `tenant`, `agent`, `action`, `resource` | 4 each | keyed 32-bit SipHash of the string (0: none) |
//! | `flags` | 1 | kind (decision, outcome, summary) and decision (allowed, denied) |
//! | `status`, `latency` | 2, 4 | the upstream status and latency (an outcome patches its decision's) |
//! | `pos` | 20 | segment, offset and length of the record's line in the log |
//!
//! A query walks the entries newest first, a chunk at a time, reading only the columns its
//! filters need (a chunk whose time range misses `since`/`until` is skipped unread), then reads
//! the matching lines from the log and checks every filter again on the record itself — so a
//! hash collision costs a line read, never a wrong answer. The hash key is random per index
//! (`meta.json`): collisions cannot be chosen from outside.
//!
//! Crash safety: the index is written after the log's fsync and never fsynced itself; at open,
//! columns are cut to their common length and the gateway replays the log from there
//! ([`AuditIndex::catch_up`]). A failed write cuts the columns back and marks the index
//! behind; the writer replays from the log before its next batch.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::hash::Hasher;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use serde::{Deserialize, Serialize};

use super::log::{self, LinePos, Record};
use super::{AuditEvent, AuditFilter, EventKind};

/// Entries per chunk: the unit of reading and of the time summaries.
const CHUNK: usize = 32 * 1024;
/// Decisions remembered for folding a `strict` outcome into its decision's entry.
const RECENT_DECISIONS: usize = 65_536;
/// Newest entries whose status and latency are mirrored in memory (see [`Tail`]).
const TAIL_ENTRIES: usize = 16_384;
/// Records replayed from the log per append during a catch-up.
const REPLAY_BATCH: usize = 8192;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Col {
    Time,
    Tenant,
    Agent,
    Action,
    Resource,
    Flags,
    Status,
    Latency,
    Pos,
}

const COLUMNS: [Col; 9] = [
    Col::Time,
    Col::Tenant,
    Col::Agent,
    Col::Action,
    Col::Resource,
    Col::Flags,
    Col::Status,
    Col::Latency,
    Col::Pos,
];

impl Col {
    fn width(self) -> usize {
        match self {
            Col::Time => 8,
            Col::Tenant | Col::Agent | Col::Action | Col::Resource | Col::Latency => 4,
            Col::Flags => 1,
            Col::Status => 2,
            Col::Pos => 20,
        }
    }

    fn file(self) -> &'static str {
        match self {
            Col::Time => "time.col",
            Col::Tenant => "tenant.col",
            Col::Agent => "agent.col",
            Col::Action => "action.col",
            Col::Resource => "resource.col",
            Col::Flags => "flags.col",
            Col::Status => "status.col",
            Col::Latency => "latency.col",
            Col::Pos => "pos.col",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

const KIND_MASK: u8 = 0b11;
const KIND_OUTCOME: u8 = 1;
const KIND_SUMMARY: u8 = 2;
const ALLOWED: u8 = 1 << 2;
const DENIED: u8 = 1 << 3;
/// No latency recorded.
const NO_LATENCY: u32 = u32::MAX;

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    version: u32,
    /// Seq of entry 0.
    base: u64,
    /// Hex of the 16-byte SipHash key.
    key: String,
}

/// Where the index of a data directory lives.
pub fn index_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("audit-index")
}

/// Last seq the index of `data_dir` holds (0 when empty; `None` when there is no index), read
/// without opening it for writing (for `actgate audit verify`).
pub fn head(data_dir: &Path) -> io::Result<Option<u64>> {
    let dir = index_dir(data_dir);
    let meta = match fs::read(dir.join("meta.json")) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta: Meta = serde_json::from_slice(&meta).map_err(io::Error::other)?;
    let mut entries = u64::MAX;
    for col in COLUMNS {
        let len = match fs::metadata(dir.join(col.file())) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        entries = entries.min(len / col.width() as u64);
    }
    Ok(Some(if entries == 0 {
        0
    } else {
        meta.base + entries - 1
    }))
}

struct Appender {
    files: Vec<File>,
    /// Decision id → entry, for folding `strict` outcomes.
    recent: HashMap<String, u64>,
    tail: Tail,
}

/// The status and latency columns of the newest entries, mirrored in memory: the outcomes of a
/// `strict` batch fold into their decisions' entries with one write per column covering them
/// all, instead of two writes per outcome.
struct Tail {
    /// The entry `status[0]` and `latency[0]` belong to.
    start: u64,
    status: Vec<u16>,
    latency: Vec<u32>,
}

impl Tail {
    fn at(start: u64) -> Tail {
        Tail {
            start,
            status: Vec::new(),
            latency: Vec::new(),
        }
    }

    fn end(&self) -> u64 {
        self.start + self.status.len() as u64
    }
}

/// The audit index of one data directory (see the module documentation). Appended to by the
/// audit writer only; queried from any thread.
pub struct AuditIndex {
    dir: PathBuf,
    log_dir: PathBuf,
    key: (u64, u64),
    base: AtomicU64,
    /// Entries readable (every column written).
    len: AtomicU64,
    /// Min and max time of each chunk.
    chunks: RwLock<Vec<(i64, i64)>>,
    readers: Vec<File>,
    appender: Mutex<Appender>,
    behind: AtomicBool,
    fold_outcomes: AtomicBool,
}

impl std::fmt::Debug for AuditIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditIndex")
            .field("dir", &self.dir)
            .field("len", &self.len)
            .finish()
    }
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

impl AuditIndex {
    /// Opens (or creates) the index of `data_dir` for the log in `log_dir`; cuts a torn tail.
    pub fn open(data_dir: &Path, log_dir: &Path) -> io::Result<AuditIndex> {
        let dir = index_dir(data_dir);
        if !dir.exists() {
            fs::create_dir_all(&dir)?;
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        }
        let meta_path = dir.join("meta.json");
        let meta = match fs::read(&meta_path) {
            Ok(b) => serde_json::from_slice::<Meta>(&b).map_err(|e| {
                io::Error::other(format!(
                    "{}: {e}; remove {} and the gateway rebuilds it from the log",
                    meta_path.display(),
                    dir.display()
                ))
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut key = [0u8; 16];
                crate::ids::fill(&mut key);
                let meta = Meta {
                    version: 1,
                    base: 1,
                    key: hex::encode(key),
                };
                write_meta(&dir, &meta)?;
                meta
            }
            Err(e) => return Err(e),
        };
        if meta.version != 1 {
            return Err(io::Error::other(format!(
                "{}: index version {} is not one this actgate reads; remove {} and the gateway rebuilds it from the log",
                meta_path.display(),
                meta.version,
                dir.display()
            )));
        }
        let key = hex::decode(&meta.key)
            .ok()
            .filter(|k| k.len() == 16)
            .map(|k| (le_u64(&k[..8]), le_u64(&k[8..])))
            .ok_or_else(|| io::Error::other(format!("{}: bad key", meta_path.display())))?;
        let mut files = Vec::with_capacity(COLUMNS.len());
        let mut readers = Vec::with_capacity(COLUMNS.len());
        let mut entries = u64::MAX;
        for col in COLUMNS {
            let path = dir.join(col.file());
            // Not O_APPEND: entries are written at their place (pwrite), which also lets an
            // outcome patch its decision's entry.
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)?;
            entries = entries.min(f.metadata()?.len() / col.width() as u64);
            files.push(f);
            readers.push(File::open(&path)?);
        }
        // A crash between column writes leaves some columns longer: cut them to the shortest.
        for (col, f) in COLUMNS.iter().zip(&files) {
            let want = entries * col.width() as u64;
            if f.metadata()?.len() != want {
                f.set_len(want)?;
            }
        }
        let index = AuditIndex {
            dir,
            log_dir: log_dir.to_path_buf(),
            key,
            base: AtomicU64::new(meta.base),
            len: AtomicU64::new(entries),
            chunks: RwLock::new(Vec::new()),
            readers,
            appender: Mutex::new(Appender {
                files,
                recent: HashMap::new(),
                tail: Tail::at(entries),
            }),
            behind: AtomicBool::new(false),
            fold_outcomes: AtomicBool::new(true),
        };
        index.summarize_chunks()?;
        Ok(index)
    }

    /// Seq of the last entry (0 when empty).
    pub fn head(&self) -> u64 {
        match self.len.load(Ordering::Acquire) {
            0 => 0,
            n => self.base.load(Ordering::Acquire) + n - 1,
        }
    }

    fn summarize_chunks(&self) -> io::Result<()> {
        let n = self.len.load(Ordering::Acquire) as usize;
        let mut chunks = Vec::with_capacity(n.div_ceil(CHUNK));
        let mut lo = 0;
        while lo < n {
            let hi = (lo + CHUNK).min(n);
            let times = self.read_col(Col::Time, lo, hi)?;
            let (mut min, mut max) = (i64::MAX, i64::MIN);
            for t in times.chunks_exact(8) {
                let t = le_u64(t) as i64;
                min = min.min(t);
                max = max.max(t);
            }
            chunks.push((min, max));
            lo = hi;
        }
        *self.chunks.write().unwrap_or_else(|e| e.into_inner()) = chunks;
        Ok(())
    }

    fn hash(&self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let mut h = siphasher::sip::SipHasher13::new_with_keys(self.key.0, self.key.1);
        h.write(s.as_bytes());
        match h.finish() as u32 {
            0 => 1,
            v => v,
        }
    }

    /// Whether decisions are remembered to fold a later outcome record into (only `strict`
    /// writes outcomes as records of their own; a replay of an older log always folds).
    pub fn fold_outcomes(&self, on: bool) {
        self.fold_outcomes.store(on, Ordering::Release);
    }

    /// Whether a write failed and the index waits for a replay from the log.
    pub fn is_behind(&self) -> bool {
        self.behind.load(Ordering::Acquire)
    }

    /// Appends a committed batch: `events[i]` was written at `positions[i]`. Their seqs must
    /// follow the index's head (else the index is behind and must [`AuditIndex::catch_up`]).
    pub fn append<E: Borrow<AuditEvent>>(
        &self,
        events: &[E],
        positions: &[LinePos],
    ) -> io::Result<()> {
        let mut app = self.appender.lock().unwrap_or_else(|e| e.into_inner());
        self.append_locked(&mut app, events, positions)
    }

    fn append_locked<E: Borrow<AuditEvent>>(
        &self,
        app: &mut Appender,
        events: &[E],
        positions: &[LinePos],
    ) -> io::Result<()> {
        let Some(first) = events.first().map(Borrow::borrow) else {
            return Ok(());
        };
        let len = self.len.load(Ordering::Acquire);
        if len == 0 && self.base.load(Ordering::Acquire) != first.seq {
            // An empty index starts where the log it is built from starts.
            let meta = Meta {
                version: 1,
                base: first.seq,
                key: {
                    let mut k = Vec::with_capacity(16);
                    k.extend_from_slice(&self.key.0.to_le_bytes());
                    k.extend_from_slice(&self.key.1.to_le_bytes());
                    hex::encode(k)
                },
            };
            write_meta(&self.dir, &meta)?;
            self.base.store(first.seq, Ordering::Release);
        }
        let base = self.base.load(Ordering::Acquire);
        if first.seq != base + len {
            self.behind.store(true, Ordering::Release);
            return Err(io::Error::other(format!(
                "audit index holds seq up to {} but the batch starts at {}",
                self.head(),
                first.seq
            )));
        }
        let n = events.len();
        let mut bufs: Vec<Vec<u8>> = COLUMNS
            .iter()
            .map(|c| Vec::with_capacity(n * c.width()))
            .collect();
        let mut patches: Vec<(u64, u16, u32)> = Vec::new();
        // The status and latency of this batch's entries, for the mirrored tail (`strict` only:
        // nothing else folds outcomes).
        let mut mirrored: Vec<(u16, u32)> = Vec::new();
        let fold = self.fold_outcomes.load(Ordering::Acquire);
        for (i, (e, p)) in events.iter().zip(positions).enumerate() {
            let e = e.borrow();
            if e.seq != first.seq + i as u64 {
                self.behind.store(true, Ordering::Release);
                return Err(io::Error::other("audit batch seqs are not consecutive"));
            }
            let entry = len + i as u64;
            let kind = match e.kind {
                EventKind::Decision => 0,
                EventKind::Outcome => KIND_OUTCOME,
                EventKind::Summary => KIND_SUMMARY,
            };
            let decision = match &*e.decision {
                "allowed" => ALLOWED,
                "denied" => DENIED,
                _ => 0,
            };
            let status = e.upstream_status.unwrap_or(0);
            let latency = e
                .latency_us
                .map_or(NO_LATENCY, |l| l.min(u64::from(NO_LATENCY - 1)) as u32);
            if fold {
                mirrored.push((status, latency));
            }
            bufs[Col::Time.index()].extend_from_slice(&e.time_ms.to_le_bytes());
            bufs[Col::Tenant.index()].extend_from_slice(&self.hash(&e.tenant_id).to_le_bytes());
            bufs[Col::Agent.index()].extend_from_slice(
                &self
                    .hash(e.agent_id.as_deref().unwrap_or_default())
                    .to_le_bytes(),
            );
            bufs[Col::Action.index()].extend_from_slice(&self.hash(&e.action).to_le_bytes());
            bufs[Col::Resource.index()].extend_from_slice(&self.hash(&e.resource).to_le_bytes());
            bufs[Col::Flags.index()].push(kind | decision);
            bufs[Col::Status.index()].extend_from_slice(&status.to_le_bytes());
            bufs[Col::Latency.index()].extend_from_slice(&latency.to_le_bytes());
            let pos = &mut bufs[Col::Pos.index()];
            pos.extend_from_slice(&p.segment.to_le_bytes());
            pos.extend_from_slice(&p.offset.to_le_bytes());
            pos.extend_from_slice(&p.len.to_le_bytes());
            match (e.kind, &e.decision_id) {
                (EventKind::Outcome, Some(d)) => {
                    if let Some(at) = app.recent.get(d.as_str()) {
                        patches.push((*at, status, latency));
                    }
                }
                (EventKind::Decision, _) if fold => {
                    if app.recent.len() >= RECENT_DECISIONS {
                        app.recent.clear();
                    }
                    app.recent.insert(e.id.clone(), entry);
                }
                _ => {}
            }
        }
        let written = COLUMNS
            .iter()
            .zip(&app.files)
            .zip(&bufs)
            .try_for_each(|((col, f), b)| f.write_all_at(b, len * col.width() as u64));
        if let Err(e) = written {
            for (col, f) in COLUMNS.iter().zip(&app.files) {
                let _ = f.set_len(len * col.width() as u64);
            }
            self.behind.store(true, Ordering::Release);
            return Err(e);
        }
        // Mirror what was just written; a tail out of step with the files (after a failed
        // write, a rebuild, or batches written without folding) starts again here.
        if fold {
            if app.tail.end() != len {
                app.tail = Tail::at(len);
            }
            for (status, latency) in mirrored {
                app.tail.status.push(status);
                app.tail.latency.push(latency);
            }
        }
        if app.tail.status.len() > TAIL_ENTRIES {
            let drop = app.tail.status.len() - TAIL_ENTRIES / 2;
            app.tail.status.drain(..drop);
            app.tail.latency.drain(..drop);
            app.tail.start += drop as u64;
        }
        // An outcome folds into its decision: the decision's entry shows what became of it
        // (the log keeps the outcome record either way). Entries still mirrored are patched
        // in memory and written back as one range per column; older ones one by one.
        let mut range: Option<(u64, u64)> = None;
        for (entry, status, latency) in patches {
            if entry >= app.tail.start && entry < app.tail.end() {
                let i = (entry - app.tail.start) as usize;
                app.tail.status[i] = status;
                app.tail.latency[i] = latency;
                range =
                    Some(range.map_or((entry, entry), |(lo, hi)| (lo.min(entry), hi.max(entry))));
                continue;
            }
            let patched = app.files[Col::Status.index()]
                .write_all_at(&status.to_le_bytes(), entry * 2)
                .and_then(|()| {
                    app.files[Col::Latency.index()].write_all_at(&latency.to_le_bytes(), entry * 4)
                });
            if let Err(e) = patched {
                tracing::warn!(error = %e, "an outcome could not be folded into its decision's audit index entry");
            }
        }
        if let Some((lo, hi)) = range {
            let (a, b) = (
                (lo - app.tail.start) as usize,
                (hi - app.tail.start) as usize + 1,
            );
            let status: Vec<u8> = app.tail.status[a..b]
                .iter()
                .flat_map(|s| s.to_le_bytes())
                .collect();
            let latency: Vec<u8> = app.tail.latency[a..b]
                .iter()
                .flat_map(|l| l.to_le_bytes())
                .collect();
            let patched = app.files[Col::Status.index()]
                .write_all_at(&status, lo * 2)
                .and_then(|()| app.files[Col::Latency.index()].write_all_at(&latency, lo * 4));
            if let Err(e) = patched {
                tracing::warn!(error = %e, "outcomes could not be folded into their decisions' audit index entries");
            }
        }
        {
            let mut chunks = self.chunks.write().unwrap_or_else(|e| e.into_inner());
            for (i, e) in events.iter().enumerate() {
                let c = (len as usize + i) / CHUNK;
                if c >= chunks.len() {
                    chunks.push((i64::MAX, i64::MIN));
                }
                let s = &mut chunks[c];
                let time_ms = e.borrow().time_ms;
                s.0 = s.0.min(time_ms);
                s.1 = s.1.max(time_ms);
            }
        }
        self.len.store(len + n as u64, Ordering::Release);
        Ok(())
    }

    /// Replays the log from the index's head (after a crash, a failed write, or for a new
    /// index), `progress` told every so often of (records replayed, log head). Refuses when
    /// the index is ahead of the log: records were cut from the log.
    pub fn catch_up(&self, log_head: u64, progress: &mut dyn FnMut(u64, u64)) -> io::Result<u64> {
        let mut app = self.appender.lock().unwrap_or_else(|e| e.into_inner());
        let head = self.head();
        if head > log_head {
            return Err(io::Error::other(format!(
                "the audit index has records up to seq {head} but the log in {} ends at seq {log_head}: \
                 the log was truncated or removed. Restore it, or run `actgate audit reindex` to rebuild the index from what remains",
                self.log_dir.display()
            )));
        }
        let mut events = Vec::with_capacity(REPLAY_BATCH);
        let mut positions = Vec::with_capacity(REPLAY_BATCH);
        let mut replayed = 0u64;
        let mut failed = None;
        log::read_with_positions(&self.log_dir, head, |r: Record, p| {
            if failed.is_some() {
                return;
            }
            events.push(r.event);
            positions.push(p);
            if events.len() == REPLAY_BATCH {
                if let Err(e) = self.append_locked(&mut app, &events, &positions) {
                    failed = Some(e);
                }
                replayed += events.len() as u64;
                events.clear();
                positions.clear();
                progress(replayed, log_head);
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if !events.is_empty() {
            self.append_locked(&mut app, &events, &positions)?;
            replayed += events.len() as u64;
        }
        self.behind.store(false, Ordering::Release);
        Ok(replayed)
    }

    /// Empties the index (for `actgate audit reindex`).
    pub fn clear(&self) -> io::Result<()> {
        let mut app = self.appender.lock().unwrap_or_else(|e| e.into_inner());
        for f in &app.files {
            f.set_len(0)?;
        }
        app.recent.clear();
        app.tail = Tail::at(0);
        self.len.store(0, Ordering::Release);
        self.base.store(1, Ordering::Release);
        self.chunks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(())
    }

    fn read_col(&self, col: Col, lo: usize, hi: usize) -> io::Result<Vec<u8>> {
        let w = col.width();
        let mut buf = vec![0u8; (hi - lo) * w];
        self.readers[col.index()].read_exact_at(&mut buf, (lo * w) as u64)?;
        Ok(buf)
    }

    /// The events of `tenant` matching `f`, newest first (see the module documentation).
    pub fn query(&self, tenant: &str, f: &AuditFilter) -> io::Result<Vec<AuditEvent>> {
        let len = self.len.load(Ordering::Acquire) as usize;
        let base = self.base.load(Ordering::Acquire);
        let mut hi = match f.before_seq {
            Some(b) => (b.saturating_sub(base) as usize).min(len),
            None => len,
        };
        let want_tenant = self.hash(tenant);
        let want = |s: &Option<String>| s.as_deref().map(|s| self.hash(s));
        let (want_agent, want_action, want_resource) =
            (want(&f.agent_id), want(&f.action), want(&f.resource));
        let want_flag = match f.decision.as_deref() {
            Some("allowed") => Some(ALLOWED),
            Some("denied") => Some(DENIED),
            Some(_) => return Ok(Vec::new()),
            None => None,
        };
        let timed = f.since_ms.is_some() || f.until_ms.is_some();
        let since = f.since_ms.unwrap_or(i64::MIN);
        let until = f.until_ms.unwrap_or(i64::MAX);
        let chunks = self
            .chunks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut out = Vec::new();
        let mut segments: HashMap<u64, File> = HashMap::new();
        while hi > 0 && out.len() < f.limit {
            let lo = (hi - 1) / CHUNK * CHUNK;
            if timed
                && let Some((min, max)) = chunks.get(lo / CHUNK)
                && (*max < since || *min >= until)
            {
                hi = lo;
                continue;
            }
            // The most selective column first; each next column is checked only where the
            // earlier ones matched (and not read at all once nothing is left). The decision
            // goes before the tenant: a rare one (denials) narrows more than a tenant does.
            let hashed = [
                (Col::Resource, want_resource),
                (Col::Agent, want_agent),
                (Col::Action, want_action),
                (Col::Flags, want_flag.map(u32::from)),
                (Col::Tenant, Some(want_tenant)),
            ];
            let mut candidates: Option<Vec<u32>> = None;
            for (col, want) in hashed {
                let Some(want) = want else { continue };
                let data = self.read_col(col, lo, hi)?;
                let hit = |i: usize| match col {
                    Col::Flags => u32::from(data[i]) & want != 0,
                    _ => le_u32(&data[i * 4..]) == want,
                };
                candidates = Some(match candidates {
                    None if col == Col::Flags => data
                        .iter()
                        .enumerate()
                        .filter(|(_, f)| u32::from(**f) & want != 0)
                        .map(|(i, _)| i as u32)
                        .collect(),
                    None => data
                        .chunks_exact(4)
                        .enumerate()
                        .filter(|(_, b)| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) == want)
                        .map(|(i, _)| i as u32)
                        .collect(),
                    Some(c) => c.into_iter().filter(|i| hit(*i as usize)).collect(),
                });
                if candidates.as_ref().is_some_and(Vec::is_empty) {
                    break;
                }
            }
            let mut candidates = candidates.unwrap_or_default();
            if !candidates.is_empty() {
                // Outcome records are folded into their decisions, never listed.
                let flags = self.read_col(Col::Flags, lo, hi)?;
                candidates.retain(|i| flags[*i as usize] & KIND_MASK != KIND_OUTCOME);
            }
            if timed && !candidates.is_empty() {
                let times = self.read_col(Col::Time, lo, hi)?;
                candidates.retain(|i| {
                    let t = le_u64(&times[*i as usize * 8..]) as i64;
                    t >= since && t < until
                });
            }
            let candidates = candidates.into_iter().rev().map(|i| lo + i as usize);
            for entry in candidates {
                if out.len() >= f.limit {
                    break;
                }
                let event = self.event_at(entry, &mut segments)?;
                if exact(&event, tenant, f) {
                    out.push(event);
                }
            }
            hi = lo;
        }
        Ok(out)
    }

    fn event_at(&self, entry: usize, segments: &mut HashMap<u64, File>) -> io::Result<AuditEvent> {
        let pos = self.read_col(Col::Pos, entry, entry + 1)?;
        let (segment, offset, len) = (le_u64(&pos), le_u64(&pos[8..]), le_u32(&pos[16..]));
        let file = match segments.entry(segment) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(File::open(log::segment_path(&self.log_dir, segment))?)
            }
        };
        let mut line = vec![0u8; len as usize];
        file.read_exact_at(&mut line, offset)?;
        let mut event = serde_json::from_slice::<Record>(&line)
            .map_err(|e| {
                io::Error::other(format!(
                    "audit index entry {entry} points at a line of segment {segment} that is not a record ({e}); run `actgate audit verify`"
                ))
            })?
            .event;
        // What became of a forwarded request, when its outcome came as a record of its own.
        let status = self.read_col(Col::Status, entry, entry + 1)?;
        let status = u16::from_le_bytes([status[0], status[1]]);
        if status != 0 {
            event.upstream_status = Some(status);
            let latency = le_u32(&self.read_col(Col::Latency, entry, entry + 1)?);
            if latency != NO_LATENCY {
                event.latency_us = Some(u64::from(latency));
            }
        }
        Ok(event)
    }
}

/// Every filter checked on the record itself.
fn exact(e: &AuditEvent, tenant: &str, f: &AuditFilter) -> bool {
    *e.tenant_id == *tenant
        && e.kind != EventKind::Outcome
        && f.agent_id
            .as_deref()
            .is_none_or(|a| e.agent_id.as_deref() == Some(a))
        && f.decision.as_deref().is_none_or(|d| e.decision == d)
        && f.action.as_deref().is_none_or(|a| *e.action == *a)
        && f.resource.as_deref().is_none_or(|r| e.resource == r)
        && f.since_ms.is_none_or(|s| e.time_ms >= s)
        && f.until_ms.is_none_or(|u| e.time_ms < u)
}

fn write_meta(dir: &Path, meta: &Meta) -> io::Result<()> {
    let tmp = dir.join("meta.json.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(meta).map_err(io::Error::other)?)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join("meta.json"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Source;
    use crate::audit::log::LogFile;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[(self.next() as usize) % from.len()]
        }
    }

    fn event(rng: &mut Rng, i: u64) -> AuditEvent {
        let mut e = AuditEvent::refusal(
            format!("aud_{i}"),
            Source::Proxy,
            rng.pick(&["t1", "t1", "t1", "t2"]),
            "req",
            rng.pick(&["policy_allow", "no_matching_policy"]),
            String::new(),
        );
        e.decision = rng.pick(&["allowed", "denied", "allowed"]).into();
        e.agent_id = match rng.next() % 5 {
            0 => None,
            n => Some(format!("agent_{n}").into()),
        };
        e.action = rng.pick(&["read", "write", "delete"]).into();
        e.resource = format!("api://crm/customers/{}", rng.next() % 50);
        // Roughly increasing, with jitter.
        e.time_ms = 1_000_000 + i as i64 * 10 - (rng.next() % 30) as i64;
        e.upstream_status = (rng.next().is_multiple_of(3)).then_some(200);
        e
    }

    fn brute(all: &[AuditEvent], tenant: &str, f: &AuditFilter) -> Vec<u64> {
        all.iter()
            .rev()
            .filter(|e| f.before_seq.is_none_or(|b| e.seq < b) && exact(e, tenant, f))
            .take(f.limit)
            .map(|e| e.seq)
            .collect()
    }

    /// A log under `data/audit` and its index, both empty.
    fn log_and_index(data: &Path, max_len: u64) -> (PathBuf, LogFile, AuditIndex) {
        let log_dir = data.join("audit");
        let (log, _) = LogFile::open(&log_dir, max_len).unwrap();
        let index = AuditIndex::open(data, &log_dir).unwrap();
        (log_dir, log, index)
    }

    #[test]
    fn every_filter_answers_what_a_full_scan_answers_across_chunks_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let (log_dir, mut log, index) = log_and_index(data, 1 << 20);
        let mut rng = Rng(7);
        let mut all = Vec::new();
        let total = CHUNK as u64 * 2 + 1234;
        let mut i = 0;
        while i < total {
            let n = (1 + rng.next() % 3000).min(total - i);
            let mut batch: Vec<AuditEvent> = (i..i + n).map(|k| event(&mut rng, k)).collect();
            let pos = log.append(&mut batch).unwrap();
            index.append(&batch, &pos).unwrap();
            all.extend(batch);
            i += n;
        }
        assert_eq!(index.head(), total);
        drop(index);
        // Reopened: the same answers (chunk summaries rebuilt from the columns).
        let index = AuditIndex::open(data, &log_dir).unwrap();
        assert_eq!(index.head(), total);
        let mut filters = vec![AuditFilter {
            limit: 100,
            ..AuditFilter::default()
        }];
        for k in 0..60 {
            let mut f = AuditFilter {
                limit: [1, 10, 100, 1000][k % 4],
                ..AuditFilter::default()
            };
            if rng.next().is_multiple_of(2) {
                f.agent_id = Some(format!("agent_{}", rng.next() % 6));
            }
            if rng.next().is_multiple_of(3) {
                f.decision = Some(rng.pick(&["allowed", "denied"]).to_string());
            }
            if rng.next().is_multiple_of(3) {
                f.action = Some(rng.pick(&["read", "write", "delete", "nope"]).to_string());
            }
            if rng.next().is_multiple_of(4) {
                f.resource = Some(format!("api://crm/customers/{}", rng.next() % 60));
            }
            if rng.next().is_multiple_of(3) {
                let t = 1_000_000 + (rng.next() % total) as i64 * 10;
                f.since_ms = Some(t);
                f.until_ms = Some(t + (rng.next() % 20_000) as i64);
            }
            if rng.next().is_multiple_of(3) {
                f.before_seq = Some(rng.next() % (total + 10));
            }
            filters.push(f);
        }
        for f in &filters {
            for tenant in ["t1", "t2", "t3"] {
                let got: Vec<u64> = index
                    .query(tenant, f)
                    .unwrap()
                    .iter()
                    .map(|e| e.seq)
                    .collect();
                assert_eq!(got, brute(&all, tenant, f), "{tenant} {f:?}");
            }
        }
        // Bodies come back whole from the log.
        let last = index
            .query(
                "t1",
                &AuditFilter {
                    limit: 1,
                    ..AuditFilter::default()
                },
            )
            .unwrap();
        let want = all.iter().rev().find(|e| &*e.tenant_id == "t1").unwrap();
        assert_eq!(&last[0], want);
    }

    #[test]
    fn a_torn_column_is_cut_back_and_the_log_replays_into_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let (log_dir, mut log, index) = log_and_index(data, 1 << 20);
        let mut rng = Rng(1);
        let mut batch: Vec<AuditEvent> = (0..100).map(|k| event(&mut rng, k)).collect();
        let pos = log.append(&mut batch).unwrap();
        index.append(&batch[..60], &pos[..60]).unwrap();
        drop(index);
        // A crash mid-write: one column got half an entry more.
        let flags = index_dir(data).join("flags.col");
        let mut f = OpenOptions::new().append(true).open(&flags).unwrap();
        f.write_all(&[1]).unwrap();
        let time = index_dir(data).join("time.col");
        OpenOptions::new()
            .append(true)
            .open(&time)
            .unwrap()
            .write_all(&[0; 5])
            .unwrap();
        let index = AuditIndex::open(data, &log_dir).unwrap();
        assert_eq!(index.head(), 60);
        assert_eq!(index.catch_up(100, &mut |_, _| {}).unwrap(), 40);
        assert_eq!(index.head(), 100);
        let got = index
            .query(
                &batch[99].tenant_id,
                &AuditFilter {
                    limit: 1,
                    ..AuditFilter::default()
                },
            )
            .unwrap();
        assert_eq!(got[0].seq, 100);
        // Ahead of the log: refused, with the way out.
        let err = index.catch_up(50, &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("audit reindex"), "{err}");
        // A gap (a batch skipped): the index is behind until it replays.
        let mut more: Vec<AuditEvent> = (0..10).map(|k| event(&mut rng, 100 + k)).collect();
        let pos = log.append(&mut more).unwrap();
        let mut later: Vec<AuditEvent> = (0..10).map(|k| event(&mut rng, 110 + k)).collect();
        let later_pos = log.append(&mut later).unwrap();
        assert!(index.append(&later, &later_pos).is_err());
        assert!(index.is_behind());
        let _ = pos;
        assert_eq!(index.catch_up(120, &mut |_, _| {}).unwrap(), 20);
        assert!(!index.is_behind());
        assert_eq!(index.head(), 120);
    }

    /// A `strict` outcome record `id` of decision `decision`.
    fn outcome(id: &str, decision: &str, status: u16, latency_us: u64) -> AuditEvent {
        let mut o = AuditEvent::refusal(id.into(), Source::Proxy, "t", "r", "", String::new());
        o.kind = EventKind::Outcome;
        o.decision = "".into();
        o.decision_id = Some(decision.into());
        o.upstream_status = Some(status);
        o.latency_us = Some(latency_us);
        o
    }

    #[test]
    fn a_strict_outcome_folds_into_its_decision_and_is_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let (_, mut log, index) = log_and_index(data, 1 << 20);
        let mut decision = AuditEvent::refusal(
            "aud_d".into(),
            Source::Proxy,
            "t",
            "r",
            "policy_allow",
            String::new(),
        );
        decision.decision = "allowed".into();
        let mut batch = vec![decision];
        let pos = log.append(&mut batch).unwrap();
        index.append(&batch, &pos).unwrap();
        let mut batch = vec![outcome("aud_o", "aud_d", 503, 1234)];
        let pos = log.append(&mut batch).unwrap();
        index.append(&batch, &pos).unwrap();
        let got = index
            .query(
                "t",
                &AuditFilter {
                    limit: 10,
                    ..AuditFilter::default()
                },
            )
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, "aud_d");
        assert_eq!(got[0].upstream_status, Some(503));
        assert_eq!(got[0].latency_us, Some(1234));
    }

    #[test]
    fn strict_outcomes_of_a_batch_fold_as_one_range_and_old_ones_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let (log_dir, mut log, index) = log_and_index(data, 64 << 20);
        let decision = |i: usize| {
            let mut d = AuditEvent::refusal(
                format!("aud_d{i}"),
                Source::Proxy,
                "t",
                "r",
                "policy_allow",
                String::new(),
            );
            d.decision = "allowed".into();
            d.agent_id = Some(format!("agent_{i}").into());
            d
        };
        // More decisions than the mirrored tail holds: the oldest are only on disk.
        let n = TAIL_ENTRIES + 3_000;
        let mut batch: Vec<AuditEvent> = (0..n).map(decision).collect();
        let pos = log.append(&mut batch).unwrap();
        index.append(&batch, &pos).unwrap();
        // One batch of outcomes: scattered, newest and (outside the tail) oldest decisions.
        let folded = [(5, 501), (n - 5_000, 502), (n - 10, 503), (n - 1, 504)];
        let mut batch: Vec<AuditEvent> = folded
            .iter()
            .map(|(i, status)| {
                outcome(
                    &format!("aud_o{i}"),
                    &format!("aud_d{i}"),
                    *status,
                    *status as u64 * 10,
                )
            })
            .collect();
        let pos = log.append(&mut batch).unwrap();
        index.append(&batch, &pos).unwrap();
        let one = |i: usize| {
            let got = index
                .query(
                    "t",
                    &AuditFilter {
                        agent_id: Some(format!("agent_{i}")),
                        limit: 10,
                        ..AuditFilter::default()
                    },
                )
                .unwrap();
            assert_eq!(got.len(), 1, "agent_{i}");
            (got[0].upstream_status, got[0].latency_us)
        };
        for (i, status) in folded {
            assert_eq!(
                one(i),
                (Some(status), Some(status as u64 * 10)),
                "decision {i}"
            );
        }
        // Entries between the patched ones, rewritten with the range, kept what they had.
        for i in [n - 4_999, n - 11, n - 2, 6] {
            assert_eq!(one(i), (None, None), "decision {i}");
        }
        // And a reopened index reads the same from disk.
        drop(index);
        let index = AuditIndex::open(data, &log_dir).unwrap();
        let got = index
            .query(
                "t",
                &AuditFilter {
                    agent_id: Some(format!("agent_{}", n - 10)),
                    limit: 10,
                    ..AuditFilter::default()
                },
            )
            .unwrap();
        assert_eq!(got[0].upstream_status, Some(503));
    }
}
