"""A minimal JSON-over-HTTP client for the Seqtrain API (standard library only)."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from typing import Any


class ApiFailure(Exception):
    def __init__(self, status: int, body: Any) -> None:
        self.status, self.body = status, body
        error = body.get("error", {}) if isinstance(body, dict) else {}
        lines = [f"HTTP {status}: {error.get('message') or body}"]
        lines += [
            f"  {f.get('path') or '(body)'}: {f.get('message')}" for f in error.get("fields", [])
        ]
        super().__init__("\n".join(lines))


class Client:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the API URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        content_type: str = "",
    ) -> Any:
        data = raw if raw is not None else json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method)  # noqa: S310
        if data is not None:
            req.add_header("Content-Type", content_type or "application/json")
        return self.send(req)

    def send(self, req: urllib.request.Request, timeout: float | None = None) -> Any:
        """Send a prepared request with the token; the decoded JSON answer, or ApiFailure."""
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:  # noqa: S310 (scheme checked in __init__)
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode("utf-8", "replace")
            raise ApiFailure(exc.code, parsed) from None

    def upload(self, path: str, filename: str, content: bytes, fields: dict[str, str]) -> Any:
        """POST multipart/form-data: the form fields plus the file as `file`."""
        boundary = "seqtrain" + secrets.token_hex(16)
        parts = []
        for name, value in fields.items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            )
        safe_name = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{safe_name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        body = b"".join(parts) + content + f"\r\n--{boundary}--\r\n".encode()
        return self.request(
            "POST", path, raw=body, content_type=f"multipart/form-data; boundary={boundary}"
        )

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body if body is not None else {})
