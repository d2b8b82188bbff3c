"""The docker compose stack: docker-compose.yml, Dockerfile, docker/entrypoint.sh, .env.example.

No Docker engine is needed: the compose file is parsed, its commands are parsed by the
real `search` and `ray start` parsers, and the entrypoint runs under `sh`.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from search.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
SERVICES = {"postgres", "dashboard", "ray-head", "ray-worker", "search"}
PROJECT_SERVICES = SERVICES - {"postgres"}
SECRET_WORDS = re.compile(r"PASSWORD|TOKEN|SECRET", re.IGNORECASE)
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?msg} and bare $VAR; `$$` is a literal $.
VAR_RE = re.compile(
    r"(?<!\$)\$(?:\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
URL_WITH_PASSWORD = re.compile(r"[a-z0-9+]+://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_example() -> dict[str, tuple[str, str]]:
    """.env.example as {name: (value, the comment line just above it)}."""
    entries: dict[str, tuple[str, str]] = {}
    previous = ""
    for line in ENV_EXAMPLE.read_text().splitlines():
        stripped = line.strip()
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", stripped)
        if match:
            assert match[1] not in entries, f".env.example sets {match[1]} twice"
            entries[match[1]] = (match[2], previous)
        previous = stripped
    return entries


def compose_variables() -> dict[str, str | None]:
    """Every variable docker-compose.yml interpolates, with its default (None: none)."""
    found: dict[str, str | None] = {}
    # Compose interpolates the parsed keys and values, not the comments.
    text = "\n".join(strings(yaml.safe_load(COMPOSE.read_text())))
    for m in VAR_RE.finditer(text):
        name = m["name"] or m["bare"]
        default = m["arg"] if m["op"] in (":-", "-") else None
        if found.get(name) is None:
            found[name] = default
    return found


def substitute(value: str) -> str:
    """``value`` as compose would interpolate it with no .env: defaults, then .env.example."""
    example = env_example()

    def one(m: re.Match[str]) -> str:
        name = m["name"] or m["bare"]
        if m["op"] in (":-", "-"):
            return m["arg"]
        return example[name][0]

    return VAR_RE.sub(one, value).replace("$$", "$")


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    words = shlex.split(cmd) if isinstance(cmd, str) else [str(w) for w in cmd]
    return [substitute(w) for w in words]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): substitute(str(v)) for k, v in env.items()}


def strings(node: Any) -> list[str]:
    """Every key and scalar in a parsed YAML document, as text."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in [str(k), *strings(v)]]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return [] if node is None else [str(node)]


def test_compose_defines_the_stack(services: dict[str, Any]) -> None:
    assert set(services) == SERVICES
    for name in PROJECT_SERVICES:
        assert "build" in services[name] and "image" in services[name], name
        # The image's entrypoint builds SEARCH_STORAGE and joins Ray: never bypass it.
        assert "entrypoint" not in services[name], name
    assert services["postgres"]["image"].startswith("postgres:16")


def test_postgres_has_a_healthcheck_a_named_volume_and_a_password_file(
        compose: dict[str, Any], services: dict[str, Any]) -> None:
    pg = services["postgres"]
    assert "pg_isready" in " ".join(strings(pg["healthcheck"]["test"]))
    volume, _, target = pg["volumes"][0].partition(":")
    assert volume in compose["volumes"], "postgres data must live in a named volume"
    assert target == "/var/lib/postgresql/data"
    env = environment(pg)
    assert "POSTGRES_PASSWORD" not in env
    assert env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/pg_password"
    assert "pg_password" in pg["secrets"]
    assert env["POSTGRES_USER"] == "search" and env["POSTGRES_DB"] == "search"
    for name in ("dashboard", "search"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_no_password_or_token_is_written_down(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            if SECRET_WORDS.search(key):
                assert key.endswith(("_FILE", "_PATH")), f"{name}: {key} holds a secret itself"
                assert value.startswith("/run/secrets/"), f"{name}: {key}={value}"
    for text in strings(compose):
        assert not URL_WITH_PASSWORD.search(substitute(text)), text
    for secret in compose["secrets"].values():
        assert set(secret) == {"file"} and secret["file"].startswith("./secrets/")
    for key, (value, _) in env_example().items():
        assert not SECRET_WORDS.search(key), f".env.example: {key} looks like a secret"
        assert not URL_WITH_PASSWORD.search(value), f".env.example: {key}"
    assert not re.search(r"^\s*[^#\s]*(PASSWORD|TOKEN)\s*=", ENV_EXAMPLE.read_text(), re.M)


def test_published_ports_bind_only_localhost(services: dict[str, Any]) -> None:
    published = 0
    for name, service in services.items():
        assert service.get("network_mode") != "host", f"{name} would bypass the port rules"
        for port in service.get("ports", []):
            published += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                assert substitute(str(port)).startswith("127.0.0.1:"), f"{name}: {port}"
    assert published >= 1  # the dashboard


def test_every_compose_variable_has_a_default_and_is_documented() -> None:
    used = compose_variables()
    documented = env_example()
    assert used, "docker-compose.yml reads no variables?"
    assert set(used) == set(documented), (
        f"undocumented: {sorted(set(used) - set(documented))}; "
        f"documented but unused: {sorted(set(documented) - set(used))}")
    for name, default in used.items():
        value, comment = documented[name]
        assert default is not None, f"${{{name}}} has no default in docker-compose.yml"
        assert value == default, f".env.example {name}={value}, compose default {default}"
        assert comment.startswith("#") and len(comment) > 10, f"{name} has no comment line"


def test_search_commands_parse_with_the_search_parser(services: dict[str, Any]) -> None:
    parser = build_parser()
    subcommands = next(a.choices for a in parser._actions if a.dest == "command")
    checked = 0
    for name, service in services.items():
        argv = command(service)
        if not argv or argv[0] != "search":
            continue
        assert argv[1] in subcommands, f"{name}: no subcommand {argv[1]!r}"
        try:
            args = parser.parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"{name}: `{shlex.join(argv)}` does not parse")
        checked += 1
        if args.command == "dashboard":
            assert args.host == "0.0.0.0"  # reachable through the published port
            assert any(str(p).endswith(f":{args.port}") for p in service["ports"])
        if args.command == "run":
            mounts = [v.split(":")[1] for v in service["volumes"] if isinstance(v, str)]
            assert any(args.data.startswith(m + "/") for m in mounts), args.data
            assert args.ray_address == environment(service)["SEARCH_RAY_JOIN"]
    assert checked == 2  # dashboard, search


def ray_start_options() -> set[str]:
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    assert ray, "the ray command line is not installed"
    text = subprocess.run([ray, "start", "--help"], capture_output=True, text=True,
                          check=True, timeout=120).stdout
    return {opt for line in text.splitlines() if line.startswith("  -")
            for opt in re.findall(r"--[a-z0-9][a-z0-9-]*", line.split("  ")[1])}


def ray_start_commands(services: dict[str, Any]) -> list[tuple[str, list[str]]]:
    found = [(name, command(s)) for name, s in services.items()
             if command(s)[:2] == ["ray", "start"]]
    script = ENTRYPOINT.read_text().replace("\\\n", " ")
    for line in script.splitlines():
        if line.strip().startswith("ray start"):
            words = shlex.split(line.split(">")[0].split("||")[0])
            found.append(("docker/entrypoint.sh", words))
    return found


def test_ray_start_commands_use_real_options(services: dict[str, Any]) -> None:
    from ray.scripts.scripts import start

    options = ray_start_options()
    assert {"--head", "--address", "--block", "--port"} <= options  # the help was read
    commands = ray_start_commands(services)
    assert {name for name, _ in commands} == {"ray-head", "ray-worker", "docker/entrypoint.sh"}
    for name, argv in commands:
        for word in argv[2:]:
            if word.startswith("-"):
                assert word.split("=")[0] in options, f"{name}: ray start has no {word}"
        start.make_context("ray start", argv[2:])  # types too: click raises on a bad one
    head = dict(commands)["ray-head"]
    worker = dict(commands)["ray-worker"]
    assert "--head" in head and "--block" in head and "--block" in worker
    port = next(w.split("=")[1] for w in head if w.startswith("--port="))
    assert worker == ["ray", "start", f"--address=ray-head:{port}", *worker[3:]]


def test_ray_processes_use_token_authentication(compose: dict[str, Any]) -> None:
    from ray._private.authentication import authentication_token_setup

    raylet = Path(authentication_token_setup.__file__).parents[2] / "_raylet.so"
    # The names Ray reads (Ray >= 2.52): the mode in Python, the token file in C++.
    assert authentication_token_setup.AUTH_MODE_ENV_VAR == "RAY_AUTH_MODE"
    assert b"RAY_AUTH_TOKEN_PATH" in raylet.read_bytes()
    for name in ("ray-head", "ray-worker", "search"):
        service = compose["services"][name]
        env = environment(service)
        assert env["RAY_AUTH_MODE"] == "token", name
        secret = env["RAY_AUTH_TOKEN_PATH"].removeprefix("/run/secrets/")
        assert secret in service["secrets"] and secret in compose["secrets"], name


def test_ray_worker_reserves_the_gpus(services: dict[str, Any]) -> None:
    devices = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert "--num-gpus=0" in command(services["ray-head"])


def test_secret_files_are_git_ignored(compose: dict[str, Any]) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0

    readme = (ROOT / "secrets" / "README.md").read_text()
    for secret in compose["secrets"].values():
        path = secret["file"].removeprefix("./")
        assert ignored(path), f"{path} is not git-ignored"
        assert Path(path).name in readme, f"secrets/README.md does not mention {path}"
    assert "openssl rand" in readme
    assert ignored(".env")
    assert not ignored("secrets/README.md") and not ignored(".env.example")


def dockerfile_instructions() -> list[tuple[str, list[str]]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split()[0].upper(), shlex.split(ln)[1:]) for ln in lines]


def test_dockerfile_copies_what_exists_and_is_not_dockerignored() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    ignore = [p.strip().rstrip("/") for p in (ROOT / ".dockerignore").read_text().splitlines()
              if p.strip() and not p.startswith(("#", "!"))]
    copied = set()
    for instruction, args in dockerfile_instructions():
        if instruction != "COPY":
            continue
        sources = [a for a in args if not a.startswith("--")][:-1]
        assert sources and not any(a.startswith("--from") for a in args)
        for source in sources:
            path = source.rstrip("/")
            assert (ROOT / path).exists(), f"COPY {source}: no such file in the repository"
            parts = Path(path).parts
            for prefix in ("/".join(parts[:i]) for i in range(1, len(parts) + 1)):
                hit = [p for p in ignore if fnmatch.fnmatch(prefix, p)]
                assert not hit, f"COPY {source}: .dockerignore leaves it out ({hit})"
            copied.add(path)
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    # A subpackage (search.results) is copied with its package's folder.
    folders = {name.replace(".", "/") for name in packages["packages"]}
    missing = {f for f in folders if not any(f == c or f.startswith(c + "/") for c in copied)}
    assert not missing, f"a package of pyproject.toml is not copied: {sorted(missing)}"
    assert {"pyproject.toml", "README.md", "docker/entrypoint.sh"} <= copied


def test_dockerfile_installs_torch_first_and_runs_as_a_user() -> None:
    steps = dockerfile_instructions()
    assert steps[0] == ("FROM", ["python:3.11-slim"])
    args = dict(a[0].split("=", 1) for i, a in steps if i == "ARG")
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cu126"
    assert args["TORCH_VERSION"] == env_example()["TORCH_VERSION"][0]
    assert args["TORCH_INDEX"] == env_example()["TORCH_INDEX"][0]
    runs = [" ".join(a) for i, a in steps if i == "RUN"]
    torch_step = next(i for i, r in enumerate(runs) if "torch==${TORCH_VERSION}" in r)
    project_step = next(i for i, r in enumerate(runs) if "pip install ." in r)
    assert torch_step < project_step
    assert "--index-url ${TORCH_INDEX}" in runs[torch_step]
    users = [a[0] for i, a in steps if i == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("WORKDIR", ["/work"]) in steps
    assert any(i == "VOLUME" and "/work/runs" in " ".join(a) for i, a in steps)
    entrypoint = re.search(r"^ENTRYPOINT (.*)$", DOCKERFILE.read_text(), re.M)
    assert entrypoint and json.loads(entrypoint[1]) == ["/usr/local/bin/entrypoint.sh"]


def test_entrypoint_is_executable_posix_sh() -> None:
    assert os.access(ENTRYPOINT, os.X_OK), "chmod +x docker/entrypoint.sh"
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    tracked = subprocess.run(["git", "ls-files", "-s", str(ENTRYPOINT)], cwd=ROOT,
                             capture_output=True, text=True).stdout
    if tracked:
        assert tracked.startswith("100755 "), tracked
    checked = subprocess.run(["sh", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def run_entrypoint(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"}
    return subprocess.run(["sh", str(ENTRYPOINT), *argv], env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def env_output(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


@pytest.mark.parametrize(("settings", "expected"), [
    ({}, "postgresql+psycopg2://search:{pw}@postgres:5432/search"),
    ({"POSTGRES_USER": "alice", "POSTGRES_DB": "studies", "POSTGRES_HOST": "db.internal"},
     "postgresql+psycopg2://alice:{pw}@db.internal:5432/studies"),
])
def test_entrypoint_builds_search_storage_from_the_password_file(
        tmp_path: Path, settings: dict[str, str], expected: str) -> None:
    import sqlalchemy

    from search.storage import mask_url

    password = "9f2c-A.b_c~d"
    secret = tmp_path / "pg_password"
    secret.write_text(password + "\n")  # `openssl rand -hex 24 > file` ends with a newline
    out = env_output(run_entrypoint({**settings, "SEARCH_STORAGE_PASSWORD_FILE": str(secret)},
                                    "env"))
    url = out["SEARCH_STORAGE"]
    assert url == expected.format(pw=password)
    parsed = sqlalchemy.engine.make_url(url)
    assert parsed.password == password and parsed.drivername == "postgresql+psycopg2"
    assert password not in mask_url(url)


def test_entrypoint_keeps_a_given_search_storage_and_runs_the_command(tmp_path: Path) -> None:
    given = "sqlite:////work/runs/x/study.db"
    out = env_output(run_entrypoint({"SEARCH_STORAGE": given, "SEARCH_STORAGE_PASSWORD_FILE":
                                     str(tmp_path / "absent")}, "env"))
    assert out["SEARCH_STORAGE"] == given
    assert "SEARCH_STORAGE" not in env_output(run_entrypoint({}, "env"))
    echoed = run_entrypoint({}, "printf", "%s|", "a", "b c", "")
    assert echoed.returncode == 0 and echoed.stdout == "a|b c||"


@pytest.mark.parametrize("content", [None, "", "p@ss/word:1", "two words"])
def test_entrypoint_refuses_a_missing_or_unusable_password(
        tmp_path: Path, content: str | None) -> None:
    secret = tmp_path / "pg_password"
    if content is not None:
        secret.write_text(content)
    result = run_entrypoint({"SEARCH_STORAGE_PASSWORD_FILE": str(secret)}, "echo", "ran")
    assert result.returncode == 2
    assert result.stdout == ""  # the command never ran
    assert "SEARCH_STORAGE_PASSWORD_FILE" in result.stderr or str(secret) in result.stderr
    if content:
        assert content not in result.stderr  # the password is never printed
