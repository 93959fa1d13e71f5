//! `tailor export`, `tailor evaluate` and `tailor replay`: off-policy evaluation of a JSON-lines
//! decision log (docs/evaluation.md) outside the server.
//!
//! `export` opens the data directory itself; sled locks the directory, so run it against a
//! stopped server or a copy of its data directory (or use `GET /admin/v1/campaigns/{id}/log`
//! on a running one). `evaluate` and `replay` read only the file.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::Path;

use anyhow::{bail, Context};
use tailor_policies::PolicyConfig;
use tailor_server::campaign::CampaignConfig;
use tailor_server::config::Settings;
use tailor_server::ope::log::{LogHeader, LogLine};
use tailor_server::ope::{
    self, CandidateSpec, Evaluation, EvaluationRequest, Evaluator, Mode, PolicyValue,
};
use tailor_server::store::{ConfigStore, OpenOptions, SledStore};

/// Options shared by `evaluate` and `replay`.
#[derive(Debug, Default, clap::Args)]
pub struct EvalOptions {
    /// A candidate policy to evaluate besides the configured ones, as JSON:
    /// `{"type":"linucb","alpha":2}` or `{"name":"x","policy":{...},"exploration":0.1}`.
    /// Repeatable.
    #[arg(long = "policy", value_name = "JSON")]
    pub candidates: Vec<String>,
    /// Exploration rate of the candidates given as a bare policy; alone, evaluates the serving
    /// policy with this rate.
    #[arg(long, default_value_t = 0.0)]
    pub exploration: f64,
    /// Direct-method reward model as JSON: `{"type":"ridge","lambda":1}` (default),
    /// `{"type":"mean"}`, `{"type":"none"}`.
    #[arg(long, value_name = "JSON")]
    pub reward_model: Option<String>,
    /// Campaign config (JSON file) for a log without a header line.
    #[arg(long = "campaign-config", value_name = "FILE")]
    pub campaign: Option<std::path::PathBuf>,
    /// Only decisions at or after this instant (ms since the epoch).
    #[arg(long)]
    pub from_ms: Option<u64>,
    /// Only decisions before this instant.
    #[arg(long)]
    pub to_ms: Option<u64>,
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
struct Progress {
    total: u64,
    done: u64,
    drawn: u64,
    tty: bool,
}

impl Progress {
    fn new(total: u64) -> Self {
        Self {
            total: total.max(1),
            done: 0,
            drawn: u64::MAX,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn advance(&mut self, n: u64, events: u64) {
        self.done = (self.done + n).min(self.total);
        let pct = self.done * 100 / self.total;
        if self.tty && pct != self.drawn {
            self.drawn = pct;
            let filled = (pct / 2) as usize;
            eprint!(
                "\r[{}{}] {pct:>3}% {events} events",
                "#".repeat(filled),
                " ".repeat(50 - filled)
            );
        }
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

fn parse_candidate(s: &str, exploration: f64) -> anyhow::Result<CandidateSpec> {
    let v: serde_json::Value =
        serde_json::from_str(s).with_context(|| format!("--policy {s:?} is not JSON"))?;
    if v.get("type").is_some() {
        let policy: PolicyConfig =
            serde_json::from_value(v).with_context(|| format!("--policy {s:?}"))?;
        Ok(CandidateSpec {
            name: None,
            policy: Some(policy),
            exploration,
        })
    } else {
        serde_json::from_value(v).with_context(|| format!("--policy {s:?}"))
    }
}

fn request(opts: &EvalOptions) -> anyhow::Result<EvaluationRequest> {
    let mut req = EvaluationRequest {
        from_ms: opts.from_ms,
        to_ms: opts.to_ms,
        mode: Mode::Replay,
        ..Default::default()
    };
    for c in &opts.candidates {
        req.candidates.push(parse_candidate(c, opts.exploration)?);
    }
    if opts.exploration > 0.0 && opts.candidates.is_empty() {
        // An exploration rate alone: the serving policy with that rate.
        req.candidates.push(CandidateSpec {
            name: None,
            policy: None,
            exploration: opts.exploration,
        });
    }
    if let Some(m) = &opts.reward_model {
        req.reward_model =
            serde_json::from_str(m).with_context(|| format!("--reward-model {m:?}"))?;
    }
    Ok(req)
}

/// Reads a log file: the header (if any) and a line iterator with byte progress.
struct LogFile {
    header: Option<LogHeader>,
    first: Option<String>,
    reader: BufReader<File>,
    size: u64,
}

impl LogFile {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let size = f.metadata()?.len();
        let mut reader = BufReader::new(f);
        let mut first = String::new();
        reader.read_line(&mut first)?;
        let header = serde_json::from_str::<serde_json::Value>(&first)
            .ok()
            .filter(|v| v.get("tailor_log").is_some())
            .map(serde_json::from_value::<LogHeader>)
            .transpose()
            .context("line 1: not a valid log header")?;
        let first = if header.is_some() || first.trim().is_empty() {
            None
        } else {
            Some(first)
        };
        Ok(Self {
            header,
            first,
            reader,
            size,
        })
    }

    fn campaign(&self, opts: &EvalOptions) -> anyhow::Result<CampaignConfig> {
        if let Some(path) = &opts.campaign {
            let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let mut c: CampaignConfig = serde_json::from_slice(&raw)
                .with_context(|| format!("{}: not a campaign config", path.display()))?;
            if c.id.is_empty() {
                c.id = "external".into();
            }
            return Ok(c);
        }
        match &self.header {
            Some(h) => Ok(h.campaign.clone()),
            None => Ok(serde_json::from_value(serde_json::json!({
                "id": "external", "policy": {"type": "fixed"}
            }))?),
        }
    }

    /// Calls `f` with every decision line in order (1-based line numbers in errors).
    fn for_each(
        mut self,
        opts: &EvalOptions,
        mut f: impl FnMut(&LogLine) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut progress = Progress::new(self.size);
        let mut line_no = if self.header.is_some() { 1 } else { 0 };
        let mut events = 0u64;
        let mut buf = self.first.take().unwrap_or_default();
        let mut handle = |buf: &str, line_no: usize| -> anyhow::Result<()> {
            if buf.trim().is_empty() {
                return Ok(());
            }
            let line: LogLine =
                serde_json::from_str(buf).with_context(|| format!("line {line_no}"))?;
            if opts.from_ms.is_some_and(|t| line.at_ms < t)
                || opts.to_ms.is_some_and(|t| line.at_ms >= t)
            {
                return Ok(());
            }
            f(&line)
        };
        if !buf.is_empty() {
            line_no += 1;
            handle(&buf, line_no)?;
            events += 1;
        }
        loop {
            buf.clear();
            let n = self.reader.read_line(&mut buf)?;
            if n == 0 {
                break;
            }
            line_no += 1;
            handle(&buf, line_no)?;
            events += 1;
            progress.advance(n as u64, events);
        }
        progress.finish();
        Ok(())
    }
}

/// `tailor evaluate FILE`: the evaluation document (JSON) or a table.
pub fn evaluate(path: &Path, opts: &EvalOptions, json: bool) -> anyhow::Result<()> {
    let file = LogFile::open(path)?;
    let campaign = file.campaign(opts)?;
    let mut ev = Evaluator::new(&campaign, request(opts)?, None)?;
    file.for_each(opts, |line| {
        ev.push(line);
        Ok(())
    })?;
    let result = ev.finish();
    let out = std::io::stdout();
    let mut out = out.lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &result)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, &result)?;
    }
    Ok(())
}

/// `tailor replay FILE`: every policy's would-be choice beside the served one, per decision
/// (JSON lines to `out` or stdout), then the table on stderr.
pub fn replay(path: &Path, opts: &EvalOptions, out: Option<&Path>) -> anyhow::Result<()> {
    let file = LogFile::open(path)?;
    let campaign = file.campaign(opts)?;
    let mut ev = Evaluator::new(&campaign, request(opts)?, None)?;
    let names: Vec<String> = ev.policy_names().into_iter().map(String::from).collect();
    let mut sink: Box<dyn Write> = match out {
        Some(p) => Box::new(BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    file.for_each(opts, |line| {
        let Some(traces) = ev.push(line) else {
            return Ok(());
        };
        let policies: serde_json::Map<String, serde_json::Value> = names
            .iter()
            .zip(traces)
            .map(|(n, t)| {
                (
                    n.clone(),
                    serde_json::json!({
                        "would_serve": line.candidates[t.mode].id,
                        "probability_of_served": t.probability,
                    }),
                )
            })
            .collect();
        serde_json::to_writer(
            &mut sink,
            &serde_json::json!({
                "event_id": line.event_id,
                "served": line.actions[0].id,
                "reward": line.actions[0].reward,
                "policies": policies,
            }),
        )?;
        writeln!(sink)?;
        Ok(())
    })?;
    sink.flush()?;
    drop(sink);
    write_table(&mut std::io::stderr().lock(), &ev.finish())?;
    Ok(())
}

fn write_table(out: &mut impl Write, ev: &Evaluation) -> anyhow::Result<()> {
    writeln!(
        out,
        "campaign {}: {} decisions, {} evaluated, {} pending, {} unreadable, {} missing propensity",
        ev.campaign, ev.decisions, ev.used, ev.pending, ev.unreadable, ev.missing_propensity
    )?;
    if let Some(l) = &ev.logging {
        writeln!(
            out,
            "{:<28} {:>9.4}  [{:.4}, {:.4}]  (on-policy mean)",
            "logging", l.total.value, l.total.low, l.total.high
        )?;
    }
    writeln!(
        out,
        "{:<28} {:>9} {:>22} {:>9} {:>9} {:>9} {:>7}",
        "policy (role)", "DR", "DR 95% interval", "SNIPS", "IPS", "ESS", "agree"
    )?;
    for p in &ev.policies {
        write_policy(out, p)?;
    }
    Ok(())
}

fn write_policy(out: &mut impl Write, p: &PolicyValue) -> anyhow::Result<()> {
    let label = format!("{} ({:?})", p.name, p.role).to_lowercase();
    match (&p.estimate, &p.refused) {
        (Some(e), _) => {
            writeln!(
                out,
                "{label:<28} {:>9.4} {:>22} {:>9.4} {:>9.4} {:>9.1} {:>7.3}{}",
                e.dr.value,
                format!("[{:.4}, {:.4}]", e.dr.low, e.dr.high),
                e.snips.value,
                e.ips.value,
                e.effective_sample_size,
                e.agreement,
                if e.warnings.is_empty() { "" } else { "  !" }
            )?;
            for w in &e.warnings {
                writeln!(out, "{:<30}! {}", "", serde_json::to_string(w)?)?;
            }
        }
        (None, Some(r)) => writeln!(out, "{label:<28} refused: {}", serde_json::to_string(r)?)?,
        (None, None) => writeln!(out, "{label:<28} -")?,
    }
    Ok(())
}

/// sled's page cache for `tailor export`.
const EXPORT_CACHE_CAPACITY_BYTES: u64 = 4 << 20;

/// `tailor export`: a campaign's decision log from the data directory to JSON lines.
pub fn export(
    settings: &Settings,
    campaign: &str,
    out: &Path,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
) -> anyhow::Result<()> {
    let dir = &settings.storage.data_dir;
    // One pass over the reward entries and the segment files: sled's page cache would only
    // hold pages never read again; the open reward windows are not held (docs/security/memory.md).
    let store = SledStore::open_with(
        dir,
        OpenOptions {
            hold_open_windows: false,
            ..OpenOptions::serving(
                settings
                    .storage
                    .cache_capacity_bytes
                    .min(EXPORT_CACHE_CAPACITY_BYTES),
                settings.storage.flush_every_ms,
            )
        },
    )
    .with_context(|| {
        format!(
            "opening {} (a running server holds a lock on it: stop it, export from a copy, or \
             use GET /admin/v1/campaigns/{campaign}/log)",
            dir.display()
        )
    })?;
    let Some((_, json)) = store
        .campaigns()?
        .into_iter()
        .find(|(id, _)| id == campaign)
    else {
        bail!("campaign {campaign:?} is not in {}", dir.display());
    };
    let config: CampaignConfig = serde_json::from_slice(&json)?;
    // Streamed: one decision in memory at a time, besides the reward index.
    let index = ope::reward_index(&store, campaign)?;
    let mut w =
        BufWriter::new(File::create(out).with_context(|| format!("creating {}", out.display()))?);
    serde_json::to_writer(&mut w, &ope::header(&config, from_ms, to_ms))?;
    writeln!(w)?;
    let tty = std::io::stderr().is_terminal();
    let (mut written, mut unreadable) = (0u64, 0u64);
    for line in ope::log_lines(&store, campaign, from_ms, to_ms, &index) {
        let Some(l) = line? else {
            unreadable += 1;
            continue;
        };
        serde_json::to_writer(&mut w, &l)?;
        writeln!(w)?;
        written += 1;
        if tty && written % 10_000 == 0 {
            eprint!("\r{written} decisions");
        }
    }
    w.flush()?;
    if tty && written >= 10_000 {
        eprintln!();
    }
    eprintln!(
        "exported {written} decisions of {campaign} to {} ({unreadable} without a logged request left out)",
        out.display()
    );
    Ok(())
}
