"""A local HTTP server on 127.0.0.1 for anything "remote" in the tests."""
import http.server
import threading
from collections import Counter
from pathlib import Path


class Server:
    """Serves files from a folder; `rules[name]` makes a name answer 404, or 429 for its first n requests."""

    def __init__(self, root):
        self.root, self.rules, self.hits = Path(root), {}, Counter()
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):
                super().__init__(*a, directory=str(server.root), **k)

            def log_message(self, *a):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                server.hits[name] += 1
                rule = server.rules.get(name)
                if rule == 404:
                    return self.send_error(404)
                if isinstance(rule, tuple) and rule[0] == 429 and server.hits[name] <= rule[1]:
                    return self.send_error(429)
                return super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
