"""Markdown tables from ``bench_8b.py``'s ``results.json`` (the form benchmarks/RESULTS.md records them in)."""
from __future__ import annotations

GIB = 2**30


def _ms(row: dict, key: str = 'decode_ms_median') -> str:
    return f'{row[key]:.0f} ({row["decode_ms_p90"]:.0f})' if key in row else '-'


def _load(report: dict) -> str:
    return f"{report.get('loadavg_before', float('nan')):.1f}->{report.get('loadavg_after', float('nan')):.1f}"


def export_table(data: dict) -> list[str]:
    lines = ['| precision | export time | peak RSS | folder | load average |', '|---|---|---|---|---|']
    for key, report in data.items():
        if key.startswith('export.'):
            lines.append(f"| {key.split('.', 1)[1]} | {report['wall_s']:.0f} s"
                         f" | {report['child_peak_rss_gib']:.2f} GiB | {report['folder_bytes'] / 1e9:.1f} GB"
                         f' | {_load(report)} |')
    return lines


def _decode_rows(name: str, report: dict, contexts: list[str]) -> str:
    rows = report['contexts']
    decode = ' / '.join(_ms(rows[c]) if c in rows else '-' for c in contexts)
    prefill = ' / '.join(f"{rows[c]['prefill_tok_s']:.1f}" if c in rows else '-' for c in contexts)
    return (f"| {name} | {decode} | {prefill} | {report['load_s']:.1f} s | {report['child_peak_rss_gib']:.2f} GiB"
            f' | {_load(report)} |')


def engine_table(data: dict) -> list[str]:
    engines = [(key.split('.', 1)[1], report) for key, report in data.items() if key.startswith('engine.')]
    if 'llama' in data:
        engines.append(('llama.cpp Q4_0', data['llama']))
    if not engines:
        return []
    contexts = sorted({c for _, report in engines for c in report['contexts']}, key=int)
    header = ' / '.join(contexts)
    lines = [f'| engine | decode ms/token median (p90) at {header} | prefill tokens/s at {header} | load | peak RSS'
             ' | load average |', '|---|---|---|---|---|---|']
    lines += [_decode_rows(name, report, contexts) for name, report in engines]
    for name, report in engines:
        if 'real_prompt' in report:
            real = report['real_prompt']
            lines.append(f"\n{name}: the node's real prompt ({real['tokens']} tokens, {real['prefix_tokens']} of them"
                         f" the constant prefix): first token {real['ttft_cold_s']:.1f} s cold,"
                         f" {real['ttft_restored_s']:.2f} s with the prefix restored"
                         f" (warming it: {real['prefix_warm_s']:.1f} s).")
        if 'kv_bytes' in next(iter(report['contexts'].values()), {}):
            last = report['contexts'][contexts[-1]]['kv_bytes']
            kv = ', '.join(f'{part} {size / 2**20:.0f} MiB' for part, size in last.items())
            lines.append(f'{name}: KV cache allocated at context {contexts[-1]}: {kv}.')
    return lines


def floor_lines(data: dict) -> list[str]:
    bandwidth = data.get('bandwidth')
    if not bandwidth:
        return []
    best = max(value for key, value in bandwidth.items() if key.startswith('copy_gb_s_'))
    probes = ', '.join(f"{key[10:].replace('_', ' ')} {value} GB/s" for key, value in bandwidth.items()
                       if key.startswith('copy_gb_s_'))
    lines = [f'Copy bandwidth (read + write): {probes} (load average {_load(bandwidth)}).']
    for key, report in data.items():
        if not (key.startswith('engine.') or key == 'llama') or 'step_bytes' not in report:
            continue
        step = report['step_bytes']['read_per_step']
        first = report['contexts'][min(report['contexts'], key=int)]['decode_ms_median']
        floor_ms = step / (best * 1e9) * 1e3
        lines.append(f'{key}: {step / 1e9:.2f} GB of weights read per decode step (as stored); floor at {best} GB/s'
                     f' {floor_ms:.0f} ms; decode {first:.0f} ms = {floor_ms / first:.0%} of the floor')
        # the gathered table is mapped, only touched rows count; a folder whose operators read the mapped file
        # itself (the q4 kernel) holds little after load, and its floor is the bytes as stored
        if report.get('rss_after_load_gib', 0) * GIB > step:
            resident = report['rss_after_load_gib'] * GIB
            lines.append(f'{key}: resident after load {resident / 1e9:.2f} GB (weights as the runtime repacked them,'
                         f' plus the runtime): as a floor {resident / (best * 1e9) * 1e3:.0f} ms,'
                         f' {resident / (best * 1e9) * 1e3 / first:.0%}')
    return lines


def render(data: dict) -> str:
    parts = []
    if 'write' in data:
        write = data['write']
        parts.append(f"Checkpoint written in {write['wall_s']:.0f} s, peak RSS {write['child_peak_rss_gib']:.2f} GiB"
                     f' (load average {_load(write)}).')
    parts += export_table(data)
    if 'gguf' in data:
        gguf = data['gguf']
        convert, quantize = gguf['convert'], gguf['quantize']
        parts.append(f"\nllama.cpp conversion to f16 GGUF {convert['wall_s']:.0f} s (peak RSS"
                     f" {convert['child_peak_rss_gib']:.2f} GiB), Q4_0 quantization {quantize['wall_s']:.0f} s,"
                     f" {quantize.get('bytes', 0) / GIB:.2f} GiB.")
    parts.append('')
    parts += engine_table(data)
    parts.append('')
    parts += floor_lines(data)
    return '\n'.join(parts)
