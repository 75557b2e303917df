#!/usr/bin/env python3
"""A webhook receiver for scripts/demo: checks each delivery's Standard
Webhooks signature (HMAC-SHA256 over "id.timestamp.body", standard library
only), drops repeated webhook-ids (the message id is stable across retries),
and appends what it accepted to a JSON-lines file.

    demo-webhook-receiver.py SECRET PORT_FILE LOG_FILE

Listens on 127.0.0.1, on a port the OS picks, and writes that port to
PORT_FILE. Answers 204 when accepted, 401 on a bad signature.
"""
import base64
import hashlib
import hmac
import http.server
import json
import sys

secret, port_file, log_file = sys.argv[1], sys.argv[2], sys.argv[3]
key = base64.b64decode(secret.removeprefix("whsec_"))
seen = set()


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        msg_id = self.headers.get("webhook-id", "")
        timestamp = self.headers.get("webhook-timestamp", "")
        expected = base64.b64encode(
            hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
        ).decode()
        offered = [s.removeprefix("v1,") for s in self.headers.get("webhook-signature", "").split()]
        if not any(hmac.compare_digest(expected, s) for s in offered):
            self.send_response(401)
            self.end_headers()
            return
        if msg_id not in seen:
            seen.add(msg_id)
            with open(log_file, "a", encoding="utf-8") as log:
                log.write(json.dumps({"webhook-id": msg_id, "signature": "valid", "payload": json.loads(body)}) + "\n")
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
with open(port_file, "w", encoding="utf-8") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
