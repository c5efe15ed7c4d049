"""A notes department in Python: a couple of routes over one collection.

Built with componentize-py against `notes.wit` (storage, log and the handler from
keel:platform). Errors are RFC 9457 problem bodies with a stable `code`, like the Rust SDK's.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.handler import Request, Response
from wit_world.imports import log, storage, types

COLLECTION = "notes"
MAX_TEXT = 10_000
TITLES = {400: "Bad request", 404: "Not found", 409: "Conflict", 422: "Invalid input", 500: "Internal error",
          503: "Unavailable"}


class Problem(Exception):
    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def reply(status: int, value) -> Response:
    return Response(status=status, headers=[("content-type", "application/json")],
                    body=json.dumps(value).encode())


def problem(request: Request, p: Problem) -> Response:
    body = {"type": f"https://keel.dev/problems/{p.code}", "title": TITLES.get(p.status, "Error"),
            "status": p.status, "code": p.code, "detail": p.detail, "request_id": request.request_id}
    return Response(status=p.status, headers=[("content-type", "application/problem+json")],
                    body=json.dumps(body).encode())


def host_error(error) -> Problem:
    """Storage errors keep their class, as in the Rust SDK."""
    if isinstance(error, types.Error_Conflict):
        return Problem(409, "version-conflict", error.value)
    if isinstance(error, types.Error_NotFound):
        return Problem(404, "not-found", error.value)
    if isinstance(error, types.Error_Invalid):
        return Problem(422, "invalid", error.value)
    if isinstance(error, types.Error_Unavailable):
        return Problem(503, "unavailable", error.value)
    return Problem(500, "internal", getattr(error, "value", "storage failure"))


def read_note(body: bytes) -> dict:
    try:
        note = json.loads(body or b"null")
    except ValueError as e:
        raise Problem(400, "malformed-json", f"the body is not JSON: {e}")
    if not isinstance(note, dict):
        raise Problem(400, "malformed-json", "the body must be a JSON object")
    text = note.get("text")
    if not isinstance(text, str) or not text.strip():
        raise Problem(422, "invalid-field", "`text` must be a non-empty string")
    if len(text) > MAX_TEXT:
        raise Problem(422, "invalid-field", f"`text` must be at most {MAX_TEXT} characters")
    tag = note.get("tag", "")
    if not isinstance(tag, str):
        raise Problem(422, "invalid-field", "`tag` must be a string")
    version = note.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
        raise Problem(422, "invalid-field", "`version` must be a positive integer")
    return {"text": text.strip(), "tag": tag, "version": version}


def view(document) -> dict:
    stored = json.loads(document.body)
    return {"key": document.key, "text": stored["text"], "tag": stored.get("tag", ""), "version": document.version}


def put_note(request: Request, key: str) -> Response:
    note = read_note(request.body)
    # With a `version`, only that version is replaced (409 otherwise); without, only created.
    condition = storage.WriteCondition_Absent() if note["version"] is None \
        else storage.WriteCondition_Version(note["version"])
    body = json.dumps({"text": note["text"], "tag": note["tag"]})
    version = storage.put(COLLECTION, key, body, condition)
    log.write(log.Level.INFO, f"note {key} is at version {version}")
    return reply(200, {"key": key, "text": note["text"], "tag": note["tag"], "version": version})


def get_note(request: Request, key: str) -> Response:
    document = storage.get(COLLECTION, key)
    if document is None:
        raise Problem(404, "note-not-found", f"there is no note `{key}`")
    return reply(200, view(document))


def list_notes(request: Request) -> Response:
    query = dict(request.query)
    filters = [storage.Filter(field="tag", value=query["tag"])] if "tag" in query else []
    page = storage.query(storage.QuerySpec(collection=COLLECTION, filters=filters, cursor=query.get("cursor"),
                                           limit=50, descending=False))
    return reply(200, {"items": [view(d) for d in page.documents], "next": page.next})


class Handler(exports.Handler):
    def handle(self, caller: types.Caller, request: Request) -> Response:
        params = dict(request.params)
        try:
            if request.route == "/notes/{key}" and request.method == "PUT":
                return put_note(request, params["key"])
            if request.route == "/notes/{key}" and request.method == "GET":
                return get_note(request, params["key"])
            if request.route == "/notes" and request.method == "GET":
                return list_notes(request)
            raise Problem(404, "route-not-found", f"no handler for {request.method} {request.route}")
        except Problem as p:
            return problem(request, p)
        except Err as e:
            return problem(request, host_error(e.value))
