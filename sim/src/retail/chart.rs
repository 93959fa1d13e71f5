//! The SVG chart of reward over time.

use std::fmt::Write as _;

use super::report::{mean, Report, Trace};
use super::Round;

/// How many points each policy's reward-over-time curve has.
const CURVE_POINTS: usize = 100;

const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Bucket means of `v` into at most [`CURVE_POINTS`] points: `(round at bucket end, mean)`.
fn curve(v: &[f64]) -> Vec<(f64, f64)> {
    let size = v.len().div_ceil(CURVE_POINTS).max(1);
    v.chunks(size)
        .enumerate()
        .map(|(i, c)| ((i * size + c.len()) as f64, mean(c)))
        .collect()
}

/// Reward over time (the true click probability of what each policy served, averaged per
/// bucket of rounds, so coin-flip noise does not hide the curves), with the oracle dashed.
pub fn chart(report: &Report, rounds: &[Round], traces: &[Trace]) -> String {
    let (w, h) = (900.0, 480.0);
    let (left, right, top, bottom) = (60.0, 190.0, 30.0, 50.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let oracle = curve(&rounds.iter().map(Round::best).collect::<Vec<_>>());
    let curves: Vec<Vec<(f64, f64)>> = traces.iter().map(|t| curve(&t.expected)).collect();
    let ymax = oracle
        .iter()
        .chain(curves.iter().flatten())
        .map(|p| p.1)
        .fold(0.0, f64::max);
    // A round number of tenths or hundredths above the highest point.
    let step = if ymax > 0.2 { 0.05 } else { 0.01 };
    let ymax = ((ymax / step).ceil() * step).max(step);
    let xmax = rounds.len().max(1) as f64;
    let x = |r: f64| left + pw * r / xmax;
    let y = |v: f64| top + ph * (1.0 - v / ymax);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="18" font-size="14">Reward over time (true click probability of the served product, mean per {} rounds), seed {}</text>"#,
        rounds.len().div_ceil(CURVE_POINTS),
        report.seed
    );
    // Axes and grid.
    let mut v = 0.0;
    while v <= ymax + 1e-9 {
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.2}</text>"##,
            left + pw,
            left - 6.0,
            yy + 4.0
        );
        v += step;
    }
    for i in 0..=5 {
        let r = xmax * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(r),
            top + ph + 18.0,
            r.round()
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">round</text>"#,
        left + pw / 2.0,
        h - 10.0
    );
    let _ = writeln!(
        s,
        r#"<line x1="{left}" y1="{top}" x2="{left}" y2="{:.1}" stroke="black"/><line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>"#,
        top + ph,
        top + ph,
        left + pw,
        top + ph
    );
    if let Some(at) = report.shift_at {
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{top}" x2="{:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="2,3"/><text x="{:.1}" y="{:.1}" fill="#666">taste shift</text>"##,
            x(at as f64),
            x(at as f64),
            top + ph,
            x(at as f64) + 4.0,
            top + 12.0
        );
    }
    let polyline = |points: &[(f64, f64)]| -> String {
        points
            .iter()
            .map(|&(r, v)| format!("{:.1},{:.1}", x(r), y(v)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        s,
        r##"<polyline fill="none" stroke="#000" stroke-width="1.5" stroke-dasharray="6,4" points="{}"/>"##,
        polyline(&oracle)
    );
    let legend_x = left + pw + 15.0;
    let _ = writeln!(
        s,
        r##"<line x1="{legend_x}" y1="{top}" x2="{:.1}" y2="{top}" stroke="#000" stroke-dasharray="6,4"/><text x="{:.1}" y="{:.1}">oracle</text>"##,
        legend_x + 24.0,
        legend_x + 30.0,
        top + 4.0
    );
    for (i, (p, points)) in report.policies.iter().zip(&curves).enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            polyline(points)
        );
        let ly = top + 20.0 * (i + 1) as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{legend_x}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            legend_x + 24.0,
            legend_x + 30.0,
            ly + 4.0,
            escape(&p.name)
        );
    }
    s.push_str("</svg>\n");
    s
}
