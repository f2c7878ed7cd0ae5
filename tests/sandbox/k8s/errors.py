"""Kubernetes Status errors with the exact shapes of the real API server.

Shapes follow apimachinery pkg/api/errors/errors.go: NotFound/AlreadyExists/
Conflict/Forbidden carry details.kind = resource plural; Invalid carries
details.kind = Kind and details.causes built from field errors.
"""


def qualified(resource, group):
    return resource if not group else "%s.%s" % (resource, group)


def _details(name, group, kind, **extra):
    d = {}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    if kind:
        d["kind"] = kind
    d.update({k: v for k, v in extra.items() if v is not None})
    return d


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None, headers=None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or []

    def body(self):
        b = {"kind": "Status", "apiVersion": "v1", "metadata": {},
             "status": "Failure", "message": self.message}
        if self.reason:
            b["reason"] = self.reason
        if self.details:
            b["details"] = self.details
        b["code"] = self.code
        return b

    def __repr__(self):
        return "ApiError(%d %s: %s)" % (self.code, self.reason, self.message)


def not_found(resource, group, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (qualified(resource, group), name),
                    _details(name, group, resource))


def already_exists(resource, group, name):
    return ApiError(409, "AlreadyExists", '%s "%s" already exists' % (qualified(resource, group), name),
                    _details(name, group, resource))


OPTIMISTIC_LOCK_MSG = "the object has been modified; please apply your changes to the latest version and try again"


def conflict(resource, group, name, err=OPTIMISTIC_LOCK_MSG):
    return ApiError(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": %s'
                    % (qualified(resource, group), name, err), _details(name, group, resource))


def forbidden(resource, group, name, err):
    if name:
        msg = '%s "%s" is forbidden: %s' % (qualified(resource, group), name, err)
    else:
        msg = '%s is forbidden: %s' % (qualified(resource, group), err)
    return ApiError(403, "Forbidden", msg, _details(name, group, resource))


def unauthorized(message="Unauthorized"):
    return ApiError(401, "Unauthorized", message)


def bad_request(message):
    return ApiError(400, "BadRequest", message)


def method_not_allowed(message="the server does not allow this method on the requested resource"):
    return ApiError(405, "MethodNotAllowed", message)


def unsupported_media_type(content_type):
    return ApiError(415, "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: "
                    "application/json-patch+json, application/merge-patch+json, "
                    "application/strategic-merge-patch+json")


def not_acceptable(message):
    return ApiError(406, "NotAcceptable", message)


def gone(message):
    return ApiError(410, "Gone", message)


def expired(message):
    return ApiError(410, "Expired", message)


def internal(message):
    return ApiError(500, "InternalError", "Internal error occurred: %s" % message,
                    {"causes": [{"message": message}]})


def too_many_requests(message="Too many requests, please try again later.", retry_after=1):
    return ApiError(429, "TooManyRequests", message, {"retryAfterSeconds": retry_after})


class PlainError(ApiError):
    """An error the real server answers in plain text (e.g. an unknown path)."""

    def __init__(self, code, text, headers=None):
        super().__init__(code, "NotFound", text, headers=headers)
        self.text = text


def page_not_found():
    # an unknown path: the apiserver's mux answers "404 page not found" in plain text;
    # clients turn it into "the server could not find the requested resource"
    return PlainError(404, "404 page not found\n")


def server_timeout(message):
    return ApiError(504, "Timeout", message)


# ---- field errors (apimachinery pkg/util/validation/field) -------------------------------

class GoMap(dict):
    """A Go map[string]string for %#v printing."""


class GoRepr:
    """A value printed verbatim by field errors (a pre-rendered %#v)."""

    def __init__(self, text):
        self.text = text


def go_value(v):
    """Render a bad value the way field.Error.ErrorBody does."""
    if v is None:
        return "null"
    if isinstance(v, GoRepr):
        return v.text
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return go_quote(v)
    if isinstance(v, dict):
        return "map[string]string{%s}" % ", ".join(
            "%s:%s" % (go_quote(k), go_quote(str(v[k]))) for k in sorted(v))
    if isinstance(v, list):
        return "[]string{%s}" % ", ".join(go_quote(str(x)) for x in v)
    return str(v)


def go_quote(s):
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 32:
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


class FieldError:
    TYPES = {
        "Required": ("FieldValueRequired", "Required value"),
        "Invalid": ("FieldValueInvalid", "Invalid value"),
        "NotSupported": ("FieldValueNotSupported", "Unsupported value"),
        "Forbidden": ("FieldValueForbidden", "Forbidden"),
        "Duplicate": ("FieldValueDuplicate", "Duplicate value"),
        "TooLong": ("FieldValueTooLong", "Too long"),
        "TooMany": ("FieldValueTooMany", "Too many"),
        "NotFound": ("FieldValueNotFound", "Not found"),
    }

    def __init__(self, typ, field, value=None, detail=""):
        self.typ = typ
        self.field = field
        self.value = value
        self.detail = detail

    def body(self):
        reason, text = self.TYPES[self.typ]
        if self.typ in ("Required", "Forbidden", "TooLong", "TooMany"):
            s = text
        else:
            s = "%s: %s" % (text, go_value(self.value))
        if self.detail:
            s += ": " + self.detail
        return s

    def __str__(self):
        return "%s: %s" % (self.field, self.body())

    def cause(self):
        return {"reason": self.TYPES[self.typ][0], "message": self.body(), "field": self.field}


def required(field, detail=""):
    return FieldError("Required", field, None, detail)


def invalid(field, value, detail=""):
    return FieldError("Invalid", field, value, detail)


def not_supported(field, value, supported):
    return FieldError("NotSupported", field, value,
                      "supported values: " + ", ".join(go_quote(s) for s in supported))


def forbidden_field(field, detail):
    return FieldError("Forbidden", field, None, detail)


def duplicate(field, value):
    return FieldError("Duplicate", field, value)


def aggregate(msgs):
    # utilerrors.NewAggregate: dedup keeps order; one message stands alone
    seen, out = set(), []
    for m in msgs:
        if m not in seen:
            seen.add(m)
            out.append(m)
    if len(out) == 1:
        return out[0]
    return "[" + ", ".join(out) + "]"


def invalid_object(kind, group, name, errs):
    """422 Invalid: `Deployment.apps "web" is invalid: <errs>`."""
    qk = kind if not group else "%s.%s" % (kind, group)
    msg = '%s "%s" is invalid: %s' % (qk, name, aggregate([str(e) for e in errs]))
    details = _details(name, group, kind)
    details["causes"] = [e.cause() for e in errs]
    return ApiError(422, "Invalid", msg, details)
