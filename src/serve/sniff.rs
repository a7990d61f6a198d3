//! The first bytes of a connection, read before the HTTP/1 server sees
//! them: an HTTP/2 client that starts with the connection preface
//! (RFC 9113 section 3.4) gets a 505 reply instead of a silent close. The
//! bytes read are handed on unchanged ([`Prefixed`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface.
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The whole HTTP/2 preface.
    Http2,
    /// Not (or no longer) a prefix of the preface: HTTP/1 or garbage.
    Other,
    /// A proper prefix of the preface: more bytes are needed to tell.
    Undecided,
}

/// Classifies the bytes a connection started with.
pub fn classify(start: &[u8]) -> Start {
    let n = start.len().min(H2_PREFACE.len());
    if start[..n] != H2_PREFACE[..n] {
        Start::Other
    } else if n == H2_PREFACE.len() {
        Start::Http2
    } else {
        Start::Undecided
    }
}

/// Reads until [`classify`] decides (at most 24 bytes) or the peer stops
/// sending; returns the bytes read. Bound it with a timeout.
pub async fn read_start<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<(Vec<u8>, Start)> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut n = 0;
    loop {
        let got = io.read(&mut buf[n..]).await?;
        n += got;
        let start = classify(&buf[..n]);
        if got == 0 || start != Start::Undecided {
            return Ok((buf[..n].to_vec(), start));
        }
    }
}

/// The 505 reply to an HTTP/2 preface.
pub const H2_REPLY: &[u8] = b"HTTP/1.1 505 HTTP Version Not Supported\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 39\r\nConnection: close\r\n\r\n\
only HTTP/1.0 and HTTP/1.1 are served\r\n";

/// `inner` with `prefix` read first.
pub struct Prefixed<I> {
    prefix: Vec<u8>,
    at: usize,
    inner: I,
}

impl<I> Prefixed<I> {
    pub fn new(prefix: Vec<u8>, inner: I) -> Self {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let rest = &this.prefix[this.at..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_tells_the_preface_from_http1() {
        assert_eq!(classify(H2_PREFACE), Start::Http2);
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nextra"),
            Start::Http2
        );
        assert_eq!(classify(b"PRI * HT"), Start::Undecided);
        assert_eq!(classify(b""), Start::Undecided);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Start::Other);
        assert_eq!(classify(b"PUT"), Start::Other);
        assert_eq!(classify(b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n"), Start::Other);
    }

    #[test]
    fn reply_length_matches_its_body() {
        let text = std::str::from_utf8(H2_REPLY).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
    }

    #[test]
    fn prefixed_reads_the_prefix_then_the_rest() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut a, b) = tokio::io::duplex(64);
            tokio::io::AsyncWriteExt::write_all(&mut a, b"TTP/1.1")
                .await
                .unwrap();
            drop(a);
            let mut p = Prefixed::new(b"GET / H".to_vec(), b);
            let mut all = Vec::new();
            p.read_to_end(&mut all).await.unwrap();
            assert_eq!(all, b"GET / HTTP/1.1");
        });
    }
}
