"""A local stand-in for the Hugging Face Hub: the HTTP endpoints `snapshot_download` uses.

It serves one folder as a model repository at one commit: repo info (GET /api/models/<id>/revision/<rev>),
the file tree (GET /api/models/<id>/tree/<sha>), and files (HEAD and GET /<id>/resolve/<sha>/<path>)
with the headers the client reads (X-Repo-Commit, ETag, Content-Length).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self, repo_id: str, folder: Path, extra: dict[str, bytes] | None = None):
        """`extra`: more files by name, including names no folder holds (`../x.json`), as a
        repository's file list can carry them."""
        self.repo_id, self.folder = repo_id, folder
        self.files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()} | (extra or {})
        self.sha = hashlib.sha1(b"".join(self.files.values())).hexdigest()  # a 40-hex commit id
        self.requests: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool):
                path = unquote(urlparse(self.path).path)
                hub.requests.append(f"{self.command} {path}")
                repo = re.escape(hub.repo_id)
                if re.fullmatch(rf"/api/models/{repo}/revision/[^/]+", path):
                    siblings = [{"rfilename": name} for name in hub.files]
                    return self._json({"id": hub.repo_id, "sha": hub.sha, "siblings": siblings, "private": False}, body)
                if re.fullmatch(rf"/api/models/{repo}/tree/{hub.sha}/?", path):
                    tree = [
                        {"type": "file", "path": n, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                        for n, d in hub.files.items()
                    ]
                    return self._json(tree, body)
                match = re.fullmatch(rf"/{repo}/resolve/(main|{hub.sha})/(.+)", path)
                if match and match[2] in hub.files:
                    return self._file(hub.files[match[2]], body)
                self.send_error(404, "Repository or file not found")

            def _json(self, value, body: bool):
                self._send(json.dumps(value).encode(), {"Content-Type": "application/json"}, body)

            def _file(self, data: bytes, body: bool):
                etag = f'"{hashlib.sha256(data).hexdigest()}"'
                self._send(data, {"X-Repo-Commit": hub.sha, "ETag": etag, "Accept-Ranges": "bytes"}, body)

            def _send(self, data: bytes, headers: dict, body: bool):
                self.send_response(200)
                for key, value in {**headers, "Content-Length": str(len(data))}.items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    self.wfile.write(data)

        return Handler
