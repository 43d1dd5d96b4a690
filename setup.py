"""ament_python set-up of ministral_ros (also a plain pip-installable package)."""
from glob import glob
import os
from pathlib import Path
import platform
import warnings

from setuptools import Extension, find_packages, setup

PACKAGE = 'ministral_ros'
DEMO_MODEL = 'ministral-robot-demo'  # the embedded default model (models/README.md)

# onnxruntime's C API headers (tools/fetch_onnxruntime_headers.sh), needed by the native int4 kernel.
ORT_INCLUDE = Path(os.environ.get('ONNXRUNTIME_INCLUDE_DIR') or Path(__file__).parent / 'third_party' / 'onnxruntime'
                   / 'include')


def native_kernels() -> list[Extension]:
    """The onnxruntime custom-operator library of ministral_ros/kernels (loaded by onnxruntime, not imported)."""
    if not (ORT_INCLUDE / 'onnxruntime_c_api.h').is_file():
        warnings.warn(f'{ORT_INCLUDE} has no onnxruntime_c_api.h: building without the native int4 kernel '
                      '(run tools/fetch_onnxruntime_headers.sh, or set ONNXRUNTIME_INCLUDE_DIR)', stacklevel=1)
        return []
    flags = ['-O3', '-std=c11', '-fvisibility=hidden'] if platform.system() != 'Windows' else []
    sources = [f'{PACKAGE}/kernels/q4_matmul.c', f'{PACKAGE}/kernels/ort_q4_op.c']
    return [Extension(f'{PACKAGE}.kernels._q4_ops', sources=sources,
                      include_dirs=[str(ORT_INCLUDE), f'{PACKAGE}/kernels'], depends=[f'{PACKAGE}/kernels/q4_matmul.h'],
                      extra_compile_args=flags, libraries=['m'] if platform.system() != 'Windows' else [])]


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    package_data={PACKAGE: ['data/*']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', glob('config/*.yaml')),
        # assembled by `python -m ministral_ros.demo_model assemble` (tools/setup_env.sh) before the build
        ('share/' + PACKAGE + '/models/' + DEMO_MODEL, glob(f'models/{DEMO_MODEL}/*')),
        ('share/' + PACKAGE + '/models/' + DEMO_MODEL + '-recipe', glob(f'models/{DEMO_MODEL}-recipe/*')),
        # the learned stop detector's weights (models/stop-detector/README.md)
        ('share/' + PACKAGE + '/models/stop-detector', glob('models/stop-detector/*')),
    ],
    ext_modules=native_kernels(),
    install_requires=['setuptools'],
    zip_safe=False,
    maintainer='ministral_ros developers',
    description='Offline Ministral language node for ROS 2: commands and transcripts to typed action plans.',
    license='Apache-2.0',
    python_requires='>=3.10',
    entry_points={
        'console_scripts': [
            'ministral-ros = ministral_ros.cli:main',
            'ministral_node = ministral_ros.node.ministral_node:main',
            'ministral_speech_node = ministral_ros.node.speech_node:main',
        ],
    },
)
