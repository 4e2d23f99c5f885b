"""A single-node KRaft Apache Kafka broker assembled from Maven Central jars, run with Java 17."""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from prequal_devstack.config import (
    DEPENDENCY_PLUGIN,
    KAFKA_VERSION,
    SCALA_VERSION,
    SLF4J_RELOAD4J_VERSION,
    TOPICS,
    StackConfig,
)
from prequal_devstack.errors import StackError
from prequal_devstack.procs import kill, port_open, read_pid, spawn, tail, terminate, wait_until

POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.prequal</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId>
      <version>{SLF4J_RELOAD4J_VERSION}</version></dependency>
  </dependencies>
</project>
"""

LOG4J = """log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.controller=WARN
log4j.logger.kafka.log.LogCleaner=WARN
"""


def java_major() -> int:
    java = shutil.which("java")
    if java is None:
        raise StackError("Java 17+ not found: install openjdk-17-jre-headless")
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if not match:
        raise StackError(f"cannot tell the Java version from: {result.stderr.strip()}")
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    if major < 17:
        raise StackError(
            f"Java 17+ not found (found Java {major}): install openjdk-17-jre-headless"
        )
    return major


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64, as `kafka-storage random-uuid`
    makes them. Like Kafka, never one starting with "-": the storage tool would read it as an
    option (`--cluster-id: expected one argument`), one format in 64 (it failed a CI run)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class Kafka:
    name = "kafka"

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.home = config.state / "kafka"
        self.data = self.home / "data"
        self.pid_file = self.home / "kafka.pid"
        self.log_file = config.state / "logs" / "kafka.log"
        self.lib = config.cache / f"kafka-{SCALA_VERSION}-{KAFKA_VERSION}" / "lib"

    @property
    def port(self) -> int:
        return self.config.kafka_port

    def pid(self) -> int | None:
        return read_pid(self.pid_file)

    def ensure_jars(self) -> Path:
        """Fetch the broker's jars from Maven Central once; later runs reuse the cache."""
        marker = self.lib / ".complete"
        if marker.exists():
            return self.lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError(
                "Maven not found, and it is needed once to fetch the Kafka jars: "
                "install it with `apt-get install -y maven`"
            )
        print(
            f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central (once)...", flush=True
        )
        started = time.monotonic()
        self.lib.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as workdir:
            (Path(workdir) / "pom.xml").write_text(POM)
            result = subprocess.run(
                [
                    mvn,
                    "-B",
                    "-q",
                    f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={self.lib}",
                ],
                cwd=workdir,
                capture_output=True,
                text=True,
                check=False,
            )
        if result.returncode != 0:
            raise StackError(
                f"fetching the Kafka jars failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        marker.write_text(KAFKA_VERSION)
        print(
            f"  {len(list(self.lib.glob('*.jar')))} jars in {time.monotonic() - started:.1f}s",
            flush=True,
        )
        return self.lib

    def _java(self, main: str, *args: str, heap: str = "-Xmx128m") -> list[str]:
        return [
            "java",
            heap,
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}",
            "-cp",
            f"{self.lib}/*",
            main,
            *args,
        ]

    def _configure(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "log4j.properties").write_text(LOG4J)
        props = self.home / "server.properties"
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.config.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.config.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={self.data}",
                    f"num.partitions={self.config.partitions}",
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "log.cleaner.dedupe.buffer.size=4194304",
                    "num.network.threads=2",
                    "num.io.threads=4",
                    "log.retention.hours=168",
                    "",
                ]
            )
        )
        if not (self.data / "meta.properties").exists():
            cluster_id = new_cluster_id()
            result = subprocess.run(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(props),
                    "--ignore-formatted",
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise StackError(
                    f"formatting Kafka's storage failed:\n{result.stdout}{result.stderr}"
                )
        return props

    def start(self) -> None:
        if self.pid():
            return
        for port in (self.port, self.config.controller_port):
            if port_open(port):
                raise StackError(
                    f"port {port} is taken by another program, so the stack's Kafka cannot start: "
                    "stop it or set DEVSTACK_KAFKA_PORT / DEVSTACK_KAFKA_CONTROLLER_PORT"
                )
        java_major()
        self.ensure_jars()
        props = self._configure()
        spawn(
            [
                "java",
                "-Xms256m",
                "-Xmx512m",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
                f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}",
                f"-Dkafka.logs.dir={self.home / 'logs'}",
                "-cp",
                f"{self.lib}/*",
                "kafka.Kafka",
                str(props),
            ],
            log_file=self.log_file,
            pid_file=self.pid_file,
        )

    def wait_ready(self, bootstrap: str, *, timeout_s: float = 90, own: bool = True) -> None:
        """Poll with a real client (a metadata request) until the broker answers. `own`:
        the broker is the one this stack started, whose exit ends the wait."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if own and self.pid_file.exists() and self.pid() is None:
                raise StackError(f"Kafka exited during start-up:\n{tail(self.log_file, 30)}")
            if asyncio.run(kafka_answers(bootstrap)):
                return
            time.sleep(0.3)
        raise StackError(
            f"Kafka did not answer within {timeout_s:.0f}s:\n{tail(self.log_file, 30)}"
        )

    def stop(self) -> None:
        pid = self.pid()
        if pid:
            terminate(pid, grace_s=30)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        pid = self.pid()
        if pid:
            kill(pid)
        self.pid_file.unlink(missing_ok=True)
        wait_until(lambda: not port_open(self.port), timeout_s=10)


async def kafka_answers(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.list_topics()
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()
    return True


async def ensure_topics(
    bootstrap: str, *, partitions: int, topics: tuple[str, ...] = TOPICS, keep_forever: str = ""
) -> list[str]:
    """Create the topics that are missing; returns the ones created. `keep_forever` (the
    DLQ) never expires its messages: they wait there until they are replayed."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [topic for topic in topics if topic not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        name=topic,
                        num_partitions=partitions,
                        replication_factor=1,
                        topic_configs={"retention.ms": "-1"} if topic == keep_forever else {},
                    )
                    for topic in missing
                ]
            )
            # The broker answers per topic instead of failing the request; 36 = it exists
            # already (another `up` created it meanwhile).
            refused = [
                f"{error[0]}: {errors.for_code(error[1]).__name__}"
                + (f" ({error[2]})" if len(error) > 2 and error[2] else "")
                for error in response.topic_errors
                if error[1] not in (0, errors.TopicAlreadyExistsError.errno)
            ]
            if refused:
                raise StackError("Kafka did not create the topics: " + "; ".join(refused))
        return missing
    finally:
        await admin.close()
