// Time-series charts: SVG with labelled axes, gridlines, a legend, an interval band where the
// series has one, and a data table for screen readers. Fewer than two time buckets read as
// "not enough data yet" (with what there is), never as an empty box.
import { esc } from "./util.js";

export const COLORS = ["#2f5fc4", "#c25e00", "#137a3a", "#b3261e", "#7b1fa2", "#00838f"];

const W = 680, H = 200, PAD_L = 56, PAD_R = 14, PAD_T = 12, PAD_B = 34;

/// A readable label for a bucket start: the day when buckets are days, else day and hour (UTC).
export function bucketLabel(ms, bucketSeconds) {
  const iso = new Date(ms).toISOString();
  if (bucketSeconds >= 86400) return iso.slice(5, 10);
  return iso.slice(5, 10) + " " + iso.slice(11, 16);
}

export function bucketName(bucketSeconds) {
  if (bucketSeconds === 86400) return "day";
  if (bucketSeconds === 3600) return "hour";
  if (bucketSeconds % 60 === 0) return bucketSeconds / 60 + "-minute period";
  return bucketSeconds + "-second period";
}

function niceStep(span, target) {
  const raw = span / target;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

/// The "not enough data yet" state: a note, not an empty frame.
function emptyState(container, title, detail) {
  container.innerHTML =
    '<div class="chart-empty" role="note"><strong>Not enough data yet.</strong> ' + esc(detail || "") + "</div>";
  container.dataset.state = "empty";
  container.setAttribute("aria-label", title + ": not enough data yet");
}

/// Draw series of {x: ms, y, low?, high?} points.
/// opts: {title, bucketSeconds, format(y), bars (draw the first series as bars), unit, emptyDetail(points)}
export function timeChart(container, series, opts) {
  const { title, bucketSeconds, format } = opts;
  const all = series.flatMap((s) => s.points);
  const xs = [...new Set(all.map((p) => p.x))].sort((a, b) => a - b);
  if (xs.length < 2) {
    emptyState(container, title, opts.emptyDetail ? opts.emptyDetail(all, xs) : defaultDetail(xs, bucketSeconds));
    return;
  }
  container.dataset.state = "chart";
  const ys = all.flatMap((p) => [p.y, p.low, p.high]).filter((v) => v !== undefined && v !== null && Number.isFinite(v));
  let y0 = Math.min(0, ...ys), y1 = Math.max(...ys);
  if (y1 === y0) y1 = y0 + (opts.bars ? 1 : 0.1);
  const step = niceStep(y1 - y0, 4);
  y0 = Math.floor(y0 / step) * step;
  y1 = Math.ceil(y1 / step) * step;
  const half = opts.bars ? (bucketSeconds * 1000) / 2 : 0;
  const x0 = xs[0] - half, x1 = xs[xs.length - 1] + half;
  const X = (x) => PAD_L + ((x - x0) / (x1 - x0 || 1)) * (W - PAD_L - PAD_R);
  const Y = (y) => H - PAD_B - ((y - y0) / (y1 - y0)) * (H - PAD_T - PAD_B);
  let g = "";
  // Horizontal gridlines with value labels.
  for (let v = y0; v <= y1 + step / 2; v += step) {
    g += '<line class="grid" x1="' + PAD_L + '" x2="' + (W - PAD_R) + '" y1="' + Y(v) + '" y2="' + Y(v) + '"/>';
    g += '<text class="tick" x="' + (PAD_L - 6) + '" y="' + (Y(v) + 4) + '" text-anchor="end">' + esc(format(v)) + "</text>";
  }
  // Time labels: at most 6, evenly picked.
  const every = Math.max(1, Math.ceil(xs.length / 6));
  xs.forEach((x, i) => {
    if (i % every !== 0 && i !== xs.length - 1) return;
    g += '<text class="tick" x="' + X(x) + '" y="' + (H - PAD_B + 16) + '" text-anchor="middle">' + esc(bucketLabel(x, bucketSeconds)) + "</text>";
  });
  g += '<text class="tick" x="' + (W - PAD_R) + '" y="' + (H - 4) + '" text-anchor="end">time (UTC), per ' + esc(bucketName(bucketSeconds)) + "</text>";
  series.forEach((s) => {
    const pts = s.points.slice().sort((a, b) => a.x - b.x);
    if (opts.bars) {
      const bw = Math.max(2, (X(xs[0] + bucketSeconds * 1000) - X(xs[0])) * 0.7);
      for (const p of pts) {
        g += '<rect x="' + (X(p.x) - bw / 2) + '" y="' + Y(Math.max(p.y, 0)) + '" width="' + bw + '" height="' + Math.abs(Y(p.y) - Y(0)) +
          '" fill="' + s.color + '"><title>' + esc(bucketLabel(p.x, bucketSeconds) + ": " + format(p.y)) + "</title></rect>";
      }
      return;
    }
    const band = pts.filter((p) => p.low !== undefined && p.high !== undefined);
    if (band.length > 1) {
      const poly = band.map((p) => X(p.x) + "," + Y(p.high)).concat(band.slice().reverse().map((p) => X(p.x) + "," + Y(p.low)));
      g += '<polygon points="' + poly.join(" ") + '" fill="' + s.color + '" opacity="0.15"/>';
    }
    g += '<polyline fill="none" stroke="' + s.color + '" stroke-width="2" points="' + pts.map((p) => X(p.x) + "," + Y(p.y)).join(" ") + '"/>';
    for (const p of pts) {
      g += '<circle cx="' + X(p.x) + '" cy="' + Y(p.y) + '" r="3.5" fill="' + s.color + '"><title>' +
        esc(s.name + ", " + bucketLabel(p.x, bucketSeconds) + ": " + format(p.y) + (p.low !== undefined ? " [" + format(p.low) + ", " + format(p.high) + "]" : "")) +
        "</title></circle>";
    }
  });
  const summary = title + ": " + series.map((s) => s.name + " over " + s.points.length + " " + bucketName(bucketSeconds) + "s").join("; ");
  const legend = series.length > 1 || opts.legend
    ? '<ul class="legend">' + series.map((s) => '<li><span class="swatch" style="background:' + s.color + '"></span>' + esc(s.name) + "</li>").join("") + "</ul>"
    : "";
  container.innerHTML =
    '<svg viewBox="0 0 ' + W + " " + H + '" role="img" aria-label="' + esc(summary) + '" preserveAspectRatio="xMinYMin meet">' + g + "</svg>" +
    legend + dataTable(series, bucketSeconds, format);
}

function defaultDetail(xs, bucketSeconds) {
  return xs.length === 0
    ? "No decisions are in this range yet."
    : "Everything so far falls in one " + bucketName(bucketSeconds) + " (" + bucketLabel(xs[0], bucketSeconds) +
      " UTC); the chart draws from the second on. Try a shorter period.";
}

/// The numbers behind the chart, folded away for sighted users, read by screen readers.
function dataTable(series, bucketSeconds, format) {
  const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p.x)))].sort((a, b) => a - b);
  const rows = xs.map((x) => "<tr><th scope=\"row\">" + esc(bucketLabel(x, bucketSeconds)) + "</th>" + series.map((s) => {
    const p = s.points.find((q) => q.x === x);
    return "<td>" + (p ? esc(format(p.y)) : "–") + "</td>";
  }).join("") + "</tr>");
  return '<details class="data"><summary>Data table</summary><table><thead><tr><th scope="col">period (UTC)</th>' +
    series.map((s) => '<th scope="col">' + esc(s.name) + "</th>").join("") + "</tr></thead><tbody>" + rows.join("") + "</tbody></table></details>";
}
