//! The plain parts of a request the guard decides on: method, target, headers and peer.
//! A front end builds one from its own request type (src/http.rs for tiny_http).

use std::net::IpAddr;

/// A request's headers, as the guard reads them.
///
/// Implemented for slices and arrays of `(name, value)` pairs, and for tiny_http's headers.
pub trait Headers {
    /// The values of every header called `name` (ASCII case-insensitive), in order.
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's;
}

impl<'a> Headers for [(&'a str, &'a str)] {
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

impl<'a, const N: usize> Headers for [(&'a str, &'a str); N] {
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.as_slice().values(name)
    }
}

/// The parts of a request the guard decides on.
///
/// ```
/// use jwtguard::Request;
/// let headers = [("Authorization", "Bearer abc.def.ghi"), ("User-Agent", "curl/8")];
/// let request = Request::new("GET", "/api/orders?page=2", &headers)
///     .with_peer("127.0.0.1".parse().unwrap());
/// ```
#[derive(Debug)]
pub struct Request<'a, H: ?Sized> {
    pub(super) method: &'a str,
    pub(super) target: &'a str,
    pub(super) headers: &'a H,
    pub(super) peer: Option<IpAddr>,
    /// A proxy's forward-auth subrequest, carrying the original method and target.
    pub(super) forward_auth: bool,
    /// HTTP/1.1: a request without `Host` is refused (RFC 9112 §3.2).
    pub(super) host_required: bool,
}

impl<H: ?Sized> Clone for Request<'_, H> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<H: ?Sized> Copy for Request<'_, H> {}

impl<'a, H: Headers + ?Sized> Request<'a, H> {
    /// A request: its method, its target as received (path and query) and its headers.
    pub fn new(method: &'a str, target: &'a str, headers: &'a H) -> Self {
        Request {
            method,
            target,
            headers,
            peer: None,
            forward_auth: false,
            host_required: false,
        }
    }

    /// The address of the connection's peer (`source.ip` in the log).
    pub fn with_peer(mut self, peer: IpAddr) -> Self {
        self.peer = Some(peer.to_canonical());
        self
    }

    /// A forward-auth subrequest about a request with this method and target.
    pub(crate) fn forward_auth(mut self, method: &'a str, target: &'a str) -> Self {
        self.method = method;
        self.target = target;
        self.forward_auth = true;
        self
    }

    /// An HTTP/1.1 request, which must carry a `Host` header.
    pub(crate) fn requiring_host(mut self) -> Self {
        self.host_required = true;
        self
    }

    pub(crate) fn peer(&self) -> Option<IpAddr> {
        self.peer
    }
}
