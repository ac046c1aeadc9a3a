//! What the guard decided: public, allowed (with the identity headers to pass on) or
//! refused (with its status and challenge); and a decision whose event may still wait in
//! the serving thread's batch ([`Pending`]).

use std::borrow::Cow;

use crate::Reason;
use crate::config::USER_HEADER;
#[cfg(test)]
use crate::decide::guard::push_header_value;
use crate::event::RequestId;
use crate::logger::Recorded;

/// What the guard decided about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Decision {
    /// The path needs no token: serve the request. No event was written.
    Public,
    /// The token verified and the event is in the log: serve the request.
    Allowed(Allowed),
    /// Refused, or not to be served because its event could not be written: send
    /// [`Refused`]'s answer (with tiny_http, [`crate::http::answer`]).
    Refused(Refused),
}

/// A request whose token verified and whose event is in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowed {
    pub(super) request_id: RequestId,
    pub(super) user: String,
    /// `X-Auth-User`'s value: the user, percent-encoded.
    pub(super) user_header: String,
    /// The claim headers, values percent-encoded (none unless configured: no allocation
    /// for them a request).
    pub(super) claim_headers: Vec<(String, String)>,
}

impl Allowed {
    /// The user: the token's `sub`, or its `user_id`.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The id of its event (`http.request.id`); send it back as `X-Request-Id`.
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }

    /// The identity headers to pass on: `X-Auth-User` with the user, then each configured
    /// claim header, empty when the token lacks the claim (so that it always replaces a
    /// copy a client sent). Values are percent-encoded: every byte outside `!`..`~`, and
    /// `%` and `,`, as `%XX`; an array's elements are joined with `,`.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        let claims = self.claim_headers.iter();
        std::iter::once((USER_HEADER, self.user_header.as_str()))
            .chain(claims.map(|(n, v)| (n.as_str(), v.as_str())))
    }
}

/// A request that must not be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub(super) request_id: RequestId,
    /// `None` when the event could not be written (the answer is then 503).
    pub(super) reason: Option<Reason>,
    /// The scope the token lacked, for `insufficient_scope`.
    pub(super) scope: Option<String>,
    /// A forward-auth answer: never 400 (a proxy turns it into 500).
    pub(super) forward_auth: bool,
    /// Seconds until a rate-limited address may try again.
    pub(super) retry_after: Option<u32>,
}

impl Refused {
    /// Why, when the event is in the log; `None` when the request is refused because its
    /// event could not be written.
    pub fn reason(&self) -> Option<Reason> {
        self.reason
    }

    /// The status to answer: the reason's, or 503 when the event could not be written.
    /// To a forward-auth subrequest, 401 wherever the reason says 400 or 413: nginx's
    /// `auth_request` turns any status but 2xx, 401 and 403 into 500.
    pub fn status(&self) -> u16 {
        self.reason
            .map_or(503, |reason| answer_status(reason, self.forward_auth))
    }

    /// The `WWW-Authenticate` value to send, if any; for `insufficient_scope`, with the
    /// scope (RFC 6750 §3).
    pub fn challenge(&self) -> Option<Cow<'static, str>> {
        let reason = self.reason?;
        if answer_status(reason, self.forward_auth) != reason.status() {
            // A forward-auth answer, 401 instead of 400 or 413.
            return Reason::InvalidRequest.challenge().map(Cow::Borrowed);
        }
        match (&self.scope, reason.challenge()) {
            (Some(scope), Some(challenge)) => {
                Some(Cow::Owned(format!("{challenge}, scope=\"{scope}\"")))
            }
            (None, challenge) => challenge.map(Cow::Borrowed),
            (Some(_), None) => None,
        }
    }

    /// The id of its event (`http.request.id`); send it back as `X-Request-Id`.
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }

    /// The `Retry-After` value to send, in seconds: for [`Reason::RateLimited`], the rest
    /// of the window.
    pub fn retry_after(&self) -> Option<u32> {
        self.retry_after.filter(|_| self.reason.is_some())
    }
}

/// The status answered for `reason`: as the reason says, but to a forward-auth subrequest
/// 401 for what would be 400, 413 or 429.
pub(super) fn answer_status(reason: Reason, forward_auth: bool) -> u16 {
    match reason.status() {
        400 | 413 | 429 if forward_auth => 401,
        status => status,
    }
}

#[cfg(test)]
impl Allowed {
    pub(crate) fn for_test(request_id: RequestId, user: &str) -> Allowed {
        Allowed {
            request_id,
            user: user.into(),
            user_header: {
                let mut value = String::new();
                push_header_value(user, &mut value);
                value
            },
            claim_headers: Vec::new(),
        }
    }
}

#[cfg(test)]
impl Refused {
    pub(crate) fn for_test(request_id: RequestId, reason: Option<Reason>) -> Refused {
        Refused {
            request_id,
            reason,
            scope: None,
            forward_auth: false,
            retry_after: None,
        }
    }
}

/// A decision whose event may still be waiting in the serving thread's batch.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(super) decision: Decision,
    pub(super) recorded: Recorded,
}

impl Pending {
    /// The decision, once `written` bytes of the batch are in the log: a request whose
    /// event did not make it is refused with 503.
    pub(crate) fn settle(self, written: usize) -> Decision {
        let recorded = match self.recorded {
            Recorded::Written => true,
            Recorded::Held(end) => end <= written,
            Recorded::Lost => false,
        };
        use crate::metrics::Outcome;
        crate::metrics::decision(match &self.decision {
            Decision::Allowed(_) if recorded => Outcome::Allowed,
            Decision::Public => Outcome::Public,
            Decision::Refused(refused) if recorded => Outcome::Refused(refused.reason),
            _ => Outcome::Refused(None),
        });
        match self.decision {
            Decision::Allowed(allowed) if !recorded => Decision::Refused(Refused {
                request_id: allowed.request_id,
                reason: None,
                scope: None,
                forward_auth: false,
                retry_after: None,
            }),
            Decision::Refused(refused) if !recorded => Decision::Refused(Refused {
                reason: None,
                scope: None,
                ..refused
            }),
            decision => decision,
        }
    }
}
