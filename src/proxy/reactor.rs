//! The kept-alive upstream connections, and the reactor: one thread that waits on all of
//! them at once (epoll) and passes on the answers to requests the serving thread sent
//! itself.
//!
//! The fast path: for a request with no body and a head of at most [`MAX_FAST_HEAD`]
//! bytes, on a client connection with nothing else under way, the serving thread takes an
//! idle connection and sends the head without waiting (`MSG_DONTWAIT`: a few KiB into an
//! idle connection's empty send buffer). The reactor, woken by the answer, writes it to
//! the client when the whole of it fits in the connection's buffer; anything else (a
//! longer or chunked body, a client that does not take the answer at once, a failure) goes
//! on to a forwarding thread, from where the reactor left it. No thread is woken to send
//! a request, nor sleeps in a read per request, and one wake of the reactor passes on every
//! answer that came meanwhile.
//!
//! Each connection kept is in the reactor's epoll set, idle ones too: an upstream that
//! closes an idle connection is noticed at once, and the connection dropped.
//!
//! A connection's state changes under the table's lock, and the head is sent under it, so
//! that the reactor sees a connection either idle or carrying a sent request, never half
//! way. When the upstream closes an idle connection just as the serving thread sends a head
//! on it, the reactor reads the end of the stream before any answer: the request goes to a
//! forwarding thread, to be sent once more on a new connection.

use std::mem;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::conn::{BUFFER, Conn};
use super::response::{self, Framing, Parsed};
use super::{Forward, Job, MAX_IDLE, Shared, Start, lock, peer_of};

/// The longest request head the serving thread sends itself.
pub(super) const MAX_FAST_HEAD: usize = 4 * 1024;

/// The kept-alive upstream connections.
pub(super) struct Kept {
    /// The reactor's interest list; `None` when epoll could not be had.
    epoll: Option<Epoll>,
    /// Whether the reactor runs; if not, every request goes through a forwarding thread.
    reacting: AtomicBool,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    /// The idle connections' slots, the most recently used last: at most [`MAX_IDLE`].
    idle: Vec<usize>,
}

#[derive(Default)]
struct Slot {
    /// Told apart from the slot's earlier connections: an event read before a connection
    /// left is not taken for its successor's.
    generation: u32,
    state: State,
}

#[derive(Default)]
enum State {
    #[default]
    Free,
    Idle(Conn),
    /// A request's head went out on it at `Instant` (or its answer last made progress).
    Flight(Conn, Box<Forward>, Instant),
    /// The reactor has it in hand.
    Reactor,
}

fn token(index: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | index as u64
}

impl Kept {
    pub(super) fn new() -> Kept {
        Kept {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).ok(),
            reacting: AtomicBool::new(false),
            table: Mutex::new(Table::default()),
        }
    }

    /// Whether a reactor can be started.
    pub(super) fn can_react(&self) -> bool {
        self.epoll.is_some()
    }

    /// The reactor runs: the serving thread may send heads for it.
    pub(super) fn reacting(&self) {
        self.reacting.store(true, Ordering::Relaxed);
    }

    /// Whether there is a reactor to take answers.
    pub(super) fn reacts(&self) -> bool {
        self.reacting.load(Ordering::Relaxed)
    }

    /// An idle connection, for a forwarding thread (out of the reactor's sight).
    pub(super) fn take(&self) -> Option<Conn> {
        let mut table = lock(&self.table);
        let index = table.idle.pop()?;
        let State::Idle(conn) = mem::take(&mut table.slots[index].state) else {
            unreachable!("the idle list holds idle slots");
        };
        self.forget(&conn);
        Some(conn)
    }

    /// Keeps `conn`, which has just answered in full, idle, when fewer than [`MAX_IDLE`] are;
    /// drops it otherwise.
    pub(super) fn give_back(&self, conn: Conn) {
        let mut table = lock(&self.table);
        if table.idle.len() >= MAX_IDLE {
            return;
        }
        let index = match table
            .slots
            .iter()
            .position(|s| matches!(s.state, State::Free))
        {
            Some(index) => index,
            None => {
                table.slots.push(Slot::default());
                table.slots.len() - 1
            }
        };
        let slot = &mut table.slots[index];
        slot.generation = slot.generation.wrapping_add(1);
        if let Some(epoll) = &self.epoll {
            // Level-triggered: whatever is left unread (the end of the stream after an
            // answer, more than the buffer took) is reported again.
            let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
            let event = EpollEvent::new(interest, token(index, slot.generation));
            if epoll.add(conn.stream(), event).is_err() {
                return;
            }
        }
        slot.state = State::Idle(conn);
        table.idle.push(index);
    }

    /// Sends `job`'s head on an idle connection, for the reactor to take the answer; gives
    /// the job back when no connection is idle, or the head did not go out whole. A head
    /// cut short is closed on: it lacks its final blank line, so no upstream acts on it.
    pub(super) fn send(&self, job: Box<Forward>) -> Result<(), Box<Forward>> {
        let mut table = lock(&self.table);
        let Some(index) = table.idle.pop() else {
            return Err(job);
        };
        let slot = &mut table.slots[index];
        let State::Idle(conn) = mem::take(&mut slot.state) else {
            unreachable!("the idle list holds idle slots");
        };
        match conn.send_now(&job.head) {
            Ok(n) if n == job.head.len() => {
                slot.state = State::Flight(conn, job, Instant::now());
                Ok(())
            }
            _ => {
                drop(table);
                drop(conn);
                Err(job)
            }
        }
    }

    /// Takes `conn` out of the reactor's interest list, for a forwarding thread.
    fn forget(&self, conn: &Conn) {
        if let Some(epoll) = &self.epoll {
            let _ = epoll.delete(conn.stream());
        }
    }

    /// The reactor is done with the slot at `index`: its connection is idle again when
    /// given (and fewer than [`MAX_IDLE`] are), else the slot is free. A connection handed
    /// to a forwarding thread must have been [`forget`](Kept::forget)-ten; one dropped
    /// leaves the interest list as it closes.
    fn settle(&self, index: usize, conn: Option<Conn>) {
        let mut table = lock(&self.table);
        match conn {
            Some(conn) if table.idle.len() < MAX_IDLE => {
                table.slots[index].state = State::Idle(conn);
                table.idle.push(index);
            }
            _ => table.slots[index].state = State::Free,
        }
    }
}

/// What the reactor made of a flight's connection becoming readable.
enum Step {
    /// More of the answer is to come; the last progress was at `Instant`.
    Wait(Conn, Box<Forward>, Instant),
    /// A forwarding thread goes on from here; the connection, if any, is its.
    Hand(Box<Forward>, Start),
}

impl Shared {
    /// The reactor's thread.
    pub(super) fn react(self: Arc<Self>) {
        let Some(epoll) = &self.kept.epoll else {
            return;
        };
        let mut events = [EpollEvent::empty(); 64];
        let mut out = Vec::with_capacity(1024);
        let mut next_check = Instant::now() + self.timeout;
        loop {
            let wait = next_check.saturating_duration_since(Instant::now());
            let millis = wait.as_micros().div_ceil(1000).min(u128::from(u16::MAX)) as u16;
            let n = match epoll.wait(&mut events, EpollTimeout::from(millis)) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(_) => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    0
                }
            };
            for event in &events[..n] {
                self.readable(event.data(), &mut out);
            }
            if Instant::now() >= next_check {
                next_check = self.expire();
            }
        }
    }

    /// A kept connection is readable: an answer to pass on, or an idle connection the
    /// upstream closed.
    fn readable(self: &Arc<Self>, token: u64, out: &mut Vec<u8>) {
        let index = (token & u64::from(u32::MAX)) as usize;
        let generation = (token >> 32) as u32;
        let mut table = lock(&self.kept.table);
        let Some(slot) = table.slots.get_mut(index) else {
            return;
        };
        if slot.generation != generation {
            return;
        }
        let (conn, job, since) = match mem::replace(&mut slot.state, State::Reactor) {
            State::Flight(conn, job, since) => (conn, job, since),
            State::Idle(conn) => {
                // Closed by the upstream, or sending what nobody asked for: done with.
                slot.state = State::Free;
                table.idle.retain(|&i| i != index);
                drop(table);
                drop(conn);
                return;
            }
            other => {
                slot.state = other;
                return;
            }
        };
        drop(table);
        let peer = peer_of(&job.request);
        match self.carry(index, conn, job, since, out) {
            None => {}
            Some(Step::Wait(conn, job, since)) => {
                let mut table = lock(&self.kept.table);
                table.slots[index].state = State::Flight(conn, job, since);
            }
            Some(Step::Hand(job, start)) => {
                if let Start::Sent(conn) = &start {
                    self.kept.forget(conn);
                }
                self.kept.settle(index, None);
                self.hand_over(peer, Job::Forward(job, start));
            }
        }
    }

    /// Reads what came on `conn` for `job`: passes the answer on when it is whole, says to
    /// wait for more, or to hand the exchange over. `None` when the answer went out (or
    /// on to a forwarding thread that waits for the client).
    fn carry(
        self: &Arc<Self>,
        index: usize,
        mut conn: Conn,
        job: Box<Forward>,
        since: Instant,
        out: &mut Vec<u8>,
    ) -> Option<Step> {
        if conn.full() {
            return Some(Step::Hand(job, Start::Sent(conn)));
        }
        let read = loop {
            match conn.read_now() {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                read => break read,
            }
        };
        match read {
            Ok(n) if n > 0 => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Some(Step::Wait(conn, job, since));
            }
            // Closed before a byte of the answer: an idle connection the upstream closed as
            // the head went out. Once more, on a new connection (the request has no body),
            // when sending it twice can do no harm (GET, HEAD, OPTIONS).
            _ if conn.buffered().is_empty() && super::idempotent(job.request.method()) => {
                return Some(Step::Hand(job, Start::Retry));
            }
            _ => return Some(Step::Hand(job, Start::Failed("upstream_error", 502))),
        }
        let (whole, reusable) = loop {
            let mut room = response::room();
            let buffered = conn.buffered();
            let (len, head) = match response::parse(buffered, &mut room) {
                Err(super::Failure::Before(reason, status)) => {
                    return Some(Step::Hand(job, Start::Failed(reason, status)));
                }
                Err(_) => unreachable!("a head's failure is before the answer"),
                Ok(Parsed::Partial) if conn.full() => {
                    return Some(Step::Hand(job, Start::Sent(conn)));
                }
                Ok(Parsed::Partial) => return Some(Step::Wait(conn, job, Instant::now())),
                Ok(Parsed::Interim(len)) => {
                    std::io::BufRead::consume(&mut conn, len);
                    continue;
                }
                Ok(Parsed::Final(len, head)) => (len, head),
            };
            let head_request = *job.request.method() == tiny_http::Method::Head;
            let framing = match head.framing(head_request) {
                Ok(framing) => framing,
                Err(super::Failure::Before(reason, status)) => {
                    return Some(Step::Hand(job, Start::Failed(reason, status)));
                }
                Err(_) => unreachable!("a head's failure is before the answer"),
            };
            let body = match framing {
                Framing::None => 0,
                Framing::Length(n) if n <= (buffered.len() - len) as u64 => n as usize,
                Framing::Length(n) if n <= (BUFFER - len) as u64 => {
                    return Some(Step::Wait(conn, job, Instant::now()));
                }
                _ => return Some(Step::Hand(job, Start::Sent(conn))),
            };
            let request = &job.request;
            let version = request.http_version();
            let client_1_0 = *version == tiny_http::HTTPVersion(1, 0);
            out.clear();
            head.write(
                out,
                version,
                job.id,
                framing,
                super::closes(request) || self.draining.load(Ordering::SeqCst),
                client_1_0,
            );
            out.extend_from_slice(&buffered[len..len + body]);
            // Anything after the answer was not asked for: the connection is not reused.
            break (len + body, head.keep_alive && buffered.len() == len + body);
        };
        std::io::BufRead::consume(&mut conn, whole);
        // The connection first, for the serving thread to use again at once.
        let reusable = reusable && !self.draining.load(Ordering::SeqCst);
        self.kept.settle(index, reusable.then_some(conn));
        let peer = peer_of(&job.request);
        let mut client = job.request.into_writer();
        match write_now(&mut client, out) {
            Written::All => self.lane_done(peer),
            Written::Gone => self.drop_queued(peer, true),
            Written::Stalled(at) => {
                self.hand_over_rest(peer, client, out[at..].to_vec());
            }
        }
        None
    }

    /// Answers the flights that waited longer than the timeout with 504; returns when to
    /// look again.
    fn expire(self: &Arc<Self>) -> Instant {
        let now = Instant::now();
        let mut next = now + self.timeout;
        let mut late = Vec::new();
        {
            let mut table = lock(&self.kept.table);
            for slot in &mut table.slots {
                let deadline = match &slot.state {
                    State::Flight(_, _, since) => *since + self.timeout,
                    _ => continue,
                };
                if deadline > now {
                    next = next.min(deadline);
                    continue;
                }
                if let State::Flight(conn, job, _) = mem::take(&mut slot.state) {
                    late.push((conn, job));
                }
            }
        }
        for (conn, job) in late {
            drop(conn);
            let peer = peer_of(&job.request);
            let start = Start::Failed("upstream_timeout", 504);
            self.hand_over(peer, Job::Forward(job, start));
        }
        next
    }
}

/// How a write to a client went.
enum Written {
    All,
    /// The client hung up.
    Gone,
    /// The client does not take more now: this much of the bytes went.
    Stalled(usize),
}

/// Writes `bytes` to a client and flushes, giving up at the first write that finds no
/// room (the client connection's send timeout, 10 ms).
fn write_now(client: &mut Box<dyn std::io::Write + Send>, bytes: &[u8]) -> Written {
    use std::io::ErrorKind;
    let stalled =
        |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    let mut at = 0;
    while at < bytes.len() {
        match client.write(&bytes[at..]) {
            Ok(0) => return Written::Gone,
            Ok(n) => at += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if stalled(&e) => return Written::Stalled(at),
            Err(_) => return Written::Gone,
        }
    }
    match client.flush() {
        Ok(()) => Written::All,
        Err(e) if stalled(&e) => Written::Stalled(at),
        Err(_) => Written::Gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{setsockopt, sockopt};
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (peer, _) = listener.accept().unwrap();
        (stream, peer)
    }

    fn job(head: Vec<u8>) -> Box<Forward> {
        Box::new(Forward {
            request: tiny_http::TestRequest::new().into(),
            target: "/".into(),
            id: None,
            head,
            fast: true,
        })
    }

    #[test]
    fn a_head_that_does_not_go_out_whole_comes_back_and_its_connection_is_dropped() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let kept = Kept::new();
        // A connection whose way to the upstream is full: the upstream reads nothing.
        let (stream, mut full_peer) = pair(&listener);
        setsockopt(&stream, sockopt::SndBuf, &4096).unwrap();
        setsockopt(&full_peer, sockopt::RcvBuf, &4096).unwrap();
        let conn = Conn::new(stream);
        while conn.send_now(&[b'x'; 1024]).is_ok() {}
        kept.give_back(conn);
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(64);
        let job = kept
            .send(job(head.clone()))
            .expect_err("no room for the head");
        assert!(kept.take().is_none(), "the connection is dropped");
        // What reached the upstream ends before the head's blank line (it is cut short, or
        // absent), and then the connection ends.
        let mut got = Vec::new();
        full_peer.read_to_end(&mut got).unwrap();
        assert!(!got.ends_with(b"\r\n\r\n"), "{} bytes", got.len());
        // On a connection with room, it goes out whole.
        let (stream, mut peer) = pair(&listener);
        kept.give_back(Conn::new(stream));
        assert!(kept.send(job).is_ok());
        let mut got = vec![0; head.len()];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(got, head);
        assert!(kept.take().is_none(), "it carries the request: not idle");
    }
}
