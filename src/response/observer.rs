//! Follows one response from its headers to its end: decides from the headers whether and how
//! the body is read (JSON or an event stream), feeds it each chunk once, and makes the
//! [`Report`] of what it said.

use super::sse::{Event, EventStream};
use super::usage::{Document, Field, ModelSlot, ReadError, Scope, Slot, UsageReader};
use super::{Problem, Problems, Report, ResponseModel, StatusClass, Usage};
use crate::request::json::SyntaxError;

/// How a body is read.
enum Body {
    Json(UsageReader, Option<ReadError>),
    Sse(EventStream),
    Unread,
}

/// Token counts and model gathered from a response's documents, the latest value winning.
#[derive(Default)]
struct Tally {
    counts: [Option<u64>; Field::ALL.len()],
    model: Option<ResponseModel>,
    invalid: bool,
    malformed: bool,
    done: bool,
    events: u64,
}

impl Tally {
    /// Takes a document's values: for each count and the model, the first scope that has one
    /// (the document itself, then `response`, then `message`).
    fn take(&mut self, document: &Document) {
        self.invalid |= document.invalid();
        for field in Field::ALL {
            let slot = Scope::ALL
                .iter()
                .map(|&scope| document.scope(scope).tokens[field as usize])
                .find(|slot| *slot != Slot::Absent);
            if let Some(Slot::Count(count)) = slot {
                self.counts[field as usize] = Some(count);
            }
        }
        let model = Scope::ALL
            .iter()
            .map(|&scope| document.scope(scope))
            .find(|values| values.model != ModelSlot::Absent);
        if let Some(values) = model {
            match (values.model, values.model_name()) {
                (ModelSlot::Name, Some(name)) => self.model = Some(ResponseModel::Name(*name)),
                (ModelSlot::TooLong, _) => self.model = Some(ResponseModel::TooLong),
                _ => {}
            }
        }
    }

    fn event(&mut self, event: Event<'_>) {
        self.events += 1;
        match event {
            Event::Document(document) => self.take(document),
            Event::Done => self.done = true,
            Event::Malformed(_) => self.malformed = true,
        }
    }
}

/// Follows one response from its headers to its end. See the module docs.
pub struct ResponseObserver {
    status: u16,
    body: Body,
    tally: Tally,
    problems: Problems,
    /// Content (or, for JSON, any body byte) has been seen.
    content: bool,
}

impl ResponseObserver {
    /// Starts on a response's headers: how the body is read depends on the status, its
    /// `content-type` and `content-encoding`.
    pub fn start(
        status: u16,
        content_type: Option<&[u8]>,
        content_encoding: Option<&[u8]>,
    ) -> Self {
        let mut problems = Problems::default();
        let body = if StatusClass::of(status) != StatusClass::Success {
            Body::Unread
        } else if content_encoding
            .is_some_and(|encoding| !encoding.trim_ascii().eq_ignore_ascii_case(b"identity"))
        {
            problems.insert(Problem::Compressed);
            Body::Unread
        } else {
            match content_type.map(media_type) {
                Some(media) if media.eq_ignore_ascii_case(b"text/event-stream") => {
                    Body::Sse(EventStream::new())
                }
                Some(media) if is_json(media) => Body::Json(UsageReader::new(), None),
                _ => {
                    problems.insert(Problem::NotJson);
                    Body::Unread
                }
            }
        };
        Self {
            status,
            body,
            tally: Tally::default(),
            problems,
            content: false,
        }
    }

    /// Whether the body is read at all (a 2xx JSON or event stream answer).
    pub fn reads_body(&self) -> bool {
        !matches!(self.body, Body::Unread)
    }

    /// Reads the next body chunk; true when it brought the first content (the moment time to
    /// first token ends): for JSON any byte, for a stream the first content-bearing event.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        if chunk.is_empty() {
            return false;
        }
        match &mut self.body {
            Body::Json(reader, failed) => {
                if failed.is_none() {
                    if let Err(error) = reader.feed(chunk) {
                        *failed = Some(error);
                    }
                }
            }
            Body::Sse(stream) => {
                let tally = &mut self.tally;
                stream.feed(chunk, &mut |event| tally.event(event));
                if self.content || !stream.content_seen() {
                    return false;
                }
            }
            Body::Unread => return false,
        }
        !std::mem::replace(&mut self.content, true)
    }

    /// Ends the response: `complete` when it ended normally, false when it was cut off.
    pub fn finish(mut self, complete: bool) -> Report {
        if !complete {
            self.problems.insert(Problem::Incomplete);
        }
        let streamed = matches!(self.body, Body::Sse(_));
        match &mut self.body {
            Body::Json(reader, failed) => {
                let result = match failed {
                    Some(error) => Err(*error),
                    None => reader.finish().map(|document| self.tally.take(document)),
                };
                match result {
                    Ok(()) => {}
                    Err(ReadError::Syntax {
                        kind: SyntaxError::Truncated,
                        ..
                    }) if reader.consumed() > 0 => self.problems.insert(Problem::Truncated),
                    Err(_) => self.problems.insert(Problem::Malformed),
                }
            }
            Body::Sse(stream) => {
                if !stream.finish() {
                    self.problems.insert(Problem::Truncated);
                }
            }
            Body::Unread => {}
        }
        if self.tally.malformed {
            self.problems.insert(Problem::Malformed);
        }
        if self.tally.invalid {
            self.problems.insert(Problem::InvalidUsage);
        }
        let usage = Usage::from_counts(&self.tally.counts);
        if usage.is_empty() && self.reads_body() && self.problems.is_empty() {
            self.problems.insert(Problem::MissingUsage);
        }
        Report {
            status: self.status,
            usage,
            model: self.tally.model.unwrap_or(ResponseModel::None),
            problems: self.problems,
            streamed,
            events: self.tally.events,
        }
    }
}

/// The media type of a `content-type`, without parameters or surrounding space.
fn media_type(content_type: &[u8]) -> &[u8] {
    content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii()
}

/// `application/json` and the `+json` types.
fn is_json(media: &[u8]) -> bool {
    media.eq_ignore_ascii_case(b"application/json")
        || media.len() > 5 && media[media.len() - 5..].eq_ignore_ascii_case(b"+json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::tests::usage;
    use crate::response::usage::ModelName;

    fn observe(content_type: &str, chunks: &[&[u8]], complete: bool) -> Report {
        let mut observer = ResponseObserver::start(200, Some(content_type.as_bytes()), None);
        for chunk in chunks {
            observer.feed(chunk);
        }
        observer.finish(complete)
    }

    #[test]
    fn json_answers_give_their_usage_and_model() {
        let body =
            br#"{"model":"m","usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        for cut in 0..body.len() {
            let report = observe(
                "application/json; charset=utf-8",
                &[&body[..cut], &body[cut..]],
                true,
            );
            assert_eq!(report.usage, usage(3, 2, None, 5));
            assert_eq!(
                report.model,
                ResponseModel::Name({
                    let mut name = ModelName::empty();
                    name.copy_from(b"m");
                    name
                })
            );
            assert!(report.problems.is_empty(), "{:?}", report.problems);
            assert!(!report.streamed);
        }
    }

    #[test]
    fn streams_gather_usage_across_events() {
        let anthropic = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"c\",\"usage\":{\"input_tokens\":4,\"cache_read_input_tokens\":6,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let report = observe("text/event-stream", &[anthropic.as_bytes()], true);
        assert_eq!(report.usage, usage(10, 9, Some(6), 19));
        assert!(report.streamed);
        assert_eq!(report.events, 4);
        assert!(report.problems.is_empty());
    }

    #[test]
    fn the_first_content_is_reported_once() {
        let mut observer = ResponseObserver::start(200, Some(b"text/event-stream"), None);
        assert!(!observer.feed(
            b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"
        ));
        assert!(!observer.feed(b"data: {\"choices\":[{\"delta\":{\"con"));
        assert!(observer.feed(b"tent\":\"Hi\"}}]}\n\n"));
        assert!(!observer.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"!\"}}]}\n\n"));
        let mut observer = ResponseObserver::start(200, Some(b"application/json"), None);
        assert!(!observer.feed(b""));
        assert!(observer.feed(b"{"));
        assert!(!observer.feed(b"}"));
    }

    #[test]
    fn bad_answers_are_reported_not_trusted() {
        let report = observe("application/json", &[b"<html>oops</html>"], true);
        assert!(report.problems.contains(Problem::Malformed));
        assert!(report.usage.is_empty());
        let report = observe(
            "application/json",
            &[br#"{"usage":{"prompt_tokens":3"#],
            true,
        );
        assert!(report.problems.contains(Problem::Truncated));
        assert!(report.usage.is_empty());
        let report = observe(
            "application/json",
            &[br#"{"usage":{"prompt_tokens":"3","completion_tokens":1e9}}"#],
            true,
        );
        assert!(report.problems.contains(Problem::InvalidUsage));
        assert!(report.usage.is_empty());
        let report = observe(
            "text/event-stream",
            &[b"data: {\"usage\":{\"prompt_tokens\":1}}\n\ndata: {\"choi"],
            true,
        );
        assert!(report.problems.contains(Problem::Truncated));
        assert_eq!(report.usage.input, Some(1));
        let report = observe(
            "text/event-stream",
            &[b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n"],
            true,
        );
        assert_eq!(
            report.problems.iter().collect::<Vec<_>>(),
            [Problem::MissingUsage]
        );
        let report = observe("text/event-stream", &[b"data: {\"choices\":[]}\n\n"], false);
        assert!(report.problems.contains(Problem::Incomplete));
        let report = observe("text/plain", &[b"hello"], true);
        assert_eq!(
            report.problems.iter().collect::<Vec<_>>(),
            [Problem::NotJson]
        );
        let report =
            ResponseObserver::start(200, Some(b"application/json"), Some(b"gzip")).finish(true);
        assert_eq!(
            report.problems.iter().collect::<Vec<_>>(),
            [Problem::Compressed]
        );
        // Errors are counted by status, not read.
        let mut observer = ResponseObserver::start(503, Some(b"application/json"), None);
        assert!(!observer.reads_body());
        observer.feed(b"{\"error\":{}}");
        let report = observer.finish(true);
        assert!(report.problems.is_empty());
        assert_eq!(report.status_class(), StatusClass::ServerError);
    }
}
