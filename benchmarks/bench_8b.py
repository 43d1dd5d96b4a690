"""Ministral 8B's real size on this machine, end to end, in one program, beside llama.cpp on the same weights.

Stages (each checkpointed in ``WORK/results.json``; a stage already there is skipped unless named in ``--redo``):

1. ``write``: a random checkpoint of the exact 8B shape, shard by shard (``write_random_8b.py``; 16 GB of bf16).
2. ``export``: ``ministral-ros export`` per precision (int4, int8 by default): time and peak RSS.
3. ``engine``: our engine on each export (``bench_8b_engine.py``): load, RSS, decode ms/token and prefill
   tokens/s at each context, KV bytes, time to the first token of the node's real prompt cold and restored.
4. ``gguf``: the same checkpoint converted by llama.cpp's ``convert_hf_to_gguf.py`` to f16, then quantized to
   Q4_0 (the f16 file is deleted afterwards unless ``--keep-f16``).
5. ``llama``: llama.cpp on the Q4_0 file (``bench_8b_llama.py``) at the same contexts and threads.
6. ``bandwidth``: this machine's copy bandwidth (1 thread and ``--threads``), the bytes each engine reads per
   decode step, and the fraction of that floor each decode reaches.

Every child runs in a process of its own, so each peak RSS is that child's own (``os.wait4``). The load
average before and after each stage is recorded: figures taken beside other work are upper bounds.
llama.cpp needs ``tools/setup_llama_cpp.sh DIR`` once (about 10 minutes of compiling); without it the
llama stages are skipped with a message. Disk: 16 GB checkpoint + 6.4 GB int4 + 9 GB int8 + 16 GB f16 GGUF
(transient) + 4.4 GB Q4_0.

    python benchmarks/bench_8b.py WORK [--stages ...] [--precisions int4,int8] [--contexts 16,1024,4096]
                                       [--threads 2] [--llama-dir DIR] [--redo engine,llama] [--report]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
import subprocess
import sys
import time

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_8b_report  # noqa: E402  (beside this file, not a package)
import memory_bandwidth  # noqa: E402

STAGES = ('write', 'export', 'engine', 'gguf', 'llama', 'bandwidth')
# The exports a run can compare ("precisions"): int4 is symmetric blocks of 32 everywhere on MatMulNBits with the
# float KV cache (the exporter's default before 2026-12-02); int4-kv8 the same weights with the int8 KV cache,
# calibrated layer by layer on the node's real prompt (the default CPU recipe until --int4-kernel); int4-b64 the speed
# option (blocks of 64 with zero points, the output matrix in int8); <precision>-bias the bias graph (standard ONNX
# operators only) at that precision; int4-q4 the CPU recipe (int8 KV cache) with ministral_ros's native int4 operator
# (--int4-kernel q4: the same blocks, 4.5 bits per weight as read; the exporter's default since 2026-12-02).
EXPORT_OPTIONS = {'fp32': ['--precision', 'fp32'], 'fp16': ['--precision', 'fp16'], 'int8': ['--precision', 'int8'],
                  'int4': ['--precision', 'int4', '--kv-cache', 'float', '--int4-kernel', 'matmulnbits'],
                  'int4-b64': ['--precision', 'int4', '--int4-block', '64', '--int4-output', 'int8'],
                  'int4-kv8': ['--precision', 'int4', '--kv-cache', 'int8', '--int4-kernel', 'matmulnbits'],
                  'int4-q4': ['--precision', 'int4', '--int4-kernel', 'q4', '--kv-cache', 'int8'],
                  **{f'{precision}-bias': ['--precision', precision, '--attention', 'bias']
                     for precision in ('fp32', 'fp16', 'int8', 'int4')}}
LOG = logging.getLogger('bench_8b')


class Results:
    """``WORK/results.json``: one entry per stage (per precision for export and engine), saved after each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, object] = json.loads(path.read_text()) if path.is_file() else {}

    def has(self, key: str) -> bool:
        return key in self.data

    def put(self, key: str, value: object) -> None:
        self.data[key] = value
        self.path.write_text(json.dumps(self.data, indent=1))


def run_child(command: list[str], env: dict[str, str] | None = None) -> dict[str, object]:
    """Run ``command``; its stderr (progress) passes through, the last stdout line is read as JSON when it is.
    Returns that JSON (or {}) plus the child's wall time, peak RSS and the load average around it."""
    LOG.info('running: %s', ' '.join(command))
    before = os.getloadavg()[0]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    output = process.stdout.read()
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f'{command[0]} {command[1]} exited with {process.returncode}; its output is above')
    lines = output.strip().splitlines()
    report = json.loads(lines[-1]) if lines and lines[-1].startswith('{') else {}
    report.update({'wall_s': round(time.monotonic() - started, 1),
                   'child_peak_rss_gib': round(usage.ru_maxrss / 2**20, 2),
                   'loadavg_before': round(before, 2), 'loadavg_after': round(os.getloadavg()[0], 2)})
    return report


def stage_write(args: argparse.Namespace, results: Results) -> None:
    from ministral_ros.chat.tekken import bundled_tekken_path

    command = [sys.executable, str(HERE / 'write_random_8b.py'), str(args.work / 'ckpt'), '--layers', str(args.layers),
               '--workers', str(args.workers), '--tekken', str(bundled_tekken_path())]
    results.put('write', run_child(command))


def stage_export(args: argparse.Namespace, results: Results) -> None:
    for precision in args.precisions:
        key = f'export.{precision}'
        if results.has(key) and 'export' not in args.redo:
            continue
        command = [sys.executable, '-m', 'ministral_ros.cli', 'export', str(args.work / 'ckpt'),
                   str(args.work / precision), '--overwrite', *EXPORT_OPTIONS[precision]]
        report = run_child(command)
        report['folder_bytes'] = sum(path.stat().st_size for path in (args.work / precision).iterdir())
        results.put(key, report)


def stage_engine(args: argparse.Namespace, results: Results) -> None:
    for precision in args.precisions:
        key = f'engine.{precision}'
        if results.has(key) and 'engine' not in args.redo:
            continue
        command = [sys.executable, str(HERE / 'bench_8b_engine.py'), str(args.work / precision), '--provider', 'cpu',
                   '--threads', str(args.threads), '--contexts', ','.join(map(str, args.contexts))]
        report = run_child(command + (['--no-real-prompt'] if args.no_real_prompt else []))
        report['step_bytes'] = memory_bandwidth.onnx_step_bytes(args.work / precision)
        results.put(key, report)


def llama_paths(llama_dir: Path) -> dict[str, Path]:
    sdist = next(iter(sorted(llama_dir.glob('llama_cpp_python-*/'))), llama_dir / 'llama_cpp_python-missing')
    return {'python': llama_dir / 'venv' / 'bin' / 'python',
            'converter': sdist / 'vendor' / 'llama.cpp' / 'convert_hf_to_gguf.py',
            'gguf_py': sdist / 'vendor' / 'llama.cpp' / 'gguf-py', 'sentencepiece': llama_dir / 'sentencepiece'}


def gguf_source_folder(ckpt: Path, folder: Path) -> Path:
    """The checkpoint as llama.cpp's converter reads it: the same shards (linked), a tokenizer.json built from
    tekken.json and no tekken.json (the converter takes that for Mistral's own layout)."""
    from ministral_ros.chat.tekken import build_tokenizer, read_tekken

    folder.mkdir(parents=True, exist_ok=True)
    for path in ckpt.iterdir():
        if path.name != 'tekken.json' and not (folder / path.name).exists():
            (folder / path.name).symlink_to(path.resolve())
    build_tokenizer(read_tekken(ckpt / 'tekken.json')).save(str(folder / 'tokenizer.json'))
    (folder / 'tokenizer_config.json').write_text(json.dumps({
        'tokenizer_class': 'PreTrainedTokenizerFast', 'bos_token': '<s>', 'eos_token': '</s>', 'unk_token': '<unk>'}))
    return folder


def stage_gguf(args: argparse.Namespace, results: Results) -> None:
    paths = llama_paths(args.llama_dir)
    f16, q4 = args.work / 'm8b-f16.gguf', args.work / 'm8b-q4_0.gguf'
    source = gguf_source_folder(args.work / 'ckpt', args.work / 'ckpt-for-gguf')
    env = dict(os.environ, PYTHONPATH=f"{paths['gguf_py']}:{paths['sentencepiece']}")
    convert = run_child([sys.executable, str(paths['converter']), str(source), '--outtype', 'f16',
                         '--outfile', str(f16)], env=env)
    quantize = run_child([str(paths['python']), str(HERE / 'bench_8b_llama.py'), str(q4), '--from-f16', str(f16),
                          '--threads', str(args.threads)])
    if not args.keep_f16:
        f16.unlink()
    results.put('gguf', {'convert': convert, 'quantize': quantize})


def stage_llama(args: argparse.Namespace, results: Results) -> None:
    command = [str(llama_paths(args.llama_dir)['python']), str(HERE / 'bench_8b_llama.py'),
               str(args.work / 'm8b-q4_0.gguf'), '--threads', str(args.threads),
               '--contexts', ','.join(map(str, args.contexts))]
    results.put('llama', run_child(command))


def stage_bandwidth(args: argparse.Namespace, results: Results) -> None:
    before = os.getloadavg()[0]
    report = {f'copy_gb_s_{threads}_threads': round(memory_bandwidth.copy_bandwidth(threads), 1)
              for threads in sorted({1, args.threads})}
    report.update({'loadavg_before': round(before, 2), 'loadavg_after': round(os.getloadavg()[0], 2)})
    results.put('bandwidth', report)


RUNNERS = {'write': stage_write, 'export': stage_export, 'engine': stage_engine, 'gguf': stage_gguf,
           'llama': stage_llama, 'bandwidth': stage_bandwidth}
PER_PRECISION = {'export', 'engine'}  # these check each precision's own entry


def _comma_list(text: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [part.strip() for part in text.split(',') if part.strip()]
    unknown = [item for item in items if allowed is not None and item not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(f'unknown {unknown}; choose from {", ".join(allowed)}')
    return items


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work', type=Path, help='working folder (checkpoint, exports, GGUF, results.json)')
    parser.add_argument('--stages', type=lambda t: _comma_list(t, STAGES), default=list(STAGES))
    parser.add_argument('--precisions', type=lambda t: _comma_list(t, tuple(EXPORT_OPTIONS)),
                        default=['int4', 'int8'])
    parser.add_argument('--contexts', type=lambda t: [int(part) for part in _comma_list(t)], default=[16, 1024, 4096])
    parser.add_argument('--threads', type=int, default=os.cpu_count() or 1, help='threads for both engines')
    parser.add_argument('--layers', type=int, default=36, help='decoder layers to write (36 = the full model)')
    parser.add_argument('--workers', type=int, default=2, help='processes writing the checkpoint')
    parser.add_argument('--llama-dir', type=Path, default=Path.home() / '.cache' / 'ministral_ros' / 'llama-cpp',
                        help='made by tools/setup_llama_cpp.sh')
    parser.add_argument('--redo', type=lambda t: _comma_list(t, STAGES), default=[], help='stages to run again')
    parser.add_argument('--keep-f16', action='store_true', help='keep the 16 GB f16 GGUF')
    parser.add_argument('--no-real-prompt', action='store_true',
                        help="skip the node's real prompt in the engine stage (a 1.3k-token cold prefill)")
    parser.add_argument('--report', action='store_true', help='only print the tables from results.json')
    args = parser.parse_args(argv)
    if args.threads < 1 or args.layers < 1 or args.workers < 1:
        parser.error('--threads, --layers and --workers must be at least 1')
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format='[%(name)s] %(message)s')
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    results = Results(args.work / 'results.json')
    for stage in ([] if args.report else args.stages):
        if stage in ('gguf', 'llama') and not llama_paths(args.llama_dir)['python'].is_file():
            LOG.warning('skipping %s: no llama-cpp-python venv in %s (run tools/setup_llama_cpp.sh %s)',
                        stage, args.llama_dir, args.llama_dir)
            continue
        if results.has(stage) and stage not in args.redo and stage not in PER_PRECISION:
            LOG.info('%s: already in %s (--redo %s to run it again)', stage, results.path, stage)
            continue
        LOG.info('stage %s', stage)
        RUNNERS[stage](args, results)
    print(bench_8b_report.render(results.data))
    return 0


if __name__ == '__main__':
    sys.exit(main())
