"""A webhook receiver for the end-to-end tests.

It verifies every delivery with the `standardwebhooks` library (not with
VALORA's code) against each secret listed in SECRETS_FILE (one per line,
re-read per request), and appends one JSON line per request to LOG_FILE.

Usage: receiver.py PORT SECRETS_FILE LOG_FILE [FAIL_FIRST] [DELAY_SECONDS]
  FAIL_FIRST     answer HTTP 500 to this many requests first (default 0)
  DELAY_SECONDS  wait this long before answering each request (default 0)
"""

import base64
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

PORT, SECRETS_FILE, LOG_FILE = int(sys.argv[1]), sys.argv[2], sys.argv[3]
FAIL_FIRST = int(sys.argv[4]) if len(sys.argv) > 4 else 0
DELAY = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
lock = threading.Lock()
seen = {"count": 0}


def verify(body, headers):
    """Index of the first secret that verifies the request, else the errors."""
    with open(SECRETS_FILE) as f:
        secrets = [line.strip() for line in f if line.strip()]
    errors = []
    for index, secret in enumerate(secrets):
        try:
            Webhook(secret).verify(body, headers)
            return index, errors
        except WebhookVerificationError as error:
            errors.append(str(error))
    return None, errors


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        received = time.time()
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        verified_with, errors = verify(body, headers)
        with lock:
            seen["count"] += 1
            number = seen["count"]
            with open(LOG_FILE, "a") as log:
                log.write(json.dumps({
                    "number": number,
                    "received": received,
                    "id": headers.get("webhook-id"),
                    "timestamp": headers.get("webhook-timestamp"),
                    "signature": headers.get("webhook-signature"),
                    "body": base64.b64encode(body).decode(),
                    "verified_with": verified_with,
                    "errors": errors,
                }) + "\n")
        if DELAY:
            time.sleep(DELAY)
        status = 500 if number <= FAIL_FIRST else 204
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
