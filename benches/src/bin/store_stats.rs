//! What a stopped server's sled store holds, by tree and key family: keys, key bytes and value
//! bytes (the logical size), then the bytes on disk of each part of the data directory. For the bytes-per-decision figure
//! (docs/benchmarks.md): `store_stats DATA_DIR`.

use std::collections::BTreeMap;

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The data directory of a stopped server.
    data_dir: std::path::PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = tailor_server::store::sled_config(&args.data_dir, false).open()?;
    // (tree, family) -> (keys, key bytes, value bytes)
    let mut rows: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name)?;
        let tree_name = String::from_utf8_lossy(&name).into_owned();
        for kv in tree.iter() {
            let (k, v) = kv?;
            // The `log` tree's families are its first byte; other trees are one family.
            let family = if tree_name == "log" {
                match k.first() {
                    Some(b) if b.is_ascii_alphabetic() => {
                        let version = v.first().copied().unwrap_or(0);
                        format!("{} (value v{version})", *b as char)
                    }
                    _ => "other".into(),
                }
            } else {
                String::new()
            };
            let row = rows.entry((tree_name.clone(), family)).or_default();
            row.0 += 1;
            row.1 += k.len() as u64;
            row.2 += v.len() as u64;
        }
    }
    println!("tree\tfamily\tkeys\tkey_bytes\tvalue_bytes");
    let mut total = 0;
    for ((tree, family), (n, kb, vb)) in rows {
        println!("{tree}\t{family}\t{n}\t{kb}\t{vb}");
        total += kb + vb;
    }
    println!("logical bytes\t{total}");
    // What each part of the data directory takes on disk.
    for part in ["db", "blobs", "logs", "closes", "journal"] {
        println!("{part} on disk\t{}", dir_bytes(&args.data_dir.join(part)));
    }
    Ok(())
}

/// Bytes of the files under `dir`, or of `dir` when it is a file (0 when it does not exist).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        // sled's `db` is one file.
        return std::fs::metadata(dir).map_or(0, |m| m.len());
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
