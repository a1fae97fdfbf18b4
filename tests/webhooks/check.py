"""Checks one captured delivery with `standardwebhooks`.

Usage: check.py SECRET MODE < captured.json
  MODE "replay": verify with the library's clock 10 minutes ahead
  MODE "tamper": verify with one byte of the body changed
  MODE "as-is":  verify unchanged
Prints "accepted" or "rejected: <reason>".
"""

import base64
import datetime as real_datetime
import json
import sys

from standardwebhooks import webhooks
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

secret, mode = sys.argv[1], sys.argv[2]
captured = json.load(sys.stdin)
body = base64.b64decode(captured["body"])
headers = {
    "webhook-id": captured["id"],
    "webhook-timestamp": captured["timestamp"],
    "webhook-signature": captured["signature"],
}

if mode == "replay":
    class Later(real_datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return real_datetime.datetime.now(tz) + real_datetime.timedelta(minutes=10)

    webhooks.datetime = Later
elif mode == "tamper":
    body = body[:-2] + (b"0" if body[-2:-1] != b"0" else b"1") + body[-1:]

try:
    Webhook(secret).verify(body, headers)
    print("accepted")
except WebhookVerificationError as error:
    print(f"rejected: {error}")
