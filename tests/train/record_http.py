#!/usr/bin/python3
"""A tiny HTTP receiver for webhook tests: answers every POST with 200 and appends one JSON line per
request ({"path", "content_type", "body"}) to the file given as argv[2]; writes the port it listens on
to argv[1] once ready. Standard library only; exits when its parent test kills it."""
import http.server
import json
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode("utf-8", "replace")
        with open(sys.argv[2], "a") as f:
            f.write(json.dumps({"path": self.path, "content_type": self.headers.get("Content-Type", ""),
                                "body": body}) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
server.serve_forever()
