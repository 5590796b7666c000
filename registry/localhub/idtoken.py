"""RS256 ID tokens (JWT) of the hub's OpenID provider, with no crypto dependency.

The Hub signs ID tokens with RS256 and publishes its keys as a JWKS; relying parties (authlib in
Gradio and huggingface_hub) verify them against `jwks_uri`. RSASSA-PKCS1-v1_5 with SHA-256 is small
enough to write with Python integers (RFC 8017 §8.2, §9.2): the key is generated once per data
directory (two 1024-bit primes, Miller-Rabin with 40 rounds, about a second) and kept in
`<data>/.oauth-key.json`, readable by the owner only. Only signing happens here; a signature costs
one 2048-bit modular exponentiation (about 10 ms), once per sign-in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# DER prefix of DigestInfo for SHA-256 (RFC 8017 §9.2, note 1).
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
_E = 65537
_SMALL_PRIMES = [p for p in range(3, 2000, 2) if all(p % d for d in range(3, int(p**0.5) + 1, 2))]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _probably_prime(n: int, rounds: int = 40) -> bool:
    if any(n % p == 0 for p in _SMALL_PRIMES):
        return n in _SMALL_PRIMES
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(rounds):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int) -> int:
    while True:
        # Top two bits set, so p*q has exactly 2*bits bits; odd.
        candidate = secrets.randbits(bits) | (3 << (bits - 2)) | 1
        if (candidate - 1) % _E and _probably_prime(candidate):
            return candidate


@dataclass(frozen=True)
class SigningKey:
    """An RSA key: modulus `n`, private exponent `d`, key id `kid` (public exponent 65537)."""

    n: int
    d: int
    kid: str

    @classmethod
    def generate(cls, bits: int = 2048) -> SigningKey:
        while True:
            p, q = _prime(bits // 2), _prime(bits // 2)
            if p != q:
                break
        n, phi = p * q, (p - 1) * (q - 1)
        d = pow(_E, -1, phi)
        kid = hashlib.sha256(str(n).encode()).hexdigest()[:16]
        return cls(n=n, d=d, kid=kid)

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        """The key stored at `path`, created (mode 0600) if missing."""
        if path.is_file():
            raw = json.loads(path.read_text())
            return cls(n=int(raw["n"]), d=int(raw["d"]), kid=raw["kid"])
        key = cls.generate()
        tmp = path.with_name(f".tmp-{path.name}.{secrets.token_hex(4)}")  # removed at start if we die here
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"n": str(key.n), "d": str(key.d), "kid": key.kid}, fh)
        try:
            os.link(tmp, path)  # first writer wins; a concurrent one reads the winner's key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return cls.load_or_create(path)

    def jwk(self) -> dict[str, str]:
        """The public key as a JWK (RFC 7517)."""
        return {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": _int_b64(self.n), "e": _int_b64(_E)}

    def sign(self, message: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 §8.2.1)."""
        k = (self.n.bit_length() + 7) // 8
        t = _SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
        em = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
        return pow(int.from_bytes(em, "big"), self.d, self.n).to_bytes(k, "big")

    def jwt(self, claims: dict[str, Any]) -> str:
        """`claims` as a compact RS256 JWS."""
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        return f"{signing_input}.{b64url(self.sign(signing_input.encode()))}"
