"""Reports as text: the evaluation table and the calibration summary that the CLI prints."""

from __future__ import annotations

import math
from typing import Any


def format_evaluation(report: dict[str, Any]) -> str:
    """`evaluate_checkpoint`'s report as a readable text table."""
    m = report["model"]
    ev = report["evaluation_data"]
    ver = report["verification"]
    lines = [
        f"checkpoint: {report['checkpoint']} ({m['backbone']} backbone, {m['head']} head, "
        f"{m['loss']} loss{_centring(m.get('centring'))})",
        f"data: {report['data']}; evaluated on {ev['description']}, {ev['images']:,} images",
        *(f"note: {n}" for n in ev["notes"]),
        "",
        f"verification: {ver['pairs']:,} fixed pairs ({ver['positives']:,} same, "
        f"{ver['pairs'] - ver['positives']:,} different; seed {report['seed']})",
        f"score: {m['score']}; 'same' when score >= threshold",
        f"ROC AUC {_fmt(ver['roc_auc'])}   equal error rate {_fmt(ver['eer'])}",
        "",
    ]
    header = ["threshold", "value", "accuracy", "precision", "recall", "FAR", "FRR"]
    rows = [
        [
            r["name"],
            f"{r['threshold']:.4f}",
            *(_fmt(r[k]) for k in ("accuracy", "precision", "recall", "far", "frr")),
        ]
        for r in ver["thresholds"]
    ]
    if rows:
        lines += _text_table(header, rows)
        lines += [f"  {r['name']}: {r['source']}" for r in ver["thresholds"]]
    else:
        lines.append("  no threshold is known for these embeddings")
    shots = report["one_shot"]
    if shots:
        first = shots[0]
        lines += [
            "",
            f"N-way K-shot accuracy: {first['episodes']:,} episodes per row, "
            f"{first['queries']} quer{'y' if first['queries'] == 1 else 'ies'} per class, "
            "± 95% confidence interval",
        ]
        pixels = {
            (p["protocol"], p["ways"], p["shots"]): p["accuracy"]
            for p in report.get("one_shot_pixels") or []
        }
        header = ["protocol", "ways", "shots", "scoring", "accuracy", "± 95% CI", "raw pixels"]
        header += ["chance"]
        rows = []
        for r in shots:
            pixel = pixels.get((r["protocol"], r["ways"], r["shots"]))
            rows.append(
                [
                    r["protocol"],
                    str(r["ways"]),
                    str(r["shots"]),
                    r["scoring"],
                    _fmt(r["accuracy"]),
                    _fmt(r["ci95"]),
                    _fmt(pixel) if pixel is not None else "",
                    _fmt(1.0 / r["ways"]),
                ]
            )
        lines += _text_table(header, rows)
        lines += [
            "  scoring: mean = the mean score against a class's K support images;",
            "           prototype = the score against their mean embedding",
            "  raw pixels: the same episodes scored by the nearest support image in pixel space",
        ]
    lines += [f"note: {n}" for n in report["one_shot_notes"]]
    lines += _retrieval_lines(report.get("retrieval"), report.get("retrieval_pixels"))
    return "\n".join(lines)


def _retrieval_lines(model: dict[str, Any] | None, pixels: dict[str, Any] | None) -> list[str]:
    """The retrieval table: Recall@K, MAP@R and R-precision, beside raw pixels."""
    if not model:
        return []
    names = [f"Recall@{k}" for k in model["recall_at_k"]] + ["MAP@R", "R-precision"]

    def values(r: dict[str, Any]) -> list[str]:
        cells = [_fmt(v) for v in r["recall_at_k"].values()]
        return cells + [_fmt(r["map_at_r"]), _fmt(r["r_precision"])]

    rows = [["model", *values(model)]]
    if pixels:
        rows.append(["raw pixels", *values(pixels)])
    lonely = model["lone_queries"]
    return [
        "",
        f"retrieval: each of {model['queries']:,} images a query against all the others"
        + (f" ({lonely:,} left out: no other image of their class)" if lonely else ""),
        *_text_table(["", *names], rows),
    ]


def _centring(state: str | None) -> str:
    """The report's words on test-time centring (nothing for a model that has no mean)."""
    if state == "on":
        return "; centred on the mean training embedding, unit length"
    return "; not centred" if state == "off" else ""


def format_calibration(result: dict[str, Any]) -> str:
    """`calibrate_checkpoint`'s result in a few lines."""
    return "\n".join(
        [
            f"calibrated {result['checkpoint']} for {result['goal']} on {result['pairs']:,} pairs "
            f"of {result['data']}",
            f"old threshold: {result['old_threshold']:.4f} ({result['old_source']})",
            f"new threshold: {result['threshold']:.4f}",
            f"on these pairs: false-accept rate {result['far']:.4f}, false-reject rate "
            f"{result['frr']:.4f}, accuracy {result['accuracy']:.4f}",
        ]
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return (
            "  "
            + "  ".join(
                c.ljust(w) if i in (0,) or not _numeric(c) else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()
        )

    return [line(header), "  " + "  ".join("-" * w for w in widths), *map(line, rows)]


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text == "n/a"
    return True
