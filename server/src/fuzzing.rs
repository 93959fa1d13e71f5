//! Entry points of the cargo-fuzz targets in `fuzz/` (issue 17; docs/security/adversarial.md).
//!
//! Each takes arbitrary bytes through the parsing and validation the server itself runs on them
//! and must return, never panic, whatever the bytes. Not an API: nothing in the server calls
//! these, and the unit tests below only keep them compiling and honest on a few inputs.

use rand::SeedableRng;
use serde::{de::DeserializeOwned, Serialize};
use tailor_policies::{Arm, FeaturizerConfig, Policy, SparseVec};
use tailor_wire::{DecideRequest, RewardBatchRequest, RewardRequest, SendTimeRequest};

use crate::api::body;
use crate::engine::parse::ItemsRequest;
use crate::engine::{self, featurize, send_time};
use crate::store::{self, CampaignSnapshot, EventRecord, LogEntry, SendEventRecord, ShopperRecord};

/// `POST /v1/campaigns/{campaign}/decide`: the body parsed as an items request the way the
/// decide path parses it (straight into hashed features: checks, every features object, the
/// vectors a feature-reading policy gets) and, when it parses, the same body the `Value` way
/// (the columnar view plugins read; the features must match); and as a send-time request
/// (checks, time zone, `earliest`).
pub fn decide_body(bytes: &[u8]) {
    if let Ok(req) = ItemsRequest::parse(bytes) {
        decide_items(&req);
        let values = ItemsRequest::values(bytes).expect("what parses streaming parses as Values");
        plugin_view_of(&values);
        same_features(&req, &values);
    }
    if let Ok(req) = body::parse::<SendTimeRequest>(bytes) {
        let _ = send_time::check_send_time_request(&req);
    }
}

fn decide_items(req: &ItemsRequest) {
    if engine::check_items_request(req).is_err() || req.context_error().is_some() {
        return;
    }
    let featurizer = FeaturizerConfig::default()
        .build()
        .expect("the default featurizer builds");
    let context = featurizer.context_keys(req.context());
    let mut scratch = tailor_policies::VectorScratch::default();
    for i in 0..req.len() {
        if req.features_error(i).is_some() {
            return;
        }
        let x = featurizer.vector_with(&context, req.id(i), req.features(i), &mut scratch);
        assert_eq!(x.idx.len(), x.val.len());
        assert!(x.idx.windows(2).all(|w| w[0] < w[1]), "indices increase");
    }
}

/// The streaming parse and the `Value` walk agree on every vector and every error field.
fn same_features(req: &ItemsRequest, values: &DecideRequest) {
    if req.repeats_keys() {
        return;
    }
    let featurizer = FeaturizerConfig::default()
        .build()
        .expect("the default featurizer builds");
    let old_context = featurize::features("context", &values.context);
    // Both refuse the same objects (with two problems in one object, each may name another:
    // the `Value` walk goes in key order, the streaming one in document order).
    assert_eq!(
        old_context.is_err(),
        req.context_error().is_some(),
        "context"
    );
    let Ok(old_context) = old_context else { return };
    let keys = featurizer.context_keys(req.context());
    let mut scratch = tailor_policies::VectorScratch::default();
    for (i, c) in values.candidates.iter().enumerate() {
        let old = featurize::features_at(|| format!("candidates[{i}].features"), &c.features);
        match (old, req.features_error(i)) {
            (Ok(old), None) => assert_eq!(
                featurizer.vector(&old_context, &c.id, &old),
                featurizer.vector_with(&keys, req.id(i), req.features(i), &mut scratch),
                "candidate {i}"
            ),
            (Err(_), Some(_)) => {}
            (old, new) => panic!("candidate {i}: {old:?} vs {new:?}"),
        }
    }
}

/// `POST /v1/events/{event_id}/reward` and `POST /v1/rewards`: parsing and the reward checks
/// that need no stored state.
pub fn reward_body(bytes: &[u8]) {
    if let Ok(req) = body::parse::<RewardRequest>(bytes) {
        let _ = engine::check_reward_request(&req);
    }
    if let Ok(batch) = body::parse::<RewardBatchRequest>(bytes) {
        for r in batch.rewards {
            let _ = engine::check_reward_request(&RewardRequest {
                value: r.value,
                action_id: r.action_id,
                reward_id: r.reward_id,
                campaign: r.campaign,
            });
        }
    }
}

/// The columnar view plugins read, built from a decide body the way the plugin stage builds it,
/// then read back in full through the safe reader a plugin sees.
pub fn plugin_view(bytes: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<DecideRequest>(bytes) {
        plugin_view_of(&req);
    }
}

fn plugin_view_of(req: &DecideRequest) {
    let owned = crate::plugins::request_view(
        &req.context,
        req.candidates
            .iter()
            .map(|c| (c.id.as_str(), &c.attributes)),
    );
    let view = owned.request();
    assert_eq!(view.len(), req.candidates.len());
    for i in 0..view.len() {
        assert_eq!(view.candidate_id(i), req.candidates[i].id);
    }
    let columns = view.candidates();
    for name in columns.names() {
        let (n, s, t) = (
            columns.numbers(name),
            columns.strings(name),
            columns.sets(name),
        );
        assert_eq!(
            usize::from(n.is_some()) + usize::from(s.is_some()) + usize::from(t.is_some()),
            1,
            "column {name:?} has exactly one kind"
        );
        for i in 0..view.len() {
            let _ = n.and_then(|c| c.get(i));
            let _ = s.and_then(|c| c.get(i)).map(str::len);
            if let Some(set) = t.and_then(|c| c.get(i)) {
                assert_eq!(set.iter().count(), set.len());
            }
        }
        // Reads past the last row are absent, never out of bounds.
        assert!(n.and_then(|c| c.get(view.len())).is_none());
    }
    let context = view.context();
    for name in context.names() {
        let _ = context.number(name);
        let _ = context.string(name);
        let _ = context.set(name).map(|s| s.iter().count());
    }
}

/// A stored binary record (version byte + postcard) decoded as each record type the store
/// reads; what decodes must encode back to bytes that decode to the same record. Then the bytes
/// as a postcard-encoded policy (a snapshot entry, or a policy inside an imported model file):
/// one that decodes is used to choose, to give its first-slot distribution and to learn.
pub fn record(bytes: &[u8]) {
    roundtrip::<LogEntry>("log entry", bytes);
    roundtrip::<EventRecord>("event", bytes);
    roundtrip::<CampaignSnapshot>("snapshot", bytes);
    roundtrip::<ShopperRecord>("shopper", bytes);
    roundtrip::<SendEventRecord>("send event", bytes);
    let _ = postcard::from_bytes::<send_time::Population>(bytes);
    if let Ok(policy) = postcard::from_bytes::<Policy>(bytes) {
        use_policy(policy);
    }
}

fn roundtrip<T: Serialize + DeserializeOwned>(what: &'static str, bytes: &[u8]) {
    let Ok(first) = store::decode_record::<T>(what, bytes) else {
        return;
    };
    let encoded = store::encode_record(&first);
    let second: T = store::decode_record(what, &encoded).expect("a re-encoded record decodes");
    assert_eq!(
        store::encode_record(&second),
        encoded,
        "{what}: encode(decode(bytes)) is stable"
    );
}

fn use_policy(mut policy: Policy) {
    let dimension = policy.dimension();
    // Larger states are legitimate but slow to fuzz through. A state that does not fit its
    // dimension is refused where the server decodes one (snapshot restore, model import).
    if dimension == 0 || dimension > 4_096 || policy.check_state().is_err() {
        return;
    }
    let d = dimension as u32;
    let xs = [
        SparseVec {
            idx: vec![0],
            val: vec![1.0],
        },
        SparseVec {
            idx: vec![0, d - 1],
            val: vec![0.5, -2.0],
        },
        SparseVec::default(),
    ];
    let ids = ["a", "b", "c"];
    let arms: Vec<Arm<'_>> = ids.iter().zip(&xs).map(|(id, x)| Arm { id, x }).collect();
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(17);
    let _ = policy.choose_with_exploration(&arms, 2, true, 0.1, &mut rng);
    let _ = policy.first_slot_distribution(&arms, true, 0.1);
    policy.update(arms[1], 1.0, 0.5);
    let _ = policy.choose_with_exploration(&arms, 1, false, 0.0, &mut rng);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The targets' seed corpora (fuzz/corpus) run through the entry points without a panic.
    #[test]
    fn seed_corpora_pass() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 4] = [
            ("decide_body", decide_body),
            ("reward_body", reward_body),
            ("plugin_view", plugin_view),
            ("record", record),
        ];
        for (name, target) in targets {
            let dir = root.join(name);
            let mut n = 0;
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
                target(&std::fs::read(entry.unwrap().path()).unwrap());
                n += 1;
            }
            assert!(n > 0, "{name} has no seeds");
        }
    }

    /// Writes the `record` target's seeds (real encodings of each record type and of two policy
    /// states) into fuzz/corpus/record. By hand, after a record type changes:
    /// `cargo test -p tailor-server --lib fuzzing -- --ignored`.
    #[test]
    #[ignore]
    fn write_record_seeds() {
        use crate::store::{
            Counters, DecisionRecord, LoggedAction, RewardEntry, RewardKind, ServedAction,
            SlotState,
        };
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/record");
        let linucb = serde_json::from_value::<tailor_policies::PolicyConfig>(
            serde_json::json!({"type": "linucb"}),
        )
        .unwrap()
        .build(16)
        .unwrap();
        let thompson = serde_json::from_value::<tailor_policies::PolicyConfig>(
            serde_json::json!({"type": "thompson"}),
        )
        .unwrap()
        .build(16)
        .unwrap();
        let action = LoggedAction {
            id: "sku-1".into(),
            probability: 0.25,
            x: SparseVec {
                idx: vec![1, 7],
                val: vec![1.0, -0.5],
            },
        };
        let decision = DecisionRecord {
            seq: 7,
            event_id: "ev-1".into(),
            campaign: "home".into(),
            at_ms: 1_700_000_000_000,
            deadline_ms: 1_700_000_600_000,
            policy: "linucb".into(),
            seed: 42,
            holdout: false,
            explore: true,
            actions: vec![action.clone()],
            candidates: 3,
            request: br#"{"candidates":[{"id":"sku-1"}]}"#.to_vec(),
            removed: vec![("floor".into(), "sku-2".into(), 1)],
            candidate_set: 11,
            pinned: Default::default(),
            audience: Default::default(),
        };
        let event = EventRecord {
            event_id: "ev-1".into(),
            campaign: "home".into(),
            decision_seq: 7,
            at_ms: 1_700_000_000_000,
            deadline_ms: 1_700_000_600_000,
            policy: "linucb".into(),
            holdout: false,
            actions: vec![ServedAction {
                id: action.id.clone(),
                probability: action.probability,
            }],
            slots: vec![SlotState {
                value: 1.0,
                reward_ids: vec![9],
                applied: true,
            }],
            closed: false,
            candidate_set: 11,
            deferred: false,
            vectors: Vec::new(),
        };
        let reward = LogEntry::Reward(RewardEntry {
            event_id: "ev-1".into(),
            decision_seq: 7,
            at_ms: 1_700_000_001_000,
            kind: RewardKind::Explicit,
            slot: 0,
            value: 1.0,
        });
        let snapshot = CampaignSnapshot {
            reward_seq: 3,
            decision_seq: 7,
            policies: vec![("linucb".into(), postcard::to_stdvec(&linucb).unwrap())],
            counters: vec![(
                "sku-1".into(),
                Counters {
                    exposures: 1,
                    rewards: 1,
                    reward_sum: 1.0,
                },
            )],
            decisions: 1,
            rewards: 1,
        };
        let shopper = ShopperRecord {
            token: 5,
            last_send_ms: 1_700_000_000_000,
            last_seen_ms: 1_700_000_000_000,
            last_reward_seq: 2,
            counts: Default::default(),
        };
        let send_event = SendEventRecord {
            token: 5,
            segment: Some("vip".into()),
            slot: 6,
            send_at_ms: 1_700_000_000_000,
            timezone: "Europe/Paris".into(),
        };
        let seeds: [(&str, Vec<u8>); 8] = [
            (
                "decision",
                store::encode_record(&LogEntry::Decision(decision)),
            ),
            ("event", store::encode_record(&event)),
            ("reward", store::encode_record(&reward)),
            ("snapshot", store::encode_record(&snapshot)),
            ("shopper", store::encode_record(&shopper)),
            ("send_event", store::encode_record(&send_event)),
            ("policy_linucb", postcard::to_stdvec(&linucb).unwrap()),
            ("policy_thompson", postcard::to_stdvec(&thompson).unwrap()),
        ];
        for (name, bytes) in seeds {
            record(&bytes);
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    /// Issue 17: the `record` target's first crash, a linear policy state whose matrices are
    /// shorter than its dimension; snapshot restore and model import now refuse it.
    #[test]
    fn a_policy_state_that_does_not_fit_its_dimension_is_refused() {
        // The second: a Thompson state with a non-positive prior parameter, which sent the
        // gamma sampler into unbounded recursion. The third: NaN in a state, which left the
        // argmax with no best candidate.
        for name in [
            "crash-linucb-matrix-sizes",
            "crash-thompson-gamma-shape",
            "crash-nan-scores",
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz/corpus/record")
                .join(name);
            let bytes = std::fs::read(path).unwrap();
            let policy: Policy = postcard::from_bytes(&bytes).unwrap();
            if name != "crash-nan-scores" {
                assert!(policy.check_state().is_err(), "{name}");
            }
            record(&bytes);
        }
    }

    #[test]
    fn a_real_policy_state_decodes_and_is_used() {
        let cfg: tailor_policies::PolicyConfig =
            serde_json::from_value(serde_json::json!({"type": "linucb"})).unwrap();
        let policy = cfg.build(16).unwrap();
        record(&postcard::to_stdvec(&policy).unwrap());
        // Every kind of state the server writes passes the check that restore and import run,
        // before and after learning.
        for kind in [
            "thompson",
            "gaussian_thompson",
            "linucb",
            "linucb_disjoint",
            "linear_thompson",
            "epsilon_greedy",
            "sparse_linucb",
        ] {
            let cfg: tailor_policies::PolicyConfig =
                serde_json::from_value(serde_json::json!({ "type": kind })).unwrap();
            let mut policy = cfg.build(8).unwrap();
            assert_eq!(policy.check_state(), Ok(()), "{kind}");
            let x = SparseVec {
                idx: vec![1, 3],
                val: vec![1.0, 0.5],
            };
            policy.update(Arm { id: "a", x: &x }, 1.0, 0.5);
            policy.update(Arm { id: "b", x: &x }, 0.0, 0.5);
            let bytes = postcard::to_stdvec(&policy).unwrap();
            let decoded: Policy = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(decoded.check_state(), Ok(()), "{kind} after learning");
        }
    }
}
