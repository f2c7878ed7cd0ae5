#!/usr/bin/env python3
"""The pull request's build of the service, as a CI job starts it on the runner.

Here a small HTTP server (Python standard library) that answers every request
with its name, so a test can tell that a request reached this build and not
the one in the cluster. A real job starts its real build instead (npm start,
java -jar app.jar, ./server, ...).

    python3 local-build.py --port 8080 --name "local build 42"
"""
import argparse
import http.server


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    body = (args.name + "\n").encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
