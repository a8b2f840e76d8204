//! The response side, as plain Rust: what each answer cost (tokens by type, the model that
//! answered) and how fast it came, read from the response as it streams through, every byte
//! once, without changing it.
//!
//! [`ResponseObserver`] (in `observer.rs`) is created when a routed request's response headers
//! arrive and fed each body chunk; [`usage`] reads JSON documents and [`sse`] splits event
//! streams into them;
//! [`Report`] and [`Timing`] are what the host layer turns into metrics and filter state;
//! [`labels`] bounds and names the metric labels.

pub mod labels;
mod observer;
pub mod sse;
pub mod usage;

pub use observer::ResponseObserver;
use usage::{Field, ModelName};

/// The per-request values the filter can publish as filter state, for access logs
/// (`%FILTER_STATE(wasm.model_router.<key>:PLAIN)%`) and token budgets. Only the keys the
/// configuration lists are set (`response.filter_state`): each costs Envoy about as much as
/// the rest of the response side together, so none is set by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKey {
    /// The model the request asked for (set when it is routed; the routing header carries it
    /// too, `%REQ(X-AI-EG-MODEL)%`).
    RequestModel,
    /// The model the response names.
    ResponseModel,
    InputTokens,
    OutputTokens,
    CachedTokens,
    /// Input plus output: the amount a token budget charges.
    TotalTokens,
    /// Milliseconds from the end of the request to the first content.
    TimeToFirstTokenMs,
    /// The endpoint the in-filter picker chose (`ip:port`; Envoy's `%UPSTREAM_HOST%` is the
    /// one it dialled, another after a retry).
    PickedEndpoint,
}

impl StateKey {
    pub const ALL: [Self; 8] = [
        Self::RequestModel,
        Self::ResponseModel,
        Self::InputTokens,
        Self::OutputTokens,
        Self::CachedTokens,
        Self::TotalTokens,
        Self::TimeToFirstTokenMs,
        Self::PickedEndpoint,
    ];

    /// The filter state key, under Envoy's `wasm.` prefix.
    pub fn key(self) -> &'static str {
        match self {
            Self::RequestModel => "model_router.request_model",
            Self::ResponseModel => "model_router.response_model",
            Self::InputTokens => "model_router.input_tokens",
            Self::OutputTokens => "model_router.output_tokens",
            Self::CachedTokens => "model_router.cached_tokens",
            Self::TotalTokens => "model_router.total_tokens",
            Self::TimeToFirstTokenMs => "model_router.time_to_first_token_ms",
            Self::PickedEndpoint => "model_router.picked_endpoint",
        }
    }
}

/// A set of [`StateKey`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateKeys(u8);

impl StateKeys {
    pub fn contains(self, key: StateKey) -> bool {
        self.0 & 1 << key as u8 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<StateKey> for StateKeys {
    fn from_iter<I: IntoIterator<Item = StateKey>>(keys: I) -> Self {
        Self(keys.into_iter().fold(0, |set, key| set | 1 << key as u8))
    }
}

impl<'de> serde::Deserialize<'de> for StateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Vec::<StateKey>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

/// The API a request path belongs to, by its last segments (`/v1/...`, `/openai/v1/...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    /// Anthropic's messages API.
    Messages,
    Other,
}

impl Api {
    /// The API of a `:path` (the query string ignored).
    pub fn from_path(path: &[u8]) -> Self {
        let path = path.split(|&b| b == b'?').next().unwrap_or_default();
        if path.ends_with(b"/chat/completions") {
            Self::ChatCompletions
        } else if path.ends_with(b"/completions") {
            Self::Completions
        } else if path.ends_with(b"/embeddings") {
            Self::Embeddings
        } else if path.ends_with(b"/responses") {
            Self::Responses
        } else if path.ends_with(b"/messages") {
            Self::Messages
        } else {
            Self::Other
        }
    }

    /// The OpenTelemetry `gen_ai.operation.name`.
    pub fn operation(self) -> Operation {
        match self {
            Self::ChatCompletions | Self::Responses | Self::Messages => Operation::Chat,
            Self::Completions => Operation::TextCompletion,
            Self::Embeddings => Operation::Embeddings,
            Self::Other => Operation::Other,
        }
    }

    /// Whether its streaming requests take `stream_options.include_usage`.
    pub fn takes_stream_options(self) -> bool {
        matches!(self, Self::ChatCompletions | Self::Completions)
    }
}

/// `gen_ai.operation.name` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Chat,
    TextCompletion,
    Embeddings,
    Other,
}

impl Operation {
    pub const ALL: [Operation; 4] = [
        Self::Chat,
        Self::TextCompletion,
        Self::Embeddings,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::TextCompletion => "text_completion",
            Self::Embeddings => "embeddings",
            Self::Other => "other",
        }
    }
}

/// Something wrong with a response, each counted once per response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A 2xx answer that is neither JSON nor an event stream: not read.
    NotJson,
    /// A 2xx answer with a `content-encoding`: not read.
    Compressed,
    /// A body or event data that is not a JSON object.
    Malformed,
    /// The body ended inside a JSON document, or the stream inside an event.
    Truncated,
    /// The response never ended: reset upstream, or the client went away.
    Incomplete,
    /// A token count or model of the wrong type, or a count beyond [`usage::MAX_TOKENS`].
    InvalidUsage,
    /// A complete 2xx answer that gave no token count at all.
    MissingUsage,
}

impl Problem {
    pub const ALL: [Problem; 7] = [
        Self::NotJson,
        Self::Compressed,
        Self::Malformed,
        Self::Truncated,
        Self::Incomplete,
        Self::InvalidUsage,
        Self::MissingUsage,
    ];

    /// The counter suffix: `model_router.responses_<problem>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotJson => "not_json",
            Self::Compressed => "compressed",
            Self::Malformed => "malformed",
            Self::Truncated => "truncated",
            Self::Incomplete => "incomplete",
            Self::InvalidUsage => "invalid_usage",
            Self::MissingUsage => "missing_usage",
        }
    }
}

/// A set of [`Problem`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Problems(u8);

impl Problems {
    pub fn insert(&mut self, problem: Problem) {
        self.0 |= 1 << problem as u8;
    }

    pub fn contains(self, problem: Problem) -> bool {
        self.0 & 1 << problem as u8 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Problem> {
        Problem::ALL.into_iter().filter(move |p| self.contains(*p))
    }
}

/// Tokens by type, as OpenTelemetry counts them: input includes cached input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: Option<u64>,
    pub output: Option<u64>,
    /// Input read from a prompt cache (a part of `input`).
    pub cached: Option<u64>,
    /// The response's own total, else input plus output.
    pub total: Option<u64>,
}

impl Usage {
    /// The usage that per-field token counts add up to, in any API: Anthropic's
    /// `input_tokens` leaves out cache reads and writes, which are added back; the OpenAI
    /// APIs' input counts include cached tokens already.
    pub fn from_counts(counts: &[Option<u64>; Field::ALL.len()]) -> Self {
        let count = |field: Field| counts[field as usize];
        let cache_read = count(Field::CacheReadInputTokens);
        let cache_creation = count(Field::CacheCreationInputTokens);
        let input = match (count(Field::PromptTokens), count(Field::InputTokens)) {
            (Some(prompt), _) => Some(prompt),
            (None, Some(input)) if cache_read.is_some() || cache_creation.is_some() => {
                Some(input + cache_read.unwrap_or(0) + cache_creation.unwrap_or(0))
            }
            (None, input) => input,
        };
        let output = count(Field::CompletionTokens).or(count(Field::OutputTokens));
        let cached = count(Field::PromptCachedTokens)
            .or(count(Field::InputCachedTokens))
            .or(cache_read);
        let total = count(Field::TotalTokens).or(match (input, output) {
            (Some(input), Some(output)) => Some(input + output),
            (input, output) => input.or(output),
        });
        Self {
            input,
            output,
            cached,
            total,
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The model a response names.
// Inline rather than boxed: one per response, and no allocation on the response path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseModel {
    None,
    Name(ModelName),
    /// Longer than [`usage::MAX_MODEL_BYTES`].
    TooLong,
}

/// What one response said, once it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub status: u16,
    pub usage: Usage,
    pub model: ResponseModel,
    pub problems: Problems,
    /// An event stream (time per output token applies).
    pub streamed: bool,
    /// Events read from an event stream.
    pub events: u64,
}

impl Report {
    /// `2xx`, `4xx`...: the status class label.
    pub fn status_class(&self) -> StatusClass {
        StatusClass::of(self.status)
    }
}

/// HTTP status classes, as metric label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
}

impl StatusClass {
    pub const ALL: [StatusClass; 5] = [
        Self::Informational,
        Self::Success,
        Self::Redirection,
        Self::ClientError,
        Self::ServerError,
    ];

    pub fn of(status: u16) -> Self {
        match status {
            200..=299 => Self::Success,
            300..=399 => Self::Redirection,
            400..=499 => Self::ClientError,
            0..=199 => Self::Informational,
            _ => Self::ServerError,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Informational => "1xx",
            Self::Success => "2xx",
            Self::Redirection => "3xx",
            Self::ClientError => "4xx",
            Self::ServerError => "5xx",
        }
    }
}

/// When a request was routed, its first content arrived and its response ended, in host
/// clock nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    pub routed: u64,
    pub first_content: Option<u64>,
    pub end: Option<u64>,
}

impl Timing {
    /// Time to first token, in milliseconds.
    pub fn time_to_first_token_ms(&self) -> Option<u64> {
        Some(self.first_content?.saturating_sub(self.routed) / 1_000_000)
    }

    /// From routing to the end of the response, in milliseconds.
    pub fn duration_ms(&self) -> Option<u64> {
        Some(self.end?.saturating_sub(self.routed) / 1_000_000)
    }

    /// Time per output token after the first, in microseconds: for streams of at least two
    /// output tokens.
    pub fn time_per_output_token_us(&self, output_tokens: Option<u64>) -> Option<u64> {
        let after_first = output_tokens?.checked_sub(1).filter(|n| *n > 0)?;
        let span = self.end?.saturating_sub(self.first_content?);
        Some(span / 1_000 / after_first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A usage with every count given (also for the observer's tests).
    pub(super) fn usage(input: u64, output: u64, cached: Option<u64>, total: u64) -> Usage {
        Usage {
            input: Some(input),
            output: Some(output),
            cached,
            total: Some(total),
        }
    }

    #[test]
    fn apis_are_told_by_their_path() {
        assert_eq!(
            Api::from_path(b"/v1/chat/completions?x=1"),
            Api::ChatCompletions
        );
        assert_eq!(Api::from_path(b"/v1/completions"), Api::Completions);
        assert_eq!(Api::from_path(b"/openai/v1/embeddings"), Api::Embeddings);
        assert_eq!(Api::from_path(b"/v1/responses"), Api::Responses);
        assert_eq!(Api::from_path(b"/v1/messages"), Api::Messages);
        assert_eq!(Api::from_path(b"/v1/models"), Api::Other);
        assert_eq!(Api::Messages.operation().as_str(), "chat");
        assert!(Api::Completions.takes_stream_options());
        assert!(!Api::Responses.takes_stream_options());
    }

    #[test]
    fn usage_adds_up_in_every_api() {
        let counts = |pairs: &[(Field, u64)]| {
            let mut counts = [None; Field::ALL.len()];
            for &(field, n) in pairs {
                counts[field as usize] = Some(n);
            }
            Usage::from_counts(&counts)
        };
        use Field::*;
        assert_eq!(
            counts(&[
                (PromptTokens, 10),
                (CompletionTokens, 5),
                (TotalTokens, 15),
                (PromptCachedTokens, 4)
            ]),
            usage(10, 5, Some(4), 15)
        );
        assert_eq!(
            counts(&[(InputTokens, 10), (OutputTokens, 5), (InputCachedTokens, 2)]),
            usage(10, 5, Some(2), 15)
        );
        // Anthropic's input_tokens leave out the cache.
        assert_eq!(
            counts(&[
                (InputTokens, 10),
                (OutputTokens, 5),
                (CacheReadInputTokens, 7),
                (CacheCreationInputTokens, 3)
            ]),
            usage(20, 5, Some(7), 25)
        );
        let embeddings = counts(&[(PromptTokens, 8), (TotalTokens, 8)]);
        assert_eq!(
            (embeddings.input, embeddings.output, embeddings.total),
            (Some(8), None, Some(8))
        );
        assert!(counts(&[]).is_empty());
    }

    #[test]
    fn timing_is_measured_from_routing() {
        let timing = Timing {
            routed: 1_000_000_000,
            first_content: Some(1_250_400_000),
            end: Some(2_250_400_000),
        };
        assert_eq!(timing.time_to_first_token_ms(), Some(250));
        assert_eq!(timing.duration_ms(), Some(1250));
        assert_eq!(timing.time_per_output_token_us(Some(101)), Some(10_000));
        assert_eq!(timing.time_per_output_token_us(Some(1)), None);
        assert_eq!(timing.time_per_output_token_us(None), None);
        assert_eq!(Timing::default().time_to_first_token_ms(), None);
        assert_eq!(StatusClass::of(204).as_str(), "2xx");
        assert_eq!(StatusClass::of(429).as_str(), "4xx");
    }

    #[test]
    fn state_keys_are_a_set_read_from_their_names() {
        let keys: StateKeys = serde_json::from_str(r#"["total_tokens", "input_tokens"]"#).unwrap();
        for key in StateKey::ALL {
            let wanted = matches!(key, StateKey::TotalTokens | StateKey::InputTokens);
            assert_eq!(keys.contains(key), wanted, "{key:?}");
            assert!(key.key().starts_with("model_router."));
        }
        assert!(StateKeys::default().is_empty());
    }
}
