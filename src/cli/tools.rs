//! The command lines of the tools: `jwks`, `seal-init`, `verify-log` and `report`.

use std::path::PathBuf;

use super::help::help;
use super::{Command, unexpected};

/// The rest of a `jwks` command line.
pub(super) fn jwks(parser: &mut lexopt::Parser) -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;
    let (mut pem, mut kid, mut alg) = (None, None, None);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("from-pem") => pem = Some(PathBuf::from(parser.value()?)),
            Long("kid") => kid = Some(parser.value()?.string()?),
            Long("alg") => alg = Some(parser.value()?.string()?),
            Short('h') | Long("help") => {
                return Ok(Command::Help(help("jwks").unwrap_or_default()));
            }
            _ => return Err(unexpected(arg, "jwks")),
        }
    }
    let pem = pem.ok_or("jwks needs --from-pem PRIVATE_KEY")?;
    Ok(Command::Jwks { pem, kid, alg })
}

/// The rest of a `seal-init` or `verify-log` command line.
pub(super) fn tool(command: &str, parser: &mut lexopt::Parser) -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;
    let verify = command == "verify-log";
    let mut files = Vec::new();
    let mut key = None;
    let mut as_of = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Value(file) => files.push(PathBuf::from(file)),
            Long("key") if verify => {
                let text = parser.value()?.string()?;
                key = Some(
                    text.parse()
                        .map_err(|e: String| format!("invalid --key: {e}"))?,
                );
            }
            Long("as-of") if verify => {
                let text = parser.value()?.string()?;
                let ms = jwtguard::seal::parse_time(&text).ok_or_else(|| {
                    format!("invalid --as-of: {text:?} is not a UTC time like 2026-11-27T21:42:09Z")
                })?;
                as_of = Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
            }
            Short('h') | Long("help") => {
                return Ok(Command::Help(help(command).unwrap_or_default()));
            }
            _ => return Err(unexpected(arg, command)),
        }
    }
    if !verify {
        return match <[PathBuf; 1]>::try_from(files) {
            Ok([file]) => Ok(Command::SealInit(file)),
            Err(_) => Err("seal-init takes one KEYFILE".into()),
        };
    }
    let key = key.ok_or("verify-log needs --key VERIFICATION_KEY (the line seal-init printed)")?;
    if files.is_empty() {
        return Err("verify-log needs the log files, oldest first".into());
    }
    Ok(Command::VerifyLog {
        key,
        as_of: as_of.unwrap_or_else(std::time::SystemTime::now),
        files,
    })
}

/// The rest of a `report` command line.
pub(super) fn report(parser: &mut lexopt::Parser) -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;
    let mut options = crate::report::Options {
        files: Vec::new(),
        html: None,
        since: None,
        until: None,
    };
    while let Some(arg) = parser.next()? {
        match arg {
            Value(file) => options.files.push(PathBuf::from(file)),
            Long("html") => options.html = Some(PathBuf::from(parser.value()?)),
            Long(flag @ ("since" | "until")) => {
                let flag = flag.to_owned();
                let text = parser.value()?.string()?;
                let ms = jwtguard::seal::parse_time(&text).ok_or_else(|| {
                    format!(
                        "invalid --{flag}: {text:?} is not a UTC time like 2026-11-27T21:42:09Z"
                    )
                })?;
                match flag.as_str() {
                    "since" => options.since = Some(ms),
                    _ => options.until = Some(ms),
                }
            }
            Short('h') | Long("help") => {
                return Ok(Command::Help(help("report").unwrap_or_default()));
            }
            _ => return Err(unexpected(arg, "report")),
        }
    }
    if options.files.is_empty() {
        return Err("report needs the log files (rotated ones too, .gz or not)".into());
    }
    Ok(Command::Report(options))
}
