"""Launcher for the embedded local stack: MongoDB wire server, S3 server, Airflow standalone.

Each service starts on a chosen or free loopback port, is waited on until healthy, and gets a
pid file; `down` stops only processes this launcher started (pid file plus a command-line
check, so a recycled pid is never killed). The same functions start the servers for the test
harness (tests/conftest.py), so tests and the demo run the same stack.

    python include/local_stack.py up [--services mongo,s3,airflow] [--mongo-port N ...]
    python include/local_stack.py down
    python include/local_stack.py status
    python include/local_stack.py env        # shell exports for the connections
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STATE_DIR = REPO_ROOT / ".local"
LOOPBACK = "127.0.0.1"
DEFAULT_PORTS = {"mongo": 27017, "s3": 5000, "airflow": 8080, "endpoint": 8081, "scorer": 8082}
ALL_SERVICES = ("mongo", "s3", "airflow", "endpoint", "scorer")
# moto accepts any key pair; these name the local stack, they are not credentials.
LOCAL_S3_KEY_ID = "local-stack"
LOCAL_S3_SECRET = "local-stack-not-a-secret"  # noqa: S105
LOCAL_REGION = "us-east-1"


class StackError(RuntimeError):
    """A service could not be started or stopped; the message says why."""


@dataclass
class RunningService:
    name: str
    port: int
    pid: int
    log: str
    # A token that must appear in /proc/<pid>/cmdline before we signal the pid.
    cmd_marker: str


def _bin(name: str) -> str:
    """A console script of the current interpreter's environment (the project venv)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise StackError(f"{name} is not installed in this environment; run `make venv` first")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


def _tail(path: str | Path, lines: int = 30) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback URL we built
            return 200 <= resp.status < 500
    except urllib.error.HTTPError as err:
        return err.code < 500
    except (urllib.error.URLError, OSError):
        return False


def _mongo_ok(port: int) -> bool:
    import pymongo

    try:
        client = pymongo.MongoClient(mongo_uri(port), serverSelectionTimeoutMS=1000)
        try:
            client.admin.command("ping")
            return True
        finally:
            client.close()
    except Exception:
        return False


def mongo_uri(port: int) -> str:
    return f"mongodb://{LOOPBACK}:{port}/?directConnection=true"


def s3_endpoint(port: int) -> str:
    return f"http://{LOOPBACK}:{port}"


def _service_spec(
    name: str, port: int, state_dir: Path
) -> tuple[list[str], dict[str, str], Callable[[], bool]]:
    """Command line, extra environment and health probe of one service."""
    if name == "mongo":
        data = state_dir / "mongo"
        data.mkdir(parents=True, exist_ok=True)
        cmd = [
            _bin("secantusd-py"),
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--storage-path",
            str(data),
            "--log-level",
            "WARNING",
            "--cache-size",
            "512M",
        ]
        return cmd, {}, lambda: _mongo_ok(port)
    if name == "s3":
        cmd = [_bin("moto_server"), "-H", LOOPBACK, "-p", str(port)]
        return cmd, {}, lambda: _http_ok(f"{s3_endpoint(port)}/moto-api/")
    if name == "airflow":
        cmd = [_bin("airflow"), "standalone"]
        extra = {
            "AIRFLOW__API__PORT": str(port),
            # Workers report task state to the API server; it must follow a non-default port.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{LOOPBACK}:{port}/execution/",
        }
        return cmd, extra, lambda: _http_ok(f"http://{LOOPBACK}:{port}/api/v2/monitor/health")
    if name == "endpoint":
        # Starts without a model (/ping answers 503 until the first deploy), so health is /metrics.
        cmd = [
            sys.executable,
            str(REPO_ROOT / "include" / "serve_endpoint.py"),
            "--host",
            LOOPBACK,
            "--port",
            str(port),
        ]
        return cmd, {}, lambda: _http_ok(f"http://{LOOPBACK}:{port}/metrics")
    if name == "scorer":
        # The change-stream scorer; `port` serves its /metrics and /status (lag, counters).
        cmd = [
            sys.executable,
            str(REPO_ROOT / "include" / "scoring" / "change_stream_scorer.py"),
            "--metrics-port",
            str(port),
        ]
        return cmd, {}, lambda: _http_ok(f"http://{LOOPBACK}:{port}/status")
    raise StackError(f"unknown service {name!r}; choose from {ALL_SERVICES}")


def start_service(
    name: str,
    port: int | None,
    state_dir: Path,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> RunningService:
    """Start one service on `port` (or a free one), wait until healthy, write its pid file."""
    state_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    if port_in_use(port):
        raise StackError(
            f"{name}: port {LOOPBACK}:{port} is already taken by another process; "
            f"stop it or choose another port (--{name}-port)"
        )
    cmd, extra_env, healthy = _service_spec(name, port, state_dir)
    log_path = state_dir / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc_env = {**os.environ, **(env or {}), **extra_env}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=proc_env,
            cwd=str(REPO_ROOT),
            start_new_session=True,  # its own process group, so `down` stops its children too
        )
    # The script name when the command is `python script.py`, else the executable's name.
    marker = next((Path(part).name for part in cmd[1:2] if part.endswith(".py")), Path(cmd[0]).name)
    service = RunningService(name, port, proc.pid, str(log_path), marker)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(
                f"{name} exited with code {proc.returncode} before becoming healthy. "
                f"Last lines of {log_path}:\n{_tail(log_path)}"
            )
        if healthy():
            (state_dir / f"{name}.pid").write_text(str(proc.pid))
            return service
        time.sleep(0.3)
    _terminate(service)
    raise StackError(
        f"{name} did not become healthy on port {port} within {timeout:.0f}s. "
        f"Last lines of {log_path}:\n{_tail(log_path)}"
    )


def _is_ours(service: RunningService) -> bool:
    try:
        cmdline = Path(f"/proc/{service.pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return service.cmd_marker in cmdline


def _terminate(service: RunningService, grace: float = 15.0) -> bool:
    """Stop the service's process group if the pid still runs what we started."""
    if not _is_ours(service):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(service.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _is_ours(service):
            break
        # Reap it if it is our child (tests); harmless otherwise.
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(service.pid, os.WNOHANG)
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.pid, signal.SIGKILL)
    return True


def stop_service(service: RunningService) -> bool:
    return _terminate(service)


# ---------------------------------------------------------------- stack state and environment


def _state_file(state_dir: Path) -> Path:
    return state_dir / "stack.json"


def read_state(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, RunningService]:
    path = _state_file(state_dir)
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {name: RunningService(**svc) for name, svc in raw.get("services", {}).items()}


def _write_state(state_dir: Path, services: dict[str, RunningService]) -> None:
    payload = {"services": {name: asdict(svc) for name, svc in services.items()}}
    _state_file(state_dir).write_text(json.dumps(payload, indent=2))


def _local_token(state_dir: Path, name: str) -> str:
    """A random per-machine token kept under .local (never in the repo), made on first use."""
    path = state_dir / f"{name}.token"
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(64))  # 64 bytes: what HS512 JWT signing wants
        path.chmod(0o600)
    return path.read_text().strip()


def connection_env(mongo_port: int, s3_port: int) -> dict[str, str]:
    """Airflow connections (JSON form) and plain settings the library's CLIs read."""
    mongo_conn = {
        "conn_type": "mongo",
        "host": LOOPBACK,
        "port": mongo_port,
        "extra": {"directConnection": True},
    }
    aws_conn = {
        "conn_type": "aws",
        "login": LOCAL_S3_KEY_ID,
        "password": LOCAL_S3_SECRET,
        "extra": {"endpoint_url": s3_endpoint(s3_port), "region_name": LOCAL_REGION},
    }
    return {
        "AIRFLOW_CONN_MONGO_DEFAULT": json.dumps(mongo_conn),
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws_conn),
        "MONGO_URI": mongo_uri(mongo_port),
        "S3_ENDPOINT_URL": s3_endpoint(s3_port),
        "AWS_ACCESS_KEY_ID": LOCAL_S3_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": LOCAL_S3_SECRET,
        "AWS_DEFAULT_REGION": LOCAL_REGION,
    }


def endpoint_env(state_dir: Path, port: int) -> dict[str, str]:
    """Where the endpoint-update operator finds the local endpoint and its admin token."""
    return {
        "FRAUD_ENDPOINT_URL": f"http://{LOOPBACK}:{port}",
        "FRAUD_ENDPOINT_ADMIN_TOKEN": _local_token(state_dir, "endpoint_admin"),
    }


def airflow_env(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, str]:
    """Settings for a project-local Airflow: SQLite home under .local, our dags/ and plugins/."""
    home = state_dir / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__API__HOST": LOOPBACK,
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        # Stable secrets so restarts keep sessions; random per machine, stored under .local.
        "AIRFLOW__API_AUTH__JWT_SECRET": _local_token(state_dir, "jwt_secret"),
        "AIRFLOW__API__SECRET_KEY": _local_token(state_dir, "api_secret_key"),
        # `airflow standalone` starts its components as `airflow ...` found on PATH.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
    }


def stack_env(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, str]:
    """Everything a process needs to talk to the running stack (from stack.json)."""
    services = read_state(state_dir)
    missing = [name for name in ("mongo", "s3") if name not in services]
    if missing:
        raise StackError(f"the local stack is not up ({', '.join(missing)} missing); run `make up`")
    env = connection_env(services["mongo"].port, services["s3"].port)
    env.update(airflow_env(state_dir))
    if "endpoint" in services:
        env.update(endpoint_env(state_dir, services["endpoint"].port))
    return env


def endpoint_service_env(state_dir: Path, running: dict[str, RunningService]) -> dict[str, str]:
    """The endpoint's admin token and, with S3 up, what it needs to load s3:// models itself
    (endpoint_update deploys models by their s3:// URI)."""
    env = {"FRAUD_ENDPOINT_ADMIN_TOKEN": _local_token(state_dir, "endpoint_admin")}
    if "s3" in running:
        env.update(
            FRAUD_S3_ENDPOINT_URL=s3_endpoint(running["s3"].port),
            AWS_ACCESS_KEY_ID=LOCAL_S3_KEY_ID,
            AWS_SECRET_ACCESS_KEY=LOCAL_S3_SECRET,
            AWS_DEFAULT_REGION=LOCAL_REGION,
        )
    return env


def up(
    services: Iterable[str] = ALL_SERVICES,
    state_dir: Path = DEFAULT_STATE_DIR,
    ports: dict[str, int] | None = None,
) -> dict[str, RunningService]:
    """Start the named services that are not already running; return all running ones."""
    ports = {**DEFAULT_PORTS, **(ports or {})}
    running = {name: svc for name, svc in read_state(state_dir).items() if _is_ours(svc)}
    wanted = list(services)
    for name in ("mongo", "s3", "endpoint", "scorer", "airflow"):  # later ones need earlier ports
        if name not in wanted or name in running:
            continue
        env: dict[str, str] = {}
        if name == "endpoint":
            env = endpoint_service_env(state_dir, running)
        if name == "scorer":
            if "mongo" not in running or "endpoint" not in running:
                raise StackError(
                    "scorer needs mongo and endpoint; start them too (--services mongo,endpoint,scorer)"
                )
            env = {
                "MONGO_URI": mongo_uri(running["mongo"].port),
                "FRAUD_ENDPOINT_URL": f"http://{LOOPBACK}:{running['endpoint'].port}",
            }
        if name == "airflow":
            env = {**connection_env(running["mongo"].port, running["s3"].port), **airflow_env(state_dir)}
            if "endpoint" in running:
                env.update(endpoint_env(state_dir, running["endpoint"].port))
        timeout = 240.0 if name == "airflow" else 60.0
        running[name] = start_service(name, ports[name], state_dir, env=env, timeout=timeout)
        _write_state(state_dir, running)
        print(f"started {name:8s} on {LOOPBACK}:{running[name].port} (pid {running[name].pid})", flush=True)
    _write_state(state_dir, running)
    return running


def down(state_dir: Path = DEFAULT_STATE_DIR, services: Iterable[str] | None = None) -> list[str]:
    """Stop what this launcher started (all, or the named services); return their names."""
    running = read_state(state_dir)
    stopped = []
    # Reverse start order: the scorer stops before the MongoDB and endpoint it reads from.
    for name in reversed(list(services or running)):
        svc = running.get(name)
        if svc is None:
            continue
        if stop_service(svc):
            stopped.append(name)
        running.pop(name)
        (state_dir / f"{name}.pid").unlink(missing_ok=True)
    _write_state(state_dir, running)
    return stopped


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument("--services", default=",".join(ALL_SERVICES), help="comma-separated subset")
    parser.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR))
    for name in ALL_SERVICES:
        parser.add_argument(f"--{name}-port", type=int, default=DEFAULT_PORTS[name])
    args = parser.parse_args(argv)
    state_dir = Path(args.state_dir)
    names = [s.strip() for s in args.services.split(",") if s.strip()]
    try:
        if args.command == "up":
            ports = {name: getattr(args, f"{name}_port") for name in ALL_SERVICES}
            running = up(names, state_dir, ports)
            if "airflow" in running:
                pw = (
                    Path(airflow_env(state_dir)["AIRFLOW_HOME"])
                    / "simple_auth_manager_passwords.json.generated"
                )
                print(
                    f"Airflow UI: http://{LOOPBACK}:{running['airflow'].port}  (user admin, password in {pw})"
                )
        elif args.command == "down":
            stopped = down(state_dir, names if args.services != ",".join(ALL_SERVICES) else None)
            print("stopped: " + (", ".join(stopped) or "nothing (no service of ours was running)"))
        elif args.command == "status":
            for name, svc in read_state(state_dir).items():
                state = "running" if _is_ours(svc) else "NOT running"
                print(f"{name:8s} {state:12s} {LOOPBACK}:{svc.port} pid={svc.pid} log={svc.log}")
        elif args.command == "env":
            for key, value in stack_env(state_dir).items():
                print(f"export {key}='{value}'")
    except StackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
