//! Send-time decisions over 168 slots (hour of week): the policy alone (the shopper's touched
//! slots integrated on the grid, the draw through the distribution of the maximum, its
//! propensity) for a new shopper, shoppers with 8 and 40 sends, and one with every slot touched;
//! for shoppers as the simulator's hour-of-week scenario leaves them, with and without the
//! default bound on slots kept; building a population's prior table (once a second per segment
//! in the server); and the whole engine path (shopper state read/write in sled, decision log).
//! Prints the encoded size of a shopper's state with every slot touched.

use std::sync::Arc;

/// The server's allocator (`cli/src/main.rs`), so the decision allocates as it does there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use tailor_policies::send_time::grid::PriorTable;
use tailor_policies::send_time::{
    prior_means, Hierarchy, PopulationCounts, ShopperCounts, MAX_SLOTS,
};
use tailor_sdk::wire::SendTimeRequest;
use tailor_server::campaign::{CampaignConfig, DEFAULT_MAX_SHOPPER_SLOTS};
use tailor_server::config::Settings;
use tailor_server::engine::send_time::{choose, Population};
use tailor_server::engine::Engine;
use tailor_server::store::{ShopperRecord, SledStore, Store};
use tailor_sim::send_time::{learned_states, Grid, Scenario, SEGMENTS};

const H: Hierarchy = Hierarchy {
    prior_strength: 10.0,
    half_life_ms: Some(30.0 * 86_400_000.0),
    max_shopper_slots: MAX_SLOTS,
};

/// A population that has seen a year of sends: rates peaking in the evening, plus one segment.
fn population(rng: &mut Pcg64Mcg) -> Population {
    let mut global = PopulationCounts::new(168);
    let mut seg = PopulationCounts::new(168);
    for j in 0..168 {
        let hour = (j % 24) as f64;
        let rate = 0.03 + 0.12 * (-(hour - 19.0).powi(2) / 8.0).exp();
        for _ in 0..400 {
            let r = if rng.gen::<f64>() < rate { 1.0 } else { 0.0 };
            global.update(&H, j, r, 1_000);
            if rng.gen::<f64>() < 0.2 {
                seg.update(&H, j, r, 1_000);
            }
        }
    }
    Population {
        global,
        segments: [("vip".to_string(), seg)].into_iter().collect(),
        version: 0,
    }
}

/// A shopper with `sends` sends on random slots.
fn regular(rng: &mut Pcg64Mcg, sends: usize) -> ShopperCounts {
    let mut s = ShopperCounts::default();
    for _ in 0..sends {
        let j = rng.gen_range(0..168);
        let r = if rng.gen::<f64>() < 0.1 { 1.0 } else { 0.0 };
        s.update(&H, j, r, 1_000);
    }
    s
}

/// A shopper with history on every slot.
fn engaged(rng: &mut Pcg64Mcg) -> ShopperCounts {
    let mut s = ShopperCounts::default();
    for _ in 0..6 {
        for j in 0..168 {
            let r = if rng.gen::<f64>() < 0.1 { 1.0 } else { 0.0 };
            s.update(&H, j, r, 1_000);
        }
    }
    s
}

fn bench_policy(c: &mut Criterion) {
    let mut rng = Pcg64Mcg::seed_from_u64(7);
    let pop = population(&mut rng);
    let shopper = engaged(&mut rng);
    let record = ShopperRecord {
        token: u64::MAX,
        last_send_ms: u64::MAX / 2,
        last_seen_ms: u64::MAX / 2,
        last_reward_seq: u64::MAX / 2,
        counts: shopper.clone(),
    };
    let bytes = postcard::to_stdvec(&record).unwrap().len();
    println!("send_time: shopper state with 168 touched slots = {bytes} bytes (postcard, incl. token and clocks)");
    let full = ShopperCounts {
        clock_min: u32::MAX,
        slots: (0..168).map(|j| (j as u8, u16::MAX, u16::MAX)).collect(),
    };
    println!(
        "send_time: worst case (168 slots at the count ceiling) = {} bytes",
        postcard::to_stdvec(&ShopperRecord {
            counts: full,
            ..record.clone()
        })
        .unwrap()
        .len()
    );
    let eligible: Vec<usize> = (0..168).collect();
    let mut means = Vec::new();
    prior_means(&H, &pop.global, pop.segments.get("vip"), &mut means);
    let table = PriorTable::new(&H, &means);
    let few = regular(&mut rng, 8);
    let regular = regular(&mut rng, 40);
    println!(
        "send_time: shoppers with 8 and 40 sends touched {} and {} slots",
        few.slots.len(),
        regular.slots.len()
    );
    let mut group = c.benchmark_group("send_time_choose");
    group.throughput(Throughput::Elements(1));
    let mut rng = Pcg64Mcg::seed_from_u64(1);
    for (name, shopper) in [
        ("new_shopper", None),
        ("shopper_8_sends", Some(&few)),
        ("regular_shopper", Some(&regular)),
        ("every_slot_touched", Some(&shopper)),
    ] {
        group.bench_function(format!("slots=168/{name}"), |b| {
            b.iter(|| choose(&H, &table, shopper, &eligible, 0.0, 2_000, &mut rng))
        });
    }
    // Quiet hours 22:00–07:00 removed: 105 eligible slots.
    let daytime: Vec<usize> = (0..168).filter(|j| (7..22).contains(&(j % 24))).collect();
    group.bench_function("slots=105_of_168/regular_shopper", |b| {
        b.iter(|| choose(&H, &table, Some(&regular), &daytime, 0.0, 2_000, &mut rng))
    });
    group.finish();
    bench_simulated(c);
    let mut group = c.benchmark_group("send_time_prior_table");
    group.bench_function("slots=168/build", |b| {
        b.iter(|| PriorTable::new(&H, &means))
    });
    group.finish();
}

/// Shoppers as the policy leaves them: 300 shoppers after 120 days of daily sends on hours of
/// the week (the simulator's scenario, the server's default 30-day half-life), their states
/// kept to at most 168 slots (no bound) and to the default bound. Each decision is over all 168
/// slots, for each shopper in turn; and for the shopper whose decision takes longest.
fn bench_simulated(c: &mut Criterion) {
    let mut group = c.benchmark_group("send_time_choose_simulated");
    group.throughput(Throughput::Elements(1));
    let eligible: Vec<usize> = (0..168).collect();
    for bound in [MAX_SLOTS, DEFAULT_MAX_SHOPPER_SLOTS] {
        let scenario = Scenario::new(7, 300, 120, Grid::HourOfWeek);
        let played = learned_states(&scenario, bound).expect("the scenario plays");
        let h = Hierarchy {
            max_shopper_slots: bound,
            ..H
        };
        let tables: Vec<PriorTable> = SEGMENTS
            .iter()
            .map(|(segment, _, _)| {
                let mut means = Vec::new();
                let pop = &played.population;
                prior_means(&h, &pop.global, pop.segments.get(*segment), &mut means);
                PriorTable::new(&h, &means)
            })
            .collect();
        let now = played.now_ms + 3_600_000;
        let mut rng = Pcg64Mcg::seed_from_u64(1);
        let states = &played.states;
        let decide = |(segment, state): &(usize, ShopperCounts), rng: &mut Pcg64Mcg| {
            choose(&h, &tables[*segment], Some(state), &eligible, 0.0, now, rng)
        };
        let kept: Vec<usize> = states.iter().map(|(_, s)| s.slots.len()).collect();
        // The slowest shopper: the longest of each one's fastest of 20 decisions.
        let slowest = (0..states.len())
            .max_by_key(|&i| {
                (0..20)
                    .map(|_| {
                        let t = std::time::Instant::now();
                        std::hint::black_box(decide(&states[i], &mut rng));
                        t.elapsed()
                    })
                    .min()
                    .unwrap_or_default()
            })
            .unwrap_or(0);
        println!(
            "send_time: simulated shoppers, at most {bound} slots: mean {:.1}, largest {} slots kept; slowest shopper #{slowest} keeps {}",
            kept.iter().sum::<usize>() as f64 / kept.len() as f64,
            kept.iter().max().unwrap_or(&0),
            kept[slowest]
        );
        let mut i = 0;
        group.bench_function(
            format!("slots=168/each_shopper/kept_at_most={bound}"),
            |b| {
                b.iter(|| {
                    i = (i + 1) % states.len();
                    decide(&states[i], &mut rng)
                })
            },
        );
        group.bench_function(
            format!("slots=168/slowest_shopper/kept_at_most={bound}"),
            |b| b.iter(|| decide(&states[slowest], &mut rng)),
        );
    }
    group.finish();
}

fn bench_engine(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::default();
    let store: Arc<dyn Store> = Arc::new(
        SledStore::open(
            dir.path(),
            settings.storage.cache_capacity_bytes,
            settings.storage.flush_every_ms,
        )
        .unwrap(),
    );
    let engine = rt.block_on(async { Engine::open(store, settings.engine.clone()).unwrap() });
    let config: CampaignConfig = serde_json::from_value(serde_json::json!({
        "id": "weekly", "kind": "send_time", "slots": "hour_of_week"
    }))
    .unwrap();
    engine.create_campaign(config).unwrap();
    let mut group = c.benchmark_group("send_time_engine_decide");
    group.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    group.bench_function("slots=168", |b| {
        b.iter(|| {
            i += 1;
            let req = SendTimeRequest {
                shopper_id: format!("shopper-{}", i % 1000),
                timezone: "America/New_York".into(),
                ..Default::default()
            };
            engine.decide_send_time("weekly", req).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_policy, bench_engine);
criterion_main!(benches);
