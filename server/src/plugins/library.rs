//! Loading a plugin library and calling into it: all of the host's `unsafe` code.
#![allow(unsafe_code)] // the plugin host is the one place that loads and calls foreign code

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;
use tailor_plugin::abi::{self, ConstraintOut, ErrorBuf, FeatureSink, Handshake, Str};
use tailor_plugin::OwnedRequest;

use super::{PluginError, PluginInfo, PluginKind};

/// Error messages longer than this are truncated by the plugin.
const ERROR_CAP: usize = 1024;

/// Failure counters and the quarantine flag of one loaded library (shared by its attachments).
#[derive(Debug, Default)]
pub(super) struct Health {
    calls: AtomicU64,
    failures: AtomicU64,
    consecutive: AtomicU32,
    quarantined: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Health {
    fn quarantine_reason(&self) -> Option<String> {
        if self.quarantined.load(Ordering::Acquire) {
            self.reason.lock().clone()
        } else {
            None
        }
    }

    pub(super) fn release(&self) -> bool {
        self.consecutive.store(0, Ordering::Release);
        *self.reason.lock() = None;
        self.quarantined.swap(false, Ordering::AcqRel)
    }
}

/// A loaded, handshake-checked library. Never unloaded: the `libloading::Library` is leaked, so
/// every pointer into it (handshake, names, functions) is valid for the process lifetime.
pub(crate) struct Library {
    pub(super) name: &'static str,
    pub(super) version: &'static str,
    pub(super) kind: PluginKind,
    pub(super) reasons: Vec<&'static str>,
    pub(super) path: PathBuf,
    pub(super) hash: u64,
    pub(super) health: Health,
    handshake: &'static Handshake,
}

// SAFETY: `handshake` points at immutable static data in a library that is never unloaded.
unsafe impl Send for Library {}
unsafe impl Sync for Library {}

fn mismatch(path: &Path, field: &'static str, expected: u32, found: u32) -> PluginError {
    PluginError::AbiMismatch {
        path: path.to_path_buf(),
        field,
        expected: expected.into(),
        found: found.into(),
    }
}

/// Reads a `Str` from a checked handshake as a `'static` string.
///
/// # Safety
/// `s` must come from the handshake of a library that is never unloaded.
unsafe fn static_str(
    path: &Path,
    field: &'static str,
    s: Str,
) -> Result<&'static str, PluginError> {
    let bad = |message: &str| PluginError::BadHandshake {
        path: path.to_path_buf(),
        field,
        message: message.to_owned(),
    };
    if s.ptr.is_null() {
        return Err(bad("is null"));
    }
    if s.len > 4096 {
        return Err(bad("is longer than 4096 bytes"));
    }
    // SAFETY: per the ABI, `ptr` points at `len` bytes of static data in the library.
    let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(s.ptr, s.len) };
    std::str::from_utf8(bytes).map_err(|_| bad("is not UTF-8"))
}

/// A private copy of a library's bytes: a fresh directory (mode 0700, random name, created
/// exclusively) under the system temp directory holding one read-only file. Dropping it removes
/// both.
pub(super) struct Staged {
    _dir: PrivateDir,
    pub(super) file: PathBuf,
}

/// A directory only this process may use: created exclusively under a random name (mode 0700
/// on Unix), removed with its content when dropped.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create(prefix: &str) -> std::io::Result<PrivateDir> {
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        let base = std::env::temp_dir();
        for _ in 0..16 {
            let path = base.join(format!("{prefix}{:016x}", rand::random::<u64>()));
            match builder.create(&path) {
                Ok(()) => return Ok(PrivateDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "16 random names in a row were taken",
        ))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Staged {
    pub(super) fn write(path: &Path, bytes: &[u8], hash: u64) -> Result<Staged, PluginError> {
        use std::io::Write;
        let io = |what: &str, e: std::io::Error| PluginError::Io {
            path: path.to_path_buf(),
            message: format!(
                "cannot stage a private copy in {}: {what}: {e}",
                std::env::temp_dir().display()
            ),
        };
        let dir =
            PrivateDir::create("tailor-plugin-").map_err(|e| io("creating a directory", e))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("plugin");
        let file = dir.0.join(format!(
            "{stem}-{hash:016x}.{}",
            std::env::consts::DLL_EXTENSION
        ));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o500);
        }
        let mut out = options
            .open(&file)
            .map_err(|e| io("creating the copy", e))?;
        out.write_all(bytes)
            .map_err(|e| io("writing the copy", e))?;
        drop(out);
        Ok(Staged { _dir: dir, file })
    }
}

impl Library {
    /// Loads `bytes` (the content of `path`, read once by [`super::file::read_library`]) and
    /// checks the handshake. The bytes are checked as an ELF shared object first
    /// ([`super::file::check_elf`]); `path` itself is never mapped.
    pub(super) fn load(path: &Path, bytes: &[u8], hash: u64) -> Result<Library, PluginError> {
        super::file::check_elf(path, bytes)?;
        // dlopen maps the file it is given, so it is given a private copy of the checked bytes,
        // never the operator's file: truncating or rewriting that file later cannot fault the
        // server, and every version gets its own path (dlopen returns the already-loaded
        // library for a path it has seen).
        let staged = Staged::write(path, bytes, hash)?;
        // SAFETY: loading runs the library's initializers. Plugins are trusted code installed by
        // the operator; this is the documented risk of native plugins. The file is a complete
        // ELF shared object for this machine (checked above) that nobody else can write.
        let loaded = unsafe { libloading::Library::new(&staged.file) };
        // The mapping stays valid after the copy is removed, and with no path left to it the
        // mapped file can never be modified.
        drop(staged);
        let lib = loaded.map_err(|e| PluginError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        // Never unloaded (see the type docs); leaking makes every pointer into it 'static.
        let lib: &'static libloading::Library = Box::leak(Box::new(lib));

        // SAFETY: the symbol's type is fixed by ABI version 1 and every later version.
        let handshake_fn =
            unsafe { lib.get::<abi::HandshakeFn>(abi::HANDSHAKE_SYMBOL) }.map_err(|_| {
                PluginError::NotAPlugin {
                    path: path.to_path_buf(),
                }
            })?;
        // SAFETY: calling the handshake is the first call into the library the ABI allows.
        let raw = unsafe { handshake_fn() };
        if raw.is_null() {
            return Err(PluginError::BadHandshake {
                path: path.to_path_buf(),
                field: "handshake",
                message: "is null (the plugin failed to build it)".into(),
            });
        }
        // The first two u32 fields keep their place in every ABI version, so they are read
        // before trusting the rest of the layout.
        // SAFETY: every ABI version starts with two u32 fields.
        let (abi_version, handshake_size) =
            unsafe { (raw.cast::<u32>().read(), raw.cast::<u32>().add(1).read()) };
        if abi_version != abi::ABI_VERSION {
            return Err(mismatch(path, "abi_version", abi::ABI_VERSION, abi_version));
        }
        let ours = size_of::<Handshake>() as u32;
        if handshake_size != ours {
            return Err(mismatch(path, "handshake_size", ours, handshake_size));
        }
        // SAFETY: version and size match, so the layout is ours; the data is static.
        let hs: &'static Handshake = unsafe { &*raw };
        let view_size = size_of::<abi::RequestView>() as u32;
        if hs.view_size != view_size {
            return Err(mismatch(path, "view_size", view_size, hs.view_size));
        }
        let column_size = size_of::<abi::Column>() as u32;
        if hs.column_size != column_size {
            return Err(mismatch(path, "column_size", column_size, hs.column_size));
        }
        let kind = match (hs.kind, hs.constrain.is_some(), hs.extract.is_some()) {
            (abi::KIND_CONSTRAINT, true, _) => PluginKind::Constraint,
            (abi::KIND_FEATURE_EXTRACTOR, _, true) => PluginKind::FeatureExtractor,
            (abi::KIND_CONSTRAINT | abi::KIND_FEATURE_EXTRACTOR, _, _) => {
                return Err(PluginError::BadHandshake {
                    path: path.to_path_buf(),
                    field: "kind",
                    message: "has no function for its kind".into(),
                })
            }
            (other, _, _) => {
                return Err(PluginError::BadHandshake {
                    path: path.to_path_buf(),
                    field: "kind",
                    message: format!(
                        "is {other}, expected 1 (constraint) or 2 (feature extractor)"
                    ),
                })
            }
        };
        // SAFETY: the strings are static data of the never-unloaded library.
        let name = unsafe { static_str(path, "name", hs.name)? };
        if name.is_empty() {
            return Err(PluginError::BadHandshake {
                path: path.to_path_buf(),
                field: "name",
                message: "is empty".into(),
            });
        }
        // SAFETY: as above.
        let version = unsafe { static_str(path, "version", hs.version)? };
        let mut reasons = Vec::with_capacity(hs.n_reasons as usize);
        if hs.n_reasons > 0 {
            if hs.reasons.is_null() || hs.n_reasons > 1024 {
                return Err(PluginError::BadHandshake {
                    path: path.to_path_buf(),
                    field: "reasons",
                    message: "is null or has more than 1024 entries".into(),
                });
            }
            // SAFETY: `n_reasons` static entries per the ABI.
            let table = unsafe { std::slice::from_raw_parts(hs.reasons, hs.n_reasons as usize) };
            for r in table {
                // SAFETY: as above.
                reasons.push(unsafe { static_str(path, "reasons", *r)? });
            }
        }
        tracing::info!(plugin = name, version, kind = %kind, path = %path.display(), "plugin loaded");
        Ok(Library {
            name,
            version,
            kind,
            reasons,
            path: path.to_path_buf(),
            hash,
            health: Health::default(),
            handshake: hs,
        })
    }

    pub(super) fn info(&self, current: bool) -> PluginInfo {
        PluginInfo {
            name: self.name.to_owned(),
            version: self.version.to_owned(),
            kind: Some(self.kind),
            abi: self.handshake.abi_version,
            path: self.path.clone(),
            error: None,
            current,
            reasons: self.reasons.iter().map(|r| (*r).to_owned()).collect(),
            calls: self.health.calls.load(Ordering::Relaxed),
            failures: self.health.failures.load(Ordering::Relaxed),
            quarantined: self.health.quarantine_reason(),
        }
    }

    pub(super) fn attach(
        self: &Arc<Self>,
        config: &Value,
        quarantine_after: u32,
    ) -> Result<AttachedPlugin, PluginError> {
        let text = config.to_string();
        let mut buf = [0u8; ERROR_CAP];
        let mut err = ErrorBuf {
            ptr: buf.as_mut_ptr(),
            cap: buf.len(),
            len: 0,
        };
        let mut instance: *mut c_void = std::ptr::null_mut();
        // SAFETY: the function pointer comes from a checked handshake; all arguments point at
        // live host memory for the duration of the call.
        let status = unsafe { (self.handshake.attach)(Str::new(&text), &mut instance, &mut err) };
        let message = error_text(&buf, &err);
        match (status, NonNull::new(instance)) {
            (abi::STATUS_OK, Some(instance)) => Ok(AttachedPlugin {
                lib: self.clone(),
                instance,
                quarantine_after,
            }),
            (abi::STATUS_OK, None) => Err(PluginError::Config {
                plugin: self.name.to_owned(),
                message: "the plugin returned no instance".into(),
            }),
            (abi::STATUS_PANIC, _) => Err(PluginError::Config {
                plugin: self.name.to_owned(),
                message,
            }),
            _ => Err(PluginError::Config {
                plugin: self.name.to_owned(),
                message: if message.is_empty() {
                    "invalid config".into()
                } else {
                    message
                },
            }),
        }
    }
}

fn error_text(buf: &[u8], err: &ErrorBuf) -> String {
    String::from_utf8_lossy(&buf[..err.len.min(buf.len())]).into_owned()
}

/// A plugin attached to a campaign with a validated config. Dropping it frees the plugin's
/// instance (inside the plugin, which allocated it); the library stays loaded.
pub struct AttachedPlugin {
    lib: Arc<Library>,
    instance: NonNull<c_void>,
    quarantine_after: u32,
}

// SAFETY: the instance is a `T: Constraint | FeatureExtractor`, both of which require
// `Send + Sync`, and the plugin only ever gets `&T` for calls.
unsafe impl Send for AttachedPlugin {}
unsafe impl Sync for AttachedPlugin {}

impl std::fmt::Debug for AttachedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachedPlugin")
            .field("name", &self.lib.name)
            .field("version", &self.lib.version)
            .finish()
    }
}

impl Drop for AttachedPlugin {
    fn drop(&mut self) {
        // SAFETY: the instance came from this library's `attach` and is not used again.
        unsafe { (self.lib.handshake.detach)(self.instance.as_ptr()) };
    }
}

/// A constraint's verdicts, one entry per candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdicts {
    /// Eligible or not.
    pub eligible: Vec<bool>,
    /// Score multiplier (1.0 unless the plugin scaled it; sanitized to finite, ≥ 0).
    pub multiplier: Vec<f64>,
    /// Reason for each excluded candidate (`None` for eligible ones).
    pub reason: Vec<Option<&'static str>>,
    /// The raw reason codes (0 for eligible ones).
    pub code: Vec<u32>,
}

/// Features an extractor emitted. Names are interned: `context` and `candidates` hold indexes
/// into `names`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extracted {
    /// Distinct feature names.
    pub names: Vec<String>,
    /// `(name index, value)` request-level features.
    pub context: Vec<(u32, f64)>,
    /// `(candidate index, name index, value)` per-candidate features.
    pub candidates: Vec<(u32, u32, f64)>,
}

impl Extracted {
    /// Request-level features by name.
    pub fn context_features(&self) -> impl Iterator<Item = (&str, f64)> + '_ {
        self.context
            .iter()
            .map(|(n, v)| (self.names[*n as usize].as_str(), *v))
    }

    /// Features of candidate `i` by name.
    pub fn candidate_features(&self, i: usize) -> impl Iterator<Item = (&str, f64)> + '_ {
        self.candidates
            .iter()
            .filter(move |(c, _, _)| *c as usize == i)
            .map(|(_, n, v)| (self.names[*n as usize].as_str(), *v))
    }

    /// Adds the features to JSON feature objects under the namespace `ns`:
    /// `context[ns][name] = value`, `candidates[i][ns][name] = value`. A non-object target is
    /// replaced by an object.
    pub fn merge_into(&self, ns: &str, context: &mut Value, candidates: &mut [&mut Value]) {
        fn slot<'v>(target: &'v mut Value, ns: &str) -> &'v mut serde_json::Map<String, Value> {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let Value::Object(map) = target else {
                unreachable!("made an object above")
            };
            let entry = map
                .entry(ns.to_owned())
                .or_insert_with(|| Value::Object(Default::default()));
            if !entry.is_object() {
                *entry = Value::Object(Default::default());
            }
            match entry {
                Value::Object(m) => m,
                _ => unreachable!("made an object above"),
            }
        }
        if !self.context.is_empty() {
            let m = slot(context, ns);
            for (name, v) in self.context_features() {
                m.insert(name.to_owned(), v.into());
            }
        }
        for (c, n, v) in &self.candidates {
            if let Some(target) = candidates.get_mut(*c as usize) {
                slot(target, ns).insert(self.names[*n as usize].clone(), (*v).into());
            }
        }
    }
}

/// Host state behind the [`FeatureSink`] callback.
struct Sink {
    rows: u32,
    out: Extracted,
    /// Where the next name is most likely found: extractors emit names in a repeating order.
    hint: usize,
    /// Set when the plugin emitted something invalid; the call then counts as failed.
    problem: Option<String>,
}

unsafe extern "C" fn emit(ctx: *mut c_void, row: u32, name: Str, value: f64) {
    // SAFETY: `ctx` is the `Sink` passed to `extract` below, exclusively borrowed for the call.
    let sink = unsafe { &mut *ctx.cast::<Sink>() };
    if sink.problem.is_some() {
        return;
    }
    if row != abi::CONTEXT_ROW && row >= sink.rows {
        sink.problem = Some(format!(
            "emitted a feature for candidate {row} of {}",
            sink.rows
        ));
        return;
    }
    if name.ptr.is_null() || name.len > 256 {
        sink.problem = Some("emitted a feature with a null or over-long name".into());
        return;
    }
    // SAFETY: per the ABI the plugin passes `len` readable bytes for the duration of the call.
    let bytes = unsafe { std::slice::from_raw_parts(name.ptr, name.len) };
    let Ok(name) = std::str::from_utf8(bytes) else {
        sink.problem = Some("emitted a feature name that is not UTF-8".into());
        return;
    };
    if !value.is_finite() {
        return; // a missing value, not a failure
    }
    let names = &mut sink.out.names;
    let found = match names.get(sink.hint) {
        Some(n) if n == name => Some(sink.hint),
        _ => names.iter().position(|n| n == name),
    };
    let idx = match found {
        Some(i) => i,
        None => {
            names.push(name.to_owned());
            names.len() - 1
        }
    };
    sink.hint = if idx + 1 < names.len() { idx + 1 } else { 0 };
    let idx = idx as u32;
    if row == abi::CONTEXT_ROW {
        sink.out.context.push((idx, value));
    } else {
        sink.out.candidates.push((row, idx, value));
    }
}

impl AttachedPlugin {
    /// Plugin name.
    pub fn name(&self) -> &'static str {
        self.lib.name
    }

    /// Plugin version.
    pub fn version(&self) -> &'static str {
        self.lib.version
    }

    /// Constraint or feature extractor.
    pub fn kind(&self) -> PluginKind {
        self.lib.kind
    }

    pub(super) fn library(&self) -> &Arc<Library> {
        &self.lib
    }

    /// Why the plugin is quarantined, if it is.
    pub fn quarantined(&self) -> Option<String> {
        self.lib.health.quarantine_reason()
    }

    fn wrong_kind(&self, expected: PluginKind) -> PluginError {
        PluginError::WrongKind {
            plugin: self.lib.name.to_owned(),
            expected,
            found: self.lib.kind,
        }
    }

    /// Runs `call` with an error buffer, then counts the outcome and quarantines after too many
    /// consecutive failures.
    fn guarded(&self, call: impl FnOnce(&mut ErrorBuf) -> i32) -> Result<(), PluginError> {
        let health = &self.lib.health;
        let plugin = self.lib.name;
        if let Some(reason) = health.quarantine_reason() {
            return Err(PluginError::Quarantined {
                plugin: plugin.to_owned(),
                reason,
            });
        }
        let mut buf = [0u8; ERROR_CAP];
        let mut err = ErrorBuf {
            ptr: buf.as_mut_ptr(),
            cap: buf.len(),
            len: 0,
        };
        health.calls.fetch_add(1, Ordering::Relaxed);
        let status = call(&mut err);
        if status == abi::STATUS_OK {
            health.consecutive.store(0, Ordering::Relaxed);
            return Ok(());
        }
        let message = error_text(&buf, &err);
        let error = if status == abi::STATUS_PANIC {
            PluginError::Panicked {
                plugin: plugin.to_owned(),
                message,
            }
        } else {
            PluginError::Failed {
                plugin: plugin.to_owned(),
                message,
            }
        };
        Err(self.record_failure(error))
    }

    fn record_failure(&self, error: PluginError) -> PluginError {
        let health = &self.lib.health;
        let plugin = self.lib.name;
        let kind = if matches!(error, PluginError::Panicked { .. }) {
            "panic"
        } else {
            "error"
        };
        metrics::counter!("tailor_plugin_failures_total", "plugin" => plugin, "kind" => kind)
            .increment(1);
        health.failures.fetch_add(1, Ordering::Relaxed);
        let streak = health.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
        if streak >= self.quarantine_after && !health.quarantined.load(Ordering::Acquire) {
            let reason = format!("{streak} consecutive failures; last: {error}");
            *health.reason.lock() = Some(reason.clone());
            health.quarantined.store(true, Ordering::Release);
            metrics::counter!("tailor_plugin_quarantines_total", "plugin" => plugin).increment(1);
            tracing::error!(plugin, %reason, "plugin quarantined");
        } else {
            tracing::warn!(plugin, error = %error, "plugin call failed");
        }
        error
    }

    /// Runs a constraint over `request`.
    pub fn constrain(&self, request: &OwnedRequest<'_>) -> Result<Verdicts, PluginError> {
        let f = self
            .lib
            .handshake
            .constrain
            .ok_or_else(|| self.wrong_kind(PluginKind::Constraint))?;
        let n = request.len();
        let mut eligible = vec![1u8; n];
        let mut multiplier = vec![1.0f64; n];
        let mut reason = vec![abi::REASON_NONE; n];
        let out = ConstraintOut {
            len: n,
            eligible: eligible.as_mut_ptr(),
            multiplier: multiplier.as_mut_ptr(),
            reason: reason.as_mut_ptr(),
        };
        self.guarded(|err| {
            // SAFETY: checked handshake function; the view, output arrays and error buffer are
            // live host memory of the advertised sizes for the duration of the call.
            unsafe { f(self.instance.as_ptr(), request.raw(), &out, err) }
        })?;
        let reasons = &self.lib.reasons;
        for m in &mut multiplier {
            if !(m.is_finite() && *m >= 0.0) {
                *m = 1.0;
            }
        }
        for (e, r) in eligible.iter().zip(&mut reason) {
            if *e != 0 {
                *r = abi::REASON_NONE; // a reason on an eligible candidate means nothing
            }
        }
        Ok(Verdicts {
            eligible: eligible.iter().map(|e| *e != 0).collect(),
            multiplier,
            reason: eligible
                .iter()
                .zip(&reason)
                .map(|(e, r)| match (*e, *r) {
                    (0, abi::REASON_NONE) => Some("unspecified"),
                    (0, code) => Some(reasons.get(code as usize - 1).copied().unwrap_or("unknown")),
                    _ => None,
                })
                .collect(),
            code: reason,
        })
    }

    /// Runs a feature extractor over `request`.
    pub fn extract(&self, request: &OwnedRequest<'_>) -> Result<Extracted, PluginError> {
        let f = self
            .lib
            .handshake
            .extract
            .ok_or_else(|| self.wrong_kind(PluginKind::FeatureExtractor))?;
        let mut sink = Sink {
            rows: request.len() as u32,
            out: Extracted::default(),
            hint: 0,
            problem: None,
        };
        let ffi_sink = FeatureSink {
            ctx: (&mut sink as *mut Sink).cast(),
            emit,
        };
        self.guarded(|err| {
            // SAFETY: as in `constrain`; `ffi_sink.ctx` is `sink`, alive and not otherwise
            // touched during the call.
            unsafe { f(self.instance.as_ptr(), request.raw(), &ffi_sink, err) }
        })?;
        if let Some(message) = sink.problem {
            return Err(self.record_failure(PluginError::Failed {
                plugin: self.lib.name.to_owned(),
                message,
            }));
        }
        Ok(sink.out)
    }
}
