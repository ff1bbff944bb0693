"""The container log: one JSON object per piece of a read, joined into lines for `logs`, into reads for `attach`."""
import json

from labcore.runtime import jsonfile


def write_and_read(tmp_path, *writes):
    path = tmp_path / "container.log"
    with jsonfile.Writer(path) as log:
        for stream, data in writes:
            log.write(stream, data)
    with open(path, "rb") as file:
        return list(jsonfile.read_entries(file)), path


def test_lines_are_whole_across_reads_and_reads_stay_whole_for_attach(tmp_path):
    entries, path = write_and_read(tmp_path, (1, b"hel"), (1, b"lo\nwor"), (2, b"err\n"), (1, b"ld\n"),
                                   (1, b"no newline"))
    assert [(e.stream, e.data) for e in jsonfile.lines(entries)] == \
        [(1, b"hello\n"), (2, b"err\n"), (1, b"world\n"), (1, b"no newline")]
    assert [(e.stream, e.data) for e in jsonfile.reads(entries)] == \
        [(1, b"hel"), (1, b"lo\nwor"), (2, b"err\n"), (1, b"ld\n"), (1, b"no newline")]
    first = json.loads(path.read_text().splitlines()[0])
    assert first["log"] == "hel" and first["stream"] == "stdout" and first["partial"] is True
    assert first["time"].endswith("Z") and len(first["time"].split(".")[1]) == 10      # nanoseconds, UTC


def test_a_line_still_being_written_waits_for_its_rest_when_following(tmp_path):
    entries, _ = write_and_read(tmp_path, (1, b"one\ntw"))
    pending = {}
    assert [e.data for e in jsonfile.lines(entries, final=False, pending=pending)] == [b"one\n"]
    assert [e.data for e in jsonfile.lines([], pending=pending)] == [b"tw"]


def test_bytes_that_are_not_utf8_come_back_exactly(tmp_path):
    entries, _ = write_and_read(tmp_path, (1, b"\xff\xfe\x00ok\n"))
    assert entries[0].data == b"\xff\xfe\x00ok\n"


def test_tail_since_and_until_choose_lines(tmp_path):
    entries = [jsonfile.Entry(1, f"{n}\n".encode(), n * 10**9) for n in range(1, 6)]
    assert [e.data for e in jsonfile.select(entries, tail=2)] == [b"4\n", b"5\n"]
    assert jsonfile.select(entries, tail=0) == []
    assert [e.data for e in jsonfile.select(entries, since=2, until=4)] == [b"3\n", b"4\n"]
    assert jsonfile.nanoseconds(jsonfile.timestamp(1_700_000_000_123_456_789)) == 1_700_000_000_123_456_789


def test_a_half_written_entry_is_left_for_the_next_read(tmp_path):
    path = tmp_path / "container.log"
    path.write_bytes(b'{"log": "a\\n", "stream": "stdout", "time": "2024-01-01T00:00:00.000000000Z"}\n{"log": "b')
    with open(path, "rb") as file:
        assert [e.data for e in jsonfile.read_entries(file)] == [b"a\n"]
        assert file.read() == b'{"log": "b'
