"""The model registry as the UI shows it: JSON-safe view models and server-rendered HTML pages.

Everything here reads through ModelRegistry (versions, the champion pointer with its history, the
gate decisions recorded by `record_gate`) and returns plain dicts, so the JSON API and the HTML
page show the same numbers. Rendering is server-side with autoescaped Jinja2: registry values
(reasons, actors, run ids) are data and never markup. Links are relative to the page, so the view
works under any `url_prefix` and behind a reverse proxy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from jinja2 import Environment
from markupsafe import Markup, escape

from fraud_retraining.registry import ModelRegistry
from fraud_retraining.timeutil import as_utc

# The holdout split whose metrics the tables show: the gate compares models on the test split.
METRICS_SPLIT = "test"
# Columns of the versions table, in this order; every other metric is on the version page.
HEADLINE_METRICS = ("average_precision", "auc_roc", "card_precision_at_100", "recall_at_alert_budget")
# Drawn over time: the gate's primary metric and the one every fraud team quotes.
CHART_METRICS = ("average_precision", "auc_roc")


def jsonable(value: Any) -> Any:
    """A JSON-safe copy: datetimes as ISO-8601 UTC, NaN as None, unknown types (ObjectId) as str."""
    if isinstance(value, datetime):
        return as_utc(value).isoformat().replace("+00:00", "Z")
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def _split_metrics(doc: Mapping[str, Any], split: str = METRICS_SPLIT) -> dict[str, Any]:
    metrics = doc.get("metrics") or {}
    # Engines store {"valid": {...}, "test": {...}}; a flat dict is taken as the test metrics.
    chosen = metrics.get(split) if isinstance(metrics.get(split), Mapping) else metrics
    return {key: value for key, value in chosen.items() if not isinstance(value, Mapping)}


def _gate_summary(gate: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not gate:
        return None
    return {
        "passed": bool(gate.get("passed")),
        "reasons": list(gate.get("reasons") or []),
        "decided_at": gate.get("decided_at"),
        "champion_version": gate.get("champion_version"),
    }


def _served_periods(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each champion event with the time its version stopped serving (None: serving now)."""
    ordered = sorted(history, key=lambda event: event["generation"])
    periods = []
    for index, event in enumerate(ordered):
        following = ordered[index + 1] if index + 1 < len(ordered) else None
        periods.append(
            {
                "generation": event["generation"],
                "action": event.get("action", "promote"),
                "version": event["version"],
                "previous": event.get("previous"),
                "served_from": event["at"],
                "served_until": following["at"] if following else None,
                "reason": event.get("reason", ""),
                "actor": event.get("actor", ""),
            }
        )
    return periods


def version_summary(doc: Mapping[str, Any], champion_version: str | None, served: set[str]) -> dict[str, Any]:
    """One registered version as a table row: headline metrics, lineage essentials, gate outcome."""
    lineage = doc.get("lineage") or {}
    return jsonable(
        {
            "version": doc["version"],
            "registered_at": doc.get("registered_at"),
            "engine": doc.get("engine"),
            "metrics": _split_metrics(doc),
            "lineage": {
                key: lineage.get(key)
                for key in ("dag_id", "run_id", "data_interval", "training_window", "rows", "frauds")
                if key in lineage
            },
            "best_estimator": lineage.get("best_estimator"),
            "gate": _gate_summary(doc.get("gate")),
            "is_champion": doc["version"] == champion_version,
            "has_served": doc["version"] in served,
        }
    )


def snapshot(registry: ModelRegistry, *, limit: int = 200) -> dict[str, Any]:
    """Everything the model page shows, from one read of the pointer and one of the versions."""
    pointer = registry.champion()
    history = list((pointer or {}).get("history", []))
    champion_version = pointer["version"] if pointer else None
    served = {event["version"] for event in history}
    docs = registry.list_versions(limit=limit)
    versions = [version_summary(doc, champion_version, served) for doc in docs]
    by_version = {row["version"]: row for row in versions}
    periods = _served_periods(history)

    champion = None
    if pointer:
        champion = jsonable(
            {
                "version": champion_version,
                "generation": pointer.get("generation"),
                "promoted_at": pointer.get("promoted_at"),
                "metrics": (by_version.get(champion_version) or {}).get("metrics")
                or _split_metrics(registry.get(champion_version) or {}),
                "last_action": periods[-1] if periods else None,
            }
        )
    # The version a rollback would reinstate, by the registry's own rule (rolled-back ones skipped).
    stack: list[str] = []
    for event in sorted(history, key=lambda e: e["generation"]):
        if event.get("action") == "rollback" and stack:
            stack.pop()
        else:
            stack.append(event["version"])
    decisions = [
        jsonable({"version": doc["version"], **dict(doc["gate"])}) for doc in docs if doc.get("gate")
    ]
    decisions.sort(key=lambda d: (d.get("decided_at") or "", d["version"]), reverse=True)
    return {
        "model_name": registry.model_name,
        "generated_at": jsonable(datetime.now(UTC)),
        "champion": champion,
        "rollback_target": stack[-2] if len(stack) >= 2 else None,
        "versions": versions,
        "history": jsonable(list(reversed(periods))),
        "gate_decisions": decisions,
    }


def version_detail(registry: ModelRegistry, version: str) -> dict[str, Any] | None:
    """One version in full: lineage, all metrics, artifact, gate decision, when it served."""
    doc = registry.get(version)
    if doc is None:
        return None
    history = registry.history()
    champion_version = registry.champion_version()
    detail = version_summary(doc, champion_version, {event["version"] for event in history})
    detail.update(
        jsonable(
            {
                "model_name": registry.model_name,
                "all_metrics": doc.get("metrics") or {},
                "lineage": doc.get("lineage") or {},
                "artifact": doc.get("artifact") or {},
                "gate": doc.get("gate"),
                "served": [p for p in _served_periods(history) if p["version"] == version],
            }
        )
    )
    return detail


# --------------------------------------------------------------------------------------- HTML


def _fmt_metric(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _fmt_time(value: Any) -> str:
    if not value:
        return "–"
    return as_utc(value).strftime("%Y-%m-%d %H:%M UTC")


def _href_version(version: str) -> str:
    return "versions/" + quote(version, safe="")


def _href_report(run_id: str) -> str:
    return "reports/" + quote(run_id, safe="")


def _fmt_value(value: Any) -> str:
    """Lineage values as a person reads them: strings as is, structures as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _version_day(version: str) -> str:
    """The data day a version id starts with (20261204T...Z-hash), as 2026-12-04."""
    stamp = version.split("T", 1)[0]
    return f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}" if len(stamp) == 8 and stamp.isdigit() else version[:10]


def metric_chart_svg(versions: Sequence[Mapping[str, Any]], metrics: Sequence[str] = CHART_METRICS) -> Markup:
    """A small line chart of `metrics` per version in registration order (oldest left)."""
    rows = [v for v in reversed(versions) if any(v["metrics"].get(m) is not None for m in metrics)]
    width, height, pad = 640, 190, 44
    if not rows:
        return Markup('<p class="muted">No metrics recorded yet.</p>')
    step = (width - 2 * pad) / max(len(rows) - 1, 1)
    colours = ("#1f6feb", "#d97706", "#16a34a", "#9333ea")
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{" and ".join(metrics)} per version">',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" class="axis"/>',
    ]
    for tick in (0.0, 0.5, 1.0):
        y = height - pad - tick * (height - 2 * pad)
        parts.append(f'<text x="4" y="{y + 4:.1f}" class="tick">{tick:.1f}</text>')
        parts.append(f'<line x1="{pad}" y1="{y:.1f}" x2="{width - pad}" y2="{y:.1f}" class="grid"/>')
    for index, metric in enumerate(metrics):
        colour = colours[index % len(colours)]
        points = [
            (pad + i * step, height - pad - float(row["metrics"][metric]) * (height - 2 * pad))
            for i, row in enumerate(rows)
            if isinstance(row["metrics"].get(metric), int | float)
        ]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>' for x, y in points)
        parts.append(f'<text x="{pad + 170 * index}" y="16" fill="{colour}" class="legend">{metric}</text>')
    for i, row in enumerate(rows):
        # Versions come from the database: escaped like everything else that is not a number.
        label = escape(_version_day(row["version"]))
        parts.append(
            f'<text x="{pad + i * step:.1f}" y="{height - 14}" text-anchor="middle" class="xlabel">{label}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - numbers, constants and escaped labels only


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:20px;color:#1f2328;
     background:#fff;font-size:14px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #d0d7de;
   padding-bottom:4px}
table{border-collapse:collapse;width:100%;margin:6px 0} th,td{text-align:left;padding:5px 8px;
   border-bottom:1px solid #eaeef2;vertical-align:top} th{background:#f6f8fa;font-weight:600}
td.num{font-variant-numeric:tabular-nums;text-align:right}
.muted{color:#656d76} .pill{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;
   font-weight:600} .pass{background:#dafbe1;color:#116329} .fail{background:#ffebe9;color:#a40e26}
.champ{background:#ddf4ff;color:#0550ae} .card{border:1px solid #d0d7de;border-radius:8px;padding:12px 16px;
   margin:8px 0;background:#f6f8fa} .kv{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px}
.chart{width:100%;max-width:640px;height:auto} .axis{stroke:#8c959f} .grid{stroke:#eaeef2}
.tick,.xlabel{font-size:10px;fill:#656d76} .legend{font-size:12px;font-weight:600}
.msg{padding:8px 12px;border-radius:6px;background:#fff8c5;border:1px solid #d4a72c;margin:8px 0}
form.rollback{display:flex;gap:8px;align-items:center;flex-wrap:wrap} input[type=text]{min-width:280px;
   padding:4px 6px} button{padding:5px 12px;border-radius:6px;border:1px solid #cf222e;background:#fff;
   color:#cf222e;font-weight:600;cursor:pointer} ul.reasons{margin:0;padding-left:18px}
a{color:#0969da}
"""

_MODEL_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ snap.model_name }} models</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{{ style }}</style></head>
<body>
<h1>Model registry: {{ snap.model_name }}</h1>
<p class="muted">Signed in as {{ user }} · read at {{ fmt_time(snap.generated_at) }} ·
 JSON: <a href="api/versions">versions</a>, <a href="api/champion">champion</a>,
 <a href="api/history">history</a>, <a href="api/gate-decisions">gate decisions</a></p>
{% if message %}<div class="msg" id="message">{{ message }}</div>{% endif %}

<h2>Champion</h2>
{% if snap.champion %}{% set c = snap.champion %}
<div class="card" id="champion">
 <div class="kv">
  <span>version</span><strong id="champion-version"><a href="{{ href_version(c.version) }}">{{ c.version }}</a></strong>
  <span>serving since</span><span>{{ fmt_time(c.promoted_at) }} (generation {{ c.generation }})</span>
  {% if c.last_action %}<span>how</span><span>{{ c.last_action.action }}{% if c.last_action.actor %} by {{ c.last_action.actor }}{% endif %}{% if c.last_action.reason %}: {{ c.last_action.reason }}{% endif %}</span>{% endif %}
  {% for m in headline %}<span>{{ m }}</span><span>{{ fmt_metric(c.metrics.get(m)) }}</span>{% endfor %}
 </div>
</div>
{% if snap.rollback_target %}
 {% if can_rollback %}
 <form class="rollback" method="post" action="rollback" id="rollback-form">
  <input type="hidden" name="expected_champion" value="{{ c.version }}">
  <label>Roll back to <strong>{{ snap.rollback_target }}</strong>, because
   <input type="text" name="reason" required maxlength="500" placeholder="reason (kept in the history)"></label>
  <button type="submit">Roll back</button>
 </form>
 {% else %}<p class="muted">Rollback to {{ snap.rollback_target }} needs edit rights on the retraining DAG's runs.</p>{% endif %}
{% endif %}
{% else %}<p id="champion-version" class="muted">No champion yet: no version has passed the gate and been promoted.</p>{% endif %}

<h2>Last gate decision</h2>
{% if snap.gate_decisions %}{% set g = snap.gate_decisions[0] %}
<div class="card" id="last-gate-decision">
 <span class="pill {{ 'pass' if g.passed else 'fail' }}" id="last-gate-outcome">{{ 'PASSED' if g.passed else 'FAILED' }}</span>
 challenger <a href="{{ href_version(g.version) }}" id="last-gate-version">{{ g.version }}</a>
 vs {{ g.champion_version or 'no champion (floors only)' }} · {{ fmt_time(g.decided_at) }}
 {% if g.holdout_rows %}· holdout {{ g.holdout_rows }} rows{% endif %}
 <ul class="reasons">{% for r in g.reasons %}<li>{{ r }}</li>{% endfor %}</ul>
</div>
{% else %}<p class="muted" id="last-gate-decision">No gate decision recorded yet.</p>{% endif %}

<h2>Metrics over time ({{ split }} split)</h2>
{{ chart }}

<h2>Versions</h2>
<table id="versions"><thead><tr><th>version</th><th>registered</th><th>engine</th>
 {% for m in headline %}<th>{{ m }}</th>{% endfor %}<th>gate</th><th>training run</th></tr></thead><tbody>
{% for v in snap.versions %}<tr>
 <td><a href="{{ href_version(v.version) }}">{{ v.version }}</a>
  {% if v.is_champion %}<span class="pill champ">champion</span>{% elif v.has_served %}<span class="muted">served</span>{% endif %}</td>
 <td>{{ fmt_time(v.registered_at) }}</td><td>{{ v.engine or '–' }}{% if v.best_estimator %} / {{ v.best_estimator }}{% endif %}</td>
 {% for m in headline %}<td class="num">{{ fmt_metric(v.metrics.get(m)) }}</td>{% endfor %}
 <td>{% if v.gate %}<span class="pill {{ 'pass' if v.gate.passed else 'fail' }}">{{ 'passed' if v.gate.passed else 'failed' }}</span>{% else %}<span class="muted">not gated</span>{% endif %}</td>
 <td>{% if v.lineage.run_id %}<a href="{{ href_report(v.lineage.run_id) }}" title="run report">{{ v.lineage.run_id }}</a>{% else %}–{% endif %}</td>
</tr>{% else %}<tr><td colspan="9" class="muted">No versions registered.</td></tr>{% endfor %}
</tbody></table>

<h2>Champion history (which model served when)</h2>
<table id="history"><thead><tr><th>#</th><th>action</th><th>version</th><th>served from</th>
 <th>until</th><th>previous</th><th>by</th><th>reason</th></tr></thead><tbody>
{% for h in snap.history %}<tr><td>{{ h.generation }}</td><td>{{ h.action }}</td>
 <td><a href="{{ href_version(h.version) }}">{{ h.version }}</a></td><td>{{ fmt_time(h.served_from) }}</td>
 <td>{{ fmt_time(h.served_until) if h.served_until else 'now' }}</td><td>{{ h.previous or '–' }}</td>
 <td>{{ h.actor or '–' }}</td><td>{{ h.reason }}</td></tr>
{% else %}<tr><td colspan="8" class="muted">No model has served yet.</td></tr>{% endfor %}
</tbody></table>

<h2>Gate decisions</h2>
<table id="gate-decisions"><thead><tr><th>decided</th><th>challenger</th><th>outcome</th><th>vs champion</th>
 <th>rules</th></tr></thead><tbody>
{% for g in snap.gate_decisions %}<tr><td>{{ fmt_time(g.decided_at) }}</td>
 <td><a href="{{ href_version(g.version) }}">{{ g.version }}</a></td>
 <td><span class="pill {{ 'pass' if g.passed else 'fail' }}">{{ 'passed' if g.passed else 'failed' }}</span></td>
 <td>{{ g.champion_version or '–' }}</td>
 <td><ul class="reasons">{% for r in g.rules or [] %}<li>{{ '✓' if r.passed else '✗' }} {{ r.detail }}</li>{% endfor %}</ul></td></tr>
{% else %}<tr><td colspan="5" class="muted">No gate decisions recorded.</td></tr>{% endfor %}
</tbody></table>
</body></html>
"""

_VERSION_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ d.model_name }} {{ d.version }}</title>
<style>{{ style }}</style></head><body>
<p><a href="../">← all versions of {{ d.model_name }}</a></p>
<h1 id="version">{{ d.version }}</h1>
<p>{% if d.is_champion %}<span class="pill champ">champion</span>{% endif %}
 registered {{ fmt_time(d.registered_at) }} · engine {{ d.engine or '–' }}
 {% if d.best_estimator %}· {{ d.best_estimator }}{% endif %}
 {% if d.lineage.run_id %}· <a href="../{{ href_report(d.lineage.run_id) }}">report of training run {{ d.lineage.run_id }}</a>{% endif %}</p>
<h2>Metrics</h2>
<table><thead><tr><th>metric</th>{% for split in d.all_metrics if d.all_metrics[split] is mapping %}<th>{{ split }}</th>{% endfor %}</tr></thead><tbody>
{% for m in metric_names %}<tr><td>{{ m }}</td>{% for split in d.all_metrics if d.all_metrics[split] is mapping %}
 <td class="num">{{ fmt_metric(d.all_metrics[split].get(m)) }}</td>{% endfor %}</tr>{% endfor %}
</tbody></table>
<h2>Gate decision</h2>
{% if d.gate %}<p><span class="pill {{ 'pass' if d.gate.passed else 'fail' }}">{{ 'PASSED' if d.gate.passed else 'FAILED' }}</span>
 vs {{ d.gate.champion_version or 'no champion' }} · {{ fmt_time(d.gate.decided_at) }}</p>
<table><thead><tr><th>rule</th><th>observed</th><th>threshold</th><th>detail</th></tr></thead><tbody>
{% for r in d.gate.rules or [] %}<tr><td>{{ '✓' if r.passed else '✗' }} {{ r.name }}</td><td class="num">{{ fmt_metric(r.observed) }}</td>
 <td class="num">{{ fmt_metric(r.threshold) }}</td><td>{{ r.detail }}</td></tr>{% endfor %}</tbody></table>
{% else %}<p class="muted">Not gated yet.</p>{% endif %}
<h2>Served as champion</h2>
{% if d.served %}<ul>{% for p in d.served %}<li>generation {{ p.generation }} ({{ p.action }}): {{ fmt_time(p.served_from) }} →
 {{ fmt_time(p.served_until) if p.served_until else 'now' }}{% if p.reason %} — {{ p.reason }}{% endif %}</li>{% endfor %}</ul>
{% else %}<p class="muted">Never served.</p>{% endif %}
<h2>Lineage</h2>
<div class="kv card">{% for key, value in d.lineage.items() if key not in ('features', 'library_versions', 'trials') %}
 <span>{{ key }}</span><span>{{ fmt_value(value) }}</span>{% endfor %}
 <span>artifact</span><span>s3://{{ d.artifact.bucket }}/{{ d.artifact.prefix }}</span></div>
</body></html>
"""

_MESSAGE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title><style>{{ style }}</style></head>
<body><p><a href="{{ back }}">← model registry</a></p><h1>{{ title }}</h1><p>{{ message }}</p></body></html>
"""

_env = Environment(autoescape=True, keep_trailing_newline=True)
_env.globals.update(
    fmt_metric=_fmt_metric,
    fmt_time=_fmt_time,
    fmt_value=_fmt_value,
    href_version=_href_version,
    href_report=_href_report,
    style=Markup(_STYLE),  # noqa: S704 - a constant
)


def render_model_page(
    snap: Mapping[str, Any], *, user: str, can_rollback: bool, message: str | None = None
) -> str:
    """The registry page: champion, last gate decision, metrics chart, versions, history, decisions."""
    return _env.from_string(_MODEL_PAGE).render(
        snap=snap,
        user=user,
        can_rollback=can_rollback,
        message=message,
        headline=HEADLINE_METRICS,
        split=METRICS_SPLIT,
        chart=metric_chart_svg(snap["versions"]),
    )


def render_version_page(detail: Mapping[str, Any]) -> str:
    splits = [m for m in detail["all_metrics"].values() if isinstance(m, Mapping)]
    order = {name: index for index, name in enumerate(HEADLINE_METRICS)}
    names = sorted({name for split in splits for name in split}, key=lambda n: (order.get(n, len(order)), n))
    return _env.from_string(_VERSION_PAGE).render(d=detail, metric_names=names)


def render_message_page(title: str, message: str, *, back: str = "./") -> str:
    return _env.from_string(_MESSAGE_PAGE).render(title=title, message=message, back=back)
