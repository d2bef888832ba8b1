"""Stream tokens: a short-lived signed grant to read one session's stream without a cookie.

``EventSource`` cannot send an ``Authorization`` header, and a chat widget on another
site may not get its cookie (Safari and Firefox block third-party cookies), so every
``stream_url`` the API returns carries ``?token=...``. The token is signed with the
app's secret key (itsdangerous, as Flask signs its session cookie, honouring
``SECRET_KEY_FALLBACKS`` while keys rotate), names the session, is bound to its owner,
and lapses after ``CHATAPP_STREAM_TOKEN_SECONDS``; asking the API again gives a fresh one.

It opens ``GET .../stream`` of that one session and nothing else. A token for another
session, expired, tampered with or signed with another key is refused exactly like an
unknown session, so a refusal says nothing about which sessions exist.
"""

from __future__ import annotations

from flask import current_app
from itsdangerous import BadData, URLSafeTimedSerializer

__all__ = ["StreamTokens"]

_SALT = "chatapp.stream-token"


class StreamTokens:
    """Issues and checks the stream tokens of one app."""

    def __init__(self, max_age: int, fallback_key: str | None = None) -> None:
        #: Seconds a token is valid; 0 issues none.
        self.max_age = max_age
        # CHATAPP_SECRET_KEY, for a host with an owner callable and no key of its own.
        self._fallback_key = fallback_key

    def issue(self, session_id: str, owner: str) -> str | None:
        """A token for ``owner``'s ``session_id``; ``None`` when tokens are off or no key is set."""
        serializer = self._serializer()
        if serializer is None:
            return None
        token: str = serializer.dumps(session_id, salt=_salt(owner))
        return token

    def verify(self, token: str, session_id: str, owner: str) -> bool:
        """Whether ``token`` was issued for ``session_id`` of ``owner`` and is still valid."""
        serializer = self._serializer()
        if serializer is None:
            return False
        try:
            # The owner is in the salt, not in the payload, so a URL never shows who owns
            # the session, yet a token signed for another owner does not verify.
            signed = serializer.loads(token, max_age=self.max_age, salt=_salt(owner))
        except BadData:
            # Expired, tampered, another key or another owner: all the same refusal.
            return False
        return bool(signed == session_id)

    def _serializer(self) -> URLSafeTimedSerializer | None:
        if self.max_age <= 0:
            return None
        # Read per use, not at start-up: a host may set its key after init_app.
        key = current_app.secret_key or self._fallback_key
        if not key:
            return None
        # itsdangerous signs with the last key and accepts any of them.
        keys = [*(current_app.config.get("SECRET_KEY_FALLBACKS") or ()), key]
        return URLSafeTimedSerializer(keys, salt=_SALT)


def _salt(owner: str) -> str:
    return f"{_SALT}:{owner}"
