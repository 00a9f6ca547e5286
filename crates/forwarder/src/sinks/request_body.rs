//! A request body kept as the pieces it is made of, never gathered into one buffer.
//!
//! A batch's records are slices of the bus messages they came in, which the batch holds until
//! it is acked anyway. Building a request by copying them into one buffer held a second copy
//! of every in-flight batch for as long as the request took (`in_flight` × `max_bytes`). The
//! pieces instead are copied into frames of at most [`FRAME`] bytes only as the connection
//! takes them, so a request costs one frame, not one batch. The length is known up front, so
//! the request still carries a `Content-Length` (some collectors refuse chunked bodies).

use std::convert::Infallible;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};

/// Pieces smaller than this are copied together into frames of this size; larger pieces go
/// out as they are.
const FRAME: usize = 64 * 1024;

/// The buffer small written pieces share, taken this many bytes at a time.
const SCRATCH: usize = 16 * 1024;

/// A request body: pieces sent one after another.
#[derive(Clone, Debug, Default)]
pub struct Pieces {
    pieces: Vec<Bytes>,
    len: usize,
    /// Where [`Pieces::push_written`] writes: one allocation for many small pieces.
    scratch: BytesMut,
}

impl Pieces {
    pub fn with_capacity(pieces: usize) -> Self {
        Pieces {
            pieces: Vec::with_capacity(pieces),
            ..Pieces::default()
        }
    }

    /// Appends a piece: shared, not copied.
    pub fn push(&mut self, piece: Bytes) {
        self.len += piece.len();
        self.pieces.push(piece);
    }

    /// Appends a separator or bracket.
    pub fn push_static(&mut self, piece: &'static [u8]) {
        self.push(Bytes::from_static(piece));
    }

    /// Appends a small piece written in place (an envelope head, an action line): such pieces
    /// share buffers instead of being an allocation each.
    pub fn push_written(&mut self, write: impl FnOnce(&mut BytesMut)) {
        if self.scratch.capacity() - self.scratch.len() < SCRATCH / 8 {
            self.scratch.reserve(SCRATCH);
        }
        write(&mut self.scratch);
        let piece = self.scratch.split().freeze();
        self.push(piece);
    }

    /// The body's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces, in order: what a test checks is shared rather than copied.
    #[cfg(test)]
    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// Writes every piece to `out` (a gzip encoder), in order.
    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        self.pieces.iter().try_for_each(|p| out.write_all(p))
    }

    /// The body as reqwest sends it: frames made as the connection asks for them.
    pub fn into_body(self) -> reqwest::Body {
        reqwest::Body::wrap(Framed {
            remaining: self.len as u64,
            pieces: self.pieces.into_iter(),
            held: None,
        })
    }
}

impl From<Vec<u8>> for Pieces {
    fn from(body: Vec<u8>) -> Self {
        let mut pieces = Pieces::with_capacity(1);
        pieces.push(Bytes::from(body));
        pieces
    }
}

/// The pieces, framed lazily.
struct Framed {
    pieces: std::vec::IntoIter<Bytes>,
    /// A piece taken from `pieces` that did not fit in the last frame.
    held: Option<Bytes>,
    remaining: u64,
}

impl Framed {
    fn next_piece(&mut self) -> Option<Bytes> {
        self.held.take().or_else(|| self.pieces.next())
    }

    /// The next frame: a large piece as it is, or small pieces copied together up to FRAME.
    fn next_frame(&mut self) -> Option<Bytes> {
        let first = self.next_piece()?;
        if first.len() >= FRAME {
            return Some(first);
        }
        let mut frame = BytesMut::with_capacity(FRAME);
        frame.extend_from_slice(&first);
        while let Some(piece) = self.next_piece() {
            if frame.len() + piece.len() > FRAME {
                self.held = Some(piece);
                break;
            }
            frame.extend_from_slice(&piece);
        }
        Some(frame.freeze())
    }
}

impl http_body::Body for Framed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = self.next_frame();
        if let Some(f) = &frame {
            self.remaining = self.remaining.saturating_sub(f.len() as u64);
        }
        Poll::Ready(frame.map(|f| Ok(Frame::data(f))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` small records as NDJSON pieces, and the body they make.
    fn ndjson(n: usize) -> (Pieces, Vec<u8>) {
        let mut pieces = Pieces::default();
        let mut whole = Vec::new();
        for i in 0..n {
            let record = Bytes::from(format!("{{\"n\":{i}}}"));
            whole.extend_from_slice(&record);
            whole.push(b'\n');
            pieces.push(record);
            pieces.push_static(b"\n");
        }
        (pieces, whole)
    }

    fn frames(pieces: Pieces) -> Vec<Bytes> {
        let mut framed = Framed {
            remaining: pieces.len as u64,
            pieces: pieces.pieces.into_iter(),
            held: None,
        };
        std::iter::from_fn(|| framed.next_frame()).collect()
    }

    #[test]
    fn frames_hold_every_byte_in_order_and_large_pieces_are_not_copied() {
        let big = Bytes::from(vec![b'x'; FRAME + 10]);
        let (mut pieces, mut whole) = ndjson(1500);
        whole.extend_from_slice(&big);
        pieces.push(big.clone());
        let (rest, rest_whole) = ndjson(1500);
        for p in rest.pieces {
            pieces.push(p);
        }
        whole.extend_from_slice(&rest_whole);
        assert_eq!(pieces.len(), whole.len());
        let frames = frames(pieces);
        assert!(frames
            .iter()
            .all(|f| f.len() <= FRAME || f.len() == big.len()));
        assert!(
            frames.iter().any(|f| f.as_ptr() == big.as_ptr()),
            "the large piece went out as it was"
        );
        assert_eq!(frames.concat(), whole);
        assert!(
            frames.len() < 10,
            "small pieces are framed together: {}",
            frames.len()
        );
    }

    /// What reaches the wire: the request head as a server reads it, and the body after it.
    #[tokio::test]
    async fn the_request_goes_out_with_a_content_length_not_chunked() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 65536];
            // Head, then exactly the announced body.
            let (head, body_len) = loop {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "connection closed before the head ended");
                got.extend_from_slice(&buf[..n]);
                if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse::<usize>().ok());
                    got.drain(..end + 4);
                    break (head, len);
                }
            };
            let body_len = body_len.unwrap_or_else(|| panic!("no Content-Length in\n{head}"));
            while got.len() < body_len {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "connection closed inside the body");
                got.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            (head, got)
        });
        let (pieces, whole) = ndjson(20_000);
        let reply = reqwest::Client::new()
            .post(format!("http://{addr}/ingest"))
            .body(pieces.into_body())
            .send()
            .await
            .unwrap();
        assert!(reply.status().is_success());
        let (head, body) = server.await.unwrap();
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert_eq!(body, whole, "every byte, in order, and nothing else");
    }

    #[test]
    fn written_pieces_share_one_buffer_and_keep_their_order() {
        let mut pieces = Pieces::default();
        for i in 0..100 {
            pieces.push_written(|b| b.extend_from_slice(format!("head {i};").as_bytes()));
            pieces.push_static(b"|");
        }
        let mut whole = Vec::new();
        pieces.write_to(&mut whole).unwrap();
        let expected: String = (0..100).map(|i| format!("head {i};|")).collect();
        assert_eq!(String::from_utf8(whole).unwrap(), expected);
        assert_eq!(pieces.len(), expected.len());
        let (first, second) = (&pieces.pieces()[0], &pieces.pieces()[2]);
        assert_eq!(
            first.as_ptr().wrapping_add(first.len()),
            second.as_ptr(),
            "the second head follows the first in the same buffer"
        );
    }

    #[test]
    fn the_body_announces_its_length() {
        let mut pieces = Pieces::default();
        pieces.push_static(b"[");
        pieces.push(Bytes::from_static(b"{}"));
        pieces.push_static(b"]");
        let body = pieces.into_body();
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(4));
    }
}
