//! A fault-injecting TCP proxy, to put between one agent and ZooKeeper.

use crate::error::{Error, Result};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward bytes both ways at once.
    Pass,
    /// Every connection closed, new ones refused (nothing listens on the port).
    Cut,
    /// Connections are accepted and kept open but every byte is dropped, both ways, like a
    /// silent network partition: no reset, no answer. On restore, connections that lost bytes
    /// are closed (as TCP would give up on them), so no stream resumes corrupted.
    Blackhole,
    /// Forward bytes both ways, each chunk delivered this long after it was read.
    Delay(Duration),
}

#[derive(Debug)]
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    dropped: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
}

impl Conn {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }
}

#[derive(Debug)]
struct State {
    mode: ProxyMode,
    listener: Option<TcpListener>,
    conns: Vec<Conn>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    accepted: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mode(&self) -> ProxyMode {
        self.lock().mode
    }
}

/// A TCP proxy on 127.0.0.1 in front of one upstream address, with faults switchable at run time
/// ([`ProxyMode`]). Point an agent's `zk` at [`Proxy::connect_string`] to partition that agent
/// alone. Every mode change takes effect before the call returns. Stopped on drop.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    port: u16,
    upstream: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

fn bind(port: u16) -> Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => {
                l.set_nonblocking(true)
                    .map_err(|e| Error::io("making the proxy listener non-blocking", e))?;
                return Ok(l);
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(Error::io(
                    format!("binding the proxy on 127.0.0.1:{port}"),
                    e,
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

impl Proxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream`, in [`ProxyMode::Pass`].
    pub fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = bind(0)?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("reading the proxy's address", e))?
            .port();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: ProxyMode::Pass,
                listener: Some(listener),
                conns: Vec::new(),
            }),
            stop: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("proxy-{port}"))
                .spawn(move || accept_loop(shared, upstream))
                .map_err(|e| Error::io("starting the proxy thread", e))?
        };
        Ok(Proxy {
            shared,
            port,
            upstream,
            acceptor: Some(acceptor),
        })
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`: give this to the agent as its ZooKeeper address.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        self.shared.mode()
    }

    /// Connections accepted since the proxy started (a reconnecting client bumps it).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently open through the proxy.
    pub fn open_connections(&self) -> usize {
        let mut st = self.shared.lock();
        st.conns.retain(|c| !c.closed.load(Ordering::SeqCst));
        st.conns.len()
    }

    /// Closes every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) -> Result<()> {
        self.set_mode(ProxyMode::Cut)
    }

    /// Keeps connections open (and accepts new ones) but drops every byte, both ways.
    pub fn blackhole(&self) -> Result<()> {
        self.set_mode(ProxyMode::Blackhole)
    }

    /// Delivers every chunk `by` late, both ways.
    pub fn delay(&self, by: Duration) -> Result<()> {
        self.set_mode(ProxyMode::Delay(by))
    }

    /// Back to forwarding at once: listens again after a cut; after a blackhole, closes the
    /// connections that lost bytes so clients reconnect cleanly.
    pub fn restore(&self) -> Result<()> {
        self.set_mode(ProxyMode::Pass)
    }

    /// Switches to `mode`; the change is in force when this returns.
    pub fn set_mode(&self, mode: ProxyMode) -> Result<()> {
        let mut st = self.shared.lock();
        let was = st.mode;
        st.mode = mode;
        match mode {
            ProxyMode::Cut => {
                st.listener = None;
                for c in st.conns.drain(..) {
                    c.close();
                }
            }
            _ => {
                if st.listener.is_none() {
                    st.listener = Some(bind(self.port)?);
                }
                if was == ProxyMode::Blackhole && mode != ProxyMode::Blackhole {
                    for c in &st.conns {
                        if c.dropped.load(Ordering::SeqCst) {
                            c.close();
                        }
                    }
                }
                st.conns.retain(|c| !c.closed.load(Ordering::SeqCst));
            }
        }
        Ok(())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let mut st = self.shared.lock();
            st.listener = None;
            for c in st.conns.drain(..) {
                c.close();
            }
        }
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(shared: Arc<Shared>, upstream: SocketAddr) {
    while !shared.stop.load(Ordering::SeqCst) {
        let accepted = {
            let st = shared.lock();
            st.listener.as_ref().map(|l| l.accept())
        };
        match accepted {
            Some(Ok((client, _))) => {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                if let Err(e) = open(&shared, client, upstream) {
                    eprintln!("proxy: {e}");
                }
            }
            Some(Err(e)) if e.kind() != ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn open(shared: &Arc<Shared>, client: TcpStream, upstream: SocketAddr) -> Result<()> {
    let _ = client.set_nonblocking(false);
    let _ = client.set_nodelay(true);
    let up = match TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) {
        Ok(up) => up,
        Err(_) => {
            // Upstream down: the client sees its connection closed, as with a dead server.
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
    };
    let _ = up.set_nodelay(true);
    let clone = |s: &TcpStream| {
        s.try_clone()
            .map_err(|e| Error::io("cloning a proxied socket", e))
    };
    let conn = Conn {
        client: clone(&client)?,
        upstream: clone(&up)?,
        dropped: Arc::new(AtomicBool::new(false)),
        closed: Arc::new(AtomicBool::new(false)),
    };
    let (dropped, closed) = (conn.dropped.clone(), conn.closed.clone());
    {
        let mut st = shared.lock();
        if st.mode == ProxyMode::Cut {
            conn.close();
            return Ok(());
        }
        st.conns.push(conn);
    }
    let closer = {
        let (a, b, closed) = (clone(&client)?, clone(&up)?, closed.clone());
        move || {
            closed.store(true, Ordering::SeqCst);
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    };
    let closer = Arc::new(closer);
    pump(
        shared,
        clone(&client)?,
        clone(&up)?,
        dropped.clone(),
        closer.clone(),
    )?;
    pump(shared, up, client, dropped, closer)?;
    Ok(())
}

/// Copies `from` -> `to` on two threads (a reader that applies the mode, a writer that honours
/// delays); any end or error closes both sockets.
fn pump(
    shared: &Arc<Shared>,
    mut from: TcpStream,
    mut to: TcpStream,
    dropped: Arc<AtomicBool>,
    close: Arc<dyn Fn() + Send + Sync>,
) -> Result<()> {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let reader_shared = shared.clone();
    let reader_close = close.clone();
    std::thread::Builder::new()
        .name("proxy-read".into())
        .spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let due = match reader_shared.mode() {
                    ProxyMode::Blackhole => {
                        dropped.store(true, Ordering::SeqCst);
                        continue;
                    }
                    ProxyMode::Cut => break,
                    ProxyMode::Pass => Instant::now(),
                    ProxyMode::Delay(d) => Instant::now() + d,
                };
                if tx.send((due, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
            drop(tx);
            reader_close();
        })
        .map_err(|e| Error::io("starting a proxy reader", e))?;
    std::thread::Builder::new()
        .name("proxy-write".into())
        .spawn(move || {
            while let Ok((due, bytes)) = rx.recv() {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if to.write_all(&bytes).is_err() {
                    break;
                }
            }
            close();
        })
        .map_err(|e| Error::io("starting a proxy writer", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; returns its address.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let mut w = s;
                    let _ = std::io::copy(&mut r, &mut w);
                });
            }
        });
        addr
    }

    fn roundtrip(port: u16, msg: &[u8], wait: Duration) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(wait))?;
        s.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got)?;
        Ok(got)
    }

    /// Whether the peer closed `s`: end of stream or a reset. A read timeout is not a close
    /// (counting it as one would let a proxy that leaves connections open pass).
    fn closed(s: &mut TcpStream) -> Result<(), String> {
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) if rest.is_empty() => Ok(()),
            Ok(_) => Err(format!("{} more bytes, then closed", rest.len())),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) && rest.is_empty() =>
            {
                Ok(())
            }
            Err(e) => Err(format!("still open: {e} (after {} bytes)", rest.len())),
        }
    }

    #[test]
    fn closed_tells_a_timeout_from_a_close() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut open = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (peer, _) = listener.accept().unwrap();
        open.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        assert!(closed(&mut open).is_err(), "an idle open connection");
        drop(peer);
        open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        closed(&mut open).unwrap();
    }

    #[test]
    fn pass_cut_blackhole_delay_restore() {
        let proxy = Proxy::start(echo()).unwrap();
        let p = proxy.port();
        assert_eq!(
            roundtrip(p, b"hello", Duration::from_secs(5)).unwrap(),
            b"hello"
        );

        // A connection open across a cut is closed; new ones are refused.
        let mut held = TcpStream::connect(("127.0.0.1", p)).unwrap();
        held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        held.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        held.read_exact(&mut one).unwrap();
        proxy.cut().unwrap();
        closed(&mut held).expect("the cut closes a held connection");
        let refused = TcpStream::connect(("127.0.0.1", p)).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);

        proxy.restore().unwrap();
        assert_eq!(
            roundtrip(p, b"again", Duration::from_secs(5)).unwrap(),
            b"again"
        );

        // Blackhole: accepted, nothing comes back; restore closes the connection that lost bytes.
        proxy.blackhole().unwrap();
        let mut bh = TcpStream::connect(("127.0.0.1", p)).unwrap();
        bh.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        bh.write_all(b"lost").unwrap();
        let err = bh.read(&mut one).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{err}"
        );
        proxy.restore().unwrap();
        bh.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        closed(&mut bh).expect("closed after the blackhole");

        // Delay: bytes arrive, no earlier than the delay.
        proxy.delay(Duration::from_millis(200)).unwrap();
        let t = Instant::now();
        assert_eq!(
            roundtrip(p, b"slow", Duration::from_secs(5)).unwrap(),
            b"slow"
        );
        assert!(
            t.elapsed() >= Duration::from_millis(400),
            "two legs of 200 ms each"
        );
        assert!(proxy.accepted() >= 4);
    }
}
