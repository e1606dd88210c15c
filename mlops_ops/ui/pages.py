"""HTML of the Models view: plain server-rendered pages, every value escaped, reports rendered from Markdown.

The pages are shown in Airflow's UI inside an iframe: links into Airflow open in the top window, links
into MLflow in a new tab.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from mlops_ops.operators.links import UI_PREFIX, airflow_base_url, mlflow_run_url, mlflow_ui_url, mlflow_version_url

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.2rem;color:#1f2937;font-size:14px}
a{color:#1d4ed8}h1{font-size:1.4rem;margin:.2rem 0 1rem}h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
table{border-collapse:collapse;margin:.3rem 0}th,td{border:1px solid #e5e7eb;padding:.3rem .55rem;text-align:left;
vertical-align:top}th{background:#f3f4f6}.badge{display:inline-block;border-radius:9px;padding:0 .5rem;
font-size:12px;margin-right:.2rem}.champion{background:#dcfce7;color:#166534}.challenger{background:#fef3c7;
color:#92400e}.other{background:#e5e7eb}.rejected{color:#b91c1c;font-weight:600}.approved{color:#166534;
font-weight:600}.chain{display:flex;flex-wrap:wrap;align-items:stretch;gap:.3rem}.card{border:1px solid #d1d5db;
border-radius:8px;padding:.6rem .8rem;min-width:11rem;max-width:22rem;overflow-wrap:anywhere;background:#f9fafb}.card h3{margin:0 0 .3rem;
font-size:1rem}.arrow{align-self:center;font-size:1.4rem;color:#9ca3af}.muted{color:#6b7280}.report{
border:1px solid #e5e7eb;border-radius:8px;padding:.2rem 1rem;margin:.5rem 0}img.plot{max-width:420px;
margin:.3rem;border:1px solid #e5e7eb}code{font-size:12px}nav{margin-bottom:.6rem}
"""


#: Airflow shows plugin pages in a sandboxed iframe without ``allow-top-navigation`` or ``allow-popups``: a link
#: into Airflow (``target=_top``) or MLflow (``target=_blank``) is followed by a twin anchor in the (same-origin)
#: top document. Outside the iframe the links work as they are.
_LINKS_SCRIPT = """
document.addEventListener("click", function (event) {
  var link = event.target.closest("a[target]");
  if (!link || window.top === window) return;
  var top;
  try { top = window.top.document; } catch (err) { return; }
  event.preventDefault();
  var twin = top.createElement("a");
  twin.href = link.href;
  twin.target = link.target === "_top" ? "_self" : link.target;
  twin.rel = "noopener";
  top.body.appendChild(twin);
  twin.click();
  twin.remove();
});
"""


def h(value: Any) -> str:
    """Escaped text."""
    return escape("" if value is None else str(value))


def _page(title: str, body: str, crumbs: list[tuple[str, str]] | None = None) -> str:
    trail = " / ".join(f'<a href="{h(url)}">{h(label)}</a>' for label, url in crumbs or [])
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{h(title)}</title><style>{_CSS}</style></head>'
        f"<body><nav>{trail}</nav><h1>{h(title)}</h1>{body}<script>{_LINKS_SCRIPT}</script></body></html>"
    )


def ui(path: str) -> str:
    """A URL of this app."""
    return f"{airflow_base_url()}{UI_PREFIX}{path}"


def model_url(name: str) -> str:
    return ui(f"/models/{quote(name, safe='')}")


def lineage_url(name: str, version: str) -> str:
    return ui(f"/models/{quote(name, safe='')}/versions/{quote(str(version), safe='')}")


def dag_run_url(dag_id: str, run_id: str) -> str:
    """Airflow's page of a DAG run."""
    return f"{airflow_base_url()}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def task_try_url(dag_id: str, run_id: str, task_id: str, try_number: str) -> str:
    """Airflow's page of one try of a task instance."""
    query = f"?{urlencode({'try_number': try_number})}" if try_number else ""
    return f"{dag_run_url(dag_id, run_id)}/tasks/{quote(task_id, safe='')}{query}"


def _airflow_link(url: str, text: str) -> str:
    return f'<a href="{h(url)}" target="_top">{h(text)}</a>'


def _mlflow_link(url: str, text: str) -> str:
    return f'<a href="{h(url)}" target="_blank" rel="noopener">{h(text)}</a>'


def _badges(aliases: list[str]) -> str:
    return "".join(
        f'<span class="badge {a if a in ("champion", "challenger") else "other"}">{h(a)}</span>' for a in aliases
    )


def _table(headers: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{h(empty)}</p>'
    head = "".join(f"<th>{h(x)}</th>" for x in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _run_link(pipeline: str, run_id: str) -> str:
    return _airflow_link(dag_run_url(pipeline, run_id), run_id) if pipeline and run_id else h(run_id)


# ---------------------------------------------------------------------------------------------- models


def models_page(models: list[dict[str, Any]]) -> str:
    """Every registered model with its champion and challenger."""
    rows = [
        [
            f'<a href="{h(model_url(m["name"]))}">{h(m["name"])}</a>',
            _version_cell(m["name"], m["aliases"].get("champion")),
            _version_cell(m["name"], m["aliases"].get("challenger")),
            h(m["latest"]),
        ]
        for m in models
    ]
    table = _table(["model", "champion", "challenger", "latest version"], rows, "No registered models yet.")
    return _page("Models", table)


def _version_cell(name: str, version: str | None) -> str:
    if not version:
        return '<span class="muted">-</span>'
    return f'<a href="{h(lineage_url(name, version))}">version {h(version)}</a>'


def model_page(model: dict[str, Any]) -> str:
    """One model: aliases, versions and their metrics, alias history, reviews."""
    name = model["name"]
    aliases = " ".join(f"{_badges([a])} {_version_cell(name, v)}" for a, v in model["aliases"].items())
    metric_names = sorted({k for v in model["versions"] for k in v["metrics"]})
    rows = [
        [
            f'<a href="{h(lineage_url(name, v["version"]))}">{h(v["version"])}</a> {_badges(v["aliases"])}',
            h(v["created"]),
            *[h(v["metrics"].get(m, "")) for m in metric_names],
            f"<code>{h(v['eval_digest'][:12])}</code>",
            _run_link(v["pipeline"], v["pipeline_run"]),
        ]
        for v in model["versions"]
    ]
    versions = _table(["version", "registered", *metric_names, "eval rows", "pipeline run"], rows, "No versions.")
    history = "".join(
        f"<h2>History of <code>{h(alias)}</code></h2>{_history(name, moves)}"
        for alias, moves in model["history"].items()
    )
    body = (
        f"<p>{aliases or '<span class=muted>no aliases</span>'}</p>"
        f"<h2>Versions (metrics on each version's evaluation rows)</h2>{versions}{history}"
        f"<h2>Reviews</h2>{_reviews(model['reviews'])}"
    )
    return _page(f"Model {name}", body, [("Models", ui("/models"))])


def _history(name: str, moves: list[dict[str, str]]) -> str:
    rows = [
        [
            h(m["moved_at"]),
            _version_cell(name, m["from"]) if m["from"] else '<span class="muted">none</span>',
            _version_cell(name, m["to"]),
            h(m.get("kind", "")),
            h(m["reason"]),
            h(m["pipeline_run"]),
            h(m.get("actor") or ""),
        ]
        for m in reversed(moves)
    ]
    return _table(["time", "from", "to", "kind", "reason", "run", "approver"], rows, "Never moved.")


def _reviews(reviews: list[dict[str, str]]) -> str:
    base = mlflow_ui_url()
    rows = [
        [
            h(r["at"]),
            f'<span class="{h(r["decision"])}">{h(r["decision"])}</span>',
            h(r["by"]),
            h(r["comment"]),
            h(r["pipeline_run"]),
            _mlflow_link(mlflow_run_url(base, r["evaluate_run"]), "evaluation run"),
        ]
        for r in reviews
    ]
    return _table(["time", "decision", "reviewer", "comment", "run", "evaluation"], rows, "No reviews.")


# ----------------------------------------------------------------------------------------------- chain


def version_page(found: dict[str, Any], reports: list[dict[str, Any]]) -> str:
    """One version's lineage as a chain of cards, then its reports and plots inline."""
    name, version = found["model"], found["version"]
    base = mlflow_ui_url()
    dataset = found["dataset"] or {}
    cards = [
        "<div class='card'><h3>data</h3>"
        f"<div><code>{h(dataset.get('uri'))}</code></div>"
        f"<div class='muted'>sha256 {h((dataset.get('digest') or '')[:12])}</div></div>"
    ]
    cards += [_step_card(card, base) for card in found.get("steps", [])]
    cards.append(
        f"<div class='card'><h3>{h(name)} v{h(version)}</h3>{_badges(found['aliases'])}"
        f"<div>{_mlflow_link(mlflow_version_url(base, name, version), 'MLflow model version')}</div>"
        f"<div class='muted'>registered {h(found['created'])}</div></div>"
    )
    chain = "<div class='chain'>" + "<span class='arrow'>&rarr;</span>".join(cards) + "</div>"
    run = ""
    if found.get("pipeline") and found.get("pipeline_run"):
        run = f"<p>Pipeline run {_run_link(found['pipeline'], found['pipeline_run'])}</p>"
    body = run + chain + "".join(_report_section(r) for r in reports)
    crumbs = [("Models", ui("/models")), (name, model_url(name))]
    return _page(f"{name} version {version}", body, crumbs)


def _step_card(card: dict[str, Any], base: str) -> str:
    metrics = "".join(
        f"<div class='muted'>{h(k)} {h(f'{v:.4g}' if isinstance(v, float) else v)}</div>"
        for k, v in sorted(card["metrics"].items())[:6]
    )
    airflow = ""
    if card["pipeline"] and card["pipeline_run"]:
        url = task_try_url(card["pipeline"], card["pipeline_run"], card["step"], card["try_number"])
        airflow = f"<div>{_airflow_link(url, 'task try ' + (card['try_number'] or '?'))}</div>"
    report = f"<div><a href='{h(ui('/runs/' + quote(card['run_id']) + '/report'))}'>report</a></div>"
    state = card["state"] or card["status"].lower()
    return (
        f"<div class='card' data-step='{h(card['step'])}'><h3>{h(card['step'])}</h3>"
        f"<div class='muted'>{h(state)}</div>{airflow}"
        f"<div>{_mlflow_link(mlflow_run_url(base, card['run_id']), 'MLflow run')}</div>"
        f"{report if card['report'] else ''}{metrics}</div>"
    )


# --------------------------------------------------------------------------------------------- reports


def _markdown(text: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def _report_section(report: dict[str, Any]) -> str:
    images = "".join(
        f"<img class='plot' alt='{h(path)}' src='{h(ui('/runs/' + quote(report['run_id']) + '/images/' + quote(path)))}'>"
        for path in report["images"]
    )
    text = _markdown(report["text"]) if report["text"] else "<p class='muted'>No report text.</p>"
    return f"<h2>{h(report['step'])} report</h2><div class='report'>{text}<div>{images}</div></div>"


def report_page(report: dict[str, Any]) -> str:
    """A step run's report with its plots inline."""
    base = mlflow_ui_url()
    header = f"<p>{_mlflow_link(mlflow_run_url(base, report['run_id']), 'MLflow run')}"
    if report["pipeline"] and report["pipeline_run"]:
        url = task_try_url(report["pipeline"], report["pipeline_run"], report["step"], report["try_number"])
        header += f" · {_airflow_link(url, 'task try in Airflow')}"
    header += "</p>"
    return _page(f"{report['step']} report", header + _report_section(report), [("Models", ui("/models"))])
