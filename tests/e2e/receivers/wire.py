"""Hand decoding of the two push requests, from the field numbers of Pyroscope's
api/push/v1/push.proto and Parca's profilestore.proto: no generated code and nothing shared
with the agent's encoder, so a wrong field number on either side shows up as a failure."""


def varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("varint runs past the end")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def fields(buf):
    """[(field, wire type, value)] of one message; raises ValueError on malformed bytes."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 2:
            length, pos = varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("length-delimited field runs past the end")
            value = bytes(buf[pos:pos + length])
            pos += length
        else:
            raise ValueError(f"unexpected wire type {wire} for field {field}")
        out.append((field, wire, value))
    return out


def _label(buf, raw=False):
    """LabelPair / Label: 1 name, 2 value; as bytes when raw (not checked for UTF-8)."""
    name = value = b"" if raw else None
    for field, wire, v in fields(buf):
        if field == 1 and wire == 2:
            name = v if raw else v.decode()
        elif field == 2 and wire == 2:
            value = v if raw else v.decode()
        else:
            raise ValueError(f"unexpected field {field} in a label")
    return name, value


def push_request(body, raw=False):
    """Pyroscope PushRequest -> [{"labels": [(name, value)], "samples": [{"raw", "id"}]}];
    with raw, label names and values are bytes, as Pyroscope's decoder (vtproto) leaves them:
    it does not check their UTF-8, its validation does."""
    series = []
    for field, wire, v in fields(body):
        if field != 1 or wire != 2:
            raise ValueError(f"unexpected field {field} in PushRequest")
        labels, samples = [], []
        for f, w, sv in fields(v):
            if f == 1 and w == 2:
                labels.append(_label(sv, raw))
            elif f == 2 and w == 2:
                sample = {"raw": b"", "id": ""}
                for ff, ww, xv in fields(sv):
                    if ff == 1 and ww == 2:
                        sample["raw"] = xv
                    elif ff == 2 and ww == 2:
                        sample["id"] = xv.decode("utf-8", "replace")
                    else:
                        raise ValueError(f"unexpected field {ff} in RawSample")
                samples.append(sample)
            else:
                raise ValueError(f"unexpected field {f} in RawProfileSeries")
        series.append({"labels": labels, "samples": samples})
    return series


def write_raw_request(body):
    """Parca WriteRawRequest -> (series as push_request gives, tenant, normalized)."""
    series, tenant, normalized = [], None, None
    for field, wire, v in fields(body):
        if field == 1 and wire == 2:
            tenant = v.decode()
        elif field == 3 and wire == 0:
            normalized = bool(v)
        elif field == 2 and wire == 2:
            labels, samples = [], []
            for f, w, sv in fields(v):
                if f == 1 and w == 2:  # LabelSet
                    for lf, lw, lv in fields(sv):
                        if lf != 1 or lw != 2:
                            raise ValueError(f"unexpected field {lf} in LabelSet")
                        labels.append(_label(lv))
                elif f == 2 and w == 2:
                    sample = {"raw": b"", "executable_info": 0}
                    for ff, ww, xv in fields(sv):
                        if ff == 1 and ww == 2:
                            sample["raw"] = xv
                        elif ff == 2:
                            sample["executable_info"] += 1
                        else:
                            raise ValueError(f"unexpected field {ff} in RawSample")
                    samples.append(sample)
                else:
                    raise ValueError(f"unexpected field {f} in RawProfileSeries")
            series.append({"labels": labels, "samples": samples})
        else:
            raise ValueError(f"unexpected field {field} in WriteRawRequest")
    return series, tenant, normalized
