"""ministral_ros: an offline language brain for ROS 2 robots.

Three places (README, "Architecture"): the ROS edge (``node``: the only modules that import rclpy are
its ``*_node.py`` files, plus the demo driver ``demo_model/demo_driver_node.py``), the runtime
(``planning`` over ``chat`` and ``engine``; numpy + onnxruntime, never torch) and the build tools
(``export``: torch, transformers, optimum). ``speech`` is the voice front end, ``commands`` the
``ministral-ros`` command line, ``share_paths`` the lookup of shared data (``config/``, ``models/``).
"""

__version__ = '0.1.0'
