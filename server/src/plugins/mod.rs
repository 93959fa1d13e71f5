//! The plugin host: loads plugin libraries, attaches them to campaigns, calls them safely.
//!
//! - [`PluginHost`] loads every library in the plugin directory (at start and on
//!   [`PluginHost::reload`]), checks each one's handshake against [`tailor_plugin::abi`] before
//!   calling anything else, and lists what it found ([`PluginInfo`], load errors included).
//!   A file is never mapped in place: `file.rs` refuses anything but a regular file of a sane
//!   size (FIFOs and devices are never opened), reads it once and checks that the bytes are a
//!   complete ELF shared object for this machine; `library.rs` maps a private copy of exactly
//!   those bytes. A truncated, empty, foreign or non-ELF file is a listed error, not a crash
//!   (issue 17; see docs/security/plugins.md). Libraries are never unloaded: a changed file is
//!   loaded beside the old version and becomes the current one for its name; existing
//!   attachments keep the version they were made with
//!   until their campaign re-attaches (see [`PluginHost::generation`]).
//! - [`PluginHost::attach`] validates a campaign's JSON config through the plugin and returns an
//!   [`AttachedPlugin`], which runs the constraint or extractor on a request view built once per
//!   decision by [`request_view`].
//! - Failures are contained: an error or a panic (caught inside the plugin by the export shim)
//!   becomes a [`PluginError`]; failures are counted, and after
//!   [`HostSettings::quarantine_after`] consecutive failures the plugin is quarantined (calls
//!   fail fast) until a new version is loaded or [`PluginHost::release`] is called.
//! - [`PluginChain`] runs a campaign's ordered chain and reports eligibility, removals with
//!   reason codes, features, and the failure the engine must act on.
//! - [`check`] backs `tailor plugin check PATH`.
//!
//! Architecture invariant: this module is the only place in the workspace with `unsafe` code
//! that loads or calls foreign code. Everything unsafe is in `library.rs`.

mod chain;
mod file;
mod library;
mod stage;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Serialize;
use serde_json::Value;
use tailor_plugin::{OwnedRequest, RequestBuilder};

pub use chain::{ChainFailure, ChainOutcome, ExtractorSkip, PluginChain, Removal, Scaling};
use library::Library;
pub use library::{AttachedPlugin, Extracted, Verdicts};
pub use stage::{attach_campaign_chain, run_stage, PluginStage, Refusal};

/// What a plugin does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginKind {
    /// Marks candidates eligible or not.
    Constraint,
    /// Adds context / candidate features.
    FeatureExtractor,
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PluginKind::Constraint => "constraint",
            PluginKind::FeatureExtractor => "feature_extractor",
        })
    }
}

/// Everything that can go wrong loading, attaching or calling a plugin. Variants name the plugin
/// (or file) and the field at fault.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path}: not a loadable plugin file: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: cannot load library: {message}")]
    Open { path: PathBuf, message: String },
    #[error("{path}: not a Tailor plugin (no `tailor_plugin_handshake` symbol)")]
    NotAPlugin { path: PathBuf },
    #[error(
        "{path}: plugin ABI mismatch in `{field}`: this server expects {expected}, the library reports {found}; rebuild the plugin against tailor-plugin ABI {abi}",
        abi = tailor_plugin::abi::ABI_VERSION
    )]
    AbiMismatch {
        path: PathBuf,
        field: &'static str,
        expected: u64,
        found: u64,
    },
    #[error("{path}: invalid handshake: `{field}` {message}")]
    BadHandshake {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
    #[error("plugin {name:?} is not loaded")]
    UnknownPlugin { name: String },
    #[error("plugin {plugin:?} rejected its config: {message}")]
    Config { plugin: String, message: String },
    #[error("plugin {plugin:?} is a {found}, not a {expected}")]
    WrongKind {
        plugin: String,
        expected: PluginKind,
        found: PluginKind,
    },
    #[error("plugin {plugin:?} is quarantined: {reason}")]
    Quarantined { plugin: String, reason: String },
    #[error("plugin {plugin:?} failed: {message}")]
    Failed { plugin: String, message: String },
    #[error("plugin {plugin:?} panicked: {message}")]
    Panicked { plugin: String, message: String },
}

impl PluginError {
    /// The plugin the error is about, when it is about a loaded plugin.
    pub fn plugin(&self) -> Option<&str> {
        match self {
            PluginError::UnknownPlugin { name } => Some(name),
            PluginError::Config { plugin, .. }
            | PluginError::WrongKind { plugin, .. }
            | PluginError::Quarantined { plugin, .. }
            | PluginError::Failed { plugin, .. }
            | PluginError::Panicked { plugin, .. } => Some(plugin),
            PluginError::Io { .. }
            | PluginError::Invalid { .. }
            | PluginError::Open { .. }
            | PluginError::NotAPlugin { .. }
            | PluginError::AbiMismatch { .. }
            | PluginError::BadHandshake { .. } => None,
        }
    }
}

/// One row of `GET /admin/v1/plugins`: a loaded library or a file that failed to load.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    /// Plugin name (empty when the file could not be loaded).
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// Constraint or feature extractor (absent when the file could not be loaded).
    pub kind: Option<PluginKind>,
    /// ABI version the library reported (0 when unknown).
    pub abi: u32,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Why the file could not be loaded.
    pub error: Option<String>,
    /// Whether this is the version new attachments get.
    pub current: bool,
    /// Reason codes a constraint reports.
    pub reasons: Vec<String>,
    /// Calls made so far.
    pub calls: u64,
    /// Failed calls (errors and panics) so far.
    pub failures: u64,
    /// Why the plugin is quarantined, if it is.
    pub quarantined: Option<String>,
}

/// Host tunables.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// Consecutive failures after which a plugin is quarantined.
    pub quarantine_after: u32,
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            quarantine_after: 5,
        }
    }
}

#[derive(Default)]
struct HostState {
    /// Every library ever loaded, oldest first (never unloaded).
    libraries: Vec<Arc<Library>>,
    /// Name → the version new attachments get.
    current: HashMap<String, Arc<Library>>,
    /// Files that failed to load on the last reload.
    errors: Vec<PluginInfo>,
}

/// Loads and serves plugins. `Send + Sync`; share it behind an `Arc`.
pub struct PluginHost {
    dir: Option<PathBuf>,
    settings: HostSettings,
    state: RwLock<HostState>,
    generation: AtomicU64,
}

impl fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginHost")
            .field("dir", &self.dir)
            .field("libraries", &self.state.read().libraries.len())
            .finish()
    }
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PluginHost>();
    assert_send_sync::<AttachedPlugin>();
    assert_send_sync::<PluginChain>();
};

/// The result of a reload.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// Libraries loaded by this reload (new or changed files).
    pub loaded: Vec<PluginInfo>,
    /// Files that failed to load.
    pub errors: Vec<PluginInfo>,
    /// The host generation after the reload.
    pub generation: u64,
}

fn is_library(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some(std::env::consts::DLL_EXTENSION)
}

fn error_info(path: &Path, e: &PluginError) -> PluginInfo {
    PluginInfo {
        name: String::new(),
        version: String::new(),
        kind: None,
        abi: 0,
        path: path.to_path_buf(),
        error: Some(e.to_string()),
        current: false,
        reasons: Vec::new(),
        calls: 0,
        failures: 0,
        quarantined: None,
    }
}

impl PluginHost {
    /// A host with no plugin directory and no plugins.
    pub fn empty() -> Self {
        Self::with_settings(None, HostSettings::default())
    }

    /// A host for `dir` (nothing is loaded until [`PluginHost::reload`]).
    pub fn with_settings(dir: Option<PathBuf>, settings: HostSettings) -> Self {
        PluginHost {
            dir,
            settings,
            state: RwLock::new(HostState::default()),
            generation: AtomicU64::new(0),
        }
    }

    /// A host that has loaded every library in `dir`. Load errors are listed, not fatal; a
    /// missing directory is one load error.
    pub fn open(dir: impl Into<PathBuf>) -> Self {
        let host = Self::with_settings(Some(dir.into()), HostSettings::default());
        host.reload();
        host
    }

    /// The plugin directory.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Incremented whenever a reload changes which version is current for some name; a campaign
    /// whose chain was attached at an older generation should re-attach.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Scans the plugin directory and loads new or changed libraries (unchanged files are
    /// skipped by content hash). Never unloads anything.
    pub fn reload(&self) -> ReloadReport {
        let mut loaded = Vec::new();
        let mut errors = Vec::new();
        if let Some(dir) = &self.dir {
            match std::fs::read_dir(dir) {
                Ok(entries) => {
                    let mut paths: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| is_library(p))
                        .collect();
                    paths.sort();
                    for path in paths {
                        match self.load_file(&path) {
                            Ok(Some(info)) => loaded.push(info),
                            Ok(None) => {}
                            Err(e) => errors.push(error_info(&path, &e)),
                        }
                    }
                }
                Err(e) => errors.push(error_info(
                    dir,
                    &PluginError::Io {
                        path: dir.clone(),
                        message: format!("cannot read plugin directory: {e}"),
                    },
                )),
            }
        }
        for e in &errors {
            tracing::warn!(path = %e.path.display(), error = e.error.as_deref().unwrap_or(""), "plugin not loaded");
        }
        self.state.write().errors = errors.clone();
        ReloadReport {
            loaded,
            errors,
            generation: self.generation(),
        }
    }

    /// Loads one library and makes it current for its name. `Ok(None)` when an identical file
    /// is already loaded (it becomes current again if it was not).
    pub fn load_file(&self, path: &Path) -> Result<Option<PluginInfo>, PluginError> {
        let bytes = file::read_library(path)?;
        let hash = xxhash_rust::xxh3::xxh3_64(&bytes);
        let existing = {
            let state = self.state.read();
            state.libraries.iter().find(|l| l.hash == hash).cloned()
        };
        let (lib, fresh) = match existing {
            Some(lib) => (lib, false),
            None => (Arc::new(Library::load(path, &bytes, hash)?), true),
        };
        let mut state = self.state.write();
        if fresh {
            state.libraries.push(lib.clone());
        }
        let name = lib.name.to_owned();
        let changed = state
            .current
            .get(&name)
            .is_none_or(|cur| !Arc::ptr_eq(cur, &lib));
        if changed {
            if let Some(old) = state.current.get(&name) {
                tracing::info!(plugin = %name, old = old.version, new = lib.version, "plugin replaced");
            }
            state.current.insert(name, lib.clone());
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        drop(state);
        Ok(fresh.then(|| lib.info(true)))
    }

    /// Every plugin: current versions first (by name), then older loaded versions, then files
    /// that failed to load on the last reload.
    pub fn plugins(&self) -> Vec<PluginInfo> {
        let state = self.state.read();
        let mut current: Vec<PluginInfo> = state.current.values().map(|l| l.info(true)).collect();
        current.sort_by(|a, b| a.name.cmp(&b.name));
        let older = state
            .libraries
            .iter()
            .filter(|l| state.current.get(l.name).is_none_or(|c| !Arc::ptr_eq(c, l)))
            .map(|l| l.info(false));
        current.extend(older);
        current.extend(state.errors.iter().cloned());
        current
    }

    /// The current version of `name`, if loaded.
    pub fn info(&self, name: &str) -> Option<PluginInfo> {
        self.state.read().current.get(name).map(|l| l.info(true))
    }

    /// Attaches the current version of `name` with `config`, validated by the plugin.
    pub fn attach(&self, name: &str, config: &Value) -> Result<AttachedPlugin, PluginError> {
        let lib = self
            .state
            .read()
            .current
            .get(name)
            .cloned()
            .ok_or_else(|| PluginError::UnknownPlugin {
                name: name.to_owned(),
            })?;
        lib.attach(config, self.settings.quarantine_after)
    }

    /// Lifts the quarantine of every loaded version of `name`. Returns whether one was lifted.
    pub fn release(&self, name: &str) -> bool {
        let state = self.state.read();
        let mut any = false;
        for l in state.libraries.iter().filter(|l| l.name == name) {
            any |= l.health.release();
        }
        any
    }
}

/// Builds the columnar view plugins read, once per decide request. `candidates` yields each
/// candidate's id and `attributes` object.
pub fn request_view<'a>(
    context: &'a Value,
    candidates: impl ExactSizeIterator<Item = (&'a str, &'a Value)>,
) -> OwnedRequest<'a> {
    let mut b = RequestBuilder::with_capacity(context, candidates.len());
    for (id, attributes) in candidates {
        b.candidate(id, attributes);
    }
    b.build()
}

/// What `tailor plugin check PATH` prints.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The handshake's findings.
    pub info: PluginInfo,
    /// Handshake struct sizes as the library reported them (all equal to the server's).
    pub handshake_size: u32,
    /// `RequestView` size.
    pub view_size: u32,
    /// `Column` size.
    pub column_size: u32,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.info;
        writeln!(f, "ok: {} is a Tailor plugin", i.path.display())?;
        writeln!(f, "  name:     {}", i.name)?;
        writeln!(f, "  version:  {}", i.version)?;
        if let Some(kind) = i.kind {
            writeln!(f, "  kind:     {kind}")?;
        }
        writeln!(
            f,
            "  abi:      {} (handshake {} B, view {} B, column {} B; matches this server)",
            i.abi, self.handshake_size, self.view_size, self.column_size
        )?;
        if !i.reasons.is_empty() {
            writeln!(f, "  reasons:  {}", i.reasons.join(", "))?;
        }
        Ok(())
    }
}

/// Loads one library, runs and checks its handshake, and describes it. The library stays loaded
/// (libraries are never unloaded); meant for the `tailor plugin check` CLI.
pub fn check(path: &Path) -> Result<CheckReport, PluginError> {
    let bytes = file::read_library(path)?;
    let lib = Library::load(path, &bytes, xxhash_rust::xxh3::xxh3_64(&bytes))?;
    Ok(CheckReport {
        info: lib.info(true),
        handshake_size: size_of::<tailor_plugin::abi::Handshake>() as u32,
        view_size: size_of::<tailor_plugin::abi::RequestView>() as u32,
        column_size: size_of::<tailor_plugin::abi::Column>() as u32,
    })
}

#[cfg(test)]
mod tests;
