"""RFC 9457 problem documents: the one place where the HTTP API turns errors into replies.

Every error response of the API is `application/problem+json` with `type`,
`title` (English), `title_da` (Danish), `status`, `detail` (a BridgeError's
`public` text, never exception text) and `ref` (the request's session id, on
every log line and audit event of the request).  `problem_for` maps the
BridgeError tree to HTTP status codes:

| error                                   | status |
|-----------------------------------------|--------|
| MemoInvalid (with `errors`: path, text) | 422    |
| a policy refusal, enhanced 5.7.x        | 403    |
| unknown recipient (5.1.1), other 5.x    | 422    |
| MessageTooBig (5.3.4)                   | 413    |
| temporary (4.x.x)                       | 503    |

An unknown recipient is 422, not 404: the request URI exists, the content names
a recipient the bridge cannot deliver to (the `enhanced` member says 5.1.1).
Imports no web framework: the app wraps `Problem` in its response class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bridge.errors import BridgeError, MessageTooBig

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:dp2bridge:problem:"

# status -> (slug, English title, Danish title)
TITLES: dict[int, tuple[str, str, str]] = {
    400: ("bad-request", "Bad request", "Ugyldig forespørgsel"),
    401: ("unauthorized", "Authentication required", "Godkendelse kræves"),
    403: ("forbidden", "Not allowed", "Ikke tilladt"),
    404: ("not-found", "Not found", "Ikke fundet"),
    405: ("method-not-allowed", "Method not allowed", "Metoden er ikke tilladt"),
    408: ("timeout", "Request timeout", "Forespørgslen tog for lang tid"),
    413: ("too-large", "Request body too large", "Forespørgslen er for stor"),
    415: ("unsupported-media-type", "Unsupported media type", "Medietypen understøttes ikke"),
    422: ("unprocessable", "The message cannot be accepted", "Meddelelsen kan ikke modtages"),
    500: ("internal", "Internal error", "Intern fejl"),
    503: ("unavailable", "Temporarily unavailable", "Midlertidigt utilgængelig"),
}


@dataclass(eq=False)
class Problem(Exception):
    """An error reply: raised by handlers, rendered once by the app."""

    status: int
    detail: str
    slug: str = ""                               # type suffix; default from TITLES
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def document(self, ref: str) -> dict[str, Any]:
        slug, title, title_da = TITLES.get(self.status, TITLES[500] if self.status >= 500 else TITLES[400])
        return {"type": TYPE_PREFIX + (self.slug or slug), "title": title, "title_da": title_da,
                "status": self.status, "detail": self.detail, "ref": ref, **self.extra}


def unauthorized(detail: str, invalid: bool) -> Problem:
    """401 with the RFC 6750 challenge; `invalid` when a token was given but not accepted."""
    challenge = 'Bearer realm="dp2bridge"' + (', error="invalid_token"' if invalid else "")
    return Problem(401, detail, headers={"WWW-Authenticate": challenge})


def problem_for(exc: BridgeError) -> Problem:
    """The reply for a BridgeError raised by a use case."""
    extra: dict[str, Any] = {"enhanced": exc.enhanced}
    errors = getattr(exc, "errors", None)
    if errors is not None:                       # digitalpost.MemoInvalid
        extra["errors"] = [{"path": e.path, "message": e.message, "message_da": e.message_da,
                            **({"line": e.line} if e.line is not None else {})} for e in errors]
        return Problem(422, exc.public, slug="invalid-memo", extra=extra)
    if exc.temporary:
        return Problem(503, exc.public, extra=extra, headers={"Retry-After": "60"})
    if isinstance(exc, MessageTooBig):
        return Problem(413, exc.public, extra=extra)
    if exc.enhanced.startswith("5.7."):
        return Problem(403, exc.public, slug="refused", extra=extra)
    slug = "unknown-recipient" if exc.enhanced == "5.1.1" else "rejected"
    return Problem(422, exc.public, slug=slug, extra=extra)


# The problem document as an OpenAPI schema (components.schemas.Problem).
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "ref"],
    "properties": {
        "type": {"type": "string", "description": "URN naming the kind of problem"},
        "title": {"type": "string", "description": "short English summary"},
        "title_da": {"type": "string", "description": "short Danish summary"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "what went wrong, safe to show"},
        "ref": {"type": "string", "description": "request reference, as in the bridge's logs"},
        "enhanced": {"type": "string", "description": "RFC 3463 status code, as SMTP would say"},
        "errors": {"type": "array", "description": "MeMo validation problems",
                   "items": {"type": "object", "required": ["path", "message"],
                             "properties": {"path": {"type": "string"}, "message": {"type": "string"},
                                            "message_da": {"type": "string"},
                                            "line": {"type": "integer"}}}},
    },
}
