"""ament_python set-up of ministral_ros (also a plain pip-installable package)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'ministral_ros'
DEMO_MODEL = 'ministral-robot-demo'  # the embedded default model (models/README.md)

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
