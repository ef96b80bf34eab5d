//! A small HTTP/1.1 server on 127.0.0.1 that runs on its own thread and
//! Tokio runtime, so it works under any test runtime (or none) and stops
//! when its handle is dropped.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

/// A running server; dropping it stops the server and joins its thread.
#[derive(Debug)]
pub(crate) struct ServerThread {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    /// Binds a free port on 127.0.0.1 and serves `service` there.
    ///
    /// # Panics
    ///
    /// When no port can be bound or the thread cannot start: a test cannot
    /// go on without its server.
    pub(crate) fn start<S, B>(name: &str, service: S) -> ServerThread
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn StdError + Send + Sync>>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("{name}: cannot bind a port on 127.0.0.1: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{name}: cannot read the bound address: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{name}: cannot make the listener non-blocking: {e}"));
        let (shutdown, mut stop) = oneshot::channel::<()>();
        let thread_name = name.to_owned();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name(format!("{thread_name}-worker"))
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("{thread_name}: cannot start a Tokio runtime: {e}"));
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).unwrap_or_else(|e| {
                            panic!("{thread_name}: cannot register the listener: {e}")
                        });
                    loop {
                        tokio::select! {
                            _ = &mut stop => break,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                let service = service.clone();
                                tokio::spawn(async move {
                                    // Errors of one connection (a client that
                                    // hung up) do not concern the server.
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await;
                                });
                            }
                        }
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(2));
            })
            .unwrap_or_else(|e| panic!("{name}: cannot start the server thread: {e}"));
        ServerThread {
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The address the server listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
