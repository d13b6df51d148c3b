"""CSV uploads: the header checked first, the rows parsed by pyarrow.csv.

- **The header** is read alone (Python's csv module on the first record, decoding as it
  goes): its names stripped, refused when empty, over ``max_columns``
  (``OPTBENCH_MAX_UPLOAD_COLUMNS``) or repeated (counted once each, with a Counter), all
  before a single row is parsed. A 1,000,000-column header is refused in about 0.3 s.
- **The rows** are parsed by pyarrow.csv (C++, block by block of the input, not Python
  objects per cell): features as float32 columns, the label as text; quoted values
  may hold commas and newlines, empty lines are skipped, a UTF-8 byte-order mark is ignored.
  Features are parsed as float32 (the table is no larger than what is stored); each
  column is checked finite (a value beyond float32's range parsed as infinite) and copied
  into one N x D array; labels stay in Arrow until they are known to be numbers or encoded text.
- **Errors name the line**: when pyarrow refuses the file, a second, streaming pass with
  Python's csv module finds the first bad line (a wrong number of fields, a value that is not
  a number, text that is not UTF-8) and says what to change; only errors take that pass.

Unlike Python's ``float``, pyarrow takes no ``1_000`` and no ``0x10``; a line of spaces is a
row of one field (a wrong number of fields), not a blank line.
"""

from __future__ import annotations

import _csv
import codecs
import contextlib
import csv
import io
import re
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from services.errors import InvalidSpec
from services.upload_formats import (
    FINITE_MESSAGE,
    MAX_CLASSES,
    Describe,
    TextLabels,
    Upload,
    listing,
    out_of_range,
)

MAX_LABEL_CHARS = 1000  # of a text label (a class name)
# pyarrow parses the text in blocks of this size (a row may not be longer), on one thread:
# measured on 2 cores, threads held twice the memory (a block per thread in flight, 32 MB
# beside the table for a 28 MB CSV, against 16 MB) and were slower (1.3 s against 0.7 s).
BLOCK_BYTES = 1 << 20
# What pyarrow parses as a float64 (approximately: the second pass uses it to find the line).
_NUMBER = re.compile(
    r"\s*[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf(inity)?|nan)\s*", re.I
)


def _records(upload: Upload) -> _csv.Reader:
    """The CSV's records from the start, decoded as they are read (no copy of the text)."""
    text = io.TextIOWrapper(upload.reader(), encoding="utf-8-sig", newline="")
    return csv.reader(text)


def _not_utf8(upload: Upload) -> InvalidSpec | None:
    """The error for the first byte that is not UTF-8, or None: read and decoded 1 MiB at a
    time and thrown away (no copy of the whole text)."""
    position, line, pending = 0, 1, b""
    with upload.reader() as fp:
        while True:
            chunk = fp.read(1 << 20)
            data, final = pending + chunk, not chunk
            try:
                _, consumed = codecs.utf_8_decode(data, "strict", final)
            except UnicodeDecodeError as error:
                at = position + error.start
                line += data.count(b"\n", 0, error.start)
                return InvalidSpec(
                    f"file: a CSV must be UTF-8 text; byte {at} (line {line}) is not "
                    "(save it as UTF-8)"
                )
            line += data.count(b"\n", 0, consumed)
            position += consumed
            pending = data[consumed:]  # (a character cut at the chunk's end: at most 3 bytes)
            if final:
                return None


def csv_header(content: Upload | bytes, max_columns: int) -> list[str]:
    """The header's names, stripped; a 422 for none, too many or repeated ones."""
    content = Upload.of(content)
    try:
        row = next(_records(content), [])
    except UnicodeDecodeError:
        raise _not_utf8(content) or InvalidSpec("file: a CSV must be UTF-8 text") from None
    except csv.Error as error:
        raise InvalidSpec(f"file: the CSV's header row cannot be parsed: {error}") from None
    header = [cell.strip() for cell in row]
    if not header:
        raise InvalidSpec("file: the CSV is empty; it needs a header row and rows of data")
    if len(header) > max_columns:
        raise InvalidSpec(
            f"file: the CSV has {len(header)} columns; at most {max_columns} are accepted "
            "(OPTBENCH_MAX_UPLOAD_COLUMNS): drop columns, or upload the features as an NPZ"
        )
    repeated = sorted(name for name, count in Counter(header).items() if count > 1)
    if repeated:
        raise InvalidSpec(f"file: column names must be unique; repeated: {listing(repeated)}")
    return header


def parse_csv(
    content: Upload | bytes, label_column: str, max_columns: int
) -> tuple[np.ndarray, np.ndarray | TextLabels, Describe]:
    """float32 features (every column but the label), the labels and a describer; the
    upload is read from its stream, each pass from the start."""
    content = Upload.of(content)
    header = csv_header(content, max_columns)
    if label_column not in header:
        raise InvalidSpec(
            f"label_column: the CSV has no column '{label_column}'; "
            f"its columns are: {listing(header)}"
        )
    li = header.index(label_column)
    features = header[:li] + header[li + 1 :]
    if not features:
        raise InvalidSpec(
            f"file: the CSV needs at least one feature column besides '{label_column}'"
        )
    table = _read_table(content, header, li)
    lines = _LineIndex(content)

    def describe(row: int, col: int) -> str:
        return f"column '{features[col]}' on line {lines.of_row(row)}"

    x = np.empty((table.num_rows, len(features)), dtype=np.float32)
    feature_columns = [i for i in range(len(header)) if i != li]
    for j, i in enumerate(feature_columns):
        values = table.column(i).to_numpy()
        bad = out_of_range(values)  # (beyond float32's range it parsed as inf)
        if bad.any():
            row = int(np.argmax(bad))
            raise InvalidSpec(f"{FINITE_MESSAGE}: {describe(row, j)} is {lines.cell(row, i)}")
        x[:, j] = values
    labels = pc.utf8_trim_whitespace(table.column(li))
    del table
    empty = pc.index(labels, "").as_py()
    if empty >= 0:
        raise InvalidSpec(
            f"label column '{label_column}': empty on line {lines.of_row(empty)}; "
            "every row needs a label"
        )
    return x, _labels(labels), describe


def _read_table(content: Upload, header: list[str], label: int) -> pa.Table:
    raw = next(_records(content))  # the names as pyarrow reads them (not stripped)
    # float32 straight away: the table is as large as the stored features, no larger
    types = {name: pa.float32() for name in raw} | {raw[label]: pa.string()}
    try:
        table = pacsv.read_csv(
            content.reader(),  # (pyarrow reads a Python file block by block)
            read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                null_values=[],  # "", "NA", "null": not numbers (a 422), not NaN
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise _first_bad_line(content, header, label) or InvalidSpec(
            f"file: the CSV cannot be parsed: {str(error)[:300]}"
        ) from None
    if table.column_names != raw or table.num_columns != len(header):
        raise InvalidSpec("file: the CSV's header cannot be read consistently; quote its names")
    return table


def _first_bad_line(content: Upload, header: list[str], label: int) -> InvalidSpec | None:
    """The second pass: what is wrong, on which line (None if it finds nothing)."""
    not_utf8 = _not_utf8(content)
    if not_utf8 is not None:
        return not_utf8
    reader = _records(content)
    width = len(header)
    try:
        next(reader)
        for row in reader:
            if not row:
                continue  # an empty line
            if len(row) != width:
                return InvalidSpec(
                    f"file: line {reader.line_num} has {len(row)} field(s); the header has {width}"
                )
            for i, cell in enumerate(row):
                if i != label and not _NUMBER.fullmatch(cell):
                    return InvalidSpec(
                        f"column '{header[i]}': must be numeric (only the label column may "
                        f"hold text); line {reader.line_num} has '{cell.strip()}'"
                    )
    except csv.Error as error:
        return InvalidSpec(f"file: the CSV cannot be parsed at line {reader.line_num}: {error}")
    return None


class _LineIndex:
    """The line a data row starts on, found by a streaming pass (only for error messages)."""

    def __init__(self, content: Upload):
        self.content = content

    def of_row(self, row: int) -> int:
        return self._find(row)[0]

    def cell(self, row: int, column: int) -> str:
        """The text of one cell as uploaded (stripped)."""
        record = self._find(row)[1]
        return record[column].strip() if column < len(record) else "?"

    def _find(self, row: int) -> tuple[int, list[str]]:
        reader = _records(self.content)
        seen = -1
        with contextlib.suppress(csv.Error, StopIteration):
            next(reader)
            for record in reader:
                if record:
                    seen += 1
                    if seen == row:
                        # line_num is the record's last line; a quoted newline spans more
                        return reader.line_num - sum(c.count("\n") for c in record), record
        return reader.line_num, []


def _labels(labels: pa.ChunkedArray) -> np.ndarray | TextLabels:
    """Numbers when every label is one (float64), else the text, dictionary-encoded."""
    try:
        return pc.cast(labels, pa.float64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    encoded = labels.combine_chunks().dictionary_encode()
    names = encoded.dictionary
    # Checked before numpy holds them: its strings are as wide as the longest one, each.
    if len(names) > MAX_CLASSES:
        example = next(str(n) for n in names.to_pylist() if not _NUMBER.fullmatch(str(n)))
        raise InvalidSpec(
            f"label column: {len(names)} distinct labels, not all numbers (such as "
            f"'{example[:50]}'): classification allows at most {MAX_CLASSES} classes and "
            "regression needs numeric targets"
        )
    longest = pc.max(pc.utf8_length(names)).as_py() or 0
    if longest > MAX_LABEL_CHARS:
        raise InvalidSpec(
            f"label column: a label of {longest} characters; at most {MAX_LABEL_CHARS} are accepted"
        )
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return TextLabels(np.array(names.to_pylist(), dtype=str), codes)
