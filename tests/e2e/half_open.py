"""A client that vanishes mid-stream, as if its cable were pulled (run as a script).

`python -m tests.e2e.half_open SERVER PORT USERNAME PASSWORD` must run in a network
namespace of its own (`unshare --net`), as root: it makes a second namespace for the
client, joined to this one by a virtual Ethernet pair, starts SERVER (`daphne` or
`uvicorn`, the site's own modules) here on 10.99.0.1:PORT, opens an event stream from
the client's namespace and then takes the client's link down. From then on nothing
the server sends is answered — no FIN, no RST, no ACK — while the client process
lives on. The script then tries to open a new stream for the same user
(CHAT_MAX_STREAMS_PER_USER=1) until the server has let the first one go, and prints
one line of JSON: how long that took, and the server's log.

The server reaches the database through its Unix socket (or SQLite file), which no
network namespace hides; the environment (DATABASE_URL, ...) comes from the caller.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx

SERVER_ADDRESS = "10.99.0.1"
CLIENT_ADDRESS = "10.99.0.2"

_CLIENT = """
import socket, sys, time
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))
host = f"{sys.argv[1]}:{sys.argv[2]}"
request = f"GET {sys.argv[3]} HTTP/1.1\\r\\nHost: {host}\\r\\nAccept: text/event-stream\\r\\n\\r\\n"
sock.sendall(request.encode())
head = b""
while b"retry:" not in head:
    head += sock.recv(4096)
print("streaming", flush=True)
time.sleep(600)  # alive, but its link will be down: it answers nothing
"""


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


def main(server: str, port: int, username: str, password: str) -> None:
    run("ip", "link", "set", "lo", "up")
    run("ip", "link", "add", "srv0", "type", "veth", "peer", "name", "cli0")
    run("ip", "addr", "add", f"{SERVER_ADDRESS}/24", "dev", "srv0")
    run("ip", "link", "set", "srv0", "up")
    holder = subprocess.Popen(["unshare", "--net", "sleep", "600"])  # the client's namespace
    processes = [holder]
    try:
        time.sleep(0.2)
        run("ip", "link", "set", "cli0", "netns", str(holder.pid))
        in_client = ["nsenter", "-t", str(holder.pid), "-n"]
        run(*in_client, "ip", "addr", "add", f"{CLIENT_ADDRESS}/24", "dev", "cli0")
        run(*in_client, "ip", "link", "set", "cli0", "up")

        address = {
            "daphne": ["-b", SERVER_ADDRESS, "-p", str(port), "chatsite.asgi:application"],
            "uvicorn": ["--host", SERVER_ADDRESS, "--port", str(port)],
        }[server]
        module = {"daphne": "chatsite.server", "uvicorn": "chatsite.uvicorn_server"}[server]
        log_path = f"/tmp/half-open-{server}-{os.getpid()}.log"  # noqa: S108
        with open(log_path, "w") as log:
            site = subprocess.Popen(
                [sys.executable, "-m", module, *address], stdout=log, stderr=subprocess.STDOUT
            )
        processes.append(site)
        base = f"http://{SERVER_ADDRESS}:{port}"
        api = httpx.Client(base_url=base, timeout=30)
        deadline = time.monotonic() + 60
        while True:
            try:
                api.get("/accounts/login/", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        tokens = api.post("/api/v1/auth/token/", json={"username": username, "password": password})
        assert tokens.status_code == 200, (tokens.status_code, tokens.text[:300], log_path)
        api.headers["Authorization"] = f"Bearer {tokens.json()['access']}"
        conversation = api.post("/api/v1/conversations/", json={}).json()["id"]

        def stream_url() -> str:
            return api.post(f"/api/v1/conversations/{conversation}/stream-token/").json()[
                "stream_url"
            ]

        client = subprocess.Popen(
            [*in_client, sys.executable, "-c", _CLIENT, SERVER_ADDRESS, str(port), stream_url()],
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(client)
        assert client.stdout.readline().strip() == "streaming"

        def stream_status() -> int:
            with httpx.stream("GET", base + stream_url(), timeout=10) as response:
                return response.status_code

        held = stream_status()
        run(*in_client, "ip", "link", "set", "cli0", "down")  # the cable is pulled
        pulled = time.monotonic()
        while (status := stream_status()) == 429:
            if time.monotonic() - pulled > 60:
                break
            time.sleep(0.2)
        freed_after = time.monotonic() - pulled if status == 200 else None
        site.terminate()
        site.wait(timeout=20)
        with open(log_path) as log:
            text = log.read()
        os.unlink(log_path)
        print(json.dumps({"held": held, "freed_after": freed_after, "log": text}))
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.kill()
                process.wait()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
