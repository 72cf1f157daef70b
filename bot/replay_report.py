"""The HTML report of `flywheel replay`: one self-contained file, readable without scripts.

Inline CSS, no scripts, nothing fetched (a Content-Security-Policy says so to the browser too).
Every logged text is escaped: what people wrote and what models answered is untrusted. The
summary shows the same `figures()` that ``--json`` prints; then each input, problems first, with
the reference and the candidate side by side and their word-level differences marked.
"""

from __future__ import annotations

import difflib
import html
import os
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.prompts import short_version

if TYPE_CHECKING:
    from bot.replay import Plan, Result

MAX_DIFF_TOKENS = 6000  # per side: longer texts are shown without a diff (difflib is quadratic at worst)
_TOKENS = re.compile(r"\s+|\w+|[^\w\s]")

CSS = """
:root { --ink: #1d1c1d; --muted: #616061; --line: #dddddd; --win: #2b7a3d; --loss: #b3261e; --tie: #8a6d00;
        --ins: #d7f5dd; --del: #fbdcdc; }
* { box-sizing: border-box; }
body { font: 15px/1.45 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1200px; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 28px 0 10px; }
h3 { font-size: 16px; margin: 0 0 8px; } h4 { font-size: 13px; margin: 0 0 6px; color: var(--muted); }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.meta { color: var(--muted); margin: 0; }
.partial { background: #fff4ce; border: 1px solid #e8c95c; padding: 8px 12px; border-radius: 6px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { text-align: left; padding: 5px 12px 5px 0; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; }
td.num { font-variant-numeric: tabular-nums; }
.headline { font-size: 28px; font-weight: 700; }
.ci { color: var(--muted); font-weight: 400; font-size: 14px; }
article { border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; margin: 14px 0; }
article.loss, article.error { border-left: 5px solid var(--loss); }
article.win { border-left: 5px solid var(--win); } article.tie { border-left: 5px solid var(--tie); }
.badge { display: inline-block; border-radius: 10px; padding: 0 8px; font-size: 12px; font-weight: 600;
         color: #fff; background: var(--muted); vertical-align: 2px; }
.badge.win { background: var(--win); } .badge.loss, .badge.error { background: var(--loss); }
.badge.tie { background: var(--tie); }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.side { background: #fafafa; border: 1px solid var(--line); border-radius: 6px; padding: 10px; min-width: 0; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; font-size: 14px; }
ins { background: var(--ins); text-decoration: none; } del { background: var(--del); }
.request { margin: 0 0 10px; }
.fail { color: var(--loss); } .pass { color: var(--win); }
.error-text { color: var(--loss); white-space: pre-wrap; }
details { margin: 0 0 10px; } summary { cursor: pointer; color: var(--muted); }
.turn { margin: 4px 0; } .turn b { color: var(--muted); }
@media (max-width: 800px) { .pair { grid-template-columns: 1fr; } }
"""


def write_report(path: Path, figures: dict[str, Any], results: list[Result], plan: Plan, *,
                 created: datetime) -> None:
    """Write the report to ``path`` atomically, readable by its owner only (like exports, it
    holds what people wrote)."""
    page = render(figures, results, plan, created=created)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render(f: dict[str, Any], results: list[Result], plan: Plan, *, created: datetime) -> str:
    title = f"Replay of {f['prompt']}: candidate {short_version(f['candidate_version'])}"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>{_e(title)} · Flywheel</title>",
        f"<style>{CSS}</style></head><body>",
        f"<header><h1>Replay of <code>{_e(f['prompt'])}</code></h1>",
        f'<p class="meta">candidate <code id="candidate-version">{_e(short_version(f["candidate_version"]))}</code> '
        f"({_e(f['candidate'])}) · model <code>{_e(f['model'])}</code> · inputs from {_e(f['inputs_from'])} · "
        f"{_e(created.strftime('%Y-%m-%d %H:%M UTC'))}</p></header>",
    ]
    if f["partial"]:
        parts.append(f'<p class="partial" id="partial"><b>Partial:</b> the run was interrupted; {f["not_run"]} of '
                     f"{f['inputs']} inputs did not run. The figures cover the ones that did.</p>")
    parts += _summary(f)
    parts.append(f'<section id="inputs"><h2>Inputs ({len(results)})</h2>')
    if f["inexact_inputs"]:
        parts.append(f'<p class="meta">{f["inexact_inputs"]} input(s) could not be matched with the prompt version '
                     "that first answered them; for those, the leading system messages and the last message were "
                     "taken as the prompt's and the rest as the conversation.</p>")
    if not results:
        parts.append('<p class="meta">No inputs: nothing was replayed.</p>')
    names = [c.name for c in plan.checks]
    for number, r in sorted(enumerate(results, 1), key=lambda nr: _rank(nr[1])):
        parts += _input(number, r, names)
    parts.append("</section></body></html>\n")
    return "\n".join(parts)


def _summary(f: dict[str, Any]) -> list[str]:
    out = ['<section id="summary"><h2>Summary</h2><table>']
    if f["judge"] is None:
        out.append('<tr><th>Judge</th><td id="win-rate" data-value="">none (run with --judge judge for a win '
                   "rate)</td></tr>")
    else:
        rate = ("no verdicts" if f["win_rate"] is None else
                f'{_pct(f["win_rate"])} <span class="ci">(95% CI {_pct(f["win_rate_low"])}–'
                f'{_pct(f["win_rate_high"])})</span>')
        out += [
            f'<tr><th>Win rate of the candidate</th><td class="headline num" id="win-rate" '
            f'data-value="{_v(f["win_rate"])}">{rate}</td></tr>',
            f'<tr><th>Wins / ties / losses</th><td class="num"><span id="wins">{f["wins"]}</span> / '
            f'<span id="ties">{f["ties"]}</span> / <span id="losses">{f["losses"]}</span> of '
            f'<span id="judged">{f["judged"]}</span> judged by <code>{_e(f["judge"])}</code> '
            f"({_e(f['judge_model'])}, order seed {f['seed']}; it said A {f['judge_said_a']} times)"
            + (f", {f['judge_errors']} without a verdict" if f["judge_errors"] else "") + "</td></tr>",
        ]
    if f["checks_total"] is None:
        out.append('<tr><th>Checks</th><td id="checks" data-passed="" data-total="">none declared (see '
                   "metadata.checks in prompts/README.md)</td></tr>")
    else:
        out.append(f'<tr><th>Checks passed</th><td class="num" id="checks" data-passed="{f["checks_passed"]}" '
                   f'data-total="{f["checks_total"]}">{f["checks_passed"]} / {f["checks_total"]} '
                   f'<span class="ci">(the references: <span id="reference-checks">'
                   f'{f["reference_checks_passed"]}</span> / {f["checks_total"]})</span></td></tr>')
    out.append(f'<tr><th>Inputs</th><td class="num"><span id="inputs-count">{f["inputs"]}</span>: '
               f'<span id="answered">{f["answered"]}</span> answered, <span id="errors">{f["errors"]}</span> '
               f"model error(s)" + (f", {f['not_run']} not run" if f["not_run"] else "") + "</td></tr>")
    out.append("</table><table><tr><th></th><th>Candidate</th><th>Reference</th></tr>")
    out.append(f'<tr><th>Cost (answered inputs)</th><td class="num" id="cost" data-value="{_v(f["cost_usd"])}">'
               f'{_usd(f["cost_usd"])}</td><td class="num" id="reference-cost" '
               f'data-value="{_v(f["reference_cost_usd"])}">{_usd(f["reference_cost_usd"])}</td></tr>')
    for p in (50, 95):
        out.append(f'<tr><th>Latency p{p}</th><td class="num" id="latency-p{p}" '
                   f'data-value="{_v(f[f"latency_p{p}_ms"])}">{_ms(f[f"latency_p{p}_ms"])}</td><td class="num" '
                   f'id="reference-latency-p{p}">{_ms(f[f"reference_latency_p{p}_ms"])}</td></tr>')
    if f["judge_cost_usd"] is not None:
        out.append(f'<tr><th>Judge cost</th><td class="num">{_usd(f["judge_cost_usd"])}</td><td></td></tr>')
    out.append("</table>")
    if f["checks"]:
        out.append('<table id="checks-table"><tr><th>Check</th><th>Candidate</th><th>Reference</th></tr>')
        out += [f'<tr><td>{_e(c["check"])}</td><td class="num">{c["passed"]} / {c["total"]}</td>'
                f'<td class="num">{c["reference_passed"]} / {c["total"]}</td></tr>' for c in f["checks"]]
        out.append("</table>")
    out.append("</section>")
    return out


def _rank(r: Result) -> int:
    """Problems first: errors, losses, failed checks, ties, the unjudged, wins; not run last."""
    if r.status == "not_run":
        return 6
    if r.status == "error":
        return 0
    if r.outcome == "loss":
        return 1
    if not all(r.checks):
        return 2
    return {"tie": 3, None: 4, "win": 5}[r.outcome]


def _input(number: int, r: Result, names: list[str]) -> list[str]:
    inp = r.input
    kind = "error" if r.status == "error" else (r.outcome or r.status)
    badge = {"not_run": "not run", "answered": "not judged"}.get(kind, kind)
    out = [f'<article class="{_e(kind)}" id="input-{number}">',
           f'<h3>#{number} · {"logged " if inp.key.startswith("call ") else ""}{_e(inp.key)} '
           f'<span class="badge {_e(kind)}">{_e(badge)}</span></h3>']
    if inp.turns:
        out.append(f"<details><summary>The conversation before ({len(inp.turns)} messages)</summary>")
        out += [f'<div class="turn"><b>{_e(str(t.get("role")))}:</b> <span class="text">'
                f'{_e(str(t.get("content") or ""))}</span></div>' for t in inp.turns]
        out.append("</details>")
    elif inp.thread:
        out.append(f'<details><summary>The thread</summary><p class="text">{_e(inp.thread)}</p></details>')
    out.append(f'<div class="request"><h4>Request</h4><p class="text">{_e(inp.text) or "<i>(no text)</i>"}</p></div>')
    reference = (f"Reference ({_e(inp.reference_kind)}{', call ' + str(inp.call_id) if inp.call_id else ''})"
                 f"{_costs(inp.reference_cost_usd, inp.reference_latency_ms)}")
    candidate = (f"Candidate{', call ' + str(r.call_id) if r.call_id else ''}"
                 f"{_costs(r.cost_usd, r.latency_ms) if r.status == 'answered' else ''}")
    if r.status == "answered":
        left, right = word_diff(inp.reference, r.answer)
        right_html = f'<p class="text candidate-text">{right}</p>'
    else:
        left = _e(inp.reference)
        right_html = f'<p class="error-text">{_e(r.error or "not run")}</p>'
    out += ['<div class="pair">',
            f'<div class="side reference"><h4>{reference}</h4><p class="text reference-text">{left}</p></div>',
            f'<div class="side candidate"><h4>{candidate}</h4>{right_html}</div>',
            "</div>"]
    if r.status == "answered" and names:
        marks = [f'<span class="{"pass" if ok else "fail"}">{"✓" if ok else "✗"} {_e(name)}</span>'
                 for name, ok in zip(names, r.checks, strict=True)]
        out.append(f'<p class="checks">Checks: {" · ".join(marks)}</p>')
    if r.verdict:
        out.append(f'<p class="judge">The judge saw the candidate as answer {r.position} and said '
                   f"<b>{_e(r.verdict)}</b>: a {_e(r.outcome or '')} for the candidate"
                   f"{' (call ' + str(r.judge_call_id) + ')' if r.judge_call_id else ''}.</p>")
    elif r.judge_error:
        out.append(f'<p class="judge fail">No verdict: {_e(r.judge_error)}</p>')
    out.append("</article>")
    return out


def word_diff(before: str, after: str) -> tuple[str, str]:
    """Both texts as escaped HTML: words only in ``before`` inside <del>, words only in ``after``
    inside <ins>."""
    a, b = _TOKENS.findall(before), _TOKENS.findall(after)
    if len(a) > MAX_DIFF_TOKENS or len(b) > MAX_DIFF_TOKENS:
        return _e(before), _e(after)
    left, right = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            left.append(_e("".join(a[i1:i2])))
            right.append(_e("".join(b[j1:j2])))
            continue
        if i2 > i1:
            left.append(f"<del>{_e(''.join(a[i1:i2]))}</del>")
        if j2 > j1:
            right.append(f"<ins>{_e(''.join(b[j1:j2]))}</ins>")
    return "".join(left), "".join(right)


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _v(value: Any) -> str:
    return "" if value is None else _e(str(value))


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def _ms(value: int | None) -> str:
    return "–" if value is None else f"{value} ms"


def _costs(cost: float | None, latency: int | None) -> str:
    bits = [b for b in (None if cost is None else f"${cost:.5f}", None if latency is None else f"{latency} ms") if b]
    return f" · {' · '.join(bits)}" if bits else ""
