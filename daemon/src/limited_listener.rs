//! A TCP listener that holds at most `connections_max` connections open: further connections
//! wait in the kernel's accept queue until one closes.
//!
//! A connection that neither sends nor receives a byte for `idle_timeout` is closed (its reads
//! end as if the client had closed it), so idle keep-alive connections cannot hold every slot
//! and leave new clients waiting forever. The idle timeout is longer than the request timeout,
//! and every request is answered within that, so a connection idle that long has no request in
//! flight.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle_timeout: Duration,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, connections_max: usize, idle_timeout: Duration) -> Self {
        LimitedListener {
            inner,
            permits: Arc::new(Semaphore::new(connections_max.max(1))),
            idle_timeout,
        }
    }
}

/// A connection that gives its permit back when dropped and ends after `idle_timeout` without
/// traffic.
pub struct LimitedStream {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle_timeout: Duration,
    idle_deadline: Pin<Box<Sleep>>,
}

impl LimitedStream {
    fn touch(&mut self) {
        let deadline = Instant::now() + self.idle_timeout;
        self.idle_deadline.as_mut().reset(deadline);
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed, so acquiring only waits.
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("connection semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((stream, address)) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        LimitedStream {
                            inner: stream,
                            _permit: permit,
                            idle_timeout: self.idle_timeout,
                            idle_deadline: Box::pin(tokio::time::sleep(self.idle_timeout)),
                        },
                        address,
                    );
                }
                Err(error) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!("accept failed: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let filled = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > filled {
                    self.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.idle_deadline.as_mut().poll(cx) {
                // End of stream: hyper closes the connection as if the client had.
                Poll::Ready(()) => {
                    metrics::counter!("agentd_connections_idle_closed_total").increment(1);
                    Poll::Ready(Ok(()))
                }
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        written
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
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        written
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair(idle: Duration) -> (LimitedStream, TcpStream) {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = inner.local_addr().unwrap();
        let mut listener = LimitedListener::new(inner, 4, idle);
        let client = TcpStream::connect(address).await.unwrap();
        let (server, _) = listener.accept().await;
        (server, client)
    }

    #[tokio::test]
    async fn a_silent_connection_ends_after_the_idle_timeout() {
        let (mut server, _client) = pair(Duration::from_millis(150)).await;
        let started = std::time::Instant::now();
        let mut buf = [0u8; 16];
        let read = server.read(&mut buf).await.unwrap();
        assert_eq!(read, 0, "an idle connection reads as closed");
        assert!(started.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn traffic_keeps_a_connection_open() {
        let (mut server, mut client) = pair(Duration::from_millis(300)).await;
        let mut buf = [0u8; 16];
        // Five exchanges 100 ms apart: 500 ms in all, longer than the idle timeout.
        for round in 0..5u8 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.write_all(&[round]).await.unwrap();
            assert_eq!(server.read(&mut buf).await.unwrap(), 1);
            assert_eq!(buf[0], round);
            server.write_all(b"ok").await.unwrap();
            let mut answer = [0u8; 2];
            client.read_exact(&mut answer).await.unwrap();
        }
        // Then silence: it ends.
        assert_eq!(server.read(&mut buf).await.unwrap(), 0);
    }
}
