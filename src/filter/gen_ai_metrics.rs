//! The response-side metrics: per-model token counters, latency histograms and responses by
//! status class (named as [`crate::response::labels`] says, defined on first use), and one
//! counter per response problem.

use crate::response::labels::{stat_name, LabelId, ModelLabels};
use crate::response::{Operation, Problem, Report, StatusClass, Timing};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MetricType, Status};
use std::cell::RefCell;
use std::collections::HashMap;

/// `gen_ai.token.type` values.
const TOKEN_TYPES: [&str; 3] = ["input", "output", "cached"];

/// A metric family and the label only it has.
#[derive(Clone, Copy)]
enum Family {
    Tokens(usize),
    TimeToFirstToken,
    TimePerOutputToken,
    Duration,
    Responses(StatusClass),
}

impl Family {
    fn code(self) -> u64 {
        match self {
            Self::Tokens(index) => index as u64,
            Self::TimeToFirstToken => 8,
            Self::TimePerOutputToken => 9,
            Self::Duration => 10,
            Self::Responses(class) => 16 + class as u64,
        }
    }

    fn metric(self) -> (&'static str, MetricType) {
        match self {
            Self::Tokens(_) => ("gen_ai.client.token.usage", MetricType::Counter),
            Self::TimeToFirstToken => (
                "gen_ai.server.time_to_first_token_ms",
                MetricType::Histogram,
            ),
            Self::TimePerOutputToken => (
                "gen_ai.server.time_per_output_token_us",
                MetricType::Histogram,
            ),
            Self::Duration => ("gen_ai.server.request.duration_ms", MetricType::Histogram),
            Self::Responses(_) => ("responses", MetricType::Counter),
        }
    }
}

/// The labels of one response's metrics.
pub struct Labels {
    pub operation: Operation,
    pub request: LabelId,
    /// None when the response names no model.
    pub response: Option<LabelId>,
}

#[derive(Debug)]
pub struct GenAiMetrics {
    problems: [u32; Problem::ALL.len()],
    include_usage_added: u32,
    /// Metric ids by family and labels, defined on first use.
    defined: RefCell<HashMap<u64, u32>>,
}

impl GenAiMetrics {
    pub fn define() -> Result<Self, Status> {
        let mut problems = [0; Problem::ALL.len()];
        for (id, problem) in problems.iter_mut().zip(Problem::ALL) {
            *id = hostcalls::define_metric(
                MetricType::Counter,
                &format!("model_router.responses_{}", problem.as_str()),
            )?;
        }
        Ok(Self {
            problems,
            include_usage_added: hostcalls::define_metric(
                MetricType::Counter,
                "model_router.requests_include_usage_added",
            )?,
            defined: RefCell::new(HashMap::new()),
        })
    }

    /// A streaming request was given `stream_options.include_usage`.
    pub fn include_usage_added(&self) {
        let _ = hostcalls::increment_metric(self.include_usage_added, 1);
    }

    /// A routed request ended without a response.
    pub fn no_response(&self) {
        let _ = hostcalls::increment_metric(self.problems[Problem::Incomplete as usize], 1);
    }

    /// Records one response: its status class and problems always; for a 2xx, its tokens and
    /// the latencies it allows.
    pub fn record(
        &self,
        model_labels: &ModelLabels,
        labels: &Labels,
        report: &Report,
        timing: &Timing,
    ) {
        for problem in report.problems.iter() {
            let _ = hostcalls::increment_metric(self.problems[problem as usize], 1);
        }
        let class = report.status_class();
        self.add(model_labels, labels, Family::Responses(class), 1);
        if class != StatusClass::Success {
            return;
        }
        let usage = &report.usage;
        for (index, count) in [usage.input, usage.output, usage.cached]
            .into_iter()
            .enumerate()
        {
            if let Some(count) = count.filter(|n| *n > 0) {
                self.add(model_labels, labels, Family::Tokens(index), count);
            }
        }
        if let Some(ms) = timing.time_to_first_token_ms() {
            self.add(model_labels, labels, Family::TimeToFirstToken, ms);
        }
        if report.problems.is_empty() || report.problems.iter().all(|p| p == Problem::MissingUsage)
        {
            if let Some(ms) = timing.duration_ms() {
                self.add(model_labels, labels, Family::Duration, ms);
            }
            if report.streamed {
                if let Some(us) = timing.time_per_output_token_us(usage.output) {
                    self.add(model_labels, labels, Family::TimePerOutputToken, us);
                }
            }
        }
    }

    /// Adds to a counter or records in a histogram, defining it first if needed.
    fn add(&self, model_labels: &ModelLabels, labels: &Labels, family: Family, value: u64) {
        let response = match family {
            Family::Responses(_) => None,
            _ => labels.response,
        };
        let key = family.code()
            | (labels.operation as u64) << 8
            | u64::from(labels.request) << 16
            | u64::from(response.unwrap_or(LabelId::MAX)) << 32;
        let known = self.defined.borrow().get(&key).copied();
        let id = match known {
            Some(id) => id,
            None => {
                let (metric, kind) = family.metric();
                let mut tags = vec![
                    ("gen_ai_operation_name", labels.operation.as_str()),
                    ("gen_ai_request_model", model_labels.name(labels.request)),
                ];
                if let Some(response) = response {
                    tags.push(("gen_ai_response_model", model_labels.name(response)));
                }
                match family {
                    Family::Tokens(index) => tags.push(("gen_ai_token_type", TOKEN_TYPES[index])),
                    Family::Responses(class) => tags.push(("status_class", class.as_str())),
                    _ => {}
                }
                let Ok(id) = hostcalls::define_metric(kind, &stat_name(metric, &tags)) else {
                    return;
                };
                self.defined.borrow_mut().insert(key, id);
                id
            }
        };
        // A metric that cannot be recorded must not fail the request.
        let _ = hostcalls::record_metric(id, value);
    }
}
