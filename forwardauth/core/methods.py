"""HTTP methods as access rules judge them. Pure."""

from __future__ import annotations

# The methods of IANA's HTTP Method Registry. Any other (``JEFF /admin``) is also judged as GET:
# handlers that never look at the method (Go's net/http, CGI scripts, catch-all routes) serve it
# as one, the "verb tampering" that bypassed ``<Limit GET>`` rules.
REGISTERED_METHODS = frozenset(
    (
        "ACL",
        "BASELINE-CONTROL",
        "BIND",
        "CHECKIN",
        "CHECKOUT",
        "CONNECT",
        "COPY",
        "DELETE",
        "GET",
        "HEAD",
        "LABEL",
        "LINK",
        "LOCK",
        "MERGE",
        "MKACTIVITY",
        "MKCALENDAR",
        "MKCOL",
        "MKREDIRECTREF",
        "MKWORKSPACE",
        "MOVE",
        "OPTIONS",
        "ORDERPATCH",
        "PATCH",
        "POST",
        "PRI",
        "PROPFIND",
        "PROPPATCH",
        "PUT",
        "QUERY",
        "REBIND",
        "REPORT",
        "SEARCH",
        "TRACE",
        "UNBIND",
        "UNCHECKOUT",
        "UNLINK",
        "UNLOCK",
        "UPDATE",
        "UPDATEREDIRECTREF",
        "VERSION-CONTROL",
    )
)
