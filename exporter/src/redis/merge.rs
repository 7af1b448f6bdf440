//! The aggregate's exposition: every instance's snapshot (Prometheus text
//! format 0.0.4, as the exporter renders it) with identity labels added to
//! each sample, one HELP/TYPE per family. Pure and line-level: no I/O.

use std::collections::BTreeMap;

/// One instance's exposition and the labels that tell its samples apart.
pub struct Part<'a> {
    pub labels: &'a [(&'a str, &'a str)],
    pub text: &'a str,
}

/// What the merge skipped, for the aggregate's own counters.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Lines that are no sample of the text format.
    pub malformed: u64,
    /// Samples of a family another instance declares with another TYPE.
    pub conflicting: u64,
}

#[derive(Default)]
struct Family {
    help: Option<String>,
    kind: Option<String>,
    samples: Vec<String>,
}

/// Merges `parts` in order: families sorted by name, each with the HELP and
/// TYPE of the first part declaring them and its samples in part order.
pub fn merge(parts: &[Part<'_>]) -> (String, Skipped) {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut skipped = Skipped::default();
    for part in parts {
        // The family the part's last TYPE line declared: its samples follow it.
        let mut current: Option<String> = None;
        // Whether that family's TYPE conflicts with what is merged already.
        let mut conflict = false;
        for line in part.text.lines() {
            let line = line.trim_end();
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                let family = families.entry(name.to_string()).or_default();
                family.help.get_or_insert_with(|| help.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
                let family = families.entry(name.to_string()).or_default();
                conflict = *family.kind.get_or_insert_with(|| kind.to_string()) != kind;
                current = Some(name.to_string());
            } else if line.is_empty() || line.starts_with('#') {
                continue;
            } else {
                let Some((name, labeled)) = with_labels(line, part.labels) else {
                    skipped.malformed += 1;
                    continue;
                };
                let family = match &current {
                    Some(f) if belongs(name, f) => f.clone(),
                    _ => {
                        conflict = false;
                        current = None;
                        name.to_string()
                    }
                };
                if conflict {
                    skipped.conflicting += 1;
                    continue;
                }
                families.entry(family).or_default().samples.push(labeled);
            }
        }
    }
    let mut out = String::new();
    for (name, family) in &families {
        if family.samples.is_empty() {
            continue;
        }
        if let Some(help) = &family.help {
            out.push_str(&format!("# HELP {name} {help}\n"));
        }
        if let Some(kind) = &family.kind {
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        }
        for sample in &family.samples {
            out.push_str(sample);
            out.push('\n');
        }
    }
    (out, skipped)
}

/// Whether sample `name` is one of family `family`'s (histograms and
/// summaries have `_bucket`, `_sum` and `_count` samples).
fn belongs(name: &str, family: &str) -> bool {
    name == family
        || name
            .strip_prefix(family)
            .is_some_and(|s| matches!(s, "_bucket" | "_sum" | "_count"))
}

/// The sample line with `extra` labels first; a label of the same name the
/// sample already has becomes `exported_<name>` (as Prometheus does with
/// honor_labels off). `None` when the line is no sample.
fn with_labels<'l>(line: &'l str, extra: &[(&str, &str)]) -> Option<(&'l str, String)> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    let (labels, rest) = if line[name_end..].starts_with('{') {
        let (labels, len) = parse_labels(&line[name_end..])?;
        (labels, &line[name_end + len..])
    } else {
        (Vec::new(), &line[name_end..])
    };
    // A value, and maybe a timestamp.
    let value = rest.trim_start();
    let mut fields = value.split_whitespace();
    let well_formed = rest.starts_with(' ')
        && fields.next().is_some_and(|v| v.parse::<f64>().is_ok())
        && fields.next().is_none_or(|t| t.parse::<i64>().is_ok())
        && fields.next().is_none();
    if !well_formed {
        return None;
    }
    let mut out = String::with_capacity(line.len() + 64);
    out.push_str(name);
    out.push('{');
    let mut first = true;
    let mut push = |out: &mut String, key: &str, raw_value: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(key);
        out.push_str("=\"");
        out.push_str(raw_value);
        out.push('"');
    };
    for (key, value) in extra {
        push(&mut out, key, &escape(value));
    }
    for (key, raw) in &labels {
        if extra.iter().any(|(k, _)| k == key) {
            push(&mut out, &format!("exported_{key}"), raw);
        } else {
            push(&mut out, key, raw);
        }
    }
    out.push_str("} ");
    out.push_str(value);
    Some((name, out))
}

/// `{k="v",...}` at the start of `s`: the pairs (values still escaped) and
/// the length consumed.
fn parse_labels(s: &str) -> Option<(Vec<(&str, &str)>, usize)> {
    let bytes = s.as_bytes();
    let mut i = 1;
    let mut labels = Vec::new();
    loop {
        while bytes.get(i) == Some(&b' ') {
            i += 1;
        }
        match bytes.get(i)? {
            b'}' => return Some((labels, i + 1)),
            b',' if !labels.is_empty() => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let key_start = i;
        while bytes
            .get(i)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            i += 1;
        }
        let key = &s[key_start..i];
        if key.is_empty() || bytes.get(i) != Some(&b'=') || bytes.get(i + 1) != Some(&b'"') {
            return None;
        }
        i += 2;
        let value_start = i;
        loop {
            match bytes.get(i)? {
                b'\\' => i += 2,
                b'"' => break,
                _ => i += 1,
            }
        }
        labels.push((key, &s[value_start..i]));
        i += 1;
    }
}

/// A label value in the text format's escaping.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "# HELP gunicorn_worker_requests_total Requests.\n\
# TYPE gunicorn_worker_requests_total counter\n\
gunicorn_worker_requests_total{worker_id=\"worker_1\",pid=\"10\"} 5\n\
# HELP gunicorn_up Up.\n\
# TYPE gunicorn_up gauge\n\
gunicorn_up 1\n\
# HELP d Duration.\n\
# TYPE d histogram\n\
d_bucket{le=\"0.1\"} 1\n\
d_bucket{le=\"+Inf\"} 2\n\
d_sum 0.3\n\
d_count 2\n";

    const B: &str = "# HELP gunicorn_worker_requests_total Requests.\n\
# TYPE gunicorn_worker_requests_total counter\n\
gunicorn_worker_requests_total{worker_id=\"worker_1\",pid=\"20\"} 7\n\
# HELP gunicorn_up Up.\n\
# TYPE gunicorn_up gauge\n\
gunicorn_up 0\n";

    #[test]
    fn families_merge_with_one_help_and_type() {
        let (text, skipped) = merge(&[
            Part {
                labels: &[("instance", "a"), ("host", "h1")],
                text: A,
            },
            Part {
                labels: &[("instance", "b"), ("host", "h2")],
                text: B,
            },
        ]);
        assert_eq!(skipped, Skipped::default());
        assert_eq!(
            text,
            "# HELP d Duration.\n\
# TYPE d histogram\n\
d_bucket{instance=\"a\",host=\"h1\",le=\"0.1\"} 1\n\
d_bucket{instance=\"a\",host=\"h1\",le=\"+Inf\"} 2\n\
d_sum{instance=\"a\",host=\"h1\"} 0.3\n\
d_count{instance=\"a\",host=\"h1\"} 2\n\
# HELP gunicorn_up Up.\n\
# TYPE gunicorn_up gauge\n\
gunicorn_up{instance=\"a\",host=\"h1\"} 1\n\
gunicorn_up{instance=\"b\",host=\"h2\"} 0\n\
# HELP gunicorn_worker_requests_total Requests.\n\
# TYPE gunicorn_worker_requests_total counter\n\
gunicorn_worker_requests_total{instance=\"a\",host=\"h1\",worker_id=\"worker_1\",pid=\"10\"} 5\n\
gunicorn_worker_requests_total{instance=\"b\",host=\"h2\",worker_id=\"worker_1\",pid=\"20\"} 7\n"
        );
    }

    #[test]
    fn quoted_braces_escapes_and_clashing_labels() {
        let text = "# TYPE e counter\ne{path=\"/a}b\\\"c\",instance=\"x\"} 3 1700000000\n";
        let (out, skipped) = merge(&[Part {
            labels: &[("instance", "h:\"q\"")],
            text,
        }]);
        assert_eq!(skipped, Skipped::default());
        assert_eq!(
            out,
            "# TYPE e counter\ne{instance=\"h:\\\"q\\\"\",path=\"/a}b\\\"c\",exported_instance=\"x\"} 3 1700000000\n"
        );
    }

    #[test]
    fn garbage_and_type_conflicts_are_skipped_and_counted() {
        let (out, skipped) = merge(&[
            Part {
                labels: &[("instance", "a")],
                text: "# TYPE m counter\nm 1\nnot a sample{\nm{bad} 2\n{x=\"1\"} 3\nlonely\n",
            },
            Part {
                labels: &[("instance", "b")],
                text: "# TYPE m gauge\nm 4\n# TYPE n gauge\nn 5\n",
            },
        ]);
        assert_eq!(
            skipped,
            Skipped {
                malformed: 4,
                conflicting: 1
            }
        );
        assert_eq!(
            out,
            "# TYPE m counter\nm{instance=\"a\"} 1\n# TYPE n gauge\nn{instance=\"b\"} 5\n"
        );
    }

    #[test]
    fn untyped_samples_are_their_own_family() {
        let (out, _) = merge(&[Part {
            labels: &[("host", "h")],
            text: "x{} 1\ny 2\n",
        }]);
        assert_eq!(out, "x{host=\"h\"} 1\ny{host=\"h\"} 2\n");
    }
}
