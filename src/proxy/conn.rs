//! An upstream connection and the buffer its answers are read into, kept together for
//! as long as the connection is: no allocation per exchange.

use std::io::{self, BufRead, Read};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, recv, send};

/// The buffer kept with each upstream connection. An answer of a small head and body that
/// fits whole is passed on by the reactor in one write.
pub(super) const BUFFER: usize = 8 * 1024;

/// An upstream connection with its read buffer.
pub(super) struct Conn {
    stream: TcpStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Conn {
    pub(super) fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: vec![0; BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    pub(super) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// What has been read and not consumed.
    pub(super) fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Whether the buffer holds all it can: what it holds is not whole in [`BUFFER`] bytes.
    pub(super) fn full(&self) -> bool {
        self.end - self.start == self.buf.len()
    }

    /// Reads what has arrived, without waiting: `Ok(0)` at the end of the stream, an error
    /// of kind `WouldBlock` when nothing has. The buffer must not be [`full`](Conn::full).
    pub(super) fn read_now(&mut self) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let fd = self.stream.as_raw_fd();
        let n = recv(fd, &mut self.buf[self.end..], MsgFlags::MSG_DONTWAIT)?;
        self.end += n;
        Ok(n)
    }

    /// Sends what the socket takes of `bytes` now, without waiting.
    pub(super) fn send_now(&self, bytes: &[u8]) -> io::Result<usize> {
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        Ok(send(self.stream.as_raw_fd(), bytes, flags)?)
    }
}

impl Read for Conn {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.start == self.end && out.len() >= self.buf.len() {
            return (&self.stream).read(out);
        }
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(out.len());
            out[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Conn {
    /// What is buffered, or else what one (blocking) read brings.
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.end = (&self.stream).read(&mut self.buf)?;
        }
        Ok(&self.buf[self.start..self.end])
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{ErrorKind, Write};
    use std::net::TcpListener;

    #[test]
    fn reads_now_or_says_it_would_wait_and_buffers_across_reads() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut conn = Conn::new(TcpStream::connect(listener.local_addr().unwrap()).unwrap());
        let (mut peer, _) = listener.accept().unwrap();
        let err = conn.read_now().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock);
        assert_eq!(conn.send_now(b"ping").unwrap(), 4);
        let mut got = [0u8; 4];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        peer.write_all(b"HTTP/1.1 200 OK\r\n").unwrap();
        peer.flush().unwrap();
        while conn.buffered().len() < 17 {
            let _ = conn.read_now();
        }
        conn.consume(9);
        assert_eq!(conn.buffered(), b"200 OK\r\n");
        peer.write_all(b"rest").unwrap();
        drop(peer);
        let mut all = Vec::new();
        conn.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"200 OK\r\nrest");
        assert_eq!(conn.read_now().unwrap(), 0, "the end of the stream");
    }
}
