#!/usr/bin/env python3
"""Answer latency and answer-to-action-start of a wh-automatad release build, on loopback.

    cargo build --release && python3 bench/latency.py [--requests 1000] [--starts 200]

Starts the daemon in a temporary directory, sends N sequential signed GitHub pushes (each a new
delivery) and reports p50/p99 of the time to the 202 answer; then, one push at a time, the time
from the answer to the moment the action's shell starts (the action records a timestamp).
Standard library only.
"""
import argparse, hashlib, hmac, json, os, re, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "bench-secret"


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def post(addr, path, headers, body):
    s = socket.create_connection(addr)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    s.sendall(head.encode() + body)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return int(data.split(b" ", 2)[1])


def signed(body, delivery):
    sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": "sha256=" + sig}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--starts", type=int, default=200)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/wh-automatad"))
    args = ap.parse_args()
    payload = json.load(open(os.path.join(ROOT, "tests/fixtures/github/push.json")))
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "settings.yaml"), "w") as f:
            f.write("server: { listen: 127.0.0.1:0, queue: 100000 }\n"
                    "entries:\n  hello:\n    match: { repo: Codertocat/Hello-World, branch: ^master$ }\n"
                    "    secret: ${S}\n    actions:\n      - date +%s.%N >> starts\n")
        env = {"PATH": os.environ["PATH"], "S": SECRET, "WH_LOG": "warn,wh_automata::daemon=info"}
        log_path = os.path.join(d, "daemon.log")
        daemon = subprocess.Popen([args.binary, os.path.join(d, "settings.yaml")], cwd=d, env=env,
                                  stderr=open(log_path, "w"))
        m = None
        for _ in range(200):
            m = re.search(r"listening addr=([0-9.]+):(\d+)", open(log_path).read())
            if m:
                break
            time.sleep(0.05)
        if not m:
            sys.exit("daemon did not start: " + open(log_path).read())
        addr = (m.group(1), int(m.group(2)))
        try:
            answers = []
            for i in range(args.requests):
                payload["after"] = payload["head_commit"]["id"] = f"{i + 1:040x}"
                body = json.dumps(payload).encode()
                h = signed(body, f"lat-{i}")
                t0 = time.perf_counter()
                status = post(addr, "/hooks", h, body)
                answers.append((time.perf_counter() - t0) * 1000)
                assert status == 202, status
            time.sleep(1)
            starts_file = os.path.join(d, "starts")
            open(starts_file, "w").close()
            gaps = []
            for i in range(args.starts):
                payload["after"] = payload["head_commit"]["id"] = f"{i + 1:040x}"
                body = json.dumps(payload).encode()
                before = len(open(starts_file).read().split())
                status = post(addr, "/hooks", signed(body, f"start-{i}"), body)
                answered = time.time()
                assert status == 202, status
                while True:
                    lines = open(starts_file).read().split()
                    if len(lines) > before:
                        break
                    time.sleep(0.0005)
                gaps.append((float(lines[-1]) - answered) * 1000)
        finally:
            daemon.terminate()
            daemon.wait()
    print(f"answer latency, {args.requests} sequential accepted pushes: "
          f"p50 {pct(answers, 50):.2f} ms, p99 {pct(answers, 99):.2f} ms, max {max(answers):.2f} ms")
    print(f"answer to action start, {args.starts} pushes one at a time: "
          f"p50 {pct(gaps, 50):.2f} ms, p99 {pct(gaps, 99):.2f} ms")


if __name__ == "__main__":
    main()
