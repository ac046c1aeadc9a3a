//! The `jwtguard` binary's server: the tiny_http `recv` loop that decides, records and
//! answers, with a group commit of the security events.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::event::{Cause, Event, ServiceEvent};
use crate::guard::{Decision, Pending, path_of};
use crate::http::{self, Reply};
use crate::logger::{self, Batch};
use crate::{Config, Error, Guard};

/// The `jwtguard` binary's server: bound, not yet serving.
///
/// [`Server::run`] writes the start-up event, serves until a [`Stopper`] stops it, and
/// writes the shutdown event with its cause.
pub struct Server {
    http: Arc<tiny_http::Server>,
    guard: Guard,
    addr: SocketAddr,
    config: Vec<(&'static str, String)>,
    stop: Arc<Stop>,
}

struct Stop {
    flag: AtomicBool,
    cause: Mutex<Option<Cause>>,
}

/// Stops a running [`Server`] from another thread (a signal handler's).
#[derive(Clone)]
pub struct Stopper {
    http: Arc<tiny_http::Server>,
    stop: Arc<Stop>,
}

impl std::fmt::Debug for Stopper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stopper").finish_non_exhaustive()
    }
}

impl Stopper {
    /// Asks the server to stop: it answers the requests in hand, writes the shutdown
    /// event naming `cause` (the first cause given, if several), and returns.
    pub fn stop(&self, cause: Cause) {
        self.stop
            .cause
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(cause);
        self.stop.flag.store(true, Ordering::SeqCst);
        self.http.unblock();
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Validates `config`, builds the guard and binds `config.listen`.
    ///
    /// # Errors
    ///
    /// What [`Guard::new`] refuses, or [`Error::Bind`].
    pub fn bind(config: &Config) -> Result<Server, Error> {
        let guard = Guard::new(config)?;
        let http = tiny_http::Server::http(&config.listen).map_err(|source| Error::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        let addr = http
            .server_addr()
            .to_ip()
            .expect("a TCP listener has an IP address");
        Ok(Server {
            http: Arc::new(http),
            guard,
            addr,
            config: config.fields(),
            stop: Arc::new(Stop {
                flag: AtomicBool::new(false),
                cause: Mutex::new(None),
            }),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that stops it.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            http: self.http.clone(),
            stop: self.stop.clone(),
        }
    }

    /// Writes the start-up event, serves until stopped, and writes the shutdown event.
    /// Returns how many requests were answered.
    ///
    /// It answers `/healthz` (200, or 503 while the security log is failing), protected
    /// paths through the guard, and 404 for anything else. The requests already waiting
    /// (up to 64) are decided together: their events are written in one `write(2)`, and
    /// only then are the requests answered, each with 503 if its event did not reach the
    /// log (a group commit). No request waits for others to arrive.
    ///
    /// # Errors
    ///
    /// [`Error::Accept`] when tiny_http stops accepting connections; the shutdown event
    /// says so too.
    pub fn run(self) -> Result<u64, Error> {
        let url = format!("http://{}", self.addr);
        logger::record(&Event::Service(ServiceEvent::Startup {
            url: &url,
            config: &self.config,
        }));
        let (answered, result) = serve(&self.http, &self.guard, &self.stop.flag);
        let cause = match &result {
            Ok(()) => self
                .stop
                .cause
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .unwrap_or(Cause::Signal("stop")),
            Err(_) => Cause::AcceptFailed,
        };
        logger::record(&Event::Service(ServiceEvent::Shutdown { cause, answered }));
        result.map(|()| answered)
    }
}

/// The most requests [`serve`] decides before it writes their events and answers them.
const MAX_BATCH: usize = 64;

/// Where a request goes.
enum Route {
    /// `/healthz`: open to all, never an event.
    Health,
    /// A path the guard decided on.
    Guarded(Pending),
}

fn route(guard: &Guard, request: &tiny_http::Request) -> Route {
    if path_of(request.url()) == "/healthz" {
        return Route::Health;
    }
    Route::Guarded(guard.decide(&http::request(request)))
}

impl Route {
    /// Answers `request`, once `written` bytes of the batch are in the log.
    fn answer(self, request: tiny_http::Request, written: usize) {
        match self {
            Route::Health => http::send(
                request,
                &Reply::Health {
                    log_failing: logger::installed().is_none_or(|log| log.failing()),
                },
            ),
            Route::Guarded(pending) => match pending.settle(written) {
                Decision::Public => http::send(request, &Reply::NotFound),
                Decision::Allowed(allowed) => http::send(request, &Reply::Allowed(&allowed)),
                Decision::Refused(refused) => http::send(request, &Reply::Refused(&refused)),
            },
        }
    }
}

/// Serves requests until `stop` is set (and [`tiny_http::Server::unblock`] called, so
/// that the wait ends): `/healthz` (503 while the security log is failing), protected
/// paths through the guard, 404 for anything else. Returns how many requests were
/// answered, and why it stopped if not because of `stop`.
///
/// The requests already waiting (up to 64) are decided together: their events are
/// written in one `write(2)`, and only then are the requests answered, each with 503 if
/// its event did not reach the log (a group commit). No request waits for others to
/// arrive: a batch is what had queued up.
///
/// [`Error::Accept`] when tiny_http stops accepting connections (out of file descriptors,
/// say), after the requests in hand are answered.
fn serve(server: &tiny_http::Server, guard: &Guard, stop: &AtomicBool) -> (u64, Result<(), Error>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut answered = 0;
    while !stop.load(Ordering::SeqCst) {
        let mut next = match server.recv() {
            Ok(request) => Some(request),
            // `unblock` wakes `recv` with an error; so does a dead accept thread.
            Err(_) if stop.load(Ordering::SeqCst) => break,
            Err(err) => return (answered, Err(Error::Accept(err))),
        };
        let events = Batch::open();
        let mut accept_failed = None;
        while let Some(request) = next.take() {
            let route = route(guard, &request);
            batch.push((request, route));
            if batch.len() < MAX_BATCH {
                match server.try_recv() {
                    Ok(request) => next = request,
                    // The accept thread died: answer this batch, then stop.
                    Err(err) => accept_failed = Some(err),
                }
            }
        }
        let written = events.commit();
        for (request, route) in batch.drain(..) {
            route.answer(request, written);
            answered += 1;
        }
        if let Some(err) = accept_failed {
            return (answered, Err(Error::Accept(err)));
        }
    }
    (answered, Ok(()))
}
