"""A batch's own page: its line of the list, then where its money went (the ledger's four
buckets), its errors by class, its own errors (validation), and its engines."""

from __future__ import annotations

from operators.cost import BUCKETS
from server.pages.render import esc, eta, layout, progress, status, usd, when
from server.pages.run_detail import RunDetail
from server.pages.views import BatchView

BUCKET_MEANING = {"load": "engines starting", "useful": "work committed", "idle": "engines waiting",
                  "wasted": "work not committed: lost with a node, or in flight"}


def batch_page(v: BatchView, detail: RunDetail, now: float) -> str:
    meta = "".join(f"<dt>{esc(k)}</dt><dd>{esc(val)}</dd>" for k, val in v.metadata.items())
    meta = f'<h2>Metadata</h2><dl class="meta">{meta}</dl>' if meta else ""
    body = (
        f'<p><a href="/">All batches</a></p><h1>{esc(v.id)}</h1>'
        f'<p>{status(v)} {esc(v.kind)} batch of '
        f'{esc(v.label)}{" on " + esc(v.model) if v.model else ""}</p>'
        f'<div class="progress big">{progress(v)}</div>'
        '<dl class="figures">'
        f'<dt>Tokens in / out</dt><dd>{v.input_tokens:,} / {v.output_tokens:,}</dd>'
        f'<dt>Spent</dt><dd class="spent">{usd(v.cost_usd)}</dd>'
        f'<dt>Projected</dt><dd>{usd(v.projected_usd)}</dd>'
        f'<dt>ETA</dt><dd>{eta(v, now)}</dd>'
        f'<dt>Created</dt><dd>{esc(when(v.created_at))}</dd><dt>Started</dt><dd>{esc(when(v.started_at))}</dd>'
        f'<dt>Ended</dt><dd>{esc(when(v.ended_at))}</dd>'
        f'<dt>Preemptions survived</dt><dd>{detail.preemptions_survived}</dd></dl>'
        f'{meta}<h2>Cost</h2>{cost_chart(v.breakdown_usd)}'
        f'{_errors(v, detail)}{_engines(detail)}')
    return layout(v.id, body, refresh=v.running, signed_in=True)


def cost_chart(breakdown: dict[str, float]) -> str:
    """A stacked bar of the four buckets (SVG, drawn here: no script, no inline style) and its legend."""
    total = sum(breakdown.get(b, 0.0) for b in BUCKETS)
    if total <= 0:
        return '<p class="sub">No cost yet: the run\'s engines have not started.</p>'
    x, bars = 0.0, []
    for bucket in BUCKETS:
        width = 1000 * breakdown.get(bucket, 0.0) / total
        bars.append(f'<rect class="b-{bucket}" x="{x:.1f}" y="0" width="{width:.1f}" height="40">'
                    f'<title>{bucket}: {usd(breakdown.get(bucket, 0.0))}</title></rect>')
        x += width
    legend = "".join(
        f'<tr><td><svg class="key" viewBox="0 0 10 10" aria-hidden="true"><rect class="b-{b}" width="10" '
        f'height="10"/></svg> {b}</td><td>{BUCKET_MEANING[b]}</td><td class="num">{usd(breakdown.get(b, 0.0))}</td>'
        f'<td class="num">{100 * breakdown.get(b, 0.0) / total:.1f}%</td></tr>' for b in BUCKETS)
    return (f'<svg class="chart" viewBox="0 0 1000 40" preserveAspectRatio="none" role="img" '
            f'aria-label="cost by bucket">{"".join(bars)}</svg>'
            f'<table class="legend"><tbody>{legend}</tbody></table>')


def _errors(v: BatchView, detail: RunDetail) -> str:
    parts = []
    if detail.errors_by_class:
        rows = "".join(f'<tr><td>{esc(k)}</td><td class="num">{n:,}</td></tr>'
                       for k, n in sorted(detail.errors_by_class.items(), key=lambda kv: -kv[1]))
        parts.append(f'<h2>Errors by class</h2><table class="errors"><tbody>{rows}</tbody></table>')
    if v.errors:
        rows = "".join(f'<tr><td>{esc(e.get("line") or "")}</td><td>{esc(e.get("code") or "")}</td>'
                       f'<td>{esc(e.get("message") or "")}</td></tr>' for e in v.errors[:100])
        parts.append('<h2>Batch errors</h2><table class="errors"><thead><tr><th>Line</th><th>Code</th>'
                     f'<th>Message</th></tr></thead><tbody>{rows}</tbody></table>')
    return "".join(parts)


def _engines(detail: RunDetail) -> str:
    if not detail.engines:
        return ""
    rows = "".join(
        f'<tr><td>{esc(e.node[:12])}</td><td>{esc(e.instance_type)}</td><td>{esc(e.market.replace("_", "-"))}</td>'
        f'<td>{esc(e.model)}</td><td>{esc(when(e.started_at))}</td><td class="num">{usd(e.usd)}</td>'
        f'<td>{"running" if e.alive else ("lost with its node" if e.units_lost else "released")}</td></tr>'
        for e in detail.engines)
    return ('<h2>Engines</h2><table class="engines"><thead><tr><th>Node</th><th>Instance</th><th>Market</th>'
            '<th>Model</th><th>Started</th><th>Cost</th><th>State</th></tr></thead>'
            f'<tbody>{rows}</tbody></table>'
            f'<p class="sub">Attempts lost with a node or driver and done again: {detail.attempts_lost}</p>')
