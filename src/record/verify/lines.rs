//! Reading a log's lines in large blocks, holding at most [`MAX_LINE_BYTES`] of any one:
//! a longer line is not jwtguard's, and its bytes are skipped, never held.

use std::fs::File;
use std::io::{self, BufRead as _, BufReader, Read};
use std::path::Path;

use super::{BLOCK_BYTES, Pos};
use crate::event::MAX_LINE_BYTES;
use crate::record::sealed;

/// The line after `pos`, through the following files; `None` at the end, or when it is
/// longer than jwtguard writes.
pub(super) fn next_line(files: &[impl AsRef<Path>], pos: Pos) -> io::Result<Option<Vec<u8>>> {
    let mut next = None;
    scan(files, pos, |_, line| {
        next = line.bytes().map(<[u8]>::to_vec);
        false
    })?;
    Ok(next)
}

/// Where the line with `sequence` is, after `pos`.
pub(super) fn find_sequence(
    files: &[impl AsRef<Path>],
    pos: Pos,
    sequence: u64,
) -> io::Result<Option<Pos>> {
    let mut found = None;
    scan(files, pos, |at, line| {
        if line
            .bytes()
            .and_then(sealed::split_seal)
            .is_some_and(|s| s.sequence == sequence)
        {
            found = Some(at);
        }
        found.is_none()
    })?;
    Ok(found)
}

/// Calls `each` with the lines after `pos`, until it returns false.
pub(super) fn scan(
    files: &[impl AsRef<Path>],
    pos: Pos,
    mut each: impl FnMut(Pos, Line<'_>) -> bool,
) -> io::Result<()> {
    let mut reader = None;
    for (index, path) in files.iter().enumerate().skip(pos.file) {
        let lines = Lines::reuse(&mut reader, File::open(path.as_ref())?);
        let mut line = 0;
        while let Some(read) = lines.next()? {
            line += 1;
            if index == pos.file && line <= pos.line {
                continue;
            }
            if !each(Pos { file: index, line }, read) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A line as [`Lines`] reads it, without its newline.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line<'a> {
    /// A line ended by a newline, of at most [`MAX_LINE_BYTES`] with it.
    Whole(&'a [u8]),
    /// The end of the file, after the last newline: a line cut short.
    Torn(&'a [u8]),
    /// A line (ended or not) of more bytes than a whole line holds: how many.
    TooLong(u64),
}

impl<'a> Line<'a> {
    /// The bytes of a line of at most [`MAX_LINE_BYTES`].
    pub(super) fn bytes(&self) -> Option<&'a [u8]> {
        match *self {
            Line::Whole(bytes) | Line::Torn(bytes) => Some(bytes),
            Line::TooLong(_) => None,
        }
    }
}

/// Reads lines into one buffer of [`MAX_LINE_BYTES`], which never grows: the rest of a
/// longer line is skipped, a block at a time, so any file is read in bounded memory.
pub(super) struct Lines<R> {
    pub(super) reader: BufReader<R>,
    pub(super) buf: Vec<u8>,
}

impl<R: Read> Lines<R> {
    /// Reads blocks of `block` bytes from `reader`.
    pub(super) fn new(reader: R, block: usize) -> Self {
        Lines {
            reader: BufReader::with_capacity(block, reader),
            buf: Vec::with_capacity(MAX_LINE_BYTES),
        }
    }

    /// The lines of `reader`, read with the buffers of the one in `slot` (what it had not
    /// read of its own is dropped), or with new ones: one allocation for any number of
    /// files (a new 1 MiB block each cost 0.5 s of CPU on 100,000 empty files).
    pub(super) fn reuse(slot: &mut Option<Self>, reader: R) -> &mut Self {
        let lines = match slot.take() {
            Some(mut lines) => {
                let left = lines.reader.buffer().len();
                lines.reader.consume(left);
                *lines.reader.get_mut() = reader;
                lines
            }
            None => Lines::new(reader, BLOCK_BYTES),
        };
        slot.insert(lines)
    }

    /// The next line, or `None` at the end.
    pub(super) fn next(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let limit = MAX_LINE_BYTES as u64;
        let n = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        if self.buf.last() == Some(&b'\n') {
            return Ok(Some(Line::Whole(&self.buf[..n - 1])));
        }
        if n < MAX_LINE_BYTES {
            return Ok(Some(Line::Torn(&self.buf)));
        }
        // Longer than jwtguard writes: the rest is skipped to its newline, a block at a
        // time, and only counted.
        let mut bytes = limit;
        loop {
            let block = match self.reader.fill_buf() {
                Ok(block) => block,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let (skip, end) = match memchr::memchr(b'\n', block) {
                Some(i) => (i, i + 1),
                None if block.is_empty() => break,
                None => (block.len(), block.len()),
            };
            self.reader.consume(end);
            bytes += skip as u64;
            if skip < end {
                break;
            }
        }
        Ok(Some(Line::TooLong(bytes)))
    }
}
