//! CSV export of the reports (`?format=csv` or `Accept: text/csv`; docs/reports.md).
//!
//! Any report's JSON answer is turned into rows the same way, so every report (and any field a
//! report gains later) exports without a per-report table:
//! * nested objects become dotted columns (`posterior.low`);
//! * an array of objects becomes one row per element, each carrying its parents' columns (the
//!   per-policy points of the policy series, the buckets of the lift series), the column names
//!   prefixed by the array's field (`series.start`); several such arrays give their rows one
//!   after the other;
//! * an array of plain values is one cell, its values joined by `;`.
//!
//! Columns appear in the order first met (within an object, in key order). Cells follow RFC 4180: a cell holding a comma, a
//! quote, a line break, or leading or trailing space is quoted, with quotes doubled. A text
//! cell that a spreadsheet would run as a formula (first character `=`, `+`, `-`, `@`, tab or
//! carriage return: action ids and context values come from the storefront) is prefixed with
//! `'` (OWASP's CSV injection advice); numbers are written as they are.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{Map, Value};

use super::status;
use crate::error::EngineError;

/// The answer's format, from `?format=` (which wins) or the `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

/// The format a report request asks for. `format` is the query's value.
pub fn format(req: &HttpRequest, format: Option<&str>) -> Result<Format, EngineError> {
    match format {
        Some("json") => Ok(Format::Json),
        Some("csv") => Ok(Format::Csv),
        Some(_) => Err(EngineError::invalid("format", "must be json or csv")),
        None => {
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let csv = accept
                .split(',')
                .any(|m| m.split(';').next().unwrap_or("").trim() == "text/csv");
            Ok(if csv { Format::Csv } else { Format::Json })
        }
    }
}

/// The report `body` in `format`; `name` names the downloaded file (`{name}.csv`).
pub fn respond(body: &Value, format: Format, name: &str) -> HttpResponse {
    match format {
        Format::Json => status::ok(body),
        Format::Csv => {
            // Campaign ids are [A-Za-z0-9._-], report names fixed: nothing to escape.
            let disposition = format!("attachment; filename=\"{name}.csv\"");
            status::ok_builder()
                .content_type("text/csv; charset=utf-8")
                .insert_header((header::CONTENT_DISPOSITION, disposition))
                .body(to_csv(body))
        }
    }
}

type Row = Vec<(String, Value)>;

/// The rows of a report's JSON (see the module docs).
fn rows(v: &Value, prefix: &str) -> Vec<Row> {
    match v {
        Value::Array(items) if items.iter().any(Value::is_object) => {
            items.iter().flat_map(|x| rows(x, prefix)).collect()
        }
        Value::Object(map) => object_rows(map, prefix),
        other => vec![vec![(column(prefix, "value"), cell_value(other))]],
    }
}

fn column(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A plain array as one cell; anything else as it is.
fn cell_value(v: &Value) -> Value {
    match v {
        Value::Array(items) => Value::String(
            items
                .iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(";"),
        ),
        other => other.clone(),
    }
}

fn object_rows(map: &Map<String, Value>, prefix: &str) -> Vec<Row> {
    let mut own: Row = Vec::new();
    let mut nested: Vec<Vec<Row>> = Vec::new();
    for (k, v) in map {
        let name = column(prefix, k);
        match v {
            // Nothing to show, and no column to name.
            Value::Array(items) if items.is_empty() => {}
            Value::Array(items) if items.iter().any(Value::is_object) => {
                nested.push(rows(v, &name));
            }
            Value::Object(inner) => {
                // A nested object: its columns join this row, or its arrays explode it.
                let mut inner_rows = object_rows(inner, &name);
                if inner_rows.len() == 1 {
                    own.append(&mut inner_rows[0]);
                } else {
                    nested.push(inner_rows);
                }
            }
            other => own.push((name, cell_value(other))),
        }
    }
    let children: Vec<Row> = nested.into_iter().flatten().collect();
    if children.is_empty() {
        return vec![own];
    }
    children
        .into_iter()
        .map(|child| own.iter().cloned().chain(child).collect())
        .collect()
}

/// One CSV cell.
fn cell(v: &Value) -> String {
    let text = match v {
        Value::Null => return String::new(),
        Value::String(s) => {
            if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
                format!("'{s}")
            } else {
                s.clone()
            }
        }
        other => other.to_string(),
    };
    let quote =
        text.contains([',', '"', '\n', '\r']) || text.starts_with(' ') || text.ends_with(' ');
    if quote {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// A report's JSON as CSV: a header line, then one line per row (CRLF line ends, RFC 4180).
pub fn to_csv(v: &Value) -> String {
    let rows = rows(v, "");
    let mut columns: Vec<String> = Vec::new();
    for r in &rows {
        for (k, _) in r {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = columns
        .iter()
        .map(|c| cell(&Value::String(c.clone())))
        .collect();
    out.push_str(&header.join(","));
    out.push_str("\r\n");
    for r in rows.iter().filter(|r| !r.is_empty()) {
        let line: Vec<String> = columns
            .iter()
            .map(|c| {
                r.iter()
                    .find(|(k, _)| k == c)
                    .map_or_else(String::new, |(_, v)| cell(v))
            })
            .collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nested_reports_flatten_and_cells_are_quoted() {
        let report = json!({
            "actions": [
                {"id": "a,b", "exposures": 3, "posterior": {"estimate": 0.5, "low": 0.1}},
                {"id": "say \"hi\"\nnow", "exposures": 1, "posterior": {"estimate": 0.25, "low": 0.0}},
                {"id": "=HYPERLINK(\"x\")", "exposures": 0, "tags": ["x", "y"]},
            ]
        });
        assert_eq!(
            to_csv(&report),
            "actions.exposures,actions.id,actions.posterior.estimate,actions.posterior.low,actions.tags\r\n\
             3,\"a,b\",0.5,0.1,\r\n\
             1,\"say \"\"hi\"\"\nnow\",0.25,0.0,\r\n\
             0,\"'=HYPERLINK(\"\"x\"\")\",,,x;y\r\n"
        );
        // Arrays of objects under an object explode into rows carrying the parent's columns;
        // negative numbers stay numbers.
        let series = json!({"bucket_seconds": 3600, "policies": [
            {"policy": "thompson", "points": [{"start": 0, "reward": -1.5}, {"start": 3600, "reward": 2}]},
            {"policy": "baseline", "points": []},
        ]});
        assert_eq!(
            to_csv(&series),
            "bucket_seconds,policies.policy,policies.points.reward,policies.points.start\r\n\
             3600,thompson,-1.5,0\r\n\
             3600,thompson,2,3600\r\n\
             3600,baseline,,\r\n"
        );
        // An empty report is an empty file.
        assert_eq!(to_csv(&json!({"actions": []})), "\r\n");
    }
}
