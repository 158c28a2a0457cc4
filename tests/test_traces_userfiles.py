"""User trace files: accepted formats, and one-line errors naming the file and the problem."""
import json

import pytest

from traces.errors import TraceError
from traces.registry import load_trace


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# ---------------------------------------------------------------- accepted formats
def test_csv_timestamps_with_header(tmp_path):
    t = load_trace(write(tmp_path, "a.csv", "timestamp_s,size\n0.5,1\n1.25,2\n3.0,3\n"))
    assert t.arrivals_s.tolist() == [0.5, 1.25, 3.0] and t.duration_s == 4.0
    assert t.name == "a.csv"


def test_csv_timestamps_no_header_first_column(tmp_path):
    t = load_trace(write(tmp_path, "a.csv", "0.5,9\n1.0,9\n"))
    assert t.arrivals_s.tolist() == [0.5, 1.0]


def test_csv_single_named_column(tmp_path):
    t = load_trace(write(tmp_path, "a.csv", "time\n0\n2\n"))
    assert t.arrivals_s.tolist() == [0.0, 2.0]


def test_csv_counts_with_bin(tmp_path):
    t = load_trace(write(tmp_path, "c.csv", "count,bin_s\n3,10\n0,10\n5,10\n"))
    assert t.bin_s == 10 and t.counts.tolist() == [3, 0, 5] and t.duration_s == 30
    assert not t.counts_are_rates


def test_txt_counts(tmp_path):
    t = load_trace(write(tmp_path, "w.txt", "1 2 3\n4\n"))
    assert t.bin_s == 1 and t.counts.tolist() == [1, 2, 3, 4]


def test_json_and_jsonl(tmp_path):
    assert load_trace(write(tmp_path, "a.json", "[0, 1.5, 2]")).arrivals_s.size == 3
    t = load_trace(write(tmp_path, "b.json", json.dumps({"counts": [1, 2], "bin_s": 60})))
    assert t.bin_s == 60 and t.duration_s == 120
    t = load_trace(write(tmp_path, "c.jsonl", '{"timestamp_s": 0.1}\n{"timestamp_s": 0.2}\n0.3\n'))
    assert t.arrivals_s.tolist() == [0.1, 0.2, 0.3]


def test_unix_timestamps_rebased(tmp_path):
    t = load_trace(write(tmp_path, "u.csv", "timestamp_s\n1700000000.0\n1700000001.5\n"))
    assert t.arrivals_s.tolist() == [0.0, 1.5] and t.start.startswith("2023-11-14T22:13:20")


# ---------------------------------------------------------------- bad input
BAD = [
    ("empty.csv", "", "empty"),
    ("blank.txt", "\n  \n", "empty"),
    ("hdr.csv", "timestamp_s\n", "no data rows"),
    ("nonnum.csv", "timestamp_s\n0.1\nabc\n", "non-numeric timestamp 'abc' at line 3"),
    ("nan.csv", "timestamp_s\n0.1\nnan\n", "NaN or missing timestamp at line 3"),
    ("missingcell.csv", "timestamp_s,x\n0.1,1\n,2\n", "NaN or missing timestamp at line 3"),
    ("neg.csv", "timestamp_s\n0.1\n-2\n", "negative timestamp -2 at line 3"),
    ("unsorted.csv", "0\n5\n3\n", "timestamps not sorted"),
    ("cols.csv", "time,latency\n0,1\n", "wrong columns: expected a column named timestamp_s or count"),
    ("ragged.csv", "timestamp_s,x\n0,1\n1\n", "wrong number of columns at line 3"),
    ("negcount.txt", "1 2\n-3\n", "negative count -3 at line 2"),
    ("nancount.txt", "1 nan 2\n", "NaN or missing count at line 1"),
    ("frac.txt", "1 2.5\n", "non-integer count"),
    ("zeros.txt", "0 0 0\n", "all counts are zero"),
    ("words.txt", "1\nhello\n", "non-numeric count 'hello' at line 2"),
    ("bad.json", "{not json", "invalid JSON"),
    ("keys.json", '{"foo": [1]}', "wrong keys"),
    ("nulls.json", "[0, null]", "NaN or missing timestamp at entry 2"),
    ("strs.json", '[0, "x"]', "non-numeric timestamp"),
    ("neg.jsonl", "0\n-1\n", "negative timestamp at line 2"),
    ("key.jsonl", '{"t": 1}\n', "missing key timestamp_s"),
    ("unsorted.jsonl", "2\n1\n", "not sorted"),
    ("trace.xlsx", "x", "unsupported file type"),
]


@pytest.mark.parametrize("fname, text, problem", BAD, ids=[b[0] for b in BAD])
def test_bad_input_one_line_error(tmp_path, fname, text, problem):
    path = write(tmp_path, fname, text)
    with pytest.raises(TraceError) as e:
        load_trace(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: "), msg
    assert problem in msg, msg
    assert "\n" not in msg


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.csv")
    with pytest.raises(TraceError, match=r"nope\.csv: file not found$"):
        load_trace(path)


def test_unknown_name_lists_known():
    with pytest.raises(TraceError) as e:
        load_trace("twiter")
    msg = str(e.value)
    assert msg.startswith("twiter: unknown trace name") and "twitter" in msg and "synthetic:mmpp" in msg
    assert "\n" not in msg


def test_trace_error_is_value_error():
    assert issubclass(TraceError, ValueError)
    assert str(TraceError("f.csv", "line one\nline two")) == "f.csv: line one line two"


def test_csv_with_bom_and_crlf(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes("\ufefftimestamp_s,x\r\n0.5,1\r\n1.5,2\r\n".encode("utf-8"))
    assert load_trace(str(p)).arrivals_s.tolist() == [0.5, 1.5]
