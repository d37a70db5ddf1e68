"""A local HTTP file server that answers byte-range requests (as object stores do), for "remote" shards."""
import http.server
import io
import re
import threading
from pathlib import Path


class RangeServer:
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

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
