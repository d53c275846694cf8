//! `icemaint bench latency-proxy`: a TCP proxy on the loopback interface that adds network
//! latency in front of a local server (`bench/run.sh --s3-latency-ms`).
//!
//! Every byte is forwarded unchanged (S3 SigV4 signatures cover the Host header the client sent,
//! which the proxy does not touch), each direction delayed by half the latency: a
//! request-response exchange waits `latency` longer, as over a link with that round-trip time,
//! while a long transfer streams at full speed after its first byte (each direction is a delay
//! line, not a pause per chunk). A new connection waits one more round trip, as a TCP handshake
//! would. Order within a connection is kept.
//!
//! It counts the connections it made upstream and the requests it saw (a request: the client
//! starts sending again after the server answered; exact for HTTP/1.1 without pipelining) and
//! the bytes each way. Both the listening and the upstream address must be loopback addresses:
//! it is a measurement tool, never a relay to anywhere else.
//!
//! It replaced a Python asyncio proxy that used 3-6 CPU-s of the machine's two cores per
//! compaction, CPU the measured run then lacked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Largest read: large reads keep the proxy's CPU small next to the client's and the server's.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight per direction (up to 16 MiB): a slow reader holds back its sender.
const IN_FLIGHT: usize = 64;

/// Why the proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0} is not a loopback address (the proxy listens and connects on 127.0.0.1 only)")]
    NotLoopback(SocketAddr),
    #[error("latency must be a finite number of milliseconds >= 0, not {0}")]
    Latency(f64),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the proxy forwarded (printed as JSON when it stops; `bench/README.md` quotes it).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyCounts {
    pub connections: u64,
    pub requests: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

/// A bound proxy; [`LatencyProxy::run`] serves until cancelled.
pub struct LatencyProxy {
    listener: TcpListener,
    upstream: SocketAddr,
    one_way: Duration,
    counters: Arc<Counters>,
}

impl LatencyProxy {
    /// Listens on `listen` (port 0: a free one) for connections to forward to `upstream`,
    /// adding `latency_ms` of round-trip time.
    pub async fn bind(
        listen: SocketAddr,
        upstream: SocketAddr,
        latency_ms: f64,
    ) -> Result<Self, ProxyError> {
        for addr in [listen, upstream] {
            if !addr.ip().is_loopback() {
                return Err(ProxyError::NotLoopback(addr));
            }
        }
        if !latency_ms.is_finite() || latency_ms < 0.0 {
            return Err(ProxyError::Latency(latency_ms));
        }
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ProxyError::Bind {
                addr: listen,
                source,
            })?;
        Ok(Self {
            listener,
            upstream,
            one_way: Duration::from_secs_f64(latency_ms / 2000.0),
            counters: Arc::default(),
        })
    }

    /// The address it accepts connections on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Forwards connections until `stop` is cancelled; connections still open then are dropped.
    pub async fn run(self, stop: CancellationToken) -> ProxyCounts {
        let mut connections = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            while connections.try_join_next().is_some() {}
            // A failed accept (a connection reset before it was accepted, too many open files)
            // concerns that connection only.
            let Ok((client, _)) = accepted else { continue };
            connections.spawn(connection(
                client,
                self.upstream,
                self.one_way,
                self.counters.clone(),
            ));
        }
        connections.shutdown().await;
        let c = &self.counters;
        ProxyCounts {
            connections: c.connections.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            bytes_up: c.bytes_up.load(Ordering::Relaxed),
            bytes_down: c.bytes_down.load(Ordering::Relaxed),
        }
    }
}

/// One client connection: the handshake's round trip, then both directions until each ends.
async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    one_way: Duration,
    counters: Arc<Counters>,
) {
    tokio::time::sleep(one_way * 2).await;
    // Upstream refused: dropping the client closes it, as the Python proxy did.
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    counters.connections.fetch_add(1, Ordering::Relaxed);
    // The delay is the proxy's to add; Nagle's algorithm would add its own on small writes.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // Which direction sent last (true: up); starts "down" so the first upload is a request.
    let turn = Arc::new(AtomicBool::new(false));
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    tokio::join!(
        pump(
            client_r,
            server_w,
            one_way,
            turn.clone(),
            true,
            counters.clone()
        ),
        pump(server_r, client_w, one_way, turn, false, counters),
    );
}

/// Copies `from` to `to`, each chunk written `delay` after it was read, in order; end of input
/// (or a read error) becomes a write shutdown, so half-closed connections behave as without
/// the proxy.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    turn: Arc<AtomicBool>,
    up: bool,
    counters: Arc<Counters>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
    let read = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = from.read(&mut buf).await.unwrap_or(0);
            if n > 0 && turn.swap(up, Ordering::Relaxed) != up && up {
                counters.requests.fetch_add(1, Ordering::Relaxed);
            }
            let bytes = if up {
                &counters.bytes_up
            } else {
                &counters.bytes_down
            };
            bytes.fetch_add(n as u64, Ordering::Relaxed);
            // Exactly n bytes queued, not a CHUNK-sized buffer per small read.
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .await
                .is_err()
                || n == 0
            {
                return;
            }
        }
    };
    let write = async move {
        while let Some((due, data)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if data.is_empty() {
                let _ = to.shutdown().await;
                return;
            }
            if to.write_all(&data).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(read, write);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that answers each chunk it reads with the same bytes (an echo server).
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn start(
        latency_ms: f64,
    ) -> (
        SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<ProxyCounts>,
    ) {
        let upstream = echo_server().await;
        let proxy = LatencyProxy::bind("127.0.0.1:0".parse().unwrap(), upstream, latency_ms)
            .await
            .unwrap();
        let addr = proxy.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(proxy.run(stop.clone()));
        (addr, stop, task)
    }

    /// A request-response exchange waits the handshake's round trip plus one more, and a large
    /// transfer arrives intact, in order, streaming (not a delay per chunk).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delays_each_round_trip_and_forwards_bytes_intact() {
        let (addr, stop, task) = start(200.0).await;
        let start = std::time::Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).await.unwrap();
        let first = start.elapsed();
        assert_eq!(&got, b"ping");
        // Handshake (200 ms) + request and response (100 ms each way). The upper bounds are
        // loose on purpose: a loaded CI machine must not fail a test about delays.
        assert!(first >= Duration::from_millis(400), "{first:?}");
        assert!(first < Duration::from_millis(3000), "{first:?}");

        // 8 MiB of a pattern: 32 chunks of 256 KiB, each delayed 100 ms each way; as a delay line
        // that is ~200 ms in all, not 32 x 200 ms.
        let payload: Vec<u8> = (0..8 * 1024 * 1024u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let (mut r, mut w) = s.into_split();
        let sent = payload.clone();
        let t = std::time::Instant::now();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        let bulk = t.elapsed();
        assert!(back == payload, "bytes changed on the way");
        assert!(bulk >= Duration::from_millis(200), "{bulk:?}");
        assert!(bulk < Duration::from_millis(4000), "{bulk:?}");

        stop.cancel();
        let counts = task.await.unwrap();
        let total = 4 + payload.len() as u64;
        assert_eq!(
            counts,
            ProxyCounts {
                connections: 1,
                requests: counts.requests,
                bytes_up: total,
                bytes_down: total,
            }
        );
        // "ping" then the bulk after its answer: at least two requests (the bulk's echo may
        // interleave with its upload and count more turns).
        assert!(counts.requests >= 2, "{counts:?}");
    }

    #[tokio::test]
    async fn zero_latency_forwards_and_other_addresses_are_refused() {
        let (addr, stop, task) = start(0.0).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"abc").await.unwrap();
        let mut got = [0u8; 3];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abc");
        stop.cancel();
        assert_eq!(task.await.unwrap().requests, 1);

        let loopback: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let other: SocketAddr = "10.0.0.1:80".parse().unwrap();
        for (listen, up, ms) in [(other, loopback, 1.0), (loopback, other, 1.0)] {
            assert!(matches!(
                LatencyProxy::bind(listen, up, ms).await,
                Err(ProxyError::NotLoopback(_))
            ));
        }
        assert!(matches!(
            LatencyProxy::bind("127.0.0.1:0".parse().unwrap(), loopback, -1.0).await,
            Err(ProxyError::Latency(_))
        ));
    }
}
