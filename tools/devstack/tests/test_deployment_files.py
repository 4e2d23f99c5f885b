"""The container files agree with the code: docker/Dockerfile, docker-compose.yml, .dockerignore.

No Docker engine is needed. Each check is a function that takes the parsed files and returns a
list of problems (empty when all is well); the real files must give none, and the mutation
tests prove each kind of mismatch (a renamed setting, a missing build target, a shell-form
entrypoint, ...) is reported.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from credit_service.settings import CreditSettings
from decision_service.settings import DecisionSettings
from prequal_api.settings import ApiSettings
from prequal_devstack.config import KAFKA_VERSION, TOPICS
from prequal_shared.config import CommonSettings

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DOCKERFILE_IN_REPO = "docker/Dockerfile"


@dataclass(frozen=True)
class App:
    """A compose service built from docker/Dockerfile, and the code it runs."""

    member: str  # workspace member folder holding the pyproject.toml
    settings: type[CommonSettings]
    extra_programs: frozenset[str] = frozenset()  # allowed besides the member's console scripts
    port_setting: str | None = None  # the setting naming the port its health endpoint is on
    required_env: dict[str, str] = field(default_factory=dict)  # values compose must set


CONTAINER_ENV = {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "LOG_FORMAT": "json"}

APPS: dict[str, App] = {
    "prequal-api": App(
        member="services/prequal-api",
        settings=ApiSettings,
        port_setting="API_PORT",
        required_env={**CONTAINER_ENV, "API_HOST": "0.0.0.0"},
    ),
    "credit-service": App(
        member="services/credit-service",
        settings=CreditSettings,
        port_setting="CREDIT_OPS_PORT",
        required_env={**CONTAINER_ENV, "OPS_HOST": "0.0.0.0"},
    ),
    "decision-service": App(
        member="services/decision-service",
        settings=DecisionSettings,
        port_setting="DECISION_OPS_PORT",
        required_env={**CONTAINER_ENV, "OPS_HOST": "0.0.0.0"},
    ),
    "migrate": App(member="shared", settings=CommonSettings, extra_programs=frozenset({"alembic"})),
}
LONG_RUNNING = ("prequal-api", "credit-service", "decision-service")
# Whoever depends on these must wait for this condition.
DEPENDENCY_CONDITIONS = {
    "kafka": "service_healthy",
    "postgres": "service_healthy",
    "migrate": "service_completed_successfully",
    "kafka-init": "service_completed_successfully",
}
# Direct dependencies each service must declare.
REQUIRED_DEPENDENCIES = {
    "kafka-init": {"kafka"},
    "migrate": {"postgres"},
    "prequal-api": {"migrate", "kafka-init"},
    "credit-service": {"kafka-init"},
    "decision-service": {"migrate", "kafka-init"},
}
MUST_HAVE_HEALTHCHECK = ("kafka", "postgres", "prequal-api")
# Paths that must never reach the build context.
MUST_BE_IGNORED = (
    ".git",
    ".venv",
    ".devstack",
    ".bench",
    ".env",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "shared/src/prequal_shared/__pycache__",
    "shared/tests",
    "services/prequal-api/tests",
    "services/credit-service/tests",
    "services/decision-service/tests",
    "tools/devstack/tests",
)


# --------------------------------------------------------------------------------------------
# Dockerfile parsing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass(frozen=True)
class Stage:
    index: int
    base: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def last(self, keyword: str) -> Instruction | None:
        found = [i for i in self.instructions if i.keyword == keyword]
        return found[-1] if found else None


@dataclass(frozen=True)
class Dockerfile:
    stages: tuple[Stage, ...]

    def stage(self, name: str) -> Stage | None:
        for stage in self.stages:
            if stage.name is not None and stage.name.lower() == name.lower():
                return stage
        return None

    def chain(self, stage: Stage) -> list[Stage]:
        """The stage, then the stage it is built FROM, and so on (images outside are not)."""
        result = [stage]
        while (parent := self.stage(result[-1].base)) is not None and parent.index < stage.index:
            if parent in result:
                break
            result.append(parent)
        return result

    def effective(self, stage: Stage, keyword: str) -> Instruction | None:
        """The instruction that applies in `stage`, inherited from a parent stage if need be."""
        for member in self.chain(stage):
            if (found := member.last(keyword)) is not None:
                return found
        return None

    def in_chain(self, stage: Stage, keyword: str) -> list[Instruction]:
        return [i for s in self.chain(stage) for i in s.instructions if i.keyword == keyword]


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Instructions with their first line number: comments dropped, continuations joined."""
    lines: list[tuple[int, str]] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # also inside a continuation, as Docker does
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        lines.append((start, " ".join(p for p in parts if p)))
        parts = []
    if parts:
        lines.append((start, " ".join(p for p in parts if p)))
    return lines


def parse_dockerfile(text: str) -> Dockerfile:
    stages: list[Stage] = []
    current: list[Instruction] | None = None
    base, name = "", None
    for line, content in _logical_lines(text):
        keyword, _, args = content.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            if current is not None:
                stages.append(Stage(len(stages), base, name, tuple(current)))
            tokens = [t for t in args.split() if not t.startswith("--")]
            base = tokens[0] if tokens else ""
            name = tokens[2] if len(tokens) >= 3 and tokens[1].lower() == "as" else None
            current = []
        elif current is not None:
            current.append(Instruction(line, keyword, args))
    if current is not None:
        stages.append(Stage(len(stages), base, name, tuple(current)))
    return Dockerfile(tuple(stages))


def _split_flags(args: str) -> tuple[dict[str, str], str]:
    """`--from=x --chown=y rest` -> ({"from": "x", "chown": "y"}, "rest")."""
    flags: dict[str, str] = {}
    rest = args
    while match := re.match(r"--([a-z-]+)(?:=(\S*))?\s+", rest):
        flags[match.group(1)] = match.group(2) or ""
        rest = rest[match.end() :]
    return flags, rest


def exec_form(args: str) -> list[str] | None:
    """The argument vector of an exec-form (JSON array) instruction, None for shell form."""
    try:
        value = json.loads(args)
    except ValueError:
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


def copy_parts(args: str) -> tuple[str | None, list[str], str]:
    """(--from stage or None, sources, destination) of a COPY or ADD."""
    flags, rest = _split_flags(args)
    vector = exec_form(rest)
    paths = vector if vector is not None else shlex.split(rest)
    return flags.get("from"), paths[:-1], paths[-1] if paths else ""


def env_values(stage_chain: Iterable[Stage]) -> dict[str, str]:
    """ENV values that apply in the first stage of the chain (nearest stage wins)."""
    values: dict[str, str] = {}
    for stage in reversed(list(stage_chain)):
        for instruction in stage.instructions:
            if instruction.keyword != "ENV":
                continue
            tokens = shlex.split(instruction.args)
            if tokens and "=" not in tokens[0]:  # legacy `ENV KEY value`
                values[tokens[0]] = " ".join(tokens[1:])
                continue
            for token in tokens:
                key, _, value = token.partition("=")
                values[key] = value
    return values


# --------------------------------------------------------------------------------------------
# loading the files
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentFiles:
    compose: dict[str, Any]
    compose_dir: Path
    dockerfile: Dockerfile
    dockerignore: list[str]
    root: Path = ROOT

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        services: dict[str, dict[str, Any]] = self.compose.get("services") or {}
        return services


def load_files(
    compose_path: Path = COMPOSE_FILE,
    dockerfile_path: Path = DOCKERFILE,
    dockerignore_path: Path = DOCKERIGNORE,
) -> DeploymentFiles:
    compose = yaml.safe_load(compose_path.read_text(encoding="utf-8"))
    assert isinstance(compose, dict), f"{compose_path} is not a mapping"
    patterns = [
        line.strip()
        for line in dockerignore_path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    return DeploymentFiles(
        compose=compose,
        # Relative build contexts are resolved against the real repository, wherever the
        # (possibly mutated) compose file was written.
        compose_dir=ROOT,
        dockerfile=parse_dockerfile(dockerfile_path.read_text(encoding="utf-8")),
        dockerignore=patterns,
    )


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------

_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def interpolate(value: str) -> str:
    """Compose interpolation with an empty environment: `${X:-default}` -> default, `$$` -> `$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("op") in (":-", "-"):
            return match.group("arg") or ""
        return ""

    return _INTERPOLATION.sub(replace, value)


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment:` (mapping or list form), interpolated; pass-throughs dropped."""
    raw = service.get("environment") or {}
    pairs: dict[str, Any] = {}
    if isinstance(raw, list):
        for item in raw:
            key, sep, value = str(item).partition("=")
            pairs[key] = value if sep else None
    else:
        pairs = dict(raw)
    return {
        key: interpolate(str(value).lower() if isinstance(value, bool) else str(value))
        for key, value in pairs.items()
        if value is not None
    }


def setting_names(settings: type[CommonSettings]) -> set[str]:
    return {name.upper() for name in settings.model_fields}


def built_from_dockerfile(files: DeploymentFiles) -> dict[str, dict[str, Any]]:
    """Services whose `build:` uses docker/Dockerfile, with their build section."""
    found: dict[str, dict[str, Any]] = {}
    for name, service in files.services.items():
        build = service.get("build")
        if not isinstance(build, dict):
            continue
        context = (files.compose_dir / str(build.get("context", "."))).resolve()
        dockerfile = (context / str(build.get("dockerfile", "Dockerfile"))).resolve()
        if dockerfile == (files.root / DOCKERFILE_IN_REPO).resolve():
            found[name] = build
    return found


def _command_vector(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def program_of(files: DeploymentFiles, service_name: str) -> str | None:
    """What the container runs first: compose entrypoint/command, else the image's."""
    service = files.services[service_name]
    entrypoint = _command_vector(service.get("entrypoint"))
    if entrypoint:
        return entrypoint[0]
    target = str((service.get("build") or {}).get("target", ""))
    stage = files.dockerfile.stage(target)
    if stage is not None:
        image_entrypoint = files.dockerfile.effective(stage, "ENTRYPOINT")
        if image_entrypoint is not None:
            vector = exec_form(image_entrypoint.args) or shlex.split(image_entrypoint.args)
            return vector[0] if vector else None
    command = _command_vector(service.get("command"))
    if command:
        return command[0]
    if stage is not None and (cmd := files.dockerfile.effective(stage, "CMD")) is not None:
        vector = exec_form(cmd.args) or shlex.split(cmd.args)
        return vector[0] if vector else None
    return None


def pyproject(member: str) -> dict[str, Any]:
    with (ROOT / member / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    return re.sub(r"[-_.]+", "-", match.group(0)).lower() if match else ""


def venv_packages(files: DeploymentFiles, stage: Stage) -> set[str]:
    """Workspace packages `uv sync --package` installs into the venvs a final stage copies."""
    packages: set[str] = set()
    for instruction in files.dockerfile.in_chain(stage, "COPY"):
        source_stage, _, _ = copy_parts(instruction.args)
        builder = files.dockerfile.stage(source_stage) if source_stage else None
        if builder is None:
            continue
        for run in files.dockerfile.in_chain(builder, "RUN"):
            if re.search(r"\buv\s+sync\b", run.args):
                packages.update(re.findall(r"--package[=\s]+([A-Za-z0-9._-]+)", run.args))
    return packages


def published_container_ports(service: dict[str, Any]) -> set[int]:
    ports: set[int] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
            continue
        target = interpolate(str(entry)).split("/")[0].rsplit(":", 1)[-1]
        ports.add(int(target.split("-")[0]))
    return ports


def healthcheck_text(service: dict[str, Any]) -> str:
    test = (service.get("healthcheck") or {}).get("test")
    if isinstance(test, list):
        return " ".join(str(t) for t in test)
    return str(test or "")


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore pattern syntax (Go filepath.Match plus `**`) as a regex."""
    pattern = str(PurePosixPath("/" + pattern.strip("/"))).lstrip("/")
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 1)) != -1:
            out.append("[" + pattern[i + 1 : end].replace("!", "^", 1) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def is_ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` (or a folder holding it) out of the build context."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _dockerignore_regex(pattern[1:] if negate else pattern)
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not negate
    return ignored


# --------------------------------------------------------------------------------------------
# the checks: each returns a list of problems
# --------------------------------------------------------------------------------------------


def build_target_problems(files: DeploymentFiles) -> list[str]:
    problems: list[str] = []
    built = built_from_dockerfile(files)
    for name, build in built.items():
        target = build.get("target")
        if not target:
            problems.append(f"{name}: builds {DOCKERFILE_IN_REPO} without a target")
        elif files.dockerfile.stage(str(target)) is None:
            stages = [s.name for s in files.dockerfile.stages if s.name]
            problems.append(
                f"{name}: build target {target!r} is not a stage of {DOCKERFILE_IN_REPO} "
                f"(stages: {', '.join(stages)})"
            )
        context = (files.compose_dir / str(build.get("context", "."))).resolve()
        if context != files.root.resolve():
            problems.append(f"{name}: build context must be the repository root, not {context}")
    for name in APPS:
        if name not in built:
            problems.append(f"{name}: missing, or not built from {DOCKERFILE_IN_REPO}")
    for name in built:
        if name not in APPS:
            problems.append(f"{name}: built from {DOCKERFILE_IN_REPO} but unknown to this test")
    return problems


def command_problems(files: DeploymentFiles) -> list[str]:
    problems: list[str] = []
    for name, app in APPS.items():
        if name not in files.services:
            continue
        project = pyproject(app.member)["project"]
        scripts = set((project.get("scripts") or {}).keys())
        program = program_of(files, name)
        allowed = scripts | app.extra_programs
        if program is None:
            problems.append(f"{name}: runs nothing (no entrypoint or command)")
            continue
        if program not in allowed:
            problems.append(
                f"{name}: runs {program!r}, which is not a console script of {app.member} "
                f"(declared: {', '.join(sorted(allowed)) or 'none'})"
            )
            continue
        target = str((files.services[name].get("build") or {}).get("target", ""))
        stage = files.dockerfile.stage(target)
        if stage is None:
            continue  # reported by build_target_problems
        installed = venv_packages(files, stage)
        if project["name"] not in installed:
            problems.append(
                f"{name}: the venv it copies does not install {project['name']} "
                f"(uv sync --package: {', '.join(sorted(installed)) or 'none'})"
            )
        if program in app.extra_programs:
            dependencies = {_requirement_name(r) for r in project.get("dependencies", [])}
            if program not in dependencies:
                problems.append(f"{name}: runs {program!r} but {app.member} does not depend on it")
    return problems


def environment_name_problems(files: DeploymentFiles) -> list[str]:
    problems: list[str] = []
    for name, app in APPS.items():
        if name not in files.services:
            continue
        known = setting_names(app.settings)
        for key in compose_environment(files.services[name]):
            if key not in known:
                problems.append(f"{name}: {key} is not a setting of {app.settings.__name__}")
    return problems


def container_value_problems(files: DeploymentFiles) -> list[str]:
    """Values that must differ in containers: hosts to bind and to reach, ports that agree."""
    problems: list[str] = []
    for name, app in APPS.items():
        if name not in files.services:
            continue
        service = files.services[name]
        env = compose_environment(service)
        for key, expected in app.required_env.items():
            if env.get(key) != expected:
                problems.append(f"{name}: {key} must be {expected} in compose, got {env.get(key)}")
        database_url = env.get("DATABASE_URL")
        if name != "credit-service" and database_url is None:
            problems.append(f"{name}: DATABASE_URL is not set")
        elif database_url is not None and "@postgres:" not in database_url:
            problems.append(f"{name}: DATABASE_URL does not point at the postgres service")
        env_file = service.get("env_file")
        entries = env_file if isinstance(env_file, list) else [env_file]
        if env_file is None or not all(
            isinstance(e, dict) and e.get("required") is False for e in entries
        ):
            problems.append(f"{name}: env_file must list .env with required: false")
        if app.port_setting is None:
            continue
        stage = files.dockerfile.stage(str((service.get("build") or {}).get("target", "")))
        if stage is None:
            continue
        port_field = app.settings.model_fields.get(app.port_setting.lower())
        if port_field is None:
            problems.append(
                f"{name}: {app.port_setting} is not a setting of {app.settings.__name__}"
            )
            continue
        image_env = env_values(files.dockerfile.chain(stage))
        default = str(port_field.default)
        port = env.get(app.port_setting, image_env.get(app.port_setting, default))
        exposed = {
            token.split("/")[0]
            for instruction in files.dockerfile.in_chain(stage, "EXPOSE")
            for token in instruction.args.split()
        }
        image_port = image_env.get(app.port_setting, default)
        if image_port not in exposed:
            problems.append(
                f"{name}: image listens on {app.port_setting}={image_port} but EXPOSEs "
                f"{', '.join(sorted(exposed)) or 'nothing'}"
            )
        published = published_container_ports(service)
        if published and int(port) not in published:
            problems.append(
                f"{name}: publishes container port {', '.join(map(str, sorted(published)))} "
                f"but {app.port_setting} is {port}"
            )
        check = healthcheck_text(service)
        probed = re.search(r"(?:127\.0\.0\.1|localhost):(\d+)", check)
        if probed is not None and probed.group(1) != port:
            problems.append(
                f"{name}: healthcheck probes port {probed.group(1)} but {app.port_setting} is {port}"
            )
    return problems


def dependency_problems(files: DeploymentFiles) -> list[str]:
    problems: list[str] = []
    for name, service in files.services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        for dependency, options in depends.items():
            if dependency not in files.services:
                problems.append(f"{name}: depends on {dependency}, which is not a service")
            expected = DEPENDENCY_CONDITIONS.get(dependency)
            condition = (options or {}).get("condition", "service_started")
            if expected is not None and condition != expected:
                problems.append(
                    f"{name}: depends on {dependency} with condition {condition}, "
                    f"expected {expected}"
                )
        missing = REQUIRED_DEPENDENCIES.get(name, set()) - set(depends)
        if missing:
            problems.append(f"{name}: must depend on {', '.join(sorted(missing))}")
    for name in MUST_HAVE_HEALTHCHECK:
        check = (files.services.get(name) or {}).get("healthcheck") or {}
        if not check.get("test") or check.get("disable"):
            problems.append(f"{name} has no healthcheck")
    for name in LONG_RUNNING:
        if (files.services.get(name) or {}).get("restart") != "unless-stopped":
            problems.append(f"{name}: restart must be unless-stopped")
    for name, service in files.services.items():
        check = healthcheck_text(service)
        if name in APPS and re.search(r"\b(curl|wget)\b", check):
            problems.append(f"{name}: healthcheck uses curl/wget, which python:3.11-slim lacks")
    return problems


def on_named_volume(compose: dict[str, Any], service: str, path: str) -> bool:
    """Whether `path` in the service's container is on one of the file's named volumes."""
    named = set(compose.get("volumes") or {})
    for mount in (compose.get("services") or {}).get(service, {}).get("volumes") or []:
        if isinstance(mount, dict):  # the long syntax
            source, target = str(mount.get("source", "")), str(mount.get("target", ""))
        else:
            source, _, target = str(mount).partition(":")
        target = target.split(":")[0].rstrip("/")
        if source in named and path and (path == target or path.startswith(f"{target}/")):
            return True
    return False


def infrastructure_problems(files: DeploymentFiles) -> list[str]:
    problems: list[str] = []
    services = files.services
    for name in ("kafka", "kafka-init"):
        image = str((services.get(name) or {}).get("image", ""))
        if image != f"apache/kafka:{KAFKA_VERSION}":
            problems.append(
                f"{name}: image {image or 'missing'} does not match the devstack's Kafka "
                f"{KAFKA_VERSION} (prequal_devstack.config.KAFKA_VERSION)"
            )
    if str((services.get("postgres") or {}).get("image", "")) != "postgres:16":
        problems.append("postgres: image must be postgres:16")
    if any(
        "zookeeper" in name or "zookeeper" in str(s.get("image", ""))
        for name, s in services.items()
    ):
        problems.append("a ZooKeeper service is defined; Kafka runs in KRaft mode")
    kafka_env = compose_environment(services.get("kafka") or {})
    if "controller" not in kafka_env.get("KAFKA_PROCESS_ROLES", ""):
        problems.append("kafka: KAFKA_PROCESS_ROLES must include controller (KRaft)")
    if "PLAINTEXT://kafka:9092" not in kafka_env.get("KAFKA_ADVERTISED_LISTENERS", ""):
        problems.append("kafka: must advertise PLAINTEXT://kafka:9092 to the other containers")
    log_dir = kafka_env.get("KAFKA_LOG_DIRS", "")
    if not on_named_volume(files.compose, "kafka", log_dir):
        problems.append(
            f"kafka: its data ({log_dir or 'KAFKA_LOG_DIRS unset'}) is not on a named volume,"
            " so `docker compose down` loses the topics, the offsets and the DLQ"
        )
    postgres_check = " ".join(
        _command_vector(((services.get("postgres") or {}).get("healthcheck") or {}).get("test"))
        or []
    )
    if "pg_isready" in postgres_check and not re.search(r"\s-h\s", postgres_check):
        problems.append(
            "postgres: pg_isready checks the socket, which the image's set-up server answers"
            " before PostgreSQL listens on TCP"
        )
    init = services.get("kafka-init") or {}
    script = interpolate(
        " ".join(
            (_command_vector(init.get("entrypoint")) or [])
            + (_command_vector(init.get("command")) or [])
        )
    )
    topic_defaults = {
        str(CommonSettings.model_fields[f].default)
        for f in ("topic_applications_submitted", "topic_credit_reports", "topic_dlq")
    }
    for topic in sorted(set(TOPICS) | topic_defaults):
        if not re.search(rf"(?<![\w.-]){re.escape(topic)}(?![\w.-])", script):
            problems.append(f"kafka-init: does not create topic {topic}")
    for option in ("--create", "--if-not-exists", "--partitions 3", "--replication-factor 1"):
        if option not in script:
            problems.append(f"kafka-init: kafka-topics.sh is not called with {option}")
    return problems


def copy_source_problems(files: DeploymentFiles) -> list[str]:
    problems: list[str] = []
    for stage in files.dockerfile.stages:
        for instruction in stage.instructions:
            if instruction.keyword not in ("COPY", "ADD"):
                continue
            source_stage, sources, _ = copy_parts(instruction.args)
            if source_stage is not None:
                if files.dockerfile.stage(source_stage) is None and ":" not in source_stage:
                    problems.append(
                        f"line {instruction.line}: COPY --from={source_stage} names no stage"
                    )
                continue
            for source in sources:
                clean = source.lstrip("/").removeprefix("./") or "."
                matches = list(files.root.glob(clean)) if any(c in clean for c in "*?[") else []
                if not matches and not (files.root / clean).exists():
                    problems.append(
                        f"line {instruction.line}: COPY source {source!r} does not exist in the "
                        "repository"
                    )
                elif clean != "." and is_ignored(clean, files.dockerignore):
                    problems.append(
                        f"line {instruction.line}: COPY source {source!r} is excluded by "
                        ".dockerignore"
                    )
    return problems


def dockerignore_problems(files: DeploymentFiles) -> list[str]:
    return [
        f".dockerignore does not exclude {path}"
        for path in MUST_BE_IGNORED
        if not is_ignored(path, files.dockerignore)
    ]


def final_stage_problems(files: DeploymentFiles) -> list[str]:
    problems: list[str] = []
    dockerfile = files.dockerfile
    for target in APPS:
        stage = dockerfile.stage(target)
        if stage is None:
            problems.append(f"{target}: no `FROM ... AS {target}` stage")
            continue
        chain = dockerfile.chain(stage)
        if chain[-1].base != "python:3.11-slim":
            problems.append(f"{target}: based on {chain[-1].base}, not python:3.11-slim")
        user = dockerfile.effective(stage, "USER")
        if user is None or user.args.split(":")[0] in ("root", "0"):
            problems.append(f"{target}: runs as root (no USER, or USER root)")
        if dockerfile.effective(stage, "STOPSIGNAL") is None:
            problems.append(f"{target}: no STOPSIGNAL")
        entrypoint = dockerfile.effective(stage, "ENTRYPOINT")
        cmd = dockerfile.effective(stage, "CMD")
        if entrypoint is None and cmd is None:
            problems.append(f"{target}: neither ENTRYPOINT nor CMD")
        for instruction in (entrypoint, cmd):
            if instruction is not None and exec_form(instruction.args) is None:
                problems.append(
                    f"{target}: {instruction.keyword} is not in exec (JSON array) form "
                    f"(line {instruction.line}: {instruction.args})"
                )
        if env_values(chain).get("PYTHONUNBUFFERED") != "1":
            problems.append(f"{target}: PYTHONUNBUFFERED=1 is not set")
        for member in chain:
            for instruction in member.instructions:
                text = instruction.args
                if instruction.keyword == "RUN" and re.search(
                    r"\b(apt-get|apt|pip|uv)\s+(install|sync)\b|build-essential|gcc", text
                ):
                    problems.append(
                        f"{target}: installs software in a final stage (line {instruction.line})"
                    )
                if instruction.keyword == "COPY" and re.search(r"/uv\b", text):
                    problems.append(f"{target}: copies uv into a final stage")
        if target in LONG_RUNNING:
            check = dockerfile.effective(stage, "HEALTHCHECK")
            if target == "prequal-api" and check is None:
                problems.append(f"{target}: no HEALTHCHECK")
            if check is not None:
                _, rest = _split_flags(check.args)
                kind, _, command = rest.partition(" ")
                if kind.upper() == "CMD" and re.search(r"\b(curl|wget)\b", command):
                    problems.append(f"{target}: HEALTHCHECK uses curl/wget (not in slim)")
                elif kind.upper() == "CMD" and exec_form(command) is None:
                    problems.append(f"{target}: HEALTHCHECK CMD is not in exec form")
                elif kind.upper() != "CMD":
                    problems.append(f"{target}: HEALTHCHECK is disabled")
        if target == "migrate":
            copied = {
                source.rstrip("/")
                for instruction in dockerfile.in_chain(stage, "COPY")
                for from_stage, sources, _ in [copy_parts(instruction.args)]
                if from_stage is None
                for source in sources
            }
            for needed in ("alembic.ini", "alembic"):
                if needed not in copied:
                    problems.append(f"migrate: does not copy {needed}")
    return problems


CHECKS: dict[str, Callable[[DeploymentFiles], list[str]]] = {
    "build targets": build_target_problems,
    "commands": command_problems,
    "environment names": environment_name_problems,
    "container values": container_value_problems,
    "depends_on and healthchecks": dependency_problems,
    "kafka, postgres and topics": infrastructure_problems,
    "COPY sources": copy_source_problems,
    ".dockerignore": dockerignore_problems,
    "final stages": final_stage_problems,
}


def all_problems(files: DeploymentFiles) -> list[str]:
    return [problem for check in CHECKS.values() for problem in check(files)]


def settings_value_problems(
    files: DeploymentFiles, service: str, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Load the service's settings class with exactly the environment compose gives it."""
    app = APPS[service]
    with monkeypatch.context() as patch:
        for name in setting_names(app.settings):
            patch.delenv(name, raising=False)
        for key, value in compose_environment(files.services.get(service) or {}).items():
            patch.setenv(key, value)
        try:
            app.settings(_env_file=None)
        except ValidationError as exc:
            return [
                f"{service}: {str(err['loc'][0]).upper() if err['loc'] else '?'}: {err['msg']}"
                for err in exc.errors(include_url=False)
            ]
    return []


# --------------------------------------------------------------------------------------------
# tests: the real files
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files() -> DeploymentFiles:
    return load_files()


def test_the_dockerfile_parses_into_the_expected_stages(files: DeploymentFiles) -> None:
    names = {stage.name for stage in files.dockerfile.stages}
    assert set(APPS) <= names
    assert files.dockerfile.stage("migrate") is not None
    assert sorted(built_from_dockerfile(files)) == sorted(APPS)


@pytest.mark.parametrize("check", list(CHECKS), ids=list(CHECKS))
def test_the_real_files_have_no_problems(files: DeploymentFiles, check: str) -> None:
    assert CHECKS[check](files) == []


@pytest.mark.parametrize("service", list(APPS))
def test_compose_environment_validates_against_the_settings_class(
    files: DeploymentFiles, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert compose_environment(files.services[service]), f"{service} sets no environment"
    assert settings_value_problems(files, service, monkeypatch) == []


def test_interpolation_uses_the_defaults() -> None:
    assert interpolate("a:${X:-1}:${Y-2}:${Z}:$$w") == "a:1:2::$w"


def test_dockerignore_matching_follows_docker_rules() -> None:
    patterns = ["**/tests", "*.log", ".env*", "!keep.log"]
    assert is_ignored("services/api/tests/test_x.py", patterns)
    assert is_ignored("tests", patterns)
    assert is_ignored("a.log", patterns)
    assert not is_ignored("keep.log", patterns)
    assert not is_ignored("sub/a.log", patterns)
    assert is_ignored(".env.local", patterns)
    assert not is_ignored("shared/src/x.py", patterns)


# --------------------------------------------------------------------------------------------
# tests: each kind of mismatch is reported
# --------------------------------------------------------------------------------------------


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service: dict[str, Any] = compose["services"][name]
    return service


def _rename_env(service: str, old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def edit(compose: dict[str, Any]) -> None:
        env = _service(compose, service)["environment"]
        env[new] = env.pop(old)

    return edit


def _set(service: str, *path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(compose: dict[str, Any]) -> None:
        node = _service(compose, service)
        for key in path[:-1]:
            node = node[key]
        if value is None:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return edit


@dataclass(frozen=True)
class Mutation:
    id: str
    expected: str
    compose: Callable[[dict[str, Any]], None] | None = None
    dockerfile: tuple[str, str] | None = None  # (old, new): old must occur in the real file
    dockerignore_extra: str | None = None


MUTATIONS = [
    Mutation(
        "renamed-env-var",
        "credit-service: CREDIT_OPS_PORTT is not a setting of CreditSettings",
        compose=_rename_env("credit-service", "CREDIT_OPS_PORT", "CREDIT_OPS_PORTT"),
    ),
    Mutation(
        "missing-build-target",
        "prequal-api: build target 'prequal-apii' is not a stage",
        compose=_set("prequal-api", "build", "target", value="prequal-apii"),
    ),
    Mutation(
        "entrypoint-is-not-a-console-script",
        "credit-service: runs 'credit_service', which is not a console script",
        dockerfile=('ENTRYPOINT ["credit-service"]', 'ENTRYPOINT ["credit_service"]'),
    ),
    Mutation(
        "compose-entrypoint-overrides-the-image",
        "decision-service: runs 'prequal-dlqq', which is not a console script",
        compose=_set("decision-service", "entrypoint", value=["prequal-dlqq"]),
    ),
    Mutation(
        "shell-form-entrypoint",
        "decision-service: ENTRYPOINT is not in exec (JSON array) form",
        dockerfile=('ENTRYPOINT ["decision-service"]', "ENTRYPOINT decision-service"),
    ),
    Mutation(
        "runs-as-root",
        "migrate: runs as root",
        dockerfile=(
            "COPY alembic /app/alembic\nUSER 10001:10001",
            "COPY alembic /app/alembic\nUSER root",
        ),
    ),
    Mutation(
        "no-stopsignal",
        "prequal-api: no STOPSIGNAL",
        dockerfile=("STOPSIGNAL SIGTERM\n", ""),
    ),
    Mutation(
        "copy-source-missing",
        "COPY source 'alembic.cfg' does not exist",
        dockerfile=("COPY alembic.ini /app/alembic.ini", "COPY alembic.cfg /app/alembic.ini"),
    ),
    Mutation(
        "venv-without-the-service",
        "credit-service: the venv it copies does not install credit-service",
        dockerfile=("--package credit-service", "--package prequal-shared"),
    ),
    Mutation(
        "copied-path-dockerignored",
        "COPY source 'alembic' is excluded by .dockerignore",
        dockerignore_extra="alembic\n",
    ),
    Mutation(
        "tests-not-dockerignored",
        ".dockerignore does not exclude services/prequal-api/tests",
        dockerignore_extra="!services/prequal-api/tests\n",
    ),
    Mutation(
        "migrate-only-started",
        "prequal-api: depends on migrate with condition service_started",
        compose=_set("prequal-api", "depends_on", "migrate", "condition", value="service_started"),
    ),
    Mutation(
        "postgres-only-started",
        "migrate: depends on postgres with condition service_started",
        compose=_set("migrate", "depends_on", "postgres", "condition", value="service_started"),
    ),
    Mutation(
        "no-api-healthcheck",
        "prequal-api has no healthcheck",
        compose=_set("prequal-api", "healthcheck", value=None),
    ),
    Mutation(
        "kafka-version-drift",
        "kafka: image apache/kafka:3.8.0 does not match the devstack's Kafka",
        compose=_set("kafka", "image", value="apache/kafka:3.8.0"),
    ),
    Mutation(
        "api-port-disagrees-with-published-port",
        "prequal-api: publishes container port 8000 but API_PORT is 8080",
        compose=_set("prequal-api", "environment", "API_PORT", value="8080"),
    ),
    Mutation(
        "api-bound-to-loopback",
        "prequal-api: API_HOST must be 0.0.0.0 in compose, got 127.0.0.1",
        compose=_set("prequal-api", "environment", "API_HOST", value="127.0.0.1"),
    ),
    Mutation(
        "curl-healthcheck",
        "prequal-api: healthcheck uses curl/wget",
        compose=_set(
            "prequal-api",
            "healthcheck",
            "test",
            value=["CMD", "curl", "-f", "http://127.0.0.1:8000/health/ready"],
        ),
    ),
    Mutation(
        "kafka-data-in-the-container",
        "kafka: its data (/tmp/kraft-combined-logs) is not on a named volume",
        compose=_set("kafka", "environment", "KAFKA_LOG_DIRS", value="/tmp/kraft-combined-logs"),
    ),
    Mutation(
        "kafka-volume-not-mounted",
        "kafka: its data (/var/lib/kafka/data) is not on a named volume",
        compose=_set("kafka", "volumes", value=None),
    ),
    Mutation(
        "postgres-checked-on-its-socket",
        "postgres: pg_isready checks the socket",
        compose=_set(
            "postgres",
            "healthcheck",
            "test",
            value=["CMD-SHELL", 'pg_isready -U "$${POSTGRES_USER}" -d "$${POSTGRES_DB}"'],
        ),
    ),
    Mutation(
        "topic-not-created",
        "kafka-init: does not create topic loan_processing_dlq",
        compose=_set(
            "kafka-init",
            "command",
            value=[
                "/opt/kafka/bin/kafka-topics.sh --bootstrap-server kafka:9092 --create "
                "--if-not-exists --topic loan_applications_submitted --partitions 3 "
                "--replication-factor 1"
            ],
        ),
    ),
]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.id for m in MUTATIONS])
def test_a_mismatch_is_reported(tmp_path: Path, mutation: Mutation) -> None:
    compose = copy.deepcopy(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")))
    if mutation.compose is not None:
        mutation.compose(compose)
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    if mutation.dockerfile is not None:
        old, new = mutation.dockerfile
        assert old in dockerfile, f"the mutation no longer applies: {old!r} not in the Dockerfile"
        dockerfile = dockerfile.replace(old, new)
    dockerignore = DOCKERIGNORE.read_text(encoding="utf-8") + (mutation.dockerignore_extra or "")
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(compose), encoding="utf-8")
    (tmp_path / "Dockerfile").write_text(dockerfile, encoding="utf-8")
    (tmp_path / ".dockerignore").write_text(dockerignore, encoding="utf-8")

    problems = all_problems(
        load_files(
            tmp_path / "docker-compose.yml", tmp_path / "Dockerfile", tmp_path / ".dockerignore"
        )
    )

    assert any(mutation.expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("DATABASE_URL", "postgresql://prequal@postgres:5432/prequal", "DATABASE_URL"),
        ("LOG_FORMAT", "text", "LOG_FORMAT"),
        ("DECISION_OPS_PORT", "eighty", "DECISION_OPS_PORT"),
    ],
)
def test_an_invalid_compose_value_is_reported(
    files: DeploymentFiles, monkeypatch: pytest.MonkeyPatch, key: str, value: str, expected: str
) -> None:
    compose = copy.deepcopy(files.compose)
    _service(compose, "decision-service")["environment"][key] = value
    mutated = DeploymentFiles(compose, files.compose_dir, files.dockerfile, files.dockerignore)

    problems = settings_value_problems(mutated, "decision-service", monkeypatch)

    assert any(problem.startswith(f"decision-service: {expected}:") for problem in problems), (
        problems
    )
