//! Reads the few series the scorers need out of a model server's `/metrics` (the Prometheus
//! text exposition format), as GIE's metrics client does: a series matches a [`MetricSpec`]
//! when its name is the spec's and it carries every label the spec names with that value;
//! of the matching series the one with the latest timestamp wins, the first when none has one.
//!
//! Every other line is skipped after its first few bytes; nothing is allocated per line.

/// A metric name and the labels a series must carry (GIE's spec syntax:
/// `name` or `name{label=value,...}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricSpec {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

impl MetricSpec {
    /// Parses `name` or `name{label=value,...}` (values unquoted, as GIE writes them).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        let (name, labels) = match spec.find('{') {
            None if spec.contains('}') => return Err(format!("{spec:?}: '}}' without '{{'")),
            None => (spec, Vec::new()),
            Some(open) => {
                let Some(body) = spec[open + 1..].strip_suffix('}') else {
                    return Err(format!("{spec:?}: the labels must end the spec with '}}'"));
                };
                let mut labels = Vec::new();
                for pair in body.split(',') {
                    let Some((label, value)) = pair.split_once('=') else {
                        return Err(format!("{spec:?}: {pair:?} is not label=value"));
                    };
                    let (label, value) = (label.trim(), value.trim().trim_matches('"'));
                    if label.is_empty() || value.is_empty() || !is_name(label) {
                        return Err(format!("{spec:?}: {pair:?} is not label=value"));
                    }
                    labels.push((label.to_owned(), value.to_owned()));
                }
                (spec[..open].trim(), labels)
            }
        };
        if !is_name(name) {
            return Err(format!(
                "{name:?} is not a Prometheus metric name (letters, digits, '_' and ':')"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            labels,
        })
    }
}

impl std::fmt::Display for MetricSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if !self.labels.is_empty() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .map(|(l, v)| format!("{l}={v}"))
                .collect();
            write!(f, "{{{}}}", labels.join(","))?;
        }
        Ok(())
    }
}

fn is_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// The value of the series `spec` selects in `text`, if any (see the module docs).
pub fn find(text: &[u8], spec: &MetricSpec) -> Option<f64> {
    let mut best: Option<(i64, f64)> = None;
    for line in text.split(|&b| b == b'\n') {
        let Some(rest) = line.strip_prefix(spec.name.as_bytes()) else {
            continue;
        };
        let Some((labels, rest)) = series(rest) else {
            continue;
        };
        if !spec
            .labels
            .iter()
            .all(|(name, value)| label_is(labels, name, value))
        {
            continue;
        }
        let mut fields = rest
            .split(|&b| b == b' ' || b == b'\t' || b == b'\r')
            .filter(|f| !f.is_empty());
        let Some(value) = fields.next().and_then(parse_float) else {
            continue;
        };
        // Absent timestamps count as 0, so the first such series wins, as in GIE.
        let timestamp = fields
            .next()
            .and_then(|t| std::str::from_utf8(t).ok()?.parse::<i64>().ok())
            .unwrap_or(0);
        if best.is_none_or(|(latest, _)| timestamp > latest) {
            best = Some((timestamp, value));
        }
    }
    best.map(|(_, value)| value)
}

/// Splits what follows a series' name into its label block (without braces; empty when
/// there is none) and the rest, or `None` when the name continues (another metric).
fn series(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    match rest.first()? {
        b'{' => {
            let close = closing_brace(rest)?;
            Some((&rest[1..close], &rest[close + 1..]))
        }
        b' ' | b'\t' => Some((&[], rest)),
        _ => None,
    }
}

/// The index of the `}` ending a label block, skipping quoted values (which may hold `}`).
fn closing_brace(block: &[u8]) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, &byte) in block.iter().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// Whether the label block holds `name="value"` (escapes in the value compared decoded).
fn label_is(mut block: &[u8], name: &str, value: &str) -> bool {
    loop {
        block = block.trim_ascii_start();
        let Some(eq) = block.iter().position(|&b| b == b'=') else {
            return false;
        };
        let label = block[..eq].trim_ascii();
        let rest = block[eq + 1..].trim_ascii_start();
        let Some(rest) = rest.strip_prefix(b"\"") else {
            return false;
        };
        let mut decoded = Vec::new();
        let mut end = None;
        let mut i = 0;
        while i < rest.len() {
            match rest[i] {
                b'\\' if i + 1 < rest.len() => {
                    decoded.push(match rest[i + 1] {
                        b'n' => b'\n',
                        other => other,
                    });
                    i += 2;
                }
                b'"' => {
                    end = Some(i);
                    break;
                }
                byte => {
                    decoded.push(byte);
                    i += 1;
                }
            }
        }
        let Some(end) = end else {
            return false;
        };
        if label == name.as_bytes() && decoded == value.as_bytes() {
            return true;
        }
        block = rest[end + 1..].trim_ascii_start();
        match block.strip_prefix(b",") {
            Some(next) => block = next,
            None => return false,
        }
    }
}

fn parse_float(field: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(field).ok()?;
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VLLM: &str = r#"# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# HELP vllm:num_requests_waiting_by_reason Waiting requests by reason.
vllm:num_requests_waiting_by_reason{reason="capacity"} 9.0
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.25
vllm:gpu_cache_usage_perc{model_name="a \"quoted\" {name}"} 0.5
vllm:prefix_cache_hits_total 7
"#;

    fn spec(text: &str) -> MetricSpec {
        MetricSpec::parse(text).unwrap()
    }

    #[test]
    fn finds_the_configured_series_only() {
        let text = VLLM.as_bytes();
        assert_eq!(find(text, &spec("vllm:num_requests_waiting")), Some(3.0));
        assert_eq!(find(text, &spec("vllm:kv_cache_usage_perc")), Some(0.25));
        assert_eq!(find(text, &spec("vllm:prefix_cache_hits_total")), Some(7.0));
        assert_eq!(find(text, &spec("vllm:num_requests_running")), None);
        // Label values are compared decoded, whatever they hold.
        assert_eq!(
            find(
                text,
                &spec(r#"vllm:gpu_cache_usage_perc{model_name=a "quoted" {name}}"#)
            ),
            Some(0.5)
        );
        assert_eq!(
            find(text, &spec("vllm:kv_cache_usage_perc{engine=0}")),
            Some(0.25)
        );
        assert_eq!(
            find(text, &spec("vllm:kv_cache_usage_perc{engine=1}")),
            None
        );
    }

    #[test]
    fn the_latest_timestamp_wins_else_the_first_series() {
        let text = b"m{a=\"1\"} 1\nm{a=\"2\"} 2\nm{a=\"3\"} 3 100\nm{a=\"4\"} 4 50\n";
        assert_eq!(find(text, &spec("m")), Some(3.0));
        assert_eq!(find(b"m 1\nm 2\n", &spec("m")), Some(1.0));
        assert_eq!(find(b"m NaN\n", &spec("m")).map(f64::is_nan), Some(true));
        assert_eq!(find(b"m +Inf\r\n", &spec("m")), Some(f64::INFINITY));
        assert_eq!(find(b"m garbage\nm{broken 1\n", &spec("m")), None);
    }

    #[test]
    fn specs_parse_as_gie_writes_them() {
        assert_eq!(
            spec(" vllm:num_requests_waiting{model_name=llama, engine=0} "),
            MetricSpec {
                name: "vllm:num_requests_waiting".into(),
                labels: vec![
                    ("model_name".into(), "llama".into()),
                    ("engine".into(), "0".into())
                ],
            }
        );
        for bad in [
            "", "1abc", "a b", "m{", "m{}", "m{a}", "m{a=}", "m{a=1}x", "m}",
        ] {
            assert!(MetricSpec::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(spec("m{a=1,b=2}").to_string(), "m{a=1,b=2}");
    }
}
