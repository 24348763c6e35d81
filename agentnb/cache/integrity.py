"""Entry integrity: the HMAC secret (environment or a 0600 key file) and signing.

Every persistent entry carries `HMAC-SHA256(secret, b"agentnb:v1\\0" + key + b"\\0" + value)`,
where `key` is the 64-hex cache key and `value` the JSON bytes of the payload. A row whose MAC does
not match (tampered, truncated, written with another secret) is never served.

The secret comes from `AGENTNB_CACHE_SECRET`, else from `cache.key` in the user's config dir
(`$XDG_CONFIG_HOME/agentnb` or `~/.config/agentnb`), created on first use with mode 0600. It is
deliberately not kept in the cache dir, so whoever can copy or edit the cache cannot forge it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from ..errors import CacheError

__all__ = ["SECRET_ENV", "Signer", "key_file_path", "load_secret"]

logger = logging.getLogger("agentnb.cache")

SECRET_ENV = "AGENTNB_CACHE_SECRET"
_DOMAIN = b"agentnb:v1\x00"
MAC_SIZE = hashlib.sha256().digest_size
_BLOCK = hashlib.sha256().block_size
_IPAD = bytes(x ^ 0x36 for x in range(256))  # the key's bytes XOR the HMAC pads, by `translate`
_OPAD = bytes(x ^ 0x5C for x in range(256))


def key_file_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the key file lives: `$XDG_CONFIG_HOME/agentnb/cache.key` or `~/.config/...`."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser().resolve() / "agentnb" / "cache.key"


def load_secret(env: Mapping[str, str] | None = None) -> bytes:
    """The HMAC secret: `AGENTNB_CACHE_SECRET`, else the key file (created 0600 when absent)."""
    env = os.environ if env is None else env
    value = env.get(SECRET_ENV)
    if value:
        return value.encode("utf-8")
    path = key_file_path(env)
    try:
        return _read_or_create(path)
    except OSError as exc:
        raise CacheError(
            f"cannot read or create the cache key file {path}: {exc.strerror or exc}; "
            f"set {SECRET_ENV} instead"
        ) from None


def _read_or_create(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Write a temporary file, then link it into place: two processes racing here end up
        # with one complete key, never a half-written one.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
                logger.info("created cache key file %s", path)
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logger.warning("cache key file %s had mode %o; tightening it to 600", path, mode)
        os.chmod(path, 0o600)
    data = path.read_bytes().strip()
    if len(data) < 16:
        raise CacheError(
            f"cache key file {path} holds fewer than 16 bytes; delete it to make a new one "
            f"(cached entries will be dropped) or set {SECRET_ENV}"
        )
    return data


class Signer:
    """Signs and checks entries with one secret.

    Example:
        >>> s = Signer(b"secret")
        >>> s.verify("k", b"{}", s.sign("k", b"{}"))
        True
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise CacheError("the cache secret must not be empty")
        # HMAC-SHA256 (RFC 2104, as `hmac.new(secret, ..., hashlib.sha256)` computes it) with
        # its two keyed hash states made once, the inner one past the domain prefix: a MAC
        # then copies them. Every cached answer and ledger row is signed, and the copy of an
        # `hmac.HMAC` (a Python object around the C one) took a quarter of the time.
        if len(secret) > _BLOCK:
            secret = hashlib.sha256(secret).digest()
        secret = secret.ljust(_BLOCK, b"\x00")
        self._inner = hashlib.sha256(secret.translate(_IPAD) + _DOMAIN)
        self._outer = hashlib.sha256(secret.translate(_OPAD))

    def sign(
        self, key: str, value: bytes, agent: str = "", expires_at: float | None = None
    ) -> bytes:
        """The 32-byte MAC of an entry: its key, value, agent and expiry.

        The agent and the expiry are signed too, so an entry's life cannot be stretched nor its
        agent renamed (hiding it from `invalidate(agent=...)`) by editing the database.
        """
        inner = self._inner.copy()
        inner.update(
            b"%s\x00%s\x00%s\x00"
            % (
                key.encode("ascii", "replace"),
                agent.encode("utf-8", "surrogatepass"),
                b"" if expires_at is None else repr(float(expires_at)).encode("ascii"),
            )
        )
        inner.update(value)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def verify(
        self,
        key: str,
        value: object,
        mac: object,
        agent: object = "",
        expires_at: object = None,
    ) -> bool:
        """True when `mac` is the MAC of the entry; False for anything malformed."""
        if not isinstance(value, bytes) or not isinstance(mac, bytes) or len(mac) != MAC_SIZE:
            return False
        if not isinstance(agent, str) or not (
            expires_at is None or isinstance(expires_at, (int, float))
        ):
            return False
        return hmac.compare_digest(self.sign(key, value, agent, expires_at), mac)
