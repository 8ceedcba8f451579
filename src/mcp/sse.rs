//! Server-sent event streams as MCP uses them: rewriting one event in flight (the answer to a
//! list request) without buffering the stream, and closing a stream that stays idle.
//!
//! [`Rewrite`] splits the upstream's bytes into events at blank lines, hands each event's
//! `data` to a function that may replace it, and passes everything else on as it came. An
//! event larger than its bound ends the stream with an error (never an unbounded buffer).
//! [`Idle`] ends a stream on which nothing arrived for a while.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame};

use crate::proxy::{BoxError, ProxyBody};

/// Rewrites the `data` of events; see the module documentation.
pub struct Rewrite<F> {
    inner: ProxyBody,
    buf: BytesMut,
    out: VecDeque<Bytes>,
    rewrite: F,
    max_event: usize,
    ended: bool,
}

impl<F: FnMut(&str) -> Option<String> + Send + Unpin> Rewrite<F> {
    /// Wraps `inner`; `rewrite` gets each event's data (its `data:` lines joined by `\n`) and
    /// returns a replacement, or `None` to pass the event on unchanged.
    pub fn new(inner: ProxyBody, max_event: usize, rewrite: F) -> Self {
        Rewrite {
            inner,
            buf: BytesMut::new(),
            out: VecDeque::new(),
            rewrite,
            max_event,
            ended: false,
        }
    }

    /// Moves every complete event from the buffer to the output.
    fn drain_events(&mut self) {
        while let Some(end) = event_end(&self.buf) {
            let event = self.buf.split_to(end).freeze();
            let processed = self.process(event);
            self.out.push_back(processed);
        }
    }

    fn process(&mut self, event: Bytes) -> Bytes {
        let Ok(text) = std::str::from_utf8(&event) else {
            return event;
        };
        let mut data: Vec<&str> = Vec::new();
        let mut other: Vec<&str> = Vec::new();
        for line in text
            .split_inclusive(['\n'])
            .map(|l| l.trim_end_matches(['\r', '\n']))
        {
            if line.is_empty() {
                continue;
            }
            match line.strip_prefix("data:") {
                Some(d) => data.push(d.strip_prefix(' ').unwrap_or(d)),
                None => other.push(line),
            }
        }
        if data.is_empty() {
            return event;
        }
        let Some(new) = (self.rewrite)(&data.join("\n")) else {
            return event;
        };
        let mut rebuilt = String::with_capacity(new.len() + 64);
        for line in other {
            rebuilt.push_str(line);
            rebuilt.push_str("\r\n");
        }
        for line in new.split('\n') {
            rebuilt.push_str("data: ");
            rebuilt.push_str(line);
            rebuilt.push_str("\r\n");
        }
        rebuilt.push_str("\r\n");
        Bytes::from(rebuilt)
    }
}

/// The end (exclusive) of the first complete event: just past its blank line.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        // A line ends at \n, \r\n or \r; an event ends at an empty line.
        let line_end = |j: usize| -> Option<usize> {
            match buf.get(j) {
                Some(b'\n') => Some(j + 1),
                Some(b'\r') if buf.get(j + 1) == Some(&b'\n') => Some(j + 2),
                Some(b'\r') if j + 1 < buf.len() => Some(j + 1),
                _ => None,
            }
        };
        if let Some(after) = line_end(i)
            && let Some(end) = line_end(after)
        {
            return Some(end);
        }
        i += 1;
    }
    None
}

impl<F: FnMut(&str) -> Option<String> + Send + Unpin> Body for Rewrite<F> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(b) = self.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if self.ended {
                if self.buf.is_empty() {
                    return Poll::Ready(None);
                }
                // A last event without its blank line: pass it on as it is.
                let rest = self.buf.split().freeze();
                return Poll::Ready(Some(Ok(Frame::data(rest))));
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => self.ended = true,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        self.buf.extend_from_slice(&data);
                        self.drain_events();
                        if self.buf.len() > self.max_event {
                            return Poll::Ready(Some(Err(format!(
                                "an event of the MCP server's stream is larger than {} bytes",
                                self.max_event
                            )
                            .into())));
                        }
                    }
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                },
            }
        }
    }
}

/// Ends a stream on which nothing arrived for `limit`.
pub struct Idle {
    inner: ProxyBody,
    limit: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Idle {
    /// Wraps `inner`.
    pub fn new(inner: ProxyBody, limit: Duration) -> Idle {
        Idle {
            inner,
            limit,
            sleep: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl Body for Idle {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                let deadline = tokio::time::Instant::now() + self.limit;
                self.sleep.as_mut().reset(deadline);
                Poll::Ready(r)
            }
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    Poll::Ready(Some(Err("the event stream was idle too long".into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    async fn run(chunks: &[&str], max: usize) -> Result<String, String> {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from(c.to_string()))))
            .collect();
        let inner: ProxyBody = StreamBody::new(Iter(frames.into_iter())).boxed();
        let body = Rewrite::new(inner, max, |data: &str| {
            data.contains("\"id\":7")
                .then(|| data.replace("secret", "hidden"))
        });
        body.collect()
            .await
            .map(|c| String::from_utf8(c.to_bytes().to_vec()).unwrap())
            .map_err(|e| e.to_string())
    }

    struct Iter<T>(std::vec::IntoIter<T>);
    impl<T> futures_core::Stream for Iter<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<T>> {
            Poll::Ready(self.0.next())
        }
    }
    impl<T> Unpin for Iter<T> {}

    #[test]
    fn events_are_found_across_chunks_and_line_endings() {
        assert_eq!(event_end(b"data: x\n\n"), Some(9));
        assert_eq!(event_end(b"data: x\r\n\r\nmore"), Some(11));
        assert_eq!(event_end(b"data: x\r\rmore"), Some(9));
        assert_eq!(event_end(b"data: x\n"), None);
        assert_eq!(
            event_end(b"data: x\r\n\r"),
            None,
            "\\r at the end may be \\r\\n"
        );
    }

    #[tokio::test]
    async fn only_the_matching_event_is_rewritten_the_rest_passes_unchanged() {
        let out = run(
            &[
                "event: message\r\ndata: {\"method\":\"notifications/progress\",\"x\":\"secret\"}\r\n\r\n",
                "event: message\r\ndata: {\"id\":7,",
                "\"result\":\"secret\"}\r\n\r\n: ping\r\n\r\n",
            ],
            1 << 20,
        )
        .await
        .unwrap();
        assert!(out.starts_with("event: message\r\ndata: {\"method\":\"notifications/progress\",\"x\":\"secret\"}\r\n\r\n"), "{out}");
        assert!(
            out.contains("event: message\r\ndata: {\"id\":7,\"result\":\"hidden\"}\r\n\r\n"),
            "{out}"
        );
        assert!(out.ends_with(": ping\r\n\r\n"), "{out}");
    }

    #[tokio::test]
    async fn an_event_over_the_bound_ends_the_stream() {
        let big = format!("data: {}", "x".repeat(5000));
        assert!(run(&[&big], 1000).await.is_err());
    }
}
