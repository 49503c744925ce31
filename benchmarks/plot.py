"""Draw the end-to-end results as bar charts into docs/img/.

    python benchmarks/plot.py [--quick]

Reads benchmarks/results/{redis,memory}.json (``*-quick.json`` with --quick) and
writes, for each suite found, ``docs/img/e2e_<suite>.png``: one panel per scenario,
a bar per system at its median msg/s, a whisker from the slowest to the fastest
repeat, and for the 10 ms scenario the ideal throughput as a dashed line with each
bar's share of it. The memory suite's RSS run becomes ``docs/img/memory_rss.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import matplotlib.ticker

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
IMAGES = ROOT / "docs" / "img"

TASKORBIT_COLOR = "#d1495b"
FLOOR_COLOR = "#8d99ae"
PEER_COLOR = "#2e86ab"


def color(system: str) -> str:
    if system.startswith("taskorbit"):
        return TASKORBIT_COLOR
    if system in ("bare-loop", "threadpool"):
        return FLOOR_COLOR
    return PEER_COLOR


def panel(ax: Any, scenario: dict[str, Any], rows: dict[str, dict[str, Any]]) -> None:
    measured = {s: r for s, r in rows.items() if "median_msg_per_s" in r}
    systems = sorted(measured, key=lambda s: -measured[s]["median_msg_per_s"])
    medians = [measured[s]["median_msg_per_s"] for s in systems]
    lows = [m - min(measured[s]["runs_msg_per_s"]) for s, m in zip(systems, medians, strict=True)]
    highs = [max(measured[s]["runs_msg_per_s"]) - m for s, m in zip(systems, medians, strict=True)]
    bars = ax.bar(
        systems,
        medians,
        color=[color(s) for s in systems],
        yerr=[lows, highs],
        capsize=3,
        error_kw={"elinewidth": 0.8, "ecolor": "#333333"},
    )
    ideal = scenario.get("ideal_msg_per_s")
    labels = []
    for median in medians:
        label = f"{median:,.0f}"
        if ideal:
            label += f"\n{100 * median / ideal:.0f} %"
        labels.append(label)
    # Above each whisker, so that the whisker never covers its label.
    for bar, label, high in zip(bars, labels, highs, strict=True):
        x = bar.get_x() + bar.get_width() / 2
        ax.annotate(
            label,
            (x, bar.get_height() + high),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    top = max([m + h for m, h in zip(medians, highs, strict=True)], default=1.0)
    if ideal:
        ax.axhline(ideal, color="#333333", linestyle="--", linewidth=1)
        ax.text(
            len(systems) - 0.5, ideal, f"ideal {ideal:,.0f}", va="bottom", ha="right", fontsize=8
        )
        top = max(top, ideal)
    ax.set_ylim(0, top * 1.18)
    ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    missing = sorted(set(rows) - set(measured))
    title = scenario["title"]
    if missing:
        title += f"\n(not measured: {', '.join(missing)})"
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("messages per second (median)")
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.grid(axis="y", alpha=0.3)


def plot_suite(data: dict[str, Any], out: Path) -> None:
    scenarios = data["scenarios"]
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5.5 * len(scenarios), 4.4))
    for ax, scenario in zip(axes, scenarios, strict=True):
        panel(ax, scenario, data["summary"][scenario["name"]])
    loads = [r["loadavg_1m"] for r in data["runs"] if "loadavg_1m" in r]
    load = f"{min(loads):.0f}-{max(loads):.0f}" if loads else "?"
    fig.suptitle(
        f"End to end over {'a private Redis' if data['suite'] == 'redis' else 'memory'}: "
        f"publish start → last handler finished "
        f"(median of {data['repeat']}; {data['machine']['cpus']} CPUs, load average {load})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_rss(rss: dict[str, Any], out: Path) -> None:
    samples = rss["samples"]
    seconds = [s[0] for s in samples]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(seconds, [s[1] for s in samples], color=TASKORBIT_COLOR, label="RSS (MiB)")
    ax.set_xlabel("seconds since the first publish")
    ax.set_ylabel("RSS (MiB)", color=TASKORBIT_COLOR)
    ax.set_ylim(0, rss["rss_peak_mib"] * 1.5)
    ring = ax.twinx()
    ring.plot(seconds, [s[2] for s in samples], color=FLOOR_COLOR, linewidth=0.6, alpha=0.7)
    ring.set_ylabel("ring length (slots used)", color=FLOOR_COLOR)
    ring.set_ylim(0, rss["buffer_size"] * 1.5)
    growth = rss.get("rss_growth_last_90pct_mib")
    ax.set_title(
        f"{rss['messages']:,} messages through a {rss['buffer_size']:,}-slot ring: RSS "
        f"{rss['rss_start_mib']} → peak {rss['rss_peak_mib']} → end {rss['rss_end_mib']} MiB"
        + (f"\n(growth over the last 90 % of the run: {growth} MiB)" if growth is not None else ""),
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


FLOORS = ("bare-loop", "threadpool")


def markdown_tables(data: dict[str, Any]) -> str:
    """The suite's summary as Markdown tables, one per scenario, for docs/benchmarks.md."""
    out: list[str] = []
    for scenario in data["scenarios"]:
        rows = data["summary"][scenario["name"]]
        measured = {s: r for s, r in rows.items() if "median_msg_per_s" in r}
        floor = next((measured[f]["median_msg_per_s"] for f in FLOORS if f in measured), None)
        ideal = scenario.get("ideal_msg_per_s")
        head = ["system", "msg/s (median)", "min - max"]
        head += ["% of ideal"] if ideal else []
        head += ["vs floor", "publish msg/s", "CPU µs/msg"]
        out += [f"**{scenario['title']}**", "", "| " + " | ".join(head) + " |"]
        out.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
        for system in sorted(rows, key=lambda s: -rows[s].get("median_msg_per_s", -1)):
            row = rows[system]
            if "median_msg_per_s" not in row:
                out.append(f"| {system} | not measured | | | | |" + (" |" if ideal else ""))
                continue
            median = row["median_msg_per_s"]
            cells = [system, f"{median:,.0f}"]
            cells.append(f"{min(row['runs_msg_per_s']):,.0f} - {max(row['runs_msg_per_s']):,.0f}")
            if ideal:
                cells.append(f"{100 * median / ideal:.0f} %")
            cells.append(f"{median / floor:.2f}x" if floor else "")
            published = row.get("median_publish_msg_per_s")
            cells.append(f"{published:,.0f}" if published else "")
            cpu = row.get("median_cpu_us_per_msg", {})
            cells.append(" / ".join(f"{k} {v:,.0f}" for k, v in cpu.items()))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="plot the *-quick.json results")
    parser.add_argument("--tables", action="store_true", help="also print Markdown tables")
    args = parser.parse_args(argv)
    IMAGES.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    for suite in ("redis", "memory"):
        path = RESULTS / f"{suite}{suffix}.json"
        if not path.exists():
            print(f"no {path.relative_to(ROOT)}; run benchmarks/run_e2e.py --suite {suite} first")
            continue
        data = json.loads(path.read_text())
        if args.tables:
            print(markdown_tables(data))
        out = IMAGES / f"e2e_{suite}{suffix}.png"
        plot_suite(data, out)
        print(f"wrote {out.relative_to(ROOT)}")
        rss = data.get("rss")
        if rss and "samples" in rss:
            out = IMAGES / f"memory_rss{suffix}.png"
            plot_rss(rss, out)
            print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
