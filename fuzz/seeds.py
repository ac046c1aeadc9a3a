#!/usr/bin/env python3
"""Writes the seed corpus in fuzz/corpus/<target>/: a few dozen readable inputs per target,
in the input formats of fuzz/src/lib.rs. Run it again after changing those formats:
`python3 fuzz/seeds.py` (it rewrites fuzz/corpus/ whole)."""

import base64
import hashlib
import hmac
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
# src/fuzzing.rs: SECRET.
SECRET = b"fuzzing-secret-0123456789abcdef0123456789"
# fuzz/src/lib.rs: NOW.
NOW = 1_700_000_000.25
EXP = 1_700_000_100


def write(target, name, data):
    folder = os.path.join(HERE, "corpus", target)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(header, claims, secret=SECRET):
    message = b64(header) + "." + b64(claims)
    sig = hmac.new(secret, message.encode(), hashlib.sha256).digest()
    return message + "." + b64(sig)


def authorization():
    seeds = {
        "none": "0",
        "empty-value": "1",
        "bearer": "1Bearer abc.def.ghi",
        "lower-spaces": "1bearer   eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln",
        "upper-all-chars": "1BEARER a-b.c_d~e+f/g==",
        "padded-around": "1 \tBearer abc \t",
        "basic": "1Basic dXNlcjpwYXNz",
        "token-scheme": "1Token abc",
        "scheme-only": "1Bearer",
        "scheme-space": "1Bearer ",
        "tab-after-scheme": "1Bearer\tabc",
        "two-words": "1Bearer a b",
        "comma": "1Bearer a,b",
        "only-equals": "1Bearer ===",
        "equals-inside": "1Bearer a=b",
        "quoted": '1Bearer "abc"',
        "non-ascii": "1Bearer \u00e9t\u00e9",
        "newline-inside": "1Bearer a\nb",
        "two-headers": "2Bearer a\nBearer b",
        "three-headers": "3Bearer a\n\nBearer c",
        "two-one-empty": "2Bearer a\n",
        "at-cap": "1Bearer " + "a" * 8192,
        "over-cap": "1Bearer " + "a" * 8193,
        "at-cap-padded": "1Bearer " + "a" * 8190 + "==",
    }
    for name, data in seeds.items():
        write("authorization", name, data)
    write("authorization", "invalid-utf8", b"1Bearer \xff\xfe")


def verify():
    good = {"sub": "alice", "exp": EXP}
    hs256 = b'{"typ":"JWT","alg":"HS256"}'
    genuine = token(hs256, json.dumps(good).encode())
    when = struct.pack("<Q", int(NOW * 1e9))
    raw = {
        "genuine": "r" + genuine,
        "genuine-no-clock": "n" + genuine,
        "genuine-at-time": b"T" + when + genuine.encode(),
        "garbage": "rgarbage",
        "three-parts": "ra.b.c",
        "not-json": "reyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln",
        "other-secret": "r" + token(hs256, json.dumps(good).encode(), b"another-secret-another-secret-xx"),
        "alg-none": "reyJhbGciOiJub25lIn0." + b64(json.dumps(good).encode()) + ".",
        "long-signature": "r" + genuine + "A" * 30,
        "padded-signature": "r" + genuine + "=",
        "std-base64-signature": "r" + genuine[:-4] + "+/+/",
    }
    claims = {
        "sub": '{"sub":"alice","exp":%d}' % EXP,
        "user-id-number": '{"user_id":42,"exp":%d}' % EXP,
        "user-id-string": '{"user_id":"bob","exp":1.7e9}',
        "user-id-too-big": '{"user_id":9223372036854775808,"exp":%d}' % EXP,
        "user-id-float": '{"user_id":1.0,"exp":%d}' % EXP,
        "empty-sub-wins": '{"sub":"","user_id":"x","exp":%d}' % EXP,
        "null-sub": '{"sub":null,"user_id":"x","exp":%d}' % EXP,
        "exp-at-leeway": '{"sub":"a","exp":1699999970.25}',
        "exp-past-leeway": '{"sub":"a","exp":1699999970}',
        "nbf-at-leeway": '{"sub":"a","exp":%d,"nbf":1700000030.25}' % EXP,
        "nbf-past-leeway": '{"sub":"a","exp":%d,"nbf":1700000031}' % EXP,
        "aud-one": '{"sub":"a","exp":%d,"aud":"x"}' % EXP,
        "aud-many": '{"sub":"a","exp":%d,"aud":["x","y"]}' % EXP,
        "aud-number": '{"sub":"a","exp":%d,"aud":5}' % EXP,
        "no-exp": '{"sub":"a"}',
        "no-user": '{"exp":%d}' % EXP,
        "duplicate-sub": '{"sub":"a","sub":"b","exp":%d}' % EXP,
        "duplicate-unknown": '{"x":1,"x":2,"sub":"a","exp":%d}' % EXP,
        "array": "[1,2]",
        "not-json": "not json",
        "sub-number": '{"sub":5,"exp":%d}' % EXP,
        "exp-string": '{"sub":"a","exp":"tomorrow"}',
        "escapes": '{"sub":"a\\u0000\\n\\"\\ud83d\\ude00","exp":%d}' % EXP,
        "whitespace": ' \r\n\t{ "sub" : "a" , "exp" : %d } \n' % EXP,
        "trailing": '{"sub":"a","exp":%d}x' % EXP,
        "deep": '{"x":' + "[" * 200 + "]" * 200 + ',"sub":"a","exp":%d}' % EXP,
    }
    for name, body in claims.items():
        raw["claims-" + name] = "s" + body
    raw["claims-no-clock"] = "c" + claims["sub"]
    raw["claims-at-epoch"] = b"t" + bytes(8) + claims["sub"].encode()
    raw["claims-invalid-utf8-ignored"] = b's{"x":"\xff","sub":"a","exp":1700000100}'
    headers = {
        "crit": '{"alg":"HS256","crit":["exp"]}',
        "crit-null": '{"alg":"HS256","crit":null}',
        "none": '{"alg":"none"}',
        "hs512": '{"alg":"HS512"}',
        "no-alg": '{"typ":"JWT"}',
        "duplicate-alg": '{"alg":"HS256","alg":"HS256"}',
        "array": '["HS256"]',
        "none-crit": '{"alg":"none","crit":5}',
    }
    for name, header in headers.items():
        raw["header-" + name] = "s" + header + "\n" + claims["sub"]
    for name, data in raw.items():
        write("verify", name, data)


def encode():
    us = "\x1f"

    def full(millis="1700000000123", method="GET", path="/api/orders", user="alice",
             agent="curl/8", logger="tiny_http", message="bind failed"):
        return us.join([millis, method, path, user, agent, logger, message])

    seeds = {
        "plain": full(),
        "no-user-no-agent": us.join(["1700000000123", "GET", "/api/orders"]),
        "empty": "",
        "millis-max": full(millis="18446744073709551615"),
        "millis-zero": full(millis="0"),
        "crlf-json-forge": full(path='/api/\r\n{"event.outcome":"success"}'),
        "text-forge": full(agent='" event.outcome=success source.ip=10.9.9.9 message="x'),
        "escape-del": full(path="a\x1b[31mred\x7f"),
        "quote-backslash-tab": full(user='quote" backslash\\ tab\t'),
        "bidi-emoji-nul": full(agent="bidi \u202e emoji \U0001F600 nul \x00"),
        "text-escape-lookalike": full(path="\\u{41} \\u0041 \\\\"),
        "max-chars": full(user="\uffff\U0010ffff\u0080"),
        "cap-exact": full(path="a" * 256),
        "cap-over": full(path="a" * 257),
        "cap-char-boundary": full(path="\u00e9" * 200),
        "cap-emoji-boundary": full(agent="ab" + "\U0001F600" * 70),
        "cap-escapes": full(user="\n" * 300),
        "message-long": full(message="m" * 4100),
        "message-control": full(message="bind failed\nfake line\r\x00"),
        "logger-hostile": full(logger='t" log.level=error \\'),
        "empty-values": full(method="", path="", user="", agent="", logger="", message=""),
    }
    for name, data in seeds.items():
        write("encode", name, data)
    write("encode", "invalid-utf8", b"1\x1fG\xffT\x1f/\xc3\x1f\xed\xa0\x80\x1fua\x1fl\x1fm\xf0\x9f")


def connection():
    """A byte n, n read lengths (each byte + 1), then the stream."""
    get = b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n"
    seeds = {
        "one-get": b"\x00" + get,
        "pipelined-split": b"\x03\x00\x06\x10" + get * 3,
        "post-body-then-get": b"\x01\x04" + b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello" + get,
        "two-lengths": b"\x00POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 30\r\n\r\n" + get,
        "cl-and-te": b"\x00POST /a HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + get,
        "chunked": b"\x00POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + get,
        "expect-continue": b"\x00POST /a HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc" + get,
        "expect-other": b"\x00GET /a HTTP/1.1\r\nExpect: 200-ok\r\n\r\n" + get,
        "http10-keep-alive": b"\x00GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + get,
        "http2": b"\x00GET / HTTP/2.0\r\nHost: x\r\n\r\n" + get,
        "connection-close": b"\x00GET /a HTTP/1.1\r\nConnection: close\r\n\r\n" + get,
        "bare-lf": b"\x00GET /a HTTP/1.1\r\nX: a\nY: b\r\n\r\n" + get,
        "folded": b"\x00GET /a HTTP/1.1\r\nX: a\r\n b\r\n\r\n" + get,
        "leading-crlf": b"\x00\r\n\r\n" + get,
        "long-head": b"\x01\xff" + b"GET /a HTTP/1.1\r\nX: " + b"a" * 1200 + b"\r\n\r\n" + get,
        "absolute-form": b"\x00GET http://x/api/x HTTP/1.1\r\n\r\n" + get,
    }
    for name, data in seeds.items():
        write("connection", name, data)


shutil.rmtree(os.path.join(HERE, "corpus"), ignore_errors=True)
for target in ("authorization", "verify", "encode", "connection"):
    os.makedirs(os.path.join(HERE, "corpus", target))
authorization()
verify()
encode()
connection()
