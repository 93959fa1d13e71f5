//! `tailor simulate`: the options, the progress bar, and playing the retail world over HTTP
//! against a real server. The worlds, the in-process play and the scoring are in `tailor-sim`
//! (docs/simulation.md).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tailor_server::config::Settings;
use tailor_sim::retail::{self, Contender, Report, Round, Setup, Trace, World};
use tailor_sim::send_time;

/// Options of `tailor simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// `retail` (products, the default), `send-time` (when to send a daily message; see
    /// `tailor_sim::send_time`) or `variety` (a five-slot carousel for a variety-seeking
    /// shopper, with and without a per-category limit; see `tailor_sim::variety`).
    #[arg(long, default_value = "retail")]
    pub scenario: String,
    /// Send-time scenario: shoppers.
    #[arg(long, default_value_t = 2_000)]
    pub shoppers: usize,
    /// Send-time scenario: days (one send per shopper per day).
    #[arg(long, default_value_t = 60)]
    pub days: usize,
    /// Send-time scenario: the slot grid, `hour_of_day` or `hour_of_week`.
    #[arg(long, default_value = "hour_of_day")]
    pub slots: String,
    /// Send-time scenario: comma-separated bounds on the slots a shopper's state keeps, one
    /// per-shopper run each (default: 168,16,12,8 on hours of the week, none on hours of the
    /// day); bounds of the grid's size or more are one unbounded run.
    #[arg(long, value_delimiter = ',')]
    pub max_shopper_slots: Vec<usize>,
    /// Shoppers (decisions) per policy.
    #[arg(long, default_value_t = 20_000)]
    pub rounds: usize,
    /// Comma-separated policies (see `--help`); default: uniform, fixed, epsilon_greedy,
    /// thompson, linucb, linear_thompson, and with `--shift` also thompson_forgetting and
    /// linucb_forgetting. Known: thompson, thompson_forgetting, gaussian_thompson, linucb,
    /// linucb_forgetting, linucb_disjoint, linear_thompson, epsilon_greedy, uniform, fixed,
    /// sparse_linucb (the default of a campaign created without a policy, over 2^16 dimensions).
    #[arg(long, value_delimiter = ',')]
    pub policies: Vec<String>,
    /// Seed of the world, the shoppers and the coin flips.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Change tastes half way (season change).
    #[arg(long)]
    pub shift: bool,
    /// Half-life, in rewards, of the `*_forgetting` variants.
    #[arg(long, default_value_t = 4_000.0)]
    pub half_life: f64,
    /// Products in the catalog.
    #[arg(long, default_value_t = 40)]
    pub products: usize,
    /// Candidates offered per decision (a random subset of the catalog).
    #[arg(long, default_value_t = 10)]
    pub candidates: usize,
    /// Hashed feature dimension of the simulated campaigns.
    #[arg(long, default_value_t = 256)]
    pub dimension: usize,
    /// Call the policies directly instead of through the HTTP server.
    #[arg(long, conflicts_with = "url")]
    pub in_process: bool,
    /// Base URL of a running server (default: start one in process on a temporary directory).
    #[arg(long)]
    pub url: Option<String>,
    /// Editor API key for `--url` (creates one campaign per policy).
    #[arg(long, env = "TAILOR_ADMIN_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Concurrent decisions per policy over HTTP (a wave is decided, then rewarded).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Draw reward over time into this SVG file.
    #[arg(long)]
    pub chart: Option<PathBuf>,
}

fn progress(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {msg} [{elapsed_precise}] {wide_bar} {pos}/{len} decisions ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Run `tailor simulate`; `settings` configure the in-process server of the HTTP mode.
pub fn run(args: &SimulateArgs, settings: &Settings) -> anyhow::Result<()> {
    match args.scenario.as_str() {
        "retail" => {}
        "send-time" | "send_time" => {
            let grid = send_time::Grid::parse(&args.slots)?;
            let mut scenario = send_time::Scenario::new(args.seed, args.shoppers, args.days, grid);
            if !args.max_shopper_slots.is_empty() {
                scenario.max_shopper_slots = args.max_shopper_slots.clone();
            }
            let report = send_time::run(&scenario)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            return Ok(());
        }
        "variety" => {
            // A variety-seeking shopper and a five-slot carousel, in process (docs/variety.md).
            let s = tailor_sim::variety::VarietySettings {
                seed: args.seed,
                rounds: args.rounds,
                products: args.products,
                candidates: args.candidates,
                policies: if args.policies.is_empty() {
                    tailor_sim::variety::VarietySettings::default().policies
                } else {
                    args.policies.clone()
                },
                ..Default::default()
            };
            let results = tailor_sim::variety::run(&s, &tailor_sim::variety::MODES)?;
            print!("{}", tailor_sim::variety::table(&s, &results));
            return Ok(());
        }
        other => bail!("--scenario must be retail, send-time or variety, got {other:?}"),
    }
    let names = if args.policies.is_empty() {
        retail::default_policies(args.shift)
    } else {
        args.policies.clone()
    };
    let mut contenders = Vec::with_capacity(names.len());
    for name in &names {
        let name = name.trim();
        if contenders.iter().any(|c: &Contender| c.name == name) {
            bail!("--policies names {name:?} twice");
        }
        contenders.push(retail::contender(name, args.half_life, args.dimension)?);
    }
    let setup = Setup::draw(
        args.seed,
        args.products,
        args.rounds,
        args.candidates,
        args.shift,
    )?;
    let bar = progress((args.rounds * contenders.len()) as u64);
    let (mode, traces) = if args.in_process {
        bar.set_message("in process");
        let traces = retail::play_in_process(&setup, &contenders, &|n| bar.inc(n))?;
        ("in_process", traces)
    } else {
        bar.set_message("over HTTP");
        ("http", run_http(args, settings, &setup, &contenders, &bar)?)
    };
    bar.finish_and_clear();
    let report = Report::new(mode, &setup, &contenders, &traces);
    if let Some(path) = &args.chart {
        std::fs::write(path, retail::chart(&report, &setup.rounds, &traces))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
        if let Some(path) = &args.chart {
            println!("chart: {}", path.display());
        }
    }
    Ok(())
}

/// Over HTTP: one campaign per policy, all policies concurrently, each in waves of
/// `--concurrency` decisions followed by their rewards.
fn run_http(
    args: &SimulateArgs,
    settings: &Settings,
    setup: &Setup,
    contenders: &[Contender],
    bar: &ProgressBar,
) -> anyhow::Result<Vec<Trace>> {
    let (world, rounds): (&World, &[Round]) = (&setup.world, &setup.rounds);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Keep the temporary directory alive until the server is done with it.
        let mut _data_dir = None;
        let mut running = None;
        let (base, key, prefix) = match &args.url {
            Some(url) => {
                let key = args
                    .api_key
                    .clone()
                    .ok_or_else(|| anyhow!("--url needs --api-key (or TAILOR_ADMIN_KEY)"))?;
                // An external server may already have campaigns of an earlier run.
                let nonce: u32 = rand::random();
                (
                    url.trim_end_matches('/').to_string(),
                    key,
                    format!("sim-{nonce:08x}"),
                )
            }
            None => {
                let dir = tempfile::tempdir().context("creating a temporary data directory")?;
                let key = format!("sim-{:032x}", rand::random::<u128>());
                let mut settings = settings.clone();
                settings.server.bind = "127.0.0.1:0".into();
                settings.storage.data_dir = dir.path().to_path_buf();
                settings.auth.admin_key = Some(key.clone());
                settings.plugins.dir = None;
                settings.validate()?;
                let r =
                    tailor_server::start(&settings).context("starting the in-process server")?;
                let base = format!("http://{}", r.addr);
                let handle = r.server.handle();
                let task = tokio::spawn(r.server);
                running = Some((handle, task, r.engine));
                _data_dir = Some(dir);
                (base, key, "sim".to_string())
            }
        };
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .context("the API key is not a valid header value")?,
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .pool_max_idle_per_host(64)
            .build()?;
        let candidates: Vec<Value> = world
            .products
            .iter()
            .map(|p| json!({"id": p.id, "features": p.features}))
            .collect();
        let shared = Arc::new(Shared {
            client,
            base,
            candidates,
            bar: bar.clone(),
        });
        let rounds = Arc::new(rounds.to_vec());
        let mut tasks = Vec::new();
        for c in contenders {
            let campaign = format!("{prefix}-{}-s{}", c.name.replace('_', "-"), args.seed);
            shared.create(&campaign, c).await?;
            tasks.push(tokio::spawn(play_http(
                shared.clone(),
                rounds.clone(),
                campaign,
                args.concurrency.max(1),
            )));
        }
        let mut traces = Vec::with_capacity(tasks.len());
        for t in tasks {
            traces.push(t.await.context("a simulation task panicked")??);
        }
        if let Some((handle, task, engine)) = running {
            handle.stop(true).await;
            let _ = task.await;
            engine
                .flush()
                .await
                .context("flushing the in-process server")?;
        }
        Ok(traces)
    })
}

struct Shared {
    client: reqwest::Client,
    base: String,
    /// Each product as a decide candidate.
    candidates: Vec<Value>,
    bar: ProgressBar,
}

impl Shared {
    async fn send(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .client
            .post(&url)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {url}: {status}: {body}");
        }
        Ok(body)
    }

    async fn create(&self, campaign: &str, c: &Contender) -> anyhow::Result<()> {
        self.send(
            "/admin/v1/campaigns",
            &json!({
                "id": campaign,
                "policy": c.policy,
                "featurizer": c.featurizer,
                "reward_wait_seconds": 3600,
            }),
        )
        .await
        .map(|_| ())
    }
}

async fn play_http(
    shared: Arc<Shared>,
    rounds: Arc<Vec<Round>>,
    campaign: String,
    wave: usize,
) -> anyhow::Result<Trace> {
    let decide = format!("/v1/campaigns/{campaign}/decide");
    let mut trace = Trace::with_capacity(rounds.len());
    for start in (0..rounds.len()).step_by(wave) {
        let end = (start + wave).min(rounds.len());
        let decisions = futures_util::future::join_all((start..end).map(|t| {
            let round = &rounds[t];
            let body = json!({
                "event_id": format!("{campaign}-{t}"),
                "context": round.context,
                "candidates": round
                    .candidates
                    .iter()
                    .map(|&p| shared.candidates[p].clone())
                    .collect::<Vec<_>>(),
            });
            let shared = &shared;
            let decide = &decide;
            async move { shared.send(decide, &body).await }
        }))
        .await;
        let mut rewards = Vec::with_capacity(end - start);
        for (t, d) in (start..end).zip(decisions) {
            let d = d?;
            let round = &rounds[t];
            let id = d["actions"][0]["id"]
                .as_str()
                .ok_or_else(|| anyhow!("decide answered without actions[0].id: {d}"))?;
            let j = round
                .candidates
                .iter()
                .position(|&p| shared.candidates[p]["id"] == id)
                .ok_or_else(|| anyhow!("decide chose {id:?}, which was not a candidate"))?;
            let reward = trace.serve(round, j);
            let event = d["event_id"]
                .as_str()
                .ok_or_else(|| anyhow!("decide answered without event_id: {d}"))?
                .to_string();
            rewards.push((event, reward));
        }
        let acks = futures_util::future::join_all(rewards.iter().map(|(event, reward)| {
            let shared = &shared;
            async move {
                shared
                    .send(
                        &format!("/v1/events/{event}/reward"),
                        &json!({ "value": reward }),
                    )
                    .await
            }
        }))
        .await;
        for a in acks {
            a?;
        }
        shared.bar.inc((end - start) as u64);
    }
    Ok(trace)
}
