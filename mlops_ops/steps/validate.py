"""Validate step: run a Great Expectations 1.x suite on the snapshot and record the verdict.

The validation result (GX's own JSON) and a Markdown report are stored under a key made of the
dataset digest and the suite digest. Validation is a pure function of those two (and the GX
version), so a rerun finds the stored result and reuses it instead of validating again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from mlops_ops import lineage
from mlops_ops.errors import DataError, SpecError, ValidationFailed
from mlops_ops.specs import DatasetRef, Failure, ValidateResult, ValidateSpec
from mlops_ops.store import sha256_file

if TYPE_CHECKING:
    import pandas as pd

    from mlops_ops.context import RunContext
    from mlops_ops.store import Store

log = logging.getLogger(__name__)

#: How much GX keeps about each expectation: counts and up to 20 example values, not every index.
RESULT_FORMAT = "SUMMARY"


def run(spec: ValidateSpec, ctx: RunContext, store: Store) -> ValidateResult:
    """Validate ``spec.dataset`` against the suite at ``spec.suite``.

    Args:
        spec: The snapshot (a ``DatasetRef`` or an ingest result) and the suite's path or URI.
        ctx: The run this step belongs to (names its MLflow run).
        store: The artifact store the result and report are written to.

    Raises:
        ValidationFailed: One or more expectations failed; the message lists each one. The result
            and report are written and logged first.
        SpecError: The suite is missing, not JSON, or holds an unknown or malformed expectation.
        DataError: The snapshot is missing or its bytes do not match its digest.
    """
    with lineage.step_run(ctx) as run:
        started = time.monotonic()
        suite, suite_digest = load_suite(spec.suite, store)
        name = suite_name(suite, spec.suite)
        prefix = f"validations/{spec.dataset.digest[:2]}/{spec.dataset.digest}/{suite_digest[:16]}"
        result_uri, report_uri = store.uri(f"{prefix}/result.json"), store.uri(f"{prefix}/report.md")
        outcome = _stored_result(store, result_uri)
        if outcome is None:
            frame = _read_snapshot(spec.dataset, store)
            outcome = validate_frame(frame, suite, name)
            outcome.setdefault("meta", {})["mlops"] = {
                "dataset_uri": spec.dataset.uri,
                "dataset_digest": spec.dataset.digest,
                "suite": spec.suite,
                "suite_digest": suite_digest,
            }
            store.put_bytes(f"{prefix}/result.json", _json_bytes(outcome))
        else:
            log.info("reusing the validation of this dataset and suite at %s", result_uri)
        failures = failures_of(outcome)
        evaluated = int(outcome.get("statistics", {}).get("evaluated_expectations", len(outcome.get("results", []))))
        # The report is a function of the result, so rewriting it changes nothing but an outdated layout.
        report = render_report(outcome, spec.dataset, name, spec.suite, suite_digest)
        store.put_bytes(f"{prefix}/report.md", report.encode())
        result = ValidateResult(
            success=not failures,
            dataset_digest=spec.dataset.digest,
            suite=name,
            evaluated=evaluated,
            failures=failures,
            result_uri=result_uri,
            report_uri=report_uri,
            mlflow_run_id=run.run_id,
        )
        _log_lineage(run, spec, result, outcome, report, suite_digest)
        log.info(
            "validated %d rows against %s: %d of %d expectations failed in %.2fs; report at %s",
            spec.dataset.rows,
            name,
            len(failures),
            evaluated,
            time.monotonic() - started,
            report_uri,
        )
        if failures:
            lines = "; ".join(f.line() for f in failures)
            raise ValidationFailed(
                f"{len(failures)} of {evaluated} expectations failed in {name}: {lines} "
                f"(report: {report_uri}); fix the data, or revise the suite if the data is right"
            )
        return result


# --------------------------------------------------------------------------------------------- suite


def load_suite(uri: str, store: Store) -> tuple[dict[str, Any], str]:
    """The suite JSON at ``uri`` and the sha256 of its bytes."""
    if not store.exists(uri):
        raise SpecError(
            f"expectation suite {uri!r} not found; check the path, or write one with 'mlops-ops suite infer DATA --out FILE'"
        )
    raw = store.get_bytes(uri)
    try:
        suite = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"expectation suite {uri!r} is not valid JSON: {exc}; fix the file") from exc
    if not isinstance(suite, dict) or not isinstance(suite.get("expectations"), list):
        raise SpecError(
            f"expectation suite {uri!r} has no 'expectations' list; write it as a Great Expectations 1.x suite"
        )
    return suite, hashlib.sha256(raw).hexdigest()


def suite_name(suite: dict[str, Any], uri: str) -> str:
    """The suite's name, or the file's stem when it has none."""
    name = suite.get("name") or suite.get("expectation_suite_name")
    return str(name) if name else uri.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]


def _gx_suite(suite: dict[str, Any], name: str) -> Any:
    """A GX ExpectationSuite; every expectation is checked first, since GX only logs invalid ones."""
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    configs = []
    for number, item in enumerate(suite["expectations"], start=1):
        if not isinstance(item, dict):
            raise SpecError(f"expectation {number} of suite {name!r} is {item!r}, not an object; fix the suite")
        # Suites saved by GX 0.x name the kind "expectation_type".
        config = {k: v for k, v in item.items() if k not in ("id", "expectation_type", "rendered_content")}
        config["type"] = item.get("type") or item.get("expectation_type")
        try:
            ExpectationConfiguration(**config).to_domain_obj()
        except Exception as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SpecError(
                f"expectation {number} ({config['type']!r}) of suite {name!r} is invalid: {message}; fix or remove it"
            ) from exc
        configs.append(config)
    return ExpectationSuite(name=name, expectations=configs, meta=suite.get("meta") or None)


# ---------------------------------------------------------------------------------------- validation


def _read_snapshot(dataset: DatasetRef, store: Store) -> pd.DataFrame:
    import pandas as pd

    started = time.monotonic()
    if not store.exists(dataset.uri):
        raise DataError(f"snapshot {dataset.uri!r} not found; run ingest again to write it")
    with store.open_local(dataset.uri) as path:
        digest = sha256_file(path)
        if digest != dataset.digest:
            raise DataError(
                f"snapshot {dataset.uri!r} has sha256 {digest[:12]}..., not {dataset.digest[:12]}... as recorded; "
                "run ingest again"
            )
        frame = pd.read_parquet(path)
    log.info(
        "read snapshot %s: %d rows x %d columns in %.2fs",
        dataset.uri,
        len(frame),
        frame.shape[1],
        time.monotonic() - started,
    )
    return frame


def validate_frame(frame: pd.DataFrame, suite: dict[str, Any], name: str) -> dict[str, Any]:
    """Run a suite (as JSON) on a DataFrame with an ephemeral GX context; return GX's result as JSON."""
    started = time.monotonic()
    gx = _import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    gx_suite = _gx_suite(suite, name)
    context = gx.get_context(mode="ephemeral")
    # GX draws tqdm progress bars on stderr for every validation; task logs are no place for them.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = context.data_sources.add_pandas("mlops").add_dataframe_asset("snapshot")
    definition = batch.add_batch_definition_whole_dataframe("whole")
    gx_suite = context.suites.add(gx_suite)
    validation = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=definition, suite=gx_suite))
    log.info("validating %d rows against %d expectations", len(frame), len(gx_suite.expectations))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = validation.run(batch_parameters={"dataframe": frame}, result_format=RESULT_FORMAT)
    log.info("Great Expectations finished in %.2fs", time.monotonic() - started)
    return dict(outcome.to_json_dict())


def _import_gx() -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # GX logs its own housekeeping at INFO (docs registration, temporary folders); keep real problems only.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations as gx
    log.debug("imported great_expectations in %.1fs", time.monotonic() - started)
    return gx


def _stored_result(store: Store, uri: str) -> dict[str, Any] | None:
    """The result stored by an earlier validation of the same dataset and suite with this GX version."""
    if not store.exists(uri):
        return None
    try:
        outcome = json.loads(store.get_bytes(uri))
    except ValueError:
        log.warning("ignoring the unreadable validation result at %s", uri)
        return None
    if outcome.get("meta", {}).get("great_expectations_version") != version("great_expectations"):
        return None
    return dict(outcome)


def failures_of(outcome: dict[str, Any]) -> list[Failure]:
    """Every failed expectation of a GX result (as JSON), with its column and unexpected count."""
    return [_failure(item) for item in outcome.get("results", []) if not item.get("success")]


def _failure(item: dict[str, Any]) -> Failure:
    config = item.get("expectation_config") or {}
    details = item.get("result") or {}
    count = details.get("unexpected_count")
    return Failure(
        expectation=str(config.get("type", "unknown expectation")),
        column=_column(config.get("kwargs") or {}),
        unexpected_count=int(count) if count is not None else None,
        detail=_detail(item),
    )


def _column(kwargs: dict[str, Any]) -> str | None:
    if kwargs.get("column") is not None:
        return str(kwargs["column"])
    pair = [str(kwargs[k]) for k in ("column_A", "column_B") if kwargs.get(k) is not None]
    return ", ".join(pair) or None


def _detail(item: dict[str, Any]) -> str:
    """What went wrong, briefly: the error GX hit, some unexpected values, or the observed value."""
    error = _error_message(item.get("exception_info") or {})
    if error:
        return f"error: {error}"
    details = item.get("result") or {}
    examples = [e.get("value") for e in details.get("partial_unexpected_counts") or [] if e.get("value") is not None]
    if examples:
        return "e.g. " + ", ".join(_short(value) for value in examples[:3])
    if "observed_value" in details:
        return f"observed {_short(details['observed_value'], 100)}"
    return ""


def _error_message(info: dict[str, Any]) -> str:
    # GX reports one exception as a flat dict, and several (one per metric) as a dict of such dicts.
    candidates = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for candidate in candidates:
        if candidate.get("raised_exception"):
            return str(candidate.get("exception_message") or "").splitlines()[0][:200]
    return ""


def _short(value: Any, limit: int = 40) -> str:
    return _clip(repr(value), limit)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_bytes(outcome: dict[str, Any]) -> bytes:
    return (json.dumps(outcome, indent=2, sort_keys=True, default=str) + "\n").encode()


# -------------------------------------------------------------------------------------------- report


def render_report(outcome: dict[str, Any], dataset: DatasetRef, name: str, suite_uri: str, suite_digest: str) -> str:
    """A Markdown report of a validation: the verdict, what was checked, and every expectation."""
    results = outcome.get("results", [])
    failures = failures_of(outcome)
    verdict = "PASSED" if not failures else "FAILED"
    lines = [
        f"# Validation of dataset `{dataset.digest[:12]}` against `{name}`",
        "",
        f"**{verdict}**: {len(results) - len(failures)} of {len(results)} expectations met, {len(failures)} failed.",
        "",
        "| | |",
        "|---|---|",
        f"| Dataset | `{dataset.uri}` |",
        f"| Dataset sha256 | `{dataset.digest}` |",
        f"| Rows | {dataset.rows} |",
        f"| Suite | `{name}` from `{suite_uri}` |",
        f"| Suite sha256 | `{suite_digest}` |",
        f"| Great Expectations | {outcome.get('meta', {}).get('great_expectations_version', 'unknown')} |",
        "",
    ]
    if failures:
        lines += ["## Failed expectations", "", "| Expectation | Column | Unexpected | Details |", "|---|---|---:|---|"]
        lines += [
            f"| {_cell(f.expectation)} | {_cell(f.column or '')} | {'' if f.unexpected_count is None else f.unexpected_count} "
            f"| {_cell(f.detail)} |"
            for f in failures
        ]
        lines.append("")
    lines += [
        "## All expectations",
        "",
        "| | Expectation | Column | Arguments | Unexpected |",
        "|---|---|---|---|---:|",
    ]
    for item in results:
        config = item.get("expectation_config") or {}
        kwargs = {k: v for k, v in (config.get("kwargs") or {}).items() if k not in ("column", "batch_id")}
        count = (item.get("result") or {}).get("unexpected_count")
        mark = "ok" if item.get("success") else "**FAIL**"
        arguments = _clip(json.dumps(kwargs, sort_keys=True, default=str), 90)
        lines.append(
            f"| {mark} | {_cell(config.get('type', ''))} | {_cell(_column(config.get('kwargs') or {}) or '')} "
            f"| {_cell(arguments)} | {'' if count is None else count} |"
        )
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _log_lineage(
    run: lineage.StepRun,
    spec: ValidateSpec,
    result: ValidateResult,
    outcome: dict[str, Any],
    report: str,
    suite_digest: str,
) -> None:
    run.log_params({"suite": spec.suite, "suite_digest": suite_digest, "dataset_digest": spec.dataset.digest})
    run.log_metrics({"evaluated": result.evaluated, "failed": len(result.failures)})
    run.log_text(_json_bytes(outcome).decode(), "validation/result.json")
    run.log_text(report, "validation/report.md")
    lineage.record_validation(run, result, spec.dataset)
