"""Ingest step: snapshot a CSV or Parquet source as canonical Parquet and split it into train and eval.

The snapshot and both partitions are content-addressed in the store, so ingesting the same data with
the same split twice writes nothing new and returns the same URIs and digests. The work is done in
Arrow (not pandas) to keep a million-row table cheap in time and memory.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import json
import logging
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from mlops_ops import lineage
from mlops_ops.errors import DataError, SpecError
from mlops_ops.specs import DatasetRef, IngestResult, IngestSpec, SplitSpec

if TYPE_CHECKING:
    from mlops_ops.context import RunContext
    from mlops_ops.store import Store

log = logging.getLogger(__name__)

_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".tsv")
_PARQUET_SUFFIXES = (".parquet", ".pq")
#: Fixed Parquet writer settings: the same table always gives the same bytes.
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 3, "row_group_size": 256 * 1024, "version": "2.6"}
#: A target with at most this many distinct values is treated as classes and stratified on.
MAX_CLASSES = 50
#: Column names an error message lists before it says how many more there are.
MAX_NAMES_SHOWN = 20
#: The name pandas gives a first column whose header cell is empty (a saved index, read back and written again).
PANDAS_UNNAMED = "Unnamed: 0"
#: The delimiters a CSV file is sniffed for; a file that shows none of them consistently is read with commas.
CSV_DELIMITERS = ",;\t|"
#: How many bytes from the start of a CSV file (decompressed) its delimiter is told from.
SNIFF_BYTES = 64 * 1024

# Parts of Arrow's CSV errors that we keep; the rest of such a message quotes the file's content.
_COLUMN_COUNT = re.compile(r"(?:Row #(\d+): )?Expected (\d+) columns, got (\d+)")
_CONVERSION = re.compile(r"In CSV column #(\d+): (?:Row #(\d+): )?CSV conversion error to ([\w\[\], ]+?):")


def run(spec: IngestSpec, ctx: RunContext, store: Store) -> IngestResult:
    """Snapshot ``spec.source`` into the store and split it into train and eval partitions.

    Args:
        spec: Source, format, target column and split settings.
        ctx: The run this step belongs to (names its MLflow run).
        store: The artifact store the snapshot and partitions are written to.

    Raises:
        DataError: The source is missing, empty, unreadable, has a column without a name, lacks the
            target or has missing targets.
        SpecError: The format cannot be told from the source's name, or the source is a local file
            outside the folders a spec may read (``MLOPS_DATA_ROOTS``).
    """
    # Refused before an MLflow run exists: a spec that may not run leaves no trace but its error line.
    store.check_readable(spec.source)
    source_format(spec.source, spec.format)
    with lineage.step_run(ctx) as run:
        started = time.monotonic()
        table = read_source(spec.source, store, spec.format)
        log.info(
            "read %s: %d rows x %d columns in %.2fs",
            spec.source,
            table.num_rows,
            table.num_columns,
            time.monotonic() - started,
        )
        if spec.target is not None:
            _check_target(table, spec.target, spec.source)
        with tempfile.TemporaryDirectory(prefix="mlops-ingest-") as tmp:
            snapshot = _put_dataset(table, store, Path(tmp) / "snapshot.parquet")
            log.info("snapshot %s (%d rows, sha256 %s)", snapshot.uri, snapshot.rows, snapshot.digest[:12])
            train_idx, eval_idx = split_indices(table, spec.target, spec.split)
            train = _put_dataset(table.take(train_idx), store, Path(tmp) / "train.parquet")
            holdout = _put_dataset(table.take(eval_idx), store, Path(tmp) / "eval.parquet")
        log.info("split %d train / %d eval rows (seed %d)", train.rows, holdout.rows, spec.split.seed)
        result = IngestResult(
            source=spec.source, snapshot=snapshot, train=train, eval=holdout, mlflow_run_id=run.run_id
        )
        _log_lineage(run, spec, table, result)
        log.info("ingest finished in %.2fs", time.monotonic() - started)
        return result


# ------------------------------------------------------------------------------------------- reading


def source_format(source: str, declared: str = "auto") -> str:
    """``csv`` or ``parquet``: the declared format, or the one the source's suffix names."""
    if declared != "auto":
        return declared
    name = source.lower().rstrip("/")
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    suffix = Path(name).suffix or "(none)"
    raise SpecError(
        f"cannot tell the format of {source!r} from its suffix {suffix!r}; set format to 'csv' or 'parquet'"
    )


def read_source(source: str, store: Store, declared: str = "auto") -> pa.Table:
    """Read a CSV or Parquet file from a path or URI into a canonical Arrow table (one chunk per column).

    Canonical means: no pandas index (saved as ``__index_level_N__`` in Parquet, or as an unnamed first
    column of row numbers) or metadata, nulls for empty cells, contiguous columns, so the same data always
    writes the same Parquet bytes. A column without a name is refused.
    """
    fmt = source_format(source, declared)
    if not store.exists(source):
        raise DataError(f"source {source!r} not found: no such file; check the path or URI")
    with store.open_local(source) as path:
        size = path.stat().st_size
        if size == 0:
            raise DataError(f"source {source!r} is empty (0 bytes); point the step at a file with a header and rows")
        table = _read_csv(path, source) if fmt == "csv" else _read_parquet(path, source)
    if table.num_rows == 0:
        raise DataError(f"source {source!r} has a header but no rows; it needs at least one data row")
    table = _without_saved_index(table, source)
    names = table.column_names
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"source {source!r} has duplicate column names {_names(duplicates)}; rename them")
    return table.replace_schema_metadata(None).combine_chunks()


def csv_delimiter(path: Path) -> str:
    """The field delimiter of the CSV file at ``path``: tab for ``.tsv``, else the one its first bytes show.

    The first SNIFF_BYTES (decompressed, as Arrow reads them) are sniffed with :class:`csv.Sniffer` for
    one of CSV_DELIMITERS; when none shows consistently (a one-column file, say) the answer is ``,``.
    """
    if path.name.lower().endswith(".tsv"):
        return "\t"
    with pa.input_stream(str(path)) as stream:  # decompresses .gz, .bz2 and .zst by suffix, as read_csv does
        head = stream.read(SNIFF_BYTES)
    text = head.decode("utf-8-sig", errors="replace")
    if len(head) == SNIFF_BYTES:
        text = text.rpartition("\n")[0] or text  # a row cut in half would look inconsistent
    try:
        return csv.Sniffer().sniff(text, delimiters=CSV_DELIMITERS).delimiter
    except csv.Error:
        return ","


def _read_csv(path: Path, source: str) -> pa.Table:
    convert = pcsv.ConvertOptions(strings_can_be_null=True)
    try:
        delimiter = csv_delimiter(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"cannot read {source!r}: {exc}; the file is truncated or not what its suffix says") from None
    if delimiter != ",":
        log.info("reading %s with delimiter %r", source, delimiter)
    parse = pcsv.ParseOptions(delimiter=delimiter)
    try:
        table = pcsv.read_csv(path, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as exc:
        message = str(exc).splitlines()[0]
        if "utf8" in message.lower().replace("-", ""):
            raise DataError(
                f"source {source!r} is not valid UTF-8{_where_not_utf8(path)}; re-encode it as UTF-8"
            ) from exc
        if "empty" in message.lower():
            raise DataError(
                f"source {source!r} has no header and no rows; it needs a header line and data rows"
            ) from exc
        # Never the message itself: Arrow quotes the offending row, which may be anything (a password file).
        problem = _csv_problem(message, path, parse)
        raise DataError(f"cannot parse {source!r} as CSV: {problem}; fix the file or set format") from None
    except OSError as exc:
        raise DataError(f"cannot read {source!r}: {exc.strerror or type(exc).__name__}") from None
    # Arrow reads a column with invalid UTF-8 as binary rather than failing.
    binary = [f.name for f in table.schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
    if binary:
        raise DataError(
            f"source {source!r} is not valid UTF-8{_where_not_utf8(path)} in column {binary[0]!r}; re-encode it as UTF-8"
        )
    return table


def _csv_problem(message: str, path: Path, parse: pcsv.ParseOptions) -> str:
    """What is wrong with a CSV file, from Arrow's error, without the file content Arrow's error quotes."""
    conversion = _CONVERSION.search(message)
    if conversion:
        column, row, kind = conversion.groups()
        where = f" on line {row}" if row else ""
        return f"column {int(column) + 1} (counting from 1) has a value that is not {kind}{where}"
    counts = _COLUMN_COUNT.search(message)
    if counts:
        row, expected, got = counts.groups()
        line = row or _first_ragged_line(path, parse)
        where = f"line {line}" if line else "a line"
        return f"{where} has {got} fields where the header has {expected}"
    return "the file is not well-formed CSV (Arrow could not parse it)"


def _first_ragged_line(path: Path, parse: pcsv.ParseOptions) -> int | None:
    """The line number of the first row with the wrong number of fields (a single-threaded second read)."""
    found: list[int | None] = []

    def note(row: pcsv.InvalidRow) -> str:
        found.append(row.number)
        return "error"

    options = pcsv.ParseOptions(delimiter=parse.delimiter, invalid_row_handler=note)
    # Arrow decodes a bad row's text as UTF-8 before it calls the handler; on bytes that are not UTF-8 (a
    # Parquet file read as CSV) that decode fails where nothing can catch it, and Python prints it as an
    # ignored exception. Latin-1 decodes every byte, and leaves delimiters, quotes and line ends as they were.
    read = pcsv.ReadOptions(use_threads=False, encoding="latin-1")
    with contextlib.suppress(pa.ArrowInvalid, OSError):
        pcsv.read_csv(path, read_options=read, parse_options=options)
    return found[0] if found else None


def _read_parquet(path: Path, source: str) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        message = str(exc).splitlines()[0]
        # Arrow's Parquet errors name the local path it opened: keep what comes after it.
        message = message.rsplit(f"{path}': ", 1)[-1]
        raise DataError(
            f"cannot read {source!r} as Parquet: {message}; the file is truncated or not Parquet, write it again"
        ) from None
    # Unnamed pandas indexes come back as "__index_level_N__" columns: drop them, as reset_index would.
    return table.drop_columns([n for n in table.column_names if n.startswith("__index_level_")])


def _without_saved_index(table: pa.Table, source: str) -> pa.Table:
    """``table`` without a saved pandas index as its first column; any other column without a name is refused.

    ``df.to_csv(path)`` (without ``index=False``) writes the index first, under an empty header cell, and
    pandas names such a column ``Unnamed: 0`` when it reads the file back. Kept, it would be a feature
    (on sorted data one that gives the label away) and an expectation on a column without a name. An
    unnamed first column whose values are exactly the row numbers 0..n-1 is that index: it is dropped.
    """
    names = table.column_names
    dropped = (
        len(names) > 1 and (not names[0].strip() or names[0] == PANDAS_UNNAMED) and _is_row_numbers(table.column(0))
    )
    if dropped:
        log.warning(
            "dropped the first column of %s (%s, values 0..%d): a saved pandas index, not data; "
            "write the file with index=False to leave it out",
            source,
            "no name" if not names[0].strip() else repr(names[0]),
            table.num_rows - 1,
        )
    unnamed = [i for i, name in enumerate(names) if not name.strip() and not (dropped and i == 0)]
    if unnamed:
        raise DataError(
            f"source {source!r} has a column without a name (column {unnamed[0] + 1}, counting from 1); "
            "name it in the header row, or drop it (pandas: write the file with index=False)"
        )
    return table.remove_column(0) if dropped else table


def _is_row_numbers(column: pa.ChunkedArray) -> bool:
    """Whether ``column`` holds exactly 0, 1, ..., n-1 in order (a saved RangeIndex)."""
    if not pa.types.is_integer(column.type) or column.null_count:
        return False
    return bool(np.array_equal(column.to_numpy(), np.arange(len(column))))


def _where_not_utf8(path: Path) -> str:
    """Where the first invalid UTF-8 byte of an uncompressed file is, as text for an error message."""
    if not path.name.lower().endswith((".csv", ".tsv")):
        return ""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            pending = decoder.getstate()[0]
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                data = pending + chunk
                return f" (byte 0x{data[exc.start]:02x} at offset {offset - len(pending) + exc.start})"
            offset += len(chunk)
    return ""


def _check_target(table: pa.Table, target: str, source: str) -> None:
    if target not in table.column_names:
        raise DataError(
            f"target column {target!r} is not in {source!r}; available columns: {_names(table.column_names)}"
        )
    column = table.column(target)
    missing = column.null_count
    if pa.types.is_floating(column.type):
        missing += pc.sum(pc.is_nan(column)).as_py() or 0
    if missing:
        raise DataError(
            f"target column {target!r} has {missing} missing values in {table.num_rows} rows; "
            "drop or fill those rows before ingesting"
        )


def _names(names: list[str]) -> str:
    """Column names for an error message: at most MAX_NAMES_SHOWN, each cut to 40 characters."""
    shown = ", ".join(n if len(n) <= 40 else n[:39] + "…" for n in names[:MAX_NAMES_SHOWN])
    more = len(names) - MAX_NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


# ----------------------------------------------------------------------------------------- splitting


def split_indices(table: pa.Table, target: str | None, split: SplitSpec) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the train and eval partitions, each in table order; stratified on class targets."""
    rng = np.random.default_rng(split.seed)
    codes = _class_codes(table, target) if split.stratify and target is not None else None
    if codes is None:
        groups = [np.arange(table.num_rows)]
    else:
        order = np.argsort(codes, kind="stable")
        groups = np.split(order, np.cumsum(np.bincount(codes))[:-1])
    eval_parts = []
    for rows in groups:
        n_eval = int(np.floor(len(rows) * split.eval_fraction + 0.5))
        eval_parts.append(rows[rng.permutation(len(rows))[:n_eval]])
    eval_idx = np.sort(np.concatenate(eval_parts))
    if len(eval_idx) == 0 or len(eval_idx) == table.num_rows:
        raise DataError(
            f"cannot split {table.num_rows} rows with eval_fraction {split.eval_fraction}: one partition would be "
            "empty; ingest more rows or change eval_fraction"
        )
    keep = np.ones(table.num_rows, dtype=bool)
    keep[eval_idx] = False
    return np.flatnonzero(keep), eval_idx


def _class_codes(table: pa.Table, target: str) -> np.ndarray | None:
    """Class number (in sorted class order) of every row, or None if the target does not look like classes."""
    column = table.column(target)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    kind = column.type
    if pa.types.is_floating(kind) and not pc.all(pc.equal(column, pc.floor(column))).as_py():
        log.info("not stratifying: target %r has fractional values", target)
        return None
    if not (
        pa.types.is_floating(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
    ):
        log.info("not stratifying: target %r has type %s", target, kind)
        return None
    classes = pc.unique(column)
    if len(classes) > MAX_CLASSES:
        log.info("not stratifying: target %r has %d distinct values (more than %d)", target, len(classes), MAX_CLASSES)
        return None
    ordered = classes.take(pc.sort_indices(classes))
    return np.asarray(pc.index_in(column, value_set=ordered).to_numpy(), dtype=np.int64)


# ----------------------------------------------------------------------------------------- writing


def _put_dataset(table: pa.Table, store: Store, path: Path) -> DatasetRef:
    """Write ``table`` as canonical Parquet and store it under its digest."""
    pq.write_table(table.combine_chunks(), path, **PARQUET_OPTIONS)  # type: ignore[arg-type]
    uri, digest = store.put_content_addressed(path)
    return DatasetRef(uri=uri, digest=digest, rows=table.num_rows, columns=pandas_dtypes(table))


def pandas_dtypes(table: pa.Table) -> dict[str, str]:
    """The dtype each column has when the Parquet file is read with pandas."""
    dtypes: dict[str, str] = {}
    for field, column in zip(table.schema, table.columns, strict=True):
        dtype = str(pa.schema([field]).empty_table().to_pandas().dtypes.iloc[0])
        if column.null_count and (pa.types.is_integer(field.type) or pa.types.is_boolean(field.type)):
            # pandas has no missing value for numpy integers and booleans.
            dtype = "float64" if pa.types.is_integer(field.type) else "object"
        dtypes[field.name] = dtype
    return dtypes


def _log_lineage(run: lineage.StepRun, spec: IngestSpec, table: pa.Table, result: IngestResult) -> None:
    import pandas as pd

    snapshot = result.snapshot
    name = spec.source.rstrip("/").rsplit("/", 1)[-1].split(".")[0] or "snapshot"
    # Arrow-backed columns: pandas gets a view of the table, not a copy of every string.
    frame = table.to_pandas(types_mapper=pd.ArrowDtype)
    run.log_dataset(frame, name=name, uri=snapshot.uri, digest=snapshot.digest, context="ingest", target=spec.target)
    params = {
        "source": spec.source,
        "format": source_format(spec.source, spec.format),
        "split": spec.split.model_dump(mode="json"),
    }
    run.log_params(params | ({"target": spec.target} if spec.target else {}))
    run.log_metrics(
        {
            "rows": snapshot.rows,
            "columns": len(snapshot.columns),
            "train_rows": result.train.rows,
            "eval_rows": result.eval.rows,
        }
    )
    lineage.record_dataset(run, uri=snapshot.uri, digest=snapshot.digest)
    run.log_text(json.dumps(result.model_dump(mode="json"), indent=2), "ingest/result.json")
