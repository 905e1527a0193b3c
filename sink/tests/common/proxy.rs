//! A TCP proxy in front of Cassandra that a test can cut: `cut` closes every connection
//! and turns new ones away, `restore` lets them through again.
#![allow(clippy::unwrap_used, dead_code)]

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    upstream: SocketAddr,
    /// Open connections (both ends), and whether the proxy is cut; under one lock so
    /// that no connection slips in while a cut closes the others.
    state: Mutex<(bool, Vec<TcpStream>)>,
    refused: AtomicU64,
    accepted: AtomicU64,
}

impl Proxy {
    /// Listens on 127.0.0.1 on a free port and forwards to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Proxy {
        let upstream = upstream.to_socket_addrs().unwrap().next().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            state: Mutex::new((false, Vec::new())),
            refused: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if let Err(e) = s.serve(client) {
                    eprintln!("proxy: connection not served: {e}");
                }
            }
        });
        Proxy { addr, shared }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn cut(&self) {
        let mut state = self.shared.state.lock().unwrap();
        state.0 = true;
        for s in state.1.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.shared.state.lock().unwrap().0 = false;
    }

    /// Connections turned away while cut, and connections let through.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.refused.load(Ordering::Relaxed),
            self.shared.accepted.load(Ordering::Relaxed),
        )
    }
}

impl Shared {
    fn serve(&self, client: TcpStream) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        if state.0 {
            self.refused.fetch_add(1, Ordering::Relaxed);
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        let server = TcpStream::connect(self.upstream)?;
        client.set_nodelay(true)?;
        server.set_nodelay(true)?;
        state.1.push(client.try_clone()?);
        state.1.push(server.try_clone()?);
        self.accepted.fetch_add(1, Ordering::Relaxed);
        drop(state);
        pipe(client.try_clone()?, server.try_clone()?);
        pipe(server, client);
        Ok(())
    }
}

/// Copies `from` into `to` until either closes, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let _ = io::copy(&mut from, &mut to);
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}
