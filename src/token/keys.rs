//! The Ed25519 key set: one active signing key and every verification key still trusted.
//!
//! Keys live in `tokens.keysDir` (default `<dataDir>/keys/`, directory 0700): `<kid>.key`
//! holds a secret key (0600), `<kid>.pub` its public key, `<kid>.created` when it was made,
//! `active` the kid that signs. Each key is in one of three states:
//!
//! - `active` — named by `active`: signs new tokens (and audit checkpoints), verifies;
//! - `verify-only` — an older key: tokens it signed keep verifying until they expire;
//! - `retired` — `<kid>.retired` exists: tokens it signed are refused from the moment a
//!   gateway loads the change (within seconds), and its secret half is deleted. Its public
//!   half stays, so audit checkpoints it signed while trusted can still be checked.
//!
//! A key set can also be exported as one file (`actgate keys export`, [`EXPORT_FILE`]): the
//! active key's secret half and every other key's public half with its state. A key
//! directory holding that file and no `active` file is read-only — a Kubernetes Secret
//! generated from the export and mounted as `tokens.keysDir`; rotation and retirement happen
//! in the directory it was exported from, then the export is generated again.
//!
//! Rotation adds a key and makes it active. Files are written to a temporary name, fsync'd
//! and renamed, so a crash never leaves half a key. A key id is `k` + the first 16 hex digits
//! of the SHA-256 of the public key.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ahash::AHashMap;
use pasetors::keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate};
use pasetors::version4::V4;
use sha2::{Digest, Sha256};

/// A key that signs tokens (and audit checkpoints).
pub struct SigningKey {
    /// Its id, carried in every token's footer.
    pub kid: String,
    /// The secret half. Never logged: `Debug` is not implemented.
    pub(crate) secret: AsymmetricSecretKey<V4>,
    /// The public half.
    pub public: AsymmetricPublicKey<V4>,
}

impl SigningKey {
    /// The 64-byte Ed25519 secret key (seed ‖ public), for checkpoint signatures.
    pub fn secret_bytes(&self) -> &[u8] {
        self.secret.as_bytes()
    }
}

/// The state of one key (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Signs new tokens.
    Active,
    /// Verifies tokens it signed earlier.
    VerifyOnly,
    /// Trusted for nothing.
    Retired,
}

impl KeyState {
    /// `active`, `verify-only` or `retired`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::VerifyOnly => "verify-only",
            KeyState::Retired => "retired",
        }
    }
}

/// What `actgate keys list` shows of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Its id.
    pub kid: String,
    /// Its state.
    pub state: KeyState,
    /// When it was made (Unix seconds), from `<kid>.created` or else the public key file's
    /// modification time.
    pub created: Option<i64>,
    /// When it was retired (Unix seconds).
    pub retired: Option<i64>,
}

/// Every trusted key.
pub struct KeySet {
    /// The key new tokens are signed with; `None` for a verify-only set.
    pub signing: Option<SigningKey>,
    verifying: AHashMap<String, TrustedKey>,
}

/// A public key tokens are verified with: as pasetors holds it (its bytes are what is
/// published and what the kid hashes), and decoded once as a curve point for
/// [`super::signature::verify`].
#[derive(Clone)]
pub struct TrustedKey {
    /// The key (private: it and `point` are one key, set together by [`TrustedKey::new`]).
    public: AsymmetricPublicKey<V4>,
    /// The decoded point; `None` when the 32 bytes are not a point, and then the key
    /// verifies nothing (as under pasetors).
    point: Option<ed25519_dalek::VerifyingKey>,
}

impl TrustedKey {
    /// Decodes `public`.
    pub fn new(public: AsymmetricPublicKey<V4>) -> TrustedKey {
        let point = <&[u8; 32]>::try_from(public.as_bytes())
            .ok()
            .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(b).ok());
        TrustedKey { public, point }
    }

    /// The decoded point, if the key is one.
    pub(super) fn point(&self) -> Option<&ed25519_dalek::VerifyingKey> {
        self.point.as_ref()
    }
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("signing", &self.signing.as_ref().map(|k| &k.kid))
            .field("verifying", &self.verifying.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Why the key set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A file does not hold a valid key.
    #[error("{path}: not a valid Ed25519 key file")]
    Corrupt {
        /// The file.
        path: PathBuf,
    },
    /// The `active` file names a retired key.
    #[error(
        "{dir}/active names key {kid}, which is retired; run `actgate keys rotate` to make a new active key"
    )]
    RetiredActive {
        /// The key directory.
        dir: PathBuf,
        /// The kid.
        kid: String,
    },
    /// No such key.
    #[error("no key {kid} in {dir}; `actgate keys list` shows the keys")]
    UnknownKey {
        /// The key directory.
        dir: PathBuf,
        /// The kid.
        kid: String,
    },
    /// The active key cannot be retired.
    #[error("{kid} is the active signing key: run `actgate keys rotate` first, then retire {kid}")]
    RetireActive {
        /// The kid.
        kid: String,
    },
    /// The key directory holds an exported key set, which does not change in place.
    #[error(
        "{dir} holds an exported key set ({file}), which is read-only: rotate or retire in the key directory it was exported from, then run `actgate keys export` again and replace the file (in Kubernetes: re-apply the kustomization)",
        file = EXPORT_FILE
    )]
    ReadOnly {
        /// The key directory.
        dir: PathBuf,
    },
    /// A line of an exported key set is not valid.
    #[error("{path}:{line}: {why}")]
    BadExport {
        /// The file.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// What is wrong with it.
        why: String,
    },
    /// The `active` file names a key that is not there.
    #[error("{dir}/active names key {kid}, but {kid}.key is missing")]
    MissingActive {
        /// The key directory.
        dir: PathBuf,
        /// The kid.
        kid: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The id of a public key.
pub fn key_id(public: &AsymmetricPublicKey<V4>) -> String {
    let digest = Sha256::digest(public.as_bytes());
    format!("k{}", &hex::encode(digest)[..16])
}

impl KeySet {
    /// A set holding one in-memory key; for tests and `actgate check`-like tools.
    pub fn ephemeral() -> KeySet {
        let pair = AsymmetricKeyPair::<V4>::generate().expect("key generation");
        let kid = key_id(&pair.public);
        let mut verifying = AHashMap::new();
        verifying.insert(kid.clone(), TrustedKey::new(pair.public.clone()));
        KeySet {
            signing: Some(SigningKey {
                kid,
                secret: pair.secret,
                public: pair.public,
            }),
            verifying,
        }
    }

    /// Loads the key directory, creating it and a first key when it is absent or empty.
    pub fn load_or_create(dir: &Path) -> Result<KeySet, KeyError> {
        let active = dir.join("active");
        if !active.exists() && !dir.join(EXPORT_FILE).exists() {
            create_dir_private(dir)?;
            Self::rotate(dir)?;
        }
        Self::load(dir)
    }

    /// Loads an existing key directory. Fails (and the gateway refuses to start) when the
    /// active key is missing or unreadable: it never falls back to a new key silently, which
    /// would invalidate every token in flight.
    pub fn load(dir: &Path) -> Result<KeySet, KeyError> {
        if let Some(file) = exported(dir) {
            return Ok(Exported::read(&file)?.key_set());
        }
        let active_path = dir.join("active");
        let kid = fs::read_to_string(&active_path)
            .map_err(io_err(&active_path))?
            .trim()
            .to_string();
        let mut verifying = AHashMap::new();
        for (kid, public) in read_publics(dir)? {
            if !dir.join(format!("{kid}.retired")).exists() {
                verifying.insert(kid, TrustedKey::new(public));
            }
        }
        if dir.join(format!("{kid}.retired")).exists() {
            return Err(KeyError::RetiredActive {
                dir: dir.to_path_buf(),
                kid,
            });
        }
        let secret_path = dir.join(format!("{kid}.key"));
        if !secret_path.exists() {
            return Err(KeyError::MissingActive {
                dir: dir.to_path_buf(),
                kid,
            });
        }
        let secret = read_hex(&secret_path, 64)
            .and_then(|b| AsymmetricSecretKey::<V4>::from(&b).map_err(|_| corrupt(&secret_path)))?;
        let public = AsymmetricPublicKey::<V4>::from(&secret.as_bytes()[32..])
            .map_err(|_| corrupt(&secret_path))?;
        if key_id(&public) != kid {
            return Err(corrupt(&secret_path));
        }
        verifying.insert(kid.clone(), TrustedKey::new(public.clone()));
        Ok(KeySet {
            signing: Some(SigningKey {
                kid,
                secret,
                public,
            }),
            verifying,
        })
    }

    /// Generates a new key, writes it, and makes it the active one. Returns its kid.
    pub fn rotate(dir: &Path) -> Result<String, KeyError> {
        refuse_exported(dir)?;
        create_dir_private(dir)?;
        let pair = AsymmetricKeyPair::<V4>::generate().map_err(|_| KeyError::Io {
            path: dir.to_path_buf(),
            source: io::Error::other("key generation failed"),
        })?;
        let kid = key_id(&pair.public);
        write_atomic(
            &dir.join(format!("{kid}.key")),
            hex::encode(pair.secret.as_bytes()).as_bytes(),
            0o600,
        )?;
        write_atomic(
            &dir.join(format!("{kid}.pub")),
            hex::encode(pair.public.as_bytes()).as_bytes(),
            0o644,
        )?;
        write_atomic(
            &dir.join(format!("{kid}.created")),
            super::rfc3339(super::now_unix()).as_bytes(),
            0o644,
        )?;
        write_atomic(&dir.join("active"), kid.as_bytes(), 0o644)?;
        Ok(kid)
    }

    /// Retires `kid`: tokens it signed are refused from the next key reload, and its secret
    /// half is deleted. The active key cannot be retired (rotate first); retiring a retired
    /// key again changes nothing.
    pub fn retire(dir: &Path, kid: &str) -> Result<(), KeyError> {
        refuse_exported(dir)?;
        let known = read_publics(dir)?.into_iter().any(|(k, _)| k == kid);
        if !known {
            return Err(KeyError::UnknownKey {
                dir: dir.to_path_buf(),
                kid: kid.to_string(),
            });
        }
        let active_path = dir.join("active");
        let active = fs::read_to_string(&active_path).map_err(io_err(&active_path))?;
        if active.trim() == kid {
            return Err(KeyError::RetireActive {
                kid: kid.to_string(),
            });
        }
        let marker = dir.join(format!("{kid}.retired"));
        if !marker.exists() {
            write_atomic(&marker, super::rfc3339(super::now_unix()).as_bytes(), 0o644)?;
        }
        let secret = dir.join(format!("{kid}.key"));
        match fs::remove_file(&secret) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&secret)(e)),
            _ => Ok(()),
        }
    }

    /// Every key of a key directory with its state, newest first.
    pub fn list(dir: &Path) -> Result<Vec<KeyInfo>, KeyError> {
        if let Some(file) = exported(dir) {
            let mut out: Vec<KeyInfo> = Exported::read(&file)?
                .keys
                .into_iter()
                .map(|k| k.info)
                .collect();
            out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.kid.cmp(&b.kid)));
            return Ok(out);
        }
        let active_path = dir.join("active");
        let active = fs::read_to_string(&active_path)
            .map_err(io_err(&active_path))?
            .trim()
            .to_string();
        let mut out = Vec::new();
        for (kid, _) in read_publics(dir)? {
            let stamp = |ext: &str| {
                fs::read_to_string(dir.join(format!("{kid}.{ext}")))
                    .ok()
                    .and_then(|t| humantime::parse_rfc3339(t.trim()).ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs() as i64)
            };
            let retired = stamp("retired")
                .or_else(|| dir.join(format!("{kid}.retired")).exists().then_some(0));
            let created = stamp("created").or_else(|| {
                fs::metadata(dir.join(format!("{kid}.pub")))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs() as i64)
            });
            let state = if retired.is_some() {
                KeyState::Retired
            } else if kid == active {
                KeyState::Active
            } else {
                KeyState::VerifyOnly
            };
            out.push(KeyInfo {
                kid,
                state,
                created,
                retired,
            });
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.kid.cmp(&b.kid)));
        Ok(out)
    }

    /// The public key for `kid`, if it is trusted.
    pub fn verifying_key(&self, kid: &str) -> Option<&TrustedKey> {
        self.verifying.get(kid)
    }

    /// Every trusted public key as (kid, base64 of its 32 bytes), for publishing in the
    /// shared store.
    pub fn publics(&self) -> Vec<(String, String)> {
        use base64::Engine;
        let mut out: Vec<(String, String)> = self
            .verifying
            .iter()
            .map(|(kid, k)| {
                (
                    kid.clone(),
                    base64::engine::general_purpose::STANDARD.encode(k.public.as_bytes()),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Ids of every trusted key.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.verifying.keys().map(String::as_str)
    }
}

/// Every public key of a key directory, retired ones included, by kid.
fn read_publics(dir: &Path) -> Result<Vec<(String, AsymmetricPublicKey<V4>)>, KeyError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path.extension().and_then(|e| e.to_str()) == Some("pub") {
            let bytes = read_hex(&path, 32)?;
            let public = AsymmetricPublicKey::<V4>::from(&bytes).map_err(|_| corrupt(&path))?;
            out.push((key_id(&public), public));
        }
    }
    Ok(out)
}

/// Every public key in a key directory, retired ones included, by kid: audit checkpoints are
/// checked against the key that signed them, which may have been retired since.
pub fn public_keys(dir: &Path) -> Result<AHashMap<String, Vec<u8>>, KeyError> {
    if let Some(file) = exported(dir) {
        return Ok(Exported::read(&file)?
            .keys
            .into_iter()
            .map(|k| (k.info.kid, k.public.as_bytes().to_vec()))
            .collect());
    }
    Ok(read_publics(dir)?
        .into_iter()
        .map(|(kid, public)| (kid, public.as_bytes().to_vec()))
        .collect())
}

/// The name of an exported key set inside a key directory (see the module documentation).
pub const EXPORT_FILE: &str = "signing-keys";

/// The first line of an exported key set.
const EXPORT_HEADER: &str = "actgate-keys v1";

/// The exported key set of `dir`, when it holds one and is not an ordinary key directory.
fn exported(dir: &Path) -> Option<PathBuf> {
    let file = dir.join(EXPORT_FILE);
    (!dir.join("active").exists() && file.exists()).then_some(file)
}

fn refuse_exported(dir: &Path) -> Result<(), KeyError> {
    match dir.join(EXPORT_FILE).exists() {
        true => Err(KeyError::ReadOnly {
            dir: dir.to_path_buf(),
        }),
        false => Ok(()),
    }
}

/// One key of an exported key set.
struct ExportedKey {
    info: KeyInfo,
    public: AsymmetricPublicKey<V4>,
    /// The active key's secret half.
    secret: Option<AsymmetricSecretKey<V4>>,
}

/// An exported key set: exactly one active key (with its secret half) and the public halves
/// of the others.
struct Exported {
    keys: Vec<ExportedKey>,
}

impl Exported {
    /// Reads and checks an exported key set: every line names its state, kid, creation and
    /// retirement times and key (hex), the kid matching the key.
    fn read(path: &Path) -> Result<Exported, KeyError> {
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        Self::parse(path, &text)
    }

    /// Checks an exported key set's text (`path` names it in errors).
    fn parse(path: &Path, text: &str) -> Result<Exported, KeyError> {
        let bad = |line: usize, why: String| KeyError::BadExport {
            path: path.to_path_buf(),
            line,
            why,
        };
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
        if lines.next().map(|(_, l)| l) != Some(EXPORT_HEADER) {
            return Err(bad(
                1,
                format!(
                    "not an exported key set (the first line must be `{EXPORT_HEADER}`); make one with `actgate keys export`"
                ),
            ));
        }
        let mut keys = Vec::new();
        for (n, line) in lines.filter(|(_, l)| !l.is_empty() && !l.starts_with('#')) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [state, kid, created, retired, hex_key] = fields[..] else {
                return Err(bad(
                    n,
                    "expected `<state> <kid> <created> <retired> <key>`".into(),
                ));
            };
            let time = |s: &str, what: &str| match s {
                "-" => Ok(None),
                s => super::parse_time(s)
                    .map(Some)
                    .ok_or_else(|| bad(n, format!("{what} `{s}` is not an RFC 3339 time or -"))),
            };
            let (created, retired) = (time(created, "created")?, time(retired, "retired")?);
            let state = match state {
                "active" => KeyState::Active,
                "verify-only" => KeyState::VerifyOnly,
                "retired" => KeyState::Retired,
                other => {
                    return Err(bad(
                        n,
                        format!("unknown state `{other}` (active, verify-only or retired)"),
                    ));
                }
            };
            if (state == KeyState::Retired) != retired.is_some() {
                return Err(bad(
                    n,
                    "a retirement time goes with the retired state, and only with it".into(),
                ));
            }
            let bytes = hex::decode(hex_key).map_err(|_| bad(n, "the key is not hex".into()))?;
            let (public, secret) = if state == KeyState::Active {
                let secret = AsymmetricSecretKey::<V4>::from(&bytes)
                    .map_err(|_| bad(n, "the active key must be a 64-byte secret key".into()))?;
                let public = AsymmetricPublicKey::<V4>::from(&secret.as_bytes()[32..])
                    .map_err(|_| bad(n, "the active key must be a 64-byte secret key".into()))?;
                (public, Some(secret))
            } else {
                let public = AsymmetricPublicKey::<V4>::from(&bytes)
                    .ok()
                    .filter(|_| bytes.len() == 32)
                    .ok_or_else(|| bad(n, "the key must be a 32-byte public key".into()))?;
                (public, None)
            };
            if key_id(&public) != kid {
                return Err(bad(
                    n,
                    format!("the key's id is {}, not {kid}", key_id(&public)),
                ));
            }
            if keys.iter().any(|k: &ExportedKey| k.info.kid == kid) {
                return Err(bad(n, format!("{kid} appears twice")));
            }
            if secret.is_some() && keys.iter().any(|k: &ExportedKey| k.secret.is_some()) {
                return Err(bad(
                    n,
                    "a second active key: an exported key set holds exactly one".into(),
                ));
            }
            keys.push(ExportedKey {
                info: KeyInfo {
                    kid: kid.to_string(),
                    state,
                    created,
                    retired,
                },
                public,
                secret,
            });
        }
        if !keys.iter().any(|k| k.secret.is_some()) {
            return Err(bad(
                1,
                "no active key: an exported key set holds exactly one".into(),
            ));
        }
        Ok(Exported { keys })
    }

    /// The trusted keys: the active one signs, retired ones verify nothing.
    fn key_set(self) -> KeySet {
        let mut signing = None;
        let mut verifying = AHashMap::new();
        for k in self.keys {
            if k.info.state == KeyState::Retired {
                continue;
            }
            verifying.insert(k.info.kid.clone(), TrustedKey::new(k.public.clone()));
            if let Some(secret) = k.secret {
                signing = Some(SigningKey {
                    kid: k.info.kid,
                    secret,
                    public: k.public,
                });
            }
        }
        KeySet { signing, verifying }
    }
}

/// Writes the key set of `dir` as one file `out` (0600, atomically): the active key's secret
/// half, every other key's public half, each with its state and times. Returns how many keys
/// it holds.
pub fn export(dir: &Path, out: &Path) -> Result<usize, KeyError> {
    let set = KeySet::load(dir)?;
    let signing = set
        .signing
        .as_ref()
        .ok_or_else(|| KeyError::MissingActive {
            dir: dir.to_path_buf(),
            kid: "-".into(),
        })?;
    let publics: AHashMap<String, Vec<u8>> = public_keys(dir)?;
    let stamp = |t: Option<i64>| t.map(super::rfc3339).unwrap_or_else(|| "-".into());
    let mut text = format!(
        "{EXPORT_HEADER}\n# Exported by `actgate keys export` at {}. It holds the active signing key's secret half:\n# keep it secret (a Kubernetes Secret, never git). Lines: state kid created retired key.\n",
        super::rfc3339(super::now_unix())
    );
    let list = KeySet::list(dir)?;
    for k in &list {
        let key = match k.state {
            KeyState::Active => hex::encode(signing.secret.as_bytes()),
            _ => hex::encode(
                publics
                    .get(&k.kid)
                    .ok_or_else(|| corrupt(&dir.join(format!("{}.pub", k.kid))))?,
            ),
        };
        text.push_str(&format!(
            "{} {} {} {} {key}\n",
            k.state.as_str(),
            k.kid,
            stamp(k.created),
            match k.state {
                // A retired key with no recorded time: retired at export at the latest.
                KeyState::Retired =>
                    stamp(k.retired.filter(|t| *t > 0).or(Some(super::now_unix()))),
                _ => "-".into(),
            }
        ));
    }
    let out = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => out.to_path_buf(),
        _ => Path::new(".").join(out),
    };
    let parent = out.parent().unwrap_or(Path::new("."));
    let inside = fs::canonicalize(parent)
        .and_then(|p| Ok(p == fs::canonicalize(dir)?))
        .map_err(io_err(parent))?;
    if inside {
        return Err(KeyError::Io {
            path: out,
            source: io::Error::other(
                "export outside the key directory: a key directory holding an export becomes read-only",
            ),
        });
    }
    // The listing and the loaded set are two reads of the directory: a rotation between them
    // (or an active key without its `.pub`) would write a file no gateway accepts. Check it
    // as a gateway will, and that it signs with the key just loaded, before writing it.
    let written = Exported::parse(&out, &text)?;
    let active = written.key_set().signing.map(|k| k.kid);
    if active.as_deref() != Some(signing.kid.as_str()) {
        return Err(KeyError::Io {
            path: dir.to_path_buf(),
            source: io::Error::other(
                "the key directory changed during the export (a rotation?); run the export again",
            ),
        });
    }
    write_atomic(&out, text.as_bytes(), 0o600)?;
    Ok(list.len())
}

/// A cheap fingerprint of a key directory (names, sizes, modification times): when it
/// changes, the key set is reloaded.
pub fn fingerprint(dir: &Path) -> io::Result<u64> {
    use std::hash::{Hash, Hasher};
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        entries.push((entry.file_name(), meta.len(), meta.modified().ok()));
    }
    entries.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    entries.hash(&mut h);
    Ok(h.finish())
}

fn corrupt(path: &Path) -> KeyError {
    KeyError::Corrupt {
        path: path.to_path_buf(),
    }
}

fn read_hex(path: &Path, len: usize) -> Result<Vec<u8>, KeyError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let bytes = hex::decode(text.trim()).map_err(|_| corrupt(path))?;
    if bytes.len() != len {
        return Err(corrupt(path));
    }
    Ok(bytes)
}

/// Creates `dir` (and parents) with mode 0700 if absent.
/// Every directory it creates (parents included) is 0700: none of them is anyone else's
/// business.
pub fn create_dir_private(dir: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
    }
    Ok(())
}

/// Writes `data` to `path` atomically: a temporary file beside it (`.<name>.<pid>.tmp`, with
/// `mode`, removed if anything fails), fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), KeyError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(data).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_err(parent))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_load_creates_a_private_key_and_rotation_keeps_old_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let first = KeySet::load_or_create(&dir).unwrap();
        let kid1 = first.signing.as_ref().unwrap().kid.clone();
        let mode = fs::metadata(dir.join(format!("{kid1}.key")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );

        let again = KeySet::load_or_create(&dir).unwrap();
        assert_eq!(again.signing.as_ref().unwrap().kid, kid1);

        let kid2 = KeySet::rotate(&dir).unwrap();
        let rotated = KeySet::load(&dir).unwrap();
        assert_eq!(rotated.signing.as_ref().unwrap().kid, kid2);
        assert!(rotated.verifying_key(&kid1).is_some());
        assert!(rotated.verifying_key(&kid2).is_some());
    }

    #[test]
    fn an_unreadable_active_key_is_an_error_not_a_new_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let set = KeySet::load_or_create(&dir).unwrap();
        let kid = set.signing.unwrap().kid;
        fs::write(dir.join(format!("{kid}.key")), "zz").unwrap();
        assert!(matches!(
            KeySet::load_or_create(&dir),
            Err(KeyError::Corrupt { .. })
        ));
        fs::remove_file(dir.join(format!("{kid}.key"))).unwrap();
        assert!(matches!(
            KeySet::load(&dir),
            Err(KeyError::MissingActive { .. })
        ));
    }

    #[test]
    fn an_exported_key_set_loads_read_only_with_the_same_keys_and_states() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let old = KeySet::load_or_create(&dir).unwrap().signing.unwrap().kid;
        let middle = KeySet::rotate(&dir).unwrap();
        let active = KeySet::rotate(&dir).unwrap();
        KeySet::retire(&dir, &old).unwrap();
        let mounted = tmp.path().join("mounted");
        fs::create_dir(&mounted).unwrap();
        let file = mounted.join(EXPORT_FILE);
        assert_eq!(export(&dir, &file).unwrap(), 3);
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let set = KeySet::load_or_create(&mounted).unwrap();
        assert_eq!(set.signing.as_ref().unwrap().kid, active);
        let original = KeySet::load(&dir).unwrap();
        assert_eq!(
            set.signing.as_ref().unwrap().secret_bytes(),
            original.signing.as_ref().unwrap().secret_bytes()
        );
        assert!(set.verifying_key(&middle).is_some());
        assert!(
            set.verifying_key(&old).is_none(),
            "a retired key verifies nothing"
        );
        assert_eq!(KeySet::list(&mounted).unwrap(), KeySet::list(&dir).unwrap());
        assert!(
            public_keys(&mounted).unwrap().contains_key(&old),
            "kept for checkpoints"
        );
        // Only the active key's secret half travels.
        let text = fs::read_to_string(&file).unwrap();
        assert_eq!(
            text.matches(&hex::encode(set.signing.as_ref().unwrap().secret_bytes()))
                .count(),
            1
        );
        assert_eq!(text.lines().filter(|l| l.len() > 150).count(), 1);

        assert!(matches!(
            KeySet::rotate(&mounted),
            Err(KeyError::ReadOnly { .. })
        ));
        assert!(matches!(
            KeySet::retire(&mounted, &middle),
            Err(KeyError::ReadOnly { .. })
        ));
        assert!(!mounted.join("active").exists());
        // Exporting into the key directory itself would make it read-only: refused.
        assert!(export(&dir, &dir.join(EXPORT_FILE)).is_err());
        assert!(!dir.join(EXPORT_FILE).exists());
    }

    #[test]
    fn a_tampered_export_is_refused_naming_the_line() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        KeySet::load_or_create(&dir).unwrap();
        KeySet::rotate(&dir).unwrap();
        let mounted = tmp.path().join("mounted");
        fs::create_dir(&mounted).unwrap();
        let file = mounted.join(EXPORT_FILE);
        export(&dir, &file).unwrap();
        let good = fs::read_to_string(&file).unwrap();
        let other = KeySet::ephemeral();
        let other_public = hex::encode(other.signing.as_ref().unwrap().public.as_bytes());
        let cases: Vec<(String, &str)> = vec![
            // A verify-only key swapped for another under the same kid.
            (
                good.lines()
                    .map(|l| match l.starts_with("verify-only") {
                        true => {
                            let mut f: Vec<&str> = l.split(' ').collect();
                            f[4] = &other_public;
                            f.join(" ")
                        }
                        false => l.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                "the key's id is",
            ),
            (
                good.replace("verify-only", "active"),
                "must be a 64-byte secret key",
            ),
            // A genuine second signing key, kid and secret matching.
            (
                format!(
                    "{good}active {} - - {}\n",
                    other.signing.as_ref().unwrap().kid,
                    hex::encode(other.signing.as_ref().unwrap().secret_bytes())
                ),
                "a second active key",
            ),
            (
                format!("{good}{}\n", good.lines().last().unwrap()),
                "appears twice",
            ),
            (good.replace("verify-only", "trusted"), "unknown state"),
            (
                good.lines()
                    .map(|l| match l.starts_with("verify-only") {
                        true => {
                            let mut f: Vec<&str> = l.split(' ').collect();
                            f[3] = "2026-01-01T00:00:00Z";
                            f.join(" ")
                        }
                        false => l.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                "a retirement time goes with the retired state",
            ),
            (
                good.replace("actgate-keys v1", "actgate-keys v9"),
                "not an exported key set",
            ),
            (
                good.lines()
                    .filter(|l| !l.starts_with("active"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                "no active key",
            ),
        ];
        for (text, why) in cases {
            fs::write(&file, text).unwrap();
            let e = KeySet::load(&mounted).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("signing-keys:"), "{e}");
        }
    }
}
