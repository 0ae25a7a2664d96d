//! Samples, medians, and the report printed as a table and written as JSON.

use serde_json::{json, Value};

/// One measured figure: its samples and what it is compared with.
#[derive(Debug, Clone)]
pub(crate) struct Metric {
    /// Section of the report (1 reconfiguration, 2 failover, ...).
    pub(crate) section: &'static str,
    pub(crate) name: String,
    pub(crate) unit: &'static str,
    pub(crate) samples: Vec<f64>,
    /// The target set for this figure, as text (e.g. `< 100`).
    pub(crate) target: Option<String>,
    /// The same figure measured on Ochopod 1.0.7, when known.
    pub(crate) v1: Option<String>,
}

impl Metric {
    pub(crate) fn median(&self) -> Option<f64> {
        median(&self.samples)
    }
}

/// The median of `samples` (mean of the two middle values for an even count).
pub(crate) fn median(samples: &[f64]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let mid = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[mid]
    } else {
        (s[mid - 1] + s[mid]) / 2.0
    })
}

/// Every figure of one run of the harness.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) metrics: Vec<Metric>,
    pub(crate) notes: Vec<String>,
}

impl Report {
    /// Adds samples to the metric `name` (created on first use).
    pub(crate) fn add(
        &mut self,
        section: &'static str,
        name: &str,
        unit: &'static str,
        samples: &[f64],
        target: Option<&str>,
        v1: Option<&str>,
    ) {
        if let Some(m) = self
            .metrics
            .iter_mut()
            .find(|m| m.section == section && m.name == name)
        {
            m.samples.extend_from_slice(samples);
            return;
        }
        self.metrics.push(Metric {
            section,
            name: name.to_string(),
            unit,
            samples: samples.to_vec(),
            target: target.map(String::from),
            v1: v1.map(String::from),
        });
    }

    pub(crate) fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("ochopod-bench: {note}");
        self.notes.push(note);
    }

    /// The report as a plain-text table.
    pub(crate) fn table(&self) -> String {
        let mut rows = vec![[
            "section".to_string(),
            "metric".to_string(),
            "median".to_string(),
            "min".to_string(),
            "max".to_string(),
            "n".to_string(),
            "target".to_string(),
            "1.0.7".to_string(),
        ]];
        for m in &self.metrics {
            let (lo, hi) = m
                .samples
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                    (a.min(x), b.max(x))
                });
            let fmt = |v: f64| {
                if !v.is_finite() {
                    "-".to_string()
                } else if v.abs() >= 100.0 {
                    format!("{v:.0} {}", m.unit)
                } else if v.abs() >= 1.0 {
                    format!("{v:.2} {}", m.unit)
                } else {
                    format!("{v:.4} {}", m.unit)
                }
            };
            rows.push([
                m.section.to_string(),
                m.name.clone(),
                m.median().map(fmt).unwrap_or_else(|| "-".into()),
                fmt(lo),
                fmt(hi),
                m.samples.len().to_string(),
                m.target.clone().unwrap_or_default(),
                m.v1.clone().unwrap_or_default(),
            ]);
        }
        let mut widths = [0usize; 8];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for (i, row) in rows.iter().enumerate() {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str(cells.join(" | ").trim_end());
            out.push('\n');
            if i == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                out.push_str(&rule.join("-|-"));
                out.push('\n');
            }
        }
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }

    /// The report as JSON, with the settings and the machine it ran on.
    pub(crate) fn json(&self, context: Value) -> Value {
        let metrics: Vec<Value> = self
            .metrics
            .iter()
            .map(|m| {
                json!({
                    "section": m.section,
                    "name": m.name,
                    "unit": m.unit,
                    "median": m.median(),
                    "samples": m.samples,
                    "target": m.target,
                    "ochopod_1_0_7": m.v1,
                })
            })
            .collect();
        json!({ "context": context, "metrics": metrics, "notes": self.notes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_even_and_empty_sets() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn metrics_accumulate_and_show_in_table_and_json() {
        let mut r = Report::default();
        r.add("1", "latency", "ms", &[10.0], Some("< 100"), Some("3000"));
        r.add("1", "latency", "ms", &[30.0, 20.0], None, None);
        assert_eq!(r.metrics.len(), 1);
        assert_eq!(r.metrics[0].median(), Some(20.0));
        let table = r.table();
        assert!(
            table.contains("latency") && table.contains("20.00 ms"),
            "{table}"
        );
        let j = r.json(json!({}));
        assert_eq!(j["metrics"][0]["median"], json!(20.0));
        assert_eq!(j["metrics"][0]["target"], json!("< 100"));
    }
}
