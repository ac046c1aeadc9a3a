//! A chunked body (RFC 9112 §7.1) read from bytes as they come, apart from any socket:
//! fed what arrived, it passes the data on and says where the body ends, to the byte, so
//! that a connection is reused only when nothing follows its message (issue 17). Strict:
//! every line ends in CRLF, a chunk's data is followed by CRLF, and no line is longer
//! than the caller's limit.

/// Why a chunked body cannot be read: its framing is off, and so is everything after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bad {
    /// A chunk-size that is not hexadecimal, or over 16 digits.
    Size,
    /// A line without its CRLF where one must be, or a chunk's data without one after it.
    LineEnd,
    /// A chunk-size or trailer line over the limit.
    LongLine,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In a chunk-size line: its value so far and how many digits.
    Size { value: u64, digits: u8 },
    /// After the size (kept here), in its extensions, up to the CR.
    Extension(u64),
    /// The LF of a line whose CR came; then `next`.
    Lf { next: Next },
    /// In a chunk's data: this much more.
    Data(u64),
    /// The CR after a chunk's data.
    DataCr,
    /// At the start of a trailer line (or the blank line that ends the body).
    TrailerStart,
    /// In a trailer line, up to the CR.
    Trailer,
    /// The body ended.
    Done,
}

/// Where a line's LF leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// A chunk of this size: its data, or the trailers after the last one.
    Chunk(u64),
    /// The next chunk-size line.
    Size,
    /// The next trailer line.
    Trailer,
    /// The end of the body.
    End,
}

/// A chunked body being read.
#[derive(Clone, Debug)]
pub(crate) struct Chunked {
    state: State,
    /// Bytes of the current chunk-size or trailer line so far.
    line: usize,
    /// The longest chunk-size or trailer line (its CRLF included).
    max_line: usize,
}

impl Chunked {
    pub(crate) fn new(max_line: usize) -> Chunked {
        Chunked {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            line: 0,
            max_line,
        }
    }

    /// Whether the body ended.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads from `input` what belongs to the body, passing each piece of data to `data`;
    /// returns how many bytes were the body's. Once [`is_done`](Chunked::is_done), what
    /// follows in `input` is not the body's. Trailers are read and dropped.
    pub(crate) fn feed(&mut self, input: &[u8], data: &mut dyn FnMut(&[u8])) -> Result<usize, Bad> {
        let mut at = 0;
        while at < input.len() {
            if let State::Data(left) = self.state {
                let take = left.min((input.len() - at) as u64) as usize;
                data(&input[at..at + take]);
                at += take;
                self.state = match left - take as u64 {
                    0 => State::DataCr,
                    left => State::Data(left),
                };
                continue;
            }
            if self.state == State::Done {
                break;
            }
            let byte = input[at];
            at += 1;
            self.step(byte)?;
        }
        Ok(at)
    }

    /// One byte of a control line (a size, the CRLF after data, a trailer).
    fn step(&mut self, byte: u8) -> Result<(), Bad> {
        let in_line = matches!(
            self.state,
            State::Size { .. } | State::Extension(_) | State::TrailerStart | State::Trailer
        ) || matches!(self.state, State::Lf { next } if next != Next::Size);
        if in_line {
            self.line += 1;
            if self.line > self.max_line {
                return Err(Bad::LongLine);
            }
        }
        self.state = match (self.state, byte) {
            (State::Size { value, digits }, _) if byte.is_ascii_hexdigit() => {
                if digits == 16 {
                    return Err(Bad::Size);
                }
                let digit = (byte as char).to_digit(16).unwrap_or(0);
                State::Size {
                    value: value << 4 | u64::from(digit),
                    digits: digits + 1,
                }
            }
            (State::Size { digits: 0, .. }, _) => return Err(Bad::Size),
            (State::Size { value, .. }, b'\r') => State::Lf {
                next: Next::Chunk(value),
            },
            // Extensions (and the whitespace before them) are passed over, not passed on.
            (State::Size { value, .. }, b';' | b' ' | b'\t') => State::Extension(value),
            (State::Size { .. }, b'\n') => return Err(Bad::LineEnd),
            (State::Size { .. }, _) => return Err(Bad::Size),
            (State::Extension(size), b'\r') => State::Lf {
                next: Next::Chunk(size),
            },
            (State::Extension(_), b'\n') => return Err(Bad::LineEnd),
            (State::Extension(size), _) => State::Extension(size),
            (State::Lf { next }, b'\n') => {
                self.line = 0;
                match next {
                    Next::Chunk(0) => State::TrailerStart,
                    Next::Chunk(size) => State::Data(size),
                    Next::Size => State::Size {
                        value: 0,
                        digits: 0,
                    },
                    Next::Trailer => State::TrailerStart,
                    Next::End => State::Done,
                }
            }
            (State::Lf { .. }, _) => return Err(Bad::LineEnd),
            (State::DataCr, b'\r') => State::Lf { next: Next::Size },
            (State::DataCr, _) => return Err(Bad::LineEnd),
            (State::TrailerStart, b'\r') => State::Lf { next: Next::End },
            (State::TrailerStart | State::Trailer, b'\n') => return Err(Bad::LineEnd),
            (State::Trailer, b'\r') => State::Lf {
                next: Next::Trailer,
            },
            (State::TrailerStart | State::Trailer, _) => State::Trailer,
            // `feed` takes data in bulk and stops at the end: never here.
            (state @ (State::Data(_) | State::Done), _) => state,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data and the body's length in `input`, fed in pieces cut at `cuts`.
    fn read(input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, Option<usize>), Bad> {
        let mut body = Chunked::new(64);
        let mut data = Vec::new();
        let (mut from, mut used) = (0, 0);
        for &cut in cuts.iter().chain([&input.len()]) {
            let cut = cut.clamp(from, input.len());
            used += body.feed(&input[from..cut], &mut |d| data.extend_from_slice(d))?;
            from = cut;
            if body.is_done() {
                break;
            }
        }
        Ok((data, body.is_done().then_some(used)))
    }

    #[test]
    fn bodies_end_exactly_at_their_framing() {
        /// Input, and its data and length (`None`: not whole yet), or why not.
        type Case = (&'static [u8], Result<(&'static [u8], Option<usize>), Bad>);
        let cases: [Case; 12] = [
            (b"5\r\nhello\r\n0\r\n\r\n", Ok((b"hello", Some(15)))),
            // What follows the body is not the body's: the caller sees it.
            (b"5\r\nhello\r\n0\r\n\r\nHTTP/1.1", Ok((b"hello", Some(15)))),
            (
                b"A;name=\"v\"\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
                Ok((b"0123456789", Some(37))),
            ),
            (b"3 ;x\r\nabc\r\n0\r\n\r\n", Ok((b"abc", Some(16)))),
            // Not whole yet.
            (b"5\r\nhel", Ok((b"hel", None))),
            (b"0\r\n\r", Ok((b"", None))),
            // Data not followed by CRLF: the framing is off.
            (b"5\r\nhelloXY\r\n0\r\n\r\n", Err(Bad::LineEnd)),
            (b"5\r\nhelloX\n0\r\n\r\n", Err(Bad::LineEnd)),
            // Bare LF line ends.
            (b"5\nhello\r\n0\r\n\r\n", Err(Bad::LineEnd)),
            (b"0\r\n\n", Err(Bad::LineEnd)),
            (b"\r\n", Err(Bad::Size)),
            (b"12345678901234567\r\n", Err(Bad::Size)),
        ];
        for (input, want) in cases {
            let want = want.map(|(d, end)| (d.to_vec(), end));
            assert_eq!(read(input, &[]), want, "{}", String::from_utf8_lossy(input));
        }
        // A line over the limit (64 here).
        let long = format!("1;{}\r\n", "x".repeat(80));
        assert_eq!(read(long.as_bytes(), &[]), Err(Bad::LongLine));
        let trailer = format!("0\r\nX: {}\r\n\r\n", "y".repeat(80));
        assert_eq!(read(trailer.as_bytes(), &[]), Err(Bad::LongLine));
    }

    proptest::proptest! {
        /// However the bytes are cut, the same data, and the same end.
        #[test]
        fn a_body_cut_anywhere_reads_the_same(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..40), 0..6),
            cuts in proptest::collection::vec(0usize..300, 0..8),
            after in proptest::collection::vec(proptest::num::u8::ANY, 0..10),
        ) {
            let mut input = Vec::new();
            let mut want = Vec::new();
            for chunk in &chunks {
                input.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                input.extend_from_slice(chunk);
                input.extend_from_slice(b"\r\n");
                want.extend_from_slice(chunk);
            }
            input.extend_from_slice(b"0\r\n\r\n");
            let end = input.len();
            input.extend_from_slice(&after);
            let mut cuts = cuts;
            cuts.sort_unstable();
            proptest::prop_assert_eq!(read(&input, &cuts), Ok((want, Some(end))));
        }
    }
}
