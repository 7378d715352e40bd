"""Server-drawn SVG charts (`pooler.admin_ui.svg_chart`) and the latency histogram they
read percentiles from: well-formed SVG, escaped text, nothing the CSP refuses, bars and
lines where the numbers say."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from pooler import latency_histogram as lh
from pooler.admin_ui import svg_chart
from pooler.admin_ui.svg_chart import Series

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script>&amp;"\''


def parse(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))  # raises on anything not well-formed


def test_bars_stack_and_reach_the_round_top_of_the_axis() -> None:
    labels = ["10:00", "11:00", "12:00"]
    chart = svg_chart.bar_chart(
        "c1",
        "Requests",
        labels,
        [Series("ok", [10, 0, 30], "s0"), Series("err", [5, None, 7], "s3")],
    )
    root = parse(chart)
    assert root.get("viewBox") == f"0 0 {svg_chart.WIDTH} {svg_chart.HEIGHT}"
    assert root.get("role") == "img" and root.get("aria-labelledby") == "c1-title"
    assert root.find(f"{SVG}title").text == "Requests"  # type: ignore[union-attr]
    bars = root.findall(f"{SVG}rect")
    assert len(bars) == 4  # zero and None draw nothing
    heights = {b.find(f"{SVG}title").text: float(b.get("height")) for b in bars}  # type: ignore[union-attr,arg-type]
    assert heights["12:00: ok 30"] == pytest.approx(3 * heights["10:00: ok 10"], abs=0.2)
    # Stacked: the error bar of 10:00 sits on top of its ok bar.
    ok, err = bars[0], bars[1]
    assert float(err.get("y")) + float(err.get("height")) == pytest.approx(
        float(ok.get("y")), abs=0.2
    )  # type: ignore[arg-type]
    ticks = [t.text for t in root.findall(f"{SVG}text")]
    assert ticks[:5] == ["0", "10", "20", "30", "40"]  # 37 rounds up to 40 in steps of 10
    assert ticks[5:] == labels


def test_lines_break_where_a_bucket_has_no_value() -> None:
    chart = svg_chart.line_chart(
        "lat",
        "Latency",
        ["a", "b", "c", "d"],
        [Series("p50", [100, 200, None, 400], "s0")],
        svg_chart.duration,
    )
    root = parse(chart)
    lines = root.findall(f"{SVG}polyline")
    assert [len(line.get("points", "").split()) for line in lines] == [2]  # "d" stands alone
    assert len(root.findall(f"{SVG}circle")) == 3
    assert "400 ms" in {
        c.find(f"{SVG}title").text.split(" ", 2)[2] for c in root.findall(f"{SVG}circle")
    }  # type: ignore[union-attr]


def test_every_text_is_escaped_and_nothing_the_csp_refuses_is_drawn() -> None:
    series = [Series(HOSTILE, [1, 2], 's0" onload="x')]
    for chart in (
        svg_chart.bar_chart(HOSTILE, HOSTILE, [HOSTILE, "b"], series),
        svg_chart.line_chart(HOSTILE, HOSTILE, [HOSTILE, "b"], series),
        svg_chart.legend(series),
    ):
        text = str(chart)
        assert "<script" not in text and " onload=" not in text
        assert "style" not in text  # neither a style attribute nor a <style> element
        root = parse(chart)
        # The hostile text survives as text, not as markup.
        assert HOSTILE in "".join(root.itertext())
        assert all(re.fullmatch(r"[\w-]+( [\w-]+)*", el.get("class", "x")) for el in root.iter())


def test_empty_and_all_zero_charts_draw_axes_only() -> None:
    for values in ([], [0, 0]):
        labels = [str(i) for i in range(len(values))]
        root = parse(svg_chart.bar_chart("e", "Empty", labels, [Series("x", values, "s0")]))
        assert root.findall(f"{SVG}rect") == []
        assert [t.text for t in root.findall(f"{SVG}text")][:2] == ["0", "1"]


def test_x_labels_are_thinned_to_a_few() -> None:
    labels = [f"{d:02d}" for d in range(31)]
    root = parse(svg_chart.bar_chart("m", "Month", labels, [Series("x", [1] * 31, "s0")]))
    shown = [t.text for t in root.findall(f"{SVG}text") if t.get("text-anchor") == "middle"]
    assert 2 <= len(shown) <= svg_chart.MAX_X_LABELS and shown[0] == "00"


def test_number_formats() -> None:
    assert [svg_chart.compact(v) for v in (0, 0.5, 999, 1234, 5_000_000, 2.5e9)] == [
        "0",
        "0.5",
        "999",
        "1.2k",
        "5M",
        "2.5G",
    ]
    assert [svg_chart.duration(v) for v in (0.5, 12, 850, 1500, 90_000)] == [
        "0.5 ms",
        "12 ms",
        "850 ms",
        "1.5 s",
        "1.5 min",
    ]
    assert [svg_chart.nice_step(s) for s in (1, 37, 100, 999)] == [0.25, 10, 25, 250]


def test_histogram_buckets_and_the_stated_bound() -> None:
    assert lh.BUCKETS == 98
    assert [lh.bucket_of(v) for v in (0, 0.999, 1, 1.1, 2, 2**24, 1e12)] == [0, 0, 1, 1, 5, 97, 97]
    # Every value of a bucket is within BOUND of the bucket's representative.
    for bucket in range(1, len(lh.EDGES)):
        lo, hi, mid = lh.EDGES[bucket - 1], lh.EDGES[bucket], lh.representative(bucket)
        assert lo <= mid < hi
        assert mid / lo <= lh.BOUND * (1 + 1e-12) and hi / mid <= lh.BOUND * (1 + 1e-12)
    counts = lh.merge([{1: 10}, {40: 9, 1: 0}, {90: 1}])
    assert lh.percentile(counts, 50) == lh.representative(1)
    assert lh.percentile(counts, 95) == lh.representative(40)
    assert lh.percentile(counts, 100) == lh.representative(90)
    assert lh.percentile({}, 50) is None
    assert [lh.rank_of(95, n) for n in (1, 19, 20, 21)] == [1, 19, 19, 20]


def test_y_ticks_are_multiples_of_a_round_step() -> None:
    root = parse(svg_chart.bar_chart("t", "T", ["a"], [Series("x", [6], "s0")]))
    assert [t.text for t in root.findall(f"{SVG}text")][:-1] == ["0", "2", "4", "6"]
