"""The dead-letter topic ``<topic>.dlq``, read as a queue of one consumer group.

A Kafka log cannot delete a record. What "the DLQ holds" is therefore defined by a
reader group of its own, ``<group>.dlq``: the letters of this transport's group from
that group's committed offset to the end of each partition, minus those removed.

- ``list`` / ``show`` read from the committed offsets to the current end, with
  ``assign()`` (no group join, no rebalance), and commit nothing.
- ``purge`` removes letters: the reader group's commit moves past every leading
  letter that is removed (or belongs to another group); a removed letter behind
  one that stays is remembered in the commit's metadata (Kafka keeps up to 4 KB of
  text per committed offset, ``offset.metadata.max.bytes``) until the commit
  passes it. The records stay in the topic until its retention drops them.
- ``redrive`` copies each letter first, waits for Kafka to confirm the copy, then
  removes it as ``purge`` does. The copy goes to this group's shortest retry topic,
  due at once, so only this group runs it again (other groups of the topic never
  gave up on it). It is a fresh message (attempt 1) with a new id.

Letters record the group that gave up on them (``taskorbit-dlq-group``): several
groups share one DLQ topic, and each sees only its own letters here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, TopicPartition

from taskorbit.dlq import ALL, DeadLetter, Letters, Selection, take
from taskorbit.errors import ConfigurationError
from taskorbit.message import Message
from taskorbit.transports.kafka.errors import translate
from taskorbit.transports.kafka.transport import KafkaTransport
from taskorbit.transports.kafka.wire import (
    DLQ_GROUP_ATTR,
    RETRY_DUE_ATTR,
    RETRY_REASON_ATTR,
    SOURCE_OFFSET_ATTR,
    SOURCE_PARTITION_ATTR,
    SOURCE_TOPIC_ATTR,
    encode_headers,
    key_of,
    message_id,
    ordering_key_of,
    read_headers,
)

_TIMEOUT_S = 10.0
#: Kafka's default offset.metadata.max.bytes; the removed set must fit in it.
MAX_METADATA = 4000
_NOT_COPIED = (SOURCE_TOPIC_ATTR, SOURCE_PARTITION_ATTR, SOURCE_OFFSET_ATTR, DLQ_GROUP_ATTR)


@dataclass
class _Partition:
    number: int
    start: int  # the reader group's committed offset (or the log's start)
    removed: set[int]
    offsets: list[int] = field(default_factory=list)  # every record read, in order
    passable: set[int] = field(default_factory=set)  # records of other groups


class KafkaDeadLetterQueue:
    def __init__(self, transport: KafkaTransport) -> None:
        self.transport = transport
        self.topic = transport.dlq_topic
        self.reader_group = f"{transport.group}.dlq"

    # -- reading -----------------------------------------------------------------------

    def _read(self) -> tuple[Consumer, dict[int, _Partition], list[tuple[int, int, DeadLetter]]]:
        consumer = Consumer(
            {
                "bootstrap.servers": self.transport.bootstrap_servers,
                "group.id": self.reader_group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            return (consumer, *self._read_with(consumer))
        except BaseException:
            consumer.close()
            raise

    def _read_with(
        self, consumer: Consumer
    ) -> tuple[dict[int, _Partition], list[tuple[int, int, DeadLetter]]]:
        try:
            found = consumer.list_topics(topic=self.topic, timeout=_TIMEOUT_S).topics.get(
                self.topic
            )
            if found is None or found.error is not None:
                return {}, []
            tps = [TopicPartition(self.topic, p) for p in sorted(found.partitions)]
            committed = consumer.committed(tps, timeout=_TIMEOUT_S)
            parts: dict[int, _Partition] = {}
            ends: dict[int, int] = {}
            for tp in committed:
                low, high = consumer.get_watermark_offsets(tp, timeout=_TIMEOUT_S)
                start = max(tp.offset, low) if tp.offset >= 0 else low
                parts[tp.partition] = _Partition(tp.partition, start, _decode(tp.metadata))
                if start < high:
                    ends[tp.partition] = high
            letters = self._consume(consumer, parts, ends)
        except KafkaException as error:
            raise translate(error, f"reading {self.topic}") from error
        return parts, letters

    def _consume(
        self, consumer: Consumer, parts: dict[int, _Partition], ends: dict[int, int]
    ) -> list[tuple[int, int, DeadLetter]]:
        if not ends:
            return []
        consumer.assign([TopicPartition(self.topic, p, parts[p].start) for p in ends])
        letters: list[tuple[int, int, DeadLetter]] = []
        deadline = time.monotonic() + 60.0
        left = dict(ends)
        while left and time.monotonic() < deadline:
            for record in consumer.consume(500, 1.0):
                if record.error() is not None:
                    continue
                p, offset = record.partition(), record.offset()
                assert p is not None and offset is not None  # set on every fetched record
                part = parts[p]
                part.offsets.append(offset)
                if offset + 1 >= left.get(p, 0):
                    left.pop(p, None)
                letter = self._letter(record)
                if letter is None:
                    part.passable.add(offset)
                elif offset not in part.removed:
                    letters.append((p, offset, letter))
        letters.sort(key=lambda x: (x[2].time or 0.0, x[0], x[1]))  # oldest first
        return letters

    def _letter(self, record: object) -> DeadLetter | None:
        """The record as a dead letter, or None when it is another group's."""
        value = record.value()  # type: ignore[attr-defined]
        envelope = read_headers(record.headers(), value is not None)  # type: ignore[attr-defined]
        group = envelope.attributes.get(DLQ_GROUP_ATTR)
        if group is not None and group != self.transport.group:
            return None
        p, offset = record.partition(), record.offset()  # type: ignore[attr-defined]
        message = Message(
            topic=envelope.topic or self.transport.topic,
            body=value or b"",
            attributes=envelope.attributes,
            id=message_id(self.topic, p, offset, envelope.attributes),
            receipt=f"{self.topic}:{p}:{offset}",
            ordering_key=ordering_key_of(record.key()),  # type: ignore[attr-defined]
        )
        return DeadLetter.of(message)

    # -- the queue -----------------------------------------------------------------------

    def list(self, limit: int = 100, selection: Selection | None = None) -> Letters:
        return self._sweep(selection or ALL, limit, None)

    def show(self, message_id: str) -> DeadLetter | None:
        consumer, _, letters = self._read()
        consumer.close()
        for _, _, letter in letters:
            if message_id in (letter.id, letter.message.receipt):
                return letter
        return None

    def purge(
        self, selection: Selection, *, limit: int | None = None, dry_run: bool = False
    ) -> Letters:
        return self._sweep(selection, limit, None if dry_run else (lambda chosen: chosen))

    def redrive(
        self, selection: Selection, *, limit: int | None = None, dry_run: bool = False
    ) -> Letters:
        return self._sweep(selection, limit, None if dry_run else self._copy)

    def _sweep(
        self,
        selection: Selection,
        limit: int | None,
        act: Callable[[Letters], Letters] | None,
    ) -> Letters:
        consumer, parts, letters = self._read()
        try:
            chosen = take((x for _, _, x in letters), selection, limit)
            if act is None or not chosen:
                return chosen
            picked = {id(x) for x in chosen}
            done = act(chosen)  # a redrive copies first; a failure removes nothing
            for p, offset, letter in letters:
                if id(letter) in picked:
                    parts[p].removed.add(offset)
            self._commit(
                consumer, [parts[p] for p in {p for p, _, x in letters if id(x) in picked}]
            )
            return done
        finally:
            consumer.close()

    def _copy(self, letters: Letters) -> Letters:
        transport = self.transport
        topic = transport.retry_topics[0]
        now = repr(time.time())
        records = []
        for letter in letters:
            copy = letter.redriven()
            for name in _NOT_COPIED:
                copy.attributes.pop(name, None)
            extra = {RETRY_DUE_ATTR: now, RETRY_REASON_ATTR: "redrive"}
            records.append(
                (topic, key_of(copy.ordering_key), copy.body, encode_headers(copy, extra=extra))
            )
        where = transport._producer_().send(records, "redrive")
        return [
            letter.redriven_to(f"{topic}:{p}:{o}")
            for letter, (p, o) in zip(letters, where, strict=True)
        ]

    def _commit(self, consumer: Consumer, parts: Sequence[_Partition]) -> None:
        offsets = []
        for part in parts:
            position = part.start
            for offset in sorted(part.offsets):
                if offset < position:
                    continue
                if offset != position or not (offset in part.removed or offset in part.passable):
                    break
                position = offset + 1
            removed = {o for o in part.removed if o >= position}
            metadata = _encode(removed)
            if len(metadata) > MAX_METADATA:
                raise ConfigurationError(
                    f"too many scattered removals in {self.topic}[{part.number}] to remember "
                    f"({len(removed)}); purge the oldest letters first (e.g. --all)"
                )
            offsets.append(TopicPartition(self.topic, part.number, position, metadata=metadata))
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as error:
            raise translate(error, f"committing {self.reader_group}") from error


def _encode(offsets: set[int]) -> str:
    """``3-5,9``: sorted offsets as ranges."""
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in _ranges(sorted(offsets)))


def _ranges(offsets: list[int]) -> Iterator[tuple[int, int]]:
    start = previous = None
    for offset in offsets:
        if start is None:
            start = previous = offset
        elif offset == previous + 1:  # type: ignore[operator]
            previous = offset
        else:
            yield start, previous  # type: ignore[misc]
            start = previous = offset
    if start is not None:
        yield start, previous  # type: ignore[misc]


def _decode(metadata: str | None) -> set[int]:
    found: set[int] = set()
    for part in (metadata or "").split(","):
        low, _, high = part.partition("-")
        try:
            found.update(range(int(low), int(high or low) + 1))
        except ValueError:
            continue
    return found


def dead_letter_queue(transport: KafkaTransport) -> KafkaDeadLetterQueue:
    """The dead-letter queue of ``transport`` (what ``taskorbit dlq`` uses)."""
    return KafkaDeadLetterQueue(transport)
