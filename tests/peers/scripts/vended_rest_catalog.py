#!/usr/bin/env python3
"""A test-only Iceberg REST catalog that vends per-table S3 credentials, as Polaris, Lakekeeper
or Glue's REST endpoint do.

It serves the Iceberg REST API v1 (no prefix) over PyIceberg's SqlCatalog (SQLite --db), with the
warehouse on an S3 endpoint (--warehouse s3://bucket/prefix; the bucket is created if missing).
Every request but the token exchange needs `Authorization: Bearer <--token>` (else 401, JSON
error). `GET /v1/config` carries no storage settings: only LoadTable (and create / commit)
answers carry them, in `config`: s3.endpoint, s3.access-key-id, s3.secret-access-key,
s3.session-token (with --session-token), s3.region, client.region, s3.path-style-access. So a
client that reads or writes the table's files uses those, not anything of its own.

POST /v1/oauth/tokens (OAuth2 client credentials, form-encoded) exchanges --credential ID:SECRET
for the token. The log has one line per request (method, path, status); never a header, token or
key. Requests are served one at a time (a lock around the catalog), HTTP/1.0.

Prints `vended rest catalog listening on http://127.0.0.1:PORT` once bound (--port 0: a free
port). Run with $PEERS_PY; stop with SIGTERM.

Example:
  vended_rest_catalog.py --db /tmp/v/cat.db --warehouse s3://lake/wh --token t0k \\
      --s3-endpoint http://127.0.0.1:9000 --s3-access-key AKIDTEST --s3-secret-key SECRETTEST
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

sys.dont_write_bytecode = True  # keep the toolkit folder free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers_common as pc_  # noqa: E402


class HttpError(Exception):
    def __init__(self, code: int, kind: str, message: str):
        super().__init__(message)
        self.code, self.kind, self.message = code, kind, message


def error_body(code: int, kind: str, message: str) -> dict:
    return {"error": {"message": message, "type": kind, "code": code}}


class Catalog:
    """The SqlCatalog, the vended table config and the request routing."""

    def __init__(self, a):
        from pyiceberg.catalog.sql import SqlCatalog
        pc_.ensure_s3_bucket(a, a.warehouse)
        self.a = a
        self.lock = threading.Lock()
        self.sql = SqlCatalog("default", uri="sqlite:///" + os.path.abspath(a.db),
                              warehouse=a.warehouse, **pc_.s3_props(a))

    def table_config(self) -> dict:
        a = self.a
        cfg = {"s3.endpoint": a.s3_endpoint, "s3.access-key-id": a.s3_access_key,
               "s3.secret-access-key": a.s3_secret_key, "s3.region": a.s3_region,
               "client.region": a.s3_region, "s3.path-style-access": "true"}
        if a.session_token:
            cfg["s3.session-token"] = a.session_token
        return cfg

    def table_response(self, tbl) -> str:
        from pyiceberg.catalog.rest import TableResponse
        return TableResponse(**{"metadata-location": tbl.metadata_location, "metadata": tbl.metadata,
                                "config": self.table_config()}).model_dump_json()

    def route(self, method: str, path: str, query: dict, body: bytes):
        """(status, JSON text or None) for one authorized request."""
        from pyiceberg.catalog.rest import CreateTableRequest
        from pyiceberg.table import CommitTableRequest
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:1] != ["v1"]:
            raise HttpError(404, "NotFoundException", f"no route {path}")
        parts = parts[1:]
        if parts == ["config"] and method == "GET":
            return 200, json.dumps({"defaults": {}, "overrides": {}})
        if parts == ["namespaces"]:
            if method == "GET":
                ns = [list(n) for n in self.sql.list_namespaces()]
                return 200, json.dumps({"namespaces": ns})
            if method == "POST":
                req = json.loads(body)
                self.sql.create_namespace(tuple(req["namespace"]), req.get("properties") or {})
                return 200, json.dumps({"namespace": req["namespace"], "properties": req.get("properties") or {}})
        if len(parts) == 2 and parts[0] == "namespaces":
            ns = tuple(parts[1].split("\x1f"))
            if method in ("GET", "HEAD"):
                props = self.sql.load_namespace_properties(ns)
                return (200, json.dumps({"namespace": list(ns), "properties": props})) if method == "GET" else (204, None)
            if method == "DELETE":
                self.sql.drop_namespace(ns)
                return 204, None
        if len(parts) == 3 and parts[0] == "namespaces" and parts[2] == "tables":
            ns = tuple(parts[1].split("\x1f"))
            if method == "GET":
                ids = [{"namespace": list(i[:-1]), "name": i[-1]} for i in self.sql.list_tables(ns)]
                return 200, json.dumps({"identifiers": ids})
            if method == "POST":
                raw = json.loads(body)
                for k in ("location", "partition-spec", "write-order"):  # optional in the spec
                    raw.setdefault(k, None)
                req = CreateTableRequest.model_validate(raw)
                if req.stage_create:
                    raise HttpError(400, "BadRequestException", "stage-create is not supported")
                kw = {"location": req.location, "properties": req.properties}
                if req.partition_spec is not None:
                    kw["partition_spec"] = req.partition_spec
                if req.write_order is not None:
                    kw["sort_order"] = req.write_order
                tbl = self.sql.create_table(ns + (req.name,), req.table_schema, **kw)
                return 200, self.table_response(tbl)
        if len(parts) == 4 and parts[0] == "namespaces" and parts[2] == "tables":
            ident = tuple(parts[1].split("\x1f")) + (parts[3],)
            if method in ("GET", "HEAD"):
                tbl = self.sql.load_table(ident)
                return (200, self.table_response(tbl)) if method == "GET" else (204, None)
            if method == "POST":
                req = CommitTableRequest.model_validate_json(body)
                tbl = self.sql.load_table(ident)
                resp = self.sql.commit_table(tbl, req.requirements, req.updates)
                return 200, resp.model_dump_json()
            if method == "DELETE":
                if query.get("purgeRequested", ["false"])[0].lower() == "true":
                    self.sql.purge_table(ident)
                else:
                    self.sql.drop_table(ident)
                return 204, None
        raise HttpError(404, "NotFoundException", f"no route {method} {path}")


def status_of(e: Exception) -> tuple:
    """The REST error for a PyIceberg exception."""
    from pyiceberg import exceptions as x
    from pydantic import ValidationError
    name = type(e).__name__
    if isinstance(e, (x.NoSuchTableError, x.NoSuchNamespaceError)):
        return 404, name
    if isinstance(e, (x.TableAlreadyExistsError, x.NamespaceAlreadyExistsError, x.CommitFailedException)):
        return 409, name
    if isinstance(e, (ValidationError, ValueError, json.JSONDecodeError, KeyError)):
        return 400, "BadRequestException"
    return 500, name


def handler(cat: Catalog, token: str, credential: str | None):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, fmt, *args):  # the request line only: path, no headers
            sys.stderr.write(f"{self.command} {urlparse(self.path).path} {args[1] if len(args) > 1 else ''}\n")
            sys.stderr.flush()

        def send(self, code: int, text: str | None):
            data = (text or "").encode()
            self.send_response(code)
            if text is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def token_exchange(self, body: bytes):
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            given = f"{form.get('client_id', '')}:{form.get('client_secret', '')}"
            if credential is None or given != credential:
                return self.send(401, json.dumps({"error": "invalid_client",
                                                  "error_description": "unknown client credentials"}))
            self.send(200, json.dumps({"access_token": token, "token_type": "bearer", "expires_in": 3600,
                                       "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}))

        def handle_any(self):
            url = urlparse(self.path)
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            if self.command == "POST" and url.path.rstrip("/") == "/v1/oauth/tokens":
                return self.token_exchange(body)
            if self.headers.get("Authorization", "") != f"Bearer {token}":
                return self.send(401, json.dumps(error_body(401, "NotAuthorizedException",
                                                            "missing or wrong bearer token")))
            try:
                with cat.lock:
                    code, text = cat.route(self.command, url.path, parse_qs(url.query), body)
            except HttpError as e:
                code, text = e.code, json.dumps(error_body(e.code, e.kind, e.message))
            except Exception as e:  # noqa: BLE001 - every failure becomes a REST error
                code, kind = status_of(e)
                text = json.dumps(error_body(code, kind, " ".join(str(e).split()) or kind))
            self.send(code, text)

        do_GET = do_POST = do_DELETE = do_HEAD = handle_any

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pc_.add_catalog_args(ap, table=False)
    ap.add_argument("--db", required=True, help="SQLite file of the SqlCatalog (created if missing)")
    ap.add_argument("--token", required=True, help="the bearer token every request must carry")
    ap.add_argument("--credential", help="ID:SECRET accepted by POST /v1/oauth/tokens")
    ap.add_argument("--session-token", help="also vend this s3.session-token")
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    if not (a.warehouse or "").startswith("s3://") or not a.s3_endpoint:
        sys.exit("needs --warehouse s3://bucket/prefix and --s3-endpoint")
    cat = Catalog(a)
    server = ThreadingHTTPServer(("127.0.0.1", a.port), handler(cat, a.token, a.credential))
    print(f"vended rest catalog listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
