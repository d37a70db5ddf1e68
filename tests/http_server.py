"""Local HTTP file servers on 127.0.0.1 for anything "remote" in the tests: byte ranges for shards (as object
stores answer), and scripted failures (404, 429) for downloads."""
import http.server
import io
import re
import threading
from collections import Counter
from pathlib import Path


class _Local:
    """Serve with `handler` on a free port of 127.0.0.1 (self.port, self.url) until close()."""

    def _start(self, handler) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class RangeServer(_Local):
    """Serves the files under `root` at `self.url`; counts the requests per path in `self.hits`."""

    def __init__(self, root):
        root, hits = Path(root), {}
        self.hits = hits

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):
                super().__init__(*a, directory=str(root), **k)

            def log_message(self, *a):
                pass

            def send_head(self):
                hits[self.path] = hits.get(self.path, 0) + 1
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                path = Path(self.translate_path(self.path))
                if match is None or not path.is_file():
                    return super().send_head()
                data = path.read_bytes()
                start = int(match[1])
                stop = min(int(match[2]) + 1 if match[2] else len(data), len(data))
                self.send_response(206)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(data)}")
                self.send_header("Content-Length", str(stop - start))
                self.end_headers()
                return io.BytesIO(data[start:stop])

        self._start(Handler)


class Server(_Local):
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

        self._start(Handler)
