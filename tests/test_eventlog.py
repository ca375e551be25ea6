"""The local event log: atomic batches under a concurrent reader, writer restarts, groups."""

import threading

import orjson
import pytest

from mercury.eventlog.base import EventLogError
from mercury.eventlog.file_log import FileEventConsumer, FileEventProducer, FileEventReader


def test_a_concurrent_reader_never_sees_a_partial_batch(tmp_path):
    """Every batch is 1,000 lines of one marker; a reader polling all the while must only ever
    see whole files of exactly that size, each line parseable."""
    batches, size = 60, 1_000
    stop = threading.Event()
    problems: list[str] = []
    files_seen: set[str] = set()

    def read_continuously():
        reader = FileEventReader(tmp_path)
        while not stop.is_set():
            for path in reader.files("s"):
                lines = path.read_bytes().split(b"\n")
                if lines[-1] != b"" or len(lines) - 1 != size:
                    problems.append(f"{path.name}: {len(lines) - 1} lines")
                    continue
                markers = {orjson.loads(line)["batch"] for line in lines[:-1]}
                if len(markers) != 1:
                    problems.append(f"{path.name}: mixed batches {markers}")
                files_seen.add(path.name)

    reader = threading.Thread(target=read_continuously)
    reader.start()
    producer = FileEventProducer(tmp_path, "w1", batch_size=size, fsync=False)
    padding = "x" * 200  # big enough lines that a write takes several syscalls
    for batch in range(batches):
        for i in range(size):
            producer.send("s", orjson.dumps({"batch": batch, "i": i, "pad": padding}))
    producer.flush()
    stop.set()
    reader.join()
    assert problems == []
    assert FileEventReader(tmp_path).count("s") == batches * size
    assert len(files_seen) > 1  # the reader really overlapped the writer


def test_positions_point_at_the_line_written(tmp_path):
    producer = FileEventProducer(tmp_path, "w1", batch_size=3)
    positions = [producer.send("s", orjson.dumps({"n": n})) for n in range(7)]
    producer.flush()
    by_position = {m.position: orjson.loads(m.value)["n"]
                   for m in FileEventReader(tmp_path).read("s")}
    assert [by_position[p] for p in positions] == list(range(7))
    assert positions[3] == "s/part-w1-00000002.jsonl:1"


def test_a_restarted_writer_continues_its_sequence_and_never_overwrites(tmp_path):
    with FileEventProducer(tmp_path, "w1") as first:
        first.send("s", b'{"n": 1}')
    with FileEventProducer(tmp_path, "w1") as second:
        second.send("s", b'{"n": 2}')
    names = [p.name for p in FileEventReader(tmp_path).files("s")]
    assert names == ["part-w1-00000001.jsonl", "part-w1-00000002.jsonl"]


def test_hidden_in_progress_files_are_not_read(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / ".part-w1-00000001.jsonl.inprogress").write_bytes(b'{"half":')
    assert list(FileEventReader(tmp_path).read("s")) == []


def test_payloads_with_newlines_are_refused(tmp_path):
    with pytest.raises(EventLogError, match="newline"):
        FileEventProducer(tmp_path).send("s", b'{"a":\n1}')


def test_consumer_group_resumes_after_its_last_commit(tmp_path):
    with FileEventProducer(tmp_path, "w1", batch_size=4) as producer:
        for n in range(10):
            producer.send("s", orjson.dumps({"n": n}))
    first = FileEventConsumer(tmp_path, "g", ["s"])
    got = [orjson.loads(m.value)["n"] for m in first.poll(max_messages=6)]
    first.commit()
    uncommitted = first.poll(max_messages=2)  # read but not committed: must come again
    assert [orjson.loads(m.value)["n"] for m in uncommitted] == [6, 7]
    second = FileEventConsumer(tmp_path, "g", ["s"])
    rest = [orjson.loads(m.value)["n"] for m in second.poll(max_messages=100)]
    assert got == [0, 1, 2, 3, 4, 5] and rest == [6, 7, 8, 9]
    other_group = FileEventConsumer(tmp_path, "other", ["s"])
    assert len(other_group.poll(max_messages=100)) == 10
