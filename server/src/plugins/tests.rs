//! Host tests against the real plugin cdylibs of the workspace.
//!
//! The plugin crates are dev-dependencies of `tailor-server`, so cargo builds their `.so` files
//! (into `target/<profile>/deps`, next to this test binary) before the tests run; see
//! docs/plugins.md, "Testing".

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde_json::{json, Value};

use super::*;
use crate::campaign::{OnFailure, PluginRef};

/// Path of the cdylib built for workspace crate `krate`.
pub(crate) fn built_plugin(krate: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps dir");
    let file = format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        krate.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    let path = deps.join(&file);
    assert!(
        path.exists(),
        "{} is missing: plugin crates are dev-dependencies of tailor-server, run through `cargo test`",
        path.display()
    );
    path
}

const EXAMPLES: [&str; 5] = [
    "markdown-guard",
    "inventory-floor",
    "repurchase-guard",
    "quiet-hours",
    "shopper-features",
];

/// A plugin directory holding copies of `krates`' libraries, as an operator would install them.
fn plugin_dir(krates: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for k in krates {
        let src = built_plugin(k);
        std::fs::copy(&src, dir.path().join(src.file_name().unwrap())).unwrap();
    }
    dir
}

fn host_with(krates: &[&str]) -> (tempfile::TempDir, PluginHost) {
    let dir = plugin_dir(krates);
    let host = PluginHost::open(dir.path());
    (dir, host)
}

fn view_of<'a>(ctx: &'a Value, items: &'a [(String, Value)]) -> OwnedRequest<'a> {
    request_view(ctx, items.iter().map(|(id, a)| (id.as_str(), a)))
}

#[test]
fn loads_every_example_plugin() {
    let (_dir, host) = host_with(&EXAMPLES);
    let list = host.plugins();
    let errors: Vec<_> = list.iter().filter_map(|p| p.error.as_ref()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let names: Vec<&str> = list.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "inventory-floor",
            "markdown-guard",
            "quiet-hours",
            "repurchase-guard",
            "shopper-features"
        ]
    );
    for p in &list {
        assert_eq!(p.abi, tailor_plugin::abi::ABI_VERSION);
        assert_eq!(p.version, env!("CARGO_PKG_VERSION"));
        assert!(p.current && p.quarantined.is_none());
        let expected = if p.name == "shopper-features" {
            PluginKind::FeatureExtractor
        } else {
            PluginKind::Constraint
        };
        assert_eq!(p.kind, Some(expected), "{}", p.name);
    }
    let mg = host.info("markdown-guard").unwrap();
    assert_eq!(
        mg.reasons,
        ["too_many_markdowns", "markdown_needs_discount_affinity"]
    );
}

#[test]
fn abi_mismatch_is_refused_naming_the_field() {
    let (dir, host) = host_with(&["tailor-test-plugin-abi-mismatch", "inventory-floor"]);
    let list = host.plugins();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0].name, "inventory-floor");
    let refused = &list[1];
    let msg = refused.error.as_deref().unwrap();
    assert!(msg.contains("ABI mismatch in `abi_version`"), "{msg}");
    assert!(
        msg.contains(&format!("expects {}", tailor_plugin::abi::ABI_VERSION)),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("reports {}", tailor_plugin::abi::ABI_VERSION + 1)),
        "{msg}"
    );
    assert!(refused.kind.is_none());
    assert!(matches!(
        host.attach("abi-mismatch", &json!({})),
        Err(PluginError::UnknownPlugin { .. })
    ));

    let lib = dir.path().join(
        built_plugin("tailor-test-plugin-abi-mismatch")
            .file_name()
            .unwrap(),
    );
    match check(&lib) {
        Err(PluginError::AbiMismatch {
            field,
            expected,
            found,
            ..
        }) => {
            assert_eq!(field, "abi_version");
            assert_eq!((expected, found), (1, 2));
        }
        other => panic!("expected an ABI mismatch, got {other:?}"),
    }
}

#[test]
fn non_plugins_are_listed_as_errors() {
    let dir = plugin_dir(&[]);
    std::fs::write(
        dir.path()
            .join(format!("junk{}", std::env::consts::DLL_SUFFIX)),
        b"not an ELF file",
    )
    .unwrap();
    std::fs::write(dir.path().join("README.txt"), b"ignored").unwrap();
    let host = PluginHost::open(dir.path());
    let list = host.plugins();
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(list[0]
        .error
        .as_deref()
        .unwrap()
        .contains("not a loadable plugin file: is 15 bytes, too small for an ELF header"));

    let missing = PluginHost::open(dir.path().join("nope"));
    assert!(missing.plugins()[0]
        .error
        .as_deref()
        .unwrap()
        .contains("cannot read plugin directory"));
}

/// A copy of a real plugin's bytes with `edit` applied, written as `name` into `dir`.
fn edited_copy(dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(built_plugin("inventory-floor")).unwrap();
    edit(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    path
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("running mkfifo");
    assert!(status.success());
}

/// The load error listed for `path` (panics when it is not listed).
fn listed_error(host: &PluginHost, path: &Path) -> String {
    let list = host.plugins();
    list.iter()
        .find(|p| p.path == path)
        .and_then(|p| p.error.clone())
        .unwrap_or_else(|| panic!("no error listed for {}: {list:?}", path.display()))
}

/// Issue 17: every kind of bad file is a listed error naming the file and the problem; none of
/// them reaches `dlopen` (a truncated library mapped from its file dies with SIGBUS, a FIFO
/// blocks `open`), and good plugins beside them still load.
#[test]
fn malformed_files_are_listed_errors_and_never_mapped() {
    let dir = plugin_dir(&["markdown-guard"]);
    let d = dir.path();
    let so = std::env::consts::DLL_SUFFIX;
    let truncated = edited_copy(d, &format!("truncated{so}"), |b| b.truncate(64 << 10));
    let garbage = d.join(format!("x{so}"));
    let mut rng = Pcg64Mcg::seed_from_u64(17);
    std::fs::write(&garbage, (0..4096).map(|_| rng.gen()).collect::<Vec<u8>>()).unwrap();
    let empty = d.join(format!("empty{so}"));
    std::fs::write(&empty, b"").unwrap();
    let fifo = d.join(format!("y{so}"));
    mkfifo(&fifo);
    let link = d.join(format!("link-to-fifo{so}"));
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    let directory = d.join(format!("dir{so}"));
    std::fs::create_dir(&directory).unwrap();
    let executable = edited_copy(d, &format!("exec{so}"), |b| b[16] = 2);
    let foreign = edited_copy(d, &format!("arm{so}"), |b| {
        b[18..20].copy_from_slice(&40u16.to_le_bytes())
    });
    let elf32 = edited_copy(d, &format!("elf32{so}"), |b| b[4] = 1);
    let shoff_past_end = edited_copy(d, &format!("shoff{so}"), |b| {
        let len = b.len() as u64;
        b[40..48].copy_from_slice(&len.to_le_bytes());
    });

    let host = PluginHost::open(d);
    assert!(
        host.info("markdown-guard").is_some(),
        "{:?}",
        host.plugins()
    );
    let expect = [
        (&truncated, "is truncated or corrupt: program header"),
        (&garbage, "is not an ELF shared library"),
        (&empty, "is empty (0 bytes)"),
        (&fifo, "is a FIFO, not a regular file (it was not opened)"),
        (&link, "is a FIFO, not a regular file"),
        (&directory, "is a directory, not a regular file"),
        (
            &executable,
            "is an ELF file of type 2, not a shared library",
        ),
        (&foreign, "is built for machine 40 (ARM)"),
        (&elf32, "is not a 64-bit ELF file"),
        (
            &shoff_past_end,
            "is truncated or corrupt: the section header table",
        ),
    ];
    for (path, message) in expect {
        let error = listed_error(&host, path);
        assert!(error.contains(message), "{}: {error}", path.display());
        assert!(error.starts_with(&path.display().to_string()), "{error}");
    }
    assert_eq!(host.plugins().len(), 1 + expect.len());

    // `tailor plugin check` goes through the same checks.
    for (path, message) in expect {
        let error = check(path).unwrap_err().to_string();
        assert!(error.contains(message), "{error}");
    }
}

/// Truncating every possible way: each prefix of a real library at a page boundary (and a few
/// odd lengths) is refused before `dlopen`. Without the check most of these kill the process.
#[test]
fn every_truncation_of_a_real_plugin_is_refused() {
    let bytes = std::fs::read(built_plugin("quiet-hours")).unwrap();
    let path = Path::new("quiet-hours-truncated.so");
    let mut cuts: Vec<usize> = (0..bytes.len()).step_by(4096).collect();
    cuts.extend([1, 63, 64, 65, 120, bytes.len() - 1]);
    for cut in cuts {
        let error = file::check_elf(path, &bytes[..cut])
            .unwrap_err()
            .to_string();
        assert!(error.contains("quiet-hours-truncated.so"), "{error}");
    }
    file::check_elf(path, &bytes).unwrap();
}

/// Issue 17: a plugin file truncated in place after it was loaded. The reload lists the error
/// and keeps serving the loaded version (which runs from a private copy).
#[test]
fn reload_after_in_place_truncation_keeps_the_loaded_version() {
    let dir = plugin_dir(&["inventory-floor"]);
    let host = PluginHost::open(dir.path());
    let attached = host
        .attach("inventory-floor", &json!({"min_inventory": 2}))
        .unwrap();
    let installed = dir
        .path()
        .join(built_plugin("inventory-floor").file_name().unwrap());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&installed)
        .unwrap();
    file.set_len(64 << 10).unwrap();
    drop(file);

    let report = host.reload();
    assert!(report.loaded.is_empty(), "{report:?}");
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(report.errors[0]
        .error
        .as_deref()
        .unwrap()
        .contains("is truncated or corrupt"));
    let info = host.info("inventory-floor").expect("still current");
    assert!(info.error.is_none());
    let items = vec![
        ("low".to_owned(), json!({"inventory": 1})),
        ("ok".to_owned(), json!({"inventory": 9})),
    ];
    let ctx = json!({});
    let verdicts = attached.constrain(&view_of(&ctx, &items)).unwrap();
    assert_eq!(verdicts.eligible, [false, true]);
    let again = host
        .attach("inventory-floor", &json!({"min_inventory": 2}))
        .unwrap();
    assert_eq!(
        again.constrain(&view_of(&ctx, &items)).unwrap().eligible,
        [false, true]
    );
}

/// The private copy lives in a fresh 0700 directory, is read-only, and is gone after loading.
#[test]
fn staging_copy_is_private_and_removed() {
    use std::os::unix::fs::PermissionsExt;
    let staged = library::Staged::write(Path::new("p.so"), b"bytes", 7).unwrap();
    let dir = staged.file.parent().unwrap().to_path_buf();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&staged.file), 0o500);
    assert_eq!(std::fs::read(&staged.file).unwrap(), b"bytes");
    drop(staged);
    assert!(!dir.exists());
}

#[test]
fn check_reports_the_handshake() {
    let report = check(&built_plugin("markdown-guard")).unwrap();
    let text = report.to_string();
    assert!(text.contains("name:     markdown-guard"), "{text}");
    assert!(text.contains("kind:     constraint"), "{text}");
    assert!(text.contains("too_many_markdowns"), "{text}");
}

#[test]
fn bad_config_message_reaches_the_caller() {
    let (_dir, host) = host_with(&["inventory-floor", "tailor-test-plugin-panicky"]);
    let e = host.attach("inventory-floor", &json!({})).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("inventory-floor"), "{msg}");
    assert!(msg.contains("missing field `min_inventory`"), "{msg}");
    let e = host
        .attach("inventory-floor", &json!({"min_inventory": -1}))
        .unwrap_err();
    assert!(e.to_string().contains("`min_inventory` must be"), "{e}");

    let e = host
        .attach("panicky", &json!({"reject": "threshold must be positive"}))
        .unwrap_err();
    assert!(
        matches!(&e, PluginError::Config { message, .. } if message == "threshold must be positive")
    );
    // A panic while validating is contained and reported as a config error.
    let e = host
        .attach("panicky", &json!({"panic_on_attach": true}))
        .unwrap_err();
    assert!(e.to_string().contains("asked to panic on attach"), "{e}");

    let e = host.attach("nope", &json!({})).unwrap_err();
    assert_eq!(e.to_string(), "plugin \"nope\" is not loaded");
}

#[test]
fn panicking_plugin_is_contained_counted_and_quarantined() {
    let (_dir, host) = host_with(&["tailor-test-plugin-panicky"]);
    let p = host.attach("panicky", &json!({})).unwrap();
    let items = vec![
        ("a".to_owned(), json!({"bad": true})),
        ("b".to_owned(), json!({"bad": false})),
    ];
    let ok_ctx = json!({});
    let v = p.constrain(&view_of(&ok_ctx, &items)).unwrap();
    assert_eq!(v.eligible, [false, true]);
    assert_eq!(v.reason, [Some("marked_bad"), None]);

    let panic_ctx = json!({"mode": "panic"});
    let e = p.constrain(&view_of(&panic_ctx, &items)).unwrap_err();
    assert!(
        matches!(&e, PluginError::Panicked { message, .. } if message.contains("asked to panic")),
        "{e:?}"
    );
    let error_ctx = json!({"mode": "error"});
    let e = p.constrain(&view_of(&error_ctx, &items)).unwrap_err();
    assert!(
        matches!(&e, PluginError::Failed { message, .. } if message == "panicky: asked to fail")
    );
    let info = host.info("panicky").unwrap();
    assert_eq!((info.calls, info.failures), (3, 2));
    assert!(info.quarantined.is_none());

    // A success resets the streak; five consecutive failures quarantine.
    p.constrain(&view_of(&ok_ctx, &items)).unwrap();
    for _ in 0..HostSettings::default().quarantine_after {
        assert!(p.constrain(&view_of(&panic_ctx, &items)).is_err());
    }
    let reason = host.info("panicky").unwrap().quarantined.unwrap();
    assert!(reason.contains("5 consecutive failures"), "{reason}");
    let e = p.constrain(&view_of(&ok_ctx, &items)).unwrap_err();
    assert!(matches!(e, PluginError::Quarantined { .. }), "{e:?}");
    // Quarantine fails fast: the plugin is not called.
    assert_eq!(host.info("panicky").unwrap().calls, 9);

    assert!(host.release("panicky"));
    assert!(p.constrain(&view_of(&ok_ctx, &items)).is_ok());
}

#[test]
fn reload_loads_a_changed_library_beside_the_old_one() {
    let dir = plugin_dir(&["inventory-floor"]);
    let host = PluginHost::open(dir.path());
    let g0 = host.generation();
    let old = host
        .attach("inventory-floor", &json!({"min_inventory": 3}))
        .unwrap();
    // Unchanged files are not reloaded.
    assert!(host.reload().loaded.is_empty());
    assert_eq!(host.generation(), g0);

    // A "new build": same plugin, different bytes (trailing data does not affect an ELF file).
    let installed = dir
        .path()
        .join(built_plugin("inventory-floor").file_name().unwrap());
    let mut bytes = std::fs::read(&installed).unwrap();
    bytes.extend_from_slice(b"a newer build");
    let tmp = dir.path().join("incoming.tmp");
    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::rename(&tmp, &installed).unwrap();

    let report = host.reload();
    assert_eq!(report.loaded.len(), 1, "{report:?}");
    assert!(host.generation() > g0);
    let list = host.plugins();
    assert_eq!(list.len(), 2);
    assert!(list[0].current && !list[1].current);

    let ctx = json!({});
    let items = vec![("a".to_owned(), json!({"inventory": 1}))];
    let view = view_of(&ctx, &items);
    let new = host
        .attach("inventory-floor", &json!({"min_inventory": 3}))
        .unwrap();
    assert!(!Arc::ptr_eq(old.library(), new.library()));
    // The old version keeps working for attachments made before the reload.
    assert_eq!(old.constrain(&view).unwrap().eligible, [false]);
    assert_eq!(new.constrain(&view).unwrap().eligible, [false]);
}

// ---- property tests: each example rule holds over many random requests ----

const CATEGORIES: [&str; 5] = ["shoes", "furniture", "toilet_seats", "coffee", "lamps"];

fn random_items(rng: &mut Pcg64Mcg) -> Vec<(String, Value)> {
    let n = rng.gen_range(0..40);
    (0..n)
        .map(|i| {
            let mut attrs = serde_json::Map::new();
            if rng.gen_bool(0.9) {
                attrs.insert("markdown_count".into(), json!(rng.gen_range(0..4)));
            }
            if rng.gen_bool(0.9) {
                attrs.insert("inventory".into(), json!(rng.gen_range(0..12)));
            }
            if rng.gen_bool(0.9) {
                attrs.insert(
                    "category".into(),
                    json!(CATEGORIES[rng.gen_range(0..CATEGORIES.len())]),
                );
            }
            attrs.insert("local_hour".into(), json!(rng.gen_range(0..24)));
            (format!("sku-{i}"), Value::Object(attrs))
        })
        .collect()
}

fn random_context(rng: &mut Pcg64Mcg) -> Value {
    let bought: Vec<&str> = CATEGORIES
        .iter()
        .copied()
        .filter(|_| rng.gen_bool(0.4))
        .collect();
    let mut ctx = json!({
        "discount_affinity": rng.gen_range(0.0..1.0),
        "purchased_categories": bought,
    });
    if rng.gen_bool(0.3) {
        ctx["quiet_start"] = json!(rng.gen_range(0..24));
        ctx["quiet_end"] = json!(rng.gen_range(0..24));
    }
    ctx
}

fn num(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

#[test]
fn every_example_rule_holds_over_random_requests() {
    let (_dir, host) = host_with(&EXAMPLES);
    let markdown = host
        .attach(
            "markdown-guard",
            &json!({"max_markdowns": 1, "min_discount_affinity": 0.6}),
        )
        .unwrap();
    let inventory = host
        .attach(
            "inventory-floor",
            &json!({"min_inventory": 5, "category_overrides": {"furniture": 1}}),
        )
        .unwrap();
    let repurchase = host
        .attach(
            "repurchase-guard",
            &json!({"one_time_categories": ["toilet_seats", "furniture"], "replenishable_categories": ["coffee"]}),
        )
        .unwrap();
    let quiet = host
        .attach("quiet-hours", &json!({"start": 21, "end": 8}))
        .unwrap();
    let chain = PluginChain::attach(
        &host,
        &["markdown-guard", "inventory-floor", "repurchase-guard", "quiet-hours"].map(|n| {
            PluginRef {
                name: n.into(),
                config: match n {
                    "markdown-guard" => json!({"max_markdowns": 1, "min_discount_affinity": 0.6}),
                    "inventory-floor" => {
                        json!({"min_inventory": 5, "category_overrides": {"furniture": 1}})
                    }
                    "repurchase-guard" => {
                        json!({"one_time_categories": ["toilet_seats", "furniture"], "replenishable_categories": ["coffee"]})
                    }
                    _ => json!({"start": 21, "end": 8}),
                },
                on_failure: OnFailure::Baseline,
            }
        }),
    )
    .unwrap();

    let mut rng = Pcg64Mcg::seed_from_u64(4);
    let mut excluded_total = 0;
    for _ in 0..500 {
        let ctx = random_context(&mut rng);
        let items = random_items(&mut rng);
        let view = view_of(&ctx, &items);
        let affinity = num(&ctx, "discount_affinity").unwrap();
        let bought: Vec<&str> = ctx["purchased_categories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let (qs, qe) = match (num(&ctx, "quiet_start"), num(&ctx, "quiet_end")) {
            (Some(s), Some(e)) => (s as u32, e as u32),
            _ => (21, 8),
        };

        let m = markdown.constrain(&view).unwrap();
        let inv = inventory.constrain(&view).unwrap();
        let rep = repurchase.constrain(&view).unwrap();
        let q = quiet.constrain(&view).unwrap();
        let all = chain.run(&view);
        assert!(all.failure.is_none());
        for (i, (_, a)) in items.iter().enumerate() {
            let md = num(a, "markdown_count").unwrap_or(0.0);
            let md_ok = md <= 1.0 && (md == 0.0 || affinity >= 0.6);
            assert_eq!(
                m.eligible[i], md_ok,
                "markdown-guard on {a} affinity {affinity}"
            );

            let cat = a.get("category").and_then(Value::as_str);
            let floor = if cat == Some("furniture") { 1.0 } else { 5.0 };
            let inv_ok = num(a, "inventory").is_none_or(|n| n >= floor);
            assert_eq!(inv.eligible[i], inv_ok, "inventory-floor on {a}");

            let one_time = matches!(cat, Some("toilet_seats" | "furniture"));
            let rep_ok = !(one_time && bought.contains(&cat.unwrap()));
            assert_eq!(
                rep.eligible[i], rep_ok,
                "repurchase-guard on {a} bought {bought:?}"
            );

            let h = num(a, "local_hour").unwrap() as u32;
            let quiet_now = match qs.cmp(&qe) {
                std::cmp::Ordering::Equal => false,
                std::cmp::Ordering::Less => h >= qs && h < qe,
                std::cmp::Ordering::Greater => h >= qs || h < qe,
            };
            assert_eq!(
                q.eligible[i], !quiet_now,
                "quiet-hours on {a} window {qs}-{qe}"
            );

            let expected = md_ok && inv_ok && rep_ok && !quiet_now;
            assert_eq!(all.eligible[i], expected);
            let removals: Vec<&Removal> = all.removed.iter().filter(|r| r.candidate == i).collect();
            assert_eq!(
                removals.len(),
                usize::from(!expected),
                "one removal per excluded candidate"
            );
            if !expected {
                excluded_total += 1;
            }
        }
    }
    assert!(excluded_total > 500, "the random inputs exercise the rules");
}

#[test]
fn feature_extractor_through_the_host() {
    let (_dir, host) = host_with(&["shopper-features"]);
    let p = host.attach("shopper-features", &Value::Null).unwrap();
    let ctx = json!({"days_since_last_purchase": 3, "orders_last_365d": 12,
                     "spend_last_365d": 1200.0, "local_hour": 6, "day_of_week": 0});
    let items = vec![
        ("a".to_owned(), json!({"price": 50.0})),
        ("slot-9".to_owned(), json!({"local_hour": 18})),
    ];
    let f = p.extract(&view_of(&ctx, &items)).unwrap();
    let context: Vec<(&str, f64)> = f.context_features().collect();
    assert_eq!(context[0], ("recency_bucket", 0.0));
    assert_eq!(context[1], ("frequency_bucket", 3.0));
    assert_eq!(context[2], ("monetary_bucket", 3.0));
    assert!((context[3].1 - 1.0).abs() < 1e-12, "hour_sin at 6h");
    assert_eq!(
        f.candidate_features(0).collect::<Vec<_>>(),
        [("price_to_aov", 0.5)]
    );
    assert!((f.candidate_features(1).next().unwrap().1 + 1.0).abs() < 1e-12);

    let mut ctx_features = json!({"tier": "gold"});
    let mut a = json!({});
    let mut b = Value::Null;
    f.merge_into("shopper", &mut ctx_features, &mut [&mut a, &mut b]);
    assert_eq!(ctx_features["tier"], "gold");
    assert_eq!(ctx_features["shopper"]["monetary_bucket"], 3.0);
    assert_eq!(a["shopper"]["price_to_aov"], 0.5);
    assert!(b["shopper"]["slot_hour_cos"].is_number());

    // The wrong call for the kind is an error, not a crash.
    assert!(matches!(
        p.constrain(&view_of(&ctx, &items)),
        Err(PluginError::WrongKind { .. })
    ));
}

#[test]
fn chain_reports_failures_per_policy() {
    let (_dir, host) = host_with(&[
        "tailor-test-plugin-panicky",
        "shopper-features",
        "inventory-floor",
    ]);
    let spec = |name: &str, config: Value, on_failure| PluginRef {
        name: name.into(),
        config,
        on_failure,
    };
    let chain = PluginChain::attach(
        &host,
        &[
            spec("shopper-features", json!({}), OnFailure::Baseline),
            spec(
                "inventory-floor",
                json!({"min_inventory": 2}),
                OnFailure::Baseline,
            ),
            spec("panicky", json!({}), OnFailure::Refuse),
        ],
    )
    .unwrap();
    assert_eq!(
        chain.names().collect::<Vec<_>>(),
        ["shopper-features", "inventory-floor", "panicky"]
    );
    assert!(chain.is_current(&host));
    let items = vec![
        ("a".to_owned(), json!({"inventory": 1})),
        ("b".to_owned(), json!({"inventory": 9, "bad": true})),
        ("c".to_owned(), json!({"inventory": 9})),
    ];
    let ctx = json!({"local_hour": 3});
    let out = chain.run(&view_of(&ctx, &items));
    assert_eq!(out.eligible, [false, false, true]);
    assert_eq!(out.eligible_count(), 1);
    assert_eq!(
        out.removed,
        [
            Removal {
                candidate: 0,
                plugin: "inventory-floor",
                reason: "below_inventory_floor",
                code: 1,
            },
            Removal {
                candidate: 1,
                plugin: "panicky",
                reason: "marked_bad",
                code: 1,
            },
        ]
    );
    assert_eq!(out.features.len(), 1);

    let ctx = json!({"mode": "panic"});
    let out = chain.run(&view_of(&ctx, &items));
    let failure = out.failure.unwrap();
    assert_eq!(failure.plugin, "panicky");
    assert_eq!(failure.on_failure, OnFailure::Refuse);
    assert!(matches!(failure.error, PluginError::Panicked { .. }));

    // A bad config anywhere in the chain fails the whole attach, naming the plugin.
    let e = PluginChain::attach(
        &host,
        &[spec(
            "inventory-floor",
            json!({"min_inventory": "lots"}),
            OnFailure::Baseline,
        )],
    )
    .unwrap_err();
    assert_eq!(e.plugin(), Some("inventory-floor"));
}
