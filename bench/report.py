"""Issue 5's goals against the measured figures; results.json, results.md and chart.png."""

import json

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402


def _best(rows):
    return max(rows, key=lambda r: r["docs_per_s"])


def goals(r):
    """[{goal, target, measured, met}]; met is None where the figure was not measured."""
    n = r["meta"]["workers"]
    base = r["baseline"]
    yard = base["pipe_n"]["docs_per_s"]
    batch, single = _best(r["served_batch"]), _best(r["served_single"])
    over = r["single_text_overhead"]
    out = [
        ("batch requests: served docs/s / in-process nlp.pipe on %d processes" % n,
         ">= 0.9", batch["docs_per_s"] / yard, lambda v: v >= 0.9,
         f"{batch['docs_per_s']:.0f} / {yard:.0f} docs/s (concurrency {batch['concurrency']}); "
         f"against nlp.pipe in batches of 64 on {n} processes: "
         f"{batch['docs_per_s'] / base['pipe_n_batches_of_64']['docs_per_s']:.2f}"),
        ("single-text requests: served docs/s / in-process nlp.pipe on %d processes" % n,
         ">= 0.75", single["docs_per_s"] / yard, lambda v: v >= 0.75,
         f"{single['docs_per_s']:.0f} / {yard:.0f} docs/s (concurrency "
         f"{single['concurrency']}); against nlp(text) one at a time on {n} processes: "
         f"{single['ratio_calls']:.2f}"),
        ("p50 latency overhead of one short text over nlp(text)", "<= 2 ms",
         over["overhead_p50_ms"], lambda v: v <= 2.0,
         f"served p50 {over['served_ms']['p50']} ms - nlp(text) p50 "
         f"{over['in_process_ms']['p50']} ms, alternating, one at a time, "
         f"{over['served_ms']['n']} texts"),
        ("/ping p99 with every worker busy", "<= 100 ms", r["ping_under_load_ms"]["p99"],
         lambda v: v <= 100, f"{r['ping_under_load_ms']['n']} pings"),
        ("cold start: start to first 200 from /ping", "<= 5 s",
         r["cold_start_s"]["workers_n"], lambda v: v <= 5, f"{n} workers"),
        ("memory: %d workers / 1 worker (summed PSS)" % n, "<= 1.5",
         r["memory"]["ratio_pss"], lambda v: v <= 1.5,
         f"{r['memory'][f'workers_{n}']['pss_mb']:.0f} / "
         f"{r['memory']['workers_1']['pss_mb']:.0f} MB"),
        ("image size", "<= 450 MB", r["image"]["size_mb"] if r["image"] else None,
         lambda v: v <= 450, r["image"]["name"] if r["image"] else "target is the host"),
    ]
    return [{"goal": g, "target": t, "measured": None if v is None else round(v, 3),
             "met": None if v is None else bool(ok(v)), "detail": d}
            for g, t, v, ok, d in out]


def _fmt(v):
    return "—" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))


def markdown(r):
    m = r["meta"]
    mach = m["machine"]
    host, server = m["versions"]["in_process"], m["versions"]["server"]
    n = m["workers"]
    base = r["baseline"]
    lines = [
        "# Benchmark results" + (" (quick run: small corpus, not for comparison)"
                                 if m["quick"] else ""),
        "",
        f"{m['date']}; target **{m['target']}**"
        + (f" ({r['image']['name']}, {r['image']['id']})" if r["image"] else "")
        + f"; {n} workers; {m['corpus']['sentences']} sentences "
        f"({m['corpus']['tokens_per_sentence']} tokens on average), batches of "
        f"{m['corpus']['batch_size']}; run took {m['duration_s']} s.",
        "",
        f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory_gb']} GiB, {mach['os']}; "
        f"load average {_load(mach['load_average_at_start'])} at start, "
        f"{_load(mach['load_average_at_end'])} at end. The load generator runs on the same "
        "cores as the server.",
        "",
    ]
    # At the end the load average includes the benchmark's own load; at the start it is
    # everything else that was running.
    if mach["load_average_at_start"][0] >= 0.5:
        lines += ["**The machine was busy with other work when this run started (1-minute "
                  "load average 0.5 or more): the figures are noisy; rerun on a quiet "
                  "machine to compare.**", ""]
    lines += [
        f"Server ({m['target']}, reached over {m['network']}): Python "
        f"{server.get('python', '?')}, spaCy {server.get('spacy', '?')}, gunicorn "
        f"{server.get('gunicorn', '?')}, Flask {server.get('flask', '?')}, nginx "
        f"{server.get('nginx', '?')}. In-process baseline: Python {host['python']}, spaCy "
        f"{host['spacy']}, model {host['model']} (components run: {host['components']}).",
        "",
        "## Goals (issue 5)",
        "",
        "| goal | target | measured | | how |",
        "|---|---|---|---|---|",
    ]
    for g in r["goals"]:
        met = "n/a" if g["met"] is None else ("met" if g["met"] else "**missed**")
        lines.append(f"| {g['goal']} | {g['target']} | {_fmt(g['measured'])} | {met} | "
                     f"{g['detail']} |")
    lines += [
        "",
        "## In-process baseline (same model, same components)",
        "",
        "| what | figure |",
        "|---|---|",
        f"| nlp.pipe, 1 process | {base['pipe_1']['docs_per_s']:.0f} docs/s "
        f"({base['pipe_1']['cpu_ms_per_doc']:.2f} ms CPU per doc) |",
        f"| nlp.pipe, {n} processes | {base['pipe_n']['docs_per_s']:.0f} docs/s |",
        f"| nlp.pipe in batches of {m['corpus']['batch_size']}, {n} processes | "
        f"{base['pipe_n_batches_of_64']['docs_per_s']:.0f} docs/s |",
        f"| nlp(text) one text at a time, {n} processes | {base['calls_n']['docs_per_s']:.0f} "
        "docs/s |",
        f"| nlp(text) one text at a time, 1 process | p50 {base['nlp_call_latency_ms']['p50']} "
        f"ms, p99 {base['nlp_call_latency_ms']['p99']} ms ({base['nlp_call_cpu_ms']:.2f} ms CPU "
        "per call) |",
        f"| nlp.pipe of {m['corpus']['batch_size']} texts | p50 "
        f"{base['pipe_batch_latency_ms']['p50']} ms, p99 {base['pipe_batch_latency_ms']['p99']} "
        "ms |",
        "",
        "## Served",
        "",
        f"Ratios: served docs/s over in-process nlp.pipe on {n} processes, and (one-text "
        f"requests) over in-process nlp(text) one text at a time on {n} processes. Server CPU: "
        "all the server's processes (nginx, gunicorn, workers) per document. Client CPU share: "
        "the load generator's CPU time over the run's core-seconds.",
        "",
        "| requests | concurrency | docs/s | / nlp.pipe | / nlp(text) | p50 ms | p95 ms | p99 ms "
        "| server CPU ms/doc | client CPU share |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, key in (("batch of 64 (`texts`)", "served_batch"), ("single (`text`)",
                      "served_single"), ("blog: single `input`, full pipeline",
                                         "blog_baseline")):
        for row in r[key]:
            lat = row["latency_ms"]
            calls = f"{row['ratio_calls']:.2f}" if "ratio_calls" in row else "—"
            lines.append(f"| {name} | {row['concurrency']} | {row['docs_per_s']:.0f} | "
                         f"{row['ratio_pipe']:.2f} | {calls} | {lat['p50']} | {lat['p95']} | "
                         f"{lat['p99']} | "
                         f"{row['server_cpu_ms_per_doc']:.2f} | {row['client_cpu_share']:.0%} |")
    mem, ping, cold = r["memory"], r["ping_under_load_ms"], r["cold_start_s"]
    corr = r["correctness"]
    lines += [
        "",
        "## Other figures",
        "",
        "| what | figure |",
        "|---|---|",
        f"| /ping under full load ({ping['during']}) | p50 {ping['p50']} ms, p99 {ping['p99']} "
        f"ms, {ping['n']} pings, {ping['non_200']} not 200 |",
        f"| cold start, {n} workers / 1 worker / full pipeline | {cold['workers_n']} s / "
        f"{cold['workers_1']} s / {cold['full_pipeline']} s |",
        f"| memory, {n} workers (PSS / USS / RSS summed, processes) | "
        f"{_mem(mem[f'workers_{n}'])} |",
        f"| memory, 1 worker | {_mem(mem['workers_1'])} |",
        f"| image size | {r['image']['size_mb']} MB |" if r["image"] else
        "| image size | not measured (host target) |",
        "| served entities equal to nlp.pipe's | "
        + ", ".join(f"{k}: {v['docs']} texts x {v['runs']} runs, {v['mismatches']} mismatches"
                    for k, v in corr.items()) + " |",
        "",
        "MB = 10^6 bytes. PSS counts each shared page once, split between the processes that "
        "share it, so the sum is the server's real footprint.",
        "",
    ]
    return "\n".join(lines)


def _load(avg):
    return "/".join(f"{x:.2f}" for x in avg)


def _mem(m):
    return (f"{m['pss_mb']:.0f} / {m['uss_mb']:.0f} / {m['rss_mb']:.0f} MB, "
            f"{m['processes']} processes")


def chart(r, path):
    n = r["meta"]["workers"]
    base = r["baseline"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 6), constrained_layout=True)
    series = (("batch of 64", "served_batch", "tab:blue", "o"),
              ("single text", "served_single", "tab:green", "s"),
              ("blog: single, full pipeline", "blog_baseline", "tab:red", "^"))
    for label, key, color, marker in series:
        xs = [row["concurrency"] for row in r[key]]
        left.plot(xs, [row["docs_per_s"] for row in r[key]], marker=marker, color=color,
                  label=f"served: {label}")
    left.axhline(base["pipe_n"]["docs_per_s"], color="black", linestyle="--",
                 label=f"in-process nlp.pipe, {n} processes")
    left.axhline(base["calls_n"]["docs_per_s"], color="tab:green", linestyle="--", alpha=0.6,
                 label=f"in-process nlp(text) one at a time, {n} processes")
    left.axhline(base["pipe_1"]["docs_per_s"], color="grey", linestyle=":",
                 label="in-process nlp.pipe, 1 process")
    left.set(title="Throughput", xlabel="concurrent requests", ylabel="docs/s", xscale="log")
    left.set_ylim(bottom=0)
    for label, key, color, marker in series[1:]:
        xs = [row["concurrency"] for row in r[key]]
        right.plot(xs, [row["latency_ms"]["p50"] for row in r[key]], marker=marker,
                   color=color, label=f"{label}: p50")
        right.plot(xs, [row["latency_ms"]["p99"] for row in r[key]], marker=marker,
                   color=color, linestyle="--", alpha=0.6, label=f"{label}: p99")
    right.axhline(base["nlp_call_latency_ms"]["p50"], color="black", linestyle=":",
                  label="in-process nlp(text): p50")
    right.set(title="Latency of one-text requests", xlabel="concurrent requests",
              ylabel="ms", xscale="log", yscale="log")
    for ax in (left, right):
        xs = sorted({row["concurrency"] for k in ("served_batch", "served_single",
                                                  "blog_baseline") for row in r[k]})
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.grid(alpha=0.3)
        # Below the plot, where it cannot hide a point.
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    # Plain numbers on the log scale, not powers of ten.
    right.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    right.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    right.yaxis.set_minor_formatter(ticker.NullFormatter())
    m = r["meta"]
    fig.suptitle(f"spaCy NER served ({m['target']}, {n} workers) vs in-process; "
                 f"{m['machine']['cores']} cores shared with the load generator; {m['date'][:10]}",
                 fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(r, out):
    (out / "results.json").write_text(json.dumps(r, indent=2) + "\n")
    (out / "results.md").write_text(markdown(r))
    chart(r, out / "chart.png")
