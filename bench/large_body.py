"""One JSON Lines body of many MB, sent whole and answered as a stream.

The body is written to a file first ({"id": "rI", "text": corpus sentence} per line) and
sent from it with sendfile, and the answer is read a chunk at a time, each line checked
as it arrives (its id, no error, its entities equal to the expected ones for its text)
and then dropped: the client holds neither the body nor the answer, so that its own
memory cannot be what a run measures, and any line wrong or missing is counted.
"""

import json
import socket
import time

HOST = "127.0.0.1"


def write_body(path, nbytes, texts):
    """Records up to at least nbytes bytes in path; returns how many."""
    size = i = 0
    with open(path, "wb") as f:
        while size < nbytes:
            line = (
                json.dumps({"id": f"r{i}", "text": texts[i % len(texts)]}, ensure_ascii=False)
                + "\n"
            ).encode("utf-8")
            f.write(line)
            size += len(line)
            i += 1
    return i


class _Reader:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def more(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-answer")
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self.more()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exactly(self, n):
        while len(self.buf) < n:
            self.more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def chunks(self, headers):
        """The body's bytes as they come: chunked or Content-Length."""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self.line().split(b";")[0], 16)
                if size == 0:
                    self.line()
                    return
                data = self.exactly(size)
                self.exactly(2)
                yield data
        else:
            left = int(headers.get("content-length", 0))
            while left:
                if not self.buf:
                    self.more()
                data, self.buf = self.buf[:left], self.buf[left:]
                left -= len(data)
                yield data


def send(port, path, records, texts, expected, timeout=3600):
    """POST the body in path; check every answer line as it comes. expected: entities
    ([text, label, start, end]) per corpus text."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            head = (
                f"POST /invocations HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                "Content-Type: application/jsonlines\r\nAccept: application/jsonlines\r\n"
                f"Content-Length: {size}\r\nConnection: close\r\n\r\n"
            )
            t0 = time.perf_counter()
            sock.sendall(head.encode("ascii"))
            sock.sendfile(f)
        sent = time.perf_counter()
        reader = _Reader(sock)
        status = int(reader.line().split()[1])
        headers = {}
        while line := reader.line():
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        counts = {"lines": 0, "errors": 0, "wrong": 0}
        first, first_byte, answer_bytes, rest = [], None, 0, b""

        def check(raw):
            answer = json.loads(raw)
            i = counts["lines"]
            counts["lines"] += 1
            if "error" in answer:
                counts["errors"] += 1
            elif (
                answer.get("id") != f"r{i}"
                or i >= records
                or [
                    [e["text"], e["label"], e["start"], e["end"]]
                    for e in answer.get("entities", [])
                ]
                != expected[i % len(texts)]
            ):
                counts["wrong"] += 1
            else:
                return
            if len(first) < 5:
                first.append(raw[:200].decode("utf-8", "replace"))

        for data in reader.chunks(headers):
            first_byte = first_byte or time.perf_counter()
            answer_bytes += len(data)
            if status != 200:
                rest += data
                continue
            *complete, rest = (rest + data).split(b"\n")
            for raw in complete:
                check(raw)
        if status == 200 and rest.strip():  # the last line has no newline after it
            check(rest)
        done = time.perf_counter()
        lines, errors, wrong = counts["lines"], counts["errors"], counts["wrong"]
    finally:
        sock.close()
    if status != 200:
        raise SystemExit(
            f"bench: a {size / 1e6:.0f} MB JSON Lines body got HTTP {status}: {rest[:300]!r}"
        )
    return {
        "body_mb": round(size / 1e6, 1),
        "records": records,
        "answer_lines": lines,
        "error_lines": errors,
        "wrong_lines": wrong,
        "missing_lines": records - lines,
        "first_wrong": first,
        "answer_mb": round(answer_bytes / 1e6, 1),
        "seconds": round(done - t0, 2),
        "send_seconds": round(sent - t0, 2),
        "first_answer_byte_s": round((first_byte or done) - t0, 2),
    }
