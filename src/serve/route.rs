//! What the loop does with each item a connection hands over: a refused head answered by
//! the HTTP layer, `/healthz`, a forward-auth subrequest, a request for the guard, or, in
//! proxy mode, one to forward once allowed. Decided here, answered after the turn's
//! events are written (the group commit).

use std::net::SocketAddr;

use super::answer::Framing;
use super::conn::Item;
use super::exchange::Forward;
use super::proxy::Proxy;
use crate::event::Event;
use crate::guard::{Pending, Request};
use crate::{Guard, Reason, logger};

/// What a decided request gets, once its event is written.
pub(super) enum What {
    Health,
    Guarded(Pending),
    Auth(Pending),
    Status(u16),
    /// A request on the `--metrics` listener, with its status (200: the exposition).
    Scrape(u16),
    /// Proxy mode: forwarded once allowed (or public).
    Forward(Pending, Box<Forward>),
}

/// A decided request, its answer to come once the turn's events are written.
pub(super) struct Queued {
    pub(super) token: usize,
    pub(super) what: What,
    pub(super) framing: Framing,
}

/// What [`route`] decides with.
pub(super) struct Route<'a> {
    pub(super) t: usize,
    pub(super) peer: SocketAddr,
    pub(super) guard: &'a Guard,
    /// The forward-auth endpoint's path, if any.
    pub(super) forward_auth: Option<&'a str>,
    pub(super) proxy: Option<&'a Proxy>,
    pub(super) draining: bool,
}

/// Decides one item of connection `cx.t` and queues its answer.
pub(super) fn route(item: Item<'_>, cx: &Route<'_>, queued: &mut Vec<Queued>) {
    let (t, peer, guard) = (cx.t, cx.peer, cx.guard);
    let (head, fields, close) = match item {
        Item::Refused(status) => {
            let (reason, text) = match status {
                417 => (
                    "expectation_failed",
                    "an expectation other than 100-continue: 417, connection closed",
                ),
                431 => (
                    "header_too_large",
                    "a request head over --max-header-bytes or 100 fields: 431, connection closed",
                ),
                _ => (
                    "malformed_request",
                    "not an HTTP/1 request head: 400, connection closed",
                ),
            };
            logger::record(&Event::Connection {
                reason,
                text,
                status: Some(status),
                source_ip: Some(peer.ip().to_canonical()),
                count: 1,
            });
            let framing = Framing {
                minor: 1,
                head_only: false,
                close: true,
            };
            let what = What::Status(status);
            return queued.push(Queued {
                token: t,
                what,
                framing,
            });
        }
        Item::Request {
            head,
            fields,
            close,
        } => (head, fields, close),
    };
    let mut framing = Framing {
        minor: head.version.1,
        head_only: head.method == "HEAD",
        close: close || cx.draining,
    };
    let target = super::head::origin_form(head.target);
    let ip = peer.ip().to_canonical();
    let mut parts = Request::new(head.method, target, fields).with_peer(ip);
    if head.version != (1, 0) {
        parts = parts.requiring_host();
    }
    let path = crate::path::normalise(target);
    let auth = cx.forward_auth.is_some() && path.as_deref().ok() == cx.forward_auth;
    let what = if let Err(reason) = head.framing {
        let parts = match auth {
            true => guard.original(parts).unwrap_or_else(|own| own),
            false => parts,
        };
        What::Guarded(guard.refuse(&parts, reason))
    } else if path.as_deref() == Ok("/healthz") {
        What::Health
    } else if auth {
        What::Auth(match guard.original(parts) {
            Ok(parts) => guard.decide(&parts),
            Err(own) => guard.refuse(&own, Reason::InvalidRequest),
        })
    } else if let Some(proxy) = cx.proxy {
        let body = head.framing.map_or(super::head::Body::None, |f| f.body);
        match &path {
            _ if proxy.refuses_body(head.method, body) => {
                framing.close = true;
                What::Guarded(guard.refuse(&parts, Reason::BodyNotAllowed))
            }
            Ok(path) => {
                let query = target.find('?').map_or("", |at| &target[at..]);
                let target = format!("{path}{query}");
                let forward = proxy.forward(&head, fields, ip, &target, framing.close);
                What::Forward(guard.decide(&parts), forward)
            }
            Err(_) => What::Guarded(guard.decide(&parts)),
        }
    } else {
        What::Guarded(guard.decide(&parts))
    };
    queued.push(Queued {
        token: t,
        what,
        framing,
    });
}
