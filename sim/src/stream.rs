//! Streamed answers: server-sent events written one frame each at the pool's pace, and the
//! ways a stream can break on purpose (cut inside an event, or the connection reset).

use crate::api::{InFlight, ResponseBody};
use crate::faults::Fault;
use crate::{Replica, REPLICA_HEADER};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;
use serde_json::Value;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// The event a broken stream breaks in, and how many of its bytes are sent (it breaks inside
/// its first line, whatever the event).
const BREAK_AT_EVENT: u64 = 3;
const BREAK_AFTER_BYTES: usize = 12;

/// What the body of a streamed answer is made of.
enum Piece {
    Data(Bytes),
    /// Ends the response with an error: hyper drops the connection mid-body.
    Abort,
}

/// Writes the events of one streamed answer.
pub struct Events {
    sender: mpsc::Sender<Piece>,
    ttft: Duration,
    tpot: Duration,
    tokens_sent: u64,
    events_sent: u64,
    fault: Fault,
    _in_flight: InFlight,
}

impl Events {
    /// Starts an event-stream response; `write` then sends its events from a task of its own.
    pub fn respond<F, Fut>(replica: &Arc<Replica>, fault: Fault, write: F) -> Response<ResponseBody>
    where
        F: FnOnce(Events) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (sender, receiver) = mpsc::channel(16);
        let events = Events {
            sender,
            ttft: replica.config.time_to_first_token,
            tpot: replica.config.time_per_output_token,
            tokens_sent: 0,
            events_sent: 0,
            fault,
            _in_flight: InFlight::new(replica),
        };
        tokio::spawn(write(events));
        let mut response = Response::new(ChannelBody(receiver).boxed());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(
            REPLICA_HEADER,
            HeaderValue::from_str(&replica.id).expect("replica id"),
        );
        response
    }

    /// Waits for the next token: the time to first token before the first, the time per
    /// output token before the others.
    pub async fn pace_token(&mut self) {
        let delay = if self.tokens_sent == 0 {
            self.ttft
        } else {
            self.tpot
        };
        self.tokens_sent += 1;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// Sends one event (`event:` line when named, one `data:` line); false once the client
    /// has gone or the stream broke on purpose.
    pub async fn send(&mut self, name: Option<&str>, data: &Value) -> bool {
        let mut text = String::new();
        if let Some(name) = name {
            text.push_str(&format!("event: {name}\n"));
        }
        text.push_str(&format!("data: {data}\n\n"));
        self.send_text(text).await
    }

    /// Sends OpenAI's end marker.
    pub async fn done(&mut self) -> bool {
        self.send_text("data: [DONE]\n\n".to_owned()).await
    }

    async fn send_text(&mut self, text: String) -> bool {
        self.events_sent += 1;
        if self.events_sent == BREAK_AT_EVENT
            && matches!(self.fault, Fault::CutStream | Fault::ResetStream)
        {
            let half = Bytes::from(text.into_bytes()).slice(..BREAK_AFTER_BYTES);
            let _ = self.sender.send(Piece::Data(half)).await;
            if self.fault == Fault::ResetStream {
                let _ = self.sender.send(Piece::Abort).await;
            }
            return false;
        }
        self.sender
            .send(Piece::Data(Bytes::from(text)))
            .await
            .is_ok()
    }
}

/// The error that aborts a stream.
#[derive(Debug)]
pub struct Aborted;

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stream aborted by fault injection")
    }
}

impl std::error::Error for Aborted {}

/// A response body fed by a channel, one frame per piece.
struct ChannelBody(mpsc::Receiver<Piece>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = crate::api::BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|piece| match piece {
            Some(Piece::Data(data)) => Some(Ok(Frame::data(data))),
            Some(Piece::Abort) => Some(Err(Box::new(Aborted) as Self::Error)),
            None => None,
        })
    }
}
