#!/usr/bin/env python3
"""The sealed log's MAC as the README and src/record/seal.rs describe it, written again from
that description in Python (standard library only, no code from jwtguard): every line of
the given files, oldest first, must carry the tag this computes.

    seal_spec.py VERIFICATION_KEY FILE...

Exit 0 when every line's tag is the one the description gives, 1 otherwise (with the
first line that differs). It checks the construction, not the chain's diagnosis (that
is verify-log's job, tests/tamper.sh): keys, epochs, POLYVAL, the keyed SHA-256 block.
Run by tests/tamper.sh on its untouched logs, in both formats.
"""

import hashlib
import hmac
import re
import struct
import sys

# --- SHA-256's compression function (FIPS 180-4, section 6.2.2), one block, no padding.

K = [
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4,
    0xAB1C5ED5, 0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE,
    0x9BDC06A7, 0xC19BF174, 0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F,
    0x4A7484AA, 0x5CB0A9DC, 0x76F988DA, 0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7,
    0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967, 0x27B70A85, 0x2E1B2138, 0x4D2C6DFC,
    0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85, 0xA2BFE8A1, 0xA81A664B,
    0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070, 0x19A4C116,
    0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7,
    0xC67178F2,
]
M32 = 0xFFFFFFFF


def rotr(x, n):
    return ((x >> n) | (x << (32 - n))) & M32


def compress(state, block):
    w = list(struct.unpack(">16I", block))
    for t in range(16, 64):
        s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
        s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
        w.append((w[t - 16] + s0 + w[t - 7] + s1) & M32)
    a, b, c, d, e, f, g, h = state
    for t in range(64):
        t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[t] + w[t]
        t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))
        a, b, c, d, e, f, g, h = (t1 + t2) & M32, a, b, c, (d + t1) & M32, e, f, g
    return [(x + y) & M32 for x, y in zip(state, [a, b, c, d, e, f, g, h])]


# The compression function against hashlib: SHA-256 of "abc" is one block, padded.
_iv = [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB,
       0x5BE0CD19]
_abc = b"abc" + b"\x80" + bytes(52) + struct.pack(">Q", 24)
assert struct.pack(">8I", *compress(_iv, _abc)) == hashlib.sha256(b"abc").digest()

# --- POLYVAL (RFC 8452, section 3): GF(2^128) mod x^128 + x^127 + x^126 + x^121 + 1,
# blocks little-endian, dot(a, b) = a * b * x^-128.

POLY = (1 << 128) | (1 << 127) | (1 << 126) | (1 << 121) | 1


def gf_mul(a, b):
    r = 0
    while b:
        if b & 1:
            r ^= a
        b >>= 1
        a <<= 1
        if a >> 128:
            a ^= POLY
    return r


def gf_pow(a, n):
    r = 1
    while n:
        if n & 1:
            r = gf_mul(r, a)
        a = gf_mul(a, a)
        n >>= 1
    return r


X_INV_128 = gf_pow(gf_pow(2, 128), (1 << 128) - 2)  # the group has 2^128 - 1 elements


def polyval(h, data):
    h = int.from_bytes(h, "little")
    s = 0
    for i in range(0, len(data), 16):
        x = int.from_bytes(data[i:i + 16], "little")
        s = gf_mul(gf_mul(s ^ x, h), X_INV_128)
    return s.to_bytes(16, "little")


# RFC 8452, Appendix A: POLYVAL(H, X_1, X_2).
_h = bytes.fromhex("25629347589242761d31f826ba4b757b")
_x = bytes.fromhex("4f4f95668c83dfb6401762bb2d01a262d1a24ddd2721d006bbe45f20d3c9f362")
assert polyval(_h, _x) == bytes.fromhex("f7a3b47b846119fae5b7866cf5e5b77e")

# --- The construction (README, "How it works"; src/record/seal.rs).


def derive(key, label):
    return hmac.new(key, label, hashlib.sha256).digest()


def next_key(key):
    return derive(key, b"jwtguard seal: the next epoch's key")


def line_keys(key):
    h = derive(key, b"jwtguard seal 3: the hash key of the lines")[:16]
    p = list(struct.unpack(">8I", derive(key, b"jwtguard seal 3: the PRF key of the lines")))
    return h, p


def tag(keys, previous, sequence, covered):
    h, p = keys
    padded = covered + bytes(-len(covered) % 16)
    digest = polyval(h, padded + struct.pack("<Q", len(covered)) + bytes(8))
    block = struct.pack(">Q", sequence) + previous + digest + b"jwtguard seal 3 line tag"
    return struct.pack(">8I", *compress(p, block))[:16]


JSON_SEAL = re.compile(rb'^(\{.*),"event\.sequence":([0-9]+),"event\.hash":"([0-9a-f]{32})"\}$')
TEXT_SEAL = re.compile(rb"^(.*) event\.sequence=([0-9]+) event\.hash=([0-9a-f]{32})$")


def field(covered, name):
    """A seal line's field, in either format: `"name":"v"`, `"name":v` or `name=v`."""
    m = re.search(rb'(?:"' + name + rb'":"?|(?:^| )' + name + rb"=)([a-z0-9]+)", covered)
    return m.group(1).decode() if m else None


def main():
    if len(sys.argv) < 3:
        print(__doc__.strip().splitlines()[3].strip(), file=sys.stderr)
        return 2
    # The verification key is K0's 64 hex digits, then "-" and when it was made.
    key = next_key(bytes.fromhex(sys.argv[1].split("-")[0]))  # K1, the first epoch's key
    epoch, keys, previous, lines = 1, None, None, 0
    for path in sys.argv[2:]:
        with open(path, "rb") as f:
            text = f.read()
            if text and not text.endswith(b"\n"):
                print(f"{path}: the last line has no newline (torn): not a whole log", file=sys.stderr)
                return 1
            for number, line in enumerate(text.split(b"\n")[:-1], 1):
                m = JSON_SEAL.match(line) or TEXT_SEAL.match(line)
                if not m:
                    print(f"{path}:{number}: no seal", file=sys.stderr)
                    return 1
                covered, sequence, want = m.group(1), int(m.group(2)), bytes.fromhex(m.group(3).decode())
                is_seal = field(covered, rb"event\.action") == "seal"
                if keys is None:
                    # The first line is a file seal line naming the epoch it is in.
                    first = int(field(covered, rb"jwtguard\.seal\.epoch"))
                    while epoch < first:
                        key, epoch = next_key(key), epoch + 1
                    keys = line_keys(key)
                    previous = bytes.fromhex(field(covered, rb"jwtguard\.seal\.previous") or "0" * 32)
                got = tag(keys, previous, sequence, covered)
                if got != want:
                    print(f"{path}:{number}: sequence {sequence}: the description gives {got.hex()}, the line has {want.hex()}", file=sys.stderr)
                    return 1
                previous, lines = want, lines + 1
                if is_seal and field(covered, rb"event\.reason") != "file":
                    # It ends its epoch: the lines after it are in the epoch it names.
                    begins = int(field(covered, rb"jwtguard\.seal\.epoch"))
                    while epoch < begins:
                        key, epoch = next_key(key), epoch + 1
                    keys = line_keys(key)
    print(f"seal_spec.py: {lines} lines carry the tags the description gives (epochs up to {epoch})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
