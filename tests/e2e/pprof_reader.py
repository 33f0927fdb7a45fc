"""A small, independent pprof reader for the end-to-end tests: gunzip, decode the protobuf
wire format by hand (no generated code, nothing shared with the C encoder), and resolve
samples to function names."""
import gzip
import os


def _varint(buf, pos):
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf):
    """Yields (field number, wire type, value) for one message body."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value = buf[pos:pos + length]
            pos += length
        elif wire == 1:
            value = int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        elif wire == 5:
            value = int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, wire, value


def _repeated_uints(wire, value):
    if wire == 0:
        return [value]
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(v)
    return out


def _signed(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def _message(buf, repeated=()):
    msg = {}
    for field, wire, value in _fields(buf):
        if field in repeated:
            msg.setdefault(field, []).append((wire, value))
        else:
            msg[field] = value
    return msg


class Profile:
    def __init__(self, path):
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] != b"\x1f\x8b":
            raise ValueError(f"{path} is not gzipped")
        data = gzip.decompress(raw)
        top = _message(data, repeated=(1, 2, 3, 4, 5, 6, 13))
        self.strings = [s.decode("utf-8") for _, s in top.get(6, [])]
        s = self.strings

        def value_type(body):
            m = _message(body)
            return (s[m.get(1, 0)], s[m.get(2, 0)])

        self.sample_types = [value_type(v) for _, v in top.get(1, [])]
        self.period_type = value_type(top[11]) if 11 in top else None
        self.period = top.get(12, 0)
        self.default_sample_type = s[top.get(14, 0)]
        self.time_nanos = top.get(9, 0)
        self.duration_nanos = top.get(10, 0)
        self.comments = [s[i] for w, v in top.get(13, []) for i in _repeated_uints(w, v)]

        self.functions = []
        for _, body in top.get(5, []):
            m = _message(body)
            self.functions.append({"id": m.get(1, 0), "name": s[m.get(2, 0)],
                                   "system_name": s[m.get(3, 0)],
                                   "filename": s[m.get(4, 0)]})
        self.mappings = []
        for _, body in top.get(3, []):
            m = _message(body)
            self.mappings.append({"id": m.get(1, 0), "start": m.get(2, 0), "limit": m.get(3, 0),
                                  "offset": m.get(4, 0), "filename": s[m.get(5, 0)],
                                  "build_id": s[m.get(6, 0)],
                                  "has_functions": bool(m.get(7, 0)),
                                  "has_filenames": bool(m.get(8, 0)),
                                  "has_line_numbers": bool(m.get(9, 0)),
                                  "has_inline_frames": bool(m.get(10, 0))})
        self.locations = []
        for _, body in top.get(4, []):
            m = _message(body, repeated=(4,))
            lines, details = [], []
            for _, line_body in m.get(4, []):
                lm = _message(line_body)
                fn = self.functions[lm.get(1) - 1] if lm.get(1) else None
                lines.append(fn["name"] if fn else "?")
                details.append((fn["name"] if fn else "?",
                                os.path.basename(fn["filename"]) if fn else "",
                                _signed(lm.get(2, 0))))
            self.locations.append({"id": m.get(1, 0), "mapping_id": m.get(2, 0),
                                   "address": m.get(3, 0), "functions": lines,
                                   "lines": details})
        self.samples = []
        for _, body in top.get(2, []):
            m = _message(body, repeated=(1, 2, 3))
            loc_ids = [i for w, v in m.get(1, []) for i in _repeated_uints(w, v)]
            values = [_signed(i) for w, v in m.get(2, []) for i in _repeated_uints(w, v)]
            labels = {}
            for _, lb in m.get(3, []):
                lm = _message(lb)
                key = s[lm.get(1, 0)]
                labels[key] = s[lm[2]] if 2 in lm else lm.get(3, 0)
            self.samples.append({"locations": loc_ids, "values": values, "labels": labels})

    def check_ids(self):
        """The id rules both servers enforce: 1..N in order, references valid."""
        for kind in ("mappings", "locations", "functions"):
            ids = [x["id"] for x in getattr(self, kind)]
            assert ids == list(range(1, len(ids) + 1)), f"{kind} ids are not 1..N: {ids[:10]}"
        assert self.strings and self.strings[0] == "", "string_table[0] must be empty"
        for sample in self.samples:
            assert len(sample["values"]) == len(self.sample_types)
            for loc in sample["locations"]:
                assert 1 <= loc <= len(self.locations), f"bad location id {loc}"

    def location_lines(self, loc):
        """[(function, source file basename, line), ...] innermost first."""
        return loc["lines"]

    def stack_functions(self, sample):
        """Function names of a sample, leaf first (inline frames expanded)."""
        names = []
        for loc_id in sample["locations"]:
            loc = self.locations[loc_id - 1]
            names.extend(loc["functions"] or [hex(loc["address"])])
        return names

    def totals_by_function(self, index):
        """Inclusive ('cum') totals of sample value `index` per function name."""
        totals = {}
        for sample in self.samples:
            for name in set(self.stack_functions(sample)):
                totals[name] = totals.get(name, 0) + sample["values"][index]
        return totals
