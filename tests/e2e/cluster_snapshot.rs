//! Issue 19, snapshots and bounded retention, and the three-node NATS cluster: real
//! `nats-server` processes (JetStream, file storage in temp dirs, loopback ports) and real
//! `tailor serve --cluster` replicas (docs/scale-out.md).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde_json::{json, Value};

use crate::cluster::{
    chosen, click_rate, converged, decide_body, free_port, nats_bin, stats_of, until_served, Nats,
};
use crate::harness::Server;

/// A gauge or counter of `server`'s `/metrics` (0 when absent).
async fn metric(server: &Server, name: &str) -> f64 {
    let (s, text) = server.get_text("/metrics").await;
    assert_eq!(s, 200);
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, f64::max)
}

/// A replica with short snapshot intervals and retention, for the retention test.
async fn short_lived_replica(servers: &str, dir: &Path, name: &str) -> Server {
    Server::start_with_args(
        dir,
        &[
            ("TAILOR__CLUSTER__NODE_ID", name),
            ("TAILOR__CLUSTER__TICK_MS", "100"),
            ("TAILOR__CLUSTER__SNAPSHOT_INTERVAL_S", "1"),
            ("TAILOR__CLUSTER__RETENTION_S", "12"),
            ("TAILOR__CLUSTER__DUPLICATE_WINDOW_S", "2"),
        ],
        &["--cluster", servers],
    )
    .await
}

/// The applied stream sequence of `server` (campaign `home`).
async fn applied(server: &Server) -> u64 {
    let (s, d) = server.get("/admin/v1/campaigns/home/digest").await;
    assert_eq!(s, 200, "{d}");
    d["applied_seq"].as_u64().unwrap()
}

/// Decide `event` on `d`; the chosen item.
async fn decide(d: &Server, event: &str) -> String {
    let (s, decision) = d
        .post("/v1/campaigns/home/decide", &decide_body(event))
        .await;
    assert_eq!(s, 200, "{decision}");
    chosen(&decision)
}

async fn reward(r: &Server, event: &str, value: f64) -> (u16, Value) {
    r.post(
        &format!("/v1/campaigns/home/events/{event}/reward"),
        &json!({"value": value}),
    )
    .await
}

async fn adjust(r: &Server, event: &str, body: Value) -> (u16, Value) {
    r.post(&format!("/v1/campaigns/home/events/{event}/adjust"), &body)
        .await
}

/// A replica that joins after retention dropped the start of the stream starts from the
/// newest object-store snapshot plus the tail, and reaches the same digest and stats as the
/// replicas that applied everything — including decisions whose windows were open at the
/// snapshot point (rewarded after it, or closed by their default reward after it).
#[tokio::test]
async fn replica_joining_after_retention_reaches_the_same_digest() {
    let nats = Nats::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = short_lived_replica(&nats.url(), dirs[0].path(), "a").await;
    let b = short_lived_replica(&nats.url(), dirs[1].path(), "b").await;
    // A reward wait the retention cannot cover is refused in this cluster.
    let (s, body) = a
        .post(
            "/admin/v1/campaigns",
            &json!({"id": "long", "policy": {"type": "thompson"}, "reward_wait_seconds": 30}),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(body.to_string().contains("reward_wait_seconds"), "{body}");
    a.create_campaign(json!({
        "id": "home", "policy": {"type": "thompson"}, "reward_wait_seconds": 8
    }))
    .await;
    until_served(&b, "home").await;
    // A send-time campaign: the frequency cap a send claims is shopper state, which a
    // snapshot must carry to a replica that never saw the send.
    a.create_campaign(json!({
        "id": "email", "kind": "send_time", "slots": "hour_of_day",
        "reward_wait_seconds": 8, "send_time": {"frequency_cap_hours": 48}
    }))
    .await;
    let send = |shopper: &str| {
        json!({"shopper_id": shopper, "timezone": "Europe/Madrid",
               "earliest": "2031-05-01T00:00:00Z"})
    };
    let (s, v) = a.post("/v1/campaigns/email/decide", &send("carol")).await;
    assert_eq!(s, 200, "{v}");

    // Load until retention has dropped the start of the stream: decide on one replica,
    // reward on the other; a third of the decisions get no reward (their windows close with
    // the default reward on stream time).
    let mut rng = Pcg64Mcg::seed_from_u64(1919);
    let started = Instant::now();
    let mut round = 0usize;
    loop {
        let (d, r) = if round.is_multiple_of(2) {
            (&a, &b)
        } else {
            (&b, &a)
        };
        let event = format!("early-{round}");
        let item = decide(d, &event).await;
        if !round.is_multiple_of(3) {
            let value = f64::from(u8::from(rng.gen_bool(click_rate(&item))));
            let (s, body) = reward(r, &event, value).await;
            assert_eq!(s, 200, "{body}");
        }
        round += 1;
        if round.is_multiple_of(20) && metric(&a, "tailor_cluster_stream_first_seq").await > 1.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "retention never dropped the start of the stream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Decisions left open, then a snapshot that includes them.
    for i in 0..30 {
        decide(if i % 2 == 0 { &a } else { &b }, &format!("open-{i}")).await;
    }
    // A return before the snapshot: rewarded on B, corrected on A (through the stream).
    let (s, body) = reward(&b, "open-0", 1.0).await;
    assert_eq!(
        (s, body["status"].clone()),
        (200, json!("accepted")),
        "{body}"
    );
    let rma = json!({"value": 0.0, "adjustment_id": "rma-0"});
    let (s, body) = adjust(&a, "open-0", rma.clone()).await;
    assert_eq!(
        (s, body["status"].clone()),
        (200, json!("accepted")),
        "{body}"
    );
    let (s, body) = adjust(&b, "open-0", rma.clone()).await;
    assert_eq!(
        (s, body["status"].clone()),
        (200, json!("duplicate")),
        "{body}"
    );
    let after_open = applied(&a).await;
    let mut snapshot_seq = 0.0;
    for _ in 0..300 {
        snapshot_seq = metric(&a, "tailor_cluster_snapshot_seq")
            .await
            .max(metric(&b, "tailor_cluster_snapshot_seq").await);
        if snapshot_seq >= after_open as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        snapshot_seq >= after_open as f64,
        "no snapshot after sequence {after_open}"
    );

    let c = short_lived_replica(&nats.url(), dirs[2].path(), "c").await;
    let from = metric(&c, "tailor_cluster_start_snapshot_seq").await;
    let first = metric(&c, "tailor_cluster_start_stream_first_seq").await;
    assert!(
        from >= after_open as f64,
        "C started from snapshot {from}, before the open decisions ({after_open})"
    );
    assert!(
        first > 1.0,
        "the stream still started at {first}: retention dropped nothing"
    );

    // Carol's cap came with the snapshot (her send is long out of the retained stream).
    let (s, v) = c.post("/v1/campaigns/email/decide", &send("carol")).await;
    assert_eq!(
        s, 429,
        "the cap claimed on A before the snapshot holds on C: {v}"
    );
    let (s, v) = c.post("/v1/campaigns/email/decide", &send("dave")).await;
    assert_eq!(s, 200, "{v}");
    // The settled slot came with the snapshot: the return is a duplicate on C too, and a
    // further correction made on C is applied on every replica (the digests below).
    let (s, body) = adjust(&c, "open-0", rma).await;
    assert_eq!(
        (s, body["status"].clone()),
        (200, json!("duplicate")),
        "{body}"
    );
    let (s, body) = adjust(
        &c,
        "open-0",
        json!({"value": 1.0, "adjustment_id": "rma-0b"}),
    )
    .await;
    assert_eq!(
        (s, body["status"].clone()),
        (200, json!("accepted")),
        "{body}"
    );
    assert_eq!(
        (body["previous"].clone(), body["value"].clone()),
        (json!(0.0), json!(1.0)),
        "{body}"
    );

    // Rewards after the snapshot point for decisions it holds open, on every replica: each is
    // joined the same way everywhere (accepted, or 410 once its window closed).
    for i in 0..30 {
        if i % 3 == 0 {
            continue;
        }
        let r = [&a, &b, &c][i % 3];
        let (s, body) = reward(r, &format!("open-{i}"), 1.0).await;
        assert!(s == 200 || s == 410, "{s} {body}");
        if s == 200 {
            assert_eq!(body["status"], "accepted", "{body}");
            // A retry on the replica started from the snapshot is a duplicate.
            let (s, body) = reward(&c, &format!("open-{i}"), 1.0).await;
            assert_eq!(s, 200, "{body}");
            assert_eq!(body["status"], "duplicate", "{body}");
        }
    }
    // More load through all three.
    for i in 0..60 {
        let event = format!("late-{i}");
        let item = decide([&a, &b, &c][i % 3], &event).await;
        let value = f64::from(u8::from(rng.gen_bool(click_rate(&item))));
        let (s, body) = reward([&a, &b, &c][(i + 1) % 3], &event, value).await;
        assert_eq!(s, 200, "{body}");
    }

    // Every window closes on stream time (the default reward of the unrewarded ones), the same
    // way on the replica that started from the snapshot.
    let mut closed = false;
    for _ in 0..600 {
        let (_, d) = c.get("/admin/v1/campaigns/home/digest").await;
        if d["rewards"] == d["decisions"] {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed, "windows did not all close on C");
    let digest = converged(&[&a, &b, &c], "home").await;
    assert_eq!(
        digest["decisions"].as_u64().unwrap() as usize,
        round + 30 + 60,
        "{digest}"
    );
    let stats = stats_of(&[&a, &b, &c], "home").await;
    assert_eq!(stats[0], stats[1]);
    assert_eq!(stats[0], stats[2]);
}

/// One node of a three-node NATS cluster (JetStream, file storage in a temp dir).
struct Node {
    name: String,
    client_port: u16,
    route_port: u16,
    monitor_port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl Node {
    fn new(i: usize) -> Node {
        Node {
            name: format!("n{i}"),
            client_port: free_port(),
            route_port: free_port(),
            monitor_port: free_port(),
            store: tempfile::tempdir().unwrap(),
            child: None,
        }
    }

    fn spawn(&mut self, routes: &str) {
        let mut child = Command::new(nats_bin())
            .args(["-js", "-a", "127.0.0.1", "-n", &self.name])
            .args(["-p", &self.client_port.to_string()])
            .args(["-m", &self.monitor_port.to_string()])
            .args(["--cluster_name", "tailor"])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", self.route_port),
            ])
            .args(["--routes", routes])
            .arg("-sd")
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("starting nats-server");
        let err = child.stderr.take().unwrap();
        let name = self.name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if std::env::var_os("TAILOR_TEST_LOG").is_some() {
                    eprintln!("[{name}] {line}");
                }
            }
        });
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Three NATS nodes routed to each other; returns once JetStream is healthy on all three.
async fn nats_cluster() -> Vec<Node> {
    let mut nodes: Vec<Node> = (1..=3).map(Node::new).collect();
    let routes = nodes
        .iter()
        .map(|n| format!("nats://127.0.0.1:{}", n.route_port))
        .collect::<Vec<_>>()
        .join(",");
    for n in &mut nodes {
        n.spawn(&routes);
    }
    let http = reqwest::Client::new();
    let started = Instant::now();
    for n in &nodes {
        loop {
            let url = format!("http://127.0.0.1:{}/healthz", n.monitor_port);
            if let Ok(r) = http.get(&url).send().await {
                if r.status() == 200 {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the NATS cluster never became healthy"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    nodes
}

/// A reward sent until acknowledged, as the SDK's durable queue does: `Ok((status, retried))`
/// once answered 200, `Err(404)` when the decision is unknown (it was served unlogged while the
/// cluster failed over), `Err(last status)` when never acknowledged within the retries.
async fn reward_until_acked(r: &Server, event: &str, value: f64) -> Result<(String, bool), u16> {
    let mut last = 0;
    for attempt in 0..40 {
        let sent = r
            .client
            .post(r.url(&format!("/v1/campaigns/home/events/{event}/reward")))
            .json(&json!({"value": value}))
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status() == 200 => {
                let body: Value = resp.json().await.unwrap();
                return Ok((body["status"].as_str().unwrap().to_string(), attempt > 0));
            }
            Ok(resp) if resp.status() == 404 => return Err(404),
            Ok(resp) => last = resp.status().as_u16(),
            Err(_) => last = 0,
        }
        tokio::time::sleep(Duration::from_millis(50 * (attempt + 1).min(10))).await;
    }
    Err(last)
}

/// Issue 19 #4: a three-node NATS cluster, stream replicas 3; `kill -9` of one NATS node under
/// load. Serving continues (decides answered throughout; rewards acknowledged again once the
/// stream has its new leader), and no acknowledged reward is lost: every replica applied
/// each acknowledged reward exactly once.
#[tokio::test]
async fn kill9_of_one_of_three_nats_nodes_loses_no_acknowledged_reward() {
    let mut nodes = nats_cluster().await;
    let servers = nodes
        .iter()
        .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
        .collect::<Vec<_>>()
        .join(",");
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut replicas = Vec::new();
    for (i, name) in ["a", "b"].iter().enumerate() {
        replicas.push(
            Server::start_with_args(
                dirs[i].path(),
                &[
                    ("TAILOR__CLUSTER__NODE_ID", name),
                    ("TAILOR__CLUSTER__STREAM_REPLICAS", "3"),
                ],
                &["--cluster", &servers],
            )
            .await,
        );
    }
    let (a, b) = (&replicas[0], &replicas[1]);
    a.create_campaign(json!({
        "id": "home", "policy": {"type": "thompson"}, "reward_wait_seconds": 3600
    }))
    .await;
    until_served(b, "home").await;

    let mut rng = Pcg64Mcg::seed_from_u64(4);
    let rounds = 300;
    let (mut acked, mut unlogged, mut unacked) = (Vec::new(), 0usize, 0usize);
    for i in 0..rounds {
        if i == rounds / 3 {
            // The first node: every replica's first server, so both fail over.
            nodes[0].kill9();
        }
        let event = format!("k-{i}");
        let (d, r) = if i % 2 == 0 { (a, b) } else { (b, a) };
        // Serving continues: every decide is answered.
        let (s, decision) = d
            .post("/v1/campaigns/home/decide", &decide_body(&event))
            .await;
        assert_eq!(s, 200, "decide {i}: {decision}");
        let item = chosen(&decision);
        let value = f64::from(u8::from(rng.gen_bool(click_rate(&item))));
        match reward_until_acked(r, &event, value).await {
            Ok((status, retried)) => {
                // A retry of a copy the stream had taken before it failed to answer is a
                // duplicate: applied once either way.
                assert!(
                    status == "accepted" || (retried && status == "duplicate"),
                    "reward {i}: {status}"
                );
                acked.push(value);
            }
            Err(404) => unlogged += 1,
            Err(_) => unacked += 1,
        }
    }
    eprintln!(
        "{} rewards acknowledged, {unlogged} decisions served unlogged during the failover, {unacked} never acknowledged",
        acked.len()
    );
    // The failover costs a moment, not the run.
    assert!(
        acked.len() >= rounds * 3 / 4,
        "only {} of {rounds} rewards acknowledged",
        acked.len()
    );
    let digest = converged(&[a, b], "home").await;
    let rewards = digest["rewards"].as_u64().unwrap() as usize;
    assert!(
        rewards >= acked.len() && rewards <= acked.len() + unacked,
        "{rewards} applied, {} acknowledged, {unacked} unsure",
        acked.len()
    );
    let stats = stats_of(&[a, b], "home").await;
    assert_eq!(stats[0], stats[1]);
    let clicks: f64 = acked.iter().sum();
    let summed: f64 = stats[0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["reward_sum"].as_f64().unwrap())
        .sum();
    assert!(
        summed >= clicks && summed <= clicks + unacked as f64,
        "{summed} clicks learned, {clicks} acknowledged"
    );
}
