"""What the two test receivers share: numbering and recording requests (one JSON file per
request, written atomically, each raw profile beside it) and the scripted answers."""
import json
import os
import threading
import time


class Recorder:
    def __init__(self, out_dir, script):
        self.out_dir = out_dir
        self.script = list(script)
        self.lock = threading.Lock()
        self.seq = 0
        os.makedirs(out_dir, exist_ok=True)

    def next_answer(self):
        """The next scripted answer (a dict), or None once the script is used up."""
        with self.lock:
            self.seq += 1
            seq = self.seq
            answer = self.script.pop(0) if self.script else None
        return seq, answer

    def next_seq(self):
        with self.lock:
            self.seq += 1
            return self.seq

    def take_answer(self):
        """The next scripted answer (a dict), or None once the script is used up."""
        with self.lock:
            return self.script.pop(0) if self.script else None

    def record(self, seq, entry, series):
        """Writes req-SEQ.json with entry, the raw profiles as req-SEQ-N.pb.gz."""
        n = 0
        for s in series:
            for sample in s["samples"]:
                name = f"req-{seq:05d}-{n}.pb.gz"
                with open(os.path.join(self.out_dir, name), "wb") as f:
                    f.write(sample.pop("raw"))
                sample["file"] = name
                n += 1
        entry["seq"] = seq
        entry["time"] = time.time()
        entry["series"] = series
        path = os.path.join(self.out_dir, f"req-{seq:05d}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(entry, f)
        os.rename(path + ".tmp", path)


def load_script(text):
    return json.loads(text) if text else []
