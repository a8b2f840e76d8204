//! Envoy's Prometheus output (`/stats?format=prometheus`), parsed into samples the tests can
//! ask about by metric name and labels.

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Every sample of one scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape(pub Vec<Sample>);

impl Scrape {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            samples.push(parse_line(line).ok_or(format!("bad Prometheus line {line:?}"))?);
        }
        Ok(Self(samples))
    }

    /// The samples named `name` that carry every label in `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(k, v)| sample.labels.iter().any(|(n, w)| n == k && w == v))
        })
    }

    /// The sum of the samples named `name` that carry every label in `labels` (0 if none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Whether any sample has that name.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|sample| sample.name == name)
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let (head, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    let Some((name, labels)) = head.split_once('{') else {
        return Some(Sample {
            name: head.to_owned(),
            labels: Vec::new(),
            value,
        });
    };
    let mut rest = labels.strip_suffix('}')?;
    let mut parsed = Vec::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut text = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => text.push('\n'),
                    other => text.push(other),
                },
                '"' => break i,
                c => text.push(c),
            }
        };
        parsed.push((key.trim_start_matches(',').to_owned(), text));
        rest = &after[end + 1..];
    }
    Some(Sample {
        name: name.to_owned(),
        labels: parsed,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labels_with_escapes() {
        let scrape = Scrape::parse(
            "# TYPE x counter\nx{a=\"1\",b=\"m/l:3.1 \\\"q\\\"\"} 5\ny 2\nh_bucket{le=\"+Inf\"} 3\n",
        )
        .unwrap();
        assert_eq!(scrape.sum("x", &[("b", "m/l:3.1 \"q\"")]), 5.0);
        assert_eq!(scrape.sum("x", &[("a", "2")]), 0.0);
        assert_eq!(scrape.sum("y", &[]), 2.0);
        assert_eq!(scrape.sum("h_bucket", &[("le", "+Inf")]), 3.0);
    }
}
