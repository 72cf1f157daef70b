"""Signing requests as Slack does, for whatever stands in for Slack toward the bot.

The playground's deliveries (bot/playground/deliver.py) and the tests' sender
(tests/fakes/slack_sender.py) both sign with this; the bot checks with Bolt's ``slack_sdk``
verifier: ``v0=`` + hex HMAC-SHA256(signing secret, ``"v0:{timestamp}:{body}"``) over the exact
bytes sent. (``SignatureVerifier.generate_signature`` decodes bytes as UTF-8 first, so it cannot
sign the arbitrary bodies the tests send; tests/test_fakes.py checks the two agree.)
"""

from __future__ import annotations

import hashlib
import hmac
import time

USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"


def sign(secret: str, timestamp: int | str, body: bytes | str) -> str:
    """The ``X-Slack-Signature`` value for ``body`` sent at ``timestamp``."""
    raw = body.encode() if isinstance(body, str) else body
    return "v0=" + hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + raw, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes | str, content_type: str, *,
                   timestamp: int | str | None = None) -> dict[str, str]:
    """The headers Slack sends with ``body``: content type, user agent, timestamp (now by default), signature."""
    when = str(int(time.time()) if timestamp is None else timestamp)
    return {"Content-Type": content_type, "User-Agent": USER_AGENT,
            "X-Slack-Request-Timestamp": when, "X-Slack-Signature": sign(secret, when, body)}
