"""Test-session set-up shared by every test file.

ROS 2 over real DDS: discovery stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE; the wheels
ignore ROS_LOCALHOST_ONLY) and each pytest session takes its own ROS_DOMAIN_ID so that concurrent
sessions never see each other's nodes. Both are set before anything imports rclpy.
"""
import os
import threading

import pytest

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))


@pytest.fixture(scope='module')
def ros():
    """A private rclpy context with a MultiThreadedExecutor spinning on its own thread:
    ``(context, executor)``. rclpy is imported here, not at the top, so tests that never touch ROS
    do not load it."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    from rclpy._rclpy_pybind11 import InvalidHandle

    context = rclpy.Context()
    rclpy.init(context=context)
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set() and context.ok():
            try:
                executor.spin_once(timeout_sec=0.1)
            except InvalidHandle:
                # rclpy race: a test destroyed a node while this thread was adding one of its event
                # handlers to the wait set. Seen once in CI; it ended executor.spin and with it every
                # later test of the module. The node under test is gone either way: keep spinning.
                continue

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    yield context, executor
    stop.set()
    thread.join(5)
    executor.shutdown(timeout_sec=2)
    rclpy.shutdown(context=context)


@pytest.fixture(scope='module')
def tok():
    """Our tokenizer converted from the V3 tekken file that ships in mistral-common."""
    from ministral_ros.chat.tekken import bundled_tekken_path
    from ministral_ros.chat.tokenizer import MinistralTokenizer

    return MinistralTokenizer.from_tekken(bundled_tekken_path())


@pytest.fixture(scope='module')
def reference():
    """mistral-common's tokenizer on the same file: the independent reference."""
    from ministral_ros.chat.tekken import bundled_tekken_path
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    return MistralTokenizer.from_file(str(bundled_tekken_path()))


@pytest.fixture(scope='module')
def vocab():
    """The default action vocabulary (config/actions.yaml)."""
    from ministral_ros.planning.vocabulary import load_vocabulary

    return load_vocabulary()
