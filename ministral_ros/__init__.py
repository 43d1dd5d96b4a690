"""ministral_ros: an offline language brain for ROS 2 robots.

Everything below ``ministral_ros`` except the ``*_node`` modules is plain Python and never imports
rclpy: the engine (``engine``), the prompt format and tokenizer (``chat``), the command-to-plan core
(``planning``) and the voice front end (``speech``).
"""

__version__ = '0.1.0'
