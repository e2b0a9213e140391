//! [`PeerTable`] and [`PeerStream`]: TCP connections per peer address and
//! in all, unauthenticated ones in a budget of their own where the newest
//! evicts the oldest.

use std::collections::HashMap;
use std::future::Future as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// TCP connections open per peer address, and in all, in two budgets.
///
/// A connection is *unauthenticated* from accept until its TLS handshake
/// completes with a client certificate: while it handshakes, and for its
/// grace if it presented none. These take a small budget of their own
/// (`unauthenticated_per_peer` per address, `unauthenticated` in all), and
/// when it is full a new connection evicts the oldest unauthenticated one
/// (of its own address, if that address's share is full; else of all)
/// rather than being refused: idle connections cannot lock newcomers out,
/// and to hold the budget an attacker must reconnect faster than the
/// budget per handshake. A connection whose handshake brought a client
/// certificate moves to the *authenticated* budget (`per_peer` per
/// address, `total` less the unauthenticated budget in all), or is closed
/// if that is full.
#[derive(Debug)]
pub struct PeerTable {
    limits: PeerLimits,
    open: Arc<Mutex<Peers>>,
}

/// The caps of a [`PeerTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// Authenticated connections per peer address.
    pub per_peer: usize,
    /// Connections in all, both budgets.
    pub total: usize,
    /// Unauthenticated connections per peer address.
    pub unauthenticated_per_peer: usize,
    /// Unauthenticated connections in all (part of `total`).
    pub unauthenticated: usize,
}

#[derive(Debug, Default)]
struct Peers {
    by_address: HashMap<IpAddr, PeerCount>,
    authenticated: usize,
    /// Unauthenticated connections by admission order (oldest first), each
    /// with its peer and the sender that evicts it when dropped.
    unauthenticated: std::collections::BTreeMap<u64, (IpAddr, tokio::sync::oneshot::Sender<()>)>,
    next: u64,
    evicted: u64,
}

#[derive(Debug, Default)]
struct PeerCount {
    authenticated: usize,
    /// The ids of this address's unauthenticated connections, oldest first.
    unauthenticated: std::collections::BTreeSet<u64>,
}

impl Peers {
    /// Evicts unauthenticated connection `id` (its stream fails its next
    /// read or write, and is woken for it), freeing its place at once.
    fn evict(&mut self, id: u64) {
        if let Some((peer, _evicts)) = self.unauthenticated.remove(&id) {
            self.forget(peer, id);
            self.evicted += 1;
        }
    }

    fn forget(&mut self, peer: IpAddr, id: u64) {
        if let Some(count) = self.by_address.get_mut(&peer) {
            count.unauthenticated.remove(&id);
            if count.authenticated == 0 && count.unauthenticated.is_empty() {
                self.by_address.remove(&peer);
            }
        }
    }
}

impl PeerTable {
    /// An empty table with `limits`.
    pub fn new(limits: PeerLimits) -> PeerTable {
        PeerTable { limits, open: Arc::default() }
    }

    /// Admits `stream` as unauthenticated, evicting the oldest
    /// unauthenticated connection of its address (if the address holds its
    /// share) or of all (if the budget is full) to make room; `None` only
    /// if its peer address cannot be read or the budget is zero.
    pub fn admit(&self, stream: TcpStream) -> Option<PeerStream> {
        let peer = stream.peer_addr().ok()?.ip();
        let limits = self.limits;
        if limits.unauthenticated == 0 || limits.unauthenticated_per_peer == 0 {
            return None;
        }
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let own_oldest = open
            .by_address
            .get(&peer)
            .filter(|c| c.unauthenticated.len() >= limits.unauthenticated_per_peer)
            .and_then(|c| c.unauthenticated.first().copied());
        if let Some(id) = own_oldest {
            open.evict(id);
        } else if open.unauthenticated.len() >= limits.unauthenticated
            && let Some(id) = open.unauthenticated.keys().next().copied()
        {
            open.evict(id);
        }
        let id = open.next;
        open.next += 1;
        let (evicts, evicted) = tokio::sync::oneshot::channel();
        open.unauthenticated.insert(id, (peer, evicts));
        open.by_address.entry(peer).or_default().unauthenticated.insert(id);
        drop(open);
        Some(PeerStream {
            inner: stream,
            peer,
            id,
            standing: Standing::Unauthenticated(evicted),
            open: self.open.clone(),
        })
    }

    /// Moves `stream`, whose handshake brought a client certificate, to the
    /// authenticated budget; `false` if that is full for its address or in
    /// all, or if it was evicted meanwhile (the caller closes it).
    pub fn authenticate(&self, stream: &mut PeerStream) -> bool {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !matches!(stream.standing, Standing::Unauthenticated(_)) || !open.unauthenticated.contains_key(&stream.id) {
            return false;
        }
        let authenticated_total = self.limits.total.saturating_sub(self.limits.unauthenticated);
        let here = open.by_address.get(&stream.peer).map_or(0, |c| c.authenticated);
        if open.authenticated >= authenticated_total || here >= self.limits.per_peer {
            return false;
        }
        open.unauthenticated.remove(&stream.id);
        if let Some(count) = open.by_address.get_mut(&stream.peer) {
            count.unauthenticated.remove(&stream.id);
            count.authenticated += 1;
        }
        open.authenticated += 1;
        // Its eviction sender is gone: it no longer listens for it.
        stream.standing = Standing::Authenticated;
        true
    }

    /// Connections open now: authenticated, unauthenticated.
    pub fn open(&self) -> (usize, usize) {
        let open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (open.authenticated, open.unauthenticated.len())
    }

    /// Unauthenticated connections evicted so far to make room for newer ones.
    pub fn evicted(&self) -> u64 {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).evicted
    }
}

/// A TCP connection counted against its budgets until it is dropped.
/// While unauthenticated it may be evicted: its next read or write then
/// fails (and an idle one is woken for it), so the TLS handshake or the
/// HTTP/2 connection over it ends.
///
/// It reports the same connection info as a bare `TcpStream`, so the TLS
/// layer over it still fills `Request::peer_certs` (which looks for
/// `TlsConnectInfo<TcpConnectInfo>`; `docs/style.md`, stack pitfall 4).
#[derive(Debug)]
pub struct PeerStream {
    inner: TcpStream,
    peer: IpAddr,
    id: u64,
    standing: Standing,
    open: Arc<Mutex<Peers>>,
}

/// Which budget a [`PeerStream`] counts against.
#[derive(Debug)]
enum Standing {
    /// Unauthenticated: the receiver completes when the table evicts it.
    Unauthenticated(tokio::sync::oneshot::Receiver<()>),
    /// Evicted (its place already given to a newer connection).
    Evicted,
    /// Its handshake brought a client certificate.
    Authenticated,
}

impl PeerStream {
    /// Whether it was evicted (checked, and the task woken, on each read and
    /// write while it is unauthenticated).
    fn is_evicted(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.standing {
            Standing::Authenticated => false,
            Standing::Evicted => true,
            // A oneshot receiver must not be polled again once ready.
            Standing::Unauthenticated(evicts) => {
                let gone = Pin::new(evicts).poll(cx).is_ready();
                if gone {
                    self.standing = Standing::Evicted;
                }
                gone
            }
        }
    }
}

fn evicted() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "an unauthenticated connection was evicted to make room for a newer one",
    )
}

impl Drop for PeerStream {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !matches!(self.standing, Standing::Authenticated) {
            // Unauthenticated (if it was evicted, its place is already free).
            if open.unauthenticated.remove(&self.id).is_some() {
                open.forget(self.peer, self.id);
            }
        } else {
            open.authenticated = open.authenticated.saturating_sub(1);
            if let Some(count) = open.by_address.get_mut(&self.peer) {
                count.authenticated = count.authenticated.saturating_sub(1);
                if count.authenticated == 0 && count.unauthenticated.is_empty() {
                    open.by_address.remove(&self.peer);
                }
            }
        }
    }
}

impl Connected for PeerStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.is_evicted(cx) {
            return Poll::Ready(Err(evicted()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.is_evicted(cx) {
            return Poll::Ready(Err(evicted()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.is_evicted(cx) {
            return Poll::Ready(Err(evicted()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
