//! A log line taken apart field by field in its encoding (JSON or text), never searched
//! for a field name.

/// The fields of a line the report reads, as the line holds them (escaped).
#[derive(Default)]
pub(super) struct Fields<'a> {
    pub(super) timestamp: &'a [u8],
    pub(super) action: &'a [u8],
    pub(super) outcome: &'a [u8],
    pub(super) reason: &'a [u8],
    pub(super) source: &'a [u8],
    pub(super) client: &'a [u8],
    pub(super) user: &'a [u8],
    pub(super) how: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(super) fn set(&mut self, key: &[u8], value: &'a [u8]) {
        let field = match key {
            b"@timestamp" => &mut self.timestamp,
            b"event.action" => &mut self.action,
            b"event.outcome" => &mut self.outcome,
            b"event.reason" => &mut self.reason,
            b"source.ip" => &mut self.source,
            b"client.ip" => &mut self.client,
            b"user.id" => &mut self.user,
            b"jwtguard.worker.how" => &mut self.how,
            _ => return,
        };
        *field = value;
    }

    /// The fields of `line` in either encoding; `None` for a line jwtguard did not write
    /// (or that was cut short).
    pub(super) fn of(line: &'a [u8]) -> Option<Fields<'a>> {
        match line.first()? {
            b'{' => Fields::json(line),
            b'@' => Fields::text(line),
            _ => None,
        }
    }

    /// `{"key":value,...}` as jwtguard writes it: no spaces, string values, numbers, and
    /// arrays of strings.
    pub(super) fn json(line: &'a [u8]) -> Option<Fields<'a>> {
        let mut fields = Fields::default();
        let mut rest = &line[1..];
        loop {
            rest = rest.strip_prefix(b"\"")?;
            let end = string_end(rest)?;
            let key = &rest[..end];
            rest = rest[end + 1..].strip_prefix(b":")?;
            let (value, after) = match *rest.first()? {
                b'"' => {
                    let end = string_end(&rest[1..])?;
                    (&rest[1..1 + end], &rest[end + 2..])
                }
                b'[' => {
                    // Arrays hold jwtguard's own codes; a string in one is skipped whole.
                    let mut at = 1;
                    loop {
                        match *rest.get(at)? {
                            b']' => break,
                            b'"' => at += string_end(&rest[at + 1..])? + 2,
                            _ => at += 1,
                        }
                    }
                    (&rest[1..at], &rest[at + 1..])
                }
                _ => {
                    let end = rest.iter().position(|&b| b == b',' || b == b'}')?;
                    (&rest[..end], &rest[end..])
                }
            };
            fields.set(key, value);
            match after.first()? {
                b',' => rest = &after[1..],
                b'}' if after.len() == 1 => return Some(fields),
                _ => return None,
            }
        }
    }

    /// `@timestamp=... key=value key="quoted" ... message="..."`, and a seal after it.
    pub(super) fn text(line: &'a [u8]) -> Option<Fields<'a>> {
        let mut fields = Fields::default();
        let mut rest = line;
        loop {
            let eq = memchr::memchr(b'=', rest)?;
            let key = &rest[..eq];
            if key.contains(&b' ') || key.contains(&b'"') {
                return None;
            }
            rest = &rest[eq + 1..];
            let (value, after) = if let Some(quoted) = rest.strip_prefix(b"\"") {
                let end = string_end(quoted)?;
                (&quoted[..end], &quoted[end + 1..])
            } else {
                let end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            };
            fields.set(key, value);
            match after.first() {
                None => return Some(fields),
                Some(b' ') => rest = &after[1..],
                Some(_) => return None,
            }
        }
    }
}

/// Where the `"` that ends a string is in `s` (which starts after the opening one): the
/// first one not escaped by a backslash.
pub(super) fn string_end(s: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        at += memchr::memchr2(b'"', b'\\', &s[at..])?;
        if s[at] == b'"' {
            return Some(at);
        }
        at += 2;
        if at > s.len() {
            return None;
        }
    }
}
