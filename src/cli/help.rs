//! The help texts: `jwtguard help`, and each command's own.

/// `jwtguard help` and `jwtguard --help`: the commands, and where each one's options are.
pub(super) const USAGE: &str = "\
Usage: jwtguard [serve] [OPTIONS]
       jwtguard token --sub NAME [--ttl SECONDS] [--claim KEY=VALUE]... [OPTIONS]
       jwtguard jwks --from-pem PRIVATE_KEY [--kid KID] [--alg ALG]
       jwtguard seal-init KEYFILE
       jwtguard verify-log --key VERIFICATION_KEY [--as-of TIME] LOGFILE...
       jwtguard report [--since TIME] [--until TIME] [--html FILE] LOGFILE...
       jwtguard help [COMMAND] | --help | --version

Commands:
  serve       guard HTTP paths with tokens and write the security log (the default)
  token       print a token signed with the configured secret, or with --key-file
  jwks        print the public JWK Set of a PEM private key (for --jwks)
  seal-init   create a key to seal the security log with (serve --seal-key)
  verify-log  check a sealed log: exit 0 intact, 1 tampered or cut short
  report      sum a security log up on one screen, or as an HTML page
  help        print this, or a command's options: jwtguard help COMMAND

Each command's options: `jwtguard help COMMAND` or `jwtguard COMMAND --help`.

The secret comes from JWTGUARD_SECRET, or from the file named by JWTGUARD_SECRET_FILE
or --secret-file. With none, `serve` makes a random one for this run and prints a demo
token (on a loopback address only); `token` fails.

Environment: JWTGUARD_SECRET, JWTGUARD_SECRET_FILE, RUST_LOG (levels of everything but
the security events; default info). Exit codes: 0 success, 2 usage (a malformed or
out-of-range value), 1 any other failure.
";

/// `jwtguard help serve`.
const SERVE: &str = "\
Usage: jwtguard [serve] [OPTIONS]

Serves HTTP on --listen: paths under --protect need a bearer token (HS256 with a secret,
or RS256/RS384/RS512/PS256/ES256/ES384/EdDSA with keys from --jwks), /healthz is
open, anything else is 404. Prints `listening on http://IP:PORT` on stdout once bound;
writes one security event per decision to stderr, or to --log-file. A supervisor
process holds the socket and runs the server in a worker (or --workers N sharing
it): it restarts a worker that dies, replaces one that stalls, and on SIGHUP reloads
(a new worker reads the --config file, the secret file and the keys again, and takes
over without a dropped request); SIGTERM and SIGINT stop. A socket passed by systemd
(LISTEN_FDS) is served.

Serve options:
  --listen HOST:PORT       address to listen on, port 0 for any [default: 127.0.0.1:8080]
  --protect PREFIX         path prefix that needs a token, repeatable [default: /api/]
  --upstream http://HOST:PORT
                           forward allowed requests to this application; then every
                           path needs a token but those under --public
  --public PREFIX          path prefix that needs no token, repeatable (with --upstream
                           or --forward-auth)
  --forward-auth PATH      answer a proxy's auth subrequests here (nginx auth_request,
                           Caddy forward_auth): 200, 401 or 403, never 400
  --strip-authorization    do not forward Authorization to the upstream
  --allow-body-on-any-method
                           forward a body on GET, HEAD, OPTIONS and DELETE too (weaker:
                           an app that does not read it takes it for a request); without
                           it such a request is refused, 400
  --claim-header CLAIM=HEADER
                           also pass this claim (a dotted path for nested ones) on in
                           this header, repeatable; X-Auth-User always carries the user
  --require PREFIX=SCOPE   paths under PREFIX need SCOPE (in scope, scp or roles): 403
                           without it; repeatable
  --trusted-proxy CIDR     believe X-Forwarded-For, Forwarded, X-Real-IP and the
                           original method and URI from these peers, repeatable
  --client-ip-header NAME  believe only this one of X-Forwarded-For, Forwarded and
                           X-Real-IP from them [default: the first present]
  --upstream-timeout SECONDS
                           for the upstream to connect and between reads [default: 30]
  --max-token-bytes N      longest token accepted, 1 to 65536 [default: 8192]
  --max-header-bytes N     longest request head, then 431 [default: 16384]
  --header-timeout SECONDS for a whole request head, then 408 [default: 10]
  --idle-timeout SECONDS   between requests on a kept-alive connection [default: 60]
  --body-timeout SECONDS   for a request body thrown away, from its start [default: 60]
  --send-timeout SECONDS   for a client to read any of its answers, else it is
                           dropped [default: 5]
  --max-connections N      connections held at once; past it the longest idle one
                           is closed, or the new one [default: 1024]
  --max-connections-per-address N
                           the same from one address, 0 for no cap; --trusted-proxy
                           peers are not capped [default: 256]
  --leeway SECONDS         clock skew allowed on exp and nbf, 0 to 300 [default: 30]
  --max-failures N         failed authentications (bad signature, unknown key,
                           malformed token) an address may make per window; past them
                           429 until the window ends; 0 turns it off [default: 20]
  --failure-window SECONDS the window of --max-failures, 1 to 86400 [default: 60]
  --limiter-table N        addresses the limiter remembers, 8 to 1048576 [default: 4096]
  --metrics HOST:PORT      answer GET /metrics (Prometheus) there; no authentication:
                           keep it off the public network [default: off]
  --allow-missing-exp      accept tokens without exp (weaker; warns at start-up)
  --log-format json|text   security log encoding [default: json]
  --log-file PATH          append the security log to PATH instead of stderr
                           (a new file gets mode 0600)
  --config FILE            options from FILE, one per line (NAME VALUE, no --), here
                           in the command line; read again on a reload
  --no-supervisor          serve in this one process: no restart, no reload
  --workers N|auto         worker processes sharing the listening socket, auto for
                           one per CPU; fixed at start (a reload keeps it) [default: 1]
  --seal-key KEYFILE       seal every log line (event.sequence, event.hash) with the
                           key seal-init made; the key moves on every 15 minutes
";

/// `jwtguard help token`.
const TOKEN: &str = "\
Usage: jwtguard token --sub NAME [--ttl SECONDS] [--claim KEY=VALUE]... [OPTIONS]

Prints a token signed with the configured secret (or the --jwks key --kid names), or
with --key-file.

Token options:
  --sub NAME               the subject (user) of the token
  --ttl SECONDS            lifetime [default: 3600]
  --claim KEY=VALUE        an extra claim, repeatable; VALUE is JSON if it parses,
                           else a string; null removes the claim (exp=null)
  --kid KID                sign with this key of --jwks, and name it in the header
                           (with --key-file: the kid to name [default: thumbprint])
  --key-file PEM           sign with this RSA (2048 bits or more), EC P-256/P-384 or
                           Ed25519 private key (PKCS#1, SEC1 or PKCS#8 PEM)
  --alg ALG                with --key-file: RS256, RS384, RS512 or PS256 for an RSA
                           key [default: RS256; ES256, ES384, EdDSA by key]
";

/// `jwtguard help jwks`.
const JWKS: &str = "\
Usage: jwtguard jwks --from-pem PRIVATE_KEY [--kid KID] [--alg ALG]

Prints the public JWK Set of a PEM private key, for `serve --jwks`.

Jwks options:
  --from-pem PRIVATE_KEY   an RSA, EC P-256/P-384 or Ed25519 private key (PEM)
  --kid KID                the key's kid [default: its RFC 7638 thumbprint]
  --alg ALG                for an RSA key: RS256, RS384, RS512 or PS256 [default: RS256]
  -h, --help               print this help
";

/// `jwtguard help seal-init`.
const SEAL_INIT: &str = "\
Usage: jwtguard seal-init KEYFILE

Creates a sealing key file (mode 0600, never overwritten) for `serve --seal-key` and
prints its verification key on stdout: keep that off this host.

Seal-init options:
  -h, --help               print this help
";

/// `jwtguard help verify-log`.
const VERIFY_LOG: &str = "\
Usage: jwtguard verify-log --key VERIFICATION_KEY [--as-of TIME] LOGFILE...

Checks a sealed log, its files oldest first (rotated ones, then the current one):
exit 0 intact, 1 tampered or cut short, 2 usage.

Verify-log options:
  --key VERIFICATION_KEY   the line seal-init printed
  --as-of TIME             judge the log's end as of TIME (2026-11-27T21:42:09Z)
                           instead of now
  -h, --help               print this help
";

/// `jwtguard help report`.
const REPORT: &str = "\
Usage: jwtguard report [--since TIME] [--until TIME] [--html FILE] LOGFILE...

Sums a security log up on one screen (json or text, sealed or not, rotated files, .gz
ones too): requests allowed and refused, refusals by reason, top refused clients and
users, rate-limited clients, upstream, process and seal events, a timeline. It does not
verify a sealed log: run verify-log for that.

Report options:
  --since TIME, --until TIME
                           only lines from TIME on, or before TIME (UTC,
                           like 2026-11-27T21:42:09Z)
  -h, --help               print this help
  --html FILE              also write the report as one HTML page (no script)
";

/// The options `serve` and `token` share.
const COMMON: &str = "
Common options:
  --jwks FILE              keys by kid, a JWK Set (instead of a secret): oct (HS256),
                           RSA, EC (P-256, P-384), OKP (Ed25519); each key accepts only
                           its alg; the token's kid picks the key. The file is read
                           again when it changes (looked at once a second at most): a
                           set that does not load leaves the last good one in use
  --jwks-url URL           serve: keys from a JWK Set at http://HOST:PORT/PATH (a local
                           agent or sidecar; plain HTTP, no https: use --jwks FILE and
                           curl for that). Protected paths answer 503 until it loads;
                           fetched again every --jwks-refresh and, at most every 30 s,
                           when a token names an unknown kid
  --jwks-refresh SECONDS   how often --jwks-url is fetched [default: 300]
  --token-cache N          public-key tokens whose signature verified, remembered
                           until their exp (claims checked on every use); 0: off
                           [default: 1024]
  --issuer ISS             tokens must carry iss=ISS (and `token` sets it)
  --audience AUD           tokens must carry aud=AUD (and `token` sets it)
  --secret-file PATH       read the secret from PATH (one trailing newline is stripped)
  --allow-weak-secret      accept a secret shorter than 32 bytes (weaker)
  -h, --help               print this help
  -V, --version            print the version

";

/// The help of `command` (`serve`, `token`, ...), or `None` for an unknown one.
pub(super) fn help(command: &str) -> Option<String> {
    let (text, common) = match command {
        "serve" => (SERVE, true),
        "token" => (TOKEN, true),
        "jwks" => (JWKS, false),
        "seal-init" => (SEAL_INIT, false),
        "verify-log" => (VERIFY_LOG, false),
        "report" => (REPORT, false),
        "help" => (USAGE, false),
        _ => return None,
    };
    Some(if common {
        format!("{text}{COMMON}")
    } else {
        text.to_owned()
    })
}
