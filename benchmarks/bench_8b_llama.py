"""llama.cpp (through llama-cpp-python) on a GGUF file: optional quantization to Q4_0, load time, decode and
prefill at several contexts, weight bytes read per decode step, peak RSS.

llama.cpp is the engine llama_ros runs on robots, so it is the reference our int4 decode is measured against.
This file runs under the Python of a venv that holds llama-cpp-python (``tools/setup_llama_cpp.sh`` builds one;
it never imports ministral_ros). ``benchmarks/bench_8b.py`` runs it in a process of its own and reads the JSON
object on the last line of stdout.

    VENV/bin/python benchmarks/bench_8b_llama.py MODEL.gguf --from-f16 F16.gguf    (quantize only)
    VENV/bin/python benchmarks/bench_8b_llama.py MODEL.gguf [--threads 2] [--contexts 16,1024,4096]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import logging
from pathlib import Path
import resource
import sys
import time

import numpy as np

LOG = logging.getLogger('bench_8b_llama')
DECODE_STEPS = 32


def quantize_q4_0(source: Path, target: Path, threads: int) -> float:
    """Quantize an f16 GGUF to Q4_0 (llama.cpp's defaults: Q6_K output matrix); returns seconds taken."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    params.nthread = threads
    started = time.perf_counter()
    code = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if code != 0:
        raise RuntimeError(f'llama_model_quantize({source}) returned {code}')
    return time.perf_counter() - started


def step_bytes(path: Path) -> dict[str, int]:
    """Bytes of tensors a decode step reads (all but the token embedding table, of which it reads one row)."""
    from gguf import GGUFReader

    read, gathered = 0, 0
    for tensor in GGUFReader(str(path)).tensors:
        if tensor.name == 'token_embd.weight':
            gathered += int(tensor.n_bytes)
        else:
            read += int(tensor.n_bytes)
    return {'read_per_step': read, 'gathered': gathered}


def measure_context(llm: object, context: int, rng: np.random.Generator) -> dict[str, float]:
    llm.reset()
    prompt = rng.integers(10, 100_000, context).tolist()
    started = time.perf_counter()
    llm.eval(prompt)
    prefill = time.perf_counter() - started
    stamps = [time.perf_counter()]
    for _ in range(DECODE_STEPS):
        llm.eval([int(rng.integers(10, 100_000))])
        stamps.append(time.perf_counter())
    gaps = np.diff(stamps)
    return {'decode_ms_median': round(float(np.median(gaps)) * 1e3, 2),
            'decode_ms_p90': round(float(np.percentile(gaps, 90)) * 1e3, 2),
            'prefill_tok_s': round(context / prefill, 2)}


def run(model: Path, threads: int, contexts: list[int]) -> dict[str, object]:
    import llama_cpp

    started = time.perf_counter()
    llm = llama_cpp.Llama(model_path=str(model), n_ctx=max(contexts) + DECODE_STEPS + 16, n_threads=threads,
                          n_threads_batch=threads, n_batch=512, verbose=False)
    report: dict[str, object] = {'model': str(model), 'llama_cpp_python': llama_cpp.__version__,
                                 'threads': threads, 'load_s': round(time.perf_counter() - started, 1),
                                 'step_bytes': step_bytes(model)}
    LOG.info('loaded %s in %.1f s', model.name, report['load_s'])
    rng = np.random.default_rng(0)
    llm.eval(rng.integers(10, 100_000, 16).tolist())  # warm-up
    rows = {}
    for context in contexts:
        LOG.info('context %d: prefill then %d decode steps', context, DECODE_STEPS)
        rows[str(context)] = measure_context(llm, context, rng)
        LOG.info('context %d: %s', context, rows[str(context)])
    report['contexts'] = rows
    report['peak_rss_gib'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return report


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format='[%(name)s] %(message)s', stream=sys.stderr)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model', type=Path, help='the GGUF file to run (written first when --from-f16 is given)')
    parser.add_argument('--from-f16', type=Path, default=None,
                        help='quantize this f16 GGUF to Q4_0 into MODEL, then exit')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--contexts', default='16,1024,4096', help='comma list of context lengths')
    args = parser.parse_args(argv)
    try:
        contexts = [int(part) for part in args.contexts.split(',')]
    except ValueError:
        parser.error(f'--contexts {args.contexts!r} is not a comma list of integers')
    if args.from_f16 is not None:
        if not args.from_f16.is_file():
            parser.error(f'--from-f16 {args.from_f16} is not a file')
        LOG.info('quantizing %s to Q4_0', args.from_f16)
        seconds = quantize_q4_0(args.from_f16, args.model, args.threads)
        print(json.dumps({'quantize_s': round(seconds, 1), 'bytes': args.model.stat().st_size}))
        return 0
    if not args.model.is_file():
        parser.error(f'{args.model} is not a file')
    print(json.dumps(run(args.model, args.threads, contexts)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
