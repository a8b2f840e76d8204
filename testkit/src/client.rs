//! HTTP clients: hyper for HTTP/1.1 and h2c behind one send path, and a raw socket where the
//! exact bytes on the wire matter (chunk sizes, duplicated headers, half a body).

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

/// A response as the client saw it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Checks that this is a 200 whose JSON body names `model` as the one that answered.
    pub fn expect_answer_of(&self, model: &str) -> Result<(), String> {
        if self.status != 200 {
            return Err(format!("{model}: {} {}", self.status, self.text()));
        }
        if self.json()?["model"] != model {
            return Err(format!("{model} answered as {}", self.text()));
        }
        Ok(())
    }
}

/// A request body sent as the given frames, one DATA frame or chunk each.
pub struct Frames(VecDeque<Bytes>);

impl Frames {
    pub fn new(frames: impl IntoIterator<Item = Bytes>) -> Self {
        Self(frames.into_iter().collect())
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 over cleartext with prior knowledge.
    H2c,
}

/// A request whose body is sent as the given frames.
pub type Request = hyper::Request<Frames>;

/// Builds a request for either protocol; the body's frames are sent as they are.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: Frames) -> Request {
    // HTTP/2 takes the authority from the URI, HTTP/1.1 from the host header.
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(format!("http://gateway{path}"))
        .header("host", "gateway");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(body).expect("valid request")
}

async fn read_reply(response: hyper::Response<hyper::body::Incoming>) -> Result<Reply, String> {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading response body: {e}"))?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Sends one request on a new connection.
pub async fn send(
    addr: SocketAddr,
    protocol: Protocol,
    request: hyper::Request<Frames>,
) -> Result<Reply, String> {
    Connection::open(addr, protocol).await?.send(request).await
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Frames>),
    Http2(hyper::client::conn::http2::SendRequest<Frames>),
}

/// A client connection: HTTP/1.1 sends requests one after another (keep-alive), h2c carries
/// concurrent streams (see [`Connection::stream`]).
pub struct Connection {
    sender: Sender,
}

impl Connection {
    pub async fn open(addr: SocketAddr, protocol: Protocol) -> Result<Self, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let io = TokioIo::new(stream);
        let sender = match protocol {
            Protocol::Http1 => {
                let (sender, connection) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
                tokio::spawn(connection);
                Sender::Http1(sender)
            }
            Protocol::H2c => {
                let (sender, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .map_err(|e| format!("h2 handshake: {e}"))?;
                tokio::spawn(connection);
                Sender::Http2(sender)
            }
        };
        Ok(Self { sender })
    }

    /// Another handle on the same h2c connection, to send a concurrent stream; `None` for
    /// HTTP/1.1, which carries one request at a time.
    pub fn stream(&self) -> Option<Self> {
        match &self.sender {
            Sender::Http1(_) => None,
            Sender::Http2(sender) => Some(Self {
                sender: Sender::Http2(sender.clone()),
            }),
        }
    }

    pub async fn send(&mut self, request: hyper::Request<Frames>) -> Result<Reply, String> {
        let closed = |e: hyper::Error| format!("connection closed: {e}");
        let response = match &mut self.sender {
            Sender::Http1(sender) => {
                sender.ready().await.map_err(closed)?;
                sender.send_request(origin_form(request)).await
            }
            Sender::Http2(sender) => {
                sender.ready().await.map_err(closed)?;
                sender.send_request(request).await
            }
        }
        .map_err(|e| format!("request failed: {e}"))?;
        read_reply(response).await
    }
}

/// HTTP/1.1 requests name only the path on the request line.
fn origin_form(mut request: hyper::Request<Frames>) -> hyper::Request<Frames> {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = path.parse().expect("valid path");
    request
}

/// Writes `parts` to a new connection one write each (Nagle off), then reads the response.
pub fn raw_exchange(addr: SocketAddr, parts: &[&[u8]]) -> Result<Reply, String> {
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    for part in parts {
        stream.write_all(part).map_err(|e| format!("write: {e}"))?;
    }
    let mut response = Vec::new();
    let mut buffer = [0; 16 * 1024];
    loop {
        if let Ok(reply) = parse_response(&response) {
            return Ok(reply);
        }
        match stream.read(&mut buffer) {
            Ok(0) => return parse_response(&response),
            Ok(n) => response.extend_from_slice(&buffer[..n]),
            Err(e) => return Err(format!("read: {e} after {} bytes", response.len())),
        }
    }
}

/// Parses one complete HTTP/1.1 response (content-length or chunked body).
pub fn parse_response(bytes: &[u8]) -> Result<Reply, String> {
    let head_end = find(bytes, b"\r\n\r\n").ok_or("incomplete response head")?;
    let head = std::str::from_utf8(&bytes[..head_end]).map_err(|e| e.to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("no status line")?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &bytes[head_end + 4..];
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let body = if let Some(length) = get("content-length") {
        let length: usize = length.parse().map_err(|_| "bad content-length")?;
        if rest.len() < length {
            return Err("incomplete body".into());
        }
        rest[..length].to_vec()
    } else if get("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Reply {
        status,
        headers,
        body: Bytes::from(body),
    })
}

fn dechunk(mut bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = find(bytes, b"\r\n").ok_or("incomplete chunk size")?;
        let size_text = std::str::from_utf8(&bytes[..line_end]).map_err(|e| e.to_string())?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if bytes.len() < size + 2 {
            return Err("incomplete chunk".into());
        }
        body.extend_from_slice(&bytes[..size]);
        bytes = &bytes[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A blocking GET on a new connection (admin interfaces, readiness probes): status and body.
pub fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read {addr}{path}: {e}"))?;
    let reply = parse_response(&response)?;
    Ok((reply.status, reply.text()))
}
