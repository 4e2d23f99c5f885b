"""`prequal-dlq`: list, show and replay what is in the dead-letter topic."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys

import click
from aiokafka.errors import KafkaError

from prequal_shared.config import CommonSettings, load_settings
from prequal_shared.dlq import (
    DLQ_READ_TIMEOUT_S,
    REPLAY_GROUP,
    DeadLetter,
    read_dead_letters,
    replay,
)
from prequal_shared.domain import redact_pans


def _settings() -> CommonSettings:
    return load_settings(CommonSettings)


def _letters(settings: CommonSettings, *, after_group: str | None = None) -> list[DeadLetter]:
    try:
        return asyncio.run(read_dead_letters(settings, after_group=after_group))
    except TimeoutError as exc:
        raise click.ClickException(
            f"could not read {settings.topic_dlq} from Kafka at "
            f"{settings.kafka_bootstrap_servers} in full within {DLQ_READ_TIMEOUT_S:g} s"
        ) from exc
    except KafkaError as exc:
        raise click.ClickException(
            f"could not read {settings.topic_dlq} from Kafka at "
            f"{settings.kafka_bootstrap_servers}: {exc!r}"
        ) from exc


def _find(letters: list[DeadLetter], ids: tuple[str, ...]) -> list[DeadLetter]:
    by_id = {letter.id: letter for letter in letters}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise click.ClickException(f"not in the DLQ: {', '.join(missing)} (see `prequal-dlq list`)")
    return [by_id[i] for i in ids]


def _text(raw: bytes | None, *, unmasked: bool) -> str:
    if raw is None:
        return "(null)"
    text = raw.decode(errors="replace")
    with contextlib.suppress(ValueError):
        text = json.dumps(json.loads(text), indent=2)
    return text if unmasked else redact_pans(text)


@click.group(help="Inspect and replay the dead-letter topic (settings from the environment).")
def main() -> None:
    pass


@main.command("list", help="What is in the DLQ, why, and since when.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(as_json: bool) -> None:
    letters = _letters(_settings())
    if as_json:
        for letter in letters:
            click.echo(
                json.dumps(
                    {
                        "id": letter.id,
                        "failed_at": letter.failed_at.isoformat(),
                        "source": letter.source,
                        "consumer": letter.consumer,
                        "error_type": letter.error_type,
                        "error": letter.error,
                        "key": (letter.key or b"").decode(errors="replace"),
                    }
                )
            )
        return
    if not letters:
        click.echo("the DLQ is empty")
        return
    click.echo(f"{'ID':<10} {'FAILED AT (UTC)':<20} {'SOURCE':<36} {'ERROR':<26} DETAIL")
    for letter in letters:
        click.echo(
            f"{letter.id:<10} {letter.failed_at:%Y-%m-%d %H:%M:%S} {letter.source:<36.36} "
            f"{letter.error_type:<26.26} {letter.error[:80]}"
        )
    click.echo(f"{len(letters)} message(s)")


@main.command(help="One message: headers, error and payload (PANs masked unless --unmasked).")
@click.argument("message_id")
@click.option("--unmasked", is_flag=True, help="Show PANs in full.")
def show(message_id: str, unmasked: bool) -> None:
    [letter] = _find(_letters(_settings()), (message_id,))
    click.echo(f"id:         {letter.id}")
    click.echo(f"failed at:  {letter.failed_at.isoformat()}")
    click.echo(f"source:     {letter.source}")
    click.echo(f"consumer:   {letter.consumer}")
    click.echo(f"error:      {letter.error_type}: {letter.error}")
    click.echo(f"key:        {_text(letter.key, unmasked=True)}")
    for name, value in letter.original_headers():
        shown = "(null)" if value is None else value.decode(errors="replace")
        click.echo(f"header:     {name}={shown}")
    click.echo("payload:")
    click.echo(_text(letter.value, unmasked=unmasked))


@main.command("replay", help="Send messages back to their source topic (IDs, or --all).")
@click.argument("message_ids", nargs=-1)
@click.option(
    "--all",
    "replay_all",
    is_flag=True,
    help=f"Every message no earlier --all replayed (consumer group {REPLAY_GROUP}).",
)
def replay_(message_ids: tuple[str, ...], replay_all: bool) -> None:
    if bool(message_ids) == replay_all:
        raise click.UsageError("give message IDs or --all (not both)")
    settings = _settings()
    if replay_all:
        letters = _letters(settings, after_group=REPLAY_GROUP)
        chosen = sorted(letters, key=lambda letter: (letter.partition, letter.offset))
    else:
        chosen = _find(_letters(settings), message_ids)

    def replayed(letter: DeadLetter) -> None:
        click.echo(f"replayed {letter.id} -> {letter.source_topic}")

    try:
        done = asyncio.run(
            replay(
                settings,
                chosen,
                done_in_group=REPLAY_GROUP if replay_all else None,
                on_replayed=replayed,
            )
        )
    except Exception as exc:
        raise click.ClickException(
            f"replay stopped: {exc!r}; the messages listed above were replayed"
            + (", and the next --all starts after them" if replay_all else "")
        ) from exc
    for letter in chosen:
        if letter not in done:
            click.echo(f"not replayed {letter.id}: nothing to send back", err=True)
    click.echo(f"{len(done)} message(s) replayed", file=sys.stderr)


if __name__ == "__main__":
    main()
