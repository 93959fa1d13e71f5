//! A simulated storefront: renders product pages in a loop, asks Tailor which product to feature
//! in the hero slot, and reports clicks as rewards. Shoppers click some products more than
//! others, so the click-through rate climbs as the campaign learns.
//!
//! ```text
//! tailor serve --data-dir /tmp/tailor-demo &
//! cargo run -p tailor-sdk --example storefront -- http://127.0.0.1:8080 2000
//! ```
//!
//! Arguments (or environment): base URL (`TAILOR_URL`, default `http://127.0.0.1:8080`), pages
//! to render (`TAILOR_PAGES`, default 1000), campaign (`TAILOR_CAMPAIGN`, default
//! `storefront-demo`, created if missing), API key (`TAILOR_API_KEY`, optional).

use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;
use tailor_sdk::wire::{Candidate, DecideRequest};
use tailor_sdk::{Client, DecideOptions, Error};

/// The catalog, with how often each product is clicked when featured (hidden from Tailor).
const PRODUCTS: &[(&str, &str, f64)] = &[
    ("trail-runner", "shoes", 0.04),
    ("rain-jacket", "outerwear", 0.12),
    ("wool-socks", "accessories", 0.06),
    ("day-pack", "bags", 0.03),
    ("camp-mug", "kitchen", 0.02),
];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let arg_or = |arg: Option<String>, var: &str, default: &str| {
        arg.or_else(|| std::env::var(var).ok())
            .unwrap_or_else(|| default.to_string())
    };
    let url = arg_or(args.next(), "TAILOR_URL", "http://127.0.0.1:8080");
    let pages: usize = arg_or(args.next(), "TAILOR_PAGES", "1000").parse()?;
    let campaign = arg_or(args.next(), "TAILOR_CAMPAIGN", "storefront-demo");

    ensure_campaign(&url, &campaign).await?;

    let mut builder = Client::builder(&url).decide_budget(Duration::from_millis(50));
    if let Ok(key) = std::env::var("TAILOR_API_KEY") {
        builder = builder.api_key(key);
    }
    let client = builder.build()?;
    // What the page shows when Tailor cannot answer in time: the merchandiser's pick.
    let house_pick = DecideOptions::new().default_actions(["rain-jacket"]);

    let mut rng = rand::thread_rng();
    let mut latencies = Vec::with_capacity(pages);
    let mut clicks = [0u32; 2];
    for page in 0..pages {
        let request = DecideRequest {
            context: json!({"shopper": {
                "device": if rng.gen_bool(0.6) { "mobile" } else { "desktop" },
                "hour": rng.gen_range(0..24),
            }}),
            candidates: PRODUCTS
                .iter()
                .map(|(id, category, _)| Candidate {
                    features: json!({"item": {"category": category}}),
                    ..Candidate::new(*id)
                })
                .collect(),
            shopper_id: Some(format!("shopper-{}", rng.gen_range(0..500))),
            ..DecideRequest::default()
        };
        let started = Instant::now();
        let decision = match client.decide_with(&campaign, &request, &house_pick).await {
            Ok(d) => d,
            // A 4xx is a bug in this page (or a deleted campaign): log it, show the house pick.
            Err(Error::Server { code, message, .. }) => {
                eprintln!("decide refused: {code}: {message}");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        latencies.push(started.elapsed());

        let featured = decision.action().unwrap_or("rain-jacket");
        let ctr = PRODUCTS
            .iter()
            .find(|(id, _, _)| *id == featured)
            .map_or(0.0, |p| p.2);
        if rng.gen_bool(ctr) {
            clicks[usize::from(page >= pages / 2)] += 1;
            // Queued; the page never waits for it. A fallback has nothing to reward.
            client.reward_decision(&decision, 1.0)?;
        }
    }

    let report = client.shutdown(Duration::from_secs(10)).await;
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let half = (pages / 2).max(1) as f64;
    println!("pages rendered:      {pages}");
    if !latencies.is_empty() {
        println!(
            "decide latency:      p50 {:?}  p99 {:?}",
            pct(0.50),
            pct(0.99)
        );
    }
    println!(
        "click-through rate:  first half {:.3}, second half {:.3}",
        f64::from(clicks[0]) / half,
        f64::from(clicks[1]) / half
    );
    println!("client counters:     {:?}", report.counters);
    if !report.undelivered.is_empty() {
        println!(
            "undelivered rewards: {} (persist these somewhere)",
            report.undelivered.len()
        );
    }
    let stats = client.campaign_stats(&campaign).await?;
    println!(
        "campaign stats:      {} decisions, {} rewards",
        stats.decisions, stats.rewards
    );
    for a in &stats.actions {
        println!(
            "  {:<14} shown {:>5}  clicks {:>4}",
            a.id, a.exposures, a.rewards
        );
    }
    Ok(())
}

/// Create the demo campaign unless it exists (admin calls are not the SDK's job).
async fn ensure_campaign(url: &str, campaign: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut request = reqwest::Client::new()
        .post(format!("{url}/admin/v1/campaigns"))
        .json(&json!({"id": campaign, "policy": {"type": "thompson"}, "reward_wait_seconds": 600}));
    // Creating a campaign needs an editor key (docs/control-room.md).
    if let Ok(key) = std::env::var("TAILOR_API_KEY") {
        request = request.bearer_auth(key);
    }
    let response = request.send().await?;
    match response.status().as_u16() {
        201 | 409 => Ok(()),
        status => Err(format!(
            "creating campaign {campaign}: {status} {}",
            response.text().await?
        )
        .into()),
    }
}
