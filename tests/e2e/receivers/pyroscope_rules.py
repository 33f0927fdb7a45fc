"""What Grafana Pyroscope v2.2.1 does with a push (push.v1.PusherService/Push), as the e2e
stand-in (pyroscope_receiver.py) plays it: which requests it refuses, with which status, and
what it changes in the profiles it keeps. The rules were read in Pyroscope's source at tag
v2.2.1 (github.com/grafana/pyroscope) and are described here in our own words; none of its code
is copied. The real server cannot run in these tests: its Go module is not served to this
project's machines (scripts/backends), so this is the closest check there is, and it is only as
faithful as this reading. Each rule names the file and function it comes from.

LIMITS holds every number, with Pyroscope's defaults; the receiver's --limits JSON overrides
them (the way an operator's flags would), e.g. a shorter ingestion window for a test.

check() returns an Outcome: the HTTP status and Connect error code the real server would answer
(400 invalid_argument, 429 resource_exhausted), Pyroscope's own discard reason
(pkg/validation/validate.go, "Reason" constants), the message, and for accepted requests what
ingestion changed: numeric labels dropped, samples dropped, frames with no name."""
import gzip
import time
import zlib

import wire

MIB = 1024 * 1024  # pkg/validation/limits.go: bytesInMB is 1048576

# name: (default, where Pyroscope v2.2.1 sets or applies it)
LIMITS_SOURCE = {
    "ingestion_rate_bytes": (4 * MIB, "pkg/validation/limits.go RegisterFlags: "
                             "distributor.ingestion-rate-limit-mb 4 (per tenant, per second; "
                             "divided by the healthy distributors: one here)"),
    "ingestion_burst_bytes": (2 * MIB, "pkg/validation/limits.go RegisterFlags: "
                              "distributor.ingestion-burst-size-mb 2; pkg/distributor/"
                              "distributor.go rateLimit: a token bucket (dskit limiter, "
                              "x/time/rate) charged labels + uncompressed profile; more than "
                              "the burst never fits, so such a profile is refused every time"),
    "ingestion_body_bytes": (256 * MIB, "limits.go: distributor.ingestion-body-limit-mb 256, "
                             "summed over a request's profiles (distributor.go Push)"),
    "max_profile_size_bytes": (4 * MIB, "limits.go: validation.max-profile-size-bytes 4 MiB "
                               "uncompressed; distributor.go Push (RawFromBytesWithLimit) and "
                               "validate.go ValidateProfile"),
    "max_profile_stacktrace_samples": (16000, "limits.go: validation.max-profile-stacktrace-"
                                       "samples; validate.go ValidateProfile"),
    "max_profile_stacktrace_sample_labels": (100, "limits.go: validation.max-profile-"
                                             "stacktrace-sample-labels; ValidateProfile"),
    "max_profile_stacktrace_depth": (1000, "limits.go: validation.max-profile-stacktrace-"
                                     "depth; ValidateProfile cuts deeper stacks (root side "
                                     "kept), never refuses"),
    "max_profile_symbol_value_length": (65535, "limits.go: validation.max-profile-symbol-"
                                        "value-length; ValidateProfile keeps the tail of a "
                                        "longer string, never refuses"),
    "max_label_names_per_series": (30, "limits.go: validation.max-label-names-per-series; "
                                   "validate.go ValidateLabels"),
    "max_label_name_length": (1024, "limits.go: validation.max-length-label-name (bytes); "
                              "ValidateLabels"),
    "max_label_value_length": (2048, "limits.go: validation.max-length-label-value (bytes); "
                               "ValidateLabels"),
    "reject_older_than_s": (3600, "limits.go: validation.reject-older-than 1h; validate.go "
                            "ingestionWindow.valid (time_nanos must be after now - 1h)"),
    "reject_newer_than_s": (600, "limits.go: validation.reject-newer-than 10m; validate.go "
                            "ingestionWindow.valid (time_nanos must be before now + 10m)"),
}
LIMITS = {name: value for name, (value, _) in LIMITS_SOURCE.items()}

# Connect's mapping of its codes to HTTP statuses (connectrpc.com/connect, protocol docs).
HTTP_STATUS = {"invalid_argument": 400, "resource_exhausted": 429, "unauthenticated": 401}


class Refused(Exception):
    """A refusal: Connect code, Pyroscope's discard reason, message."""

    def __init__(self, code, reason, message):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


class Outcome(dict):
    """JSON-ready: status, code, reason, message, and what was stored (series, notes)."""


class RateLimiter:
    """distributor.go rateLimit: one token bucket per tenant holding up to the burst, refilled
    at the rate; a profile is let through when its whole size is in the bucket (AllowN), and
    a refused one takes nothing."""

    def __init__(self, limits):
        self.rate = limits["ingestion_rate_bytes"]
        self.burst = limits["ingestion_burst_bytes"]
        self.buckets = {}

    def allow(self, tenant, n, now):
        tokens, last = self.buckets.get(tenant, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        ok = n <= tokens
        self.buckets[tenant] = (tokens - n if ok else tokens, now)
        return ok


# ---- pprof, decoded as raw bytes (string_table entries are not decoded: their UTF-8 is one
# of the things checked) ------------------------------------------------------------------

def _walk(buf):
    pos = 0
    while pos < len(buf):
        key, pos = wire.varint(buf, pos)
        field, kind = key >> 3, key & 7
        if kind == 0:
            value, pos = wire.varint(buf, pos)
        elif kind == 2:
            length, pos = wire.varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("length-delimited field runs past the end")
            value = buf[pos:pos + length]
            pos += length
        elif kind == 1:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif kind == 5:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {kind}")
        yield field, kind, value


def _uints(kind, value):
    if kind == 0:
        return [value]
    out, pos = [], 0
    while pos < len(value):
        v, pos = wire.varint(value, pos)
        out.append(v)
    return out


def _signed(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def decode_profile(data):
    """profile.proto fields this module needs; strings stay bytes."""
    p = {"strings": [], "sample_types": [], "samples": [], "locations": {}, "functions": {},
         "time_nanos": 0, "period_type": None}
    for field, kind, value in _walk(data):
        if field == 1:
            vt = {f: v for f, _, v in _walk(value)}
            p["sample_types"].append((vt.get(1, 0), vt.get(2, 0)))
        elif field == 2:
            s = {"locations": [], "values": [], "labels": []}
            for f, k, v in _walk(value):
                if f == 1:
                    s["locations"] += _uints(k, v)
                elif f == 2:
                    s["values"] += [_signed(x) for x in _uints(k, v)]
                elif f == 3:
                    lb = {lf: lv for lf, _, lv in _walk(v)}
                    s["labels"].append((lb.get(1, 0), lb.get(2, 0), lb.get(3, 0)))
            p["samples"].append(s)
        elif field == 4:
            loc = {"id": 0, "address": 0, "lines": []}
            for f, k, v in _walk(value):
                if f == 1:
                    loc["id"] = v
                elif f == 3:
                    loc["address"] = v
                elif f == 4:
                    ln = {lf: lv for lf, _, lv in _walk(v)}
                    loc["lines"].append(ln.get(1, 0))
            p["locations"].setdefault(loc["id"], loc)
            if loc["id"] == 0:
                p["location_id_zero"] = True
        elif field == 5:
            fn = {f: v for f, _, v in _walk(value)}
            if fn.get(1, 0) == 0:
                p["function_id_zero"] = True
            p["functions"][fn.get(1, 0)] = fn.get(2, 0)
        elif field == 6:
            p["strings"].append(bytes(value))
        elif field == 9:
            p["time_nanos"] = _signed(value)
        elif field == 11:
            vt = {f: v for f, _, v in _walk(value)}
            p["period_type"] = (vt.get(1, 0), vt.get(2, 0))
    return p


def text(b):
    return b.decode("utf-8", "replace")


def _valid_utf8(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _labelstext(labels):
    return "{" + ", ".join(f'{text(n)}="{text(v)}"' for n, v in labels) + "}"


# ---- the rules, in the order the server applies them -------------------------------------

def validate_labels(labels, limits):
    """validate.go ValidateLabels, with label-name sanitization disabled (the v2.2.1 default,
    validation.disable-label-sanitization true): labels sorted by name; at most
    max_label_names_per_series; __name__ must be a valid metric name, which under Prometheus's
    UTF-8 scheme means non-empty valid UTF-8; service_name non-empty; each name at most
    max_label_name_length bytes, non-empty valid UTF-8; each value at most
    max_label_value_length bytes and valid UTF-8; no name twice."""
    labels = sorted(labels)
    what = _labelstext(labels)
    if not labels:
        raise Refused("invalid_argument", "missing_labels",
                      "error at least one label pair is required per profile")
    if len(labels) > limits["max_label_names_per_series"]:
        raise Refused("invalid_argument", "max_label_names_per_series",
                      f"profile series '{what}' has {len(labels)} label names; limit "
                      f"{limits['max_label_names_per_series']}")
    values = dict(labels)
    name = values.get(b"__name__", b"")
    if not name or not _valid_utf8(name):
        raise Refused("invalid_argument", "invalid_labels",
                      f"invalid labels '{what}' with error: invalid metric name")
    if not values.get(b"service_name"):
        raise Refused("invalid_argument", "missing_labels",
                      f"invalid labels '{what}' with error: service name is not provided")
    last = None
    for n, v in labels:
        if len(n) > limits["max_label_name_length"]:
            raise Refused("invalid_argument", "label_name_too_long",
                          f"profile with labels '{what}' has label name too long: '{text(n)}'")
        if len(v) > limits["max_label_value_length"]:
            raise Refused("invalid_argument", "label_value_too_long",
                          f"profile with labels '{what}' has label value too long: "
                          f"'{text(v)}'")
        if not n or not _valid_utf8(n):
            raise Refused("invalid_argument", "invalid_labels",
                          f"invalid labels '{what}' with error: invalid label name "
                          f"'{text(n)}'")
        if not _valid_utf8(v):
            raise Refused("invalid_argument", "invalid_labels",
                          f"invalid labels '{what}' with error: invalid label value "
                          f"'{text(v)}'")
        if n == last:
            raise Refused("invalid_argument", "duplicate_label_names",
                          f"profile with labels '{what}' has duplicate label name: "
                          f"'{text(n)}'")
        last = n
    return labels


def validate_profile(p, size, labels, limits, now_ns):
    """validate.go ValidateProfile: sample types present; a non-zero time_nanos inside the
    ingestion window (strictly after now - reject_older_than, strictly before now +
    reject_newer_than; zero means "now"); uncompressed size and sample count within limits;
    per-sample labels within limit; no location or function with id 0; as many values per
    sample as sample types; string_table[0] empty and every index in range; no sample type
    name with '-'; every string valid UTF-8 (function names and file names included)."""
    what = _labelstext(labels)
    if not p["sample_types"]:
        raise Refused("invalid_argument", "malformed_profile", "empty profile")
    if p["time_nanos"] > 0:
        older = now_ns - limits["reject_older_than_s"] * 1_000_000_000
        newer = now_ns + limits["reject_newer_than_s"] * 1_000_000_000
        if not (p["time_nanos"] > older and p["time_nanos"] < newer):
            raise Refused("invalid_argument", "not_in_ingestion_window",
                          f"profile with labels '{what}' is outside of ingestion window "
                          f"(profile timestamp: {p['time_nanos'] / 1e9:.3f}, the ingestion "
                          f"window starts at {older / 1e9:.3f} and ends at {newer / 1e9:.3f})")
    if limits["max_profile_size_bytes"] and size > limits["max_profile_size_bytes"]:
        raise Refused("invalid_argument", "profile_size_limit",
                      f"the profile with labels '{what}' exceeds the size limit "
                      f"(max_profile_size_byte, actual: {size}, limit: "
                      f"{limits['max_profile_size_bytes']})")
    n = len(p["samples"])
    if limits["max_profile_stacktrace_samples"] and n > limits["max_profile_stacktrace_samples"]:
        raise Refused("invalid_argument", "samples_limit",
                      f"the profile with labels '{what}' exceeds the samples count limit "
                      f"(max_profile_stacktrace_samples, actual: {n}, limit: "
                      f"{limits['max_profile_stacktrace_samples']})")
    label_limit = limits["max_profile_stacktrace_sample_labels"]
    for s in p["samples"]:
        if label_limit and len(s["labels"]) > label_limit:
            raise Refused("invalid_argument", "sample_labels_limit",
                          f"the profile with labels '{what}' exceeds the sample labels limit "
                          f"(actual: {len(s['labels'])}, limit: {label_limit})")
    if p.get("location_id_zero"):
        raise Refused("invalid_argument", "malformed_profile", "location id is 0")
    if p.get("function_id_zero"):
        raise Refused("invalid_argument", "malformed_profile", "function id is 0")
    for s in p["samples"]:
        if len(s["values"]) != len(p["sample_types"]):
            raise Refused("invalid_argument", "malformed_profile",
                          "sample value length mismatch")
    strings = p["strings"]
    if not strings or strings[0] != b"":
        raise Refused("invalid_argument", "malformed_profile", "string 0 should be empty string")
    refs = [t for t, _ in p["sample_types"]] + list(p["functions"].values())
    refs += [i for s in p["samples"] for k, v, _ in s["labels"] for i in (k, v)]
    if any(i >= len(strings) for i in refs):
        raise Refused("invalid_argument", "malformed_profile", "string index out of range")
    for t, _ in p["sample_types"]:
        if b"-" in strings[t]:
            raise Refused("invalid_argument", "malformed_profile", "sample type contains -")
    for s in strings:
        if not _valid_utf8(s):
            raise Refused("invalid_argument", "malformed_profile",
                          f"invalid utf8 string hex: {s.hex()}")


def normalize(p, notes):
    """pkg/pprof/pprof.go Profile.Normalize and sanitizeProfile, as far as they change what a
    user sees: numeric sample labels are dropped ("non-string labels are not supported");
    samples with a negative value or only zeros are dropped; a location with no line and no
    address is removed and so is every sample that uses it. A location with no line (or only
    functions named "") is kept but gives its frame no name in a flame graph: counted here as
    unnamed, per sample type."""
    strings = p["strings"]
    kept = []
    for s in p["samples"]:
        numeric = [lb for lb in s["labels"] if lb[1] == 0]
        for k, _, _ in numeric:
            name = text(strings[k]) if k < len(strings) else "?"
            notes["numeric_labels_dropped"][name] = \
                notes["numeric_labels_dropped"].get(name, 0) + 1
        s["labels"] = [lb for lb in s["labels"] if lb[1] != 0]
        if any(v < 0 for v in s["values"]) or not any(s["values"]):
            notes["samples_dropped"] += 1
            continue
        locs = [p["locations"].get(i) for i in s["locations"]]
        if any(loc is None or (not loc["lines"] and not loc["address"]) for loc in locs):
            notes["samples_dropped"] += 1
            for i, v in enumerate(s["values"]):
                notes["values_dropped"][i] += v
            continue
        unnamed = [loc for loc in locs
                   if not any(strings[p["functions"].get(f, 0)] for f in loc["lines"])]
        if unnamed:
            notes["samples_with_unnamed_frames"] += 1
            for i, v in enumerate(s["values"]):
                notes["unnamed_values"][i] += v
            for loc in unnamed[:1]:
                if len(notes["unnamed_examples"]) < 5:
                    notes["unnamed_examples"].append(hex(loc["address"]))
        kept.append(s)
    p["samples"] = kept


def series_of(p, labels):
    """pkg/model/pprofsplit VisitSampleSeries: the string labels of each sample join the series
    labels (a series label wins over a sample label of the same name), giving one series per
    distinct label set; with no sample labels the profile is one series."""
    strings = p["strings"]
    sets = {}
    for s in p["samples"]:
        names = {n for n, _ in labels}
        extra = tuple(sorted((strings[k], strings[v]) for k, v, _ in s["labels"]
                             if strings[k] not in names))
        sets[extra] = sets.get(extra, 0) + 1
    if not sets:
        return []
    return [labels + list(extra) for extra in sets]


def profile_types(p, name):
    """The profile types a UI lists: __name__:type:unit:period_type:period_unit."""
    s = p["strings"]
    pt = p["period_type"] or (0, 0)
    return [":".join(text(x) for x in (name, s[t], s[u], s[pt[0]], s[pt[1]]))
            for t, u in p["sample_types"]]


def check(request_series, tenant, limiter, limits=LIMITS, now=None):
    """The outcome of one PushRequest, already decoded by wire.push_request(raw=True): labels
    as bytes pairs, samples with their "raw" (gzipped pprof)."""
    now = time.time() if now is None else now
    now_ns = int(now * 1e9)
    stored = []
    try:
        # distributor.go Push: every profile is gunzipped within max_profile_size_bytes (over
        # it: 400 profile_size_limit); the uncompressed sizes of a request add up against
        # the body limit.
        profiles, body = [], 0
        for series in request_series:
            for sample in series["samples"]:
                raw = sample["raw"]
                try:
                    data = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
                except (OSError, EOFError, zlib.error) as e:
                    raise Refused("invalid_argument", "malformed_profile",
                                  f"cannot gunzip the profile: {e}") from None
                limit = limits["max_profile_size_bytes"]
                if limit and len(data) > limit:
                    raise Refused("invalid_argument", "profile_size_limit",
                                  f"uncompressed profile payload size exceeds limit of "
                                  f"{limit} bytes")
                body += len(data)
                if limits["ingestion_body_bytes"] and body > limits["ingestion_body_bytes"]:
                    raise Refused("invalid_argument", "body_size_limit_exceeded",
                                  "uncompressed batched profile payload size exceeds limit")
                profiles.append((list(series["labels"]), data))
        if not profiles:
            raise Refused("invalid_argument", "unknown", "no profiles received")
        for labels, data in profiles:
            # distributor.go pushSeries: a missing service_name becomes unknown_service.
            if not dict(labels).get(b"service_name"):
                labels = [lb for lb in labels if lb[0] != b"service_name"]
                labels.append((b"service_name", b"unknown_service"))
            labels.sort()
            size = len(data) + sum(len(n) + len(v) for n, v in labels)
            if not limiter.allow(tenant, size, now):
                raise Refused("resource_exhausted", "rate_limited",
                              f"push rate limit ({limits['ingestion_rate_bytes']} bytes/s) "
                              f"exceeded while adding {size} bytes")
            try:
                p = decode_profile(data)
            except (ValueError, IndexError) as e:
                raise Refused("invalid_argument", "malformed_profile",
                              f"cannot decode the profile: {e}") from None
            validate_profile(p, len(data), labels, limits, now_ns)
            notes = {"numeric_labels_dropped": {}, "samples_dropped": 0,
                     "values_dropped": [0] * len(p["sample_types"]),
                     "samples_with_unnamed_frames": 0,
                     "unnamed_values": [0] * len(p["sample_types"]), "unnamed_examples": []}
            normalize(p, notes)
            # The series labels are checked as the profile is split by sample labels
            # (distributor.go visitSampleSeries -> pprofsplit -> ValidateLabels).
            split = series_of(p, labels)
            for one in split:
                validate_labels(one, limits)
            stored.append({"labels": [[text(n), text(v)] for n, v in labels],
                           # the series the distributor makes of it (sample labels joined)
                           "split": [[[text(n), text(v)] for n, v in one] for one in split],
                           "samples": len(p["samples"]), "size": size,
                           "profile_types": profile_types(p, dict(labels)[b"__name__"]),
                           "notes": notes})
    except Refused as r:
        return Outcome(status=HTTP_STATUS[r.code], code=r.code, reason=r.reason,
                       message=r.message, stored=[])
    return Outcome(status=200, code=None, reason=None, message=None, stored=stored)
